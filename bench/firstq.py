#!/usr/bin/env python3
"""First-query latency on a live numpy process (issue 9's goal: the first
`query leaks --top 10` under 0.5 s, `--all --json` under 2 s).

  /usr/bin/python3 bench/firstq.py [--build DIR] [--agent-build DIR] [--runs N]
                                   [--after S,S] [--baseline DIR]

Each run: a fresh collectord (expire 1 s), tests/py/mask_leak.py under the
agent (about 3,500 stacks: the interpreter's start-up, numpy's import, the
leak), and S seconds later, in this order: `query leaks --top 10`,
`query leaks --all --json`, the same again (warm). Times are wall seconds of
the stackctl command, medians over the runs. --baseline DIR runs the same
with collectord/stackctl from another build (e.g. an older commit) in the
same run, interleaved, for a before/after ratio. A benchmark, not a test:
the machine's load shows in the numbers."""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = "/usr/bin/python3"


def timed(cmd, env):
    t0 = time.monotonic()
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (cmd, r.stderr.decode()))
    return dt, r.stdout


def one_run(build, agent, after):
    tmp = tempfile.mkdtemp(prefix="swfirstq-")
    d = os.path.join(tmp, "run")
    env = dict(os.environ, STACKWATCH_DIR=d)
    env.pop("DEBUGINFOD_URLS", None)
    col = subprocess.Popen([os.path.join(build, "collectord"), "start", "-f", "--dir", d,
                            "--expire", "1"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    col.stdout.readline()
    app = subprocess.Popen([PY, os.path.join(ROOT, "tests", "py", "mask_leak.py")],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True,
                           env=dict(env, LD_PRELOAD=os.path.join(agent, "libstackagent.so")))
    try:
        app.stdout.readline()
        time.sleep(after)  # a benchmark's timing point, not a synchronization
        ctl = [os.path.join(build, "stackctl"), "--dir", d, "query", "leaks"]
        top, _ = timed(ctl + ["--top", "10"], env)
        alljs, out = timed(ctl + ["--all", "--json"], env)
        warm, _ = timed(ctl + ["--all", "--json"], env)
        nstacks = out.count(b'"id":')
        return {"top10": top, "all_json": alljs, "all_json_warm": warm, "stacks": nstacks}
    finally:
        app.stdin.close()
        app.wait(60)
        col.terminate()
        col.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--agent-build")
    ap.add_argument("--baseline", help="collectord/stackctl of another build, compared")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--after", default="1.5,6", help="seconds after start of the first query")
    a = ap.parse_args()
    agent = os.path.abspath(a.agent_build or a.build)
    builds = [("this", os.path.abspath(a.build))]
    if a.baseline:
        builds.append(("baseline", os.path.abspath(a.baseline)))
    afters = [float(x) for x in a.after.split(",")]
    res = {}
    for r in range(a.runs):
        for after in afters:
            for name, b in builds:  # interleaved: the same load for both
                res.setdefault((name, after), []).append(one_run(b, agent, after))
        print("run %d/%d done" % (r + 1, a.runs), file=sys.stderr)
    print("first query on a live numpy process (mask_leak.py), medians of %d runs" % a.runs)
    print("%-9s %7s %8s %10s %12s %16s" % ("build", "after s", "stacks", "top10 s",
                                          "all-json s", "all-json warm s"))
    for (name, after), rs in sorted(res.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        m = lambda k: statistics.median(x[k] for x in rs)
        print("%-9s %7.1f %8d %10.3f %12.3f %16.3f" % (name, after, m("stacks"), m("top10"),
                                                       m("all_json"), m("all_json_warm")))


if __name__ == "__main__":
    main()
