#!/usr/bin/env python3
"""collectord's memory around one numba process (issue 20.2 follow-up).

  /usr/bin/python3 bench/numba_mem.py [--build DIR] [--idle S] [--no-gdb]

A fresh collectord (expire 0.5 s, its store in a private directory),
bench/workloads/numba_compile.py under the agent to its end (~50,000
stacks, 1.6 M pcs, 56 modules), and collectord's memory at five points:
before the process, during it (the highest VmRSS seen, sampled every
0.5 s), right after its exit, once the ended process's report is in the
store and collectord is idle, and after --idle more seconds. At each
point: VmRSS, VmHWM, smaps_rollup's anonymous and file-backed resident
bytes, and (unless --no-gdb) glibc's malloc_stats() (called in collectord
through gdb; it prints to collectord's log): the bytes malloc holds from
the system and those in use. Then what collectord counts for the ended
process (`query clients --json`). A benchmark, not a test."""

import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import swtest as sw  # noqa: E402

PY = "/usr/bin/python3"
WORKLOAD = os.path.join(HERE, "workloads", "numba_compile.py")


def status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0])
    return out


def cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fs = f.read().rsplit(")", 1)[1].split()
    return (int(fs[11]) + int(fs[12])) / os.sysconf("SC_CLK_TCK")


def malloc_stats(col):
    """glibc's totals from malloc_stats() run inside collectord (KiB)."""
    log0 = len(col.read_log())
    subprocess.run(["gdb", "-p", str(col.proc.pid), "-batch", "-nx",
                    "-ex", "call (void)malloc_stats()"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    text = col.read_log()[log0:]
    sysb = re.findall(r"^system bytes\s+=\s+(\d+)", text, re.M)
    used = re.findall(r"^in use bytes\s+=\s+(\d+)", text, re.M)
    mm = re.findall(r"^max mmap bytes\s+=\s+(\d+)", text, re.M)
    if not sysb:
        return None
    # The last "system bytes"/"in use bytes" pair is the total over arenas.
    return {"malloc_sys": int(sysb[-1]) // 1024, "malloc_used": int(used[-1]) // 1024,
            "arenas": len(sysb) - 1, "mmap_max": int(mm[-1]) // 1024 if mm else 0}


def point(col, name, gdb, rows):
    r = status(col.proc.pid)
    if gdb:
        m = malloc_stats(col)
        if m:
            r.update(m)
    r["name"] = name
    rows.append(r)
    print("%-14s %s" % (name, " ".join("%s=%s" % (k, v) for k, v in r.items() if k != "name")),
          flush=True)


def wait_idle(pid, limit=600):
    t1 = time.monotonic()
    last, idle = cpu(pid), 0
    while idle < 3 and time.monotonic() - t1 < limit:
        time.sleep(1)
        c = cpu(pid)
        idle = idle + 1 if c - last < 0.02 else 0
        last = c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--idle", type=float, default=30)
    ap.add_argument("--no-gdb", action="store_true")
    ap.add_argument("--no-store", action="store_true", help="collectord --state-dir none")
    ap.add_argument("--heaptrack", metavar="OUT", help="heaptrack collectord from 'before' on")
    ap.add_argument("--trim", action="store_true", help="then malloc_trim(0) through gdb")
    ap.add_argument("--log", action="store_true", help="print the end of collectord's log")
    a = ap.parse_args()
    b = os.path.abspath(a.build)
    sw.configure(b, b, os.path.join(b, "progs"))
    gdb = not a.no_gdb
    import tempfile
    state = tempfile.mkdtemp(prefix="numba-mem-state-")
    col = sw.Collector(expire=0.5, extra=("--state-dir", "none" if a.no_store else state))
    rows = []
    try:
        pid = col.proc.pid
        time.sleep(0.5)
        point(col, "before", gdb, rows)
        ht = None
        if a.heaptrack:
            ht = subprocess.Popen(["heaptrack", "-o", a.heaptrack, "-p", str(pid)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(5)
        p = subprocess.Popen([PY, WORKLOAD], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=col.agent_env())
        peak = 0
        while True:
            try:
                out, err = p.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                peak = max(peak, status(pid)["VmRSS"])
        if p.returncode != 0:
            raise SystemExit("workload failed: %s" % err[-2000:])
        rows.append({"name": "during (max)", "VmRSS": peak})
        print("%-14s VmRSS=%d" % ("during (max)", peak), flush=True)
        point(col, "exit", gdb, rows)
        t0 = time.monotonic()
        while not a.no_store and not [f for f in os.listdir(state) if not f.startswith(".")] and \
                time.monotonic() - t0 < 300:
            time.sleep(0.2)
        wait_idle(pid)
        point(col, "saved, idle", gdb, rows)
        time.sleep(a.idle)
        point(col, "+%gs idle" % a.idle, gdb, rows)
        if a.trim:
            subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx", "-ex", "call (int)malloc_trim(0)"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
            point(col, "gdb trim", gdb, rows)
        if a.log:
            print(col.read_log()[-6000:])
        q = col.ctl("query", "clients", "--json", check=False)
        try:
            cl = json.loads(q.stdout)
        except ValueError:
            cl = None
        if cl is not None:
            items = cl if isinstance(cl, list) else cl.get("clients", [])
            for c in items:
                keep = {k: v for k, v in c.items()
                        if re.search(r"stack|bytes|frames|pcs|state|pid", k)
                        and not isinstance(v, (list, dict))}
                print("client:", json.dumps(keep, sort_keys=True))
    finally:
        col.close()
        if a.heaptrack and ht:
            print(ht.communicate(timeout=300)[0][-2000:])
        import shutil
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
