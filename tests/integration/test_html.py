"""stackctl report --html: one self-contained page (nothing fetched from the
network) naming the leaking functions, which headless Chromium renders into a
chart, a flame graph and the ranked table, and whose hover, zoom, scale and
row handlers run without a script error."""

import html as htmllib
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import unittest
import zlib

from swtest import Collector, finish, prog, stacks_with, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LEAK_FUNCTIONS = ("leak_malloc", "leak_calloc", "leak_realloc_grow", "leak_strdup")

# Appended to a copy of the page: drives the handlers the way a user would and
# leaves what it saw in <body data-selftest>, for --dump-dom.
SELFTEST = """<script>
(function () {
  var out = {errors: []};
  window.addEventListener('error', function (e) { out.errors.push(String(e.message)); });
  function fire(el, type, x, y) {
    el.dispatchEvent(new MouseEvent(type, {bubbles: true, clientX: x, clientY: y}));
  }
  try {
    var tip = document.getElementById('tip');
    var chart = document.getElementById('chart-svg');
    var r = chart.getBoundingClientRect();
    fire(chart, 'mousemove', r.left + r.width * 0.7, r.top + r.height / 2);
    out.chartTip = tip.hidden ? '' : tip.textContent;
    fire(chart, 'mouseleave', 0, 0);
    out.lines = chart.querySelectorAll('path.ln').length;
    document.querySelector('button[data-scale=log]').click();
    out.logLines = chart.querySelectorAll('path.ln').length;
    out.logTicks = Array.prototype.map.call(chart.querySelectorAll('text'),
                                            function (t) { return t.textContent; });
    var rects = document.querySelectorAll('#flame-svg rect');
    out.flameRects = rects.length;
    var deepest = null;
    Array.prototype.forEach.call(document.querySelectorAll('#flame-svg g[transform]'),
      function (g) {
        var t = g.querySelector('text');
        if (t && /^leak_/.test(t.textContent)) deepest = g.querySelector('rect');
      });
    if (deepest) {
      fire(deepest, 'mousemove', 10, 10);
      out.flameTip = tip.hidden ? '' : tip.textContent;
      fire(deepest, 'click', 10, 10);
      out.zoomedRects = document.querySelectorAll('#flame-svg rect').length;
      out.resetEnabled = !document.getElementById('flame-reset').disabled;
      document.getElementById('flame-reset').click();
      out.resetRects = document.querySelectorAll('#flame-svg rect').length;
    }
    function rowLabels(y) {
      var labels = [];
      Array.prototype.forEach.call(document.querySelectorAll('#flame-svg g[transform]'),
        function (g) {
          var m = /translate\(([-\d.]+),(\d+)\)/.exec(g.getAttribute('transform'));
          var t = g.querySelector('text');
          if (m && +m[2] === y && t) labels.push(t.textContent);
        });
      return labels;
    }
    out.tdOrder = document.body.dataset.flameOrder;
    out.tdRow2 = rowLabels(38);
    document.querySelector('button[data-order=bu]').click();
    out.buOrder = document.body.dataset.flameOrder;
    out.buRow2 = rowLabels(38);
    out.buNote = document.getElementById('flame-note').textContent;
    document.querySelector('button[data-order=td]').click();
    out.backRow2 = rowLabels(38);
    var row = document.querySelector('#stacks tbody.stack tr.row');
    var detail = row.parentNode.querySelector('tr.detail');
    out.detailBefore = getComputedStyle(detail).display;
    row.click();
    out.detailAfter = getComputedStyle(detail).display;
    out.detailText = detail.textContent;
  } catch (e) {
    out.errors.push(String(e));
  }
  document.body.dataset.selftest = JSON.stringify(out);
})();
</script>
"""


def chromium(tmp, *args):
    """Runs headless Chromium offline (every host name fails to resolve)."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
           "--host-resolver-rules=MAP * ~NOTFOUND",
           "--user-data-dir=" + os.path.join(tmp, "chromium-profile")] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def png_pixels(path):
    """(width, height, rows of RGB(A) tuples) of an 8-bit RGB or RGBA PNG."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = hdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, hdr
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(w)])
        prev = line
    return w, h, rows


def data_block(page):
    m = re.search(r'<script type="application/json" id="sw-data">(.*?)</script>', page, re.S)
    return json.loads(m.group(1)) if m else None


class HtmlReportTest(unittest.TestCase):
    quick = False

    def setUp(self):
        self.col = Collector(expire=0.5)
        self.tmp = tempfile.mkdtemp(prefix="swhtml-")

    def tearDown(self):
        self.col.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def report(self, name="report.html", *args):
        path = os.path.join(self.tmp, name)
        r = self.col.ctl("report", "--html", path, *args)
        self.assertIn("wrote " + path, r.stderr)
        with open(path, encoding="utf-8") as f:
            return path, f.read()

    def assert_self_contained(self, page):
        self.assertNotRegex(page, r"(?i)\b(src|href|action|poster)\s*=\s*[\"']?\s*(https?:|//)")
        self.assertNotRegex(page, r"(?i)<(link|iframe|img|object|embed|base)\b")
        self.assertNotRegex(page, r"(?i)<script[^>]*\bsrc\s*=")
        self.assertNotRegex(page, r"(?i)@import|url\s*\(|fetch\s*\(|XMLHttpRequest")
        self.assertNotIn("http://", page)
        self.assertNotIn("https://", page)

    def test_report_html_renders_offline(self):
        p = self.col.start([prog("leaks")])
        self.assertTrue(p.stdout.readline().startswith("ready"))
        wait_until(lambda: all(stacks_with(self.col.leaks("--pid", str(p.pid)), fn)
                               for fn in LEAK_FUNCTIONS), what="the planted leaks")

        # Series grow while the program runs: wait for a curve of a few samples.
        def with_curve():
            path, page = self.report()
            data = data_block(page)
            ok = data and data["stacks"] and len(data["stacks"][0]["series"]) >= 3 and \
                any(len(c["series"]) >= 3 for c in data["procs"])
            return (path, page, data) if ok else None

        path, page, data = wait_until(with_curve, what="a report with time series")
        self.assert_self_contained(page)
        for fn in LEAK_FUNCTIONS:
            self.assertIn(fn, page)
        self.assertIn("<!DOCTYPE html>", page)
        self.assertEqual([c["pid"] for c in data["procs"]], [p.pid])
        for s in data["stacks"]:
            self.assertRegex(s["id"], r"^[0-9a-f]{16}$")
            self.assertIn(">%s<" % s["id"], page)  # its row in the table
            self.assertEqual(s["pid"], p.pid)
        self.assertLessEqual(len(data["stacks"]), 20)  # report's default --top

        # The script ran, and the handlers work.
        probe = os.path.join(self.tmp, "probe.html")
        with open(probe, "w", encoding="utf-8") as f:
            f.write(page.replace("</body>", SELFTEST + "</body>"))
        r = chromium(self.tmp, "--dump-dom", "file://" + probe)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        body = re.search(r"<body([^>]*)>", r.stdout).group(1)
        self.assertIn('data-rendered="1"', body)
        self.assertNotIn("data-error", body)
        self.assertGreater(int(re.search(r'data-paths="(\d+)"', body).group(1)), 5)
        st = json.loads(htmllib.unescape(re.search(r'data-selftest="([^"]*)"', body).group(1)))
        self.assertEqual(st["errors"], [])
        self.assertGreaterEqual(st["lines"], 2)  # a stack and the process total
        self.assertEqual(st["logLines"], st["lines"])
        self.assertRegex(st["chartTip"], r"\d\d:\d\d:\d\d  live bytes")
        self.assertIn("(process total)", st["chartTip"])
        self.assertTrue(any(re.search(r"\d (B|KiB|MiB)$", t) for t in st["logTicks"]),
                        st["logTicks"])
        self.assertGreater(st["flameRects"], 5)
        self.assertRegex(st["flameTip"], r"^leak_\w+.*% of may-leak")
        self.assertTrue(st["resetEnabled"])
        self.assertLess(st["zoomedRects"], st["flameRects"])
        self.assertEqual(st["resetRects"], st["flameRects"])
        # Bottom-up: the allocation sites are the first row under the process;
        # top-down: the outermost caller is.
        self.assertEqual((st["tdOrder"], st["buOrder"]), ("td", "bu"))
        self.assertTrue(st["tdRow2"] and all(l.startswith("_start") for l in st["tdRow2"]),
                        st["tdRow2"])
        self.assertTrue(any(l.startswith("leak_") for l in st["buRow2"]), st["buRow2"])
        self.assertFalse(any(l.startswith("_start") for l in st["buRow2"]), st["buRow2"])
        self.assertTrue(st["buNote"].startswith("bottom-up: allocation site on top"))
        self.assertEqual(st["backRow2"], st["tdRow2"])
        self.assertEqual((st["detailBefore"], st["detailAfter"]), ("none", "table-row"))
        self.assertIn("main", st["detailText"])

        # Rendered pixels: neither blank nor a single colour.
        png = os.path.join(self.tmp, "shot.png")
        r = chromium(self.tmp, "--screenshot=" + png, "--window-size=1400,2000",
                     "file://" + path)
        self.assertTrue(os.path.exists(png), r.stderr[-2000:])
        self.assertGreater(os.path.getsize(png), 20000)
        w, h, rows = png_pixels(png)
        self.assertEqual((w, h), (1400, 2000))
        colours, inked = set(), 0
        for y in range(0, h, 4):
            for x in range(0, w, 4):
                px = rows[y][x]
                colours.add(px)
                inked += px != (255, 255, 255)
        self.assertGreater(len(colours), 50)
        self.assertGreater(inked / ((h // 4) * (w // 4)), 0.05)
        keep = os.environ.get("STACKWATCH_HTML_SHOT")
        if keep:
            shutil.copy(png, keep)
        rc, _, _ = finish(p)
        self.assertEqual(rc, 0)

    def test_control_characters_in_names_are_escaped(self):
        """Issue 17.6c: a traced program chooses its executable's name and
        argv; ESC and BEL in them reached the page raw (a terminal that
        `cat`s the file obeys them; HTML forbids them)."""
        exe = os.path.join(self.tmp, "pl\x1b[31mai\x07n")
        shutil.copy(prog("plain"), exe)
        r = self.col.run([exe, "\x1b]0;pwned\x07"])
        self.assertEqual(r.returncode, 7, r.stderr)
        wait_until(lambda: [c for c in self.col.clients() if c["state"] == "exited"],
                   what="the program's end")
        path, _ = self.report("ctl.html")
        with open(path, "rb") as f:
            raw = f.read()
        bad = sorted({b for b in raw if (b < 0x20 and b not in b"\n") or b == 0x7f})
        self.assertEqual(bad, [], "raw control bytes in the page")
        page = raw.decode("utf-8")
        self.assertIn("pl&#x241B;[31mai&#x2407;n", page)
        self.assertIn("&#x241B;]0;pwned&#x2407;", page)

    def test_empty_report_renders(self):
        path, page = self.report("empty.html")
        self.assert_self_contained(page)
        self.assertIn("No leaks", page)
        self.assertIn("No samples yet", page)
        r = chromium(self.tmp, "--dump-dom", "file://" + path)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        body = re.search(r"<body([^>]*)>", r.stdout).group(1)
        self.assertIn('data-rendered="1"', body)
        self.assertNotIn("data-error", body)


if __name__ == "__main__":
    unittest.main()


class AssetsTest(unittest.TestCase):
    """The report's script and stylesheet are files of their own
    (collector/stackctl/html.js, html.css; issue 21.5), compiled in: the
    script parses, and the page carries both byte for byte."""
    quick = True

    ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    @unittest.skipUnless(shutil.which("node"), "node not installed")
    def test_script_parses(self):
        r = subprocess.run(["node", "--check", os.path.join(self.ROOT, "collector", "html.js")],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_page_embeds_the_files(self):
        col = Collector()
        try:
            out = os.path.join(col.tmp, "a.html")
            col.ctl("report", "--html", out)
            with open(out) as f:
                page = f.read()
        finally:
            col.close()
        for name in ("html.css", "html.js"):
            with open(os.path.join(self.ROOT, "collector", name)) as f:
                self.assertIn(f.read(), page, name)
