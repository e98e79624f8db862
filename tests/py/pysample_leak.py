"""Small-object leaks of a C extension (tests/py/ext/pysampleext.c, built by
test_pysample.py and found on PYTHONPATH), seen with default settings.
Modes: "leak" keeps about 4 MB/s of 4..512-byte PyObject_Malloc blocks from
a known line (with churn beside it); "churn" only churns a bounded table;
"count N" leaks exactly N blocks once and prints their bytes. Prints "ready"
first; runs until stdin reaches EOF."""
import select
import sys

import pysampleext


def leaky():
    return pysampleext.leak(400)  # @PY ext_small_leak


def churner():
    pysampleext.churn(400)  # @PY ext_small_churn


def once(n):
    return pysampleext.leak(n)  # @PY ext_small_count


def until_eof(step):
    # About 40 steps a second: 4 MB/s of leak, 16000 churned blocks a second
    # (each lives 20000 calls, about 1.25 s).
    while True:
        step()
        if select.select([sys.stdin], [], [], 0.025)[0] and not sys.stdin.read(1):
            break


mode = sys.argv[1]
if mode == "count":
    print("ready", flush=True)
    print("bytes", once(int(sys.argv[2])), flush=True)
    sys.stdin.read()
elif mode == "leak":
    print("ready", flush=True)
    until_eof(lambda: (leaky(), churner()))
else:
    print("ready", flush=True)
    until_eof(churner)
