"""Verdicts that hold: after the process ended (its teardown frees everything),
across pauses of a bursty leak, since a mark after a clean exit, and for a
short run (never 'transient' once something expired)."""

import json
import os
import re
import subprocess
import time
import unittest

import swtest
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


class EarlyTest(unittest.TestCase):
    quick = True

    def test_leak_in_a_library_constructor(self):
        """A library's constructor runs before the agent's (ld.so orders it
        first): its allocations start the agent and are traced."""
        m = markers("libctorleak.c")
        col = Collector(expire=0.3)
        try:
            p = col.start([prog("ctor_main")])
            self.assertEqual(p.stdout.readline().strip(), "ready 1")

            def found():
                return stacks_with(col.leaks("--pid", str(p.pid)), "ctor_table",
                                   "libctorleak.c", m["ctor"])
            s = wait_until(found, what="the constructor's leak")[0]
            self.assertEqual(s["alloc"]["count"], 10)
            self.assertEqual(s["may_leak"]["count"], 10)
            self.assertEqual(s["may_leak"]["bytes"], 7770)
            rc, _, err = finish(p)
            self.assertEqual(rc, 0, err)
        finally:
            col.close()


class WalkthroughTest(unittest.TestCase):
    """The Python walk-through of docs/python.md, as pasted into a shell: the script
    runs in the background of sh (its stdin is not a terminal it could stop
    on), queried while it runs and after it ended."""
    quick = False

    def test_readme_python_walkthrough(self):
        readme = open(os.path.join(ROOT, "docs", "python.md")).read()
        block = re.search(r"# Python: the line behind.*?```sh\n(.*?)```", readme, re.S).group(1)
        self.assertIn("/usr/bin/python3 tests/py/mask_leak.py --seconds", block)
        line = py_marker("mask_leak.py")
        col = Collector(expire=1)
        try:
            # The block's commands with a shorter run; collectord is ours.
            script = "\n".join(l for l in block.splitlines()
                                if not l.startswith("collectord"))
            script = re.sub(r"--seconds \d+", "--seconds 6", script)
            script = re.sub(r"sleep \d+", "sleep 4", script)
            script = script.replace("$PWD/build/libstackagent.so", swtest.agent_path())
            env = dict(col.env, PATH=swtest.BUILD + ":" + os.environ["PATH"])
            r = subprocess.run(["sh", "-c", script], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            # Two reports: while it ran and after it ended, same stack, class, line.
            ids = re.findall(r"CallStack\[([0-9a-f]+)\].*class=(\w+)", r.stdout)
            self.assertEqual(len(ids), 2, r.stdout)
            self.assertEqual(ids[0], ids[1], r.stdout)
            self.assertEqual(ids[1][1], "leak")
            # The line in the merged stack of both, where the doc shows it.
            self.assertEqual(len(re.findall(r"^    \[Python\] +\S*mask_leak\.py:%d leaky$" % line,
                                            r.stdout, re.M)), 2, r.stdout)
            self.assertIn("[Python]            /work/main/tests/py/mask_leak.py:%d leaky" % line,
                          readme)
            self.assertIn("exited", r.stdout)
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


def frame_groups(stack):
    """[(addr, ((function, file, line, offset, inline), ...))]: the frames of one
    return address (its inline frames, then the physical one) as one group.
    When the report cut allocation wrappers off the top ("skipped"), the
    first group may have lost its innermost inline frames (PyObject_Malloc
    inlined into PyUnicode_New): it is left out, the cut is not a symbol."""
    out, cur = [], []
    for f in stack["frames"]:
        cur.append((f["function"], f["file"], f["line"], f["offset"], f["inline"]))
        if not f["inline"]:
            out.append((f["addr"], tuple(cur)))
            cur = []
    if cur:
        out.append((stack["frames"][-1]["addr"], tuple(cur)))
    return out[1:] if stack.get("skipped") else out


def inconsistent_addresses(report, pid):
    """{addr: set of frame texts} for addresses shown differently in two stacks."""
    seen = {}
    for s in report["stacks"]:
        if s["pid"] != pid:
            continue
        for addr, text in frame_groups(s):
            seen.setdefault(addr, set()).add(text)
    return {a: t for a, t in seen.items() if len(t) > 1}


# A numpy leak written at test time (not one of the repo's scripts): which
# numpy call leaks, and where, is decided here.
GEN_SCRIPT = """
import sys, time
import numpy as np
store = []
def churn(i):
    return float(np.sqrt(np.arange(500.0) + i).sum())
def hoard(i):
    a = np.arange(%(n)d, dtype=np.float64) * i
    store.append(np.%(fn)s)  # LEAK
print("ready", flush=True)
i = 0
while not sys.stdin.closed:
    churn(i)
    hoard(i)
    i += 1
    time.sleep(0.01)
    import select
    if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.read(1):
        break
print("kept", len(store), flush=True)
"""


class SymbolsAndTriggersTest(unittest.TestCase):
    quick = False

    def gen_script(self, tmp, fn, n):
        path = os.path.join(tmp, "gen_leak_%s.py" % fn.split("(")[0])
        with open(path, "w") as f:
            f.write(GEN_SCRIPT % {"fn": fn, "n": n})
        line = [i for i, l in enumerate(open(path), 1) if "# LEAK" in l][0]
        return path, line

    def test_same_address_same_frame_in_every_stack(self):
        """One address of one process reads the same in every stack, whether
        its stack was symbolized on arrival (a rule exists from the start),
        when it began to expire, or at query time."""
        col = Collector(expire=0.3)
        try:
            col.ctl("trigger", "add", "--module", "_multiarray_umath", "--frame", "0",
                    "--leaking")
            path, _ = self.gen_script(col.tmp, "concatenate([a, a])", 3000)
            p = col.start([PY, path])
            self.assertEqual(p.stdout.readline().strip(), "ready")
            wait_until(lambda: any(s["class"] == "leak" for s in
                                   col.leaks("--pid", str(p.pid))["stacks"]),
                       timeout=60, what="a leak")
            rep = col.leaks("--pid", str(p.pid), "--all")
            self.assertGreater(len(rep["stacks"]), 500)  # the interpreter's and numpy's
            bad = inconsistent_addresses(rep, p.pid)
            self.assertEqual(bad, {}, list(bad.items())[:3])
            # Named where a symbol covers the address: the interpreter's loop.
            names = {f["function"] for s in rep["stacks"] for f in s["frames"]}
            self.assertIn("_PyEval_EvalFrameDefault", names)
            finish(p)
        finally:
            col.close()

    def test_same_frames_when_out_of_file_descriptors(self):
        """collectord with few fds and many modules (four numpy processes):
        modules are closed and reopened within its budget, never given up
        on, so an address reads the same in every stack (before: a module
        that once failed to open stayed nameless, ~125 addresses per pid
        differed) and stackctl still gets in."""
        col = Collector(expire=0.3, nofile=48)
        procs = []
        try:
            leak = col.start([PY, os.path.join(ROOT, "tests", "py", "mask_leak.py")])
            self.assertEqual(leak.stdout.readline().strip(), "ready")
            for _ in range(8):
                procs.append(col.start([PY, "-c", "import sys, numpy; print('ready', flush=True);"
                                        " sys.stdin.read()"]))
            for p in procs:
                self.assertEqual(p.stdout.readline().strip(), "ready")
            wait_until(lambda: any(s["class"] == "leak" for s in
                                   col.leaks("--pid", str(leak.pid))["stacks"]),
                       timeout=60, what="a leak")

            def query_all():
                # At the fd limit collectord accepts and closes a connection
                # at once (the peer sees EOF, or EPIPE writing its request):
                # seen once on a machine with twice its CPUs' work. It gets
                # in once an fd is free again.
                try:
                    return col.leaks("--all")
                except AssertionError as e:
                    if "Broken pipe" in str(e) or "Connection reset" in str(e):
                        return None
                    raise
            rep = wait_until(query_all, timeout=60, what="stackctl to get in")
            for p in [leak] + procs:
                bad = inconsistent_addresses(rep, p.pid)
                self.assertEqual(bad, {}, list(bad.items())[:2])
                names = {f["function"] for s in rep["stacks"] if s["pid"] == p.pid
                         for f in s["frames"]}
                self.assertIn("_PyEval_EvalFrameDefault", names)
            finish(leak)
        finally:
            for p in procs:
                finish(p)
            col.close()

    def test_module_trigger_fires_on_a_numpy_leak(self):
        """The README's rule by module, on a numpy leak the repo never saw:
        it fires on the leaking stack and names the leaking Python line."""
        col = Collector(expire=0.3)
        try:
            # Two rules, added before and after the start: both must work.
            col.ctl("trigger", "add", "--module", "_multiarray_umath", "--frame", "0",
                    "--leaking", "--count", "4")
            path, line = self.gen_script(col.tmp, "copy(a[::2])", 4000)
            p = col.start([PY, path])
            self.assertEqual(p.stdout.readline().strip(), "ready")

            def fired():
                rules = json.loads(col.ctl("trigger", "list", "--json").stdout)["rules"]
                return rules if rules[0]["fired"] >= 4 else None
            rules = wait_until(fired, timeout=60, what="the rule to fire")
            # Leaking stacks only: a handful armed, not the start-up ones.
            self.assertLess(rules[0]["armed"], 20, rules)
            rc, out, err = finish(p)
            self.assertEqual(rc, 0, err)
            # Its log lines name the leaking block size (2000 doubles).
            self.assertRegex(err, r"malloc @ 0x[0-9a-f]+ for 16000")
            rep = col.leaks("--pid", str(p.pid))
            hit = [s for s in rep["stacks"] if ("hoard", line) in blamed(s, os.path.basename(path))]
            self.assertTrue(hit, [(s["id"], s["python"]) for s in rep["stacks"][:3]])
            self.assertIn("_multiarray_umath", hit[0]["frames"][0]["module"])
        finally:
            col.close()

    def test_readme_rule_added_while_it_runs(self):
        """The README's plain rule, added to a running numpy process with
        thousands of stacks: the leaking stack is armed (leaking stacks are
        symbolized and evaluated first) and fires with its Python line."""
        col = Collector(expire=0.3)
        try:
            path, line = self.gen_script(col.tmp, "hstack([a, a[:100]])", 2000)
            p = col.start([PY, path])
            self.assertEqual(p.stdout.readline().strip(), "ready")
            wait_until(lambda: any(s["class"] == "leak" for s in
                                   col.leaks("--pid", str(p.pid))["stacks"]),
                       timeout=60, what="a leak")
            col.ctl("trigger", "add", "--module", "_multiarray_umath", "--frame", "0")
            size = 8 * 2100

            def leak_fired():
                rep = col.leaks("--pid", str(p.pid))
                return [s for s in rep["stacks"]
                        if ("hoard", line) in blamed(s, os.path.basename(path))
                        and any(st["captures"] for st in s["python_stats"])]
            wait_until(leak_fired, timeout=60, what="the leaking stack to fire")
            rc, out, err = finish(p)
            self.assertEqual(rc, 0, err)
            self.assertRegex(err, r"malloc @ 0x[0-9a-f]+ for %d" % size)
        finally:
            col.close()


if __name__ == "__main__":
    unittest.main()
