"""The write-up's route with python/stackwatch.py: a SIGUSR1 handler prints
the allocating thread's Python stack and hands it to the agent. Leaks numpy
arrays from a known line. Runs until stdin reaches EOF."""
import select
import signal
import sys

import numpy as np
import stackwatch

print("installed", stackwatch.install(signal.SIGUSR1, file=sys.stdout), flush=True)
kept = []
a = np.arange(50000, dtype=np.float64)
mask = a % 2 == 0
while True:
    kept.append(a[mask])  # @PY route_leak
    if select.select([sys.stdin], [], [], 0.02)[0] and not sys.stdin.read(1):
        break
print("kept", len(kept), flush=True)
