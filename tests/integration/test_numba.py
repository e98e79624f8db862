"""The seed's leak, end to end (issue 19's done-when): Debian's numba, a
nopython generator fed a boolean-mask subscript (chunk[to_keep]) and never
run to completion. numba's finalizer decrefs the generator's arguments only,
so the NRT meminfo made when the generator is created (malloc'd by numba's
runtime, under the GIL) is never freed and is lost directly; it holds the
subscript's ndarray (a Python object in pymalloc's pools), which holds the
data buffer numpy malloc'd. `stackctl query leaks --reachability`, with no
other option, must show numpy's buffers lost *indirectly*, owned by the
meminfos' stack, whose Python line is the one that creates the generator.
Debian's numpy and numba are stripped: frames are module+offset."""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

import swtest as sw
from swtest import ROOT, Collector, finish, wait_until

PY = "/usr/bin/python3"
SCRIPT = os.path.join(ROOT, "tests", "py", "numba_gen_leak.py")


def py_markers():
    return sw.markers(SCRIPT, "PY")


def numba_missing():
    r = subprocess.run([PY, "-c", "import numba"], capture_output=True)
    return None if r.returncode == 0 else "python3-numba is not installed (scripts/deps.sh)"


SKIP = sw.ptrace_skip_reason() or numba_missing()


def blamed_line(s):
    """(function, line) of the innermost frame of the stack's blamed
    traceback in the script, or None."""
    for tb, st in zip(s["python"], s["python_stats"]):
        if st["blamed"] and tb and tb[0]["file"] == SCRIPT:
            return tb[0]["function"], tb[0]["line"]
    return None


def module_of(f):
    return os.path.basename(f["module"] or "")


@unittest.skipIf(SKIP, SKIP)
class NumbaGeneratorTest(unittest.TestCase):
    quick = False

    def setUp(self):
        self.col = Collector(expire=0.5)

    def tearDown(self):
        self.col.close()

    def find(self, rep, pid):
        """(numpy's buffers, NRT's meminfos): stacks of pid by their first
        frame's module and blamed Python line, once both lines are in."""
        m = py_markers()
        buf = nrt = None
        for s in rep["stacks"]:
            if s["pid"] != pid or not s["frames"]:
                continue
            top = module_of(s["frames"][0])
            line = blamed_line(s)
            if top.startswith("_multiarray_umath") and line == ("first_hit", m["mask"]) and (
                    not buf or s["alloc"]["bytes"] // max(1, s["alloc"]["count"]) >
                    buf["alloc"]["bytes"] // max(1, buf["alloc"]["count"])):
                buf = s  # the data buffers (the ndarray's dims are smaller)
            if top.startswith("_nrt_python") and line == ("first_hit", m["gen"]):
                nrt = s
        return (buf, nrt) if buf and nrt else None

    def test_generator_state_owns_the_mask_buffers(self):
        m = py_markers()
        p = self.col.start([PY, SCRIPT])
        self.assertEqual(p.stdout.readline().strip(), "ready")
        pid = p.pid
        t0 = time.monotonic()
        wait_until(lambda: (lambda r: r and r[1]["may_leak"]["count"] >= 100)(
                       self.find(self.col.leaks("--pid", str(pid)), pid)),
                   timeout=90, what="both Python lines and 100 leaked generators")
        t1 = time.monotonic()
        # The query as a user types it: it scans every process first.
        text = self.col.ctl("query", "leaks", "--reachability").stdout
        if os.environ.get("SW_TIMING"):
            sys.stderr.write("waited %.1f s, query %.1f s\n" % (t1 - t0, time.monotonic() - t1))
        rep = self.col.leaks("--pid", str(pid))
        buf, nrt = self.find(rep, pid)
        # The meminfos: lost directly, nothing else points to them (the
        # generator object that did is freed), and they own the buffers.
        lost = nrt["unreachable"]["count"]
        self.assertGreaterEqual(lost, 50, nrt["unreachable"])
        self.assertEqual(nrt["unreachable_direct"]["count"], lost)
        self.assertLessEqual(nrt["reachable"]["count"], lost // 4)  # stale words, a few
        # Each owns its buffer, but for a few whose buffer a stale word still
        # reaches (the same tolerance as the buffers' count below).
        self.assertGreaterEqual(nrt["owns"]["count"], lost * 9 // 10)
        # numpy's buffers: every lost one lost indirectly, owned by the
        # meminfos (through the ndarray, a Python object, untracked).
        self.assertGreaterEqual(buf["unreachable"]["count"], lost * 9 // 10)
        self.assertEqual(buf["unreachable_direct"]["count"], 0)
        self.assertEqual(buf["unreachable_indirect"], buf["unreachable"])
        self.assertEqual(buf["owners"][0]["stack"], nrt["id"])
        # The meminfos own them, but for a few reached through a sampled
        # ndarray (small objects are traced by default: a sampled one is a
        # tracked block, and then it is the buffer's owner).
        self.assertGreaterEqual(buf["owners"][0]["blocks"]["count"],
                                buf["unreachable"]["count"] * 9 // 10)
        self.assertLessEqual(buf["reachable"]["count"], lost // 4)
        # Text: the owner named by its stripped module and its Python line.
        block = [b for b in text.split("\n\n") if b.startswith("CallStack[%s]" % buf["id"])]
        self.assertEqual(len(block), 1, text[:3000])
        self.assertRegex(block[0], r"lost directly=0 \(0 bytes\) indirectly=%d " %
                         buf["unreachable"]["count"])
        self.assertRegex(block[0], re.escape("owned by CallStack[%s] at _nrt_python" % nrt["id"]) +
                         r"\S*\+0x[0-9a-f]+ " + re.escape("← numba_gen_leak.py:%d first_hit" % m["gen"]))
        self.assertRegex(block[0], r"\[Python\]\s+%s:%d first_hit" % (re.escape(SCRIPT), m["mask"]))
        # HTML: the buffers' row links the owner's, which has the line.
        html = os.path.join(self.col.tmp, "r.html")
        self.col.ctl("report", "--html", html, "--pid", str(pid))
        with open(html) as f:
            h = f.read()
        self.assertIn('owned by <a href="#s%s-%d">' % (nrt["id"], pid), h)
        self.assertIn('id="s%s-%d"' % (nrt["id"], pid), h)
        rc, out, err = finish(p)
        self.assertEqual(rc, 0, err[-2000:])
        self.assertRegex(out, r"leaked \d+")


WORKLOAD = os.path.join(ROOT, "bench", "workloads", "numba_compile.py")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@unittest.skipIf(numba_missing(), numba_missing())
class CollectordMemoryTest(unittest.TestCase):
    """Issue 20.2: after a big process ends and its report is saved,
    collectord's RSS comes back near what it keeps for the ended process
    (its stacks, for queries) and its frames cache. numba compiling four
    functions: ~50,000 stacks, 1.6 M pcs in 56 modules with libLLVM-14.
    Measured (bench/numba_mem.py): 280-450 MB before (the save's ~325 MB
    of protobuf-c messages held by the heap, libdw's and libelf's data of
    every module kept open), 157 MB with the trim only, 56 MB now; the
    bound is 128 MiB."""

    BOUND_KIB = 128 * 1024

    def run_workload(self, col):
        """Runs the numba workload under col; its ended client."""
        r = col.run([PY, WORKLOAD], timeout=900)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        c = wait_until(lambda: [x for x in col.clients() if x["state"] != "connected"],
                       timeout=60, what="the numba process to end")[0]
        self.assertGreater(c["stacks"], 10000)
        return c

    def test_rss_comes_back_after_a_big_process_is_saved(self):
        # Its report is stored (it was refused before: over the store's
        # 256 MiB with a Frame per frame; frames by reference now), and a
        # collectord started again on the same directory serves it.
        base = tempfile.mkdtemp(prefix="swnumba-")
        rundir = os.path.join(base, "run")
        col = Collector(expire=0.5, dirpath=rundir)
        try:
            c = self.run_workload(col)
            pid = col.proc.pid
            reports = os.path.join(col.dir, "state", "reports")

            def saved():
                names = os.listdir(reports) if os.path.isdir(reports) else []
                got = [n for n in names if n.startswith("p%d-" % c["pid"]) and
                       n.endswith(".swr")]
                self.assertNotIn("report of pid %d is too large" % c["pid"], col.read_log())
                return got and os.path.join(reports, got[0])

            path = wait_until(saved, timeout=600, interval=0.5, what="the ended process's save")
            sys.stderr.write("FIGURE numba process (%d stacks): its stored report %.1f MB\n" %
                    (c["stacks"], os.path.getsize(path) / 1e6))
            self.wait_rss(pid, "after the process is saved")
            # The ended process is still there to query.
            self.assertEqual(len([x for x in col.clients() if x["pid"] == c["pid"]]), 1)
            col.close()
            col = Collector(expire=0.5, dirpath=rundir)
            rep = col.leaks("--pid", str(c["pid"]), "--top", "5")
            self.assertTrue(rep["stacks"], rep)
            for st in rep["stacks"]:
                self.assertTrue(st["restored"], st)
                self.assertTrue(st["frames"], st)
            # Functions come back (numba's own frames have names in libLLVM's
            # dynamic symbols or libc's; stripped modules give offsets).
            self.assertTrue(any(f["function"] for st in rep["stacks"] for f in st["frames"]),
                            rep["stacks"][0]["frames"])
        finally:
            col.close()
            subprocess.run(["rm", "-rf", base])

    def wait_rss(self, pid, when):
        """VmRSS under the bound within 120 s (not under a sanitizer: its
        shadow and quarantine are not collectord's)."""
        if sw.sanitized_collector():
            return
        try:
            wait_until(lambda: rss_kib(pid) < self.BOUND_KIB, timeout=120, interval=0.5,
                       what="collectord's RSS under %d KiB" % self.BOUND_KIB)
        except AssertionError:
            self.fail("collectord's RSS %d KiB %s (bound %d KiB)"
                      % (rss_kib(pid), when, self.BOUND_KIB))

    def test_rss_comes_back_without_a_store(self):
        """--state-dir none: no save; the modules' libdw handles are closed
        once the symbolizer has nothing queued (147 MB before, 52 MB now)."""
        col = Collector(expire=0.5, extra=("--state-dir", "none"))
        try:
            c = self.run_workload(col)
            self.wait_rss(col.proc.pid, "after the process ended")
            # The ended process can still be queried (its frames stayed cached).
            col.ctl("query", "leaks", "--pid", str(c["pid"]))
        finally:
            col.close()


if __name__ == "__main__":
    unittest.main()
