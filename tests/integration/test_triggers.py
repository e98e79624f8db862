"""Triggers and signals back to the client: log lines with the right pointers,
the signal in the allocating thread, --count, --frame, no handler = no kill,
--on-leak through the peer's pidfd only, a lying client cannot redirect it."""

import os
import re
import signal
import subprocess
import tempfile
import time
import unittest

import swtest as sw
from swtest import Collector, events, finish, hello, prog, stackdefs, wait_lines, wait_until


def rules(col):
    import json
    return json.loads(col.ctl("trigger", "list", "--json").stdout)["rules"]


class TriggerTest(unittest.TestCase):
    quick = True

    def setUp(self):
        self.col = Collector(expire=5)
        self.tmp = tempfile.mkdtemp(prefix="swtrig-")
        self.log = os.path.join(self.tmp, "agent.log")

    def tearDown(self):
        self.col.close()

    def start(self, *args):
        p = self.col.start([prog("trigger_target")] + list(args), STACKWATCH_LOG=self.log)
        main = p.stdout.readline().split()
        self.assertEqual(main[:2], ["main", "tid"])
        return p, int(main[2])

    def agent_log(self):
        try:
            with open(self.log) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def test_named_frame_logs_signals_and_count(self):
        p, main_tid = self.start()
        self.col.wait_state(p.pid, "connected")
        r = self.col.ctl("trigger", "add", "--match", "^trigger_site$", "--signal", "USR1",
                         "--count", "3")
        self.assertIn("--match '^trigger_site$'", r.stdout)
        wait_until(lambda: len(re.findall(r"malloc @ ", self.agent_log())) >= 3,
                   what="three firings")
        # Twenty more allocations from the stack: still exactly three.
        wait_lines(p, r"^alloc ", 20)
        rc, out, err = finish(p)
        out = p.seen["stdout"] + out
        self.assertEqual(rc, 0)
        allocs = dict(re.findall(r"alloc (0x[0-9a-f]+) tid (\d+)", out))
        freed = set(re.findall(r"freed (0x[0-9a-f]+)", out))
        log = self.agent_log()
        fired = re.findall(r"stackwatch\[%d\]: malloc @ (0x[0-9a-f]+) for (\d+)" % p.pid, log)
        self.assertEqual(len(fired), 3, log)
        for ptr, size in fired:
            self.assertIn(ptr, allocs)               # a pointer the program got
            self.assertIn(int(size), range(1000, 1007))
        worker_tid = int(allocs[fired[0][0]])
        self.assertNotEqual(worker_tid, main_tid)
        sig = re.search(r"signals (\d+) tids(.*)", out)
        self.assertEqual(int(sig.group(1)), 3)
        self.assertEqual([int(t) for t in sig.group(2).split()], [worker_tid] * 3)
        # Every block is freed some 50 ms later: each fired one gets its
        # "free @" line, after its "malloc @", and nothing else does.
        logged = re.findall(r"(malloc|free) @ (0x[0-9a-f]+)", log)
        frees = [ptr for kind, ptr in logged if kind == "free"]
        self.assertEqual(sorted(frees), sorted(ptr for ptr, _ in fired))
        for ptr in frees:
            self.assertLess(logged.index(("malloc", ptr)), logged.index(("free", ptr)))
            self.assertIn(ptr, freed)
        rl = rules(self.col)
        self.assertEqual((rl[0]["fired"], rl[0]["armed"]), (3, 1))
        self.assertEqual(rl[0]["signal"], "SIGUSR1")
        # The agent's own count arrives with its final Stats.
        c = self.col.wait_state(p.pid, "exited")
        self.assertEqual((c["firings"], c["notes_dropped"]), (3, 0))

    def test_frame_index_pins_the_match(self):
        p, _ = self.start()
        self.col.wait_state(p.pid, "connected")
        self.col.ctl("trigger", "add", "--match", "^worker$", "--frame", "0")
        self.col.ctl("trigger", "add", "--match", "^worker$", "--frame", "1", "--count", "2")
        wait_until(lambda: [r["fired"] for r in rules(self.col)] == [0, 2],
                   what="only the --frame 1 rule to fire")
        self.assertEqual(rules(self.col)[0]["armed"], 0)
        self.col.ctl("trigger", "rm", "2")
        self.assertEqual([r["id"] for r in rules(self.col)], [1])
        self.assertNotEqual(self.col.ctl("trigger", "rm", "7", check=False).returncode, 0)
        finish(p)

    def test_no_handler_is_not_killed(self):
        p, _ = self.start("nohandler")
        self.col.wait_state(p.pid, "connected")
        self.col.ctl("trigger", "add", "--match", "trigger_site", "--signal", "SIGUSR1",
                     "--count", "2")
        wait_until(lambda: len(re.findall(r"malloc @ ", self.agent_log())) >= 2,
                   what="two firings")
        # It allocates on after the firings: the signal did not kill it.
        wait_lines(p, r"^alloc ", 5)
        self.assertIsNone(p.poll(), "the process was killed")
        rc, out, _ = finish(p)
        self.assertEqual(rc, 0)
        self.assertIn("signals 0", out)
        log = self.agent_log()
        self.assertEqual(log.count("not raising signal 10"), 1, log)

    def test_bad_rules_are_refused(self):
        for args, msg in ((["--match", "("], "regex"),
                          (["--stack", "abc"], "--pid"),
                          ([], "needs --match")):
            r = self.col.ctl("trigger", "add", *args, check=False)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(msg, r.stderr)
        r = self.col.ctl("trigger", "add", "--match", "x", "--signal", "KILL", check=False)
        self.assertEqual(r.returncode, 2)


class OnLeakTest(unittest.TestCase):
    quick = False

    def test_signals_the_leaking_process_only(self):
        col = Collector(expire=0.4, extra=["--on-leak", "USR1"])
        try:
            leaker = col.start([prog("trigger_target"), "leakonly"])
            bare = col.start([prog("trigger_target"), "leakonly", "nohandler"])
            # Not a client at all (no agent): collectord must never signal it.
            quiet = subprocess.Popen([prog("trigger_target"), "leakonly"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=col.env)
            for p in (leaker, quiet, bare):
                p.stdout.readline()
            wait_until(lambda: "signalled pid %d" % leaker.pid in col.read_log(),
                       what="the leaking process to be signalled")
            wait_until(lambda: "not signalling pid %d" % bare.pid in col.read_log(),
                       what="the process without handler to be spared")
            wait_lines(bare, r"^alloc ", 10)  # it runs on after it was spared
            self.assertIsNone(bare.poll(), "the process without a handler was killed")
            _, out, _ = finish(leaker)
            self.assertGreaterEqual(int(re.search(r"signals (\d+)", out).group(1)), 1)
            _, out, _ = finish(quiet)
            self.assertIn("signals 0", out)
            rc, out, _ = finish(bare)
            self.assertEqual(rc, 0)
        finally:
            col.close()

    def test_lying_client_cannot_redirect_signals(self):
        col = Collector(expire=0.3, extra=["--on-leak", "USR1"])
        victim = subprocess.Popen(["/usr/bin/python3", "-c",
                                   "import signal,sys\n"
                                   "n=[]\n"
                                   "signal.signal(signal.SIGUSR1, lambda *a: n.append(1))\n"
                                   "print('up', flush=True)\n"
                                   "sys.stdin.read()\n"
                                   "print('signals', len(n))\n"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        got = []
        old = signal.signal(signal.SIGUSR1, lambda *a: got.append(1))
        try:
            self.assertEqual(victim.stdout.readline().strip(), "up")
            s = sw.raw_connect(os.path.join(col.dir, "agent.sock"))
            now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            old_ts = now - 5 * 10**9  # already past the expire time
            s.sendall(hello(pid=victim.pid, instance=77) + stackdefs(1, 0xabcdef, [0x1234]) +
                      events(old_ts, [(0, 0x5000, old_ts, 64, 1)]))
            wait_until(lambda: "signalled pid %d" % os.getpid() in col.read_log() or
                       "not signalling pid %d" % os.getpid() in col.read_log(),
                       what="collectord to act on the leak")
            wait_until(lambda: got, timeout=5, what="the signal to reach the real peer")
            s.close()
            victim.stdin.close()
            self.assertEqual(victim.stdout.read().strip(), "signals 0")
            victim.wait(5)
            self.assertNotIn("pid %d" % victim.pid, col.read_log())
        finally:
            signal.signal(signal.SIGUSR1, old)
            if victim.poll() is None:
                victim.kill()
            col.close()


if __name__ == "__main__":
    unittest.main()
