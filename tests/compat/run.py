#!/usr/bin/env python3
"""Real Debian programs bare and under the agent: same exit status, same stdout.

  run.py [--build DIR] [--quick | --all] [--only NAME ...] [--markdown]

Each case runs once without the agent and once with LD_PRELOAD set and a
collectord running (its own, in a temp directory); its exit status and
stdout must be identical (each case's output is deterministic: fixed dates,
seeds, sort orders), and collectord must list the program (so it really was
traced). The wall-time ratio preloaded/bare is the overhead. --quick runs the
cases that `make check` runs (under a minute in total); --all adds the long
ones (`make soak`): ls -R /usr and redis-server under redis-benchmark.

Each case runs bare, preloaded, bare again: a tree that changes while it is
read (ls -R /usr while packages install) shows as two different bare outputs
and the case is run again; only a preloaded output that differs from two
equal bare ones counts. The bare time is the faster bare run (the first may
read a cold cache). Exit status 0 when there are no differences.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import swtest  # noqa: E402

GIT_ENV = {"GIT_AUTHOR_NAME": "A", "GIT_AUTHOR_EMAIL": "a@example.invalid",
           "GIT_COMMITTER_NAME": "A", "GIT_COMMITTER_EMAIL": "a@example.invalid",
           "GIT_AUTHOR_DATE": "2020-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2020-01-01T00:00:00Z",
           "GIT_CONFIG_NOSYSTEM": "1", "HOME": "{work}", "TZ": "UTC", "LC_ALL": "C"}

C_SRC = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static int cmp(const void *a, const void *b) { return strcmp(*(char **)a, *(char **)b); }
int main(void) {
    char *w[2000];
    unsigned x = 1;
    for (int i = 0; i < 2000; i++) {
        x = x * 1103515245u + 12345u;
        w[i] = malloc(16);
        snprintf(w[i], 16, "w%08x", x);
    }
    qsort(w, 2000, sizeof *w, cmp);
    printf("%s %s %s\n", w[0], w[999], w[1999]);
    for (int i = 0; i < 2000; i++) free(w[i]);
    return 3;
}
"""

MAKEFILE = """\
SRCS := $(wildcard src/*.c)
OBJS := $(SRCS:src/%.c=obj/%.o)
all: prog
\t./prog
obj/%.o: src/%.c
\t@mkdir -p obj
\tgcc -O1 -c $< -o $@
prog: $(OBJS)
\tgcc $(OBJS) -o $@
clean:
\trm -rf obj prog
.PHONY: all clean
"""

PERL = r"""
my %h; my @w;
for my $i (1..20000) { my $k = sprintf("k%05d", ($i * 7919) % 20011); $h{$k} .= "x"; push @w, $k if $i % 97 == 0; }
my @s = sort { length($h{$b}) <=> length($h{$a}) || $a cmp $b } keys %h;
my $t = join(",", @w); $t =~ s/k0*(\d)/K$1/g;
printf "%d %s %s %d\n", scalar(keys %h), $s[0], $s[-1], length($t);
print join(" ", map { uc } grep { /7$/ } @w[0..50]), "\n";
"""

NUMPY = r"""
import numpy as np
rng = np.random.default_rng(1234)
a = rng.standard_normal((400, 400))
s = a @ a.T
w = np.linalg.eigvalsh(s)
print(np.round(w[:3], 6), np.round(w[-1], 4))
m = a > 0.5
print(int(m.sum()), np.round(a[m].mean(), 8), a[m].shape)
chunks = [np.sort(rng.integers(0, 1000, 5000))[::-1][:5] for _ in range(50)]
print(np.stack(chunks).sum(axis=0))
"""

SQL = """\
CREATE TABLE t(id INTEGER PRIMARY KEY, g INTEGER, v TEXT);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000)
INSERT INTO t SELECT i, i % 17, printf('v%06d', (i * 7919) % 20011) FROM c;
CREATE INDEX tg ON t(g, v);
SELECT g, count(*), min(v), max(v) FROM t GROUP BY g ORDER BY g LIMIT 5;
SELECT count(DISTINCT v), sum(length(v)) FROM t;
UPDATE t SET v = upper(v) WHERE id % 3 = 0;
DELETE FROM t WHERE g = 4;
SELECT count(*), group_concat(v, '') LIKE '%V0%' FROM t;
VACUUM;
PRAGMA integrity_check;
"""

BASH = r"""
declare -A seen; arr=()
for i in $(seq 1 3000); do k=$(( (i * 7919) % 1013 )); seen[$k]=$(( ${seen[$k]:-0} + 1 )); arr+=("$k"); done
echo "${#seen[@]} ${#arr[@]} ${arr[0]} ${arr[-1]}"
s=""; for k in "${arr[@]:0:200}"; do s+="$k,"; done; echo "${#s} ${s:0:40}"
printf '%s\n' "${arr[@]}" | sort -n | uniq -c | sort -rn | head -3
x=$(for i in 1 2 3; do (echo "sub$i"; exit $i); done | tr '\n' ' '); echo "$x"
f() { local n=$1; (( n <= 1 )) && echo 1 && return; echo $(( n * $(f $((n - 1))) )); }; f 10
"""


def case_cmds(tmp):
    """name -> (argv, setup(workdir), quick, env extras). Each runs in its own
    fresh workdir under tmp; the same relative layout bare and preloaded."""
    py = "/usr/bin/python3"

    def setup_git(w):
        for i in range(30):
            with open(os.path.join(w, "f%02d.txt" % i), "w") as f:
                f.write("line %d\n" % i * (i + 1))

    git_script = textwrap.dedent("""\
        set -e
        git init -q -b main repo && cd repo
        for i in $(seq 0 14); do cp ../f$(printf %02d $i).txt .; git add .; git commit -q -m "c$i"; done
        git checkout -q -b topic HEAD~5 && echo extra >> f05.txt && git commit -q -am extra
        git checkout -q main && git merge -q --no-edit topic
        git log --format='%H %s' | head -5
        git rev-list --count HEAD
        git gc -q && git count-objects -v | grep -v size
        git diff HEAD~3 --stat | tail -1
        git fsck --no-progress 2>&1 | sort
    """)

    def setup_gcc(w):
        with open(os.path.join(w, "x.c"), "w") as f:
            f.write(C_SRC)

    def setup_make(w):
        os.makedirs(os.path.join(w, "src"))
        for i in range(8):
            with open(os.path.join(w, "src", "m%d.c" % i), "w") as f:
                if i == 0:
                    f.write("#include <stdio.h>\n" + "".join("int f%d(void);\n" % k
                                                              for k in range(1, 8)) +
                            "int main(void){int s=0;" +
                            "".join("s+=f%d();" % k for k in range(1, 8)) +
                            "printf(\"%d\\n\",s);return 0;}\n")
                else:
                    f.write("int f%d(void){return %d;}\n" % (i, i * i))
        with open(os.path.join(w, "Makefile"), "w") as f:
            f.write(MAKEFILE)

    def setup_sql(w):
        with open(os.path.join(w, "q.sql"), "w") as f:
            f.write(SQL)

    def setup_openssl(w):
        with open(os.path.join(w, "data"), "wb") as f:
            f.write(bytes((i * 7919) % 251 for i in range(1 << 20)))

    ossl = textwrap.dedent("""\
        set -e
        openssl dgst -sha256 -r data
        openssl dgst -sha512 -r data
        openssl enc -aes-256-cbc -K 000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f \
            -iv 0f0e0d0c0b0a09080706050403020100 -in data | openssl dgst -sha256 -r
        openssl base64 -in data | tail -2
        openssl prime 2147483647
        openssl asn1parse -genstr 'UTF8:hello world'
    """)
    tar_script = textwrap.dedent("""\
        set -e
        tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf inc.tar \
            -C /usr/include/python3.11 .
        sha256sum inc.tar | cut -d' ' -f1
        gzip -n -9 -c inc.tar > inc.tar.gz && sha256sum inc.tar.gz | cut -d' ' -f1
        mkdir out && tar -xzf inc.tar.gz -C out && find out -type f | sort | head -3
        tar -tvf inc.tar | wc -l
    """)
    return {
        "git": (["bash", "-c", git_script], setup_git, True, GIT_ENV),
        "gcc": (["bash", "-c", "gcc -O2 -Wall -c x.c -o x.o && sha256sum x.o | cut -c1-64 && "
                 "gcc x.o -o x && ./x; echo status $?"], setup_gcc, True, {}),
        "perl": (["perl", "-e", PERL], None, True, {}),
        "python3-numpy": ([py, "-c", NUMPY], None, True, {}),
        "sqlite3": (["sqlite3", "db.sqlite", ".read q.sql"], setup_sql, True, {}),
        "bash": (["bash", "-c", BASH], None, True, {"LC_ALL": "C"}),
        "make": (["make", "-j1", "all"], setup_make, True, {"LC_ALL": "C"}),
        "tar": (["bash", "-c", tar_script], None, True, {"LC_ALL": "C"}),
        "openssl": (["bash", "-c", ossl], setup_openssl, True, {}),
        "ls-R-usr": (["ls", "-R", "/usr"], None, False, {"LC_ALL": "C"}),
        "redis": (None, None, False, {}),  # run_redis
    }


class Result:
    def __init__(self, name):
        self.name = name
        self.bare_s = self.pre_s = 0.0
        self.same = False
        self.traced = 0
        self.note = ""


def run_once(argv, work, env, timeout=600):
    t0 = time.monotonic()
    r = subprocess.run(argv, cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    return r, time.monotonic() - t0


def fresh_work(tmp, tag, setup):
    w = os.path.join(tmp, tag)
    shutil.rmtree(w, ignore_errors=True)
    os.makedirs(w)
    if setup:
        setup(w)
    return w


def client_pids(col):
    return {c["pid"] for c in col.clients()}


def run_case(col, tmp, name, spec):
    argv, setup, _quick, extra = spec
    res = Result(name)
    # Same path bare and preloaded: outputs may name their directory.
    def env_for(work, traced):
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        for k, v in extra.items():
            env[k] = v.replace("{work}", work)
        if traced:
            env = dict(col.agent_env(), **{k: env[k] for k in extra})
        return env
    before = client_pids(col)
    # bare, preloaded, bare again: the second bare run shows whether the
    # input changed under us (then all three again) and, warm, gives the
    # bare time (the faster of the two: the first may read a cold cache).
    for attempt in range(3):
        w = fresh_work(tmp, "w", setup)
        bare, t1 = run_once(argv, w, env_for(w, False))
        w = fresh_work(tmp, "w", setup)
        pre, res.pre_s = run_once(argv, w, env_for(w, True))
        w = fresh_work(tmp, "w", setup)
        bare2, t2 = run_once(argv, w, env_for(w, False))
        res.bare_s = min(t1, t2)
        same = bare.returncode == pre.returncode and bare.stdout == pre.stdout
        if bare2.returncode == bare.returncode and bare2.stdout == bare.stdout:
            break
        res.note = "input changed during the run; retried"
    res.same = same
    if not same:
        res.note = "exit %d vs %d; stdout %d vs %d bytes; first difference at byte %d" % (
            bare.returncode, pre.returncode, len(bare.stdout), len(pre.stdout),
            next((i for i, (a, b) in enumerate(zip(bare.stdout, pre.stdout)) if a != b),
                 min(len(bare.stdout), len(pre.stdout))))
        sys.stderr.write("--- %s bare stderr:\n%s\n--- preloaded stderr:\n%s\n" % (
            name, bare.stderr.decode(errors="replace")[-2000:],
            pre.stderr.decode(errors="replace")[-2000:]))
    if bare.returncode != 0:
        res.note += " (bare exit %d: %s)" % (bare.returncode,
                                             bare.stderr.decode(errors="replace")[-300:])
    res.traced = len(swtest.wait_until(lambda: client_pids(col) - before, timeout=30,
                                       what="%s listed by collectord" % name))
    return res


def run_redis(col, tmp, seconds=4):
    """redis-server on a Unix socket (no TCP port), redis-benchmark against it
    for about `seconds` (request count calibrated bare), then the keyspace as
    redis-cli reads it: compared bare and preloaded."""
    res = Result("redis")
    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        if not shutil.which(tool):
            res.note = "%s missing (scripts/soak-deps.sh installs it)" % tool
            return res
    before = client_pids(col)

    def once(traced, requests):
        w = fresh_work(tmp, "redis", None)
        sock = os.path.join(w, "redis.sock")
        env = col.agent_env() if traced else {k: v for k, v in os.environ.items()
                                             if k != "LD_PRELOAD"}
        server = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock,
                                   "--save", "", "--appendonly", "no", "--dir", w],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            swtest.wait_until(lambda: subprocess.run(["redis-cli", "-s", sock, "ping"],
                                                     capture_output=True).stdout.strip() ==
                              b"PONG", timeout=30, what="redis-server to answer")
            t0 = time.monotonic()
            b = subprocess.run(["redis-benchmark", "-s", sock, "-n", str(requests), "-q",
                                "-t", "set,get,incr,lpush,lpop,sadd,hset", "-P", "8"],
                               capture_output=True, timeout=600)
            dt = time.monotonic() - t0
            cli = subprocess.run(["redis-cli", "-s", sock], input=b"DBSIZE\nLLEN mylist\n"
                                 b"GET counter:__rand_int__\nSCARD myset\n", capture_output=True)
            subprocess.run(["redis-cli", "-s", sock, "shutdown", "nosave"], capture_output=True)
            rc = server.wait(60)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        return b.returncode, cli.stdout, rc, dt, server.pid

    # Calibrate: about `seconds` bare.
    n = 20000
    _, _, _, dt, _ = once(False, n)
    n = max(20000, int(n * seconds / max(dt, 0.01)))
    brc, bout, bsrv, res.bare_s, _ = once(False, n)
    prc, pout, psrv, res.pre_s, spid = once(True, n)
    res.same = (brc, bout, bsrv) == (prc, pout, psrv)
    if not res.same:
        res.note = "bare %r, preloaded %r" % ((brc, bout, bsrv), (prc, pout, psrv))
    res.note += " %d requests x 7 commands" % n
    res.traced = len(client_pids(col) - before)
    if spid not in client_pids(col):
        res.note += "; redis-server was not listed"
        res.traced = 0
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="the cases make check runs")
    g.add_argument("--all", action="store_true", help="every case (make soak)")
    ap.add_argument("--only", action="append")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    swtest.configure(build, build, os.path.join(build, "progs"))
    tmp = tempfile.mkdtemp(prefix="swcompat-")
    col = swtest.Collector(expire=5)
    results = []
    t_all = time.monotonic()
    try:
        cases = case_cmds(tmp)
        for name, spec in cases.items():
            if a.only and name not in a.only:
                continue
            if not a.only and not a.all and not spec[2]:
                continue
            if name == "redis":
                r = run_redis(col, tmp)
            else:
                r = run_case(col, tmp, name, spec)
            results.append(r)
            print("%-14s %-5s bare %7.2fs  preloaded %7.2fs  x%.2f  traced %d  %s" % (
                r.name, "same" if r.same else "DIFF", r.bare_s, r.pre_s,
                r.pre_s / r.bare_s if r.bare_s else 0, r.traced, r.note.strip()), flush=True)
    finally:
        col.close()
        shutil.rmtree(tmp, ignore_errors=True)
    diffs = [r for r in results if not r.same or not r.traced]
    if a.markdown:
        print("\n| program | exit status and stdout | bare s | preloaded s | overhead | traced processes |")
        print("|---|---|---|---|---|---|")
        for r in results:
            print("| %s | %s | %.2f | %.2f | %.2fx | %d |" % (
                r.name, "identical" if r.same else "DIFFERENT", r.bare_s, r.pre_s,
                r.pre_s / r.bare_s if r.bare_s else 0, r.traced))
    print("compat: %d passed, %d failed (%.0f s)" % (len(results) - len(diffs), len(diffs),
                                                   time.monotonic() - t_all))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
