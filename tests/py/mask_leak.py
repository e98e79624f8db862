"""The write-up's leak: numpy boolean-mask subscripts, one line keeping its
result forever, one line (same C stack) dropping it. Optional worker thread.
Runs until stdin reaches EOF, or for N seconds with --seconds N (then stdin
is not read: fine in the background of a shell).
usage: mask_leak.py [thread] [--seconds N]"""
import select
import sys
import threading
import time

import numpy as np

kept = []


def harmless(chunk, mask):
    return chunk[mask].sum()  # @PY harmless


def leaky(chunk, mask):
    sub = chunk[mask]  # @PY leak
    kept.append(sub)


def work(stop):
    a = np.arange(20000, dtype=np.float64)
    mask = a % 3 == 0
    while not stop.is_set():
        for _ in range(20):
            harmless(a, mask)
        leaky(a, mask)
        stop.wait(0.01)


def main():
    stop = threading.Event()
    if "--seconds" in sys.argv:
        seconds = float(sys.argv[sys.argv.index("--seconds") + 1])
        a = np.arange(20000, dtype=np.float64)
        mask = a % 3 == 0
        end = time.monotonic() + seconds
        print("running for %g s" % seconds, flush=True)
        while time.monotonic() < end:
            for _ in range(20):
                harmless(a, mask)
            leaky(a, mask)
            time.sleep(0.01)
    elif len(sys.argv) > 1 and sys.argv[1] == "thread":
        t = threading.Thread(target=work, args=(stop,), name="worker")
        t.start()
        print("ready", flush=True)
        while select.select([sys.stdin], [], [], 0.05)[0] == [] or sys.stdin.read(1):
            pass
        stop.set()
        t.join()
    else:
        print("ready", flush=True)
        a = np.arange(20000, dtype=np.float64)
        mask = a % 3 == 0
        while True:
            for _ in range(20):
                harmless(a, mask)
            leaky(a, mask)
            if select.select([sys.stdin], [], [], 0.01)[0] and not sys.stdin.read(1):
                break
    print("kept", len(kept), flush=True)


main()
