#!/usr/bin/env python3
"""LeakSanitizer's own lit tests (compiler-rt/test/lsan/TestCases, fetched by
scripts/fetch-lsan-tests.sh, never copied here) run under stackwatch and
under valgrind, side by side with what LeakSanitizer expects (issue 19.4).

Each test is built as its RUN lines say, without -fsanitize (so with glibc's
malloc), and each of its RUN lines is judged where the comparison means
something: LeakSanitizer's verdict is `not %run` (a leak found at exit) or
`%run` (none). stackwatch's is `stackctl run --fail-on unreachable` (a
reachability scan as each process ends: STACKWATCH_SCAN_AT_EXIT); valgrind's
is memcheck's "definitely" or "indirectly lost" at exit. A RUN line is left
out, with its reason, when it changes what LeakSanitizer looks at in a way
stackwatch cannot (a root class turned off: use_stacks=0 and the like,
suppressions, leak_check_at_exit=0, exitcode=0, ...), and a test is left
out when it calls the sanitizer API (__lsan_*, which has no meaning here).

    tests/lsanlit/run.py --build build --tests DIR [-k NAME] [--out FILE]

Prints a table (Markdown) and a summary; writes the table to --out. Exit
status 1 when stackwatch calls a line lost that LeakSanitizer and valgrind
both call clean (a false lost block), else 0: the other disagreements are
the figures of docs/RELIABILITY.md, not failures.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

# Options that do not change whether a leak is found at exit, or that set
# what stackwatch always does (every root class on, aligned words only).
NEUTRAL = {"report_objects": None, "log_pointers": None, "log_threads": None,
           "print_suppressions": None, "symbolize": None, "verbosity": None,
           "use_stacks": "1", "use_registers": "1", "use_globals": "1", "use_tls": "1",
           "use_root_regions": "1", "use_unaligned": "0", "detect_leaks": "1",
           "leak_check_at_exit": "1", "log_to_syslog": None, "abort_on_error": None}


def run_lines(text):
    """The RUN lines, continuations joined, `a && b` split in two."""
    lines, cur = [], ""
    for l in text.splitlines():
        m = re.search(r"//\s*RUN:\s?(.*)$", l)
        if not m:
            continue
        part = m.group(1).rstrip()
        if part.endswith("\\"):
            cur += part[:-1] + " "
            continue
        lines += [x.strip() for x in (cur + part).split("&&")]
        cur = ""
    return lines


def lsan_opts(line):
    m = re.search(r'%env_lsan_opts=(?:"([^"]*)"|(\S*))', line)
    if not m:
        return {}
    s = m.group(1) if m.group(1) is not None else m.group(2)
    out = {}
    for kv in s.split(":"):
        if "=" in kv:
            k, v = kv.split("=", 1)
            out[k.strip()] = v.strip().strip("'")
    return out


def why_not_comparable(line, opts):
    for k, v in opts.items():
        if k not in NEUTRAL:
            return "option %s=%s" % (k, v)
        if NEUTRAL[k] is not None and v != NEUTRAL[k]:
            return "option %s=%s" % (k, v)
    if re.search(r"\bstrace\b", line):
        return "runs under strace"
    if "ASAN_OPTIONS" in line:
        return "ASan options"
    return None


def subst(cmd, src, t, tmp, inc):
    cc = "clang" if src.endswith(".c") else "clang++"
    flags = "-O0 -g -pthread -I" + shlex.quote(inc)
    for k, v in (("%clangxx_lsan ", "clang++ %s " % flags), ("%clang_lsan ", "%s %s " % (cc, flags)),
                 ("%clangxx ", "clang++ %s " % flags), ("%clang ", "%s %s " % (cc, flags)),
                 ("%device_rundir", tmp), ("%push_to_device", "true")):
        cmd = cmd.replace(k, v)
    cmd = re.sub(r"%s\b", shlex.quote(src), cmd)
    cmd = re.sub(r"%t\b", shlex.quote(t), cmd)
    return cmd


def program_argv(line, t):
    """The program and its arguments of a %run line, or None."""
    cmd = re.split(r"\s2>&1|\s\|\s|\s>", " " + line)[0]
    cmd = re.sub(r'%env_lsan_opts=(?:"[^"]*"|\S*)', " ", cmd)
    toks = [x for x in shlex.split(cmd) if x not in ("not", "%run", "env")]
    toks = [x for x in toks if not re.match(r"^[A-Z_]+=", x)]
    if not toks or toks[0] != "%t":
        return None
    return [t] + toks[1:]


def our_verdict(build, argv, tmp, timeout):
    xdg = os.path.join(tmp, "xdg")
    os.makedirs(xdg, mode=0o700, exist_ok=True)
    env = dict(os.environ, XDG_RUNTIME_DIR=xdg,
               STACKWATCH_AGENT=os.path.join(build, "libstackagent.so"))
    for k in ("STACKWATCH_DIR", "LD_PRELOAD", "DEBUGINFOD_URLS", "LSAN_OPTIONS"):
        env.pop(k, None)
    out = os.path.join(tmp, "report.json")
    if os.path.exists(out):
        os.unlink(out)
    try:
        r = subprocess.run([os.path.join(build, "stackctl"), "run", "--expire", "1", "--fail-on",
                            "unreachable", "--json", "-o", out, "--"] + argv,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout, env=env, cwd=tmp)
    except subprocess.TimeoutExpired:
        return "timeout", 0
    if not os.path.exists(out):
        return "no report (%d)" % r.returncode, 0
    with open(out) as f:
        rep = json.load(f)
    scans = [c["scan"] for c in rep.get("clients", []) if c.get("scan")]
    if not scans:
        return "no scan", 0
    lost = sum(s["unreachable"]["count"] for s in scans)
    return ("leak" if lost else "clean"), lost


def vg_verdict(argv, tmp, timeout):
    try:
        r = subprocess.run(["valgrind", "--leak-check=full", "--trace-children=no",
                            "--child-silent-after-fork=no"] + argv,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout, cwd=tmp)
    except subprocess.TimeoutExpired:
        return "timeout", 0
    lost = 0
    seen = False
    for l in r.stderr.splitlines():
        m = re.search(r"(definitely|indirectly) lost: [\d,]+ bytes in ([\d,]+) blocks", l)
        if m:
            seen = True
            lost += int(m.group(2).replace(",", ""))
        if "All heap blocks were freed" in l or "LEAK SUMMARY" in l:
            seen = True
    if not seen:
        return "no check (%d)" % r.returncode, 0
    return ("leak" if lost else "clean"), lost


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--tests", required=True, help="compiler-rt/test/lsan/TestCases")
    ap.add_argument("-k", action="append", default=[])
    ap.add_argument("--out")
    ap.add_argument("--timeout", type=int, default=180)
    ap.add_argument("--no-valgrind", action="store_true")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    files = []
    for sub in ("", "Linux", "Posix"):
        d = os.path.join(a.tests, sub)
        files += sorted(os.path.join(d, f) for f in os.listdir(d)
                        if f.endswith((".c", ".cpp")))
    inc = os.path.normpath(os.path.join(a.tests, "..", ".."))  # sanitizer_common/print_address.h
    rows, skipped = [], []
    n = agree_lsan = agree_vg = vg_n = 0
    false_lost = []
    for src in files:
        name = os.path.relpath(src, a.tests)
        if a.k and not any(k in name for k in a.k):
            continue
        text = open(src, errors="replace").read()
        if re.search(r"__lsan_|__asan_|sanitizer/", text):
            skipped.append((name, "calls the sanitizer API"))
            continue
        tmp = tempfile.mkdtemp(prefix="swlit-")
        t = os.path.join(tmp, "t")
        try:
            built = True
            for line in run_lines(text):
                if "%run" in line:
                    continue
                cmd = subst(line, src, t, tmp, inc)
                r = subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=tmp)
                if r.returncode != 0 and "%clang" in line:
                    skipped.append((name, "does not build without -fsanitize: %s" %
                                    (r.stderr.strip().splitlines() or ["?"])[-1][:100]))
                    built = False
                    break
            if not built:
                continue
            for line in run_lines(text):
                if "%run" not in line:
                    continue
                opts = lsan_opts(line)
                why = why_not_comparable(line, opts)
                argv = program_argv(line, t)
                if why is None and argv is None:
                    why = "not a plain program run"
                if why:
                    skipped.append(("%s `%s`" % (name, line[:60]), why))
                    continue
                expect = "leak" if re.search(r"(^|\s)not\s", line) else "clean"
                ours, ours_n = our_verdict(build, argv, tmp, a.timeout)
                vg, vg_lost = ("-", 0) if a.no_valgrind else vg_verdict(argv, tmp, a.timeout)
                n += 1
                agree_lsan += ours == expect
                if vg in ("leak", "clean"):
                    vg_n += 1
                    agree_vg += ours == vg
                if ours == "leak" and expect == "clean" and vg != "leak":
                    false_lost.append("%s %s" % (name, " ".join(argv[1:])))
                rows.append("| %s | %s | %s | %s | %s (%d) | %s (%d) | %s |" % (
                    name, ":".join("%s=%s" % kv for kv in opts.items()) or "(defaults)",
                    " ".join(argv[1:]) or "", expect, vg, vg_lost, ours, ours_n,
                    "yes" if ours == expect else "**no**"))
                print(rows[-1], flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    table = ("| test | LSAN_OPTIONS | args | LeakSanitizer | valgrind (lost blocks) | "
             "stackwatch (lost blocks) | same as LSan |\n|---|---|---|---|---|---|---|\n" +
             "\n".join(rows))
    summary = ("%d RUN lines compared: stackwatch agrees with LeakSanitizer on %d, with "
               "valgrind on %d of %d; left out: %d (reasons below)" %
               (n, agree_lsan, agree_vg, vg_n, len(skipped)))
    notes = "\n".join("- %s: %s" % s for s in skipped)
    print("\n" + table + "\n\n" + summary + "\n\nLeft out:\n" + notes)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n\n" + summary + "\n\nLeft out:\n\n" + notes + "\n")
    if false_lost:
        print("false lost (LeakSanitizer and valgrind both clean):\n  " + "\n  ".join(false_lost))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
