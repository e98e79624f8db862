"""Protocol abuse against a real collectord: random bytes, truncated and giant
length prefixes, valid framing around garbage, stack indexes out of range,
events for stacks never defined, slowloris clients, clients that never read,
1000 idle connections. Throughout, a well-behaved traced program runs and a
probe pings the control socket: collectord must not crash, must answer every
ping within a bound, must report the program's leak exactly, and its memory
(VmRSS) must stay bounded. The figures go to stderr as 'FIGURE ...' lines
(docs/RELIABILITY.md)."""

import os
import random
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
            s.sendall(hello(instance=0xAC00 + i) + struct.pack("<I", FRAME_MAX_AGENT) +
                      b"\0" * (256 << 10))
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

        # 1000 idle connections: 600 agents that said Hello and stay quiet,
        # 400 that never say anything (closed after the idle timeout).
        t0 = time.monotonic()
        hellos = []
        for i in range(600):
            s = self.connect(self.agent_sock)
            s.sendall(hello(instance=0xB0000 + i))
            hellos.append(s)
        bare = [self.connect(self.agent_sock) for _ in range(400)]
        wait_until(lambda: len([c for c in self.col.clients() if c["exe"] == "/fake/exe" and
                                c["state"] == "connected"]) >= 600,
                   timeout=60, what="600 idle agents listed")
        with_idle = rss_kib(self.pid)
        note_rss()
        self.figure("rss with 1000 idle connections (KiB)", with_idle)
        self.figure("1000 connections opened in (s)", round(time.monotonic() - t0, 1))
        self.assertTrue(all(closed_by_peer(s, IDLE * 10 + 30) for s in bare[:20]))
        for s in hellos[:20]:
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
