"""Classification through the real daemon with a driven clock: collectord
--test-clock advances only on Tick requests, and a fake agent stamps its
events with the times the test chooses. Nothing here depends on how fast the
machine is: the five behaviours and a bursty leak reach their classes at the
same simulated moments on an idle or a loaded machine."""

import json
import os
import struct
import unittest

from swtest import (Collector, events, frame, hello, pb_field, raw_connect, stackdefs,
                    wait_until)

MS = 1000000
EXPIRE = 300 * MS
TICK = 20 * MS


def varints(buf):
    """{field: value or bytes} of one protobuf message (last value wins)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            out[num], i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            out[num] = buf[i:i + n]
            i += n
        elif wire == 1:
            out[num] = struct.unpack_from("<Q", buf, i)[0]
            i += 8
        elif wire == 5:
            out[num] = struct.unpack_from("<I", buf, i)[0]
            i += 4
        else:
            raise AssertionError("wire type %d" % wire)
    return out


def _varint(buf, i):
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


class Control:
    """A raw control connection for Tick requests."""

    def __init__(self, col):
        self.s = raw_connect(os.path.join(col.dir, "control.sock"))

    def tick(self, ns):
        self.s.sendall(frame(pb_field(20, 2, pb_field(1, 0, ns) if ns else b"")))
        hdr = self._read(4)
        body = self._read(struct.unpack("<I", hdr)[0])
        rep = varints(body)
        if rep.get(1):
            raise AssertionError("tick refused: %r" % rep.get(2))
        return varints(rep[5]).get(20, 0)  # Pong.mono_ns

    def _read(self, n):
        b = b""
        while len(b) < n:
            c = self.s.recv(n - len(b))
            if not c:
                raise AssertionError("control connection closed")
            b += c
        return b


class FakeAgent:
    """One client whose events carry the test's times, one batch per tick."""

    STACKS = {"steady": 1, "cache": 2, "queue": 3, "churn": 4, "startup": 5, "bursty": 6}

    def __init__(self, col, t0):
        self.col = col
        self.a = raw_connect(os.path.join(col.dir, "agent.sock"))
        self.a.sendall(hello(instance=0x5EED))
        for name, idx in self.STACKS.items():
            self.a.sendall(stackdefs(idx, 0xC0DE0000 + idx, [0x400000 + 0x100 * idx, 0x401000]))
        self.t0 = t0
        self.next_addr = 0x10000
        self.sent = 0
        self.cache, self.queue = [], []

    def addr(self):
        self.next_addr += 0x40
        return self.next_addr

    def step(self, k, bursty_on):
        """Tick k's events, stamped within [t0 + k*TICK, t0 + (k+1)*TICK)."""
        ts = self.t0 + k * TICK
        evs = []

        def alloc(stack, size):
            nonlocal ts
            ts += 1000
            a = self.addr()
            evs.append((0, a, ts, size, self.STACKS[stack]))
            return a

        def free(a):
            nonlocal ts
            ts += 1000
            evs.append((1, a, ts, 0, 0))

        if k == 0:
            for _ in range(100):
                alloc("startup", 1024)
        alloc("steady", 256)
        if len(self.cache) == 40:  # LRU of 40: entries live 0.8 s, past the expire time
            free(self.cache.pop(0))
        self.cache.append(alloc("cache", 512))
        for _ in range(3):
            self.queue.append(alloc("queue", 128))
        for _ in range(2):
            free(self.queue.pop(0))
        for _ in range(10):
            free(alloc("churn", 64))
        if bursty_on:
            alloc("bursty", 1000)
        self.a.sendall(events(self.t0 + k * TICK, evs))
        self.sent += len(evs)

    def wait_applied(self):
        pid = os.getpid()

        def applied():
            c = [x for x in self.col.clients() if x["pid"] == pid]
            return c and c[0]["events"] >= self.sent
        wait_until(applied, timeout=30, what="the fake agent's events to be applied")


def bursty_on(k):
    """3 expire windows on, 6 off, three times (45 and 90 ticks)."""
    return k < 405 and k % 135 < 45


class DrivenClockTest(unittest.TestCase):
    quick = True

    def test_five_behaviours_and_a_bursty_leak(self):
        col = Collector(expire=EXPIRE / 1e9, extra=("--test-clock",))
        try:
            ctl = Control(col)
            t0 = ctl.tick(0)
            agent = FakeAgent(col, t0)
            pid = os.getpid()
            history = []
            first_leak = {}
            evicted_at = None
            for k in range(500):
                agent.step(k, bursty_on(k))
                agent.wait_applied()
                ctl.tick(TICK)
                if k % 5 == 4 or k < 60:
                    rep = col.leaks("--pid", str(pid), "--all")
                    cls = {}
                    for s in rep["stacks"]:
                        idx = int(s["id"], 16) - 0xC0DE0000
                        name = [n for n, i in FakeAgent.STACKS.items() if i == idx][0]
                        cls[name] = s
                    history.append((k, {n: s["class"] for n, s in cls.items()}))
                    for n, s in cls.items():
                        if s["class"] == "leak" and n not in first_leak:
                            first_leak[n] = k
                    c = cls.get("cache")
                    if c and c["free_expired"]["count"] and evicted_at is None:
                        evicted_at = k
                    if evicted_at is not None:
                        self.assertNotEqual(c["class"], "leak", history[-3:])
                    if "bursty" in first_leak:
                        self.assertIn(cls["bursty"]["class"], ("leak", "growing"), history[-3:])
            final = history[-1][1]
            self.assertEqual(final, {"steady": "leak", "cache": "cache", "queue": "growing",
                                     "churn": "transient", "startup": "retained",
                                     "bursty": "leak"}, history[-3:])
            # The steady leak's first block expires at tick 15 (0.3 s): a leak
            # within two expire times after, on any machine.
            self.assertLessEqual(first_leak["steady"], 15 + 2 * 15, history[:50])
            self.assertIsNotNone(evicted_at)
            # The bursty leak is a leak during its first burst already.
            self.assertLess(first_leak["bursty"], 45 + 15, history[:60])
            rep = col.leaks("--pid", str(pid), "--all")
            b = [s for s in rep["stacks"] if int(s["id"], 16) == 0xC0DE0006][0]
            self.assertEqual(b["alloc"]["count"], 3 * 45)
            self.assertGreater(b["growth_bytes_per_min"], 0)
        finally:
            col.close()

    def test_python_line_pending_then_blamed(self):
        """A traceback captured for a live block is "not blamed yet" (word
        pending) until the block outlives the expire time, then blamed; one
        whose block was freed is not blamed: a stack with may-leak blocks then
        says not-captured, a transient one says nothing."""
        col = Collector(expire=EXPIRE / 1e9, extra=("--test-clock",))
        try:
            ctl = Control(col)
            t0 = ctl.tick(0)
            a = raw_connect(os.path.join(col.dir, "agent.sock"))
            h = pb_field(1, 0, 1) + pb_field(2, 0, 1) + pb_field(4, 2, b"/usr/bin/python3.11") + \
                pb_field(7, 1, 0x5EED2) + pb_field(13, 0, 0x030B02F0)
            a.sendall(frame(pb_field(1, 2, h)))
            a.sendall(stackdefs(1, 0xC0DE0001, [0x400100, 0x401000]))
            a.sendall(stackdefs(2, 0xC0DE0002, [0x400200, 0x401000]))
            a.sendall(stackdefs(3, 0xC0DE0003, [0x400300, 0x401000]))

            def note(addr, ts, stack, line):
                f = pb_field(1, 2, b"/srv/backtest.py") + pb_field(2, 2, b"signal_step") + \
                    pb_field(3, 0, line)
                n = pb_field(1, 0, addr) + pb_field(2, 0, ts) + pb_field(4, 2, f) + \
                    pb_field(5, 0, stack) + pb_field(6, 0, 1)
                a.sendall(frame(pb_field(6, 2, n)))

            # Stack 1: an old block (no note) and a young one with its note.
            # Stack 2: a block with a note, freed at once. Stack 3: an old
            # block (no note) and a young one with its note, freed.
            a.sendall(events(t0, [(0, 0x1000, t0 + 1000, 64, 1), (0, 0x4000, t0 + 2000, 16, 3)]))
            ctl.tick(EXPIRE + TICK)  # the old block is past the expire time
            t1 = t0 + EXPIRE + TICK
            a.sendall(events(t1, [(0, 0x2000, t1 + 1000, 64, 1), (0, 0x3000, t1 + 2000, 32, 2),
                                  (1, 0x3000, t1 + 3000, 0, 0), (0, 0x5000, t1 + 4000, 16, 3),
                                  (1, 0x5000, t1 + 5000, 0, 0)]))
            note(0x2000, t1 + 1000, 1, 27)
            note(0x3000, t1 + 2000, 2, 31)
            note(0x5000, t1 + 4000, 3, 40)
            pid = os.getpid()
            wait_until(lambda: any(c["pid"] == pid and c["notes"] >= 3 and c["events"] >= 7
                                   for c in col.clients()),
                       timeout=30, what="the events and notes to be applied")
            ctl.tick(TICK)

            def stack(idx):
                rep = col.leaks("--pid", str(pid), "--all")
                return [s for s in rep["stacks"] if int(s["id"], 16) == 0xC0DE0000 + idx][0]

            s1, s2, s3 = stack(1), stack(2), stack(3)
            self.assertEqual(s1["may_leak"]["count"], 1, s1)
            self.assertEqual(len(s1["python"]), 1, s1)
            self.assertFalse(s1["python_stats"][0]["blamed"], s1)
            self.assertEqual(s1["python_missing"], "pending", s1)
            self.assertFalse(s2["python_stats"][0]["blamed"], s2)
            self.assertEqual(s2["class"], "transient", s2)
            self.assertIsNone(s2["python_missing"], s2)
            self.assertEqual(s3["may_leak"]["count"], 1, s3)
            self.assertFalse(s3["python_stats"][0]["blamed"], s3)
            self.assertEqual(s3["python_missing"], "not-captured", s3)
            text = col.ctl("query", "leaks", "--pid", str(pid), "--all").stdout
            self.assertIn("(not blamed yet: its live blocks are younger than the expire time)",
                          text)
            self.assertIn("(not blamed: its blocks are freed)", text)
            self.assertIn("Python line: none (pending)", text)
            # One expire time later the young block has expired: blamed.
            for _ in range(EXPIRE // TICK + 1):
                ctl.tick(TICK)
            s1 = stack(1)
            self.assertEqual(s1["may_leak"]["count"], 2, s1)
            self.assertTrue(s1["python_stats"][0]["blamed"], s1)
            self.assertEqual(s1["python"][0][0]["line"], 27, s1)
            self.assertEqual(s1.get("python_missing"), None, s1)
            a.close()
        finally:
            col.close()

    def test_tick_refused_without_test_clock(self):
        col = Collector(expire=0.3)
        try:
            with self.assertRaisesRegex(AssertionError, "test-clock"):
                Control(col).tick(TICK)
        finally:
            col.close()


if __name__ == "__main__":
    unittest.main()
