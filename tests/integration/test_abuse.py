"""Protocol abuse against a real collectord: random bytes, truncated and giant
length prefixes, valid framing around garbage, stack indexes out of range,
events for stacks never defined, slowloris clients, clients that never read,
1000 idle connections. Throughout, a well-behaved traced program runs and a
probe pings the control socket: collectord must not crash, must answer every
ping within a bound, must report the program's leak exactly, and its memory
(VmRSS) must stay bounded. The figures go to stderr as 'FIGURE ...' lines
(docs/RELIABILITY.md)."""

import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import resource
import socket
import struct
import sys
import threading
import time
import unittest

import swtest as sw
from swtest import Collector, events, finish, frame, hello, pb_field, prog, stackdefs, \
    stacks_with, wait_until

IDLE = 2.0                  # --idle-timeout of the collectord under test
PING_BOUND = 5.0            # seconds a ping may take while abuse runs (2 busy cores)
FRAME_MAX_AGENT = 8 << 20
MiB = 1 << 20


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def ping_request():
    return frame(pb_field(4, 2, b""))


def read_frame(s):
    """One whole frame from a blocking socket, or None at EOF."""
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf
    hdr = exact(4)
    if hdr is None:
        return None
    return exact(struct.unpack("<I", hdr)[0])


def closed_by_peer(s, timeout):
    """True when the peer closes s within timeout (whatever it sends first)."""
    s.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


class Prober(threading.Thread):
    """Pings the control socket every 50 ms; records the slowest answer."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.worst = 0.0
        self.count = 0
        self.failures = []

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                s = sw.raw_connect(self.path)
                s.settimeout(30)
                s.sendall(ping_request())
                if read_frame(s) is None:
                    self.failures.append("EOF instead of a pong")
                s.close()
            except OSError as e:
                self.failures.append(repr(e))
            self.worst = max(self.worst, time.monotonic() - t0)
            self.count += 1
            self.stop.wait(0.05)


class ProtocolAbuseTest(unittest.TestCase):
    quick = False

    @classmethod
    def setUpClass(cls):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 4096 and hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    def setUp(self):
        self.col = Collector(expire=0.5, extra=["--idle-timeout", str(IDLE)])
        self.agent_sock = os.path.join(self.col.dir, "agent.sock")
        self.control_sock = os.path.join(self.col.dir, "control.sock")
        self.pid = self.col.proc.pid
        self.socks = []

    def tearDown(self):
        for s in self.socks:
            s.close()
        self.col.close()

    def connect(self, path):
        s = sw.raw_connect(path)
        self.socks.append(s)
        return s

    def send_expect_close(self, path, data, what):
        s = self.connect(path)
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return
        self.assertTrue(closed_by_peer(s, 15), "collectord kept a connection open: " + what)

    def malloc_leak(self, pid):
        rep = self.col.leaks("--pid", str(pid))
        st = stacks_with(rep, "leak_malloc", "leaks.c")
        return st[0] if st and st[0]["may_leak"]["count"] >= 1 else None

    def figure(self, name, value):
        sys.stderr.write("FIGURE abuse %s: %s\n" % (name, value))

    def test_abuse_does_not_crash_stall_or_grow(self):
        rnd = random.Random(11)
        good = self.col.start([prog("leaks")])
        wait_until(lambda: self.malloc_leak(good.pid), what="the well-behaved leak")
        base = rss_kib(self.pid)
        peak = [base]
        prober = Prober(self.control_sock)
        prober.start()

        def note_rss():
            peak[0] = max(peak[0], rss_kib(self.pid))

        # Random bytes, on both sockets.
        for i in range(20):
            for path in (self.agent_sock, self.control_sock):
                self.send_expect_close(path, bytes(rnd.getrandbits(8) for _ in range(4096)),
                                       "random bytes")
        note_rss()
        # Truncated prefixes and frames, giant prefixes.
        for path in (self.agent_sock, self.control_sock):
            s = self.connect(path)
            s.sendall(b"\x10\x00")
            s.close()
            s = self.connect(path)
            s.sendall(struct.pack("<I", 1000) + b"x" * 10)
            s.close()
            for giant in (0xFFFFFFFF, FRAME_MAX_AGENT + 1, 0x7FFFFFFF):
                self.send_expect_close(path, struct.pack("<I", giant) + b"y" * 64,
                                       "giant prefix")
        # Valid framing around garbage protobuf.
        for i in range(10):
            junk = bytes(rnd.getrandbits(8) for _ in range(200))
            self.send_expect_close(self.agent_sock, frame(junk), "garbage protobuf (agent)")
            self.send_expect_close(self.control_sock, frame(junk), "garbage protobuf (control)")
        # A stack index beyond the protocol's range: refused.
        big = events(1000, [(0, 0x1000, 1000, 16, 1 << 30)])
        self.send_expect_close(self.agent_sock, hello(instance=0xAB01) + big, "stack index")
        # Events for stacks never defined, frees of blocks never allocated:
        # valid protocol, counted, no harm.
        s = self.connect(self.agent_sock)
        evs = [(0, 0x5000 + i * 64, 2000 + i, 32, 7 + i % 3) for i in range(50)]
        evs += [(1, 0x900000 + i * 64, 3000 + i, 0, 0) for i in range(50)]
        s.sendall(hello(instance=0xAB02) + stackdefs(1, 0x77, [0x1234]) + events(2000, evs))
        fake = wait_until(lambda: [c for c in self.col.clients() if c["exe"] == "/fake/exe" and
                                   c["unknown_frees"] == 50], what="the unknown frees counted")
        self.assertEqual(fake[0]["live"]["count"], 50)
        s.close()
        note_rss()

        # Memory: 32 connections each announce the largest agent frame and
        # send 256 KiB of it: collectord holds what arrived, not 32 x 8 MiB.
        before = rss_kib(self.pid)
        liars = []
        for i in range(32):
            s = self.connect(self.agent_sock)
            try:  # one process gets 16 agent connections: the rest are refused
                s.sendall(hello(instance=0xAC00 + i) + struct.pack("<I", FRAME_MAX_AGENT) +
                          b"\0" * (256 << 10))
            except (BrokenPipeError, ConnectionResetError):
                pass
            liars.append(s)
        wait_until(lambda: self.col.ctl("query", "clients", "--json").returncode == 0,
                   what="a query while 32 frames are half sent")
        liar_growth = rss_kib(self.pid) - before
        note_rss()
        self.figure("rss growth for 32 half-sent 8 MiB frames (KiB)", liar_growth)
        self.assertLess(liar_growth, 32 * 1024, "a length prefix made collectord allocate")
        for s in liars:
            s.close()

        # Slowloris: one byte at a time, with pauses, on both sockets.
        def slow(path, data, pause, out):
            s = sw.raw_connect(path)
            try:
                for b in data:
                    s.sendall(bytes([b]))
                    time.sleep(pause)
                out.append(("done", s))
            except (BrokenPipeError, ConnectionResetError):
                out.append(("closed", s))

        slow_out = []
        t0 = time.monotonic()
        slowpokes = [
            threading.Thread(target=slow, args=(self.agent_sock, hello(instance=0xAD01), 1.0,
                                                slow_out)),
            threading.Thread(target=slow, args=(self.control_sock, ping_request() * 20, 1.0,
                                                slow_out)),
            threading.Thread(target=slow, args=(self.agent_sock, hello(instance=0xAD02), 0.02,
                                                slow_out)),
        ]
        for t in slowpokes:
            t.start()
        # The 1 byte/s clients are closed once the idle timeout passes; the
        # fast-enough one completes its Hello and stays.
        for t in slowpokes:
            t.join(IDLE * 10 + 60)
        closed = [s for how, s in slow_out if how == "closed"]
        self.assertEqual(len(closed), 2, slow_out)
        self.figure("slowloris clients closed after (s)", round(time.monotonic() - t0, 1))
        log = self.col.read_log()
        self.assertIn("no Hello within the idle timeout", log)
        self.assertIn("no whole request within the idle timeout", log)
        done = [s for how, s in slow_out if how == "done"]
        self.assertEqual(len(done), 1)
        self.socks += [s for how, s in slow_out]
        note_rss()

        # A control client that sends requests and never reads: one reply is
        # queued (reading from it stops), then it is closed; no stall.
        nr = self.connect(self.control_sock)
        nr.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        query_clients = frame(pb_field(2, 2, b""))  # never parked, a few KiB of reply
        try:
            nr.sendall(query_clients * 2000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.assertTrue(closed_by_peer_without_reading(nr, IDLE * 10 + 30),
                        "a client that never reads was not closed")
        self.assertIn("its reply stayed unread past the idle timeout", self.col.read_log())
        # An agent that never reads (its commands and Welcome pile up).
        deaf = self.connect(self.agent_sock)
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        deaf.sendall(hello(instance=0xAE01) + stackdefs(1, 0xDEAF, [0x4000]) +
                     events(5000, [(0, 0x7000, 5000, 64, 1)]))
        self.col.ctl("trigger", "add", "--stack", "%x" % 0xDEAF, "--pid", str(os.getpid()))
        note_rss()

        # 1000 idle connections from this one process: 600 agents that say
        # Hello and stay quiet, 400 that never say anything. One process keeps
        # 16 agent connections open (2 are: the slowloris that finished its
        # Hello and the deaf agent); the rest are refused at once, and the
        # silent ones it kept are closed after the idle timeout.
        t0 = time.monotonic()
        hellos = []
        for i in range(600):
            s = self.connect(self.agent_sock)
            try:
                s.sendall(hello(instance=0xB0000 + i))
            except (BrokenPipeError, ConnectionResetError):
                pass
            hellos.append(s)
        bare = [self.connect(self.agent_sock) for _ in range(400)]
        wait_until(lambda: len([c for c in self.col.clients() if c["exe"] == "/fake/exe" and
                                c["state"] == "connected"]) >= 16,
                   timeout=60, what="16 idle agents of this process listed")
        with_idle = rss_kib(self.pid)
        note_rss()
        self.figure("rss with 1000 idle connections of one process (KiB)", with_idle)
        self.figure("1000 connections opened in (s)", round(time.monotonic() - t0, 1))
        self.assertEqual(len([c for c in self.col.clients() if c["exe"] == "/fake/exe" and
                              c["state"] == "connected"]), 16)
        self.assertTrue(all(closed_by_peer(s, IDLE * 10 + 30) for s in bare[:20]))
        for s in hellos[:14]:
            s.setblocking(False)
            try:
                self.assertNotEqual(s.recv(65536), b"")  # its Welcome, not EOF
            except BlockingIOError:
                pass
        # The well-behaved program is still traced exactly.
        st = wait_until(lambda: self.malloc_leak(good.pid), what="the leak after abuse")
        self.assertEqual(st["may_leak"], {"count": 1, "bytes": 1001})
        self.assertEqual(st["alloc"], {"count": 1, "bytes": 1001})
        prober.stop.set()
        prober.join(60)
        self.figure("pings answered", prober.count)
        self.figure("slowest ping (s)", round(prober.worst, 3))
        self.assertEqual(prober.failures, [])
        self.assertGreater(prober.count, 20)
        self.assertLess(prober.worst, PING_BOUND)
        for s in self.socks:
            s.close()
        self.socks = []
        # Their ends are in before the program's: retention keeps the 64
        # clients that ended last, and the program must be one of them.
        wait_until(lambda: not [c for c in self.col.clients()
                                if c["exe"] == "/fake/exe" and c["state"] == "connected"],
                   timeout=60, what="the abusers' connections to end")
        rc, out, err = finish(good)
        self.assertEqual(rc, 0, err)
        good_c = self.col.wait_state(good.pid, "exited")
        self.assertEqual(good_c["dropped"], 0)
        rep = self.col.leaks("--pid", str(good.pid))
        st = stacks_with(rep, "leak_malloc", "leaks.c")
        self.assertTrue(st, rep)
        st = st[0]
        self.assertEqual(st["exit_live"], {"count": 1, "bytes": 1001})
        after = rss_kib(self.pid)
        self.figure("rss before abuse (KiB)", base)
        self.figure("rss peak (KiB)", peak[0])
        self.figure("rss after abuse (KiB)", after)
        self.assertLess(peak[0] - base, 256 * 1024, "collectord grew by more than 256 MiB")
        self.assertTrue(self.col.alive())


def module_frame(mid, path):
    """A ModuleMap frame with one module: id, path, a load bias."""
    m = pb_field(1, 0, mid) + pb_field(2, 2, path) + pb_field(3, 0, 0x1000)
    return frame(pb_field(2, 2, pb_field(1, 2, m)))


def hello_argv(instance, argv, exe=b"/fake/exe"):
    h = pb_field(1, 0, 1) + pb_field(2, 0, 1) + pb_field(4, 2, exe) + \
        b"".join(pb_field(5, 2, a) for a in argv) + pb_field(7, 1, instance)
    return frame(pb_field(1, 2, h))


def dir_bytes(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def until_eof(s, timeout=60):
    """Reads (and drops) what s receives until the peer closes it."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass


class PerProcessLimitsTest(unittest.TestCase):
    """Issue 17.4: what one hostile process of our uid can make collectord
    hold, and whether queries still answer. The figures go to stderr as
    'FIGURE ...' lines (docs/RELIABILITY.md, "Per-process limits")."""

    @classmethod
    def setUpClass(cls):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 4096 and hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    def setUp(self):
        self.cols = []
        self.socks = []
        self.procs = []

    def tearDown(self):
        for s in self.socks:
            s.close()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for c in self.cols:
            c.close()

    def collector(self, **kw):
        c = Collector(**kw)
        self.cols.append(c)
        return c

    def connect(self, col):
        s = sw.raw_connect(os.path.join(col.dir, "agent.sock"))
        self.socks.append(s)
        return s

    def figure(self, name, value):
        sys.stderr.write("FIGURE limits %s: %s\n" % (name, value))

    def fakes(self, col):
        return [c for c in col.clients() if c["exe"] == "/fake/exe"]

    def test_module_paths_bounded(self):
        # 100 modules with 4 MiB paths on one connection: +404 MiB kept after
        # it closed, before paths were cut.
        col = self.collector(extra=["--state-dir", "none"])
        pid = col.proc.pid
        base = rss_kib(pid)
        s = self.connect(col)
        s.sendall(hello(instance=0xC001))
        path = b"/" + b"m" * (4 * MiB)
        sent = 0
        try:
            for i in range(100):
                s.sendall(module_frame(i, path))
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.shutdown(socket.SHUT_WR)
        until_eof(s)
        wait_until(lambda: self.fakes(col) and self.fakes(col)[0]["state"] != "connected",
                   what="the connection to end")
        growth = rss_kib(pid) - base
        self.figure("rss kept after 100 modules with 4 MiB paths (KiB)", growth)
        if not sw.sanitized_collector():  # ASan's quarantine holds what was freed
            self.assertLess(growth, 64 * 1024, "module paths kept (%d sent)" % sent)

    def test_argv_and_store_bounded_and_queries_answer(self):
        # 100 connections, each a new instance token with a 4 MiB argv: +800
        # MiB, 257 MB in the store, and "query clients" failing (reply over
        # 256 MiB), also after a restart, before argv was cut.
        state = tempfile.mkdtemp(prefix="swlimits-state-")
        self.addCleanup(shutil.rmtree, state, True)
        col = self.collector(extra=["--state-dir", state, "--retain", "100"])
        pid = col.proc.pid
        base = rss_kib(pid)
        big = b"a" * (4 * MiB)
        for i in range(100):
            s = self.connect(col)
            try:
                s.sendall(hello_argv(0xD000 + i, [b"/fake/exe", big]) +
                          stackdefs(1, 0xD000 + i, [0x4000 + i]) +
                          events(1000, [(0, 0x10000, 1000, 64, 1)]))
            except (BrokenPipeError, ConnectionResetError):
                pass
            s.shutdown(socket.SHUT_WR)
            until_eof(s)
        wait_until(lambda: len([c for c in self.fakes(col) if c["state"] != "connected"]) >= 100,
                   timeout=120, what="100 ended fake clients")
        growth = rss_kib(pid) - base
        self.figure("rss growth for 100 instance tokens with 4 MiB argv (KiB)", growth)
        if not sw.sanitized_collector():  # ASan's quarantine holds what was freed
            self.assertLess(growth, 64 * 1024)
        for c in self.fakes(col):
            self.assertLessEqual(sum(len(a) + 1 for a in c["argv"]), 64 << 10)
        r = col.ctl("query", "clients", "--json")
        self.figure("query clients reply (bytes of JSON)", len(r.stdout))
        col.ctl("query", "leaks", "--json")
        col.close()
        self.cols.remove(col)
        stored = dir_bytes(state)
        self.figure("store after 100 instance tokens with 4 MiB argv (bytes)", stored)
        self.assertLess(stored, 32 << 20)
        # After a restart, the stored reports are served and queries answer.
        col = self.collector(extra=["--state-dir", state])
        r = col.ctl("query", "leaks", "--json")
        self.assertTrue(json.loads(r.stdout)["clients"])
        col.ctl("query", "clients", "--json")

    def test_max_live_per_process(self):
        # 6 instance tokens from one process: 6M blocks tracked under
        # --max-live 1000000, before the cap was per process.
        col = self.collector(extra=["--state-dir", "none", "--max-live", "1000"])
        for k in range(6):
            s = self.connect(col)
            evs = [(0, 0x100000 * (k + 1) + i * 64, 1000 + i, 32, 1) for i in range(1000)]
            s.sendall(hello(instance=0xE000 + k) + stackdefs(1, 0xE000 + k, [0x5000]) +
                      events(1000, evs))
        fakes = wait_until(lambda: (lambda f: len(f) == 6 and
                                    all(c["live"]["count"] + c["table_full"] == 1000
                                        for c in f) and f)(self.fakes(col)),
                           what="6000 allocations applied")
        live = sum(c["live"]["count"] for c in fakes)
        self.figure("blocks tracked for one process with 6 instance tokens, --max-live 1000",
                    live)
        self.assertEqual(live, 1000)
        self.assertEqual(sum(c["table_full"] for c in fakes), 5000)

    def test_replies_cut_with_a_note(self):
        state = tempfile.mkdtemp(prefix="swlimits-state-")
        self.addCleanup(shutil.rmtree, state, True)
        extra = ["--state-dir", state, "--max-reply", "65536"]
        col = self.collector(expire=0.2, extra=extra)
        for i in range(15):  # one process keeps 16 agent connections
            s = self.connect(col)
            defs = b"".join(stackdefs(j, 0xF0000 + i * 1000 + j, [0x6000 + j, 0x7000 + i])
                            for j in range(1, 101))
            evs = [(0, 0x200000 * (i + 1) + j * 64, 1000 + j, 100 + j, j) for j in range(1, 101)]
            s.sendall(hello_argv(0xF000 + i, [b"/fake/exe", b"x" * 8000]) + defs +
                      events(1000, evs))
        # (query clients is cut here too: wait on the note's count)
        wait_until(lambda: re.search(r"of 1500 stacks and \d+ of 15 processes",
                                     col.ctl("query", "leaks", "--json", "--all").stderr),
                   what="15 fake clients with 100 stacks each")
        def cut(*args):
            r = col.ctl(*args)
            return r, json.loads(r.stdout)
        r, rep = cut("query", "clients", "--json")
        self.assertIn("reply cut to fit 65536 bytes", r.stderr)
        self.assertLess(len(rep["clients"]), 15)
        self.assertGreater(len(rep["clients"]), 0)
        r, rep = cut("query", "leaks", "--json", "--all")
        self.assertIn("reply cut to fit 65536 bytes", r.stderr)
        self.assertGreater(len(rep["stacks"]), 0)
        self.assertLess(len(rep["stacks"]), 1500)
        self.figure("query leaks --all under --max-reply 65536: stacks shown of 1500",
                    len(rep["stacks"]))
        for s in self.socks:
            s.close()
        self.socks = []
        wait_until(lambda: '"state": "connected"' not in
                   col.ctl("query", "clients", "--json").stdout, what="the fake clients to end")
        col.close()
        self.cols.remove(col)
        # Reports loaded from the store after a restart are cut the same way.
        col = self.collector(expire=0.2, extra=extra)
        r, rep = cut("query", "leaks", "--json", "--all")
        self.assertIn("reply cut to fit 65536 bytes", r.stderr)
        self.assertGreater(len(rep["stacks"]), 0)

    def test_connections_per_process_bounded(self):
        # 5,000 idle connections (with a Hello) from one process locked real
        # agents out for good; now one process gets CPROC_CONNS_MAX (16).
        col = self.collector(extra=["--state-dir", "none"], nofile=256)
        held = []
        for i in range(300):
            try:
                s = self.connect(col)
                s.sendall(hello(instance=0x1F000 + i))
                held.append(s)
            except (BrokenPipeError, ConnectionResetError):
                pass
        open_ = wait_until(lambda: (lambda n: n if n == 16 else None)(
            len([c for c in self.fakes(col) if c["state"] == "connected"])),
            what="16 idle agents of one process")
        self.figure("agent connections one process keeps open", open_)
        good = col.start([prog("leaks")])
        self.procs.append(good)
        wait_until(lambda: col.client(good.pid), what="a real agent to get in")
        finish(good)
        log = col.read_log()
        self.assertIn("too many connections from pid %d" % os.getpid(), log)
        lines = log.count("too many connections from pid")
        self.figure("log lines for 284 refused connections", lines)
        self.assertLessEqual(lines, 3)

    def test_out_of_fds_log_throttled(self):
        # Many processes' connections exhaust collectord's descriptors: one log
        # line per interval with a count, not 4,495 lines.
        col = self.collector(extra=["--state-dir", "none"], nofile=64)
        path = os.path.join(col.dir, "agent.sock")
        code = ("import socket,sys\n"
                "s=[]\n"
                "for i in range(16):\n"
                "    c=socket.socket(socket.AF_UNIX); c.connect(sys.argv[1]); s.append(c)\n"
                "print('ok', flush=True)\n"
                "sys.stdin.read()\n")
        for k in range(6):
            p = subprocess.Popen([sys.executable, "-c", code, path], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
            self.procs.append(p)
            self.assertEqual(p.stdout.readline().strip(), "ok")
        refused = 0
        for i in range(300):
            s = sw.raw_connect(path)
            s.settimeout(10)
            try:
                if s.recv(16) == b"":
                    refused += 1
            except (socket.timeout, ConnectionResetError):
                pass
            s.close()
        self.assertGreater(refused, 100)
        lines = col.read_log().count("out of file descriptors")
        self.figure("log lines for %d connections refused out of fds" % refused, lines)
        self.assertLessEqual(lines, 3)


def closed_by_peer_without_reading(s, timeout):
    """Waits (without reading) until the peer closes s: the socket polls as
    readable with a pending error or hang-up once collectord closes."""
    import select
    p = select.poll()
    p.register(s, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _fd, ev in p.poll(200):
            if ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
                return True
    return False


if __name__ == "__main__":
    unittest.main()
