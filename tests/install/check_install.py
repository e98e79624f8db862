#!/usr/bin/env python3
"""make install / make uninstall into a temporary DESTDIR, checked as a user
would see them: man pages found by name and rendered without warnings,
--version of the installed programs, the Python helper importable from where
Debian's python3 looks, the systemd user unit, bash completion."""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREFIX = "/usr/local"
PY = "/usr/bin/python3"

failures = []
passed = 0


def check(cond, what):
    global passed
    if cond:
        passed += 1
        print("ok   " + what)
    else:
        failures.append(what)
        print("FAIL " + what)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    a = ap.parse_args()
    dest = tempfile.mkdtemp(prefix="swinstall-")
    try:
        r = run(["make", "-s", "install", "DESTDIR=" + dest, "PREFIX=" + PREFIX,
                 "BUILD=" + a.build], cwd=ROOT)
        check(r.returncode == 0, "make install (%s)" % r.stderr.strip()[-300:])
        root = dest + PREFIX
        version = None
        for exe in ("collectord", "stackctl"):
            p = os.path.join(root, "bin", exe)
            r = run([p, "--version"])
            check(r.returncode == 0 and r.stdout.startswith(exe + " (stackwatch) "),
                  "%s --version: %r" % (exe, r.stdout))
            version = r.stdout.split()[-1]
        check(os.access(os.path.join(root, "lib", "libstackagent.so"), os.X_OK),
              "libstackagent.so installed")

        # Man pages: found by name through MANPATH, rendered without warnings.
        mandir = os.path.join(root, "share", "man")
        for name, sec in (("collectord", "8"), ("stackctl", "1"), ("stackwatch", "7")):
            page = os.path.join(mandir, "man" + sec, "%s.%s" % (name, sec))
            text = open(page).read()
            check("@" not in text.split("\n", 1)[0] and version in text.split("\n", 1)[0],
                  "%s(%s): version substituted" % (name, sec))
            r = run(["man", "-P", "cat", sec, name],
                    env=dict(os.environ, MANPATH=mandir, MANWIDTH="80", LC_ALL="C.UTF-8"))
            check(r.returncode == 0 and name.upper() in r.stdout and
                  "SEE ALSO" in r.stdout, "man %s %s renders (%s)" % (sec, name, r.stderr.strip()))
            r = run(["groff", "-man", "-Tutf8", "-ww", "-z", page])
            check(r.returncode == 0 and r.stderr == "",
                  "groff -ww: no warnings in %s.%s %s" % (name, sec, r.stderr))
            if shutil.which("mandoc"):
                r = run(["mandoc", "-Tlint", "-W", "warning", page])
                check(r.returncode == 0 and r.stdout == "",
                      "mandoc -Tlint: %s.%s %s" % (name, sec, r.stdout + r.stderr))
        r = run(["man", "-P", "cat", "stackctl"],
                env=dict(os.environ, MANPATH=mandir, MANWIDTH="80", LC_ALL="C.UTF-8"))
        check("stackctl diff" in r.stdout.replace("\u2010", "-") or "diff" in r.stdout,
              "man stackctl documents diff")
        check("attach" in r.stdout and "detach" in r.stdout and "reachability" in r.stdout,
              "man stackctl documents attach, detach and scan")
        check("--fail-on" in r.stdout.replace("\u2010", "-") and "128+N" in r.stdout and
              "stackwatch_limit_leaks" in r.stdout,
              "man stackctl documents run, its exit statuses and the pytest plugin")

        # The Python helper, where Debian's python3 looks for local installs.
        pyver = run([PY, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip()
        pydir = "%s/lib/python%s/dist-packages" % (PREFIX, pyver)
        sp = run([PY, "-c", "import sys; print('\\n'.join(sys.path))"]).stdout.split()
        check(pydir in sp, "%s is on Debian python3's path" % pydir)
        r = run([PY, "-c", "import stackwatch; print(stackwatch.__file__); "
                 "print(stackwatch.__version__); assert callable(stackwatch.install)"],
                env=dict(os.environ, PYTHONPATH=dest + pydir), cwd="/")
        out = r.stdout.split()
        check(r.returncode == 0 and out[0].startswith(dest + pydir),
              "import stackwatch from the installed file (%s)" % r.stderr.strip()[-200:])
        check(out[1:] == [version], "stackwatch.__version__ %s is collectord's %s" %
              (out[1:], version))
        # The pytest plugin beside it, loaded by -p stackwatch (Debian's python3-pytest).
        r = run([PY, "-m", "pytest", "-p", "stackwatch", "--help"],
                env=dict(os.environ, PYTHONPATH=dest + pydir), cwd="/")
        check(r.returncode == 0 and "--stackwatch-top" in r.stdout,
              "pytest -p stackwatch loads the installed plugin (%s)" % r.stderr.strip()[-200:])

        # stackctl run from the installed layout: collectord beside it, the
        # agent in ../lib, a private collectord for the run.
        env = dict(os.environ, XDG_RUNTIME_DIR=dest)
        env.pop("STACKWATCH_DIR", None)
        env.pop("STACKWATCH_AGENT", None)
        r = run([os.path.join(root, "bin", "stackctl"), "run", "--", "/bin/true"], env=env,
                cwd="/")
        check(r.returncode == 0 and "a private collectord" in r.stderr and
              "stackwatch: 1 process(es)" in r.stderr,
              "installed stackctl run finds collectord and the agent (%s)" % r.stderr[-300:])

        unit = open(os.path.join(root, "lib", "systemd", "user", "collectord.service")).read()
        check("ExecStart=%s/bin/collectord start --foreground" % PREFIX in unit and
              "[Install]" in unit and "@" not in unit, "systemd user unit")

        comp = os.path.join(root, "share", "bash-completion", "completions", "stackctl")

        def complete(*words):
            script = ("source %s; COMP_WORDS=(%s); COMP_CWORD=%d; _stackctl; "
                      "printf '%%s\\n' \"${COMPREPLY[@]}\"" %
                      (comp, " ".join("'%s'" % w for w in words), len(words) - 1))
            return run(["bash", "-c", script]).stdout.split()
        check(complete("stackctl", "") == ["run", "query", "mark", "snapshot", "diff", "report",
                                           "trigger", "attach", "detach", "scan", "--dir",
                                           "--version", "--help"],
              "completion: commands")
        check(complete("stackctl", "attach", "--") == ["--agent", "--timeout"],
              "completion: attach options")
        check(complete("stackctl", "query", "le") == ["leaks"], "completion: query leaks")
        check(complete("stackctl", "--dir", "/tmp", "query", "leaks", "--cl") == ["--class"],
              "completion: options after --dir DIR")
        check(complete("stackctl", "query", "leaks", "--format", "") ==
              ["text", "json", "folded", "pprof"], "completion: --format values")
        check(complete("stackctl", "trigger", "") == ["add", "list", "rm"],
              "completion: trigger")
        check(complete("stackctl", "run", "--fail-on", "") == ["leak", "growing", "unreachable"],
              "completion: run --fail-on")

        r = run(["make", "-s", "uninstall", "DESTDIR=" + dest, "PREFIX=" + PREFIX], cwd=ROOT)
        left = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs]
        check(r.returncode == 0 and left == [], "make uninstall removes every file: %s" % left)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    print("%d passed, %d failed" % (passed, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
