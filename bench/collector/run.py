#!/usr/bin/python3
"""collectord ingest benchmark: events per second per core, memory per live block.

  /usr/bin/python3 bench/collector/run.py [--build DIR] [--runs N] [--events N]
        [--live N] [--stacks N] [--batch N] [--allocs K] [--deep-stacks S]
        [--frames F] [--quick] [--json] [--check]

Each run starts its own collectord in the foreground in a temporary directory
(`collectord start -f --dir DIR --expire 30`), drives it with build/bench/ingest
(a fake agent, bench/collector/ingest.c) and stops it. Throughput: the median
of --runs runs of the rate mode (collectord CPU seconds, utime+stime, for
--events events after a live set of --live blocks is in place). Memory: the
median of --runs runs of the mem mode (collectord VmRSS growth per live block
after --allocs allocations). Stacks: --deep-stacks distinct stacks of 20-40
frames drawn from --frames return addresses in real modules, one live block
each, symbolized; collectord's RSS growth per stack and what it counts it
holds per stack and per block (query clients). Targets: >= 5M events/s per
core, <= 64 B per live block, <= 1 KB per distinct stack; --check exits 1
when one is missed. Standard library only; see bench/collector/README.md.
"""

import argparse
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TARGET_RATE = 5e6          # events per CPU-second of collectord
TARGET_BYTES = 64.0        # bytes of collectord RSS per live block
TARGET_STACK = 1024.0      # bytes of collectord per distinct stack
STACK_EXPIRE = 2           # --expire of the stacks runs (their blocks must expire)
# ELF files whose functions the stacks mode's frames lie in (those present).
STACK_MODULES = ["collectord", "/lib/x86_64-linux-gnu/libc.so.6",
                 "/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libdw.so.1"]
START_TIMEOUT = 10.0       # seconds for collectord to say it is running
RUN_TIMEOUT = 600.0        # seconds for one ingest run
QUIET_BUSY = 0.3           # CPUs busy with other work below which a run may start
QUIET_WAIT = 10.0          # seconds one run waits for that at most


def cpu_busy():
    """Busy and total jiffies of the machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def wait_quiet():
    """Waits (bounded) until other work uses less than QUIET_BUSY CPUs.
    Returns the CPUs busy in the last sample."""
    deadline = time.monotonic() + QUIET_WAIT
    ncpu = os.cpu_count() or 1
    while True:
        b0, t0 = cpu_busy()
        time.sleep(0.3)
        b1, t1 = cpu_busy()
        busy = ncpu * (b1 - b0) / max(1, t1 - t0)
        if busy < QUIET_BUSY or time.monotonic() > deadline:
            return busy


class Collectord:
    """A collectord in the foreground in its own temporary directory."""

    def __init__(self, build, expire):
        self.dir = tempfile.mkdtemp(prefix="swbench-coll-")
        self.bin = os.path.join(build, "collectord")
        self.proc = subprocess.Popen(
            [self.bin, "start", "-f", "--dir", self.dir, "--expire", str(expire)],
            stdout=subprocess.PIPE, stderr=open(os.path.join(self.dir, "log"), "w"))
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        while b"running in the foreground" not in line:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                self.stop()
                raise RuntimeError("collectord did not start: see " + self.dir + "/log")
            line = self.proc.stdout.readline()
            if not line:
                self.stop()
                raise RuntimeError("collectord exited: see " + self.dir + "/log")
        self.pid = self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            subprocess.run([self.bin, "stop", "--dir", self.dir],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        for name in ("log", "collectord.pid"):
            try:
                os.unlink(os.path.join(self.dir, name))
            except OSError:
                pass
        try:
            os.rmdir(self.dir)
        except OSError:
            pass


def stack_modules(build):
    mods = []
    for m in STACK_MODULES:
        p = m if m.startswith("/") else os.path.join(build, m)
        if os.path.exists(p):
            mods += ["--module", p]
    return mods


def run_once(args, mode):
    """One ingest run against a fresh collectord; returns its JSON result."""
    busy = wait_quiet()
    cd = Collectord(args.build, STACK_EXPIRE if mode == "stacks" else args.expire)
    try:
        cmd = [os.path.join(args.build, "bench", "ingest"), "--dir", cd.dir,
               "--pid", str(cd.pid), "--mode", mode,
               "--stacks", str(args.deep_stacks if mode == "stacks" else args.stacks),
               "--batch", str(args.batch)]
        if mode == "rate":
            cmd += ["--events", str(args.events), "--live", str(args.live)]
        elif mode == "stacks":
            cmd += ["--frames", str(args.frames), "--expire-wait", str(STACK_EXPIRE + 1)]
            cmd += stack_modules(args.build)
        else:
            cmd += ["--allocs", str(args.allocs)]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             timeout=RUN_TIMEOUT)
        if out.returncode != 0:
            raise RuntimeError("ingest failed: " + out.stderr.decode(errors="replace").strip())
        r = json.loads(out.stdout)
        r["busy_before"] = round(busy, 2)
        return r
    finally:
        cd.stop()


def machine():
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "nproc": os.cpu_count(),
            "cpu": model, "kernel": platform.release(),
            "rev": (rev or "?") + ("+dirty" if dirty else "")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--events", type=int, default=20000000)
    ap.add_argument("--live", type=int, default=100000)
    ap.add_argument("--stacks", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--allocs", type=int, default=2000000)
    ap.add_argument("--expire", default="30")
    ap.add_argument("--deep-stacks", type=int, default=100000,
                    help="distinct stacks of the stacks runs (0: none)")
    ap.add_argument("--frames", type=int, default=4000,
                    help="distinct return addresses the stacks are drawn from")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    if args.quick:
        args.events, args.allocs, args.runs = 2000000, 200000, 1
        args.deep_stacks = min(args.deep_stacks, 20000)
    for f in ("collectord", os.path.join("bench", "ingest")):
        if not os.access(os.path.join(args.build, f), os.X_OK):
            sys.exit("bench/collector: %s/%s is missing: make bench-collector builds it"
                     % (args.build, f))

    info = machine()
    rate = [run_once(args, "rate") for _ in range(args.runs)]
    mem = [run_once(args, "mem") for _ in range(args.runs)]
    med_rate = statistics.median(r["events_per_cpu_s"] for r in rate)
    med_bytes = statistics.median(r["bytes_per_live"] for r in mem)
    stk = [run_once(args, "stacks") for _ in range(args.runs)] if args.deep_stacks else []
    med_stack = statistics.median(r["coll_bytes_per_stack"] for r in stk) if stk else 0
    res = {"machine": info, "rate_runs": rate, "mem_runs": mem, "stack_runs": stk,
           "events_per_cpu_s": med_rate, "bytes_per_live": med_bytes,
           "bytes_per_stack": med_stack,
           "rate_ok": med_rate >= TARGET_RATE, "bytes_ok": med_bytes <= TARGET_BYTES,
           "stack_ok": med_stack <= TARGET_STACK}

    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print("collectord ingest benchmark  %s  nproc %s  %s  rev %s" %
              (info["date"], info["nproc"], info["cpu"], info["rev"]))
        print("rate: %d events after a live set of %d blocks, %d stacks, %d events/batch"
              % (args.events, args.live, args.stacks, args.batch))
        for r in rate:
            print("  cpu %.3f s  wall %.3f s  %.2fM events/s per core  (%.2fM/s wall; "
                  "other load before: %.2f CPUs)" %
                  (r["sched_cpu_s"], r["wall_s"], r["events_per_cpu_s"] / 1e6,
                   r["events_per_wall_s"] / 1e6, r["busy_before"]))
        print("  median %.2fM events/s per core  (target >= %.0fM: %s)" %
              (med_rate / 1e6, TARGET_RATE / 1e6, "ok" if res["rate_ok"] else "MISSED"))
        print("memory: %d live blocks" % args.allocs)
        for r in mem:
            print("  VmRSS %d -> %d KiB  %.1f B per live block" %
                  (r["rss0_kb"], r["rss1_kb"], r["bytes_per_live"]))
        print("  median %.1f B per live block  (target <= %.0f: %s)" %
              (med_bytes, TARGET_BYTES, "ok" if res["bytes_ok"] else "MISSED"))
        if stk:
            print("stacks: %d distinct stacks of 20-40 frames over %d return addresses, "
                  "symbolized, one live block each" % (args.deep_stacks, args.frames))
            for r in stk:
                print("  VmRSS %d -> %d KiB defined -> %d KiB symbolized: %.0f B per stack "
                      "(%.0f defined only); collectord counts %.0f B per stack, %.1f B per block" %
                      (r["rss0_kb"], r["rss_defined_kb"], r["rss_symbolized_kb"],
                       r["bytes_per_stack"], r["bytes_per_stack_defined"],
                       r["coll_bytes_per_stack"], r["coll_bytes_per_block"]))
            print("  median %.0f B per stack as counted  (target <= %.0f: %s)" %
                  (med_stack, TARGET_STACK, "ok" if res["stack_ok"] else "MISSED"))
    if args.check and not (res["rate_ok"] and res["bytes_ok"] and (res["stack_ok"] or not stk)):
        sys.exit(1)


if __name__ == "__main__":
    main()
