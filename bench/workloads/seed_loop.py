"""The seed-like benchmark: the write-up's program shape (tests/py/mask_leak.py
and tests/py/numba_gen_leak.py), without its leak. A stream of chunks of a
numpy array; per chunk a boolean mask (chunk[to_keep]), a numba nopython
generator over the kept rows run to completion, and a little Python
bookkeeping per chunk (a dict of figures, one in 64 kept). Deterministic.
Run with Debian's python3 (python3-numpy; python3-numba if installed, else
the same generator in Python, said on stderr).

  /usr/bin/python3 seed_loop.py [CHUNKS]     (default 20000)

Prints "loop cpu=S wall=S" on stderr: the loop alone (process CPU of every
thread, the agent's flusher included; the import and the JIT compile left
out), as bench/workloads/pysmall_loop.py does."""
import sys
import time

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is optional
    njit = None


def _rows_above(chunk, limit):
    for i in range(chunk.shape[0]):
        if chunk[i] > limit:
            yield i


rows_above = njit(_rows_above) if njit else _rows_above


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    if not njit:
        sys.stderr.write("seed_loop: numba not installed: the generator runs in Python\n")
    rng = np.random.default_rng(20261207)
    data = rng.random(64 * 4096) * 100.0
    sum(rows_above(data[:64], 50.0))  # compiled before the loop
    kept, acc = [], 0.0
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(n):
        off = (i * 4096) % (data.shape[0] - 4096)
        chunk = data[off:off + 4096]
        to_keep = chunk > 66.0
        sub = chunk[to_keep]
        hits = 0
        for _ in rows_above(sub, 99.0):
            hits += 1
        rec = {"chunk": i, "kept": int(sub.shape[0]), "hits": hits, "mean": float(sub.mean())}
        acc += rec["mean"] * 1e-6 + rec["hits"]
        if i & 63 == 0:
            kept.append(rec)
    c1, t1 = time.process_time(), time.perf_counter()
    sys.stderr.write("loop cpu=%.4f wall=%.4f\n" % (c1 - c0, t1 - t0))
    print("seed_loop: %d chunks, checksum %.6g, %d kept" % (n, acc, len(kept)))


if __name__ == "__main__":
    main()
