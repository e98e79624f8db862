"""Small objects churned with bounded state (issue 18.3: no false leak):
dicts, tuples, lists and strings made and dropped; interned strings (a
bounded set of names); float and tuple free lists; an lru_cache and a deque
filled to their bounds and then evicting; a dict cache that is cleared when
full; tests/py/ext/smallobj.c's churn (PyObject_Malloc, PyMem_Malloc and a
tuple, all freed). Prints "ready", then "round N" about every 0.2 s, until
stdin reaches EOF."""
import collections
import functools
import sys
import threading

import smallobj


@functools.lru_cache(maxsize=512)
def parsed(key):
    return tuple(key.split("-")) + (len(key),)


recent = collections.deque(maxlen=2000)
memo = {}


def one(i):
    name = sys.intern("field-%d" % (i % 300))
    doc = {"id": i, "name": name, "tags": ["a", "b", str(i)], "pos": (i * 0.5, -i * 0.25)}
    row = tuple(doc.values())
    text = "%s:%s" % (doc["name"], doc["tags"][2])
    key = "k-%d" % (i % 4000)
    parsed(key)
    recent.append((i, text))
    if len(memo) >= 1000:
        memo.clear()
    memo[key] = row
    smallobj.churn(4 + i % 509)
    return len(row) + len(text)


stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
print("ready", flush=True)
i = 0
rounds = 0
while not stop.is_set():
    for _ in range(400):
        one(i)
        i += 1
    if i % 4000 == 0:
        rounds += 1
        print("round", rounds, flush=True)
    stop.wait(0.02)
print("done", flush=True)
