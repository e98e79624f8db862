"""Core pipeline: planted leaks through every interposed function reported at
their function and file:line, exact counts across threads, dlopen, fork, the
event-semantics table, no-collector behaviour, hostile input, daemon control."""

import os
import random
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import unittest

import swtest as sw
from swtest import Collector, ask, finish, frame, hello, markers, pb_field, pb_varint, prog, \
    stacks_with, wait_output, wait_ticks, wait_until

LEAK_SIZES = {
    "malloc": 1001, "calloc": 1010, "realloc_null": 1003, "realloc_grow": 100004,
    "reallocarray": 1005, "posix_memalign": 1006, "aligned_alloc": 1152,
    "memalign": 1008, "valloc": 1009, "pvalloc": 1010,
}


def by_site(report, src, tag="LEAK", pid=None, prefix="leak_"):
    """{marker name: stack} for stacks whose first frame in our test program
    (function starting with prefix) sits at a marked line of src."""
    lines = {v: k for k, v in markers(src, tag).items()}
    out = {}
    for s in report["stacks"]:
        if pid is not None and s["pid"] != pid:
            continue
        for f in s["frames"]:
            if f["function"] and f["function"].startswith(prefix) and \
                    (f["file"] or "").endswith(src) and f["line"] in lines:
                out.setdefault(lines[f["line"]], []).append(s)
                break
    return out


class LeakReportTest(unittest.TestCase):
    quick = True

    def setUp(self):
        self.col = Collector(expire=0.5)

    def tearDown(self):
        self.col.close()

    def test_every_function_reported_at_its_line(self):
        p = self.col.start([prog("leaks")])
        self.assertTrue(p.stdout.readline().startswith("ready"))
        want = set(LEAK_SIZES) | {"strdup"}

        def all_leaks():
            r = self.col.leaks("--pid", str(p.pid))
            got = by_site(r, "leaks.c", pid=p.pid)
            return (r, got) if want <= set(got) else None

        report, got = wait_until(all_leaks, what="every planted leak to expire")
        m = markers("leaks.c")
        for name, size in LEAK_SIZES.items():
            stacks = got[name]
            self.assertEqual(len(stacks), 1, name)
            s = stacks[0]
            top = s["frames"][0]
            # The innermost frame is the planting function itself: no agent frame.
            self.assertEqual(top["function"], "leak_" + name, name)
            self.assertTrue(top["file"].endswith("tests/progs/leaks.c"), top)
            self.assertEqual(top["line"], m[name], name)
            self.assertEqual(s["may_leak"], {"count": 1, "bytes": size}, name)
            self.assertEqual(s["alloc"]["count"], 1, name)
            self.assertEqual(s["free"]["count"], 0, name)
            self.assertEqual(s["frames"][1]["function"], "main", name)
            self.assertEqual(s["skipped"], 0, name)
            self.assertTrue(s["frames"][0]["module"].endswith("/progs/leaks"))
        # strdup allocates inside libc: a wrapper, not shown; the caller's line is.
        s = got["strdup"][0]
        self.assertEqual(s["skipped"], 1)
        self.assertEqual(s["frames"][0]["function"], "leak_strdup")
        self.assertEqual(s["frames"][0]["line"], m["strdup"])
        for s in report["stacks"]:
            for f in s["frames"]:
                self.assertNotIn("libstackagent", f["module"] or "", "agent frame shown")
        # Freed noise through the same functions is never reported.
        self.assertEqual(stacks_with(report, "noise_all"), [])
        full = self.col.leaks("--pid", str(p.pid), "--all")
        noise = by_site(full, "leaks.c", tag="NOISE", pid=p.pid, prefix="noise_")
        self.assertGreaterEqual(len(noise), 10, sorted(noise))
        for name, stacks in noise.items():
            for s in stacks:
                self.assertEqual(s["alloc"]["count"], s["free"]["count"], name)
                self.assertEqual(s["may_leak"]["count"], 0, name)
                self.assertEqual(s["alloc"]["count"], 200, name)
        src = by_site(full, "leaks.c", tag="NOISE", pid=p.pid)["realloc_grow_src"][0]
        self.assertEqual((src["alloc"]["count"], src["free"]["count"]), (1, 1))
        rc, _, _ = finish(p)
        self.assertEqual(rc, 0)
        # Still queryable after exit; blocks alive then are exit_live.
        c = self.col.wait_state(p.pid, "exited")
        self.assertEqual(c["dropped"], 0)
        after = self.col.leaks("--pid", str(p.pid))
        got = by_site(after, "leaks.c", pid=p.pid)
        self.assertTrue(want <= set(got))
        self.assertEqual(got["malloc"][0]["exit_live"], {"count": 1, "bytes": 1001})

    def test_cxx_new_reported_at_caller(self):
        p = self.col.start([prog("leaks_cxx")])
        self.assertEqual(p.stdout.readline().strip(), "ready")
        m = markers("leaks_cxx.cpp")

        def found():
            r = self.col.leaks("--pid", str(p.pid))
            a = stacks_with(r, "leak_new()", line=m["new"])
            b = stacks_with(r, "leak_new_array()", line=m["new_array"])
            return (a, b) if a and b else None

        a, b = wait_until(found, what="C++ leaks")
        self.assertEqual(a[0]["may_leak"]["bytes"], 2008)
        # Names are demangled, and operator new is an allocation wrapper: the
        # site shown is the caller (new[] tail-calls operator new, one frame).
        self.assertEqual(a[0]["frames"][0]["function"], "leak_new()")
        self.assertEqual(a[0]["skipped"], 1)
        self.assertEqual(b[0]["frames"][0]["function"], "leak_new_array()")
        self.assertEqual(b[0]["skipped"], 1)
        self.assertEqual(b[0]["may_leak"]["bytes"], 3001)
        r = self.col.leaks("--pid", str(p.pid))
        self.assertEqual(stacks_with(r, "noise_new()"), [])
        text = self.col.ctl("query", "leaks", "--pid", str(p.pid)).stdout
        self.assertIn("(1 allocation-wrapper frame not shown)", text)
        finish(p)


class ThreadsTest(unittest.TestCase):
    quick = True

    def test_eight_threads_exact_counts(self):
        col = Collector(expire=3)
        try:
            rounds = 400
            p = col.start([prog("threads"), str(rounds)])
            total = 8 * rounds * 64
            self.assertEqual(p.stdout.readline().strip(), "done %d" % total)
            line = markers("threads.c", "ALLOC")["worker"]

            def counted():
                r = col.leaks("--pid", str(p.pid), "--all")
                ss = stacks_with(r, "worker_alloc", line=line)
                if not ss:
                    return None
                alloc = sum(s["alloc"]["count"] for s in ss)
                free = sum(s["free"]["count"] for s in ss)
                return (r, ss) if alloc == total and free == total else None

            r, ss = wait_until(counted, timeout=60, what="all %d allocs and frees" % total)
            for s in ss:
                self.assertEqual(s["live"]["count"], 0)
                self.assertEqual(s["may_leak"]["count"], 0)
            leaks = col.leaks("--pid", str(p.pid))
            self.assertEqual(stacks_with(leaks, "worker_alloc"), [])
            rc, _, _ = finish(p)
            self.assertEqual(rc, 0)
            # The final Stats arrive with the goodbye.
            c = col.wait_state(p.pid, "exited")
            self.assertEqual(c["dropped"], 0)
            self.assertEqual(c["lost_events"], 0)
            self.assertEqual(c["unknown_frees"], 0)
            self.assertEqual(c["late_events"], 0)  # the agent's global time order
            self.assertEqual(c["implied_frees"], 0)
            self.assertGreaterEqual(c["threads"], 8)
        finally:
            col.close()


class DlopenTest(unittest.TestCase):
    quick = False

    def test_dlopened_library_leak_symbolized(self):
        col = Collector(expire=0.5)
        try:
            lib = prog("libdlleak.so")
            p = col.start([prog("dlopen_main"), lib])
            self.assertEqual(p.stdout.readline().strip(), "ready")
            line = markers("libdlleak.c")["dl_leak"]
            r = wait_until(lambda: stacks_with(col.leaks("--pid", str(p.pid)), "dl_leak",
                                               "libdlleak.c", line), what="dlopen leak")
            s = r[0]
            self.assertEqual(s["frames"][0]["function"], "dl_leak")
            self.assertEqual(s["frames"][0]["module"], os.path.realpath(lib))
            self.assertEqual(s["may_leak"], {"count": 3, "bytes": 3 * 777})
            self.assertEqual(s["frames"][1]["function"], "main")
            self.assertIsNotNone(s["frames"][0]["build_id"])
            self.assertEqual(stacks_with(col.leaks("--pid", str(p.pid)), "dl_noise"), [])
            finish(p)
        finally:
            col.close()


class NoCollectorTest(unittest.TestCase):
    quick = False

    def test_identical_output_and_status(self):
        tmp = tempfile.mkdtemp(prefix="swtest-nocol-")
        env = dict(os.environ, STACKWATCH_DIR=os.path.join(tmp, "none"))
        bare = subprocess.run([prog("plain"), "x"], capture_output=True, text=True, env=env)
        env["LD_PRELOAD"] = sw.agent_path()
        traced = subprocess.run([prog("plain"), "x"], capture_output=True, text=True, env=env)
        self.assertEqual(bare.returncode, 7)
        self.assertEqual(traced.returncode, bare.returncode)
        self.assertEqual(traced.stdout, bare.stdout)
        lines = [l for l in traced.stderr.splitlines() if l]
        self.assertEqual(len(lines), 1, traced.stderr)
        self.assertIn(os.path.join(tmp, "none", "agent.sock"), lines[0])
        self.assertIn("no collector", lines[0])

    def test_connects_when_collector_appears_and_after_restart(self):
        tmp = tempfile.mkdtemp(prefix="swtest-late-")
        self.addCleanup(shutil.rmtree, tmp, True)
        d = os.path.join(tmp, "run")
        env = dict(os.environ, STACKWATCH_DIR=d, LD_PRELOAD=sw.agent_path())
        p = subprocess.Popen([prog("ticker")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        self.addCleanup(lambda: p.poll() is None and (p.kill(), p.wait()))
        self.assertEqual(p.stdout.readline().strip(), "ticking")
        # It runs (and allocates) with no collector there at all.
        wait_output(p, "no collector")
        wait_ticks(p, 5, "ticks without a collector")
        line = markers("ticker.c")["tick"]
        mark = markers("ticker.c")["mark"]
        col = Collector(expire=0.3, dirpath=d)
        try:
            col.wait_state(p.pid, "connected", timeout=30)
            wait_until(lambda: stacks_with(col.leaks("--pid", str(p.pid)), "tick_leak",
                                           line=line), what="ticker leak")
        finally:
            col.close()
        # The app notices the collector is gone and runs on without it.
        wait_output(p, "lost the collector")
        wait_ticks(p, 5, "ticks while the collector is gone")
        self.assertIsNone(p.poll())
        col = Collector(expire=0.3, dirpath=d)
        try:
            col.wait_state(p.pid, "connected", timeout=30)
            # The new collectord merges its stored report of this process: a
            # tick leak in it shows nothing of the new connection. Events
            # applied show the agent records again; an allocation made after
            # that must then reach the new collectord.
            wait_until(lambda: (col.client(p.pid) or {}).get("events", 0) > 0,
                       what="events on the new connection")
            self.assertEqual(ask(p, "mark 4242"), "marked 4242")

            def marked(*args):
                s = stacks_with(col.leaks("--pid", str(p.pid), *args), "tick_mark", line=mark)
                return s if s and s[0]["alloc"] == {"count": 1, "bytes": 4242} else None
            wait_until(lambda: marked("--all"), what="the mark after the restart")
            c = col.client(p.pid)
            self.assertGreaterEqual(c["gaps"], 1, c)
            self.assertGreaterEqual(c["lost_events"], 5, c)
            p.stdin.close()
            p.wait(30)
            self.assertEqual(p.returncode, 0)
            col.wait_state(p.pid, "exited")
            # Still live when the process ended: reported as such.
            s = wait_until(marked, what="the mark in the ended report")
            self.assertEqual(s[0]["exit_live"], {"count": 1, "bytes": 4242})
        finally:
            col.close()
        err = p.seen["stderr"] + p.stderr.read()
        self.assertIn("lost the collector", err)
        self.assertIn("connected to the collector", err)


class HostileInputTest(unittest.TestCase):
    quick = True

    def setUp(self):
        self.col = Collector(expire=0.5)
        self.sock = os.path.join(self.col.dir, "agent.sock")

    def tearDown(self):
        self.col.close()

    def send_and_expect_close(self, data):
        s = sw.raw_connect(self.sock)
        try:
            s.sendall(data)
            s.settimeout(10)
            while s.recv(4096):
                pass  # the collector may answer (welcome) before it closes
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            s.close()
        self.assertTrue(self.col.alive())
        self.assertEqual(self.col.ctl("query", "clients").returncode, 0)

    def test_garbage_is_rejected_and_the_daemon_answers(self):
        rnd = random.Random(7)
        self.send_and_expect_close(bytes(rnd.getrandbits(8) for _ in range(4000)))
        self.send_and_expect_close(b"\xff\xff\xff\xff" + b"x" * 100)
        self.send_and_expect_close(frame(b"\x0a\xff\xff\xff\xff\x0f"))
        stats = pb_field(5, 2, pb_field(1, 0, 3))
        self.send_and_expect_close(frame(stats))
        bad_batch = pb_field(4, 2, pb_field(2, 2, b"\x00\x00") + pb_field(3, 2, b"\x01"))
        self.send_and_expect_close(hello() + frame(bad_batch))
        bad_stack = pb_field(4, 2, pb_field(2, 2, b"\x00") + pb_field(3, 2, b"\x10") +
                             pb_field(4, 2, b"\x00") + pb_field(5, 2, b"\x01") +
                             pb_field(6, 2, b"\x08") + pb_field(7, 2, pb_varint(1 << 30)))
        self.send_and_expect_close(hello(instance=99) + frame(bad_stack))
        log = self.col.read_log()
        for reason in ("malformed", "exceeds the maximum", "first frame is not a hello",
                       "columns differ", "stack index out of range"):
            self.assertIn(reason, log)
        # A real program is still traced normally afterwards.
        r = self.col.run([prog("plain")])
        self.assertEqual(r.returncode, 7)
        wait_until(lambda: [c for c in self.col.clients()
                            if c["exe"].endswith("/progs/plain") and c["state"] == "exited"],
                   what="plain to be listed as exited")

    def test_claimed_pid_is_not_trusted(self):
        s = sw.raw_connect(self.sock)
        s.sendall(hello(pid=1, instance=4242))
        clients = wait_until(lambda: [c for c in self.col.clients() if c["exe"] == "/fake/exe"],
                             what="the fake client")
        self.assertEqual(clients[0]["pid"], os.getpid())
        s.close()


class ForkTest(unittest.TestCase):
    quick = True

    def test_fork_child_is_its_own_client(self):
        col = Collector(expire=0.5)
        try:
            p = col.start([prog("forker")])
            line = p.stdout.readline().split()
            self.assertEqual(line[0], "child")
            child = int(line[1])
            m = markers("forker.c")
            cc = col.wait_state(child, "connected")
            self.assertEqual(cc["ppid"], p.pid)
            col.wait_state(p.pid, "connected")
            r = wait_until(lambda: (lambda r: r if stacks_with(r, "child_leak", line=m["child"])
                                    and stacks_with(r, "parent_leak", line=m["parent"])
                                    else None)(col.leaks()), what="both leaks")
            self.assertEqual([s["pid"] for s in stacks_with(r, "parent_leak")], [p.pid])
            self.assertEqual([s["pid"] for s in stacks_with(r, "child_leak")], [child])
            # The inherited block's free is unknown here (after the reorder window).
            wait_until(lambda: col.client(child)["unknown_frees"] >= 1, what="unknown free")
            rc, _, _ = finish(p, timeout=20)
            self.assertEqual(rc, 0)
            # The child ends with _exit: no final flush, so it ended uncleanly.
            col.wait_state(child, "lost")
            col.wait_state(p.pid, "exited")
        finally:
            col.close()


class SemanticsTest(unittest.TestCase):
    quick = False

    def test_realloc_and_failure_rows(self):
        col = Collector(expire=60)
        try:
            p = col.start([prog("semantics")])
            ready = p.stdout.readline().split()
            self.assertEqual(ready[0], "ready")
            self.assertEqual(ready[2], "failures=5")
            self.assertEqual(ready[3], "zero=null")
            # Two threads' errno, each kept through 80,000 traced calls.
            self.assertEqual(ready[4], "errno_changed=0")
            m = markers("semantics.c", "ALLOC")

            def sites():
                r = col.leaks("--pid", str(p.pid), "--all")
                got = by_site(r, "semantics.c", "ALLOC", pid=p.pid, prefix="sem_")
                return (r, got) if set(m) <= set(got) else None

            r, got = wait_until(sites, what="all semantics sites")

            def af(name):
                s = got[name]
                self.assertEqual(len(s), 1, name)
                s = s[0]
                return (s["alloc"]["count"], s["alloc"]["bytes"], s["free"]["count"])

            self.assertEqual(af("realloc_null"), (1, 2001, 0))
            self.assertEqual(af("moved_src"), (1, 2002, 1))
            self.assertEqual(af("moved_dst"), (1, 200003, 0))
            self.assertEqual(af("inplace_src"), (1, 4004, 1))
            self.assertEqual(af("inplace_dst"), (1, 1004, 0))
            self.assertEqual(af("zero_src"), (1, 2005, 1))
            self.assertEqual(af("fail_src"), (1, 2006, 0))
            self.assertEqual(af("malloc_zero"), (1, 0, 0))
            self.assertEqual(stacks_with(r, "sem_failures"), [])
            self.assertEqual(stacks_with(r, "sem_free_null"), [])
            # realloc failure + 5 failing calls; counted by the agent, sent in Stats.
            wait_until(lambda: col.client(p.pid)["failed_calls"] == 6, what="failed_calls == 6")
            finish(p)
            c = col.wait_state(p.pid, "exited")
            self.assertEqual(c["failed_calls"], 6)
        finally:
            col.close()


class ExeFilterTest(unittest.TestCase):
    quick = False

    def test_exe_filter_and_no_inherit(self):
        col = Collector(expire=0.5)
        try:
            cmd = ["/bin/sh", "-c", "%s; exit 0" % prog("plain")]
            r = col.run(cmd, STACKWATCH_EXE="plain")
            self.assertEqual(r.returncode, 0)
            wait_until(lambda: any(c["exe"].endswith("/progs/plain") for c in col.clients()),
                       what="plain traced")
            self.assertFalse(any(c["exe"] in ("/bin/sh", "/usr/bin/dash")
                                 for c in col.clients()))
            r = col.run(["/bin/sh", "-c", "env; exit 0"], STACKWATCH_INHERIT="0")
            self.assertNotIn("libstackagent", r.stdout)
        finally:
            col.close()


class DaemonTest(unittest.TestCase):
    quick = False

    def cd(self, *args, env=None):
        return subprocess.run([os.path.join(sw.BUILD, "collectord")] + list(args),
                              capture_output=True, text=True, timeout=30, env=env)

    def test_start_status_stop(self):
        tmp = tempfile.mkdtemp(prefix="swtest-d-")
        d = os.path.join(tmp, "run")
        r = self.cd("start", "--dir", d, "--expire", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("started", r.stdout)
        try:
            self.assertEqual(stat.S_IMODE(os.stat(d).st_mode), 0o700)
            for sock in ("agent.sock", "control.sock"):
                self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, sock)).st_mode), 0o600)
            st = self.cd("status", "--dir", d)
            self.assertEqual(st.returncode, 0)
            self.assertIn("expire 2.000s", st.stdout)
            again = self.cd("start", "--dir", d)
            self.assertEqual(again.returncode, 1)
            self.assertIn("already running", again.stderr)
            self.assertIn(d, again.stderr)
        finally:
            stop = self.cd("stop", "--dir", d)
        self.assertEqual(stop.returncode, 0, stop.stderr)
        self.assertEqual(self.cd("status", "--dir", d).returncode, 3)
        self.assertEqual(self.cd("stop", "--dir", d).returncode, 3)
        # Default directory from STACKWATCH_DIR.
        env = dict(os.environ, STACKWATCH_DIR=d)
        self.assertEqual(self.cd("start", env=env).returncode, 0)
        self.assertEqual(self.cd("status", env=env).returncode, 0)
        self.assertEqual(self.cd("stop", env=env).returncode, 0)

    def test_stale_socket_is_replaced(self):
        tmp = tempfile.mkdtemp(prefix="swtest-s-")
        d = os.path.join(tmp, "run")
        p = subprocess.Popen([os.path.join(sw.BUILD, "collectord"), "start", "-f", "--dir", d],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        p.stdout.readline()
        p.kill()
        p.wait()
        self.assertTrue(os.path.exists(os.path.join(d, "agent.sock")))
        col = Collector(dirpath=d)
        try:
            self.assertIn("removed stale socket %s/agent.sock" % d, col.read_log())
        finally:
            col.close()

    def test_bad_directories(self):
        tmp = tempfile.mkdtemp(prefix="swtest-b-")
        long_dir = os.path.join(tmp, "x" * 120)
        r = self.cd("start", "--dir", long_dir)
        self.assertEqual(r.returncode, 1)
        self.assertIn(long_dir + "/control.sock", r.stderr)
        self.assertIn("Unix sockets allow at most", r.stderr)
        st = self.cd("status", "--dir", long_dir)
        self.assertNotEqual(st.returncode, 0)
        notdir = os.path.join(tmp, "file")
        open(notdir, "w").close()
        r = self.cd("start", "--dir", notdir)
        self.assertEqual(r.returncode, 1)
        self.assertIn("%s exists and is not a directory" % notdir, r.stderr)
        loose = os.path.join(tmp, "loose")
        os.mkdir(loose, 0o755)
        os.chmod(loose, 0o755)
        r = self.cd("start", "--dir", loose)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(loose).st_mode), 0o700)
        self.assertEqual(self.cd("stop", "--dir", loose).returncode, 0)
        if os.geteuid() == 0:
            other = os.path.join(tmp, "other")
            os.mkdir(other, 0o700)
            os.chown(other, 65534, 65534)
            r = self.cd("start", "--dir", other)
            self.assertEqual(r.returncode, 1)
            self.assertIn("%s is owned by uid 65534" % other, r.stderr)
        # The agent with a too-long directory: one message, the program runs.
        env = dict(os.environ, STACKWATCH_DIR=long_dir, LD_PRELOAD=sw.agent_path())
        r = subprocess.run([prog("plain")], capture_output=True, text=True, env=env)
        self.assertEqual(r.returncode, 7)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("too long", r.stderr)

    def test_bad_agent_env_values(self):
        col = Collector(expire=0.5)
        try:
            r = col.run([prog("plain")], STACKWATCH_DEPTH="0", STACKWATCH_RING="1000",
                        STACKWATCH_SAMPLE="bogus")
            self.assertEqual(r.returncode, 7)
            err = r.stderr
            self.assertIn("STACKWATCH_DEPTH=0", err)
            self.assertIn("STACKWATCH_RING=1000", err)
            self.assertIn("STACKWATCH_SAMPLE=bogus", err)
            self.assertEqual(len(err.strip().splitlines()), 3, err)
        finally:
            col.close()



class StackCacheTest(unittest.TestCase):
    """The per-thread stack cache answers a call site at the same stack
    address from its last capture only while every return address outward
    is unchanged: two callers of the same shape stay apart."""
    quick = True

    def test_same_site_same_place_different_callers(self):
        for unwind in ("dwarf", "fp"):
            col = Collector(expire=0.5)
            try:
                p = col.start([prog("cache_sites")], STACKWATCH_UNWIND=unwind)
                self.assertEqual(p.stdout.readline().strip(), "ready")
                m = markers("cache_sites.c")

                def both():
                    r = col.leaks("--pid", str(p.pid))
                    ss = stacks_with(r, "cache_site", "cache_sites.c", m["site"])
                    return ss if len(ss) == 2 else None

                ss = wait_until(both, what="two stacks through one site (%s)" % unwind)
                got = {}
                for s in ss:
                    self.assertEqual(s["alloc"]["count"], 500)
                    self.assertEqual(s["free"]["count"], 0)
                    fr = [f["function"] for f in s["frames"][:3]]
                    self.assertEqual(fr[0], "cache_site", fr)
                    self.assertEqual(fr[2], "main", fr)
                    self.assertEqual(s["frames"][1]["line"], m[fr[1]], fr)
                    got[fr[1]] = s["may_leak"]
                self.assertEqual(got, {"via_a": {"count": 500, "bytes": 500 * 100},
                                       "via_b": {"count": 500, "bytes": 500 * 200}})
                rc, _, _ = finish(p)
                self.assertEqual(rc, 0)
                c = col.wait_state(p.pid, "exited")
                self.assertEqual(c["unknown_frees"], 0)
                # Runs of 250 from one caller: answered by the cache.
                self.assertGreater(c["stack_cache_hits"], 900)
            finally:
                col.close()


class FramePointerUnwindTest(unittest.TestCase):
    """STACKWATCH_UNWIND=fp: the same report as libunwind, exact counts across
    threads, and a module without frame pointers refused after a walk that
    differed from libunwind (its frames then come from libunwind)."""
    quick = True

    def test_same_lines_as_libunwind(self):
        col = Collector(expire=0.5)
        try:
            p = col.start([prog("leaks")], STACKWATCH_UNWIND="fp")
            self.assertTrue(p.stdout.readline().startswith("ready"))
            want = set(LEAK_SIZES) | {"strdup"}

            def all_leaks():
                r = col.leaks("--pid", str(p.pid))
                got = by_site(r, "leaks.c", pid=p.pid)
                return got if want <= set(got) else None

            got = wait_until(all_leaks, what="every planted leak under fp")
            m = markers("leaks.c")
            for name, size in LEAK_SIZES.items():
                s = got[name][0]
                self.assertEqual(len(got[name]), 1, name)
                self.assertEqual(s["frames"][0]["function"], "leak_" + name)
                self.assertEqual(s["frames"][0]["line"], m[name])
                self.assertEqual(s["frames"][1]["function"], "main", name)
                self.assertEqual(s["may_leak"], {"count": 1, "bytes": size}, name)
            # malloc called from inside libc (no frame pointers there): the
            # walk hands over to libunwind, the caller's line is still right.
            s = got["strdup"][0]
            self.assertEqual(s["frames"][0]["function"], "leak_strdup")
            self.assertEqual(s["frames"][0]["line"], m["strdup"])
            self.assertEqual(s["frames"][1]["function"], "main")
            rc, _, err = finish(p)
            self.assertEqual(rc, 0)
            # Few distinct stacks here (the stack cache answers repeats), so
            # the program may not have earned trust yet; it must not be refused.
            self.assertNotIn("not walking frame pointers", err)
        finally:
            col.close()

    def test_module_without_frame_pointers_refused(self):
        # Built -O2 -fomit-frame-pointer: dl_leak leaves rbp as main's frame,
        # so a trusting walk would skip main. Offered as a candidate, its
        # first walk differs from libunwind and it is refused for good.
        col = Collector(expire=0.5)
        try:
            lib = prog("nofp/libdlleak.so")
            p = col.start([prog("dlopen_main"), lib], STACKWATCH_UNWIND="fp",
                          STACKWATCH_FP_MODULES="*/nofp/*")
            self.assertEqual(p.stdout.readline().strip(), "ready")
            line = markers("libdlleak.c")["dl_leak"]
            r = wait_until(lambda: stacks_with(col.leaks("--pid", str(p.pid)), "dl_leak",
                                               "libdlleak.c", line), what="dlopen leak")
            self.assertEqual(len(r), 1, "one stack for all three leaks")
            s = r[0]
            self.assertEqual([f["function"] for f in s["frames"][:2]], ["dl_leak", "main"])
            self.assertEqual(s["may_leak"], {"count": 3, "bytes": 3 * 777})
            rc, _, err = finish(p)
            self.assertEqual(rc, 0)
            self.assertRegex(err, r"not walking frame pointers in \S*/nofp/libdlleak\.so")
        finally:
            col.close()

    def test_threads_exact_under_fp(self):
        col = Collector(expire=3)
        try:
            rounds = 300
            p = col.start([prog("threads"), str(rounds)], STACKWATCH_UNWIND="fp")
            total = 8 * rounds * 64
            self.assertEqual(p.stdout.readline().strip(), "done %d" % total)
            line = markers("threads.c", "ALLOC")["worker"]

            def counted():
                r = col.leaks("--pid", str(p.pid), "--all")
                ss = stacks_with(r, "worker_alloc", line=line)
                a = sum(s["alloc"]["count"] for s in ss)
                f = sum(s["free"]["count"] for s in ss)
                return ss if ss and a == total and f == total else None

            ss = wait_until(counted, timeout=60, what="all allocs and frees under fp")
            for s in ss:
                self.assertEqual(s["live"]["count"], 0)
                fr = [f["function"] for f in s["frames"]]
                self.assertEqual(fr[0], "worker_alloc", fr)
            finish(p)
            c = col.wait_state(p.pid, "exited")
            self.assertEqual(c["unknown_frees"], 0)
            self.assertEqual(c["dropped"], 0)
        finally:
            col.close()


if __name__ == "__main__":
    unittest.main()
