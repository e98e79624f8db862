"""The Python line behind a leaking C stack, with no code change: numpy's
boolean-mask subscript (Debian's numpy is stripped), ctypes, two lines
sharing one C stack, a worker thread, a --module trigger, and the signal
route of python/stackwatch.py."""

import os
import re
import unittest

import swtest as sw
from swtest import ROOT, Collector, finish, wait_until
from test_html import data_block

PY = "/usr/bin/python3"


def py_markers(name):
    """{name: line} of the '@PY name' comments of tests/py/NAME."""
    return sw.markers(script(name), "PY")


def script(name):
    return os.path.join(ROOT, "tests", "py", name)


def py_stacks(report, pid):
    """[(stack, [(traceback frames, stats)])] for stacks with Python tracebacks."""
    out = []
    for s in report["stacks"]:
        if s["pid"] == pid and s["python"]:
            out.append((s, list(zip(s["python"], s["python_stats"]))))
    return out


def stack_text(text, sid):
    """The lines of CallStack[sid] in a text report."""
    m = re.search(r"^CallStack\[%s\].*?(?=^CallStack\[|\Z)" % sid, text, re.M | re.S)
    return m.group(0).splitlines() if m else []


def line_index(lines, pattern, last=False):
    """Index of the first (last) line matching pattern; -1 when none."""
    hits = [i for i, l in enumerate(lines) if re.search(pattern, l)]
    return (hits[-1] if last else hits[0]) if hits else -1


def blamed_lines(report, pid, fname):
    """{(function, line)} of innermost frames in fname of blamed tracebacks."""
    got = set()
    for _, tbs in py_stacks(report, pid):
        for frames, st in tbs:
            if st["blamed"] and frames and frames[0]["file"].endswith(fname):
                got.add((frames[0]["function"], frames[0]["line"]))
    return got


class PythonLineTest(unittest.TestCase):
    quick = False

    def setUp(self):
        self.col = Collector(expire=0.5)

    def tearDown(self):
        self.col.close()

    def shared_stack(self, report, pid):
        """The C stack the leaking line allocates on (numpy's data buffers)."""
        for s, tbs in py_stacks(report, pid):
            if any(fr and fr[0]["function"] == "leaky" for fr, _ in tbs):
                return s, tbs
        return None

    def test_no_command_blames_the_leaking_line_only(self):
        m = py_markers("mask_leak.py")
        p = self.col.start([PY, script("mask_leak.py")])
        self.assertEqual(p.stdout.readline().strip(), "ready")

        def found():
            r = self.col.leaks("--pid", str(p.pid))
            return r if ("leaky", m["leak"]) in blamed_lines(r, p.pid, "mask_leak.py") else None

        # Both lines of the shared stack captured (harmless ones are 20:1).
        def both():
            r = found()
            if not r:
                return None
            st = self.shared_stack(r, p.pid)
            return r if st and len(st[1]) >= 2 else None

        r = wait_until(both, timeout=30, what="the leaking Python line")
        # The line is on the C stack numpy allocates the data from: a stripped
        # module, shown as module+offset, not misnamed.
        s, tbs = self.shared_stack(r, p.pid)
        self.assertGreater(s["may_leak"]["count"], 0)
        npf = [f for f in s["frames"] if "_multiarray_umath" in (f["module"] or "")]
        self.assertTrue(npf)
        for f in npf:
            self.assertIsNotNone(f["module_offset"])
            self.assertIsNone(f["function"])
        # On that C stack both lines are captured; only the leaking one is blamed.
        lines = {(fr[0]["function"], fr[0]["line"], st["blamed"]) for fr, st in tbs}
        self.assertIn(("leaky", m["leak"], True), lines)
        self.assertNotIn(("harmless", m["harmless"], True), lines)
        blamed = [fr for fr, st in tbs if st["blamed"]]
        self.assertEqual(len(blamed), 1)
        # Innermost first: leaky, then its caller main.
        self.assertEqual([f["function"] for f in blamed[0][:3]], ["leaky", "main", "<module>"])
        # The text report: one merged stack, innermost first: numpy's
        # frames, the Python lines in place of the interpreter, one line for
        # the interpreter's own frames, then libc's start.
        text = self.col.ctl("query", "leaks", "--pid", str(p.pid)).stdout
        lines = stack_text(text, s["id"])
        self.assertTrue(lines, text)
        blk = "\n".join(lines)
        np_last = line_index(lines, r"_multiarray_umath", last=True)
        py0 = line_index(lines, r"^    \[Python\] +%s:%d leaky$" % (re.escape(script("mask_leak.py")),
                                                                  m["leak"]))
        py1 = line_index(lines, r"^    \[Python\] +\S+mask_leak\.py:\d+ main$")
        fold = line_index(lines, r"^    … \d+ CPython frames$")
        libc = line_index(lines, r"__libc_start_main\(\)")
        self.assertTrue(0 <= np_last < py0 < py1 < fold < libc, blk)
        self.assertGreaterEqual(int(re.search(r"… (\d+) CPython", lines[fold]).group(1)), 5)
        self.assertNotIn("_PyEval_EvalFrameDefault", blk)
        self.assertNotIn("Py_BytesMain", blk)
        self.assertRegex(blk, r"\n    Python stack above: \d+ capture\(s\).*<- blamed")
        # --all-frames: every frame, the Python lines before the eval loop.
        full = stack_text(self.col.ctl("query", "leaks", "--pid", str(p.pid),
                                       "--all-frames").stdout, s["id"])
        ev = line_index(full, r"_PyEval_EvalFrameDefault\(\)")
        self.assertNotIn("CPython frames", "\n".join(full))
        self.assertTrue(0 <= line_index(full, r"\[Python\] .*:%d leaky$" % m["leak"]) < ev <
                        line_index(full, r"Py_BytesMain\(\)"), "\n".join(full))
        # JSON keeps every frame, and says which are the interpreter's.
        self.assertIn("_PyEval_EvalFrameDefault", [f["function"] for f in s["frames"]])
        self.assertTrue(s["frames"][s["python_at"]]["interpreter"])
        # The name the stack goes by: numpy's module+offset, then the line
        # (the chart's legend and the top card of the HTML report).
        name = "_multiarray_umath+%s ← mask_leak.py:%d leaky" % (s["frames"][0]["module_offset"],
                                                                m["leak"])
        html = os.path.join(self.col.tmp, "r.html")
        self.col.ctl("report", "--html", html, "--pid", str(p.pid))
        with open(html) as f:
            page = f.read()
        labels = {x["id"]: x["label"] for x in data_block(page)["stacks"]}
        self.assertEqual(labels.get(s["id"]), name, labels)
        self.assertNotIn("_PyEval_EvalFrameDefault", "".join(labels.values()))
        rc, out, err = finish(p)
        self.assertEqual(rc, 0)
        self.assertNotIn("malloc @", err)  # automatic captures are silent

    def test_worker_thread_line(self):
        m = py_markers("mask_leak.py")
        p = self.col.start([PY, script("mask_leak.py"), "thread"])
        self.assertEqual(p.stdout.readline().strip(), "ready")

        def found():
            r = self.col.leaks("--pid", str(p.pid))
            return r if ("leaky", m["leak"]) in blamed_lines(r, p.pid, "mask_leak.py") else None

        r = wait_until(found, timeout=30, what="the worker's leaking line")
        for _, tbs in py_stacks(r, p.pid):
            for frames, st in tbs:
                if st["blamed"] and frames[0]["function"] == "leaky":
                    names = [f["function"] for f in frames]
                    self.assertEqual(names[1], "work")
                    self.assertIn("Thread.run", names)  # qualified names
                    self.assertNotIn("main", names)
        finish(p)

    def test_module_trigger_on_stripped_numpy(self):
        m = py_markers("mask_leak.py")
        p = self.col.start([PY, script("mask_leak.py")])
        self.assertEqual(p.stdout.readline().strip(), "ready")
        self.col.ctl("trigger", "add", "--module", "_multiarray_umath", "--frame", "0",
                     "--count", "200")

        def found():
            r = self.col.leaks("--pid", str(p.pid))
            return r if ("leaky", m["leak"]) in blamed_lines(r, p.pid, "mask_leak.py") else None

        wait_until(found, timeout=30, what="the trigger's captures to find the line")
        rc, out, err = finish(p)
        self.assertEqual(rc, 0)
        self.assertRegex(err, r"malloc @ 0x[0-9a-f]+ for 53336")

    def test_ctypes_leak_line(self):
        m = py_markers("ctypes_leak.py")
        p = self.col.start([PY, script("ctypes_leak.py")])
        self.assertEqual(p.stdout.readline().strip(), "ready")

        def found():
            r = self.col.leaks("--pid", str(p.pid))
            return r if ("grab", m["ctypes_leak"]) in blamed_lines(r, p.pid,
                                                                   "ctypes_leak.py") else None

        r = wait_until(found, timeout=30, what="the ctypes leak's line")
        for s, tbs in py_stacks(r, p.pid):
            if any(fr[0]["function"] == "grab" for fr, _ in tbs):
                self.assertIn("libffi", s["frames"][0]["module"])
                self.assertGreaterEqual(s["may_leak"]["bytes"], 7777)
        self.assertNotIn(("churn", m["ctypes_noise"]), blamed_lines(r, p.pid, "ctypes_leak.py"))
        finish(p)

    def test_signal_route_helper(self):
        m = py_markers("signal_route.py")
        env = {"PYTHONPATH": os.path.join(ROOT, "python")}
        p = self.col.start([PY, script("signal_route.py")], **env)
        self.assertEqual(p.stdout.readline().strip(), "installed True")
        self.col.wait_state(p.pid, "connected")
        self.col.ctl("trigger", "add", "--module", "_multiarray_umath", "--frame", "0",
                     "--signal", "USR1", "--count", "2")

        def texts():
            r = self.col.leaks("--pid", str(p.pid), "--all")
            return [st["text"] for _, tbs in py_stacks(r, p.pid) for _, st in tbs if st["text"]]

        got = wait_until(texts, timeout=30, what="the handler's text in the report")
        self.assertIn("signal_route.py", got[0])
        # The hook's own capture has the allocating line; the handler ran
        # later, at an eval-breaker check, so it may show the next one.
        r = self.col.leaks("--pid", str(p.pid), "--all")
        hook = {(fr[0]["function"], fr[0]["line"]) for _, tbs in py_stacks(r, p.pid)
                for fr, _ in tbs if fr}
        self.assertIn(("<module>", m["route_leak"]), hook)
        rc, out, err = finish(p)
        self.assertEqual(rc, 0)
        self.assertIn("stackwatch: malloc @", out)
        self.assertIn("(MainThread)", out)
        self.assertIn('signal_route.py", line', out)

    def test_signal_without_handler_does_not_kill_python(self):
        log = os.path.join(self.col.tmp, "agent.log")
        p = self.col.start([PY, script("mask_leak.py")], STACKWATCH_LOG=log)
        self.assertEqual(p.stdout.readline().strip(), "ready")
        self.col.ctl("trigger", "add", "--module", "_multiarray_umath", "--signal", "USR1",
                     "--count", "3")

        def refused():
            with open(log) as f:
                return "not raising signal 10" in f.read()

        wait_until(lambda: os.path.exists(log) and refused(), timeout=30,
                   what="the agent to refuse the signal")
        # It runs on (allocates: events arrive) after the refusal.
        e0 = self.col.client(p.pid)["events"]
        wait_until(lambda: p.poll() is not None or self.col.client(p.pid)["events"] > e0 + 500,
                   what="the program to run on")
        self.assertIsNone(p.poll())
        rc, out, err = finish(p)
        self.assertEqual(rc, 0)



class PythonVersionTest(unittest.TestCase):
    quick = False

    def test_unknown_version_gets_one_message_and_is_traced(self):
        col = Collector(expire=0.5)
        try:
            r = col.run([sw.prog("fake_python")])
            self.assertEqual((r.returncode, r.stdout), (0, "ok\n"))
            lines = [l for l in r.stderr.splitlines() if "not supported for Python frames" in l]
            self.assertEqual(len(lines), 1, r.stderr)
            self.assertIn("CPython version 3.10.8 ", lines[0])
            c = wait_until(lambda: [c for c in col.clients() if c["exe"].endswith("fake_python")
                                    and c["state"] == "exited"], what="fake_python traced")[0]
            self.assertIsNone(c["python"])
            self.assertIn("not supported", c["python_status"])
            self.assertGreaterEqual(c["events"], 200)
        finally:
            col.close()


if __name__ == "__main__":
    unittest.main()
