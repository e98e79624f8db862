"""Reachability scans (stackctl scan, query leaks --reachability): collectord
freezes a live process, copies its memory and finds which live blocks no
chain of pointers from a root reaches. Exact counts for lost blocks, lost
cycles and blocks kept on a list, preloaded and attached; a multi-threaded
process keeps running through repeated scans; errors are clear."""

import json
import os
import re
import shutil
import sys
import tempfile
import unittest

import swtest as sw
from swtest import Collector, markers, prog, wait_until

SKIP = sw.ptrace_skip_reason()


def ready_pid(p):
    m = re.match(r"ready (\d+)", p.stdout.readline())
    if not m:
        raise AssertionError("no ready line")
    return int(m.group(1))


def ask(p, cmd):
    p.stdin.write(cmd + "\n")
    p.stdin.flush()
    line = p.stdout.readline()
    if line.strip() != "ok":
        raise AssertionError("%s: %r" % (cmd, line))


def by_line(report, pid, src="reach.c"):
    """{marker name: stack} for stacks allocated at a marked line of src."""
    lines = {v: k for k, v in markers(src).items()}
    out = {}
    for s in report["stacks"]:
        if s["pid"] != pid:
            continue
        for f in s["frames"]:
            if (f["file"] or "").endswith(src) and f["line"] in lines:
                out[lines[f["line"]]] = s
                break
    return out


@unittest.skipIf(SKIP, SKIP)
class ReachTest(unittest.TestCase):
    quick = True

    def setUp(self):
        self.col = Collector(expire=0.5)
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                if f:
                    f.close()
        self.col.close()

    def scan(self, pid):
        r = self.col.ctl("scan", str(pid), "--json")
        return json.loads(r.stdout)

    def plant(self, p):
        ask(p, "lose 5")
        ask(p, "cycle 3")
        ask(p, "keep 7")

    def check_kinds(self, pid, rep, kept_n=7):
        got = by_line(rep, pid)
        for name in ("lost", "cycle", "cycle2", "kept"):
            self.assertIn(name, got, name)
        lost, c1, c2, kept = got["lost"], got["cycle"], got["cycle2"], got["kept"]
        self.assertEqual(lost["unreachable"], {"count": 5, "bytes": 5 * 3001})
        self.assertEqual(lost["reachable"], {"count": 0, "bytes": 0})
        # A cycle no root reaches is lost, both halves.
        self.assertEqual(c1["unreachable"], {"count": 3, "bytes": 3 * 3003})
        self.assertEqual(c2["unreachable"], {"count": 3, "bytes": 3 * 3003})
        self.assertEqual(c1["reachable"]["count"] + c2["reachable"]["count"], 0)
        # Kept on a list whose head is a global: reachable, every one.
        self.assertEqual(kept["reachable"], {"count": kept_n, "bytes": kept_n * 3008})
        self.assertEqual(kept["unreachable"], {"count": 0, "bytes": 0})
        # Still may-leak by age all of them: reachability says which are lost.
        self.assertEqual(kept["may_leak"]["count"], kept_n)
        self.assertEqual(lost["may_leak"]["count"], 5)

    def wait_expired(self, pid):
        """Until the planted blocks are may-leak (so query leaks lists them)."""
        wait_until(lambda: len(by_line(self.col.leaks("--pid", str(pid)), pid)) >= 4,
                   what="the planted blocks to expire")

    def test_lost_and_reachable_exact_preloaded(self):
        p = self.col.start([prog("reach")])
        self.procs.append(p)
        pid = ready_pid(p)
        self.plant(p)
        self.wait_expired(pid)
        s = self.scan(pid)
        self.assertEqual(s["pid"], pid)
        self.assertFalse(s["heap_roots"])  # preloaded from the start: every block tracked
        self.assertEqual(s["unreachable"]["count"], 5 + 6)
        self.assertEqual(s["threads"], 1)
        self.assertGreater(s["pause_us"], 0)
        self.assertGreater(s["read_bytes"], 0)
        rep = self.col.leaks("--pid", str(pid))
        self.check_kinds(pid, rep)
        c = [x for x in rep["clients"] if x["pid"] == pid][0]
        self.assertEqual(c["scan"]["unreachable"]["count"], 11)
        text = self.col.ctl("query", "leaks", "--pid", str(pid)).stdout
        self.assertIn("unreachable=5 (15005 bytes) reachable=0 (0 bytes)", text)
        self.assertIn("unreachable=0 (0 bytes) reachable=7 (21056 bytes)", text)
        self.assertIn("reachability scan at", text)
        html = os.path.join(self.col.tmp, "r.html")
        self.col.ctl("report", "--html", html, "--pid", str(pid))
        with open(html) as f:
            page = f.read()
        self.assertIn("unreachable (lost) <b>5</b>", page)
        self.assertIn("reachable <b>7</b>", page)
        # Freed since the scan: a block no longer counts.
        p.stdin.close()
        self.assertEqual(p.wait(30), 0)
        self.assertEqual(p.stdout.read().strip(), "done kept=7 errors=0")

    def ended_figures(self, pid):
        """The ended process's report: the last scan's verdicts are kept
        (issue 19.4c: they were null once the process had ended)."""
        rep = self.col.leaks("--pid", str(pid))
        got = by_line(rep, pid)
        self.assertEqual(got["lost"]["unreachable"], {"count": 5, "bytes": 5 * 3001})
        self.assertEqual(got["lost"]["reachable"], {"count": 0, "bytes": 0})
        self.assertEqual(got["kept"]["reachable"], {"count": 7, "bytes": 7 * 3008})
        self.assertEqual(got["kept"]["unreachable"], {"count": 0, "bytes": 0})
        self.assertEqual(got["cycle"]["unreachable"]["count"], 3)
        # Direct and indirect, and the owner, kept too (issue 19.1).
        self.assertEqual(got["cycle"]["unreachable_direct"]["count"], 3)
        self.assertEqual(got["cycle2"]["unreachable_indirect"]["count"], 3)
        self.assertEqual([o["stack"] for o in got["cycle2"]["owners"]], [got["cycle"]["id"]])
        text = self.col.ctl("query", "leaks", "--pid", str(pid)).stdout
        self.assertIn("unreachable=5 (15005 bytes) reachable=0 (0 bytes)", text)
        self.assertIn("unreachable=0 (0 bytes) reachable=7 (21056 bytes)", text)

    def test_scan_verdicts_kept_after_exit(self):
        p = self.col.start([prog("reach")])
        self.procs.append(p)
        pid = ready_pid(p)
        self.plant(p)
        self.wait_expired(pid)
        self.assertEqual(self.scan(pid)["unreachable"]["count"], 11)
        p.stdin.close()
        self.assertEqual(p.wait(30), 0)
        self.col.wait_state(pid, "exited")
        self.ended_figures(pid)

    def test_scan_after_main_returned_is_in_the_ended_report(self):
        hold = os.path.join(self.col.tmp, "hold")
        p = self.col.start([prog("reach")])
        self.procs.append(p)
        pid = ready_pid(p)
        self.plant(p)
        ask(p, "hold " + hold)
        self.wait_expired(pid)
        p.stdin.close()
        self.assertEqual(p.stdout.readline().strip(), "done kept=7 errors=0")
        self.assertEqual(p.stdout.readline().strip(), "held")
        self.col.wait_state(pid, "ending")
        # Scanned while ending: main has returned, the blocks are live.
        self.assertEqual(self.scan(pid)["unreachable"]["count"], 11)
        open(hold, "w").close()
        self.assertEqual(p.wait(30), 0)
        self.col.wait_state(pid, "exited")
        self.ended_figures(pid)

    def test_scan_verdicts_survive_a_restart(self):
        """Kept in the store: a collectord restarted afterwards reports them."""
        tmp = tempfile.mkdtemp(prefix="swreach-")
        self.addCleanup(shutil.rmtree, tmp, True)
        run, state = os.path.join(tmp, "run"), os.path.join(tmp, "state")
        self.col.close()
        self.col = Collector(expire=0.5, dirpath=run, extra=["--state-dir", state])
        p = self.col.start([prog("reach")])
        self.procs.append(p)
        pid = ready_pid(p)
        self.plant(p)
        self.wait_expired(pid)
        self.assertEqual(self.scan(pid)["unreachable"]["count"], 11)
        p.stdin.close()
        self.assertEqual(p.wait(30), 0)
        self.col.wait_state(pid, "exited")
        reports = os.path.join(state, "reports")
        wait_until(lambda: os.path.isdir(reports) and os.listdir(reports),
                   what="the report in the store")
        self.col.close()
        self.col = Collector(expire=0.5, dirpath=run, extra=["--state-dir", state])
        self.assertTrue(self.col.client(pid)["restored"])
        self.ended_figures(pid)

    def test_high_pthread_key_values_are_reachable(self):
        """A value of a pthread key >= 32 lives in glibc's calloc'd
        second-level array: reachable, as valgrind and LSan say (issue 19.4a:
        the agent's own first backtrace made that array untracked when the
        program had made 32 keys first, and the block was called lost)."""
        p = self.col.start([prog("tsdkeys")])
        self.procs.append(p)
        pid = ready_pid(p)
        wait_until(lambda: len(by_line(self.col.leaks("--pid", str(pid)), pid,
                                       "tsdkeys.c")) >= 3,
                   what="the planted blocks to expire")
        s = self.scan(pid)
        self.assertEqual(s["unreachable"], {"count": 1, "bytes": 3012})
        got = by_line(self.col.leaks("--pid", str(pid)), pid, "tsdkeys.c")
        self.assertEqual(got["tsd_lost"]["unreachable"], {"count": 1, "bytes": 3012})
        self.assertEqual(got["tsd_main"]["reachable"], {"count": 1, "bytes": 3010})
        self.assertEqual(got["tsd_worker"]["reachable"], {"count": 1, "bytes": 3011})
        p.stdin.close()
        self.assertEqual(p.wait(30), 0)
        self.assertEqual(p.stdout.read().strip(), "done 1")

    def dead_threads_run(self, *args):
        p = self.col.start([prog("deadthreads"), "100"] + list(args))
        self.procs.append(p)
        pid = ready_pid(p)
        wait_until(lambda: len(by_line(self.col.leaks("--pid", str(pid)), pid,
                                       "deadthreads.c")) >= 2 + len(args),
                   what="the planted blocks to expire")
        s = self.scan(pid)
        got = by_line(self.col.leaks("--pid", str(pid)), pid, "deadthreads.c")
        p.stdin.close()
        self.assertEqual(p.wait(30), 0)
        return s, got

    def test_blocks_lost_by_threads_that_ended(self):
        """100 threads each leave the only pointer to a block in their stack
        and end: valgrind and LSan call all 100 lost; glibc keeps the dead
        stacks for reuse, and their stale words used to keep 4 of them
        "reachable" (issue 19.4b). The TCB at a cached stack's top still
        counts (glibc's own blocks for those threads stay reachable)."""
        s, got = self.dead_threads_run()
        self.assertEqual(got["dead"]["unreachable"], {"count": 100, "bytes": 100 * 2001})
        self.assertEqual(got["kept"]["reachable"], {"count": 1, "bytes": 2002})
        self.assertEqual(s["unreachable"], {"count": 100, "bytes": 100 * 2001})

    def test_a_thread_on_a_cached_stack_is_a_root_again(self):
        """A thread started on a cached stack that never allocates (so the
        agent does not know it) keeps the only pointer to a block: reachable,
        never lost. (Its live frames may hold a dead thread's words, as they
        would under valgrind.)"""
        s, got = self.dead_threads_run("hold")
        self.assertEqual(got["held"]["reachable"], {"count": 1, "bytes": 2003})
        self.assertEqual(got["held"]["unreachable"], {"count": 0, "bytes": 0})
        dead = got["dead"]
        self.assertEqual(dead["unreachable"]["count"] + dead["reachable"]["count"], 100)
        self.assertGreaterEqual(dead["unreachable"]["count"], 90)

    def test_retention_paths_of_reachable_leaks(self):
        """Why a reachable may-leak stack is kept (issue 19.2): the shortest
        chain from a root, the root named (a global from the symbol table,
        a thread's stack) and the stacks of the blocks in between."""
        p = self.col.start([prog("retain")])
        self.procs.append(p)
        pid = ready_pid(p)
        wait_until(lambda: len(by_line(self.col.leaks("--pid", str(pid)), pid, "retain.c")) >= 4,
                   what="the tables to expire")
        self.scan(pid)
        got = by_line(self.col.leaks("--pid", str(pid)), pid, "retain.c")
        table, buckets = got["table"]["id"], got["buckets"]["id"]
        # The most common chain; a stale word on a stack (the agent's frames
        # ran there) may keep a session or two by a chain of its own.
        first = got["session"]["kept_by"][0]
        self.assertEqual((first["root"], first["via"], first["sampled"]),
                         ("g_sessions in retain", [table, buckets], 40))
        self.assertGreaterEqual(first["blocks"], 38)
        self.assertEqual(got["buckets"]["kept_by"][0]["via"], [table])
        # Every hop a tracked block here: hops say via's stacks, no type.
        self.assertEqual(first["hops"], [{"stack": table, "type": None, "bytes": None},
                                         {"stack": buckets, "type": None, "bytes": None}])
        self.assertEqual(got["table"]["kept_by"][0]["root"], "g_sessions in retain")
        self.assertEqual(got["note"]["kept_by"][0],
                         {"root": "stack of thread %d (main)" % pid, "via": [],
                          "blocks": 6, "sampled": 6, "cut": False, "hops": []})
        text = self.col.ctl("query", "leaks", "--pid", str(pid)).stdout
        m = markers("retain.c")
        self.assertIn("kept by: g_sessions in retain -> CallStack[%s] at make_table "
                      "(tests/progs/retain.c:%d) -> CallStack[%s] at make_table "
                      "(tests/progs/retain.c:%d) -> these blocks (%d of 40 sampled)"
                      % (table, m["table"], buckets, m["buckets"], first["blocks"]), text)
        html = os.path.join(self.col.tmp, "k.html")
        self.col.ctl("report", "--html", html, "--pid", str(pid))
        with open(html) as f:
            self.assertIn('kept by <b>g_sessions in retain</b> &rarr; <a href="#s%s-%d">'
                          % (table, pid), f.read())
        p.stdin.close()
        self.assertEqual(p.wait(30), 0)

    def test_query_leaks_reachability_scans_first(self):
        p = self.col.start([prog("reach")])
        self.procs.append(p)
        pid = ready_pid(p)
        self.plant(p)
        self.wait_expired(pid)
        rep = json.loads(self.col.ctl("query", "leaks", "--pid", str(pid), "--json",
                                      "--reachability").stdout)
        self.check_kinds(pid, rep)
        # Planted after the scan: not scanned yet, not counted either way.
        ask(p, "lose 2")
        rep = wait_until(lambda: (lambda r: r if by_line(r, pid)["lost"]["may_leak"]["count"] == 7
                                  else None)(self.col.leaks("--pid", str(pid))),
                         what="the two new blocks to expire")
        self.assertEqual(by_line(rep, pid)["lost"]["unreachable"]["count"], 5)
        self.assertEqual(by_line(rep, pid)["lost"]["may_leak"]["count"], 7)
        rep = json.loads(self.col.ctl("query", "leaks", "--pid", str(pid), "--json",
                                      "--reachability").stdout)
        self.assertEqual(by_line(rep, pid)["lost"]["unreachable"]["count"], 7)
        p.stdin.close()
        self.assertEqual(p.wait(30), 0)

    def test_attached_process(self):
        p = self.col.start_plain([prog("reach")])
        self.procs.append(p)
        pid = ready_pid(p)
        self.col.attach(pid)
        self.plant(p)
        self.wait_expired(pid)
        s = self.scan(pid)
        # Blocks from before the attach are untracked: the heap outside
        # tracked blocks counts as roots (said so); counts stay exact here.
        self.assertTrue(s["heap_roots"])
        self.check_kinds(pid, self.col.leaks("--pid", str(pid)))
        self.col.detach(pid)
        p.stdin.close()
        self.assertEqual(p.wait(30), 0)
        self.assertEqual(p.stdout.read().strip(), "done kept=7 errors=0")

    def test_multithreaded_process_keeps_running(self):
        p = self.col.start([prog("reach")])
        self.procs.append(p)
        pid = ready_pid(p)
        ask(p, "spin 6")
        self.plant(p)
        self.wait_expired(pid)
        for i in range(5):
            # The blocks kept last round are may-leak (listed) once expired.
            rep = wait_until(lambda: (lambda r: r if by_line(r, pid)["kept"]["may_leak"]["count"]
                                      == 7 + i else None)(self.col.leaks("--pid", str(pid))),
                             what="round %d's block to expire" % i)
            s = self.scan(pid)
            self.assertEqual(s["threads"], 7)  # main and six spinning; not the agent's
            rep = self.col.leaks("--pid", str(pid))
            self.check_kinds(pid, rep, kept_n=7 + i)
            ask(p, "keep 1")  # still answering between scans
        # The spinning threads checked every block they wrote: no corruption.
        p.stdin.close()
        self.assertEqual(p.wait(60), 0)
        self.assertEqual(p.stdout.read().strip(), "done kept=12 errors=0")

    @unittest.skipIf(sw.sanitized_collector(),
                     "a sanitizer's shadow and quarantine are in collectord's peak")
    def test_peak_memory_of_a_scan_is_bounded(self):
        """collectord's peak RSS (VmHWM) grows across a scan of a large heap
        by no more than the bound docs/reachability.md states: the bytes
        copied, 100 bytes per live block, 16 MiB. Before the bound it held a
        populated eighth more than the copy, a second snapshot for the sort
        and every per-block array to the end (about 301 MiB for 236 now on
        the scan bench's million blocks)."""
        col = Collector(expire=3600, extra=("--max-live", "4000000"))
        self.addCleanup(col.close)
        n = 600000
        p = col.start([prog("bigheap"), str(n), "96"])
        self.procs.append(p)
        m = re.match(r"ready (\d+) (\d+)", p.stdout.readline())
        self.assertTrue(m, "no ready line")
        pid, want = int(m.group(1)), int(m.group(2))
        wait_until(lambda: (col.client(pid) or {}).get("live", {}).get("count", 0) >= want,
                   timeout=120, what="collectord to hold every block")

        def status(field):
            with open("/proc/%d/status" % col.proc.pid) as f:
                for line in f:
                    if line.startswith(field):
                        return int(line.split()[1]) * 1024
            raise AssertionError("no %s" % field)

        # The peak so far is the ingest's: start it over from now.
        with open("/proc/%d/clear_refs" % col.proc.pid, "w") as f:
            f.write("5")
        base = status("VmRSS:")
        s = json.loads(col.ctl("scan", str(pid), "--json").stdout)
        growth = status("VmHWM:") - base
        self.assertGreaterEqual(s["blocks"]["count"], want)
        self.assertEqual(s["unreachable"]["count"], 0)
        self.assertGreater(s["read_bytes"], 96 << 20)
        bound = s["read_bytes"] + 100 * s["blocks"]["count"] + (16 << 20)
        sys.stderr.write("FIGURE scan peak growth %.1f MiB, bound %.1f MiB (copied %.1f MiB, "
                         "%d blocks)\n" % (growth / 1048576.0, bound / 1048576.0,
                                           s["read_bytes"] / 1048576.0, s["blocks"]["count"]))
        self.assertLessEqual(growth, bound,
                             "peak grew %.1f MiB, bound %.1f MiB (copied %.1f MiB, %d blocks)" %
                             (growth / 1048576.0, bound / 1048576.0,
                              s["read_bytes"] / 1048576.0, s["blocks"]["count"]))
        p.stdin.close()
        self.assertEqual(p.wait(60), 0)

    def test_errors(self):
        r = self.col.ctl("scan", "1", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("pid 1 is not a connected client", r.stderr)
        r = self.col.ctl("scan", "x", check=False)
        self.assertEqual(r.returncode, 2)
        # An ended process cannot be scanned.
        p = self.col.start([prog("reach")])
        self.procs.append(p)
        pid = ready_pid(p)
        p.stdin.close()
        self.assertEqual(p.wait(30), 0)
        self.col.wait_state(pid, "exited")
        r = self.col.ctl("scan", str(pid), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not a connected client", r.stderr)
