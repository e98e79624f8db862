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
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import unittest

import swtest as sw
from swtest import Collector, events, frame, hello, pb_field, prog, stackdefs, wait_until

OTHER = "swtest-other"
THIRD = "swtest-third"
PYTHON = "/usr/bin/python3"


def other_user(name=OTHER):
    """(uid, gid) of another user, created if missing (concurrent runs may race)."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        r = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", name], capture_output=True, text=True)
        if r.returncode not in (0, 9):  # 9: it exists (another run made it)
            raise AssertionError("useradd failed: %s" % r.stderr)
        pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid


def setpriv(uid, gid):
    """The prefix that runs a command as uid (no PAM, no supplementary groups)."""
    return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, "--clear-groups", "--"]


def as_other(uid, gid, args, **kw):
    """Runs args as the other user."""
    return subprocess.run(setpriv(uid, gid) + list(args),
                          capture_output=True, text=True, timeout=60, **kw)


# A process someone would like killed: says TERM when a SIGTERM reaches it
# (and runs on), answers each line with "pong". A SIGTERM sent before a line
# is handled before that line is read, so "pong" first means none came.
VICTIM = r"""
import signal, sys
signal.signal(signal.SIGTERM, lambda *a: print("TERM", flush=True))
print("ready", flush=True)
for line in sys.stdin:
    print("pong", flush=True)
"""

# A fake collectord: holds the pid file locked with a victim's pid in it and
# answers every control request on the socket with Pong{pid: the victim}.
FAKE_COLLECTORD = r"""
import fcntl, os, socket, struct, sys
sock, pidfile, victim, answer = sys.argv[1], sys.argv[2], sys.argv[3], bytes.fromhex(sys.argv[4])
lock = open(pidfile, "w")
lock.write(victim + "\n")
lock.flush()
fcntl.flock(lock, fcntl.LOCK_EX)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sock)
os.chmod(sock, 0o666)
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        while True:
            hdr = c.recv(4, socket.MSG_WAITALL)
            if len(hdr) < 4:
                break
            c.recv(struct.unpack("<I", hdr)[0], socket.MSG_WAITALL)
            c.sendall(answer)
    except OSError:
        pass
    c.close()
"""

# Root's `collectord stop` and user B's with their default directories
# (/tmp/stackwatch-UID: no --dir, no XDG_RUNTIME_DIR, no STACKWATCH_DIR),
# which user A made first, each with a victim's pid in a pid file A holds
# locked. Run in a mount namespace of its own with a fresh tmpfs on /tmp,
# so the real /tmp/stackwatch-0 is neither used nor disturbed; collectord
# is run from fd 3, opened before /tmp was covered.
# $1 collectord  $2 $3 uid, gid of A  $4 $5 uid, gid of B  $6 root's victim  $7 B's victim
PLANTED_DEFAULT_DIRS = r"""
exec 3<"$1"
mount -t tmpfs -o size=1m,mode=1777 swtest-tmp /tmp || exit 90
asA="setpriv --reuid=$2 --regid=$3 --clear-groups --"
asB="setpriv --reuid=$4 --regid=$5 --clear-groups --"
for u in 0:$6 $4:$7; do
    d=/tmp/stackwatch-${u%%:*}
    $asA sh -c "mkdir -m 755 $d && echo ${u#*:} > $d/collectord.pid && chmod 644 $d/collectord.pid" \
        || exit 91
done
$asA sh -c "exec 8</tmp/stackwatch-0/collectord.pid 9</tmp/stackwatch-$4/collectord.pid &&
    flock -x 8 && flock -x 9 && exec sleep 120" >/dev/null 2>&1 &
holder=$!  # sleep itself, holding both locks
i=0
while flock -n -s /tmp/stackwatch-$4/collectord.pid true; do
    i=$((i + 1)); [ $i -gt 6000 ] && exit 92; sleep 0.01
done
echo "== root"
env -u XDG_RUNTIME_DIR -u STACKWATCH_DIR /proc/self/fd/3 stop 2>&1; echo "rc=$?"
echo "== B"
$asB env -u XDG_RUNTIME_DIR -u STACKWATCH_DIR /proc/self/fd/3 stop 2>&1; echo "rc=$?"
echo "== B status"
$asB env -u XDG_RUNTIME_DIR -u STACKWATCH_DIR /proc/self/fd/3 status 2>&1; echo "rc=$?"
kill $holder
"""


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

    def victim(self, uid=None, gid=None):
        """A VICTIM process, of root or of uid."""
        cmd = [PYTHON, "-c", VICTIM]
        if uid is not None:
            cmd = setpriv(uid, gid) + cmd
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (p.kill(), p.communicate(timeout=30)))
        self.assertEqual(p.stdout.readline(), "ready\n")
        return p

    def assert_untouched(self, p, who):
        p.stdin.write("ping\n")
        p.stdin.flush()
        self.assertEqual(p.stdout.readline(), "pong\n", "%s (pid %d) got a SIGTERM" % (who, p.pid))
        self.assertIsNone(p.poll())

    def test_planted_pid_file_in_a_default_directory_kills_nobody(self):
        """Issue 17.1: user A makes /tmp/stackwatch-0 (and B's
        /tmp/stackwatch-UID) first, writes a victim's pid into collectord.pid
        and holds it locked; no daemon runs. Root's and B's plain
        `collectord stop` used to SIGTERM the victim (a root process, and
        one of B's). Now both refuse: the directory is not theirs."""
        b_uid, b_gid = other_user(THIRD)
        root_victim = self.victim()
        b_victim = self.victim(b_uid, b_gid)
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                            PLANTED_DEFAULT_DIRS, "sh", os.path.join(sw.BUILD, "collectord"),
                            str(self.uid), str(self.gid), str(b_uid), str(b_gid),
                            str(root_victim.pid), str(b_victim.pid)],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        said = {who: (out, int(rc)) for who, out, rc in
                re.findall(r"^== ([^\n]*)\n(.*?)^rc=(\d+)$", r.stdout, re.M | re.S)}
        self.assertEqual(sorted(said), ["B", "B status", "root"], r.stdout)
        self.assert_untouched(root_victim, "root's victim")
        self.assert_untouched(b_victim, "B's victim")
        out, rc = said["root"]
        self.assertEqual(rc, 1, out)
        self.assertIn("refusing to stop anything: /tmp/stackwatch-0 is owned by uid %d, not by "
                      "you (uid 0)" % self.uid, out)
        out, rc = said["B"]
        self.assertEqual(rc, 1, out)
        self.assertIn("refusing to stop anything: /tmp/stackwatch-%d is owned by uid %d, not by "
                      "you (uid %d)" % (b_uid, self.uid, b_uid), out)
        out, rc = said["B status"]
        self.assertEqual(rc, 1, out)  # not 3: something is there, and it is not B's
        self.assertIn("/tmp/stackwatch-%d is owned by uid %d" % (b_uid, self.uid), out)
        self.assertNotIn("not running", out)

    def test_stop_signals_only_what_the_control_socket_vouches_for(self):
        """Root's own directory, its mode loosened by mistake: user A binds
        control.sock there and answers every request with a victim's pid,
        holding a pid file that names it too. Then a process of root's own
        does the same. `collectord stop` signals neither's victim: the first
        listener is another uid (SO_PEERCRED), the second answers with a pid
        that is not its own."""
        tmp = tempfile.mkdtemp(prefix="swtest-stop-")
        self.addCleanup(shutil.rmtree, tmp, True)
        os.chmod(tmp, 0o755)
        d = os.path.join(tmp, "run")
        os.mkdir(d)
        os.chmod(d, 0o777)
        sock, pidfile = os.path.join(d, "control.sock"), os.path.join(d, "collectord.pid")
        cd = os.path.join(sw.BUILD, "collectord")
        victim = self.victim()
        answer = frame(pb_field(5, 2, pb_field(1, 0, victim.pid))).hex()
        for who, prefix, said in (("uid %d" % self.uid, setpriv(self.uid, self.gid),
                                   "served by uid %d" % self.uid),
                                  ("root", [], "answers with another pid")):
            fake = subprocess.Popen(prefix + [PYTHON, "-c", FAKE_COLLECTORD, sock, pidfile,
                                              str(victim.pid), answer],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                self.assertEqual(fake.stdout.readline(), "ready\n", who)
                stop = subprocess.run([cd, "stop", "--dir", d], capture_output=True, text=True,
                                      timeout=60)
                self.assert_untouched(victim, "the victim of a fake collectord of " + who)
                self.assertEqual(stop.returncode, 1, who + ": " + stop.stdout + stop.stderr)
                self.assertIn(said, stop.stderr, who)
                self.assertNotIn("stopped", stop.stdout, who)
                status = subprocess.run([cd, "status", "--dir", d], capture_output=True,
                                        text=True, timeout=60)
                self.assertEqual(status.returncode, 1, who + ": " + status.stdout)
                self.assertIn(said, status.stderr, who)
                self.assertIsNone(fake.poll(), who)
            finally:
                fake.kill()
                fake.communicate(timeout=30)
                for f in (sock, pidfile):
                    if os.path.exists(f):
                        os.unlink(f)

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
            # status says what is there (issue 17.6b: a third user was told
            # "not running"); stop leaves it be (root used to SIGTERM it).
            cd = os.path.join(sw.BUILD, "collectord")
            stop = subprocess.run([cd, "stop", "--dir", d], capture_output=True, text=True,
                                  timeout=60)
            self.assertIsNone(daemon.poll(), "root's stop ended the other user's collectord")
            self.assertEqual(stop.returncode, 1, stop.stdout + stop.stderr)
            self.assertIn("refusing to stop anything: %s is owned by uid %d" % (d, self.uid),
                          stop.stderr)
            b_uid, b_gid = other_user(THIRD)
            st = as_other(b_uid, b_gid, [cd, "status", "--dir", d])
            self.assertEqual(st.returncode, 1, st.stdout + st.stderr)
            self.assertIn("%s is owned by uid %d, not by you (uid %d)" % (d, self.uid, b_uid),
                          st.stderr)
            self.assertNotIn("not running", st.stdout + st.stderr)
            st = subprocess.run([cd, "status", "--dir", d], capture_output=True, text=True,
                                timeout=60)
            self.assertEqual(st.returncode, 1, st.stdout + st.stderr)
            self.assertIn("a collectord of uid %d (pid %d) runs there, not yours"
                          % (self.uid, daemon.pid), st.stderr)
            st = self.other([os.path.join(sw.BUILD, "stackctl"), "--dir", d, "query",
                             "clients", "--json"])
            self.assertEqual(st.returncode, 0, st.stderr)  # it runs and serves its user
            self.assertIsNone(daemon.poll())
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
