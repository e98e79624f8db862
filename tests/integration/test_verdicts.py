"""Verdicts that hold: after the process ended (its teardown frees everything),
across pauses of a bursty leak, since a mark after a clean exit, and for a
short run (never 'transient' once something expired)."""

import os
import re
import time
import unittest

from swtest import ROOT, Collector, finish, markers, prog, stacks_with, wait_until

PY = "/usr/bin/python3"


def py_marker(name, tag="leak"):
    with open(os.path.join(ROOT, "tests", "py", name)) as f:
        for i, line in enumerate(f, 1):
            if "@PY %s" % tag in line:
                return i
    raise AssertionError("no @PY %s in %s" % (tag, name))


def blamed(stack, fname):
    """(function, line) of the innermost frame in fname of each blamed traceback."""
    out = set()
    for frames, st in zip(stack.get("python") or [], stack.get("python_stats") or []):
        if not st["blamed"]:
            continue
        for f in frames:
            if f["file"].endswith(fname):
                out.add((f["function"], f["line"]))
                break
    return out


class AfterExitTest(unittest.TestCase):
    quick = False

    def test_numpy_leak_keeps_its_verdict_after_exit(self):
        """Interpreter finalization frees every array: the report after exit
        still leads with the numpy stack, class leak, its Python line."""
        line = py_marker("numpy_exit_leak.py")
        col = Collector(expire=0.3)
        try:
            r = col.run([PY, os.path.join(ROOT, "tests", "py", "numpy_exit_leak.py"), "300"],
                        timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("kept 300", r.stdout)
            # Nothing goes to the program's terminal: no arming chatter.
            self.assertNotIn("stacks armed", r.stderr)
            pid = col.clients()[0]["pid"]
            c = col.wait_state(pid, "exited")
            self.assertEqual(c["end_reason"], "python finalizing")
            rep = col.leaks("--pid", str(pid), "--top", "5")
            self.assertTrue(rep["stacks"], rep)
            # Ranked first (text leads with rank; JSON keeps may-leak order):
            text = col.ctl("query", "leaks", "--pid", str(pid), "--top", "1").stdout
            top_id = re.search(r"CallStack\[([0-9a-f]+)\]", text).group(1)
            top = [s for s in rep["stacks"] if s["id"] == top_id][0]
            self.assertEqual(top["class"], "leak", top)
            self.assertIn(("step", line), blamed(top, "numpy_exit_leak.py"), top["python"])
            # Most of what it kept is still counted as leaked at its end: the
            # finalizer's frees are not evictions.
            self.assertEqual(top["free_expired"]["count"], 0)
            self.assertGreaterEqual(top["exit_live"]["count"], 250)
            self.assertIn("_multiarray_umath", top["frames"][0]["module"] or "")
            self.assertIn("python finalizing", text)
        finally:
            col.close()

    def test_c_atexit_frees_are_teardown(self):
        """A C leak freed by an atexit handler and a destructor stays a leak."""
        m = markers("short_leak.c")
        col = Collector(expire=0.3)
        try:
            r = col.run([prog("short_leak"), "200"])
            self.assertEqual(r.returncode, 0, r.stderr)
            pid = col.clients()[0]["pid"]
            c = col.wait_state(pid, "exited")
            self.assertEqual(c["end_reason"], "main returned")
            rep = col.leaks("--pid", str(pid))
            st = stacks_with(rep, "keep_block", "short_leak.c", m["short"])
            self.assertEqual(len(st), 1, rep)
            s = st[0]
            self.assertEqual(s["alloc"]["count"], 200)
            self.assertEqual(s["free"]["count"], 0)
            self.assertEqual(s["exit_live"]["count"], 200)
            self.assertGreater(s["may_leak"]["count"], 0)
            # A run of about a second with blocks expired: never transient,
            # and the teardown's frees make it neither a cache nor freed.
            self.assertEqual(s["class"], "leak", s)
            self.assertEqual(s["free_expired"]["count"], 0)
            churn = stacks_with(col.leaks("--pid", str(pid), "--all"), "churn", "short_leak.c",
                                m["churn"])
            self.assertEqual(churn[0]["class"], "transient")
            self.assertEqual(churn[0]["exit_live"]["count"], 0)
        finally:
            col.close()

    def test_exit_call_begins_the_end(self):
        """exit() called by the program begins the end; _exit() says nothing
        (lost, as before)."""
        col = Collector(expire=0.3)
        try:
            e = col.run([PY, "-c", "import ctypes; ctypes.CDLL(None).exit(3)"])
            self.assertEqual(e.returncode, 3, e.stderr)
            c = col.wait_state(col.clients()[0]["pid"], "exited")
            self.assertEqual(c["end_reason"], "exit")
            p = col.run([PY, "-c", "import os; os._exit(0)"])
            self.assertEqual(p.returncode, 0)
            other = [x for x in col.clients() if x["pid"] != c["pid"]]
            lost = col.wait_state(other[0]["pid"], "lost")
            self.assertIsNone(lost["end_reason"])
        finally:
            col.close()

    def test_since_mark_after_clean_exit(self):
        m = markers("short_leak.c")
        col = Collector(expire=0.3)
        try:
            p = col.start([prog("short_leak"), "200", "mark"])
            self.assertEqual(p.stdout.readline().strip(), "mark?")
            col.ctl("mark", "--pid", str(p.pid))
            p.stdin.write("go\n")
            p.stdin.flush()
            rc, out, err = finish(p)
            self.assertEqual(rc, 0, err)
            col.wait_state(p.pid, "exited")
            rep = col.leaks("--pid", str(p.pid), "--since-mark")
            st = stacks_with(rep, "keep_block", "short_leak.c", m["short"])
            self.assertEqual(len(st), 1, rep)
            s = st[0]
            # The 100 blocks kept after the mark, live at the end.
            self.assertEqual(s["alloc"]["count"], 100)
            self.assertEqual(s["exit_live"]["count"], 100)
            self.assertGreater(s["may_leak"]["count"], 0)
            self.assertLessEqual(s["may_leak"]["count"], 100)
        finally:
            col.close()


class PausesTest(unittest.TestCase):
    quick = False

    def test_bursty_leak_stays_a_leak(self):
        """Bursts of leaking with pauses between them: once a leak, always a
        leak (or growing), through the pauses and after the end."""
        m = markers("bursty.c")
        expire = 0.3
        col = Collector(expire=expire)
        try:
            p = col.start([prog("bursty")])
            self.assertEqual(p.stdout.readline().strip(), "ready")
            seen = []

            def cls():
                st = stacks_with(col.leaks("--pid", str(p.pid), "--all"), "burst_leak",
                                 "bursty.c", m["burst"])
                if st:
                    seen.append((round(time.monotonic(), 2), st[0]["class"],
                                 st[0]["may_leak"]["count"]))
                return st[0] if st else None

            def say(cmd, ack):
                p.stdin.write(cmd + "\n")
                p.stdin.flush()
                self.assertEqual(p.stdout.readline().strip(), ack)

            leak_seen = False
            for burst in range(3):
                say("b", "burst")
                before = (cls() or {"may_leak": {"count": 0}})["may_leak"]["count"]
                # A burst long enough to grow over several expire windows.
                wait_until(lambda: (cls() or {"may_leak": {"count": 0}})["may_leak"]["count"]
                           >= before + int(5 * expire / 0.01), timeout=60,
                           what="burst %d to grow" % burst)
                say("p", "pause")
                # Pause for six expire windows, checking all the while.
                until = time.monotonic() + 6 * expire
                while time.monotonic() < until:
                    s = cls()
                    if s["class"] == "leak":
                        leak_seen = True
                    if leak_seen:
                        self.assertIn(s["class"], ("leak", "growing"), seen[-6:])
                    time.sleep(0.05)
                self.assertTrue(leak_seen, seen[-6:])
            rc, out, err = finish(p)
            self.assertEqual(rc, 0, err)
            col.wait_state(p.pid, "exited")
            s = cls()
            self.assertEqual(s["class"], "leak", seen[-6:])
            self.assertGreaterEqual(s["confidence"], 0.8)
            self.assertGreater(s["growth_bytes_per_min"], 0)
        finally:
            col.close()


if __name__ == "__main__":
    unittest.main()
