"""A numpy leak that runs to completion: arrays kept in a global list by one
line, temporaries freed by another. Exits normally (interpreter finalization
then frees everything). No stdin.   usage: numpy_exit_leak.py [ITERATIONS]"""
import sys
import time

import numpy as np

kept = []


def step(i):
    tmp = np.ones(3000) * i  # freed at once
    kept.append(np.zeros(2000) + tmp[:2000])  # @PY leak


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    for i in range(n):
        step(i)
        time.sleep(0.005)
    print("kept", len(kept), flush=True)


main()
