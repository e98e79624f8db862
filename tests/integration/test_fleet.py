"""Fleet and ecosystem: collectord's metrics endpoint (raw HTTP and a real
Prometheus scraping it), the store that keeps ended reports across a
collectord restart (and merges a reconnecting agent), command-line
conventions of collectord and stackctl."""

import errno
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import swtest as sw
from swtest import Collector, finish, markers, prog, wait_until

ROOT = sw.ROOT


def metrics_addr(col):
    path = os.path.join(col.dir, "metrics.addr")
    return wait_until(lambda: os.path.exists(path) and open(path).read().strip(),
                      what="metrics.addr")


def http(addr, request, timeout=10):
    """Sends raw request bytes to HOST:PORT, returns the whole response."""
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        s.sendall(request)
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    finally:
        s.close()
    if not out:
        # Closed without a word: what collectord does to a connection over
        # its limit (callers that wait for room catch ConnectionError).
        raise ConnectionAbortedError("closed without a response")
    return out


def parse_response(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    code = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    return code, headers, body.decode()


def scrape(addr, accept=None):
    req = "GET /metrics HTTP/1.1\r\nHost: x\r\n"
    if accept:
        req += "Accept: %s\r\n" % accept
    code, headers, body = parse_response(http(addr, (req + "\r\n").encode()))
    assert code == 200, (code, body)
    return headers, body


def samples(body, name):
    """[(labels dict, value)] of one metric in exposition text."""
    out = []
    for line in body.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if "{" in line:
            lab, _, val = line[len(name) + 1:].rpartition("} ")
            labels = {}
            # Values are escaped: split on '",' outside escapes.
            i = 0
            while i < len(lab):
                eq = lab.index("=", i)
                key = lab[i:eq]
                j = eq + 2
                v = ""
                while lab[j] != '"':
                    if lab[j] == "\\":
                        v += {"n": "\n", "\\": "\\", '"': '"'}[lab[j + 1]]
                        j += 2
                    else:
                        v += lab[j]
                        j += 1
                labels[key] = v
                i = j + 2
        else:
            labels, val = {}, line.split()[1]
        out.append((labels, float(val)))
    return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class MetricsEndpointTest(unittest.TestCase):
    quick = True

    def setUp(self):
        self.col = Collector(expire=0.5, extra=["--metrics", "127.0.0.1:0",
                                                "--state-dir", "none"])
        self.addr = metrics_addr(self.col)

    def tearDown(self):
        self.col.close()

    def test_planted_leak_series_and_formats(self):
        p = self.col.start([prog("ticker")])
        self.assertEqual(p.stdout.readline().strip(), "ticking")
        line = markers("ticker.c")["tick"]
        noise = markers("ticker.c", "NOISE")["tick"]

        def leak_series():
            _, body = scrape(self.addr)
            got = [(l, v) for l, v in samples(body, "stackwatch_stack_may_leak_bytes")
                   if l["pid"] == str(p.pid) and l["frame"] == "tick_leak"
                   and l["class"] == "leak"]
            return (body, got) if got else None

        body, got = wait_until(leak_series, timeout=30, what="tick_leak's series, class leak")
        labels, value = got[0]
        self.assertEqual(labels["location"], "ticker.c:%d" % line)
        self.assertEqual(labels["exe"], prog("ticker"))
        self.assertRegex(labels["stack"], "^[0-9a-f]{16}$")
        self.assertGreater(value, 0)
        self.assertEqual(value % 300, 0)  # whole 300-byte blocks
        # The freed noise never shows as a stack.
        for l, _ in samples(body, "stackwatch_stack_live_bytes"):
            self.assertNotEqual(l["location"], "ticker.c:%d" % noise)
        # The same figure as the report's.
        rep = self.col.leaks("--pid", str(p.pid))
        st = [s for s in rep["stacks"] if "%016x" % int(s["id"], 16) == labels["stack"]]
        self.assertEqual(len(st), 1)
        self.assertGreaterEqual(st[0]["may_leak"]["bytes"], value)
        live = samples(body, "stackwatch_client_live_bytes")
        self.assertTrue(any(l["pid"] == str(p.pid) and v > 0 for l, v in live))
        ev = samples(body, "stackwatch_collector_events_total")
        self.assertGreater(ev[0][1], 0)
        self.assertEqual(len(samples(body, "stackwatch_collector_symbolization_backlog")), 1)
        self.assertGreater(samples(body, "stackwatch_collector_resident_bytes")[0][1], 1 << 20)
        # Prometheus text passes promtool's linter; OpenMetrics is negotiated.
        lint = subprocess.run(["promtool", "check", "metrics"], input=body, text=True,
                              capture_output=True)
        self.assertEqual(lint.returncode, 0, lint.stdout + lint.stderr)
        h, om = scrape(self.addr, "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
        self.assertTrue(h["content-type"].startswith("application/openmetrics-text"))
        self.assertTrue(om.endswith("# EOF\n"))
        self.assertIn("# TYPE stackwatch_client_events counter\n", om)
        self.assertIn("stackwatch_client_events_total{", om)
        finish(p)

    def test_requests_that_are_not_a_scrape(self):
        code, _, _ = parse_response(http(self.addr, b"GET / HTTP/1.0\r\n\r\n"))
        self.assertEqual(code, 404)
        code, h, _ = parse_response(http(self.addr, b"POST /metrics HTTP/1.0\r\n\r\n"))
        self.assertEqual(code, 405)
        self.assertEqual(h["allow"], "GET, HEAD")
        code, _, _ = parse_response(http(self.addr, b"garbage\r\n\r\n"))
        self.assertEqual(code, 400)
        code, _, _ = parse_response(http(self.addr, b"GET /metrics HTTP/1.0\r\nX: " +
                                         b"a" * 10000 + b"\r\n\r\n"))
        self.assertEqual(code, 431)
        code, h, body = parse_response(http(self.addr, b"HEAD /metrics HTTP/1.0\r\n\r\n"))
        self.assertEqual((code, body), (200, ""))
        self.assertGreater(int(h["content-length"]), 100)
        # A request in pieces, bare LFs.
        host, port = self.addr.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"GET /met")
        time.sleep(0.05)
        s.sendall(b"rics?x=1 HTTP/1.0\n\n")
        raw = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            raw += b
        s.close()
        self.assertEqual(parse_response(raw)[0], 200)

    def test_connection_limit_does_not_stall_ingest(self):
        host, port = self.addr.rsplit(":", 1)
        idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(16)]
        # The 16 sent nothing; wait until collectord holds them all.
        extra = socket.create_connection((host, int(port)), timeout=10)
        self.assertEqual(extra.recv(10), b"")  # closed at once: over the limit
        extra.close()
        # Agents are served meanwhile.
        r = self.col.run([prog("plain")])
        self.assertEqual(r.returncode, 7, r.stderr)
        for s in idle:
            s.close()

        def scraped():
            try:
                return scrape(self.addr)
            except ConnectionError:
                return None  # collectord has not seen the closes yet
        wait_until(scraped, what="a scrape after the idle ones closed")


class PrometheusTest(unittest.TestCase):
    """A real Prometheus (Debian's) on loopback scrapes collectord."""
    quick = False

    def setUp(self):
        if not shutil.which("prometheus"):
            self.fail("prometheus is not installed: run 'make deps'")
        self.tmp = tempfile.mkdtemp(prefix="swprom-")
        self.col = Collector(expire=0.5, extra=["--metrics", "127.0.0.1:0",
                                                "--state-dir", "none"])
        self.addr = metrics_addr(self.col)
        self.prom = None

    def tearDown(self):
        if self.prom:
            self.prom.terminate()
            try:
                self.prom.wait(20)
            except subprocess.TimeoutExpired:
                self.prom.kill()
                self.prom.wait()
        self.col.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def api(self, path, **params):
        url = "http://127.0.0.1:%d%s?%s" % (self.port, path, urllib.parse.urlencode(params))
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())

    def test_prometheus_scrapes_a_planted_leak(self):
        # An executable whose path needs escaping in a label value.
        odd = os.path.join(self.tmp, 'tick"er\\x')
        shutil.copy(prog("ticker"), odd)
        cfg = os.path.join(self.tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "rule_files:\n  - %s\n"
                    "scrape_configs:\n  - job_name: stackwatch\n    static_configs:\n"
                    "      - targets: ['%s']\n" %
                    (os.path.join(ROOT, "docs", "prometheus", "stackwatch-alerts.yml"), self.addr))
        self.port = free_port()
        self.prom = subprocess.Popen(
            ["prometheus", "--config.file=" + cfg, "--storage.tsdb.path=" +
             os.path.join(self.tmp, "data"), "--web.listen-address=127.0.0.1:%d" % self.port],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.tmp, "prom.log"), "w"))

        def ready():
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/-/ready" % self.port,
                                            timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_until(ready, timeout=60, interval=0.2, what="prometheus to be ready")
        p = self.col.start([odd])
        self.assertEqual(p.stdout.readline().strip(), "ticking")
        line = markers("ticker.c")["tick"]

        def leak_in_prometheus():
            r = self.api("/api/v1/query",
                         query='stackwatch_stack_may_leak_bytes{frame="tick_leak",class="leak"}')
            res = [x for x in r["data"]["result"] if x["metric"]["pid"] == str(p.pid)]
            return res and float(res[0]["value"][1]) > 0 and res
        res = wait_until(leak_in_prometheus, timeout=90, interval=0.5,
                         what="the leak's series in Prometheus")
        m = res[0]["metric"]
        self.assertEqual(m["exe"], odd)
        self.assertEqual(m["location"], "ticker.c:%d" % line)
        self.assertEqual(m["job"], "stackwatch")
        self.assertEqual(m["instance"], self.addr)
        # The series grows: may-leak bytes a few scrapes apart.
        first = float(res[0]["value"][1])
        wait_until(lambda: float((leak_in_prometheus() or [{"value": [0, 0]}])[0]["value"][1]) >
                   first, timeout=60, interval=0.5, what="the series to grow")
        # The example rules were loaded by Prometheus itself.
        rules = self.api("/api/v1/rules")["data"]["groups"]
        names = [r["name"] for g in rules for r in g["rules"]]
        self.assertIn("StackwatchLeakGrowing", names)
        up = self.api("/api/v1/query", query='up{job="stackwatch"}')["data"]["result"]
        self.assertEqual(up[0]["value"][1], "1")
        finish(p)


class AlertRulesTest(unittest.TestCase):
    quick = False

    def test_promtool_checks_and_tests_the_example_rules(self):
        r = subprocess.run(["promtool", "check", "rules",
                            os.path.join(ROOT, "docs", "prometheus", "stackwatch-alerts.yml")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("SUCCESS: 3 rules found", r.stdout)
        r = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"],
                           cwd=os.path.join(ROOT, "tests", "prometheus"),
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


def process_runs(pid):
    """pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def comparable(report):
    """A report's stacks without what legitimately changes with the clock."""
    out = []
    for s in report["stacks"]:
        s = dict(s)
        s.pop("restored", None)
        out.append(s)
    clients = []
    for c in report["clients"]:
        c = dict(c)
        c.pop("restored", None)
        clients.append(c)
    return clients, out


class StoreTest(unittest.TestCase):
    quick = True

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="swstore-")
        self.run_dir = os.path.join(self.tmp, "run")
        self.state = os.path.join(self.tmp, "state")
        self.col = None

    def tearDown(self):
        if self.col:
            self.col.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, *extra):
        self.col = Collector(expire=0.3, dirpath=self.run_dir,
                             extra=["--state-dir", self.state] + list(extra))
        return self.col

    def restart(self, *extra):
        log = self.col.close()
        self.col = None
        return log, self.start(*extra)

    def reports(self):
        d = os.path.join(self.state, "reports")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def ended_leaks(self, col):
        p = col.start([prog("leaks")])
        self.assertTrue(p.stdout.readline().startswith("ready"))
        wait_until(lambda: col.leaks("--pid", str(p.pid))["stacks"], what="may-leak blocks")
        rc, _, err = finish(p)
        self.assertEqual(rc, 0, err)
        col.wait_state(p.pid, "exited")
        return p.pid

    def test_ended_report_survives_a_restart(self):
        col = self.start()
        pid = self.ended_leaks(col)
        # Stored once its frames are symbolized.
        wait_until(lambda: self.reports(), what="the report in the store")
        before = col.leaks("--pid", str(pid), "--all")
        text_before = col.ctl("query", "leaks", "--pid", str(pid)).stdout
        folded_before = col.ctl("query", "leaks", "--pid", str(pid), "--format", "folded").stdout
        m = markers("leaks.c")
        log, col = self.restart()
        after = col.leaks("--pid", str(pid), "--all")
        self.assertEqual(comparable(after), comparable(before))
        self.assertTrue(after["clients"][0]["restored"])
        self.assertTrue(all(s["restored"] for s in after["stacks"]))
        s = [s for s in after["stacks"] if s["frames"][0]["function"] == "leak_malloc"]
        self.assertEqual(len(s), 1)
        self.assertEqual(s[0]["frames"][0]["line"], m["malloc"])
        self.assertEqual(s[0]["exit_live"], {"count": 1, "bytes": 1001})
        # Text: the same stacks, plus one line saying where the report came from.
        text_after = col.ctl("query", "leaks", "--pid", str(pid)).stdout
        self.assertIn("from collectord's store", text_after)
        strip = lambda t: [l for l in t.splitlines() if "from collectord's store" not in l]
        self.assertEqual(strip(text_after), strip(text_before))
        self.assertEqual(col.ctl("query", "leaks", "--pid", str(pid), "--format",
                                 "folded").stdout, folded_before)
        clients = col.clients()
        self.assertEqual([(c["pid"], c["state"], c["restored"]) for c in clients],
                         [(pid, "exited", True)])
        # Other formats read the same report.
        pp = col.ctl("query", "leaks", "--pid", str(pid), "--format", "pprof", "-o",
                     os.path.join(self.tmp, "p.pb.gz"))
        self.assertEqual(pp.returncode, 0)
        html = os.path.join(self.tmp, "r.html")
        col.ctl("report", "--html", html, "--pid", str(pid))
        self.assertIn("leak_malloc", open(html).read())

    def test_corrupt_and_truncated_records_are_set_aside(self):
        col = self.start()
        pid = self.ended_leaks(col)
        wait_until(lambda: self.reports(), what="the report in the store")
        col.close()
        self.col = None
        d = os.path.join(self.state, "reports")
        good = os.path.join(d, self.reports()[0])
        data = open(good, "rb").read()
        with open(os.path.join(d, "p1-00000000000000aa.swr"), "wb") as f:
            f.write(data[:len(data) // 2])  # truncated
        flipped = bytearray(data)
        flipped[len(data) - 5] ^= 0x40
        with open(os.path.join(d, "p2-00000000000000bb.swr"), "wb") as f:
            f.write(bytes(flipped))  # checksum mismatch
        with open(os.path.join(d, "p3-00000000000000cc.swr"), "wb") as f:
            f.write(b"")  # empty
        with open(os.path.join(d, "p4-00000000000000dd.swr"), "wb") as f:
            f.write(b"SWSTORE\n\x09\x00\x00\x00" + data[12:])  # another version
        col = self.start()
        self.assertTrue(col.alive())
        log = col.read_log()
        for name, why in (("p1-", "truncated record"), ("p2-", "checksum mismatch"),
                          ("p3-", "empty file"), ("p4-", "record of an unknown store version")):
            self.assertRegex(log, r"store: \S*/%s\S*\.swr: %s; set aside as \S*%s\S*\.swr\.corrupt"
                             % (name, why, name))
        self.assertEqual(sorted(f for f in os.listdir(d) if f.endswith(".corrupt")),
                         ["p1-00000000000000aa.swr.corrupt", "p2-00000000000000bb.swr.corrupt",
                          "p3-00000000000000cc.swr.corrupt", "p4-00000000000000dd.swr.corrupt"])
        # The good record is still served.
        self.assertEqual([c["pid"] for c in col.clients()], [pid])

    def test_retention_bounds_the_store(self):
        col = self.start("--retain", "2")
        for i in range(3):
            r = col.run([prog("plain")])
            self.assertEqual(r.returncode, 7, r.stderr)
            wait_until(lambda: len(self.reports()) == min(i + 1, 2) and
                       len(col.clients()) == min(i + 1, 2) and
                       all(c["state"] == "exited" for c in col.clients()),
                       what="ended report %d stored" % (i + 1))
        wait_until(lambda: not [c for c in col.clients() if c["state"] != "exited"],
                   what="every run ended")
        known = sorted(c["pid"] for c in col.clients())
        self.assertEqual(len(known), 2)
        log, col = self.restart("--retain", "2")
        self.assertEqual(len(self.reports()), 2)
        self.assertEqual(sorted(c["pid"] for c in col.clients()), known)
        log, col = self.restart("--retain", "1")
        self.assertEqual(len(self.reports()), 1)
        self.assertEqual(len(col.clients()), 1)

    def test_reconnecting_agent_is_merged(self):
        col = self.start()
        p = col.start([prog("ticker")])
        self.assertEqual(p.stdout.readline().strip(), "ticking")
        wait_until(lambda: col.leaks("--pid", str(p.pid))["stacks"], what="may-leak blocks")
        col.ctl("mark", "--pid", str(p.pid))
        before = col.leaks("--pid", str(p.pid))
        tick = [s for s in before["stacks"] if s["frames"][0]["function"] == "tick_leak"][0]
        log, col = self.restart()
        self.assertIn("kept 1 running process(es)", log)

        def merged():
            r = col.leaks("--pid", str(p.pid))
            c = r["clients"][0] if r["clients"] else None
            return c and c["state"] == "connected" and c["restart_gap_ms"] > 0 and r
        r = wait_until(merged, timeout=30, what="the agent to reconnect and be merged")
        self.assertEqual(len(r["clients"]), 1)  # one process, not the stored one beside it
        self.assertIn("reconnected after a collectord restart", col.read_log())
        s = [x for x in r["stacks"] if x["id"] == tick["id"]]
        self.assertEqual(len(s), 1)
        # Counts before the restart are kept; its live blocks are uncertain now.
        self.assertGreaterEqual(s[0]["alloc"]["count"], tick["alloc"]["count"])
        self.assertGreaterEqual(s[0]["uncertain"]["count"], tick["live"]["count"])
        self.assertGreaterEqual(s[0]["may_leak"]["count"], tick["may_leak"]["count"])
        self.assertEqual(s[0]["frames"][0]["function"], "tick_leak")
        # The mark came back: since-mark reports work without a new mark.
        self.assertTrue(r["clients"][0]["mark_ms"])
        wait_until(lambda: [x for x in col.leaks("--pid", str(p.pid), "--since-mark")["stacks"]
                            if x["id"] == tick["id"]], what="blocks since the mark")
        text = col.ctl("query", "leaks", "--pid", str(p.pid)).stdout
        self.assertIn("merged with its report from before a collectord restart", text)
        rc, out, _ = finish(p)
        self.assertEqual(rc, 0)
        # The final record includes both parts.
        col.wait_state(p.pid, "exited")
        end = col.leaks("--pid", str(p.pid))
        e = [x for x in end["stacks"] if x["id"] == tick["id"]][0]
        wait_until(lambda: self.reports(), what="stored")
        log, col = self.restart()
        again = col.leaks("--pid", str(p.pid))
        a = [x for x in again["stacks"] if x["id"] == tick["id"]][0]
        self.assertEqual(a["alloc"], e["alloc"])
        self.assertEqual(a["uncertain"], e["uncertain"])

    def test_fifo_in_the_store_neither_hangs_start_nor_fools_stop(self):
        """Issue 17.5: a FIFO named like a record made `collectord start`
        wait forever (the store opened it blocking). It is set aside like a
        corrupt record; `stop` says stopped only once the daemon has ended."""
        reports = os.path.join(self.state, "reports")
        os.makedirs(reports, mode=0o700)
        fifo = os.path.join(reports, "p7-00000000000000ee.swr")
        os.mkfifo(fifo, 0o600)
        cd = os.path.join(sw.BUILD, "collectord")
        try:
            try:
                r = subprocess.run([cd, "start", "--dir", self.run_dir, "--state-dir",
                                    self.state], capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                self.fail("collectord start still waits after 60 s (a FIFO in the store)")
            self.assertEqual(r.returncode, 0, r.stderr)
            pid = int(re.search(r"started \(pid (\d+)\)", r.stdout).group(1))
            with open(os.path.join(self.run_dir, "collectord.log")) as f:
                log = f.read()
            self.assertRegex(log, r"store: \S*/p7-00000000000000ee\.swr: not a regular file; "
                                  r"set aside as \S*\.swr\.corrupt")
            self.assertTrue(stat.S_ISFIFO(os.lstat(fifo + ".corrupt").st_mode))
            # The store still keeps what ends.
            env = dict(os.environ, LD_PRELOAD=sw.agent_path(), STACKWATCH_DIR=self.run_dir)
            p = subprocess.run([prog("plain")], env=env, capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(p.returncode, 7, p.stderr)
            wait_until(lambda: [n for n in self.reports() if n.endswith(".swr")],
                       what="the ended report in the store")
            stop = subprocess.run([cd, "stop", "--dir", self.run_dir], capture_output=True,
                                  text=True, timeout=60)
            self.assertEqual(stop.returncode, 0, stop.stderr)
            self.assertIn("collectord stopped (pid %d)" % pid, stop.stdout)
            self.assertFalse(process_runs(pid), "stop said stopped; pid %d still runs" % pid)
        finally:
            subprocess.run([cd, "stop", "--dir", self.run_dir], capture_output=True, timeout=60)

    def test_reports_that_met_a_full_disk_are_written_later(self):
        """Issue 17.6a: an ended report whose write failed with ENOSPC was
        dropped (3 of 3 lost, even at a graceful stop with space back). The
        store on a small tmpfs, filled up: written once there is room, by
        the later retry or at the graceful stop."""
        if os.geteuid() != 0:
            self.skipTest("mounting a tmpfs needs root")
        os.makedirs(self.state, mode=0o700)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "swtest-store",
                            self.state], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        filler = os.path.join(self.state, "filler")

        def fill():
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                while True:
                    os.write(fd, b"\0" * 4096)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
            finally:
                os.close(fd)

        def refused(col):
            return set(re.findall(r"cannot write \S*/p(\d+)-\S*: No space left on device",
                                  col.read_log()))

        def ended(col, n):
            before = refused(col)
            for _ in range(n):
                r = col.run([prog("plain")])
                self.assertEqual(r.returncode, 7, r.stderr)
            wait_until(lambda: len(refused(col) - before) == n,
                       what="the reports of %d processes refused for want of space" % n)

        try:
            col = self.start()
            fill()
            ended(col, 3)
            self.assertEqual(self.reports(), [])
            os.unlink(filler)
            # Tried again later, without a stop.
            wait_until(lambda: len(self.reports()) == 3, timeout=60,
                       what="the 3 reports written once there is room")
            fill()
            ended(col, 3)
            os.unlink(filler)
            # At the graceful stop at the latest.
            log, col = self.restart()
            self.assertEqual(len(self.reports()), 6, log)
            cl = col.clients()
            self.assertEqual(len(cl), 6, cl)
            self.assertTrue(all(c["state"] == "exited" and c["restored"] for c in cl), cl)
        finally:
            if self.col:
                self.col.close()
                self.col = None
            subprocess.run(["umount", "-l", self.state], capture_output=True)


class CommandLineTest(unittest.TestCase):
    quick = True

    def test_version_and_unknown_pid_and_html_format(self):
        for exe in ("collectord", "stackctl"):
            r = subprocess.run([os.path.join(sw.BUILD, exe), "--version"], capture_output=True,
                               text=True)
            self.assertEqual(r.returncode, 0)
            self.assertRegex(r.stdout, r"^%s \(stackwatch\) \d+\.\d+\.\d+\n$" % exe)
        col = Collector(expire=0.5, extra=["--state-dir", "none"])
        try:
            r = col.ctl("query", "leaks", "--pid", "999999999", check=False)
            self.assertEqual(r.returncode, 1)
            self.assertIn("no process with pid 999999999 is known", r.stderr)
            r = col.ctl("mark", "--pid", "999999999", check=False)
            self.assertEqual(r.returncode, 1)
            self.assertIn("no process with pid 999999999 is known", r.stderr)
            # A process that runs but is not (yet) traced: an empty report and a hint.
            r = col.ctl("query", "leaks", "--pid", str(os.getpid()), "--json", check=False)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(json.loads(r.stdout)["clients"], [])
            self.assertIn("pid %d runs but has not connected to collectord (yet)" % os.getpid(),
                          r.stderr)
            r = col.ctl("query", "leaks", "--format", "html", check=False)
            self.assertEqual(r.returncode, 2)
            self.assertIn("stackctl report --html FILE", r.stderr)
        finally:
            col.close()

    def test_max_live_warning_at_the_top(self):
        col = Collector(expire=0.3, extra=["--max-live", "5", "--state-dir", "none"])
        try:
            p = col.start([prog("ticker")])
            self.assertEqual(p.stdout.readline().strip(), "ticking")
            wait_until(lambda: (col.client(p.pid) or {}).get("table_full", 0) > 0,
                       what="the table to fill")
            out = col.ctl("query", "leaks", "--pid", str(p.pid)).stdout.splitlines()
            self.assertRegex(out[1], r"^warning: pid %d reached --max-live \(5 tracked blocks\): "
                             r"\d+ allocation\(s\) were not tracked" % p.pid)
            finish(p)
        finally:
            col.close()


class DiffTest(unittest.TestCase):
    quick = True

    def setUp(self):
        self.col = Collector(expire=0.3, extra=["--state-dir", "none"])
        self.tmp = tempfile.mkdtemp(prefix="swdiff-")

    def tearDown(self):
        self.col.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def tick_alloc(self, pid):
        r = self.col.leaks("--pid", str(pid), "--all")
        s = [x for x in r["stacks"] if x["frames"] and x["frames"][0]["function"] == "tick_leak"]
        return s[0]["alloc"]["count"] if s else 0

    def test_between_two_marks(self):
        p = self.col.start([prog("ticker")])
        self.assertEqual(p.stdout.readline().strip(), "ticking")
        line = markers("ticker.c")["tick"]
        wait_until(lambda: self.tick_alloc(p.pid) > 0, what="first tick")
        a = os.path.join(self.tmp, "a.snap")
        b = os.path.join(self.tmp, "b.snap")
        r = self.col.ctl("mark", "--pid", str(p.pid), "-o", a)
        self.assertIn("marked pid %d" % p.pid, r.stdout)
        first = self.tick_alloc(p.pid)
        wait_until(lambda: self.tick_alloc(p.pid) >= first + 20, what="20 more ticks")
        self.col.ctl("mark", "--pid", str(p.pid), "-o", b)
        d = json.loads(self.col.ctl("diff", "--json", a, b).stdout)
        self.assertEqual(d["from"]["pids"][0]["pid"], p.pid)
        self.assertEqual(d["stacks"][0]["status"], "grew")
        top = d["stacks"][0]
        self.assertEqual(top["frames"][0]["function"], "tick_leak")
        self.assertEqual(top["frames"][0]["line"], line)
        # Whole 300-byte blocks, none freed.
        self.assertGreaterEqual(top["delta"]["live"]["count"], 19)
        self.assertEqual(top["delta"]["live"]["bytes"], 300 * top["delta"]["live"]["count"])
        self.assertEqual(top["delta"]["alloc"]["count"], top["delta"]["live"]["count"])
        self.assertEqual(top["after"]["live"]["count"] - top["before"]["live"]["count"],
                         top["delta"]["live"]["count"])
        # The freed noise never grows.
        noise = markers("ticker.c", "NOISE")["tick"]
        for s in d["stacks"]:
            self.assertNotIn(noise, [f["line"] for f in s["frames"]])
        text = self.col.ctl("diff", a, b).stdout
        self.assertRegex(text, r"Stack\[[0-9a-f]{16}\]: grew  live \+\d+ bytes")
        self.assertIn("tick_leak()", text)
        self.assertIn("ticker.c:%d" % line, text)
        # Reversed: nothing grew.
        self.assertIn("no stack grew", self.col.ctl("diff", b, a).stdout)
        # A file that is not a snapshot.
        r = self.col.ctl("diff", a, "/etc/hostname", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not a stackctl snapshot", r.stderr)
        finish(p)

    def test_between_two_pids(self):
        old = self.col.start([prog("ticker")])
        self.assertEqual(old.stdout.readline().strip(), "ticking")
        wait_until(lambda: self.tick_alloc(old.pid) >= 20, what="20 ticks (old)")
        young = self.col.start([prog("ticker")])
        self.assertEqual(young.stdout.readline().strip(), "ticking")
        # Both tick at one rate: the older stays about 20 ahead.
        wait_until(lambda: self.tick_alloc(young.pid) > 0 and
                   self.tick_alloc(old.pid) >= self.tick_alloc(young.pid) + 5,
                   what="the older process ahead by 5 ticks")
        d = json.loads(self.col.ctl("diff", "--json", str(young.pid), str(old.pid)).stdout)
        self.assertEqual(d["from"]["label"], "pid %d" % young.pid)
        tick = [s for s in d["stacks"] if s["frames"][0]["function"] == "tick_leak"]
        self.assertEqual(len(tick), 1)
        # Matched across processes (ASLR differs): grew, not new.
        self.assertEqual(tick[0]["status"], "grew")
        self.assertGreater(tick[0]["before"]["alloc"]["count"], 0)
        self.assertEqual(d["counts"]["new"], 0)
        self.assertEqual(d["counts"]["gone"], 0)
        finish(young)
        finish(old)
        r = self.col.ctl("diff", "999999999", str(old.pid), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no process with pid 999999999", r.stderr)
