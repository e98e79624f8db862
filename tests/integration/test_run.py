"""stackctl run (issue 22): one command from program to leak report, with
the program's stdin, stdout, signals and exit status passed through; a
private collectord for the run (or the running one); --fail-on as a CI gate
(exit 23 on a planted leak, 0 on a clean program); children included; the
pytest plugin (-p stackwatch) failing only the test that leaks."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

import swtest as sw
from swtest import Collector, prog, stacks_with, wait_until

PY = "/usr/bin/python3"

# A ctypes malloc the program never frees, every 5 ms for ~1.5 s.
PY_LEAK = textwrap.dedent("""
    import ctypes, time
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    kept = []
    def py_leak_site():
        kept.append(libc.malloc(1000))
    for i in range(300):
        py_leak_site()
        time.sleep(0.005)
    print("leaked", len(kept))
""")

PY_CLEAN = textwrap.dedent("""
    import json, time
    for i in range(20):
        [json.dumps({"i": j}) for j in range(2000)]
        time.sleep(0.05)
    print("clean")
""")


def line_within(p, timeout=60):
    """The next line of p's stdout, or an AssertionError after timeout (not
    a hang: once, under two CPU hogs, a forwarded SIGTERM's Python handler
    never ran while the program sat in a read of stdin; see
    docs/RELIABILITY.md)."""
    import select
    if not select.select([p.stdout], [], [], timeout)[0]:
        p.kill()
        raise AssertionError("no line within %.0f s" % timeout)
    return p.stdout.readline()

# Prints ready, then waits for a signal or a line on stdin (echoed).
PY_WAIT = textwrap.dedent("""
    import signal, sys, os
    if sys.argv[1] == "handle":
        def on(sig, frame):
            print("got", sig, flush=True)
            sys.exit(7)
        signal.signal(signal.SIGTERM, on)
        signal.signal(signal.SIGINT, on)
    print("ready", os.getpid(), flush=True)
    line = sys.stdin.readline()
    print("echo", line.strip(), flush=True)
    sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
""")

# Leaks in a forked child (which reports its pid) and in the parent.
PY_FORK = textwrap.dedent("""
    import ctypes, os, time, sys
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    kept = []
    def child_leak_site():
        kept.append(libc.malloc(777))
    pid = os.fork()
    if pid == 0:
        for i in range(300):
            child_leak_site()
            time.sleep(0.005)
        sys.exit(0)  # a normal end: the agent's last events are flushed
    print("child", pid, flush=True)
    os.waitpid(pid, 0)
""")


def has_function(stack, name):
    return any((f.get("function") or "").startswith(name) for f in stack.get("frames") or [])


def python_lines(stack):
    return [fr.get("function") for py in stack.get("python") or []
            for fr in py.get("frames") or []]


class RunTest(unittest.TestCase):
    quick = False

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="swrun-")
        # Private collectords go to XDG_RUNTIME_DIR/stackwatch-run.XXXXXX.
        self.xdg = os.path.join(self.tmp, "xdg")
        os.mkdir(self.xdg, 0o700)
        self.env = dict(os.environ, XDG_RUNTIME_DIR=self.xdg,
                        STACKWATCH_AGENT=sw.agent_path())
        self.env.pop("STACKWATCH_DIR", None)
        self.env.pop("LD_PRELOAD", None)
        self.env.pop("DEBUGINFOD_URLS", None)
        self.procs = []

    def tearDown(self):
        # What a failed test left running: stackctl run (its private
        # collectord follows it: PR_SET_PDEATHSIG), then the program.
        for p in self.procs:
            if isinstance(p, int):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            elif p.poll() is None:
                p.kill()
                p.communicate()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def stackctl(self):
        return os.path.join(sw.BUILD, "stackctl")

    def script(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def run_cmd(self, args, prog_args, input="", timeout=120, pre=()):
        return subprocess.run([self.stackctl()] + list(pre) + ["run"] + list(args) + ["--"] +
                              list(prog_args), input=input, capture_output=True, text=True,
                              timeout=timeout, env=self.env)

    def run_json(self, args, prog_args, **kw):
        out = os.path.join(self.tmp, "report.json")
        r = self.run_cmd(["--json", "-o", out] + list(args), prog_args, **kw)
        report = None
        if os.path.exists(out):
            with open(out) as f:
                report = json.load(f)
            os.unlink(out)
        return r, report

    def assertPrivateGone(self):
        """The private collectord stopped and its directory is removed."""
        self.assertEqual(os.listdir(self.xdg), [])

    # ------------------------------------------------------------ C programs
    def test_c_leak_report_then_fail_on_exit_23(self):
        r, rep = self.run_json(["--expire", "0.3"], [prog("short_leak"), "300"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("a private collectord", r.stderr)
        leak = stacks_with(rep, "keep_block")
        self.assertTrue(leak, "keep_block not in the report: %s" % r.stderr[-2000:])
        self.assertEqual(leak[0]["class"], "leak")
        self.assertEqual([c["state"] for c in rep["clients"]], ["exited"])
        self.assertPrivateGone()
        # The HTML report, to a file.
        html = os.path.join(self.tmp, "r.html")
        r = self.run_cmd(["--expire", "0.3", "--html", html], [prog("short_leak"), "300"])
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertIn("stackctl: wrote %s" % html, r.stderr)
        with open(html) as f:
            page = f.read()
        self.assertTrue(page.lstrip().lower().startswith("<!doctype html"), page[:100])
        self.assertIn("keep_block", page)
        self.assertPrivateGone()

        # The CI gate: the same program with --fail-on leak exits 23 ...
        r = self.run_cmd(["--expire", "0.3", "--fail-on", "leak"], [prog("short_leak"), "300"])
        self.assertEqual(r.returncode, 23, r.stderr[-2000:])
        self.assertIn("--fail-on: leak found; exit 23", r.stderr)
        self.assertIn("keep_block", r.stderr)  # the text report on stderr
        self.assertPrivateGone()
        # ... and a clean program passes it (exit 0) ...
        r = self.run_cmd(["--expire", "0.3", "--fail-on", "leak,growing"],
                         [prog("short_leak"), "0"])
        self.assertEqual((r.returncode, r.stdout), (0, "kept 0\n"), r.stderr[-2000:])
        self.assertNotIn("--fail-on", r.stderr)
        # ... or keeps its own status, its output untouched (plain exits 7).
        r = self.run_cmd(["--expire", "0.3", "--fail-on", "leak,growing"], [prog("plain"), "x"])
        bare = subprocess.run([prog("plain"), "x"], capture_output=True, text=True, timeout=60)
        self.assertEqual(bare.returncode, 7)
        self.assertEqual((r.returncode, r.stdout), (7, bare.stdout), r.stderr[-2000:])
        self.assertNotIn("--fail-on", r.stderr)
        self.assertPrivateGone()

    def test_exit_status_passed_through(self):
        r = self.run_cmd([], ["sh", "-c", "exit 7"])
        self.assertEqual(r.returncode, 7, r.stderr)
        # The program's own failure wins over --fail-on (it says more).
        r = self.run_cmd(["--expire", "0.3", "--fail-on", "leak"],
                         ["sh", "-c", "%s 300; exit 5" % prog("short_leak")])
        self.assertEqual(r.returncode, 5, r.stderr[-2000:])
        # Started with SIGCHLD ignored (inherited), the status still comes through.
        r = subprocess.run([self.stackctl(), "run", "--", "sh", "-c", "exit 9"], env=self.env,
                           capture_output=True, text=True, timeout=120,
                           preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN))
        self.assertEqual(r.returncode, 9, r.stderr[-2000:])
        # Killed by a signal: 128 + N.
        r = self.run_cmd([], [PY, "-c", "import os; os.abort()"])
        self.assertEqual(r.returncode, 128 + signal.SIGABRT, r.stderr[-2000:])
        # The run's own failures: 125; a program not found 127, not executable 126.
        r = self.run_cmd(["--fail-on", "bogus"], ["true"])
        self.assertEqual(r.returncode, 125)
        self.assertEqual(subprocess.run([self.stackctl(), "run"], env=self.env,
                                        capture_output=True).returncode, 125)
        r = self.run_cmd([], [os.path.join(self.tmp, "no-such-program")])
        self.assertEqual(r.returncode, 127, r.stderr)
        self.assertIn("cannot execute", r.stderr)
        # A gate that saw nothing traced cannot pass: 125 (without --fail-on, 0).
        self.env["STACKWATCH_DISABLE"] = "1"
        r = self.run_cmd(["--fail-on", "leak"], [prog("short_leak"), "0"])
        self.assertEqual(r.returncode, 125, r.stderr)
        self.assertIn("the program never connected", r.stderr)
        r = self.run_cmd([], [prog("short_leak"), "0"])
        self.assertEqual(r.returncode, 0, r.stderr)
        del self.env["STACKWATCH_DISABLE"]
        noexec = self.script("noexec.sh", "#!/bin/sh\nexit 0\n")
        r = self.run_cmd([], [noexec])
        self.assertEqual(r.returncode, 126, r.stderr)
        self.assertPrivateGone()

    # ------------------------------------------------------------ Python
    def test_python_script(self):
        path = self.script("leak.py", PY_LEAK)
        r, rep = self.run_json(["--expire", "0.3"], [PY, path])
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertEqual(r.stdout, "leaked 300\n")
        leaks = [s for s in rep["stacks"] if has_function(s, "_ctypes_callproc") and
                 s["alloc"]["count"] == 300 and s["alloc"]["bytes"] == 300000]
        self.assertEqual(len(leaks), 1, r.stderr[-3000:])
        self.assertEqual(leaks[0]["class"], "leak")
        r = self.run_cmd(["--expire", "0.3", "--fail-on", "leak"], [PY, path])
        self.assertEqual(r.returncode, 23, r.stderr[-2000:])
        clean = self.script("clean.py", PY_CLEAN)
        r = self.run_cmd(["--expire", "0.3", "--fail-on", "leak"], [PY, clean])
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertEqual(r.stdout, "clean\n")
        self.assertPrivateGone()

    # ------------------------------------------------------------ signals, stdin
    def start(self, args, prog_args, pre=()):
        p = subprocess.Popen([self.stackctl()] + list(pre) + ["run"] + list(args) + ["--"] +
                             list(prog_args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=self.env)
        self.procs.append(p)
        first = p.stdout.readline().split()
        self.assertEqual(first[0], "ready", p.stderr.read() if not first else first)
        self.procs.append(int(first[1]))
        return p, int(first[1])

    def test_signals_and_stdin_forwarded(self):
        path = self.script("wait.py", PY_WAIT)
        # stdin and stdout pass through; the exit status too.
        p, _ = self.start([], [PY, path, "plain", "4"])
        out, err = p.communicate("hello\n", timeout=60)
        self.assertEqual((p.returncode, out), (4, "echo hello\n"), err[-2000:])
        # SIGTERM to stackctl reaches the program, whose handler exits 7.
        p, _ = self.start([], [PY, path, "handle"])
        p.send_signal(signal.SIGTERM)
        self.assertEqual(line_within(p), "got %d\n" % signal.SIGTERM)
        out, err = p.communicate(timeout=60)
        self.assertEqual((p.returncode, out), (7, ""), err[-2000:])
        self.assertIn("stackwatch: 1 process(es)", err)  # the report still comes
        # SIGINT sent with kill is passed on as well.
        p, _ = self.start([], [PY, path, "handle"])
        p.send_signal(signal.SIGINT)
        self.assertEqual(line_within(p), "got %d\n" % signal.SIGINT)
        out, err = p.communicate(timeout=60)
        self.assertEqual((p.returncode, out), (7, ""), err[-2000:])
        # Unhandled: the program dies of it, stackctl exits 128+15.
        p, _ = self.start([], [PY, path, "plain"])
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 128 + signal.SIGTERM, err[-2000:])
        self.assertIn("stackwatch: 1 process(es)", err)
        self.assertPrivateGone()

    def test_terminal_ctrl_c_is_not_passed_twice(self):
        # stackctl run on a terminal (a pty, stackctl the session leader and
        # the foreground group): Ctrl-C reaches the program from the
        # terminal; stackctl, which gets it too, must not send another.
        import fcntl
        import select
        import termios
        path = self.script("count.py", textwrap.dedent("""
            import os, signal, sys
            # The wakeup fd gets a byte per delivery (the Python handler
            # may run once for two).
            r, w = os.pipe()
            os.set_blocking(w, False)
            signal.set_wakeup_fd(w)
            def on(sig, frame):
                print("got 1", flush=True)
            signal.signal(signal.SIGINT, on)
            print("ready", flush=True)
            while sys.stdin.readline().strip() != "count":
                pass
            os.set_blocking(r, False)
            print("count", len(os.read(r, 64)), flush=True)
        """))
        master, slave = os.openpty()

        def controlling_tty():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        p = subprocess.Popen([self.stackctl(), "run", "--", PY, path], stdin=slave, stdout=slave,
                             stderr=subprocess.PIPE, preexec_fn=controlling_tty, env=self.env)
        self.procs.append(p)
        os.close(slave)
        seen = b""

        def read_until(what, timeout=60):
            nonlocal seen
            deadline = time.monotonic() + timeout
            while what not in seen:
                left = deadline - time.monotonic()
                self.assertGreater(left, 0, "no %r on the terminal: %r" % (what, seen))
                if select.select([master], [], [], left)[0]:
                    seen += os.read(master, 4096)
        try:
            read_until(b"ready")
            os.write(master, b"\x03")
            read_until(b"got 1")
            os.write(master, b"count\n")
            read_until(b"count 1\r\n")
            err = p.communicate(timeout=60)[1].decode()
        finally:
            os.close(master)
        self.assertNotIn(b"got 2", seen)
        self.assertEqual(p.returncode, 0, err[-2000:])
        self.assertIn("stackwatch: 1 process(es)", err)
        self.assertPrivateGone()

    def test_query_works_while_it_runs(self):
        path = self.script("wait.py", PY_WAIT)
        p, pid = self.start([], [PY, path, "plain"])
        line = p.stderr.readline()
        self.assertIn("a private collectord in ", line)
        rundir = line.split(" in ", 1)[1].split(" (", 1)[0]
        r = subprocess.run([self.stackctl(), "--dir", rundir, "query", "clients", "--json"],
                           capture_output=True, text=True, env=self.env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        states = {c["pid"]: c["state"] for c in json.loads(r.stdout)["clients"]}
        self.assertEqual(states.get(pid), "connected", r.stdout)
        out, err = p.communicate("bye\n", timeout=60)
        self.assertEqual(p.returncode, 0, err)
        self.assertFalse(os.path.exists(rundir))

    def test_killed_stackctl_leaves_no_collectord(self):
        path = self.script("wait.py", PY_WAIT)
        p, pid = self.start([], [PY, path, "plain"])
        line = p.stderr.readline()
        rundir = line.split(" in ", 1)[1].split(" (", 1)[0]

        def status():
            return subprocess.run([os.path.join(sw.BUILD, "collectord"), "status", "--dir",
                                   rundir], capture_output=True, text=True, timeout=60,
                                  env=self.env).returncode
        self.assertEqual(status(), 0)
        p.kill()  # SIGKILL: no clean-up of its own
        p.communicate(timeout=60)
        wait_until(lambda: status() == 3, 30, what="the private collectord to end")
        os.kill(pid, signal.SIGKILL)  # the program runs on, untraced: ours to end
        shutil.rmtree(rundir, ignore_errors=True)

    # ------------------------------------------------------------ children
    def test_forked_child_included(self):
        path = self.script("fork.py", PY_FORK)
        r, rep = self.run_json(["--expire", "0.3"], [PY, path])
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        child = int(r.stdout.split()[1])
        pids = {c["pid"] for c in rep["clients"]}
        self.assertIn(child, pids)
        self.assertEqual(len(pids), 2, rep["clients"])
        leaks = [s for s in rep["stacks"] if s["pid"] == child and
                 has_function(s, "_ctypes_callproc") and s["alloc"]["bytes"] == 300 * 777]
        self.assertEqual(len(leaks), 1, r.stderr[-3000:])
        self.assertEqual(leaks[0]["class"], "leak")
        r = self.run_cmd(["--expire", "0.3", "--fail-on", "leak"], [PY, path])
        self.assertEqual(r.returncode, 23, r.stderr[-2000:])

    # ------------------------------------------------------------ a collectord already running
    def test_uses_the_running_collectord(self):
        col = Collector(expire=0.3)
        # Another traced program of the user's, leaking too: not the run's.
        other = col.start([prog("short_leak"), "100000"])
        try:
            wait_until(lambda: col.client(other.pid), what="the other program to connect")
            out = os.path.join(self.tmp, "r.json")
            r = self.run_cmd(["--json", "-o", out, "--fail-on", "leak"],
                             [prog("short_leak"), "300"], pre=["--dir", col.dir])
            self.assertEqual(r.returncode, 23, r.stderr[-2000:])
            self.assertIn("the running collectord in %s" % col.dir, r.stderr)
            with open(out) as f:
                rep = json.load(f)
            pids = {c["pid"] for c in rep["clients"]} | {s["pid"] for s in rep["stacks"]}
            self.assertEqual(len(pids), 1, rep["clients"])
            self.assertNotIn(other.pid, pids)
            run_pid = pids.pop()
            # The daemon runs on and keeps the run's process for queries.
            self.assertTrue(col.alive())
            self.assertEqual(col.client(run_pid)["state"], "exited")
            self.assertTrue(stacks_with(col.leaks("--pid", str(run_pid)), "keep_block"))
            # A clean program passes the gate there too.
            r = self.run_cmd(["--fail-on", "leak"], [prog("short_leak"), "0"],
                             pre=["--dir", col.dir])
            self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        finally:
            other.kill()
            other.wait()
            for f in (other.stdin, other.stdout, other.stderr):
                f.close()
            col.close()
        self.assertEqual(os.listdir(self.xdg), [])

    # ------------------------------------------------------------ unreachable
    def test_fail_on_unreachable_scans_before_a_forwarded_signal(self):
        why = sw.ptrace_skip_reason()
        if why:
            self.skipTest(why)
        # sh passes SIGTERM on to nothing: it exits 0 by its trap once reach
        # (its child, traced too) ends at EOF; the scan came before.
        p = subprocess.Popen([self.stackctl(), "run", "--fail-on", "unreachable", "--", "sh",
                              "-c", "trap 'exit 0' TERM; echo ready 0; %s" % prog("reach")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=self.env)
        self.procs.append(p)
        self.assertEqual(p.stdout.readline().split(), ["ready", "0"])
        reach = int(p.stdout.readline().split()[1])  # reach's own "ready PID"
        self.procs.append(reach)
        line = p.stderr.readline()
        rundir = line.split(" in ", 1)[1].split(" (", 1)[0]
        p.stdin.write("lose 5\n")
        p.stdin.flush()
        self.assertEqual(p.stdout.readline().strip(), "ok")
        p.send_signal(signal.SIGTERM)

        def scanned():
            r = subprocess.run([self.stackctl(), "--dir", rundir, "query", "clients", "--json"],
                               capture_output=True, text=True, env=self.env, timeout=60)
            for c in json.loads(r.stdout)["clients"] if r.returncode == 0 else []:
                if c["pid"] == reach and c.get("scan"):
                    return c["scan"]
        scan = wait_until(scanned, 120, what="stackctl run to scan reach")
        self.assertEqual(scan["unreachable"]["count"], 5)
        out, err = p.communicate("", timeout=120)  # EOF: reach ends, then sh by its trap
        self.assertEqual(p.returncode, 23, err[-3000:])
        self.assertIn("unreachable found", err)


class PytestPluginTest(unittest.TestCase):
    quick = False

    SUITE = textwrap.dedent("""
        import pytest
        KEPT = []

        def test_clean():
            data = [bytes(10000) for _ in range(100)]
            assert len(data) == 100

        @pytest.mark.stackwatch_limit_leaks("1 MB")
        def test_leaky():
            for _ in range(4):
                KEPT.append(bytes(1 << 20))

        @pytest.mark.stackwatch_limit_leaks("1 MB")
        def test_clean_with_a_limit():
            x = bytes(4 << 20)
            assert len(x) == 4 << 20
    """)

    def setUp(self):
        if subprocess.run([PY, "-c", "import pytest"], capture_output=True).returncode:
            self.skipTest("no pytest for %s (make deps installs python3-pytest)" % PY)
        self.tmp = tempfile.mkdtemp(prefix="swpytest-")
        self.env = dict(os.environ, XDG_RUNTIME_DIR=self.tmp,
                        STACKWATCH_AGENT=sw.agent_path(),
                        PYTHONPATH=os.path.join(sw.ROOT, "python"))
        for k in ("STACKWATCH_DIR", "LD_PRELOAD", "DEBUGINFOD_URLS", "PYTEST_ADDOPTS"):
            self.env.pop(k, None)
        with open(os.path.join(self.tmp, "test_suite.py"), "w") as f:
            f.write(self.SUITE)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def pytest(self, *args):
        return subprocess.run([os.path.join(sw.BUILD, "stackctl"), "run", "--", PY, "-m",
                               "pytest", "-p", "stackwatch", "-p", "no:cacheprovider",
                               "test_suite.py"] + list(args), cwd=self.tmp,
                              capture_output=True, text=True, timeout=300, env=self.env)

    def test_leaking_test_fails_others_pass(self):
        r = self.pytest("-rA")
        self.assertEqual(r.returncode, 1, r.stdout[-3000:] + r.stderr[-2000:])
        self.assertIn("stackwatch: measuring", r.stdout)
        self.assertIn("FAILED test_suite.py::test_leaky", r.stdout)
        self.assertIn("PASSED test_suite.py::test_clean_with_a_limit", r.stdout)
        self.assertIn("PASSED test_suite.py::test_clean", r.stdout)
        self.assertIn("1 failed, 2 passed", r.stdout)
        self.assertRegex(r.stdout, r"the test left 4\.\d MiB live in \d+ stack\(s\), more than "
                                   r"its limit of 1\.0 MiB")
        self.assertIn("_PyBytes_FromSize", r.stdout)  # the stack that left it
        # The summary: the leaking test first, with its bytes.
        summary = r.stdout.split("= stackwatch =")[1]
        self.assertRegex(summary, r"4\.\d MiB in +\d+ stack\(s\)  test_suite.py::test_leaky  "
                                  r"limit 1\.0 MiB EXCEEDED")
        # Without the leaking test the suite passes.
        r = self.pytest("-k", "not leaky")
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-2000:])
        self.assertIn("2 passed", r.stdout)

    def test_failure_text_with_a_python_traceback(self):
        # A stack whose Python traceback the agent caught (JSON: a list of
        # tracebacks, each a list of frames, innermost first).
        code = textwrap.dedent("""
            import stackwatch_pytest as p
            st = {"id": "ab12", "python": [[{"file": "t.py", "function": "grow", "line": 7},
                                            {"file": "t.py", "function": "test_x", "line": 9}]],
                  "frames": [{"function": "malloc_site", "file": "ext.c", "line": 3},
                             {"function": "_PyEval_EvalFrameDefault", "module": "/usr/bin/python3.11",
                              "interpreter": True},
                             {"function": "Py_RunMain", "module": "/usr/bin/python3.11",
                              "interpreter": True}],
                  "python_at": 1}
            print(p.describe(3 << 20, [(3 << 20, 3, st)], 1 << 20))
            print(p.parse_size("1 MB"), p.parse_size("512 KB"), p.parse_size(100))
        """)
        r = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=self.env,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("3.0 MiB in 3 block(s), stack ab12:\n      t.py:7 in grow\n"
                      "      t.py:9 in test_x\n      malloc_site  ext.c:3\n", r.stdout)
        # Not the interpreter's frames that ran the Python lines.
        self.assertNotIn("_PyEval_EvalFrameDefault", r.stdout)
        self.assertNotIn("Py_RunMain", r.stdout)
        self.assertTrue(r.stdout.endswith("1048576 524288 100\n"), r.stdout)

    def test_without_the_agent_it_says_so(self):
        r = subprocess.run([PY, "-m", "pytest", "-p", "stackwatch", "-p", "no:cacheprovider",
                            "test_suite.py"], cwd=self.tmp, capture_output=True, text=True,
                           timeout=300, env=self.env)
        self.assertEqual(r.returncode, 0, r.stdout[-3000:])
        self.assertIn("stackwatch: off: the agent is not loaded", r.stdout)


if __name__ == "__main__":
    unittest.main()
