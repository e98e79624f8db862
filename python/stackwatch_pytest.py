"""stackwatch's pytest plugin: what each test allocated and left live.

    stackctl run -- python3 -m pytest -p stackwatch tests/

(`-p stackwatch` loads this module through stackwatch.py.) Around each
test's call (not its fixtures) the plugin sets a mark in collectord for this
process, then asks which blocks allocated since the mark are still live when
the test returns: their bytes and stacks are the test's leak candidates. A
summary at the end lists the tests that left the most. A test marked

    @pytest.mark.stackwatch_limit_leaks("1 MB")

fails when it leaves more than that (B, KB, MB, GB: powers of 1024), like
pytest-memray's limit_leaks. What counts is what the agent sees: malloc and
friends (Python objects above 512 bytes, C extensions, ctypes), not memory
inside pymalloc's arenas; allocations of child processes are not counted.
The wait after a test covers the test's own thread (its last allocation is
awaited in collectord); other threads' allocations count once they arrive.

Without the agent (not run under `stackctl run` or with LD_PRELOAD), the
plugin says so once and measures nothing. Standard library and pytest only;
works with Debian's python3-pytest.
"""

import ctypes
import json
import os
import re
import shutil
import subprocess
import time

import pytest

__all__ = ["parse_size", "describe"]

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20,
          "MB": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30}
_SENTINEL = 6917  # strdup of this many bytes (+1): the last event of a test, awaited
_WAIT_S = 30.0    # bound on waiting for the agent's events to reach collectord


def parse_size(text):
    """'1 MB' -> 1048576; an int is taken as bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).upper() not in _UNITS:
        raise ValueError("stackwatch_limit_leaks: %r is not a size like '1 MB'" % (text,))
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _fmt(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return "%.1f %s" % (n / size, unit)
    return "%d B" % n


def describe(total, left, limit):
    """The failure text of a test over its limit: the stacks that hold most."""
    lines = ["stackwatch: the test left %s live in %d stack(s), more than its limit "
             "of %s:" % (_fmt(total), len(left), _fmt(limit))]
    for nbytes, count, st in left[:5]:
        lines.append("  %s in %d block(s), stack %s:" % (_fmt(nbytes), count, st.get("id")))
        # Its Python traceback when the agent caught one (innermost first).
        for tb in (st.get("python") or [])[:1]:
            for fr in (tb if isinstance(tb, list) else [])[:3]:
                lines.append("      %s:%s in %s" % (fr.get("file"), fr.get("line"),
                                                   fr.get("function")))
        # Its C frames up to the interpreter's eval loop the Python lines run
        # under (python_at): the C code they called, not CPython's own.
        frames = st.get("frames") or []
        if isinstance(st.get("python_at"), int):
            frames = frames[:st["python_at"]]
        shown = 0
        for fr in frames:
            if shown == 4:
                break
            if fr.get("function"):
                where = "%s:%s" % (fr.get("file"), fr.get("line")) if fr.get("file") else \
                    (fr.get("module") or "")
                lines.append("      %s  %s" % (fr["function"], where))
                shown += 1
    return "\n".join(lines)


def _agent_path():
    """The agent library mapped into this process, or None."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split(None, 5)[5].strip() if len(line.split(None, 5)) == 6 else ""
                if os.path.basename(path).startswith("libstackagent"):
                    return path
    except OSError:
        pass
    return None


def _find_stackctl(given, agent):
    if given:
        return given
    if os.environ.get("STACKWATCH_STACKCTL"):
        return os.environ["STACKWATCH_STACKCTL"]
    # Beside the agent (the build tree) or ../bin from it (make install).
    d = os.path.dirname(agent)
    for cand in (os.path.join(d, "stackctl"), os.path.join(d, "..", "bin", "stackctl")):
        if os.access(cand, os.X_OK):
            return os.path.normpath(cand)
    return shutil.which("stackctl")


class _Plugin:
    def __init__(self, config):
        self.config = config
        self.results = {}   # nodeid -> (bytes, stacks, limit or None, failed)
        self.why_off = None
        self.agent = _agent_path()
        self.stackctl = None
        if not self.agent:
            self.why_off = ("the agent is not loaded in this process: run "
                            "`stackctl run -- python3 -m pytest -p stackwatch`")
            return
        self.stackctl = _find_stackctl(config.getoption("stackwatch_stackctl"), self.agent)
        if not self.stackctl:
            self.why_off = "no stackctl found (--stackwatch-stackctl PATH)"
            return
        # stackctl itself runs untraced.
        self.env = dict(os.environ)
        pre = [p for p in self.env.get("LD_PRELOAD", "").replace(" ", ":").split(":")
               if p and not os.path.basename(p).startswith("libstackagent")]
        self.env["LD_PRELOAD"] = ":".join(pre)
        self.pid = str(os.getpid())
        self.libc = ctypes.CDLL(None)
        self.libc.strdup.restype = ctypes.c_void_p
        self.libc.strdup.argtypes = [ctypes.c_char_p]
        self.libc.free.argtypes = [ctypes.c_void_p]

    def _ctl(self, *args):
        p = subprocess.run([self.stackctl] + list(args), env=self.env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise RuntimeError("stackctl %s: %s" % (" ".join(args),
                                                    p.stderr.decode(errors="replace").strip()))
        return p.stdout

    def _since_mark(self):
        out = self._ctl("query", "leaks", "--pid", self.pid, "--since-mark", "--all",
                        "--json")
        return json.loads(out).get("stacks") or []

    @staticmethod
    def _is_sentinel(st):
        live = st.get("live") or {}
        return live.get("count") == 1 and live.get("bytes") == _SENTINEL + 1

    def measure(self, item):
        """A mark, the test's call, then its live blocks since the mark."""
        # Marked only once this process is connected (a mark on nothing
        # would make the query count everything since the start).
        deadline = time.monotonic() + _WAIT_S
        while ("marked pid %s" % self.pid) not in self._ctl("mark", "--pid", self.pid).decode():
            if time.monotonic() > deadline:
                raise RuntimeError("this process is not connected to collectord")
            time.sleep(0.01)
        yield
        # The sentinel is this thread's last allocation: once collectord
        # has it, it has every earlier one of this thread (one ring, in order).
        s = self.libc.strdup(b"S" * _SENTINEL)
        try:
            deadline = time.monotonic() + _WAIT_S
            while True:
                stacks = self._since_mark()
                if any(self._is_sentinel(st) for st in stacks) or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        finally:
            self.libc.free(s)
        left = []
        for st in stacks:
            live = dict(st.get("live") or {})
            if self._is_sentinel(st):
                continue
            if live.get("bytes"):
                left.append((live["bytes"], live.get("count", 0), st))
        left.sort(key=lambda t: -t[0])
        return left

    # ------------------------------------------------------------ hooks
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        if self.why_off:
            yield
            return
        gen = None
        try:
            gen = self.measure(item)
            next(gen)
        except Exception as e:  # collectord gone: say it, do not fail the test for it
            self.why_off = "measuring stopped: %s" % e
            gen = None
        yield
        if gen is None:
            return
        try:
            next(gen)
        except StopIteration as stop:
            left = stop.value
        except Exception as e:
            self.why_off = "measuring stopped: %s" % e
            return
        marker = item.get_closest_marker("stackwatch_limit_leaks")
        limit = parse_size(marker.args[0] if marker.args else marker.kwargs["limit"]) \
            if marker else None
        total = sum(b for b, _, _ in left)
        item.stash_stackwatch = (total, left, limit)
        self.results[item.nodeid] = (total, len(left), limit,
                                     limit is not None and total > limit)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        rep = outcome.get_result()
        got = getattr(item, "stash_stackwatch", None)
        if call.when != "call" or not got or rep.outcome != "passed":
            return
        total, left, limit = got
        if limit is None or total <= limit:
            return
        rep.outcome = "failed"
        rep.longrepr = describe(total, left, limit)

    def pytest_report_header(self, config):
        if self.why_off:
            return "stackwatch: off: %s" % self.why_off
        return "stackwatch: measuring what each test leaves live (agent %s)" % self.agent

    def pytest_terminal_summary(self, terminalreporter):
        tr = terminalreporter
        tr.write_sep("=", "stackwatch")
        if self.why_off:
            tr.write_line("stackwatch: off: %s" % self.why_off)
        if not self.results:
            return
        top = self.config.getoption("stackwatch_top")
        rows = sorted(self.results.items(), key=lambda kv: -kv[1][0])
        total = sum(v[0] for v in self.results.values())
        tr.write_line("%d test(s) measured; %s left live in all (allocated during a test, "
                      "live at its end)" % (len(rows), _fmt(total)))
        for nodeid, (nbytes, nstacks, limit, failed) in rows[:top]:
            if not nbytes and not failed:
                continue
            lim = "" if limit is None else "  limit %s%s" % (_fmt(limit),
                                                            " EXCEEDED" if failed else "")
            tr.write_line("  %10s in %3d stack(s)  %s%s" % (_fmt(nbytes), nstacks, nodeid, lim))


def pytest_addoption(parser):
    group = parser.getgroup("stackwatch", "stackwatch: leaks per test")
    group.addoption("--stackwatch-top", type=int, default=10,
                    help="tests listed in stackwatch's summary (default 10)")
    group.addoption("--stackwatch-stackctl", default=None,
                    help="the stackctl to ask (default: beside the agent, else PATH)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "stackwatch_limit_leaks(limit): fail the test when the blocks it allocated and left "
        "live at its end add up to more than limit ('1 MB', '512 KB', bytes)")
    config.pluginmanager.register(_Plugin(config), "stackwatch-measure")
