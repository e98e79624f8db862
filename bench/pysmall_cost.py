#!/usr/bin/python3
"""A Python workload's loop cost, start-up and exit left out: the loop's
process CPU time (all threads, the agent's flusher included) and wall, bare
and under the agent by default, with STACKWATCH_PYTHON_ALLOCATORS=exact and
=0; interleaved rounds, medians. Also each whole process's CPU (user+sys
from wait4: start-up, imports and exit included; collectord's not).

  /usr/bin/python3 bench/pysmall_cost.py [--workload pysmall|numpy|seed] [--runs N]
                                          [--n ITER] [--loads] [--build DIR]

Workloads (bench/workloads/): pysmall_loop.py (the default; --loads: through
json.loads), numpy_loop.py, seed_loop.py."""
import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = "/usr/bin/python3"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--workload", choices=("pysmall", "numpy", "seed"), default="pysmall")
    ap.add_argument("--n", type=int, help="iterations (default: pysmall 500000, numpy 1500, "
                    "seed 30000)")
    ap.add_argument("--loads", action="store_true", help="json.loads instead of raw_decode")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    a = ap.parse_args()
    b = os.path.abspath(a.build)
    tmp = tempfile.mkdtemp(prefix="swpysmall-")
    d = os.path.join(tmp, "run")
    subprocess.run([os.path.join(b, "collectord"), "start", "--dir", d, "--expire", "10"],
                   check=True, stdout=subprocess.DEVNULL)
    agent = {"LD_PRELOAD": os.path.join(b, "libstackagent.so"), "STACKWATCH_DIR": d}
    variants = [("bare", {}), ("default", agent),
                ("py-exact", dict(agent, STACKWATCH_PYTHON_ALLOCATORS="exact")),
                ("py-off", dict(agent, STACKWATCH_PYTHON_ALLOCATORS="0"))]
    n = a.n or {"pysmall": 500000, "numpy": 1500, "seed": 30000}[a.workload]
    cmd = [PY, os.path.join(HERE, "workloads", "%s_loop.py" % a.workload), str(n)] + \
        (["loads"] if a.loads and a.workload == "pysmall" else [])
    res = {v: {"cpu": [], "wall": [], "proc": []} for v, _ in variants}
    try:
        for i in range(a.runs):
            k = i % len(variants)
            for name, env in variants[k:] + variants[:k]:
                e = dict(os.environ)
                e.pop("LD_PRELOAD", None)
                e.update(env)
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                r = subprocess.run(cmd, env=e, capture_output=True, text=True, check=True)
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                m = re.search(r"loop cpu=([\d.]+) wall=([\d.]+)", r.stderr)
                res[name]["cpu"].append(float(m.group(1)))
                res[name]["wall"].append(float(m.group(2)))
                res[name]["proc"].append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    finally:
        subprocess.run([os.path.join(b, "collectord"), "stop", "--dir", d],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = {k: statistics.median(res["bare"][k]) for k in ("cpu", "wall", "proc")}
    what = {"pysmall": "json.loads" if a.loads else "raw_decode", "numpy": "", "seed": ""}
    print("%s_loop.py %d %s, %d interleaved runs, medians (loop only; process: the whole "
          "process's CPU):" % (a.workload, n, what[a.workload], a.runs))
    print("%-9s %9s %7s %9s %7s %9s %7s" % ("variant", "cpu s", "x bare", "wall s", "x bare",
                                           "process s", "x bare"))
    for name, _ in variants:
        c, w, pr = (statistics.median(res[name][k]) for k in ("cpu", "wall", "proc"))
        print("%-9s %9.3f %7.2f %9.3f %7.2f %9.3f %7.2f" % (name, c, c / base["cpu"], w,
                                                           w / base["wall"], pr,
                                                           pr / base["proc"]))
        print("          runs: cpu %s" % " ".join("%.3f" % x for x in res[name]["cpu"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
