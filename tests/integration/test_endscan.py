"""The reachability scan as a process ends (STACKWATCH_SCAN_AT_EXIT, what
`stackctl run --fail-on unreachable` sets): LeakSanitizer's moment, for a
program that ends by itself. The scan comes before the end is stamped (exit,
main returned, Python finalizing), the process's other threads still
running; the end waits for it, at most STACKWATCH_SCAN_AT_EXIT_WAIT, and not
at all without a collector or with a stopped one. Also: a Python process
scanned with the default settings (small objects sampled) calls nothing
lost that is not (a sampled object's neighbour once made a whole pymalloc
arena "malloc heap", so every chain through its untracked objects was cut:
18,472 false lost blocks in an idle interpreter)."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
import unittest

import swtest as sw
from swtest import Collector, ask, prog, wait_until
from test_reach import by_line as by_marker  # {marker: stack} at reach.c's @LEAK lines

PY = "/usr/bin/python3"
SKIP = sw.ptrace_skip_reason()

# 20 blocks lost at lose_site (pointer dropped), 20 kept as raw words in a
# ctypes array (a Python int would hold an address as 30-bit digits, which no
# conservative scan, LeakSanitizer's included, reads as a pointer).
PY_LOSE = textwrap.dedent("""
    import ctypes, sys
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    kept = (ctypes.c_void_p * 20)()
    def lose_site():
        libc.malloc(5001)
    def keep_site(i):
        kept[i] = libc.malloc(6001)
    for i in range(20):
        lose_site()
        keep_site(i)
    print("ready", flush=True)
    if len(sys.argv) > 1:
        sys.stdin.readline()
""")


@unittest.skipIf(SKIP, SKIP)
class EndScanRunTest(unittest.TestCase):
    """stackctl run --fail-on unreachable on programs that end by themselves."""
    quick = False

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="swend-")
        self.xdg = os.path.join(self.tmp, "xdg")
        os.mkdir(self.xdg, 0o700)
        self.env = dict(os.environ, XDG_RUNTIME_DIR=self.xdg, STACKWATCH_AGENT=sw.agent_path())
        for k in ("STACKWATCH_DIR", "LD_PRELOAD", "DEBUGINFOD_URLS", "STACKWATCH_SCAN_AT_EXIT"):
            self.env.pop(k, None)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_json(self, args, prog_args, input=""):
        out = os.path.join(self.tmp, "report.json")
        r = subprocess.run([os.path.join(sw.BUILD, "stackctl"), "run", "--json", "-o", out] +
                           list(args) + ["--"] + list(prog_args), input=input,
                           capture_output=True, text=True, timeout=180, env=self.env)
        rep = None
        if os.path.exists(out):
            with open(out) as f:
                rep = json.load(f)
            os.unlink(out)
        return r, rep

    def test_main_returns_lost_blocks_found_exit_23(self):
        r, rep = self.run_json(["--fail-on", "unreachable"], [prog("reach")],
                               input="lose 5\ncycle 3\nkeep 4\n")
        self.assertEqual(r.returncode, 23, r.stderr[-3000:])
        self.assertIn("--fail-on: unreachable found", r.stderr)
        pid = rep["clients"][0]["pid"]
        self.assertEqual(rep["clients"][0]["end_reason"], "main returned")
        got = by_marker(rep, pid)
        self.assertEqual(got["lost"]["unreachable"]["count"], 5)
        self.assertEqual(got["lost"]["unreachable_direct"]["count"], 5)
        self.assertEqual(got["cycle"]["unreachable"]["count"] + got["cycle2"]["unreachable"]["count"], 6)
        self.assertEqual(got["kept"]["unreachable"]["count"], 0)
        self.assertEqual(got["kept"]["reachable"]["count"], 4)
        # Nothing else is called lost (stdio's buffer, the TLS of threads).
        others = [s for s in rep["stacks"] if s["unreachable"]["count"] and
                  s not in got.values()]
        self.assertEqual(others, [], "false lost blocks")
        self.assertEqual(rep["clients"][0]["scan"]["unreachable"]["count"], 11)

    def test_clean_program_passes(self):
        r, rep = self.run_json(["--fail-on", "unreachable"], [prog("reach")], input="keep 4\n")
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertNotIn("--fail-on", r.stderr)
        c = rep["clients"][0]
        self.assertIn("scan", c, "no scan at the end")
        self.assertEqual(c["scan"]["unreachable"]["count"], 0)
        self.assertEqual(by_marker(rep, c["pid"])["kept"]["reachable"]["count"], 4)

    def test_exit_with_threads_running_keeps_its_status(self):
        # exit(3) from the command loop while two threads allocate and free:
        # the scan sees the heap as it is (no false lost from their churn),
        # and the program's status is the run's (23 is only for a 0 exit).
        r, rep = self.run_json(["--fail-on", "unreachable"], [prog("reach")],
                               input="spin 2\nlose 3\nkeep 2\nexit 3\n")
        self.assertEqual(r.returncode, 3, r.stderr[-3000:])
        c = rep["clients"][0]
        self.assertEqual(c["end_reason"], "exit")
        self.assertEqual(c["scan"]["threads"], 3)
        got = by_marker(rep, c["pid"])
        self.assertEqual(got["lost"]["unreachable"]["count"], 3)
        self.assertEqual(got["kept"]["reachable"]["count"], 2)
        others = [s for s in rep["stacks"] if s["unreachable"]["count"] and
                  s not in got.values()]
        self.assertEqual(others, [], "false lost blocks")

    def test_python_program_lost_blocks_only(self):
        script = os.path.join(self.tmp, "lose.py")
        with open(script, "w") as f:
            f.write(PY_LOSE)
        r, rep = self.run_json(["--fail-on", "unreachable"], [PY, script])
        self.assertEqual(r.returncode, 23, r.stderr[-3000:])
        c = rep["clients"][0]
        self.assertEqual(c["end_reason"], "python finalizing")
        # Exactly the 20 lost blocks (5001 bytes each), the 20 kept reachable.
        self.assertEqual(c["scan"]["unreachable"], {"count": 20, "bytes": 20 * 5001})
        sizes = {}
        for s in rep["stacks"]:
            if s["unreachable"]["count"]:
                sizes[s["id"]] = s["unreachable"]["bytes"]
        self.assertEqual(sum(sizes.values()), 20 * 5001)


    def test_module_data_as_loaded_holds_no_block(self):
        # A non-PIE program whose initialized data reads as addresses all
        # over its heap (as python3.11's deep-frozen byte code does by
        # chance: this class's Python test called 1 of its 20 lost blocks
        # reachable in about half the runs): the lost blocks are lost.
        r, rep = self.run_json(["--fail-on", "unreachable"], [prog("pristine"), "5"], input="")
        self.assertEqual(r.returncode, 23, r.stderr[-3000:])
        self.assertIn("lost 5 covered 5", r.stdout)  # a word of its data in each block
        c = rep["clients"][0]
        pid = c["pid"]
        out = [s for s in rep["stacks"] if s["pid"] == pid and
               any(f["function"] == "lose_one" and (f["file"] or "").endswith("pristine.c")
                   for f in s["frames"])]
        self.assertEqual(len(out), 1, [s["frames"][:3] for s in rep["stacks"]])
        self.assertEqual(out[0]["unreachable"], {"count": 5, "bytes": 5 * 65536})
        self.assertEqual(c["scan"]["unreachable"]["count"], 5)
        # Its table (256 KiB, as loaded) was left out of the roots.
        self.assertGreaterEqual(c["scan"]["pristine_bytes"], 256 * 1024)

    def test_pointers_in_a_mapped_data_file_keep_their_blocks(self):
        # A data file holding block addresses (written before it was mapped
        # back privately and writable): its words equal its file's, yet
        # they are the blocks' only pointers. Only a loaded module's data
        # is left out as "as loaded": these blocks are reachable.
        path = os.path.join(self.tmp, "pointers.bin")
        r, rep = self.run_json(["--fail-on", "unreachable"],
                               [prog("pristine"), "6", path], input="")
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertIn("kept 6", r.stdout)
        c = rep["clients"][0]
        filed = [s for s in rep["stacks"] if s["pid"] == c["pid"] and
                 any(f["function"] == "file_them" for f in s["frames"])]
        self.assertEqual(len(filed), 1, [s["frames"][:3] for s in rep["stacks"]])
        self.assertEqual(filed[0]["reachable"]["count"], 6)
        self.assertEqual(filed[0]["unreachable"]["count"], 0)

@unittest.skipIf(SKIP, SKIP)
class PristineFileTest(unittest.TestCase):
    """The pristine-data filter reads the files a process maps by their
    path, as collectord sees it."""

    def test_a_fifo_at_a_mapped_path_does_not_hold_the_scan(self):
        # The program runs from a tmpfs mounted in a mount namespace of its
        # own; in collectord's, its path names a FIFO. The scan reads no
        # file there (it waited on the FIFO for good: opened without
        # O_NONBLOCK, checked for a regular file only after).
        tmp = tempfile.mkdtemp(prefix="swfifo-")
        m = os.path.join(tmp, "m")
        os.mkdir(m)
        col = Collector()
        p = None
        try:
            p = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                 'mount -t tmpfs none "$1" && cp "$2" "$1/p" && exec env LD_PRELOAD="$3" "$1/p" 5',
                 "sh", m, prog("pristine"), sw.agent_path()],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env=col.env)
            self.assertIn("lost 5", p.stdout.readline())
            os.mkfifo(os.path.join(m, "p"), 0o600)
            r = subprocess.run([os.path.join(sw.BUILD, "stackctl"), "--dir", col.dir, "scan",
                                str(p.pid), "--json"], capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertGreaterEqual(json.loads(r.stdout)["blocks"]["count"], 5, r.stdout)
        finally:
            if os.path.exists(os.path.join(m, "p")):
                try:  # a scan waiting on the FIFO: let it go
                    os.close(os.open(os.path.join(m, "p"), os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass
            if p:
                p.stdin.close()
                p.wait(60)
            col.close()
            shutil.rmtree(tmp, ignore_errors=True)


@unittest.skipIf(SKIP, SKIP)
class EndScanAgentTest(unittest.TestCase):
    """The agent's side: the end waits for the scan, and only as long as a
    collector can answer."""
    quick = False

    def setUp(self):
        self.col = Collector(expire=0.5)
        self.procs = []
        self.stopped = False

    def tearDown(self):
        if self.stopped:
            os.kill(self.col.proc.pid, signal.SIGCONT)
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        self.col.close()

    def start(self, **env):
        p = self.col.start([prog("reach")], **env)
        self.procs.append(p)
        line = p.stdout.readline()
        self.assertTrue(line.startswith("ready"), line)
        return p, int(line.split()[1])

    def test_scanned_before_the_end_then_ends(self):
        p, pid = self.start(STACKWATCH_SCAN_AT_EXIT=1)
        ask(p, "lose 2")
        out, err = p.communicate("", timeout=120)
        self.assertEqual(p.returncode, 0, err)
        c = self.col.wait_state(pid, "exited")
        self.assertEqual(c["scan"]["unreachable"]["count"], 2)
        self.assertIn("scanning at its end, as its agent asked", self.col.read_log())

    def test_a_stopped_collector_does_not_hold_the_end(self):
        # A wait of an hour: only noticing the stopped collector ends it.
        p, pid = self.start(STACKWATCH_SCAN_AT_EXIT=1, STACKWATCH_SCAN_AT_EXIT_WAIT=3600)
        ask(p, "lose 2")
        os.kill(self.col.proc.pid, signal.SIGSTOP)
        self.stopped = True
        out, err = p.communicate("", timeout=120)
        self.assertEqual(p.returncode, 0, err)
        self.assertIn("no scan at the end: the collector (pid %d) is stopped" %
                      self.col.proc.pid, err)
        os.kill(self.col.proc.pid, signal.SIGCONT)
        self.stopped = False

    def test_the_wait_is_bounded(self):
        # A peer that reads and never answers the ask (an older collectord,
        # or one busy elsewhere): the end waits STACKWATCH_SCAN_AT_EXIT_WAIT,
        # then goes on, saying so.
        import socket
        d = tempfile.mkdtemp(prefix="swend-raw-")
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(os.path.join(d, "agent.sock"))
            s.listen(4)
            env = dict(os.environ, STACKWATCH_DIR=d, LD_PRELOAD=sw.agent_path(),
                       STACKWATCH_SCAN_AT_EXIT="1", STACKWATCH_SCAN_AT_EXIT_WAIT="1")
            env.pop("DEBUGINFOD_URLS", None)
            p = subprocess.Popen([prog("reach")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
            self.procs.append(p)
            conn, _ = s.accept()
            conn.setblocking(False)
            self.assertTrue(p.stdout.readline().startswith("ready"))
            t0 = time.monotonic()
            p.stdin.close()

            def drained():
                try:
                    while conn.recv(65536):
                        pass
                except BlockingIOError:
                    pass
                return p.poll() is not None
            wait_until(drained, 60, what="the program to end")
            took = time.monotonic() - t0
            err = p.stderr.read()
            self.assertEqual(p.returncode, 0, err)
            self.assertIn("no scan at the end: the collector did not finish it within 1 s", err)
            self.assertGreaterEqual(took, 0.9)  # it did wait for the scan
            conn.close()
            s.close()
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_without_a_collector_the_end_does_not_wait(self):
        d = tempfile.mkdtemp(prefix="swend-none-")
        try:
            env = dict(os.environ, STACKWATCH_DIR=d, LD_PRELOAD=sw.agent_path(),
                       STACKWATCH_SCAN_AT_EXIT="1", STACKWATCH_SCAN_AT_EXIT_WAIT="3600")
            env.pop("DEBUGINFOD_URLS", None)
            r = subprocess.run([prog("reach")], input="lose 1\n", capture_output=True,
                               text=True, timeout=120, env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("no scan at the end: not connected to the collector", r.stderr)
        finally:
            shutil.rmtree(d, ignore_errors=True)


@unittest.skipIf(SKIP, SKIP)
class PythonScanDefaultsTest(unittest.TestCase):
    """A running Python process scanned with the defaults (small objects
    sampled): only the blocks really lost are called lost."""
    quick = False

    def setUp(self):
        self.col = Collector(expire=0.5)
        self.tmp = tempfile.mkdtemp(prefix="swpyscan-")

    def tearDown(self):
        self.col.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_no_false_lost_python_objects(self):
        script = os.path.join(self.tmp, "lose.py")
        with open(script, "w") as f:
            f.write(PY_LOSE)
        p = self.col.start([PY, script, "wait"], STACKWATCH_PYTHON_ALLOCATORS=None)
        try:
            self.assertEqual(p.stdout.readline().strip(), "ready")
            self.col.ctl("scan", str(p.pid))
            c = self.col.client(p.pid)
            self.assertGreater(c["scan"]["blocks"]["count"], 1000)
            self.assertEqual(c["scan"]["unreachable"], {"count": 20, "bytes": 20 * 5001},
                             "lost blocks beyond the 20 planted (false lost Python objects?)")
        finally:
            p.stdin.close()
            p.wait(60)
            p.stdout.close()
            p.stderr.close()


@unittest.skipIf(SKIP, SKIP)
class DroppedEventsScanTest(unittest.TestCase):
    """Events dropped by a full ring (here: collectord stopped while the
    program allocates 100,000 blocks and frees them) leave blocks in the
    table whose free never came: freed memory, which no chain reaches. A
    scan must not call them lost: they are "not judged" (uncertain), and
    blocks lost after the drop are judged as any."""
    quick = False

    def setUp(self):
        self.col = Collector(expire=0.5)
        self.stopped = False

    def tearDown(self):
        if self.stopped:
            os.kill(self.col.proc.pid, signal.SIGCONT)
        self.col.close()

    def test_blocks_whose_free_was_dropped_are_not_called_lost(self):
        p = self.col.start([prog("reach")], STACKWATCH_RING=1024)
        try:
            self.assertTrue(p.stdout.readline().startswith("ready"))
            pid = p.pid
            self.col.wait_state(pid, "connected")
            os.kill(self.col.proc.pid, signal.SIGSTOP)
            self.stopped = True
            ask(p, "churn 100000", timeout=120)  # the socket, then the ring, fill up
            os.kill(self.col.proc.pid, signal.SIGCONT)
            self.stopped = False
            c = wait_until(lambda: (lambda c: c if c and c["dropped"] > 0 else None)(
                self.col.client(pid)), 60, what="the agent's dropped events")
            # The churn's blocks whose free was dropped are in the table.
            live = sum(s["live"]["count"] for s in self.col.leaks("--pid", str(pid), "--all")["stacks"])
            self.assertGreater(live, 100)
            self.col.ctl("scan", str(pid))  # the blocks from before the drops: not judged
            first = self.col.client(pid)["scan"]
            self.assertGreater(first["uncertain"]["count"], 0)
            ask(p, "lose 3")
            self.col.ctl("scan", str(pid))
            c = self.col.client(pid)
            self.assertEqual(c["scan"]["unreachable"]["count"], 3,
                             "lost beyond the 3 planted: blocks whose free was dropped?")
            self.assertGreater(c["scan"]["uncertain"]["count"], 0)
            got = by_marker(self.col.leaks("--pid", str(pid), "--all"), pid)
            self.assertEqual(got["lost"]["unreachable"]["count"], 3)
        finally:
            p.stdin.close()
            p.wait(60)
            p.stdout.close()
            p.stderr.close()


class LoaderLockTest(unittest.TestCase):
    """A thread that holds the loader's lock (inside a dl_iterate_phdr
    callback) while it allocates must not stall the agent's flusher: its
    module poll waited on that lock, the rings filled and events were
    dropped (67,232 of 100,000 in LeakSanitizer's libdl_deadlock test)."""
    quick = False

    def test_no_event_dropped_while_a_thread_iterates_the_modules(self):
        col = Collector(expire=0.5)
        try:
            r = col.run([prog("dlchurn"), "60"], STACKWATCH_RING=1024, timeout=120)
            self.assertEqual(r.stdout.strip(), "done 60000", r.stderr)
            c = wait_until(lambda: (lambda c: c if c and c["state"] == "exited" else None)(
                col.clients()[0] if col.clients() else None), 60, what="the client's end")
            self.assertEqual(c["dropped"], 0, "events dropped while the loader's lock was held")
            self.assertGreaterEqual(c["total_allocs"], 60000)
        finally:
            col.close()


if __name__ == "__main__":
    unittest.main()
