#!/usr/bin/env python3
"""Reachability scan benchmark: what `stackctl scan` costs on a process with
N live tracked blocks (pause of the process, whole scan, collectord CPU,
bytes copied), and that it finds exactly the planted lost blocks.

  run.py [--build DIR] [--blocks N[,N...]] [--lost K] [--runs R] [--json] [--markdown]

The workload (bench/scan/live.c) runs under the preloaded agent with a
private collectord; it is compiled into BUILD/bench/."""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_workload(build):
    out = os.path.join(build, "bench", "scan-live")
    src = os.path.join(ROOT, "bench", "scan", "live.c")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        subprocess.check_call([os.environ.get("CC", "cc"), "-std=gnu11", "-O2", "-g", "-o", out,
                               src])
    return out


def rss_kb(pid, field="VmRSS:"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def one(build, prog, n, lost, runs, attach=False):
    tmp = tempfile.mkdtemp(prefix="swbench-scan-")
    d = os.path.join(tmp, "run")
    log = open(os.path.join(tmp, "collectord.log"), "w")
    col = subprocess.Popen([os.path.join(build, "collectord"), "start", "-f", "--dir", d,
                            "--expire", "3600", "--max-live", str(4 * n + 100000)],
                           stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        if "foreground" not in col.stdout.readline():
            raise SystemExit("collectord did not start")
        env = dict(os.environ, STACKWATCH_DIR=d,
                   LD_PRELOAD=os.path.join(build, "libstackagent.so"))
        ctl = [os.path.join(build, "stackctl"), "--dir", d]
        if attach:
            # A service the agent is attached to, its blocks made after.
            env.pop("LD_PRELOAD")
            p = subprocess.Popen([prog, str(n), str(lost), "wait"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=env)
            if not p.stdout.readline().startswith("waiting"):
                raise SystemExit("workload did not start")
            subprocess.check_call(ctl + ["attach", str(p.pid), "--agent",
                                         os.path.join(build, "libstackagent.so")],
                                  stdout=subprocess.DEVNULL, env=env)
            p.stdin.write("go\n")
            p.stdin.flush()
        else:
            p = subprocess.Popen([prog, str(n), str(lost)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=env)
        line = p.stdout.readline()
        if not line.startswith("ready"):
            raise SystemExit("workload did not start: %r" % line)
        # Every allocation applied: the client's live count reaches N + LOST + 1.
        want = n + lost + 1
        deadline = time.monotonic() + 300
        while True:
            cs = json.loads(subprocess.check_output(ctl + ["query", "clients", "--json"]))
            c = [x for x in cs["clients"] if x["pid"] == p.pid]
            if c and c[0]["live"]["count"] >= want:
                break
            if time.monotonic() > deadline:
                raise SystemExit("collectord did not see %d live blocks" % want)
            time.sleep(0.2)
        target_rss = rss_kb(p.pid)
        hwm0 = rss_kb(col.pid, "VmHWM:")
        rss0 = rss_kb(col.pid)
        res = []
        for _ in range(runs):
            s = json.loads(subprocess.check_output(ctl + ["scan", str(p.pid), "--json"]))
            res.append(s)
        col_rss = rss_kb(col.pid)
        hwm1 = rss_kb(col.pid, "VmHWM:")
        p.stdin.close()
        p.wait(60)
        for s in res:
            if s["unreachable"]["count"] != lost:
                raise SystemExit("scan found %d unreachable, %d planted" %
                                 (s["unreachable"]["count"], lost))
        return {
            "blocks": res[0]["blocks"]["count"],
            "unreachable": res[0]["unreachable"]["count"],
            "target_rss_mib": target_rss / 1024.0,
            "collectord_rss_mib": col_rss / 1024.0,
            "collectord_rss_before_mib": rss0 / 1024.0,
            "collectord_peak_mib": hwm1 / 1024.0,
            "collectord_peak_before_mib": hwm0 / 1024.0,
            "read_mib": [s["read_bytes"] / 1048576.0 for s in res],
            "pause_ms": [s["pause_us"] / 1000.0 for s in res],
            "duration_ms": [s["duration_us"] / 1000.0 for s in res],
            "cpu_ms": [s["cpu_us"] / 1000.0 for s in res],
            "log": [l for l in open(log.name).read().splitlines() if "scan of" in l],
        }
    finally:
        if col.poll() is None:
            col.terminate()
            col.wait(60)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def med(v):
    return statistics.median(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--blocks", default="100000,1000000")
    ap.add_argument("--lost", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--attach", action="store_true",
                    help="attach to the workload (stackctl attach) instead of preloading")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    prog = build_workload(build)
    out = {"date": datetime.date.today().isoformat(), "machine": platform.machine(),
           "cpus": os.cpu_count(), "kernel": platform.release(),
           "load": os.getloadavg(), "results": []}
    try:
        out["commit"] = subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short",
                                                 "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        out["commit"] = "?"
    for n in [int(x) for x in a.blocks.split(",")]:
        r = one(build, prog, n, a.lost, a.runs, a.attach)
        out["results"].append(r)
        print("%9d live blocks: pause %7.1f ms (min %.1f, max %.1f), scan %7.1f ms, "
              "collectord CPU %7.1f ms, copied %.1f MiB (target RSS %.0f MiB), "
              "collectord RSS %.0f MiB before the scans, %.0f after; peak (VmHWM) %.0f MiB "
              "before, %.0f during; first scan's pause %.1f ms" %
              (r["blocks"], med(r["pause_ms"]), min(r["pause_ms"]), max(r["pause_ms"]),
               med(r["duration_ms"]), med(r["cpu_ms"]), med(r["read_mib"]),
               r["target_rss_mib"], r["collectord_rss_before_mib"], r["collectord_rss_mib"],
               r["collectord_peak_before_mib"], r["collectord_peak_mib"], r["pause_ms"][0]),
              flush=True)
        for l in r["log"]:
            print("    " + l.split(": ", 1)[-1])
    if a.markdown:
        print("\n| live blocks | pause (median, min–max) | whole scan | collectord CPU | copied |")
        print("|---|---|---|---|---|")
        for r in out["results"]:
            print("| %d | %.0f ms (%.0f–%.0f) | %.0f ms | %.0f ms | %.0f MiB |" %
                  (r["blocks"], med(r["pause_ms"]), min(r["pause_ms"]), max(r["pause_ms"]),
                   med(r["duration_ms"]), med(r["cpu_ms"]), med(r["read_mib"])))
    if a.json:
        json.dump(out, sys.stdout, indent=1)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
