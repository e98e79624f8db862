"""Processes whose last thread is not main returning (issue 17.2): main calls
pthread_exit, a thread-only SYS_exit, seccomp strict mode, a fork child whose
only thread returns. Under the agent each ends as it does without it: same
exit status, same output (stdio flushed where glibc's exit(0) flushes it), and
soon; before, the flusher thread kept every one of them alive for good."""

import os
import subprocess
import unittest

from swtest import Collector, prog, wait_until

CASES = [
    (["pexit"], 0, "ok\n"),
    (["pexit-worker"], 0, "ok\n"),
    (["rawexit", "7"], 7, "ok\n"),
    (["strict", "5"], 5, "strict\n"),
    (["forkpexit"], 0, "ok\nchild 0\n"),
]

# Generous: the process ends within the flusher's next round (10 ms) once
# its last thread is gone; a hang is what failed.
BOUND = 30


def run(args, env):
    try:
        r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           env=env, timeout=BOUND)
    except subprocess.TimeoutExpired:
        raise AssertionError("%s did not end within %d s" % (args, BOUND))
    return r.returncode, r.stdout


class LastThreadTest(unittest.TestCase):
    quick = True

    def test_bare_behaviour(self):
        """The programs themselves, without the agent (the reference)."""
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        for args, rc, out in CASES:
            self.assertEqual(run([prog("lastthread")] + args, env), (rc, out), args)

    def test_ends_as_without_agent_connected(self):
        col = Collector()
        try:
            env = col.agent_env()
            for args, rc, out in CASES:
                self.assertEqual(run([prog("lastthread")] + args, env), (rc, out), args)
            # Each said goodbye before it ended; wait for collectord to have read it.
            wait_until(lambda: len(col.clients()) == 6 and
                       all(c["state"] != "connected" for c in col.clients()),
                       what="every client to have ended")
            by = {}
            for c in col.clients():
                by.setdefault(tuple(c["argv"][1:]), []).append(c)
            for args, _, _ in CASES:
                cs = by.get(tuple(args), [])
                self.assertTrue(cs, (args, col.clients()))
                for c in cs:
                    if args == ["forkpexit"] and c["state"] == "lost":
                        continue  # the parent _exits from a thread: no goodbye, as before
                    self.assertEqual(c["state"], "exited", c)
                    self.assertEqual(c["end_reason"], "last thread exited", c)
                    self.assertGreaterEqual(c["total_allocs"], 1000, c)
            # Traced until it entered strict mode (1000 allocations and frees),
            # untraced after (100 more of each: the agent may make no system
            # call on that thread any more). A sanitizer's runtime may add an
            # allocation of its own at start-up, never freed.
            strict = by[("strict", "5")][0]
            self.assertEqual(strict["total_frees"], 1000, strict)
            self.assertIn(strict["total_allocs"], (1000, 1001), strict)
        finally:
            col.close()

    def test_ends_as_without_agent_no_collector(self):
        col = Collector()
        try:
            env = col.agent_env(STACKWATCH_DIR=os.path.join(col.tmp, "none"))
            for args, rc, out in CASES:
                self.assertEqual(run([prog("lastthread")] + args, env), (rc, out), args)
        finally:
            col.close()


if __name__ == "__main__":
    unittest.main()
