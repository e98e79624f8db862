"""One leaking script for every interpreter version: a C block kept from a
known line through ctypes.PyDLL (which keeps the GIL) or through the small
extension tests/py/ext/leakext.c (argv[1]: ctypes or ext), in the main
thread or a worker thread (argv[2]: main or thread), next to a churn of
blocks that are freed. Runs until stdin reaches EOF."""
import ctypes
import sys
import threading

how, where = sys.argv[1], sys.argv[2]
if how == "ctypes":
    libc = ctypes.PyDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    kept = []

    def grab(n):
        kept.append(libc.malloc(n))  # @PY v_ctypes_leak

    def churn(n):
        libc.free(libc.malloc(n))  # @PY v_ctypes_noise
else:
    import leakext

    def grab(n):
        leakext.grab(n)  # @PY v_ext_leak

    def churn(n):
        leakext.churn(n)  # @PY v_ext_noise


def backtest(stop):
    while not stop.is_set():
        grab(6661)
        for _ in range(4):
            churn(5443)
        stop.wait(0.01)


stop = threading.Event()
if where == "thread":
    t = threading.Thread(target=backtest, args=(stop,), name="worker")
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
