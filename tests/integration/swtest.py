"""Helpers for stackwatch integration tests: a real collectord in a temp dir,
real programs under the preloaded agent, stackctl queries, polling waits."""

import json
import os
import re
import select
import shutil
import signal
import struct
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Set by run.py from its arguments.
BUILD = os.path.join(ROOT, "build")          # collectord, stackctl
AGENT_BUILD = os.path.join(ROOT, "build")    # libstackagent.so
PROGS = os.path.join(ROOT, "build", "progs")  # test programs


def configure(build, agent_build, progs):
    global BUILD, AGENT_BUILD, PROGS
    BUILD, AGENT_BUILD, PROGS = build, agent_build, progs


def sanitized_collector():
    """1 when collectord is a sanitizer build (make check-sanitizers): its
    RSS then holds ASan's quarantine and shadow, not what collectord keeps."""
    return os.path.basename(os.path.normpath(BUILD)) in ("asan", "ubsan", "tsan")


def agent_path():
    return os.path.join(AGENT_BUILD, "libstackagent.so")


def prog(name):
    return os.path.join(PROGS, name)


def wait_until(fn, timeout=30.0, interval=0.05, what="condition"):
    """Polls fn() until it returns a truthy value; returns it. Raises on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def ptrace_scope():
    """kernel.yama.ptrace_scope, or 0 without Yama."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


def ptrace_skip_reason():
    """Why attach/scan tests cannot run here, or None. Scope 1 is handled: the
    targets allow any tracer of their uid (PR_SET_PTRACER_ANY), as a program
    may; scopes 2 and 3 need root or nothing can."""
    scope = ptrace_scope()
    if scope == 3:
        return "kernel.yama.ptrace_scope is 3: ptrace is disabled on this machine"
    if scope == 2 and os.geteuid() != 0:
        return "kernel.yama.ptrace_scope is 2: only root may ptrace"
    return None


def _allow_any_tracer():
    """preexec_fn: under Yama scope 1 only ancestors may ptrace; the test's
    stackctl and collectord are not the target's ancestors."""
    if ptrace_scope() == 1:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PTRACER = 0x59616D61
        libc.prctl(PR_SET_PTRACER, ctypes.c_ulong(-1 & 0xFFFFFFFFFFFFFFFF), 0, 0, 0)


def markers(src, tag="LEAK"):
    """{name: line} for '@TAG name' comments in a source file: a path, or a
    file name of tests/progs."""
    out = {}
    path = src if os.path.isabs(src) else os.path.join(ROOT, "tests", "progs", src)
    with open(path) as f:
        for i, line in enumerate(f, 1):
            m = re.search(r"@%s (\w+)" % tag, line)
            if m:
                out[m.group(1)] = i
    return out


def build_ext(exe, src, outdir, cflags=()):
    """Builds the C extension src (tests/py/ext/NAME.c) for the interpreter
    exe into outdir/NAME.so; returns its path. -O0: the extension's frames
    and lines stay as written."""
    inc = subprocess.run([exe, "-c", "import sysconfig; print(sysconfig.get_paths()['include'])"],
                         stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    out = os.path.join(outdir, os.path.splitext(os.path.basename(src))[0] + ".so")
    # Debian's pyconfig.h includes <x86_64-linux-gnu/python3.X/pyconfig.h>
    # from the include directory above.
    subprocess.run(["cc", "-O0", "-g"] + list(cflags) + ["-shared", "-fPIC", "-I" + inc,
                    "-I" + os.path.dirname(inc), src, "-o", out], check=True)
    return out


class Collector:
    """collectord -f in a private directory; stopped and checked on close."""

    def __init__(self, expire=0.5, extra=(), dirpath=None, nofile=None):
        self.tmp = tempfile.mkdtemp(prefix="swtest-")
        self.dir = dirpath or os.path.join(self.tmp, "run")
        self.logpath = os.path.join(self.tmp, "collectord.log")
        self.log = open(self.logpath, "w")
        self.expire = expire
        cmd = [os.path.join(BUILD, "collectord"), "start", "-f", "--dir", self.dir,
               "--expire", str(expire)] + list(extra)
        def limit():
            if nofile:
                import resource
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     preexec_fn=limit if nofile else None)
        line = self.proc.stdout.readline()
        if "running in the foreground" not in line:
            self.proc.wait(5)
            raise AssertionError("collectord did not start: %r\n%s" % (line, self.read_log()))
        self.env = dict(os.environ, STACKWATCH_DIR=self.dir)
        self.env.pop("DEBUGINFOD_URLS", None)

    def read_log(self):
        self.log.flush()
        with open(self.logpath) as f:
            return f.read()

    def agent_env(self, **kw):
        env = dict(self.env, LD_PRELOAD=agent_path())
        for k, v in kw.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    def run(self, args, stdin_data=None, timeout=60, **envkw):
        """Runs a program under the agent to completion. Returns CompletedProcess."""
        return subprocess.run(args, input=stdin_data if stdin_data is not None else "",
                              capture_output=True, text=True, timeout=timeout,
                              env=self.agent_env(**envkw))

    def start(self, args, **envkw):
        """Starts a program under the agent; it runs until stdin is closed."""
        return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.agent_env(**envkw))

    def start_plain(self, args, env=None):
        """Starts a program WITHOUT the agent (for stackctl attach); it runs
        until stdin is closed. Under Yama scope 1 it lets any process of its
        uid trace it."""
        e = dict(self.env)
        e.pop("LD_PRELOAD", None)
        if env:
            e.update(env)
        return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=e,
                                preexec_fn=_allow_any_tracer)

    def attach(self, pid, check=True, **envkw):
        """stackctl attach PID with STACKWATCH_* settings from envkw."""
        env = dict(self.env)
        for k, v in envkw.items():
            env[k] = str(v)
        r = subprocess.run([os.path.join(BUILD, "stackctl"), "--dir", self.dir, "attach",
                            str(pid), "--agent", agent_path()],
                           capture_output=True, text=True, timeout=120, env=env)
        if check and r.returncode != 0:
            raise AssertionError("stackctl attach %d failed (%d): %s%s" %
                                 (pid, r.returncode, r.stdout, r.stderr))
        return r

    def detach(self, pid, check=True):
        r = self.ctl("detach", str(pid), check=False)
        if check and r.returncode != 0:
            raise AssertionError("stackctl detach %d failed (%d): %s%s" %
                                 (pid, r.returncode, r.stdout, r.stderr))
        return r

    def ctl(self, *args, check=True):
        r = subprocess.run([os.path.join(BUILD, "stackctl"), "--dir", self.dir] + list(args),
                           capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError("stackctl %s failed (%d): %s" % (args, r.returncode, r.stderr))
        return r

    def leaks(self, *args):
        return json.loads(self.ctl("query", "leaks", "--json", *args).stdout)

    def clients(self):
        return json.loads(self.ctl("query", "clients", "--json").stdout)["clients"]

    def client(self, pid):
        for c in self.clients():
            if c["pid"] == pid:
                return c
        return None

    def wait_state(self, pid, state, timeout=15):
        return wait_until(lambda: (self.client(pid) or {}).get("state") == state and
                          self.client(pid), timeout, what="pid %d to be %s" % (pid, state))

    def alive(self):
        return self.proc.poll() is None

    def close(self):
        """Stops collectord gracefully; returns its log (asserts a clean exit)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                # Its stop saves every ended process's report to the store,
                # symbolized: seconds of libdw work for a big Python process,
                # several times that on a loaded machine (a 3.15 interpreter
                # with its DWARF went past 15 s with four CPUs' worth of work
                # on two).
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("collectord did not stop on SIGTERM")
        log = self.read_log()
        self.log.close()
        if self.proc.stdout:
            self.proc.stdout.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        bad = [l for l in log.splitlines()
               if "ERROR: AddressSanitizer" in l or "ERROR: LeakSanitizer" in l or
               "runtime error:" in l]
        if bad or self.proc.returncode not in (0,):
            raise AssertionError("collectord exited %s with:\n%s" % (self.proc.returncode, log))
        return log


def ask(p, command, timeout=30):
    """Sends one command line to a started test program (tests/progs) and
    returns its one-line answer; raises if none comes within timeout."""
    p.stdin.write(command + "\n")
    p.stdin.flush()
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    if not ready:
        raise AssertionError("no answer to %r within %.0fs" % (command, timeout))
    return p.stdout.readline().strip()


def ticks(p):
    """How many times tests/progs/ticker has leaked its tick block so far."""
    words = ask(p, "count").split()
    if words[:1] != ["ticks"]:
        raise AssertionError("ticker answered %r to count" % words)
    return int(words[1])


def wait_ticks(p, n, what="the ticker to run on"):
    """Waits until the ticker has ticked n more times than now."""
    first = ticks(p)

    def more():
        t = ticks(p)
        return t if t >= first + n else None
    return wait_until(more, interval=0.02, what=what)


def wait_output(p, want, stream="stderr", timeout=30):
    """Reads a started program's stderr (or stdout) as it comes until want
    (a text, or a function of everything read so far) is met; returns all
    read so far. Raw reads, as finish() does: lines an earlier readline()
    buffered are not seen. What is read is kept in p.seen[stream]: add it to
    what finish() returns later."""
    seen = p.__dict__.setdefault("seen", {})
    seen.setdefault(stream, "")
    met = want if callable(want) else (lambda text: want in text)
    fd = getattr(p, stream).fileno()
    deadline = time.monotonic() + timeout
    while True:
        ended = False
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                ended = True
                break
            seen[stream] += chunk.decode(errors="replace")
        if met(seen[stream]):
            return seen[stream]
        if ended:
            raise AssertionError("%s ended before %r (read: %r)" %
                                 (stream, want, seen[stream][-2000:]))
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out after %.1fs waiting for %r on %s (read: %r)" %
                                 (timeout, want, stream, seen[stream][-2000:]))
        select.select([fd], [], [], left)


def wait_lines(p, pattern, n, stream="stdout", timeout=30):
    """Waits until a started program has printed n more lines matching
    pattern (a regex) than it has so far: proof that it ran on that long."""
    count = lambda text: len(re.findall(pattern, text, re.M))
    first = count(wait_output(p, lambda text: True, stream))
    return wait_output(p, lambda text: count(text) >= first + n, stream, timeout)


def finish(p, timeout=30):
    """Closes stdin of a started program and waits for it; returns (rc, out, err)."""
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def stacks_with(report, function, file_suffix=None, line=None, pid=None, depth=None):
    """Stacks whose frames (first `depth` of them) include function at file:line."""
    found = []
    for s in report["stacks"]:
        if pid is not None and s["pid"] != pid:
            continue
        frames = s["frames"][:depth] if depth else s["frames"]
        for f in frames:
            if f["function"] != function:
                continue
            if file_suffix and not (f["file"] or "").endswith(file_suffix):
                continue
            if line is not None and f["line"] != line:
                continue
            found.append(s)
            break
    return found


def first_user_frame(stack, prefixes=("leak_", "noise_", "sem_", "worker_", "dl_", "parent_",
                                      "child_", "make_")):
    for f in stack["frames"]:
        if f["function"] and f["function"].startswith(prefixes):
            return f
    return None


def raw_connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


# ---------------------------------------------------------------- raw agent frames

def pb_varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def pb_field(num, wire, payload):
    key = pb_varint((num << 3) | wire)
    if wire == 0:
        return key + pb_varint(payload)
    if wire == 1:
        return key + struct.pack("<Q", payload)
    return key + pb_varint(len(payload)) + payload


def frame(body):
    return struct.pack("<I", len(body)) + body


def hello(pid=1, instance=0x1234):
    """An agent Hello frame claiming pid (the collector must not believe it)."""
    h = pb_field(1, 0, 1) + pb_field(2, 0, pid) + pb_field(4, 2, b"/fake/exe") + \
        pb_field(7, 1, instance)
    return frame(pb_field(1, 2, h))




def packed(values, signed=False):
    out = b""
    for v in values:
        if signed:
            v = (v << 1) ^ (v >> 63)
        out += pb_varint(v)
    return out


def stackdefs(index, sid, pcs):
    d = pb_field(1, 0, index) + pb_field(2, 1, sid) + pb_field(4, 2, packed(pcs))
    return frame(pb_field(3, 2, pb_field(1, 2, d)))


def events(ts_base, evs):
    """evs: [(kind, addr, ts, size, stack)] with kind 0 alloc / 1 free, in time order."""
    kinds, addrs, deltas, tids, sizes, stacks = [], [], [], [], [], []
    prev = ts_base
    for kind, addr, ts, size, stack in evs:
        kinds.append(kind)
        addrs.append(addr)
        deltas.append(ts - prev)
        prev = ts
        tids.append(1)
        if kind == 0:
            sizes.append(size)
            stacks.append(stack)
    b = pb_field(1, 0, ts_base) + pb_field(2, 2, packed(kinds)) + \
        pb_field(3, 2, packed(addrs)) + pb_field(4, 2, packed(deltas, True)) + \
        pb_field(5, 2, packed(tids)) + pb_field(6, 2, packed(sizes)) + \
        pb_field(7, 2, packed(stacks))
    return frame(pb_field(4, 2, b))
