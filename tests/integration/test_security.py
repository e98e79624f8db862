"""The security model (docs/RELIABILITY.md): one collectord per user; its
directory 0700 and sockets 0600; it serves its own uid and root only (SO_PEERCRED,
on both sockets, even when the modes are loosened); agents and stackctl talk
only to a collectord of their own uid or root's, so a directory another user
made first (/tmp/stackwatch-UID) gets neither a program's stacks nor its
trigger rules; symlinks and planted files in the runtime directory are
refused. The second user is created with useradd (root only; otherwise the
class is skipped with the reason)."""

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import unittest

import swtest as sw
from swtest import Collector, events, frame, hello, pb_field, prog, stackdefs, wait_until

OTHER = "swtest-other"
PYTHON = "/usr/bin/python3"


def other_user():
    """(uid, gid) of a second user, created if missing (concurrent runs may race)."""
    try:
        pw = pwd.getpwnam(OTHER)
    except KeyError:
        r = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", OTHER], capture_output=True, text=True)
        if r.returncode not in (0, 9):  # 9: it exists (another run made it)
            raise AssertionError("useradd failed: %s" % r.stderr)
        pw = pwd.getpwnam(OTHER)
    return pw.pw_uid, pw.pw_gid


def as_other(uid, gid, args, **kw):
    """Runs args as the other user (setpriv: no PAM, no supplementary groups)."""
    return subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid,
                           "--clear-groups", "--"] + list(args),
                          capture_output=True, text=True, timeout=60, **kw)


PY_CONNECT = r"""
import socket, sys, struct
for path in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        print("%s refused %s" % (path, type(e).__name__))
        continue
    s.settimeout(10)
    data = b""
    try:
        s.sendall(bytes.fromhex(sys.stdin.readline().strip() or "00"))
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed on us while we were still sending
    except OSError as e:
        print("%s error %s" % (path, type(e).__name__))
        continue
    print("%s closed after %d bytes" % (path, len(data)))
"""


@unittest.skipUnless(os.geteuid() == 0,
                     "needs root to create a second user (useradd) and run as it (setpriv)")
class SecurityTest(unittest.TestCase):
    quick = False

    @classmethod
    def setUpClass(cls):
        cls.uid, cls.gid = other_user()

    def other(self, args, **kw):
        return as_other(self.uid, self.gid, args, **kw)

    def test_modes_and_another_user_shut_out(self):
        col = Collector(expire=0.5, extra=["--on-leak", "USR1"])
        try:
            d = col.dir
            self.assertEqual(stat.S_IMODE(os.stat(d).st_mode), 0o700)
            for name in ("agent.sock", "control.sock", "collectord.pid"):
                self.assertEqual(stat.S_IMODE(os.lstat(os.path.join(d, name)).st_mode), 0o600,
                                 name)
            # The tests' temp dir must be traversable for the other user to
            # reach the directory at all (it is 0700 by mkdtemp).
            os.chmod(col.tmp, 0o755)
            agent, control = os.path.join(d, "agent.sock"), os.path.join(d, "control.sock")
            # Neither socket, not even a listing of the directory.
            r = self.other([PYTHON, "-c", PY_CONNECT, agent, control], input="\n")
            self.assertIn("agent.sock refused PermissionError", r.stdout, r.stderr)
            self.assertIn("control.sock refused PermissionError", r.stdout, r.stderr)
            self.assertNotEqual(self.other(["ls", d]).returncode, 0)
            stackctl = os.path.join(sw.BUILD, "stackctl")
            for args in (["query", "leaks"], ["query", "clients"],
                         ["trigger", "add", "--match", ".", "--signal", "USR1"], ["mark"]):
                r = self.other([stackctl, "--dir", d] + args)
                self.assertNotEqual(r.returncode, 0, args)

            # Modes loosened (by mistake, or a socket handed on): collectord
            # itself refuses the other uid on both sockets.
            os.chmod(d, 0o755)
            os.chmod(agent, 0o666)
            os.chmod(control, 0o666)
            ping = frame(pb_field(4, 2, b""))
            r = self.other([PYTHON, "-c", PY_CONNECT, control], input=ping.hex() + "\n")
            self.assertIn("control.sock closed after 0 bytes", r.stdout, r.stderr)
            bye_data = hello(instance=0x5EC) + stackdefs(1, 0x5EC, [0x1000]) + \
                events(1000, [(0, 0x10, 1000, 64, 1)])
            r = self.other([PYTHON, "-c", PY_CONNECT, agent], input=bye_data.hex() + "\n")
            self.assertIn("agent.sock closed after 0 bytes", r.stdout, r.stderr)
            for args in (["query", "leaks", "--json"],
                         ["trigger", "add", "--match", ".", "--signal", "USR1"]):
                r = self.other([stackctl, "--dir", d] + args)
                self.assertNotEqual(r.returncode, 0, args)
                self.assertNotIn("CallStack", r.stdout)
            # A leaking program of the other user, traced: refused, so it
            # is never listed, never armed, never signalled (it has a
            # USR1 handler that would say so), and it runs on unharmed.
            # (setpriv itself is not traced: it sets capabilities and
            # KEEPCAPS on its main thread only, and glibc aborts a
            # multi-threaded process whose threads then disagree on setresgid.)
            p = subprocess.Popen(["setpriv", "--reuid=%d" % self.uid, "--regid=%d" % self.gid,
                                  "--clear-groups", "--", "env", "LD_PRELOAD=" + sw.agent_path(),
                                  "STACKWATCH_DIR=" + d, prog("trigger_target"), "leakonly"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            wait_until(lambda: "from uid %d (pid %d)" % (self.uid, p.pid) in col.read_log(),
                       what="the program's connection refused")
            self.assertEqual([c for c in col.clients() if c["pid"] == p.pid], [])
            self.assertEqual(col.ctl("trigger", "list", "--json").stdout.count('"id"'), 0)
            out, err = p.communicate("", timeout=30)
            self.assertEqual(p.returncode, 0, err)
            self.assertIn("signals 0 tids", out)
            log = col.read_log()
            self.assertIn("refused a control connection", log)
            self.assertNotIn("signalled pid", log)
            self.assertEqual(col.clients(), [])
        finally:
            col.close()

    def test_another_users_collectord_gets_nothing(self):
        """The other user made the directory first and runs collectord there:
        root's traced program, stackctl and collectord stop all refuse it."""
        tmp = tempfile.mkdtemp(prefix="swtest-sec-")
        os.chmod(tmp, 0o755)
        d = os.path.join(tmp, "run")
        os.mkdir(d, 0o700)
        os.chown(d, self.uid, self.gid)
        daemon = subprocess.Popen(["setpriv", "--reuid=%d" % self.uid, "--regid=%d" % self.gid,
                                   "--clear-groups", "--", os.path.join(sw.BUILD, "collectord"),
                                   "start", "-f", "--dir", d],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            self.assertIn("running in the foreground", daemon.stdout.readline())
            self.assertEqual(os.stat(d).st_uid, self.uid)
            env = dict(os.environ, LD_PRELOAD=sw.agent_path(), STACKWATCH_DIR=d)
            r = subprocess.run([prog("plain")], capture_output=True, text=True, env=env,
                               timeout=60)
            self.assertEqual(r.returncode, 7)
            self.assertIn("runs as uid %d" % self.uid, r.stderr)
            self.assertIn("not connecting", r.stderr)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
            st = self.other([os.path.join(sw.BUILD, "stackctl"), "--dir", d, "query",
                             "clients", "--json"])
            self.assertEqual(st.returncode, 0, st.stderr)
            self.assertEqual(json.loads(st.stdout)["clients"], [])
            mine = subprocess.run([os.path.join(sw.BUILD, "stackctl"), "--dir", d, "query",
                                   "leaks"], capture_output=True, text=True, timeout=60)
            self.assertEqual(mine.returncode, 1)
            self.assertIn("runs as another user", mine.stderr)
            start = subprocess.run([os.path.join(sw.BUILD, "collectord"), "start", "--dir", d],
                                   capture_output=True, text=True, timeout=60)
            self.assertEqual(start.returncode, 1)
            self.assertIn("owned by uid %d" % self.uid, start.stderr)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.communicate(timeout=30)
            shutil.rmtree(tmp, ignore_errors=True)

    def test_planted_files_in_the_runtime_directory(self):
        """Symlinks for the directory, the pid file and the log, and a
        planted FIFO pid file: refused or not followed; targets untouched."""
        tmp = tempfile.mkdtemp(prefix="swtest-plant-")
        cd = os.path.join(sw.BUILD, "collectord")
        try:
            target = os.path.join(tmp, "target")
            os.mkdir(target, 0o700)
            link = os.path.join(tmp, "link")
            os.symlink(target, link)
            r = subprocess.run([cd, "start", "--dir", link], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.returncode, 1)
            self.assertIn("symbolic link", r.stderr)
            self.assertEqual(os.listdir(target), [])

            d = os.path.join(tmp, "run")
            os.mkdir(d, 0o700)
            victim = os.path.join(tmp, "victim")
            with open(victim, "w") as f:
                f.write("precious\n")
            os.symlink(victim, os.path.join(d, "collectord.pid"))
            r = subprocess.run([cd, "start", "--dir", d], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.returncode, 1, r.stdout)
            os.unlink(os.path.join(d, "collectord.pid"))
            os.mkfifo(os.path.join(d, "collectord.pid"), 0o600)
            r = subprocess.run([cd, "start", "--dir", d], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.returncode, 1, r.stdout)
            self.assertIn("not a regular file", r.stderr)
            st = subprocess.run([cd, "status", "--dir", d], capture_output=True, text=True,
                                timeout=30)
            self.assertEqual(st.returncode, 3)  # answers at once, FIFO or not
            os.unlink(os.path.join(d, "collectord.pid"))
            # The daemon's log through a planted symlink: not written.
            if os.path.lexists(os.path.join(d, "collectord.log")):
                os.unlink(os.path.join(d, "collectord.log"))
            os.symlink(victim, os.path.join(d, "collectord.log"))
            r = subprocess.run([cd, "start", "--dir", d], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            stop = subprocess.run([cd, "stop", "--dir", d], capture_output=True, text=True,
                                  timeout=30)
            self.assertEqual(stop.returncode, 0, stop.stderr)
            with open(victim) as f:
                self.assertEqual(f.read(), "precious\n")
        finally:
            subprocess.run([cd, "stop", "--dir", os.path.join(tmp, "run")],
                           capture_output=True, timeout=30)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
