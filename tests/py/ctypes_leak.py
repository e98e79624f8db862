"""Leaks C memory from a known line through ctypes. PyDLL keeps the GIL
during the call (CDLL releases it, and the agent reads Python frames only
while the GIL is held). Runs until stdin reaches EOF."""
import ctypes
import select
import sys

libc = ctypes.PyDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
kept = []


def grab(n):
    return libc.malloc(n)  # @PY ctypes_leak


def churn():
    libc.free(libc.malloc(4321))  # @PY ctypes_noise


print("ready", flush=True)
while True:
    kept.append(grab(7777))
    for _ in range(5):
        churn()
    if select.select([sys.stdin], [], [], 0.01)[0] and not sys.stdin.read(1):
        break
print("kept", len(kept), flush=True)
