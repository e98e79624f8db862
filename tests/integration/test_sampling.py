"""Sampled mode (STACKWATCH_SAMPLE=SIZE): planted leaks found at their lines
with estimates near the truth, churn never reported, exact per-process totals,
bad values refused, and armed stacks firing at full rate though unsampled."""

import os
import re
import tempfile
import unittest

from swtest import Collector, finish, markers, prog, stacks_with, wait_lines, wait_until

SMALL_N, SMALL_SIZE, BIG_N, BIG_SIZE = 200000, 64, 8, 1 << 20


class SampledLeaksTest(unittest.TestCase):
    quick = True

    def setUp(self):
        self.col = Collector(expire=0.5)

    def tearDown(self):
        self.col.close()

    def test_estimates_lines_and_exact_totals(self):
        p = self.col.start([prog("sampled")], STACKWATCH_SAMPLE="64KiB")
        ready = p.stdout.readline().split()
        self.assertEqual(ready[0], "ready")
        calls_alloc, calls_free = int(ready[1]), int(ready[2])
        m = markers("sampled.c")

        def both():
            r = self.col.leaks("--pid", str(p.pid))
            a = stacks_with(r, "leak_small", "sampled.c", m["small"])
            b = stacks_with(r, "leak_big", "sampled.c", m["big"])
            return (r, a[0], b[0]) if a and b else None

        r, small, big = wait_until(both, what="sampled leaks")
        for s in (small, big):
            self.assertTrue(s["estimate"])
            self.assertEqual(s["sample_bytes"], 65536)
            self.assertEqual(s["frames"][1]["function"], "main")
        # Every 1 MiB block holds a sample point (p = 1 - e^-16): exact.
        self.assertEqual(big["may_leak"]["count"], BIG_N)
        self.assertAlmostEqual(big["may_leak"]["bytes"], BIG_N * BIG_SIZE, delta=BIG_N)
        # 12.8 MB of 64-byte blocks at one sample per 64 KiB: ~195 samples,
        # a standard error near 7%; 30% is > 4 sigma.
        truth = SMALL_N * SMALL_SIZE
        self.assertLess(abs(small["may_leak"]["bytes"] - truth), 0.3 * truth, small["may_leak"])
        self.assertLess(abs(small["may_leak"]["count"] - SMALL_N), 0.3 * SMALL_N)
        # A million freed blocks: never reported, a handful of events at most.
        self.assertEqual(stacks_with(r, "noise_churn"), [])
        full = self.col.leaks("--pid", str(p.pid), "--all")
        churn = stacks_with(full, "noise_churn", "sampled.c", markers("sampled.c", "NOISE")["churn"])
        self.assertTrue(churn, "the churn's samples are in the full report")
        for s in churn:
            self.assertEqual(s["live"]["count"], 0)
        text = self.col.ctl("query", "leaks", "--pid", str(p.pid)).stdout
        self.assertIn("sampling 64KiB", text)
        self.assertIn("(estimated from samples)", text)
        self.assertRegex(text, r"may-leak=~\d+")
        rc, _, _ = finish(p)
        self.assertEqual(rc, 0)
        c = self.col.wait_state(p.pid, "exited")
        self.assertEqual(c["sample_bytes"], 65536)
        # Exact totals: every call counted (plus the C library's own few).
        self.assertGreaterEqual(c["total_allocs"], calls_alloc)
        self.assertLess(c["total_allocs"], calls_alloc + 1000)
        self.assertGreaterEqual(c["total_frees"], calls_free)
        self.assertLess(c["total_frees"], calls_free + 1000)
        self.assertGreaterEqual(c["total_alloc_bytes"], SMALL_N * SMALL_SIZE + BIG_N * BIG_SIZE)
        # About one sample per 64 KiB allocated (and its free), not 2.2
        # million events.
        expect = 2 * c["total_alloc_bytes"] / 65536
        self.assertLess(c["events"], 1.3 * expect + 100)
        self.assertGreater(c["events"], 0.7 * expect)
        self.assertEqual(c["dropped"], 0)
        self.assertEqual(c["unknown_frees"], 0)
        self.assertEqual(c["sample_overflow"], 0)

    def test_bad_values_fall_back_to_all(self):
        for bad in ("lots", "0", "-5", "2t"):
            r = self.col.run([prog("plain")], STACKWATCH_SAMPLE=bad)
            self.assertIn("STACKWATCH_SAMPLE=%s is neither 'all' nor a byte size" % bad, r.stderr)
        cs = [c for c in self.col.clients()]
        self.assertTrue(cs)
        for c in cs:
            self.assertEqual(c["sample_bytes"], 0)


class SampledTriggerTest(unittest.TestCase):
    quick = True

    def test_armed_stack_fires_on_every_allocation(self):
        # 1000-byte blocks every 10 ms against one sample per 64 KiB: sampled
        # about once a second. Once armed, every allocation from the stack
        # must fire, not one per sample.
        col = Collector(expire=5)
        tmp = tempfile.mkdtemp(prefix="swsamp-")
        log = os.path.join(tmp, "agent.log")
        try:
            p = col.start([prog("trigger_target")], STACKWATCH_LOG=log, STACKWATCH_SAMPLE="64k")
            self.assertEqual(p.stdout.readline().split()[:2], ["main", "tid"])
            col.wait_state(p.pid, "connected")
            col.ctl("trigger", "add", "--match", "^trigger_site$", "--count", "15")

            def agent_log():
                try:
                    with open(log) as f:
                        return f.read()
                except FileNotFoundError:
                    return ""

            wait_until(lambda: len(re.findall(r"malloc @ ", agent_log())) >= 15, timeout=30,
                       what="fifteen firings")
            wait_lines(p, r"^alloc ", 20)  # more from the stack: still fifteen firings
            rc, out, _ = finish(p)
            out = p.seen["stdout"] + out
            self.assertEqual(rc, 0)
            allocs = re.findall(r"alloc (0x[0-9a-f]+) tid", out)
            fired = re.findall(r"malloc @ (0x[0-9a-f]+)", agent_log())
            self.assertEqual(len(fired), 15)
            # Fired blocks are consecutive allocations of the program (an
            # address may recur: match the run, not a set).
            start = None
            for i in range(len(allocs) - 14):
                if allocs[i:i + 15] == fired:
                    start = i
                    break
            self.assertIsNotNone(start, "firings are not consecutive allocations: %s" % fired)
            # Their frees are recorded too (the fired blocks joined the set).
            frees = re.findall(r"free @ (0x[0-9a-f]+)", agent_log())
            freed = set(re.findall(r"freed (0x[0-9a-f]+)", out))
            self.assertTrue(frees)
            for ptr in frees:
                self.assertIn(ptr, fired)
                self.assertIn(ptr, freed)
        finally:
            col.close()
