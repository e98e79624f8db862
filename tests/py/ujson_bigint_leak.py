"""A real small-block leak in Debian 12's python3-ujson 5.7.0, CVE-2026-32874
(GHSA-wgvc-ghv9-3pmm): ujson.loads copies the digits of every integer too big
for 64 bits into a PyObject_Malloc buffer (Object_newIntegerFromString in
python/JSONtoObj.c) and never frees it; fixed in ujson 5.12.0 by commit
4baeb950df780092bd3c89fc702a868e99a3a1d2 ("Fix memory leak parsing large
integers", github.com/ultrajson/ultrajson). Each document below has 32 such
integers of 25..56 digits: 32 lost blocks of 26..57 bytes per loads, from
pymalloc. Runs until stdin reaches EOF."""
import sys
import threading

import ujson

DOC = "[" + ",".join(str(10 ** (24 + k) + k) for k in range(32)) + "]"


def decode(doc):
    return len(ujson.loads(doc))  # @PY ujson_bigint


stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
print("ready", ujson.__version__, flush=True)
while not stop.is_set():
    for _ in range(20):
        decode(DOC)
    stop.wait(0.01)
print("done", flush=True)
