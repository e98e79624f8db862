"""pprof export: `stackctl query leaks --format pprof -o FILE` of a real leaking
program, read back with a minimal protobuf reader (stdlib only), and, when Go
is installed, by `go tool pprof` itself."""

import gzip
import os
import shutil
import struct
import subprocess
import tempfile
import unittest

from swtest import Collector, finish, markers, prog, stacks_with, wait_until


# ---------------------------------------------------------------- a minimal protobuf reader

def _varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def pb_fields(buf):
    """{field number: [values]} of one message: ints for varint and fixed
    fields, bytes for length-delimited ones (messages, strings, packed)."""
    out = {}
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(buf, i)
        elif wire == 1:
            v = struct.unpack_from("<Q", buf, i)[0]
            i += 8
        elif wire == 2:
            n, i = _varint(buf, i)
            v = bytes(buf[i:i + n])
            i += n
        elif wire == 5:
            v = struct.unpack_from("<I", buf, i)[0]
            i += 4
        else:
            raise ValueError("wire type %d at %d" % (wire, i))
        out.setdefault(num, []).append(v)
    return out


def pb_ints(values, signed=False):
    """A repeated integer field, packed or not."""
    out = []
    for v in values:
        if isinstance(v, bytes):
            i = 0
            while i < len(v):
                x, i = _varint(v, i)
                out.append(x)
        else:
            out.append(v)
    if signed:
        out = [x - (1 << 64) if x >= 1 << 63 else x for x in out]
    return out


def pb_one(msg, num, default=0):
    return msg.get(num, [default])[-1]


def read_profile(path):
    """profile.proto (gzipped) as plain Python: strings resolved, ids linked."""
    with gzip.open(path, "rb") as f:
        p = pb_fields(f.read())
    strings = [s.decode() for s in p.get(6, [])]
    s = strings.__getitem__
    functions = {}
    for raw in p.get(5, []):
        m = pb_fields(raw)
        functions[pb_one(m, 1)] = {"name": s(pb_one(m, 2)), "system_name": s(pb_one(m, 3)),
                                   "file": s(pb_one(m, 4))}
    mappings = {}
    for raw in p.get(3, []):
        m = pb_fields(raw)
        mappings[pb_one(m, 1)] = {"start": pb_one(m, 2), "limit": pb_one(m, 3),
                                  "file": s(pb_one(m, 5)), "build_id": s(pb_one(m, 6)),
                                  "has_functions": bool(pb_one(m, 7))}
    locations = {}
    for raw in p.get(4, []):
        m = pb_fields(raw)
        lines = []
        for lraw in m.get(4, []):
            ln = pb_fields(lraw)
            lines.append(dict(functions[pb_one(ln, 1)], line=pb_one(ln, 2)))
        mid = pb_one(m, 2)
        locations[pb_one(m, 1)] = {"address": pb_one(m, 3), "lines": lines,
                                   "mapping": mappings[mid] if mid else None}
    samples = []
    for raw in p.get(2, []):
        m = pb_fields(raw)
        labels = {}
        for lraw in m.get(3, []):
            lb = pb_fields(lraw)
            labels[s(pb_one(lb, 1))] = s(pb_one(lb, 2)) if pb_one(lb, 2) else pb_one(lb, 3)
        samples.append({"locations": [locations[i] for i in pb_ints(m.get(1, []))],
                        "values": pb_ints(m.get(2, []), signed=True), "labels": labels})
    types = []
    for raw in p.get(1, []):
        m = pb_fields(raw)
        types.append((s(pb_one(m, 1)), s(pb_one(m, 2))))
    return {"strings": strings, "sample_types": types, "samples": samples,
            "default_sample_type": s(pb_one(p, 14)), "mappings": mappings,
            "comments": [s(i) for i in pb_ints(p.get(13, []))],
            "time_nanos": pb_one(p, 9)}


# ---------------------------------------------------------------- tests

class PprofExportTest(unittest.TestCase):
    quick = False

    def setUp(self):
        self.col = Collector(expire=0.5)
        self.tmp = tempfile.mkdtemp(prefix="swtest-pprof-")
        self.line = markers("leaks.c")["malloc"]
        self.p = self.col.start([prog("leaks")])
        self.assertTrue(self.p.stdout.readline().startswith("ready"))
        wait_until(lambda: stacks_with(self.col.leaks("--pid", str(self.p.pid)), "leak_malloc",
                                       "tests/progs/leaks.c", self.line),
                   what="leak_malloc's block to expire")

    def tearDown(self):
        if self.p.poll() is None:
            finish(self.p)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.col.close()

    def export(self):
        path = os.path.join(self.tmp, "leaks.pb.gz")
        r = self.col.ctl("query", "leaks", "--pid", str(self.p.pid), "--format", "pprof",
                         "-o", path)
        self.assertIn("wrote " + path, r.stderr)
        with open(path, "rb") as f:
            self.assertEqual(f.read(2), b"\x1f\x8b", "not gzip")
        return path

    def test_pprof_profile_reaches_leak_malloc(self):
        prof = read_profile(self.export())
        self.assertEqual(prof["strings"][0], "")
        self.assertEqual(prof["sample_types"],
                         [("may_leak_objects", "count"), ("may_leak_space", "bytes"),
                          ("live_objects", "count"), ("live_space", "bytes")])
        self.assertEqual(prof["default_sample_type"], "may_leak_space")
        self.assertGreater(prof["time_nanos"], 0)
        self.assertTrue(any("expire 0.500s" in c for c in prof["comments"]), prof["comments"])

        def at_marker(sample):
            for loc in sample["locations"]:
                for ln in loc["lines"]:
                    if ln["name"] == "leak_malloc" and \
                            ln["file"].endswith("tests/progs/leaks.c") and ln["line"] == self.line:
                        return loc
            return None

        hits = [(s, at_marker(s)) for s in prof["samples"] if at_marker(s)]
        self.assertEqual(len(hits), 1, "one sample reaches leak_malloc at leaks.c:%d" % self.line)
        sample, loc = hits[0]
        self.assertEqual(sample["values"], [1, 1001, 1, 1001])
        self.assertEqual(sample["labels"]["pid"], self.p.pid)
        # Innermost first: leak_malloc's frame, then main.
        self.assertIs(sample["locations"][0], loc)
        self.assertEqual(sample["locations"][1]["lines"][-1]["name"], "main")
        m = loc["mapping"]
        self.assertTrue(m["file"].endswith("/progs/leaks"), m)
        self.assertTrue(m["has_functions"])
        self.assertRegex(m["build_id"], "^[0-9a-f]{40}$")
        self.assertTrue(m["start"] <= loc["address"] < m["limit"], (m, hex(loc["address"])))
        # Every planted leak is a sample, each with its may-leak bytes.
        self.assertGreaterEqual(len(prof["samples"]), 11)
        for s in prof["samples"]:
            self.assertEqual(len(s["values"]), 4)
            self.assertGreater(s["values"][1], 0)

    def test_go_tool_pprof_reads_it(self):
        go = shutil.which("go")
        if not go:
            self.fail("go not installed: make deps installs golang-go")
        path = self.export()
        home = os.path.join(self.tmp, "home")
        os.makedirs(home)
        env = dict(os.environ, HOME=home, GOCACHE=os.path.join(home, "gocache"),
                   GOPATH=os.path.join(home, "go"), GOFLAGS="", GOPROXY="off",
                   PPROF_TMPDIR=os.path.join(home, "pprof"))
        r = subprocess.run([go, "tool", "pprof", "-top", "-unit=byte",
                            "-sample_index=may_leak_space", path],
                           capture_output=True, text=True, timeout=120, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Type: may_leak_space", r.stdout)
        self.assertIn("leak_malloc", r.stdout)
        # Its may-leak bytes, as a flat entry.
        rows = [l.split() for l in r.stdout.splitlines() if l.rstrip().endswith("leak_malloc")]
        self.assertEqual(len(rows), 1, r.stdout)
        self.assertEqual(rows[0][0], "1001B", r.stdout)
        r = subprocess.run([go, "tool", "pprof", "-traces", "-sample_index=may_leak_space", path],
                           capture_output=True, text=True, timeout=120, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("leak_malloc", r.stdout)


if __name__ == "__main__":
    unittest.main()
