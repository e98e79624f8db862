#!/usr/bin/python3
"""stackwatch benchmarks: each workload bare, under the agent (exact, exact
with the frame-pointer unwinder, sampled), under heaptrack and, on a short
run, under valgrind memcheck; runs interleaved round-robin, medians reported.

  /usr/bin/python3 bench/run.py [--runs N] [--quick] [--only WORKLOAD]...
                                [--out FILE] [--markdown] [--build DIR]

Standard library only. Starts its own collectord in a temporary directory
(one per workload), never touches a collectord you run. See bench/README.md
for what is measured and how the ratios are computed."""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKLOADS_DIR = os.path.join(HERE, "workloads")
PYTHON = "/usr/bin/python3"
CLK_TCK = os.sysconf("SC_CLK_TCK")
RUN_TIMEOUT = 900.0       # seconds before a single run is killed
SETTLE_TIMEOUT = 120.0    # seconds to wait for collectord to see a client end
QUIET_BUSY = 0.25         # CPUs busy with other work below which a run may start
QUIET_WAIT = 10.0         # seconds one run waits for that at most
QUIET_BUDGET = 120.0      # seconds all runs together wait at most
NOISY = 0.2               # other work's CPU per second of a run's wall that flags it
                          # (and at least 0.05 s: /proc/stat counts 10 ms ticks)
SLOW = 1.3                # a speed probe this much slower than the best flags it

# Iterations: full runs keep the default `make bench` (5 runs) under ~10 min
# on a 2-core machine; --quick is a smoke run. "short" is the reduced size of
# the valgrind run (and of the bare run it is compared with).
SIZES = {
    "full": {
        "loop": {"n": 5000000, "short": 250000},
        "realloc": {"n": 3000000, "short": 150000},
        "numpy": {"n": 1500, "short": 20},
        "short": {"n": 100, "short": 10, "mallocs": 300},
        "pysmall": {"n": 500000, "short": 20000},
        "pyloads": {"n": 500000, "short": 20000},
        "seed": {"n": 30000, "short": 1000},
    },
    "quick": {
        "loop": {"n": 200000, "short": 20000},
        "realloc": {"n": 100000, "short": 10000},
        "numpy": {"n": 30, "short": 3},
        "short": {"n": 10, "short": 2, "mallocs": 300},
        "pysmall": {"n": 50000, "short": 2000},
        "pyloads": {"n": 50000, "short": 2000},
        "seed": {"n": 2000, "short": 100},
    },
}

WORKLOAD_INFO = {
    "loop": "2 threads, malloc 16..512 B at a pseudo-random depth 2..22, 16-slot pool",
    "realloc": "2 threads, 8 buffers each grown/shrunk through realloc",
    "numpy": "numpy loop (random, arange, dot, concatenate, cumsum, masks) on 1e3..1e5 elements",
    "short": "many short processes in sequence, a few hundred mallocs each",
    "pysmall": "Python JSON decoding of small dicts (raw_decode: CPython small objects only), "
               "1 in 64 kept",
    "pyloads": "the same with json.loads (its whitespace regex mallocs ~1 KB twice a call)",
    "seed": "the write-up's shape: chunk[to_keep] and a numba nopython generator per chunk, "
            "a dict per chunk (numba's import and JIT compile included)",
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ building

def build_workloads(bdir):
    """Compiles the C workloads into BUILD/bench (only when out of date)."""
    cc = os.environ.get("CC", "cc")
    out = os.path.join(bdir, "bench")
    os.makedirs(out, exist_ok=True)
    base = ["-std=gnu11", "-O2", "-g", "-Wall", "-Wextra"]
    targets = [
        ("loop", "loop.c", []),
        ("loop-fp", "loop.c", ["-fno-omit-frame-pointer"]),
        ("realloc", "realloc.c", []),
        ("short", "short.c", []),
        ("driver", "driver.c", []),
    ]
    for name, src, extra in targets:
        srcp = os.path.join(WORKLOADS_DIR, src)
        dst = os.path.join(out, name)
        if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(srcp):
            continue
        cmd = [cc] + base + extra + ["-o", dst, srcp, "-lpthread"]
        log("bench: " + " ".join(cmd))
        subprocess.run(cmd, check=True)
    return out


# ------------------------------------------------------------------ collectord

class Collector:
    """A foreground collectord in its own temporary directory."""

    def __init__(self, bdir, tmp):
        self.bin = os.path.join(bdir, "collectord")
        self.ctl = os.path.join(bdir, "stackctl")
        self.dir = os.path.join(tmp, "rundir")
        self.logpath = os.path.join(tmp, "collectord.log")
        self.proc = None

    def start(self):
        logf = open(self.logpath, "w")
        # --retain: the short workload ends hundreds of clients; keep them all
        # so every one can be queried after its run.
        self.proc = subprocess.Popen(
            [self.bin, "start", "-f", "--dir", self.dir, "--retain", "20000"],
            stdout=logf, stderr=subprocess.STDOUT, env=clean_env(), start_new_session=True)
        logf.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with open(self.logpath) as f:
                if "running in the foreground" in f.read():
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        with open(self.logpath) as f:
            raise RuntimeError("collectord did not start:\n" + f.read())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cpu(self):
        """collectord's user+system CPU seconds so far (all its threads)."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state): utime is field 14, stime field 15.
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_kb(self):
        out = {}
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0])
        return out

    def clients(self):
        r = subprocess.run([self.ctl, "--dir", self.dir, "query", "clients", "--json"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("stackctl query clients failed: " + r.stderr.strip())
        return json.loads(r.stdout).get("clients", [])

    def settle(self, match, expect):
        """Waits until collectord lists `expect` clients matching match(c), all
        ended; returns them (whatever it has at the deadline)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            found = [c for c in self.clients() if match(c)]
            if len(found) >= expect and all(c.get("state") != "connected" for c in found):
                return found, None
            if time.monotonic() > deadline:
                return found, "collectord listed %d of %d clients ended after %.0f s" % (
                    sum(c.get("state") != "connected" for c in found), expect, SETTLE_TIMEOUT)
            time.sleep(0.05)


def cpu_busy():
    """Seconds of CPU the whole machine spent busy so far (steal included:
    time the hypervisor gave to other guests is time we did not get)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest is in user)
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


def probe():
    """Seconds a fixed bit of single-threaded Python takes (~7 ms): the CPU's
    speed right now. A VM whose host is busy gets slower without any other
    process showing up in /proc/stat."""
    t = time.perf_counter()
    x = 0
    for i in range(300000):
        x += i
    return time.perf_counter() - t


class Quiet:
    """Waits before a run until other processes leave the CPUs alone, within
    a per-run and a total budget (on a shared machine it may never happen);
    keeps the best speed probe of the session."""

    def __init__(self, enabled):
        self.enabled = enabled
        self.left = QUIET_BUDGET
        self.best = min(probe() for _ in range(5))

    def slow(self, *probes):
        self.best = min((self.best,) + probes)
        return max(probes) > SLOW * self.best

    def wait(self):
        if not self.enabled or self.left <= 0:
            return 0.0
        t0 = time.monotonic()
        while True:
            b0 = cpu_busy()
            time.sleep(0.1)
            busy = (cpu_busy() - b0) / 0.1
            waited = time.monotonic() - t0
            if busy < QUIET_BUSY or waited >= QUIET_WAIT or waited >= self.left:
                self.left -= waited
                return waited
            time.sleep(0.3)


def clean_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STACKWATCH_") and k != "LD_PRELOAD"}
    return env


# ------------------------------------------------------------------ running

def spawn(cmd, env, out_path):
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2),
                   (os.POSIX_SPAWN_CLOSE, fd)]
        return os.posix_spawn(cmd[0], cmd, env, file_actions=actions, setsid=True)
    finally:
        os.close(fd)


def wait_timed(pid):
    """waitpid with a kill after RUN_TIMEOUT; returns (status, timed_out)."""
    timed_out = []

    def kill():
        timed_out.append(1)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    t = threading.Timer(RUN_TIMEOUT, kill)
    t.start()
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        t.cancel()
    return status, bool(timed_out)


def read_driver(path):
    """driver's one line: wall, user, sys, maxrss_kb, status, runs, pids."""
    try:
        with open(path) as f:
            line = f.read().strip()
    except OSError:
        return None
    d = {}
    for item in line.split():
        k, _, v = item.partition("=")
        if k == "pids":
            d[k] = [int(x) for x in v.split(",") if x]
        elif k in ("wall", "user", "sys"):
            d[k] = float(v)
        else:
            d[k] = int(v)
    return d if "wall" in d else None


def agent_lines(path, limit=6):
    """The agent's own messages in a run's output, for the notes."""
    lines = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                # "stackwatch[PID]: ..." -> "stackwatch: ..." so runs dedupe.
                line = re.sub(r"^stackwatch\[\d+\]", "stackwatch", line.strip())
                if line.startswith("stackwatch") and line not in lines:
                    lines.append(line)
                    if len(lines) >= limit:
                        break
    except OSError:
        pass
    return lines


def tail(path, n=5):
    try:
        with open(path, errors="replace") as f:
            return [x.rstrip() for x in f.readlines()[-n:]]
    except OSError:
        return []


CLIENT_FIELDS = ("events", "dropped", "lost_events", "late_events", "agent_bytes", "threads",
                 "unwind_failures", "failed_calls", "gaps", "table_full", "stack_table_full")


def run_once(v, coll, tmp, index, driver, quiet):
    """One run of variant v (one or more concurrent jobs, each a driver
    running a command COUNT times); returns a dict of measurements."""
    out_base = os.path.join(tmp, "%s.%d" % (v["name"], index))
    jobs = v["jobs"](out_base)
    cmds = []
    for k, (count, envs, cmd) in enumerate(jobs):
        c = [driver]
        for name, val in envs:
            c += ["-e", "%s=%s" % (name, val)]
        cmds.append(c + ["-n", str(count), "-o", "%s.%d.rusage" % (out_base, k)] + cmd)
    env = clean_env()
    waited = quiet.wait()
    probe0 = probe()
    cpu0 = coll.cpu()
    busy0 = cpu_busy()
    t0 = time.monotonic()
    pids = [spawn(c, env, "%s.%d.out" % (out_base, k)) for k, c in enumerate(cmds)]
    waits = [wait_timed(p) for p in pids]
    outer = time.monotonic() - t0
    busy = cpu_busy() - busy0
    coll_run = coll.cpu() - cpu0
    probe1 = probe()
    rec = {"ok": True, "notes": [], "outer_wall": outer, "quiet_wait": waited,
           "probe_ms": [round(probe0 * 1e3, 2), round(probe1 * 1e3, 2)],
           "slow": quiet.slow(probe0, probe1)}
    drv = []
    for k, (status, to) in enumerate(waits):
        d = read_driver("%s.%d.rusage" % (out_base, k))
        out = "%s.%d.out" % (out_base, k)
        if to:
            rec["ok"] = False
            rec["notes"].append("killed after %.0f s" % RUN_TIMEOUT)
        elif not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0 or d is None:
            rec["ok"] = False
            rec["notes"].append("failed (status 0x%x): %s" % (status, " | ".join(tail(out))))
        rec["notes"] += agent_lines(out)
        if d:
            drv.append(d)
    if not drv:
        rec.update(wall=outer, app_cpu=None, app_user=None, app_sys=None, peak_rss_kb=None)
        drv = [{"pids": []}]
    else:
        rec["wall"] = max(d["wall"] for d in drv)
        rec["app_user"] = sum(d["user"] for d in drv)
        rec["app_sys"] = sum(d["sys"] for d in drv)
        rec["app_cpu"] = rec["app_user"] + rec["app_sys"]
        rec["peak_rss_kb"] = max(d["maxrss_kb"] for d in drv)
    if v["traced"]:
        want = set(p for d in drv for p in d["pids"])
        clients, problem = coll.settle(lambda c: c.get("pid") in want, len(want))
        if problem:
            rec["notes"].append(problem)
        rec["clients"] = [dict({k: c.get(k) for k in CLIENT_FIELDS},
                               pid=c.get("pid"), state=c.get("state")) for c in clients]
        rec["n_clients"] = len(clients)
        for k in CLIENT_FIELDS:
            rec[k] = sum(c.get(k) or 0 for c in clients)
        rec["dropped_each"] = [c.get("dropped") for c in clients]
        if clients:
            # Per process: the largest client (in "short" all are alike).
            big = max(clients, key=lambda c: c.get("agent_bytes") or 0)
            rec["agent_bytes_proc"] = big.get("agent_bytes")
            rec["threads_proc"] = big.get("threads")
    rec["collectord_cpu"] = coll.cpu() - cpu0
    rec["total_cpu"] = None if rec["app_cpu"] is None else rec["app_cpu"] + rec["collectord_cpu"]
    # CPU the rest of the machine used while the run ran (other users,
    # run.py itself, steal): the noise indicator. Ticks make it +-0.02 s.
    rec["other_cpu"] = max(0.0, busy - (rec["app_cpu"] or 0) - coll_run)
    rec["noisy"] = rec["slow"] or rec["other_cpu"] > max(NOISY * outer, 0.05)
    for k, _ in enumerate(cmds):
        for suffix in ("out", "rusage"):
            try:
                os.unlink("%s.%d.%s" % (out_base, k, suffix))
            except OSError:
                pass
    if v.get("cleanup"):
        rec.update(v["cleanup"](out_base))
    return rec


def heaptrack_cleanup(out_base):
    """Removes heaptrack's output files of a run; returns their size."""
    d, base = os.path.split(out_base)
    size = 0
    for f in os.listdir(d):
        if f.startswith(base + ".ht"):
            p = os.path.join(d, f)
            size += os.path.getsize(p)
            os.unlink(p)
    return {"heaptrack_file_bytes": size}


# ------------------------------------------------------------------ variants

def make_variants(wl, bdir, progs, coll, size):
    """The variants of workload wl. A variant's jobs(out_base) gives the
    concurrent jobs of one run: (count, [(NAME, VALUE)] for the children's
    environment, command)."""
    sw = [("LD_PRELOAD", os.path.join(bdir, "libstackagent.so")), ("STACKWATCH_DIR", coll.dir)]
    exact = sw + [("STACKWATCH_SAMPLE", "all")]
    fp = exact + [("STACKWATCH_UNWIND", "fp")]
    sampled = sw + [("STACKWATCH_SAMPLE", "512k")]
    heaptrack = shutil.which("heaptrack")
    valgrind = shutil.which("valgrind")
    vg = [valgrind or "valgrind", "-q", "--tool=memcheck", "--leak-check=no"]
    n, short = size["n"], size["short"]
    skipped = []

    if wl in ("loop", "realloc"):
        prog = os.path.join(progs, wl)
        main = (1, [prog, str(n)])
        shortj = (1, [prog, str(short)])
    elif wl in ("numpy", "pysmall", "pyloads", "seed"):
        script = os.path.join(WORKLOADS_DIR, "%s_loop.py" % ("pysmall" if wl == "pyloads" else wl))
        how = ["loads"] if wl == "pyloads" else []
        main = (1, [PYTHON, script, str(n)] + how)
        shortj = (1, [PYTHON, script, str(short)] + how)
    else:
        sp = [os.path.join(progs, "short"), str(size["mallocs"])]
        main = (n, sp)
        shortj = (short, sp)

    V = []

    def add(name, label, jobs, traced, ratio_to="bare", **kw):
        V.append(dict(name=name, label=label, jobs=jobs, traced=traced, ratio_to=ratio_to, **kw))

    def job(j, envs=(), prefix=()):
        return (j[0], list(envs), list(prefix) + j[1])

    add("bare", "bare", lambda ob: [job(main)], False)
    if wl in ("pysmall", "pyloads", "seed"):
        # CPython's small objects: the default (malloc exact, the mem and
        # object domains sampled every 256 KiB), every small object
        # (PYTHON_ALLOCATORS=exact), none (=0: malloc only), heaptrack.
        add("default", "stackwatch default (malloc exact, Python small objects sampled 256k)",
            lambda ob: [job(main, sw)], True)
        add("py-exact", "stackwatch PYTHON_ALLOCATORS=exact (every small object)",
            lambda ob: [job(main, sw + [("STACKWATCH_PYTHON_ALLOCATORS", "exact")])], True)
        add("py-off", "stackwatch PYTHON_ALLOCATORS=0 (malloc only)",
            lambda ob: [job(main, sw + [("STACKWATCH_PYTHON_ALLOCATORS", "0")])], True)
        if heaptrack and wl in ("pysmall", "seed"):
            add("heaptrack", "heaptrack -o FILE",
                lambda ob: [job(main, (), [heaptrack, "-o", ob + ".ht{i}"])], False,
                cleanup=heaptrack_cleanup)
        elif wl in ("pysmall", "seed"):
            skipped.append("heaptrack: not installed (make bench-deps)")
        return V, skipped
    add("exact", "stackwatch exact (SAMPLE=all)" if wl != "numpy" else
        "stackwatch exact malloc (SAMPLE=all: the default settings, small objects sampled)",
        lambda ob: [job(main, exact)], True)
    if wl == "numpy":
        add("py-exact", "stackwatch PYTHON_ALLOCATORS=exact (every small object too)",
            lambda ob: [job(main, exact + [("STACKWATCH_PYTHON_ALLOCATORS", "exact")])], True)
    if wl == "loop":
        fpj = (1, [os.path.join(progs, "loop-fp"), str(n)])
        add("exact-fp", "exact, UNWIND=fp, on the fp build (ratio to bare-fp)",
            lambda ob: [job(fpj, fp)], True, ratio_to="bare-fp")
        add("bare-fp", "bare, fp build", lambda ob: [job(fpj)], False)
    add("sampled", "stackwatch SAMPLE=512k", lambda ob: [job(main, sampled)], True)
    if heaptrack:
        # "{i}": one output file per process when a job runs many.
        add("heaptrack", "heaptrack -o FILE",
            lambda ob: [job(main, (), [heaptrack, "-o", ob + ".ht{i}"])], False,
            cleanup=heaptrack_cleanup)
    else:
        skipped.append("heaptrack: not installed (make bench-deps)")
    if valgrind:
        add("bare-short", "bare, short run (n=%d)" % short, lambda ob: [job(shortj)], False)
        add("memcheck-short", "valgrind memcheck, short run (n=%d, ratio to bare-short)" % short,
            lambda ob: [job(shortj, (), vg)], False, ratio_to="bare-short")
    else:
        skipped.append("valgrind: not installed (make bench-deps)")
    if wl == "loop":
        add("exact-2clients", "two exact clients at once (no ratio)",
            lambda ob: [job(main, exact), job(main, exact)], True, ratio_to=None)
    return V, skipped


# ------------------------------------------------------------------ summary

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(variants, runs):
    """Per variant: medians over its successful runs, ratios to its base."""
    S = {}
    for v in variants:
        rs = [r for r in runs[v["name"]] if r["ok"]]
        s = {"label": v["label"], "runs": len(runs[v["name"]]), "ok_runs": len(rs),
             "ratio_to": v["ratio_to"]}
        for k in ("wall", "app_cpu", "collectord_cpu", "total_cpu", "peak_rss_kb", "other_cpu"):
            s[k] = med([r.get(k) for r in rs])
        s["wall_min"] = min((r["wall"] for r in rs), default=None)
        s["noisy_runs"] = sum(1 for r in rs if r.get("noisy"))
        if v["traced"]:
            for k in ("dropped", "lost_events", "late_events"):
                s[k] = max((r.get(k) or 0 for r in rs), default=None)
            s["dropped_total"] = sum(r.get("dropped") or 0 for r in rs)
            for k in ("events", "agent_bytes_proc", "threads_proc", "unwind_failures"):
                s[k] = med([r.get(k) for r in rs])
            if s.get("agent_bytes_proc") and s.get("threads_proc"):
                s["agent_bytes_per_thread"] = s["agent_bytes_proc"] / s["threads_proc"]
            s["dropped_each"] = [r.get("dropped_each") for r in rs]
        if any("heaptrack_file_bytes" in r for r in rs):
            s["heaptrack_file_bytes"] = med([r.get("heaptrack_file_bytes") for r in rs])
        notes = []
        if v["name"] == "exact-2clients":
            notes.append("dropped per client, per run: %s; lost_events per run: %s" % (
                [r.get("dropped_each") for r in rs], [r.get("lost_events") for r in rs]))
        for r in runs[v["name"]]:
            for x in r["notes"]:
                if x not in notes:
                    notes.append(x)
        s["notes"] = notes
        S[v["name"]] = s
    for name, s in S.items():
        b = S.get(s["ratio_to"]) if s["ratio_to"] else None
        for k, rk in (("wall", "wall_ratio"), ("total_cpu", "cpu_ratio"),
                      ("wall_min", "wall_min_ratio")):
            if b and s[k] is not None and b[k]:
                s[rk] = s[k] / b[k]
            else:
                s[rk] = None
        if b and s["peak_rss_kb"] is not None and b["peak_rss_kb"] is not None:
            s["rss_delta_kb"] = s["peak_rss_kb"] - b["peak_rss_kb"]
    return S


def fmt(x, spec, none="-"):
    return none if x is None else format(x, spec)


COLUMNS = ["variant", "ok/runs", "noisy", "wall s", "x base", "min wall s", "x base",
           "CPU s", "x base", "collectord s",
           "peak RSS MB", "RSS +MB", "events", "dropped", "lost", "agent MB", "thr", "agent MB/thr"]


def rows(S):
    out = []
    for name, s in S.items():
        base = s["ratio_to"]
        named = base and base != "bare" and s["wall_ratio"] is not None
        out.append([
            name, "%d/%d" % (s["ok_runs"], s["runs"]), str(s["noisy_runs"]),
            fmt(s["wall"], ".3f"),
            fmt(s["wall_ratio"], ".2f") + (" (%s)" % base if named else ""),
            fmt(s["wall_min"], ".3f"), fmt(s["wall_min_ratio"], ".2f"),
            fmt(s["total_cpu"], ".3f"), fmt(s["cpu_ratio"], ".2f"),
            fmt(s["collectord_cpu"], ".2f"),
            fmt(s["peak_rss_kb"] / 1024 if s["peak_rss_kb"] is not None else None, ".1f"),
            fmt(s["rss_delta_kb"] / 1024 if s.get("rss_delta_kb") is not None else None, "+.1f"),
            fmt(s.get("events"), ".0f"),
            fmt(s.get("dropped"), "d"), fmt(s.get("lost_events"), "d"),
            fmt(s["agent_bytes_proc"] / 1048576 if s.get("agent_bytes_proc") else None, ".1f"),
            fmt(s.get("threads_proc"), ".0f"),
            fmt(s["agent_bytes_per_thread"] / 1048576 if s.get("agent_bytes_per_thread")
                else None, ".2f"),
        ])
    return out


def print_table(title, S, file=sys.stdout):
    r = rows(S)
    w = [max(len(str(x)) for x in col) for col in zip(COLUMNS, *r)]
    print("\n" + title, file=file)
    print("  ".join(c.ljust(w[i]) for i, c in enumerate(COLUMNS)), file=file)
    for row in r:
        print("  ".join(str(x).ljust(w[i]) for i, x in enumerate(row)), file=file)
    for name, s in S.items():
        for n in s["notes"]:
            print("  note %s: %s" % (name, n), file=file)


def markdown(meta, results):
    L = []
    L.append("Measured %s on %s (%d CPUs, %s), commit %s%s; %d run(s) per variant, "
             "interleaved; medians; %.0f s spent waiting for a quiet machine. "
             "`noisy`: runs during which other processes used more than %.1f CPU, or the "
             "CPU was more than %.1fx slower than its best (speed probe)." % (
                 meta["date"], meta["host"], meta["nproc"], meta["cpu"], meta["commit"],
                 " (+ uncommitted changes)" if meta.get("dirty") else "", meta["runs"],
                 meta.get("quiet_wait_s", 0), NOISY, SLOW))
    for wl, res in results.items():
        L.append("")
        L.append("#### %s — %s" % (wl, res["info"]))
        L.append("")
        L.append("Size: %s. " % ", ".join("%s=%s" % kv for kv in res["size"].items())
                 + "collectord peak RSS %.1f MB." % (res["collectord_hwm_kb"] / 1024
                                                    if res.get("collectord_hwm_kb") else 0))
        L.append("")
        L.append("| " + " | ".join(COLUMNS) + " |")
        L.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(COLUMNS))) + "|")
        for row in rows(res["summary"]):
            L.append("| " + " | ".join(str(x) for x in row) + " |")
        notes = [(n, x) for n, s in res["summary"].items() for x in s["notes"]]
        notes += [("skipped", x) for x in res["skipped"]]
        if notes:
            L.append("")
            for n, x in notes:
                L.append("- %s: %s" % (n, x.replace("|", "\\|")))
    L.append("")
    L.append("#### Targets")
    L.append("")
    L.append("| goal | medians | | fastest runs | |")
    L.append("|---|---:|---|---:|---|")
    mark = {True: "met", False: "**not met**", None: "not measured"}
    for t in targets(results):
        L.append("| %s | %s | %s | %s | %s |" % (
            t["goal"], t["shown"], mark[t["met"]], t["shown_by_min"] or "-",
            mark[t["met_by_min"]] if t["by_min"] is not None else ""))
    return "\n".join(L)


def targets(results):
    """The goals of the "Performance" issue, checked against the medians."""
    T = []

    def get(wl, v, k):
        return results.get(wl, {}).get("summary", {}).get(v, {}).get(k)

    def check(goal, value, ok, shown, by_min=None):
        T.append({"goal": goal, "value": value, "met": None if value is None else ok(value),
                  "shown": "n/a" if value is None else shown(value), "by_min": by_min,
                  "met_by_min": None if by_min is None else ok(by_min),
                  "shown_by_min": "" if by_min is None else shown(by_min)})

    def ratio(goal, wl, v, limit):
        check(goal, get(wl, v, "wall_ratio"), lambda x: x <= limit, lambda x: "%.2fx" % x,
              get(wl, v, "wall_min_ratio"))
    ratio("loop: exact wall <= 2.5x bare", "loop", "exact", 2.5)
    ratio("loop: exact-fp wall <= 2.5x bare-fp", "loop", "exact-fp", 2.5)
    ht, ex = get("loop", "heaptrack", "wall"), get("loop", "exact", "wall")
    htm, exm = get("loop", "heaptrack", "wall_min"), get("loop", "exact", "wall_min")
    check("loop: exact >= 5x faster than heaptrack (wall)", ht / ex if ht and ex else None,
          lambda x: x >= 5, lambda x: "%.2fx" % x, htm / exm if htm and exm else None)
    ratio("loop: sampled (512k) wall <= 1.05x bare", "loop", "sampled", 1.05)
    ratio("numpy: exact wall <= 1.2x bare", "numpy", "exact", 1.2)
    ratio("pysmall: default wall <= 1.2x bare", "pysmall", "default", 1.2)
    ratio("pyloads: default wall <= 1.2x bare", "pyloads", "default", 1.2)
    ratio("numpy: default (exact) wall <= 1.1x bare", "numpy", "exact", 1.1)
    ratio("seed: default wall <= 1.1x bare", "seed", "default", 1.1)
    drops = get("loop", "exact-2clients", "dropped_total")
    check("loop: two exact clients at once drop nothing", drops, lambda x: x == 0,
          lambda x: "%d dropped over all runs" % x)
    per = get("loop", "exact", "agent_bytes_per_thread")
    check("loop: agent memory per thread reported", per, lambda x: True,
          lambda x: "%.2f MB/thread (%s threads)" % (x / 1048576, get("loop", "exact",
                                                                     "threads_proc")))
    return T


def print_targets(T, file=sys.stdout):
    print("\nTargets (issue \"Performance\"), medians [by fastest runs]:", file=file)
    for t in T:
        mark = {True: "met", False: "NOT MET", None: "not measured"}[t["met"]]
        bymin = "" if t["by_min"] is None else "[%s %s]" % (
            t["shown_by_min"], "met" if t["met_by_min"] else "not met")
        print("  %-50s %-28s %-13s %s" % (t["goal"], t["shown"], mark, bymin), file=file)


def meta_info(args):
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def git(*a):
        try:
            return subprocess.run(["git", "-C", ROOT] + list(a), capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "host": platform.node(), "nproc": os.cpu_count(), "cpu": cpu,
        "kernel": platform.release(),
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "runs": args.runs, "quick": args.quick,
    }


# ------------------------------------------------------------------ main

def run_workload(wl, args, bdir, progs, size, quiet):
    driver = os.path.join(progs, "driver")
    tmp = tempfile.mkdtemp(prefix="swbench-%s-" % wl)
    coll = Collector(bdir, tmp)
    coll.start()
    try:
        variants, skipped = make_variants(wl, bdir, progs, coll, size)
        for x in skipped:
            log("bench: %s: skipped %s" % (wl, x))
        runs = {v["name"]: [] for v in variants}
        # One untimed warm-up of the bare variant (page cache, CPU clocks).
        run_once(variants[0], coll, tmp, -1, driver, quiet)
        for i in range(args.runs):
            # Round-robin, starting one later each round, so no variant is
            # always first (or always right after the heaviest one).
            order = variants[i % len(variants):] + variants[:i % len(variants)]
            for v in order:
                r = run_once(v, coll, tmp, i, driver, quiet)
                runs[v["name"]].append(r)
                extra = ""
                if v["traced"]:
                    extra = " events=%s dropped=%s lost=%s" % (
                        r.get("events"), r.get("dropped"), r.get("lost_events"))
                log("bench: %s run %d/%d %-15s %7.3f s cpu %6.3f s coll %5.2f s other %5.2f s"
                    "%s%s%s" % (wl, i + 1, args.runs, v["name"], r["wall"], r["app_cpu"] or 0,
                                r["collectord_cpu"], r["other_cpu"], extra,
                                "  NOISY" if r["noisy"] else "",
                                "" if r["ok"] else "  FAILED"))
        hwm = coll.rss_kb().get("VmHWM")
    finally:
        coll.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"info": WORKLOAD_INFO[wl], "size": size, "skipped": skipped,
            "collectord_hwm_kb": hwm, "runs": runs, "summary": summarize(variants, runs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per variant (default 5)")
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, 1 run")
    ap.add_argument("--only", action="append", choices=list(WORKLOAD_INFO),
                    help="run only this workload (repeatable)")
    ap.add_argument("--out", default=None, help="JSON results (default BUILD/bench/results.json)")
    ap.add_argument("--markdown", action="store_true", help="also print a markdown table")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--no-wait-quiet", action="store_true",
                    help="start runs at once, even while other processes keep the CPUs busy")
    args = ap.parse_args()
    if args.quick and "--runs" not in " ".join(sys.argv):
        args.runs = 1
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    bdir = os.path.abspath(args.build)
    for f in ("libstackagent.so", "collectord", "stackctl"):
        if not os.path.exists(os.path.join(bdir, f)):
            sys.exit("bench: %s/%s is missing: run make first" % (bdir, f))
    if not os.path.exists(PYTHON):
        sys.exit("bench: %s is missing" % PYTHON)
    progs = build_workloads(bdir)
    sizes = SIZES["quick" if args.quick else "full"]
    meta = meta_info(args)
    t0 = time.monotonic()
    results = {}
    quiet = Quiet(not args.no_wait_quiet)
    for wl in (args.only or list(WORKLOAD_INFO)):
        if wl in ("numpy", "seed") and subprocess.run([PYTHON, "-c", "import numpy"],
                                                      capture_output=True).returncode != 0:
            log("bench: %s: skipped, %s has no numpy (apt-get install python3-numpy)" %
                (wl, PYTHON))
            continue
        log("bench: === %s (%s)" % (wl, WORKLOAD_INFO[wl]))
        results[wl] = run_workload(wl, args, bdir, progs, sizes[wl], quiet)
        hwm = results[wl]["collectord_hwm_kb"]
        print_table("%s: %s  %s; collectord peak RSS %.1f MB" % (
            wl, WORKLOAD_INFO[wl], sizes[wl], (hwm or 0) / 1024), results[wl]["summary"])
        sys.stdout.flush()
    meta["seconds"] = round(time.monotonic() - t0, 1)
    meta["quiet_wait_s"] = round(QUIET_BUDGET - quiet.left, 1)
    out = args.out or os.path.join(bdir, "bench", "results.json")
    T = targets(results)
    print_targets(T)
    with open(out, "w") as f:
        json.dump({"meta": meta, "targets": T, "workloads": results}, f, indent=1)
    print("\nbench: %d workload(s) in %.0f s; results in %s" % (len(results), meta["seconds"], out))
    if args.markdown:
        print("\n" + markdown(meta, results))
    failed = [(wl, n) for wl, r in results.items() for n, s in r["summary"].items()
              if s["ok_runs"] < s["runs"]]
    if failed:
        print("bench: failed runs in: " + ", ".join("%s/%s" % x for x in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
