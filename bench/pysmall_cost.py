#!/usr/bin/python3
"""The small-object loop's own cost (bench/workloads/pysmall_loop.py), start-up
and exit left out: the loop's process CPU time (all threads, the agent's
flusher included) and wall, bare and under the agent by default, with
STACKWATCH_PYTHON_ALLOCATORS=exact and =0; interleaved rounds, medians.

  /usr/bin/python3 bench/pysmall_cost.py [--runs N] [--n ITER] [--loads] [--build DIR]
"""
import argparse
import os
import re
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
    ap.add_argument("--n", type=int, default=500000)
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
    cmd = [PY, os.path.join(HERE, "workloads", "pysmall_loop.py"), str(a.n)] + \
        (["loads"] if a.loads else [])
    res = {v: {"cpu": [], "wall": []} for v, _ in variants}
    try:
        for i in range(a.runs):
            k = i % len(variants)
            for name, env in variants[k:] + variants[:k]:
                e = dict(os.environ)
                e.pop("LD_PRELOAD", None)
                e.update(env)
                r = subprocess.run(cmd, env=e, capture_output=True, text=True, check=True)
                m = re.search(r"loop cpu=([\d.]+) wall=([\d.]+)", r.stderr)
                res[name]["cpu"].append(float(m.group(1)))
                res[name]["wall"].append(float(m.group(2)))
    finally:
        subprocess.run([os.path.join(b, "collectord"), "stop", "--dir", d],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = {k: statistics.median(res["bare"][k]) for k in ("cpu", "wall")}
    print("pysmall_loop.py %d %s, %d interleaved runs, medians (loop only):" %
          (a.n, "json.loads" if a.loads else "raw_decode", a.runs))
    print("%-9s %9s %7s %9s %7s" % ("variant", "cpu s", "x bare", "wall s", "x bare"))
    for name, _ in variants:
        c, w = statistics.median(res[name]["cpu"]), statistics.median(res[name]["wall"])
        print("%-9s %9.3f %7.2f %9.3f %7.2f" % (name, c, c / base["cpu"], w, w / base["wall"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
