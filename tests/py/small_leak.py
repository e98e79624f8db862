"""Leaks small Python objects (well under pymalloc's 512-byte limit) into a
growing dict from a known line, next to a churn of the same objects that are
freed. Only STACKWATCH_PYTHON_ALLOCATORS=1 makes them visible. With the
argument "thread" the leak runs in a worker thread. Runs until stdin
reaches EOF."""
import select
import sys
import threading

kept = {}


class Order:
    __slots__ = ("qty", "px")

    def __init__(self, qty, px):
        self.qty = qty
        self.px = px


def book(i):
    kept[i] = Order(i, i * 0.5)  # @PY small_leak


def churn(i):
    tmp = [Order(i, 1.0) for _ in range(4)]  # @PY small_noise
    return len(tmp)


def work(stop):
    i = 0
    while not stop.is_set():
        book(i)
        churn(i)
        i += 1
        if i % 200 == 0:
            stop.wait(0.005)


stop = threading.Event()
if len(sys.argv) > 1 and sys.argv[1] == "thread":
    t = threading.Thread(target=work, args=(stop,), name="booker")
    t.start()
    print("ready", flush=True)
    sys.stdin.read()
    stop.set()
    t.join()
else:
    print("ready", flush=True)
    i = 0
    while True:
        book(i)
        churn(i)
        i += 1
        if i % 200 == 0 and select.select([sys.stdin], [], [], 0.005)[0] and not sys.stdin.read(1):
            break
print("kept", len(kept), flush=True)
