"""Cost of a reachability scan of a Python process whose small objects are
nodes (issue 19.3): a CPython 3.11 process holding OBJS Python objects (dicts
of lists of ints and strs, about 5 pymalloc blocks each) and HELD malloc'd
blocks kept through ctypes Holder objects in a list (their retention paths
go through Python objects and name their types). Scans it RUNS times under
a private collectord (STACKWATCH_PYTHON_ALLOCATORS=0: every Python object is
an untracked node) and prints the median whole scan, collectord CPU and
collectord's peak RSS (VmHWM) after the scans.

    python3 bench/scan/pyobjs.py --build build [--objs 200000] [--runs 5]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "integration"))
import swtest as sw  # noqa: E402

PROG = r'''
import ctypes, sys
libc = ctypes.PyDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
class Holder(ctypes.Structure):
    _fields_ = [("p", ctypes.c_void_p)]
objs, held = int(sys.argv[1]), int(sys.argv[2])
DATA = [{"k": [i, str(i), (i, i + 1)]} for i in range(objs // 5)]
KEEP = [Holder(libc.malloc(100)) for _ in range(held)]
print("ready", flush=True)
sys.stdin.read()
'''


def vmhwm(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--objs", type=int, default=200000)
    ap.add_argument("--held", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    b = os.path.abspath(a.build)
    sw.configure(b, b, os.path.join(b, "progs"))
    tmp = tempfile.mkdtemp(prefix="swbench-")
    script = os.path.join(tmp, "objs.py")
    with open(script, "w") as f:
        f.write(PROG)
    col = sw.Collector(expire=0.5)
    try:
        p = col.start(["/usr/bin/python3.11", script, str(a.objs), str(a.held)],
                      STACKWATCH_PYTHON_ALLOCATORS="0")
        assert p.stdout.readline().strip() == "ready"
        time.sleep(2)  # the held blocks expire (may-leak): their paths are kept
        hwm0 = vmhwm(col.proc.pid)
        dur, cpu = [], []
        for _ in range(a.runs):
            r = json.loads(col.ctl("scan", str(p.pid), "--json").stdout)
            s = r.get("scan", r)
            dur.append(s["duration_us"])
            cpu.append(s["cpu_us"])
        hwm = vmhwm(col.proc.pid)
        rep = col.leaks("--pid", str(p.pid), "--top", "1000")
        kept = [k for s in rep["stacks"] for k in (s.get("kept_by") or [])]
        print(json.dumps({"objs": a.objs, "held": a.held, "runs": a.runs,
                          "py_objects": s.get("py_objects"),
                          "blocks": s.get("blocks"),
                          "whole_scan_ms": statistics.median(dur) / 1000,
                          "cpu_ms": statistics.median(cpu) / 1000,
                          "collectord_vmhwm_mib_before": hwm0 / 1048576,
                          "collectord_vmhwm_mib_after": hwm / 1048576,
                          "chain_sample": kept[0] if kept else None}))
        p.stdin.close()
        p.wait(30)
    finally:
        col.close()


if __name__ == "__main__":
    main()
