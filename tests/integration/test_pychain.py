"""Retention paths through Python objects (issue 19.3): C blocks malloc'd
through ctypes and kept only by Python objects (a module-level dict -> a
list -> ctypes Holder objects whose field is the block's address;
tests/py/pychain_leak.py). `stackctl query leaks --reachability` must name
the objects on the chain by their type (ob_type -> tp_name read from the
scan's copy): untracked ones as "Items object (80 bytes)", a traced one
(exact mode) by its type beside its stack; JSON kept_by[].hops carries the
types. On every interpreter there is (3.11, and 3.13/3.14/3.15 when built):
their pymalloc pools share one header layout (3.15's pool_header is 3.14's).
Conservative scanning keeps its stale words: the chain's root side varies
(the interpreter's free lists, registers); the block side is asserted."""

import json
import os
import unittest

import swtest as sw
from swtest import ROOT, Collector, wait_until
from test_pythons import interpreters

SCRIPT = os.path.join(ROOT, "tests", "py", "pychain_leak.py")
N = 20
SIZE = 4099
SKIP = sw.ptrace_skip_reason()


def named(hop):
    """An untracked typed hop as the text says it."""
    if hop["bytes"]:
        return "%s object (%d bytes)" % (hop["type"], hop["bytes"])
    return "%s object" % hop["type"]


class _ChainBase:
    exe = None
    minor = None

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

    def start(self, **env):
        p = self.col.start([self.exe, SCRIPT, str(N)], **env)
        self.procs.append(p)
        self.assertEqual(p.stdout.readline().strip(), "ready")
        return p

    def held(self, rep, pid):
        """The stacks of the Holder-kept blocks (SIZE bytes each; newer
        interpreters call malloc through ctypes on two paths: two stacks),
        most blocks first."""
        got = [s for s in rep["stacks"] if s["pid"] == pid and s["alloc"]["count"] and
               s["alloc"]["bytes"] == s["alloc"]["count"] * SIZE]
        return sorted(got, key=lambda s: -s["alloc"]["count"])

    def scanned(self, p):
        wait_until(lambda: sum(s["may_leak"]["count"] for s in self.held(
            self.col.leaks("--pid", str(p.pid), "--top", "1000"), p.pid)) == N,
            timeout=40, what="the held blocks to be may-leak")
        rep = json.loads(self.col.ctl("query", "leaks", "--pid", str(p.pid), "--json",
                                      "--top", "1000", "--reachability").stdout)
        held = self.held(rep, p.pid)
        self.assertEqual(sum(s["reachable"]["count"] for s in held), N)
        text = self.col.ctl("query", "leaks", "--pid", str(p.pid), "--top", "1000").stdout
        return held, text

    def chains(self, held, kind):
        """(blocks kept by chains whose last hops have these types, the
        first such chain)."""
        n, first = 0, None
        for s in held:
            for k in s["kept_by"]:
                if [h["type"] for h in k["hops"][-len(kind):]] == kind:
                    n += k["blocks"]
                    first = first or k
        return n, first

    def test_untracked_objects_named_by_type(self):
        """Python objects not traced: each hop is the object's type and size."""
        p = self.start(STACKWATCH_PYTHON_ALLOCATORS="0")
        held, text = self.scanned(p)
        # A stale word (a register, the interpreter's data stack or free
        # lists) may keep a block or two by a chain of its own. With the C
        # library Debian's 3.14 and 3.15 packages bring (2.43), the ended
        # thread's stack stays a root: its stale words keep a few more.
        want = N - 5 if self.minor in ("3.11", "3.13") else N // 2
        n, first = self.chains(held, ["Items", "Holder"])
        self.assertGreaterEqual(n, want, [s["kept_by"] for s in held])
        hops = first["hops"][-2:]
        for h in hops:
            self.assertIsNone(h["stack"], h)
            # 0: the objects' sizes vary over the blocks (3.14's inline values)
            self.assertTrue(h["bytes"] == 0 or h["bytes"] >= 16, h)
        self.assertEqual(first["via"], [h["stack"] for h in first["hops"] if h["stack"]])
        want = ("-> %s -> %s -> these blocks (%d of %d sampled)"
                % (named(hops[0]), named(hops[1]), first["blocks"], first["sampled"]))
        self.assertTrue(want in text, want)
        self.assertFalse("-> Python objects -> these blocks" in text)
        html = os.path.join(self.col.tmp, "c.html")
        self.col.ctl("report", "--html", html, "--pid", str(p.pid), "--top", "1000")
        with open(html) as f:
            want = "%s &rarr; %s &rarr; these blocks" % (named(hops[0]), named(hops[1]))
            self.assertTrue(want in f.read(), want)

    def test_defaults_name_the_holder(self):
        """The defaults (small objects sampled): a Holder on the chain is
        named by its type, traced (with its stack) or not."""
        p = self.start()
        held, text = self.scanned(p)
        n, first = self.chains(held, ["Holder"])
        self.assertGreaterEqual(n, N - 5 if self.minor in ("3.11", "3.13") else N // 2,
                                [s["kept_by"] for s in held])
        self.assertTrue("Holder object" in text)

    def test_traced_object_named_with_its_stack(self):
        """Exact mode: the Holder objects are tracked blocks: the hop is
        their stack (ctypes' allocation) and their type."""
        p = self.start(STACKWATCH_PYTHON_ALLOCATORS="1")
        held, text = self.scanned(p)
        n, first = self.chains(held, ["Holder"])
        self.assertGreaterEqual(n, N - 5, [s["kept_by"] for s in held])
        last = first["hops"][-1]
        self.assertIsNotNone(last["stack"], first)
        self.assertIsNone(last["bytes"])
        want = "-> Holder object CallStack[%s]" % last["stack"]
        self.assertTrue(want in text, want)


_skipped = []
for _minor, _exe in sorted(interpreters().items()):
    _name = "PyChain%sTest" % _minor.replace(".", "")
    globals()[_name] = unittest.skipIf(SKIP, SKIP)(
        type(_name, (_ChainBase, unittest.TestCase), {"minor": _minor, "exe": _exe}))


if __name__ == "__main__":
    unittest.main()
