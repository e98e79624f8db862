"""Small-object leaks of C extensions (issue 18.3 and 18.5): blocks of 4..512
bytes from CPython's small-object allocator (pymalloc), which never reach
malloc.

- A C extension built here (tests/py/ext/smallobj.c) loses PyObject_Malloc and
  PyMem_Malloc blocks and makes a tuple it never releases, from the main
  thread and from a threading.Thread, on every supported interpreter: the
  leaking stack is the top stack, class leak, at the C function's file:line
  and with the Python line, while running and after exit.
- A program churning small objects with bounded state reports no leak.
- Two real, publicly reported small-block leaks of Debian 12's python3-ujson
  5.7.0 (references in tests/py/ujson_*_leak.py and below).
- Fragmentation over several glibc arenas (tests/progs/fragarenas.c) is named
  as such in the memory account and is no leak.

SMALLOBJ_ENV is the agent environment all of them run with (but the exact
counts test, which says exact mode itself): the defaults, under which
CPython's mem and object domains are traced, byte-sampled. Only the exact
test asserts counts exactly; the others assert stacks, classes, lines, and
figures within a tolerance that holds for sampled ones."""

import math
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

import swtest as sw
from swtest import ROOT, Collector, finish, prog, wait_until
from test_python import py_markers, script
from test_pythons import interpreters

SMALLOBJ_ENV = {}  # the defaults: small objects traced, sampled
EXACT_ENV = {"STACKWATCH_PYTHON_ALLOCATORS": "1"}  # every small object (exact mode)

EXPIRE = 0.5
DEBIAN_PY = "/usr/bin/python3.11"
EXT_SRC = os.path.join(ROOT, "tests", "py", "ext", "smallobj.c")


def ext_markers():
    """{name: line} of the '@LEAK name' comments of the extension's source."""
    return sw.markers(EXT_SRC)


def pid_stacks(report, pid):
    return [s for s in report["stacks"] if s["pid"] == pid]


def top_stack(col, pid):
    """The stack ranked first for pid (text leads with rank; JSON keeps
    may-leak order), with the JSON report it was read from; (None, report)
    when there is none."""
    text = col.ctl("query", "leaks", "--pid", str(pid), "--top", "1").stdout
    m = re.search(r"CallStack\[([0-9a-f]+)\]", text)
    rep = col.leaks("--pid", str(pid), "--top", "5")
    if not m:
        return None, rep
    top = [s for s in rep["stacks"] if s["id"] == m.group(1)]
    return (top[0] if top else None), rep


def has_frame(stack, function, file_suffix, line):
    return any(f["function"] == function and (f["file"] or "").endswith(file_suffix) and
               f["line"] == line for f in stack["frames"])


def blamed_tracebacks(stack):
    """Blamed Python tracebacks (innermost first) of a stack."""
    return [fr for fr, st in zip(stack.get("python") or [], stack.get("python_stats") or [])
            if st["blamed"] and fr]


def innermost(stack, fname):
    """{(function, line)} of the innermost frame of each blamed traceback
    when it is in fname."""
    return {(fr[0]["function"], fr[0]["line"]) for fr in blamed_tracebacks(stack)
            if fr[0]["file"].endswith(fname)}


def no_leak_class(test, col, pid, what):
    """No stack of pid is of class leak (all stacks, not only may-leak)."""
    rep = col.leaks("--pid", str(pid), "--all")
    bad = [(s["id"], s["class"], [(f["function"], f["file"], f["line"])
                                  for f in s["frames"][:4]], blamed_tracebacks(s)[:1])
           for s in pid_stacks(rep, pid) if s["class"] == "leak"]
    test.assertEqual(bad, [], "%s: a leak-class stack" % what)
    return rep


def note(msg):
    sys.stderr.write("\n    [smallobj] %s " % msg)


class _ExtBase:
    """The planted leaks of tests/py/ext/smallobj.c on one interpreter."""
    quick = False
    minor = None
    exe = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="swsmall-")
        sw.build_ext(cls.exe, EXT_SRC, cls.tmp, ["-Wall", "-Wextra", "-Werror"])
        # Debian's 3.14 and 3.15 packages, unpacked by build-python.sh, come
        # without byte code (their postinst compiles it), and the test
        # environment says not to write any: every start would compile the
        # standard library it imports, under exact tracing for seconds, many
        # expire times of start-up growth. Compiled once here, untraced,
        # into a private cache.
        cls.pyenv = {"PYTHONPATH": cls.tmp, "PYTHONDONTWRITEBYTECODE": None,
                     "PYTHONPYCACHEPREFIX": os.path.join(cls.tmp, "pycache")}
        warm = dict(os.environ, **{k: v for k, v in cls.pyenv.items() if v})
        warm.pop("PYTHONDONTWRITEBYTECODE", None)
        warm.pop("LD_PRELOAD", None)
        subprocess.run([cls.exe, "-c", "import collections, functools, select, sys, threading, "
                        "smallobj"], env=warm, check=True)

    @classmethod
    def tearDownClass(cls):
        subprocess.run(["rm", "-rf", cls.tmp])

    def setUp(self):
        self.col = Collector(expire=EXPIRE)

    def tearDown(self):
        self.col.close()

    def start(self, args, env):
        e = dict(env, **self.pyenv)
        p = self.col.start([self.exe, script("smallobj_leak.py")] + args, **e)
        first = p.stdout.readline().strip()
        self.assertTrue(first, "no first line: %s" % p.stderr.read() if p.poll() is not None
                        else "")
        return p, first

    def check_top(self, pid, func, line, pyfunc, pyline):
        """The top stack when it is the planted leak: class leak, the C
        function at smallobj.c:line, the blamed Python line; else None."""
        top, rep = top_stack(self.col, pid)
        if not top or top["class"] != "leak" or not has_frame(top, func, "smallobj.c", line):
            return None
        if (pyfunc, pyline) not in innermost(top, "smallobj_leak.py"):
            return None
        return top, rep

    def run_leak(self, kind, where):
        cm, pm = ext_markers(), py_markers("smallobj_leak.py")
        func = {"obj": "obj_leak", "mem": "mem_leak", "ref": "ref_leak"}[kind]
        line, pyfunc, pyline = cm[func], "leak_" + kind, pm["so_" + kind]
        t0 = time.monotonic()
        p, first = self.start([kind, where], SMALLOBJ_ENV)
        self.assertEqual(first, "ready")
        top, rep = wait_until(lambda: self.check_top(p.pid, func, line, pyfunc, pyline),
                              timeout=120, interval=0.1,
                              what="%s:%d (%s) the top leak under %s" % (func, line, kind,
                                                                          self.minor))
        took = time.monotonic() - t0
        # Figures for the record, not asserted (a shared machine's load
        # decides them): from the start, and the age of the stack's oldest
        # live block when it was found (its first leaked block, about).
        age = (top["unfreed_max_age_ms"] or 0) / 1000.0
        note("%s %s/%s: top leak %.1f s after start, %.1f s (%.1f expire times) after its "
             "first block" % (self.minor, kind, where, took, age, age / EXPIRE))
        c = [c for c in rep["clients"] if c["pid"] == p.pid][0]
        self.assertTrue(c["python"].startswith(self.minor + "."), c["python"])
        # Small blocks: 4..512 bytes each.
        ml = top["may_leak"]
        self.assertGreater(ml["count"], 0)
        self.assertLessEqual(ml["bytes"] / ml["count"], 512, ml)
        self.assertGreaterEqual(ml["bytes"] / ml["count"], 4, ml)
        # The Python stack: the leaking line, called from backtest, in the
        # thread it ran in.
        for fr in blamed_tracebacks(top):
            if fr[0]["function"] == pyfunc:
                names = [f["function"] for f in fr]
                self.assertEqual(names[1], "backtest", names)
                self.assertEqual("Thread.run" in names, where == "thread", names)
        # The churn next to it (same allocations, freed) is never a leak.
        churn = sw.stacks_with(rep, "churn", "smallobj.c")
        self.assertEqual([s["class"] for s in churn if s["class"] == "leak"], [])
        text = self.col.ctl("query", "leaks", "--pid", str(p.pid), "--top", "1").stdout
        self.assertRegex(text, r"\[Python\]\s+%s:%d %s\n" % (re.escape(script("smallobj_leak.py")),
                                                               pyline, re.escape(pyfunc)))
        # The leak ends as soon as it is found (its first block ~2.5 expire
        # times old): the verdict kept at the end must still be leak. (CI,
        # 2026-12-07: 3 of 8 worker-thread leaks ended this way were
        # `retained` (0.40) after exit: the sampled stack's windows without a
        # new allocation sample read as "stopped"; the test then let the leak
        # run 4 expire times, which hid it. Fixed in the classifier, see
        # tests/unit/test_classify.c; on a loaded 2-vCPU VM 16 of 264 runs of
        # the main/worker cases failed before, 0 of 204 after.)
        rc, out, err = finish(p)
        self.assertEqual(rc, 0, err)
        self.assertIn("done", out)
        # After exit: the verdict and its lines hold (the interpreter's
        # teardown frees are not counted).
        self.col.wait_state(p.pid, "exited")
        got = self.check_top(p.pid, func, line, pyfunc, pyline)
        self.assertIsNotNone(got, self.col.ctl("query", "leaks", "--pid", str(p.pid),
                                               "--top", "2").stdout)
        return got[0]

    def test_object_malloc_main_thread(self):
        self.run_leak("obj", "main")

    def test_object_malloc_worker_thread(self):
        self.run_leak("obj", "thread")

    def test_mem_malloc_main_thread(self):
        self.run_leak("mem", "main")

    def test_mem_malloc_worker_thread(self):
        self.run_leak("mem", "thread")

    def test_reference_leak_main_thread(self):
        self.run_leak("ref", "main")

    def test_reference_leak_worker_thread(self):
        self.run_leak("ref", "thread")

    def test_reference_leak_through_free_list(self):
        """Issue 18.3, "no false leak from free lists": pair_leak's 2-tuples
        (and, from 3.14, its ints) come from CPython's free lists, refilled
        by the 2-tuples and ints churn() frees. The allocator never sees an
        object parked on a free list, so churn's sampled tuple stayed live
        for good and churn (smallobj.c's churn line, and its Python line)
        was blamed as the leak. The agent now wraps the free-listed types'
        tp_dealloc: a sampled object's FREE is recorded as it is
        deallocated. churn is never blamed, on every interpreter; pair_leak
        is found through its ints on 3.11 and 3.13 (fresh allocations). On
        3.14 and 3.15 its ints come from a free list too: an object taken
        from a free list is never seen (no allocator call), so a leak whose
        every object is free-listed, beside frees of as many, stays unseen
        there (a known limit, docs/python.md); churn must still not be
        blamed for it."""
        cm = ext_markers()
        p, first = self.start(["pair", "main"], SMALLOBJ_ENV)
        self.assertEqual(first, "ready")
        ints_free_listed = self.minor not in ("3.11", "3.13")
        try:
            # Over 20 expire times of the process's life (its own clock in
            # the report), churn's stacks never a leak; pair_leak's a leak
            # for that long where its ints are allocated.
            def blamed(rep):
                return [s["id"] for s in sw.stacks_with(rep, "churn", "smallobj.c")
                        if s["class"] == "leak"]

            def outcome():
                rep = self.col.leaks("--pid", str(p.pid), "--all")
                self.assertEqual(blamed(rep), [], "churn blamed for pair_leak's free-listed "
                                 "objects")
                if ints_free_listed:
                    c = [c for c in rep["clients"] if c["pid"] == p.pid][0]
                    return rep if c["duration_ms"] >= 20000 * EXPIRE else None
                pair = sw.stacks_with(rep, "pair_leak", "smallobj.c", cm["pair_leak"])
                if any(s["class"] == "leak" and (s["unfreed_max_age_ms"] or 0) >=
                       20000 * EXPIRE for s in pair):
                    return rep
                return None
            wait_until(outcome, timeout=120, what="20 expire times of pair_leak")
        finally:
            finish(p)

    def counted(self, n, env):
        """Leaks exactly n PyObject_Malloc blocks; returns (stack, bytes)
        once the stack's figures stop changing."""
        cm = ext_markers()
        p, first = self.start(["obj", "main", str(n)], env)
        words = first.split()
        self.assertEqual(words[:2], ["leaked", str(n)])
        truth = int(words[2])

        def settled():
            rep = self.col.leaks("--pid", str(p.pid), "--all")
            st = sw.stacks_with(rep, "obj_leak", "smallobj.c", cm["obj_leak"])
            if not st:
                return None
            c = [c for c in rep["clients"] if c["pid"] == p.pid][0]
            # Everything sent is applied: two readings of the client's event
            # count agree after the program stopped allocating.
            return (st, c["events"])

        prev = [None]

        def stable():
            got = settled()
            if got and prev[0] and got[1] == prev[0][1]:
                return got[0]
            prev[0] = got
            return None
        st = wait_until(stable, timeout=120, interval=1.0, what="the counted leak to be applied")
        finish(p)
        return st, truth

    def test_exact_counts(self):
        """Exact mode: every block is counted, to the byte."""
        n = 5000
        st, truth = self.counted(n, EXACT_ENV)
        # One C stack or more (the specializing interpreter calls the
        # function through more than one path): their sum is the truth.
        for s in st:
            self.assertFalse(s["estimate"])
            self.assertEqual(s["free"]["count"], 0)
        self.assertEqual(sum(s["alloc"]["count"] for s in st), n)
        self.assertEqual(sum(s["alloc"]["bytes"] for s in st), truth)
        self.assertEqual(sum(s["live"]["count"] for s in st), n)
        self.assertEqual(sum(s["live"]["bytes"] for s in st), truth)

    def test_figures_within_tolerance(self):
        """SMALLOBJ_ENV (sampled when that is the default): the figures of a
        known leak of ~31 MB in 120000 blocks are near the truth. At one
        sample per 256 KiB that is ~118 samples, a standard error near 9%;
        40% is more than 4 sigma for the bytes. The count is heavy-tailed:
        a sampled block of s bytes stands for 1/(1 - e^(-s/256Ki)) blocks,
        and one sampled 4-byte block alone for 65,536 (55% of n; blocks of
        16 bytes or less are sampled in ~12% of runs): CI saw 179,941 once.
        The count may be off by 40% plus one such sample."""
        n = 120000
        st, truth = self.counted(n, SMALLOBJ_ENV)
        live_b = sum(s["live"]["bytes"] for s in st)
        live_n = sum(s["live"]["count"] for s in st)
        self.assertLess(abs(live_b - truth), 0.4 * truth, (live_b, truth))
        rate = 256 << 10
        one_tiny = 1 / (1 - math.exp(-4 / rate))
        self.assertLess(abs(live_n - n), 0.4 * n + one_tiny, (live_n, n))

    def test_churn_reports_no_leak(self):
        """Bounded state: dicts, tuples, strings made and dropped, interned
        strings, free lists, an lru_cache and a deque filled to their bound,
        the extension's freed allocations: no leak-class stack, running
        (over many expire times) and after exit."""
        e = dict(SMALLOBJ_ENV, **self.pyenv)
        p = self.col.start([self.exe, script("smallobj_churn.py")], **e)
        self.assertEqual(p.stdout.readline().strip(), "ready")
        # Many expire times of steady state: the program reports rounds.
        t0 = time.monotonic()
        sw.wait_lines(p, r"^round \d+", 12, timeout=120)
        note("%s churn: %.1f s of rounds" % (self.minor, time.monotonic() - t0))
        rep = no_leak_class(self, self.col, p.pid, "running")
        # It was traced: the extension's churn is among the stacks.
        self.assertTrue(sw.stacks_with(rep, "churn", "smallobj.c"), "churn not seen")
        rc, out, err = finish(p)
        self.assertEqual(rc, 0, err)
        self.col.wait_state(p.pid, "exited")
        no_leak_class(self, self.col, p.pid, "after exit")


_missing = []
for _minor, _exe in sorted(interpreters().items()):
    _name = "SmallObjExt%sTest" % _minor.replace(".", "")
    globals()[_name] = type(_name, (_ExtBase, unittest.TestCase), {"minor": _minor, "exe": _exe})
for _minor in ("3.13", "3.14", "3.15"):
    if _minor not in interpreters():
        _missing.append(_minor)
if _missing:
    sys.stderr.write("test_smallobj: CPython %s not built (make pythons builds them): their "
                     "tests are skipped\n" % ", ".join(_missing))


class SmallObjRealBugsTest(unittest.TestCase):
    """Publicly reported small-block leaks of C extensions Debian 12 ships,
    reproduced on its python3-ujson 5.7.0 (stripped: its own frames are
    module+offset but for the few exported symbols)."""
    quick = False
    UJSON = "ujson.cpython-311-x86_64-linux-gnu.so"

    def setUp(self):
        r = subprocess.run([DEBIAN_PY, "-c", "import ujson; print(ujson.__version__)"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if r.stdout.strip() != "5.7.0":
            self.skipTest("python3-ujson 5.7.0 is not installed (make deps installs it): %r" %
                          r.stdout.strip())
        self.col = Collector(expire=EXPIRE)

    def tearDown(self):
        self.col.close()

    def found(self, name, check):
        """Runs tests/py/NAME; returns (process, top stack) once check(top)."""
        p = self.col.start([DEBIAN_PY, script(name)], **SMALLOBJ_ENV)
        self.assertEqual(p.stdout.readline().split(), ["ready", "5.7.0"])

        def ok():
            top, _ = top_stack(self.col, p.pid)
            return top if top and top["class"] == "leak" and check(top) else None
        t0 = time.monotonic()
        top = wait_until(ok, timeout=120, interval=0.1, what="%s's leak on top" % name)
        age = (top["unfreed_max_age_ms"] or 0) / 1000.0
        note("%s: top leak %.1f s after start, %.1f s (%.1f expire times) after its first "
             "block" % (name, time.monotonic() - t0, age, age / EXPIRE))
        return p, top

    def ujson_frames(self, top):
        return [f for f in top["frames"] if (f["module"] or "").endswith(self.UJSON)]

    def after_exit(self, p, check):
        rc, out, err = finish(p)
        self.assertEqual(rc, 0, err)
        self.col.wait_state(p.pid, "exited")
        top, _ = top_stack(self.col, p.pid)
        self.assertIsNotNone(top)
        self.assertEqual(top["class"], "leak", top)
        self.assertTrue(check(top), top["frames"][:4])

    def test_ujson_loads_big_integer_digits(self):
        """CVE-2026-32874 (GHSA-wgvc-ghv9-3pmm), fixed in ujson 5.12.0 by
        ultrajson/ultrajson commit 4baeb950df78 "Fix memory leak parsing
        large integers": Object_newIntegerFromString copies the digits of an
        integer beyond 64 bits into PyObject_Malloc(length + 1) and never
        frees it; 26..57 bytes per integer here."""
        line = py_markers("ujson_bigint_leak.py")["ujson_bigint"]

        def check(top):
            if not ("decode", line) in innermost(top, "ujson_bigint_leak.py"):
                return False
            # The block is allocated by ujson itself: the innermost frame is
            # in its stripped module (Object_newIntegerFromString, static,
            # has no symbol), under its exported JSONToObj.
            f0 = top["frames"][0]
            return ((f0["module"] or "").endswith(self.UJSON) and
                    any(f["function"] == "JSONToObj" for f in self.ujson_frames(top)))

        p, top = self.found("ujson_bigint_leak.py", check)
        f0 = top["frames"][0]
        self.assertIsNone(f0["function"])
        self.assertIsNotNone(f0["module_offset"])
        ml = top["may_leak"]
        # Digit copies: 26..57 bytes, from pymalloc.
        self.assertLessEqual(ml["bytes"] / ml["count"], 64, ml)
        self.assertGreaterEqual(ml["bytes"] / ml["count"], 20, ml)
        self.after_exit(p, check)

    def test_ujson_default_str_reference(self):
        """ultrajson/ultrajson issue #631, fixed by commit 9f90a8c797a2
        (#714, ujson 5.12.1): with ensure_ascii=True a non-ASCII str
        returned by default() is never released. The str is made by the
        Python default() callable ujson calls: its C stack runs through
        ujson's encoder (objToJSON, JSON_EncodeObject) and its Python stack
        has the default() line under the dumps line."""
        m = py_markers("ujson_default_leak.py")

        def check(top):
            if ("fallback", m["ujson_default_str"]) not in innermost(top, "ujson_default_leak.py"):
                return False
            names = {f["function"] for f in self.ujson_frames(top)}
            return {"objToJSON", "JSON_EncodeObject"} <= names

        p, top = self.found("ujson_default_leak.py", check)
        for fr in blamed_tracebacks(top):
            if fr[0]["function"] == "fallback":
                self.assertEqual((fr[1]["function"], fr[1]["line"]),
                                 ("encode", m["ujson_default_dumps"]), fr)
        ml = top["may_leak"]
        self.assertLessEqual(ml["bytes"] / ml["count"], 512, ml)
        self.after_exit(p, check)


class SmallObjFragmentationTest(unittest.TestCase):
    """tests/progs/fragarenas.c: four threads, four glibc arenas; each one's
    first batch leaves ~16 MiB free but held, while the live heap stays at
    ~260 KiB. The memory account must put the RSS growth on malloc's
    free-but-held memory, and no stack may be a leak."""
    quick = False

    def setUp(self):
        self.col = Collector(expire=EXPIRE)

    def tearDown(self):
        self.col.close()

    def test_fragmentation_not_leak(self):
        p = self.col.start([prog("fragarenas")], **SMALLOBJ_ENV)
        try:
            m = re.match(r"ready (\d+)", p.stdout.readline())
            self.assertTrue(m)
            pid = int(m.group(1))
            wait_until(lambda: (self.col.client(pid) or {}).get("memory", {}).get("rss_bytes"),
                       what="a first memory reading")

            def rss():
                with open("/proc/%d/statm" % pid) as f:
                    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

            def step():
                p.stdin.write("step\n")
                p.stdin.flush()
                self.assertEqual(p.stdout.readline().strip(), "ok")

            base = rss()
            readings = []
            # One batch per thread: RSS grows step by step, each thread's batch
            # in its own arena (one arena would reuse the first batch's
            # free memory and stay flat, as the next rounds do).
            for k in range(4):
                step()
                readings.append(rss() - base)
            for k in range(8):  # two more rounds: each arena reuses its memory
                step()
            grown = rss() - base
            self.assertGreaterEqual(grown, 48 << 20, readings)
            for a, b in zip(readings, readings[1:]):
                self.assertGreater(b - a, 8 << 20, readings)
            # The collector has seen it all: the live heap is flat and small.
            want = 12 * (16 << 20) // 256

            def applied():
                c = self.col.client(pid)
                return c if c and c["total_allocs"] >= want and \
                    c["memory"].get("rss_bytes", 0) - c["memory"].get("rss_start_bytes", 0) \
                    >= 40 << 20 else None
            c = wait_until(applied, timeout=120, what="the batches and a later memory reading")
            text = wait_until(lambda: (lambda t: t if "free (fragmentation" in t else None)(
                self.col.ctl("query", "leaks", "--pid", str(pid), "--all").stdout),
                timeout=30, what="the account to name fragmentation")
            c = self.col.client(pid)
            mem = c["memory"]
            self.assertLess(c["live"]["bytes"], 4 << 20, c["live"])
            self.assertGreaterEqual(mem["heap_free_bytes"], 40 << 20, mem)
            self.assertNotIn("grew outside malloc", text)
            self.assertRegex(text, r"note: tracked live bytes explain \d+% of the RSS growth")
            # Once the batch stack's oldest live block is three expire times
            # old (the collector aged it that long): still no leak.
            def aged():
                rep = self.col.leaks("--pid", str(pid), "--all")
                st = sw.stacks_with(rep, "batch", "fragarenas.c")
                return st if st and max(s["unfreed_max_age_ms"] or 0 for s in st) >= \
                    3000 * EXPIRE else None
            wait_until(aged, timeout=120, what="the batches' blocks to age")
            no_leak_class(self, self.col, pid, "running")
        finally:
            p.stdin.close()
            p.wait(30)
            p.stdout.close()
        self.col.wait_state(pid, "exited")
        no_leak_class(self, self.col, pid, "after exit")


if __name__ == "__main__":
    unittest.main()
