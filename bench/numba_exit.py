#!/usr/bin/env python3
"""collectord's CPU after a numba process exits (issue 18).

  /usr/bin/python3 bench/numba_exit.py [--build DIR] [--runs N]

Each run: a fresh collectord (expire 0.5 s, as the tests'),
bench/workloads/numba_compile.py under the agent to its end (numba compiles
four functions: ~50,000 stacks, 1.6 M pcs, ~13,000 distinct ones in
libLLVM-14), then collectord's CPU time (utime + stime of /proc/PID/stat)
from the program's exit until collectord is idle (three seconds in a row
with under 0.02 s of CPU each), and its peak RSS. A benchmark, not a test:
the machine's load shows in the numbers."""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import swtest as sw  # noqa: E402

PY = "/usr/bin/python3"
WORKLOAD = os.path.join(HERE, "workloads", "numba_compile.py")


def cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fs = f.read().rsplit(")", 1)[1].split()
    return (int(fs[11]) + int(fs[12])) / os.sysconf("SC_CLK_TCK")


def hwm_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def one():
    col = sw.Collector(expire=0.5)
    try:
        pid = col.proc.pid
        c0 = cpu(pid)
        r = col.run([PY, WORKLOAD], timeout=600)
        if r.returncode != 0:
            raise SystemExit("workload failed: %s" % r.stderr[-2000:])
        c1 = cpu(pid)
        t1 = time.monotonic()
        last, idle, busy_until = c1, 0, t1
        while idle < 3 and time.monotonic() - t1 < 600:
            time.sleep(1)
            c = cpu(pid)
            if c - last < 0.02:
                idle += 1
            else:
                idle, busy_until = 0, time.monotonic()
            last = c
        return c1 - c0, last - c1, busy_until - t1, hwm_mb(pid)
    finally:
        col.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    b = os.path.abspath(a.build)
    sw.configure(b, b, os.path.join(b, "progs"))
    rows = [one() for _ in range(a.runs)]
    print("collectord after numba_compile.py, %d runs" % a.runs)
    print("%-8s %12s %14s %12s %12s" % ("run", "CPU during s", "CPU after s", "busy s", "peak RSS MB"))
    for i, (d, e, busy, rss) in enumerate(rows):
        print("%-8d %12.2f %14.2f %12.1f %12.0f" % (i + 1, d, e, busy, rss))
    print("%-8s %12.2f %14.2f %12.1f %12.0f" % ("median", *(statistics.median(r[k] for r in rows)
                                                            for k in range(4))))


if __name__ == "__main__":
    main()
