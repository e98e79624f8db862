"""The seed's leak: a numba nopython generator fed a boolean-mask subscript
(chunk[to_keep]) and never run to completion. numba's finalizer of a
nopython generator decrefs its arguments only, not the state it was
suspended with, so the NRT meminfo made for the argument when the generator
is created (it holds the subscript's ndarray, a Python object, which holds
the data buffer) is never freed: the meminfo is lost directly, the ndarray
and its buffer with it. Compiles the generator (run to completion: no
leak), prints "ready", then leaks one every 50 ms until stdin reaches EOF.
usage: numba_gen_leak.py"""
import select
import sys

import numpy as np
from numba import njit

PAD = 60000


@njit
def rows_above(chunk, limit):
    for i in range(chunk.shape[0]):
        if chunk[i] > limit:
            yield i


def first_hit(chunk, to_keep):
    kept = chunk[to_keep]  # @PY mask
    gen = rows_above(kept, 10.0)  # @PY gen
    return next(gen)  # the generator dies here, suspended


def main():
    chunk = np.arange(3000, dtype=np.float64)
    to_keep = chunk % 3 == 0
    sum(rows_above(chunk[to_keep], 10.0))  # compiled, exhausted: nothing kept
    # Compiling freed thousands of LLVM's small chunks that LLVM's live
    # tables still hold stale pointers to; a meminfo (malloc(48)) put in one
    # would look reachable to any conservative scan. Use them up first.
    pad = [np.empty(6) for _ in range(PAD)]  # 48-byte buffers, like meminfos
    print("ready", flush=True)
    n = 0
    while not (select.select([sys.stdin], [], [], 0.05)[0] and not sys.stdin.read(1)):
        first_hit(chunk, to_keep)
        n += 1
    print("leaked %d (padding %d)" % (n, len(pad)), flush=True)


main()
