"""Compiles four small numba functions (LLVM's allocations: thousands of
stacks through Debian's stripped libLLVM-14) and runs them once, then exits.
The workload of bench/numba_exit.py (issue 18)."""
import numpy as np
from numba import njit

@njit
def f1(a):
    s = 0.0
    for x in a:
        s += x
    return s

@njit
def f2(a, b):
    return a * b + np.sqrt(a)

@njit
def f3(n):
    out = []
    for i in range(n):
        out.append(np.zeros(i % 7 + 1))
    return len(out)

@njit
def f4(a):
    return np.sort(a)[::2].copy()

a = np.arange(1000.0)
print(f1(a), f2(a, a).sum(), f3(100), f4(a).sum())
