"""A real small-object reference leak in Debian 12's python3-ujson 5.7.0,
github.com/ultrajson/ultrajson issue #631 ("Serious and weird memory leak
when dumping dictionary containing python object and non-English
character"): with ensure_ascii=True, when default() returns a str holding
non-ASCII characters, the encoder overwrites its reference to that str with
the UTF-8 bytes it makes (PyUnicodeToUTF8, python/objToJSON.c) and never
releases it; fixed by commit 9f90a8c797a20c19a80b78d340ac4251626c7494 (#714),
ujson 5.12.1. The str is made by the default() callable below (a few hundred
bytes, from pymalloc) and lost once per object. Runs until stdin reaches EOF."""
import sys
import threading

import ujson


class Item:
    def __init__(self, i):
        self.i = i


def fallback(obj):
    return "Item(%d, 生日快乐)" % obj.i  # @PY ujson_default_str


def encode(doc):
    return ujson.dumps(doc, ensure_ascii=True, default=fallback)  # @PY ujson_default_dumps


DOC = {"items": [Item(i) for i in range(16)]}
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
print("ready", ujson.__version__, flush=True)
while not stop.is_set():
    for _ in range(100):
        encode(DOC)
    stop.wait(0.01)
print("done", flush=True)
