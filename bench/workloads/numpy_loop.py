"""The numpy benchmark: a loop of typical array work that creates and drops
arrays of 1e3..1e5 elements (random draws, arange, dot, concatenate, cumsum,
boolean masks, sorting). Deterministic seed. Run with Debian's python3.

  /usr/bin/python3 numpy_loop.py [ITERATIONS]     (default 3000)
"""
import sys
import time

import numpy as np


def step(rng, i, acc):
    n = int(rng.integers(1_000, 100_001))
    a = rng.random(n)
    b = np.arange(n, dtype=np.float64)
    c = a * b + 1.0
    d = np.concatenate((a[: n // 2], c[n // 2:]))
    e = np.cumsum(d)
    mask = a > 0.5
    f = e[mask]
    g = np.sort(f[:2048])
    m = int(rng.integers(8, 64))
    x = rng.standard_normal((m, m))
    y = x.dot(x.T)
    acc += float(e[-1]) * 1e-9 + float(g[0] if g.size else 0.0) + float(y.trace()) * 1e-6
    return acc


def main():
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    rng = np.random.default_rng(20240611)
    acc = 0.0
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(iterations):
        acc = step(rng, i, acc)
    c1, t1 = time.process_time(), time.perf_counter()
    # The loop alone (bench/pysmall_cost.py --workload numpy reads it).
    sys.stderr.write("loop cpu=%.4f wall=%.4f\n" % (c1 - c0, t1 - t0))
    print("numpy_loop: %d iterations, checksum %.6g" % (iterations, acc))


if __name__ == "__main__":
    main()
