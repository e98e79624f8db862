"""Drives tests/py/ext/smallobj.c (issue 18.5): argv[1] is the leak (obj:
PyObject_Malloc, mem: PyMem_Malloc, ref: a tuple whose reference is never
released, pair: the same with a free-listed 2-tuple), argv[2] where it runs
(main, or thread: a threading.Thread).
Blocks of 4..512 bytes are lost at ~2 MB/s, next to a churn of the same
allocations that are freed. With argv[3] = N it leaks exactly N blocks,
prints "leaked N BYTES" and only waits. Runs until stdin reaches EOF."""
import sys
import threading

import smallobj

kind, where = sys.argv[1], sys.argv[2]
count = int(sys.argv[3]) if len(sys.argv) > 3 else None


def leak_obj(n):
    smallobj.obj_leak(n)  # @PY so_obj


def leak_mem(n):
    smallobj.mem_leak(n)  # @PY so_mem


def leak_ref(n):
    smallobj.ref_leak(n)  # @PY so_ref


def leak_pair(n):
    smallobj.pair_leak(n)  # @PY so_pair


def churn(n):
    smallobj.churn(n)  # @PY so_churn


leak = {"obj": leak_obj, "mem": leak_mem, "ref": leak_ref, "pair": leak_pair}[kind]


def size(i):
    return 4 + (i * 37) % 509  # 4..512, all of them


def backtest(stop):
    i = 0
    while not stop.is_set():
        for _ in range(100):
            leak(size(i))
            churn(size(i + 1))
            i += 1
        stop.wait(0.01)


stop = threading.Event()
if count is not None:
    for i in range(count):
        leak(size(i))
    print("leaked %d %d" % (count, sum(size(i) for i in range(count))), flush=True)
    sys.stdin.read()
    sys.exit(0)
if where == "thread":
    t = threading.Thread(target=backtest, args=(stop,), name="leaker")
    t.start()
else:
    t = None
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
print("ready", flush=True)
if t:
    sys.stdin.read()
    stop.set()
    t.join()
else:
    backtest(stop)
print("done", flush=True)
