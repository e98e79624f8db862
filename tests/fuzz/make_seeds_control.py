#!/usr/bin/env python3
"""Writes seed inputs for the control-direction fuzz targets:

  tests/fuzz/seeds/ctl_requests/    fuzz_ctl_requests.c: Request streams to collectord
  tests/fuzz/seeds/agent_commands/  fuzz_agent_commands.c: CollectorMsg streams to an agent
  tests/fuzz/seeds/cli_replies/     fuzz_cli_replies.c: Reply streams to stackctl

Requests, commands and hostile replies are encoded here by hand (standard
library only, field numbers from proto/stackwatch.proto). With --from-build
BUILD_FUZZ_DIR, the replies that the real collectord code writes for the
ctl_requests seeds (fuzz_ctl_requests run with STACKWATCH_FUZZ_DUMP) become
cli_replies seeds too, one per output format.

    python3 tests/fuzz/make_seeds_control.py [--from-build build/fuzz]
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_seeds import varint, f_varint, f_fixed64, f_bytes, f_packed, frame  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")
SEP = b"\xffSW\xff"
FRAME_MAX_COMMAND = 1 << 20


def f_int32(field, v):
    """int32 on the wire: negative values as 10-byte varints."""
    return varint(field << 3) + varint(v & ((1 << 64) - 1)) if v else b""


def f_double(field, v):
    return varint((field << 3) | 1) + struct.pack("<d", v)


def msg(field, body):
    return f_bytes(field, body)


def write(sub, name, data):
    d = os.path.join(SEEDS, sub)
    os.makedirs(d, exist_ok=True)
    assert len(data) <= 16384, (sub, name, len(data))
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- requests (ctl_requests)

F_CHUNK, F_AGE, F_KEEP, F_MARK = 1, 2, 4, 8


def req(field, body=b""):
    return frame(msg(field, body))


def leaks(pid=0, top=0, all_=False, min_bytes=0, klass="", exe="", by_exe=False,
          since_mark=False, series=False, by_rank=False):
    b = f_varint(1, pid) + f_varint(2, top) + f_varint(3, int(all_)) + f_varint(4, min_bytes)
    if klass:
        b += f_bytes(5, klass)
    if exe:
        b += f_bytes(6, exe)
    b += f_varint(7, int(by_exe)) + f_varint(8, int(since_mark)) + f_varint(9, int(series))
    b += f_varint(10, int(by_rank))
    return req(1, b)


def rule(match="", module="", stack=0, frame_=-1, min_depth=0, pid=0, signal=0, count=0,
         leaking=False):
    b = b""
    if match:
        b += f_bytes(2, match)
    if module:
        b += f_bytes(3, module)
    b += f_fixed64(4, stack) + f_int32(5, frame_) + f_varint(6, min_depth) + f_varint(7, pid)
    b += f_int32(8, signal) + f_varint(9, count) + f_varint(20, int(leaking))
    return b


def trigger_add(**kw):
    return req(5, msg(1, rule(**kw)))


CLIENTS, SHUTDOWN, PING, TLIST = req(2), req(3), req(4), req(6)


def trigger_rm(i):
    return req(7, f_varint(1, i))


def mark(pid=0):
    return req(8, f_varint(1, pid))


def ctl_seeds():
    w = lambda name, flags, *segs: write("ctl_requests", name, bytes([flags, 7]) + SEP.join(segs))
    w("ping_clients", 0, PING + CLIENTS)
    w("leaks_text", 0, leaks(by_rank=True))
    w("leaks_all_json", 0, leaks(all_=True))
    w("leaks_series", 0, leaks(series=True, by_rank=True, top=20))
    w("leaks_by_exe", 0, leaks(by_exe=True, all_=True))
    w("leaks_filters", 0, leaks(pid=1001, min_bytes=100, klass="leak"),
      leaks(exe="fuzz*", top=1), leaks(klass="bogus"), leaks(exe="/usr/bin/fuzzed", all_=True))
    w("mark_since", F_AGE, mark() + leaks(since_mark=True, all_=True), mark(1002) +
      leaks(since_mark=True))
    w("since_premarked", F_MARK, leaks(since_mark=True, all_=True, series=True))
    w("trigger_cycle", F_AGE, trigger_add(match="^leaky_alloc$", signal=10, count=3) + TLIST,
      leaks(all_=True), trigger_rm(1) + TLIST)
    w("trigger_module", 0, trigger_add(module="libpython", frame_=2, min_depth=3) +
      trigger_add(stack=0x1d00000000001111, pid=1001) + trigger_add(match="main", leaking=True))
    w("trigger_errors", 0, trigger_add() + trigger_add(match="(") + trigger_add(stack=5) +
      trigger_add(match="x", signal=9) + trigger_add(match="x", signal=-1) + trigger_rm(99) +
      req(5, b""))
    w("chunked", F_CHUNK | F_AGE, leaks(all_=True, series=True) + CLIENTS + PING)
    w("keep_open", F_KEEP, leaks(), trigger_add(match="g_malloc"), CLIENTS)
    w("shutdown", 0, PING + SHUTDOWN + PING)
    w("tick_without_test_clock", 0, req(20, f_varint(1, 5 * 10**9)) + PING)
    w("garbage", 0, frame(b"\xff\xff\xff") + PING)
    w("empty_request", 0, frame(b"") + PING)
    w("oversized", 0, struct.pack("<I", (1 << 20) + 1) + b"x" * 16)
    w("truncated", 0, leaks()[:7])
    w("unknown_field", 0, frame(f_varint(99, 1)) + frame(msg(1, f_varint(99, 7))))


# ---------------------------------------------------------------- commands (agent_commands)

ARM, DISARM, FLUSH = 1, 2, 3


def welcome(version=1, expire_ms=10000):
    return frame(msg(1, f_varint(1, version) + f_varint(2, expire_ms)))


def command(kind, stacks=(), signal=0, count=0, python=False, quiet=False):
    b = f_varint(1, kind) + f_packed(2, list(stacks)) + f_int32(3, signal) + f_varint(4, count)
    b += f_varint(5, int(python)) + f_varint(6, int(quiet))
    return frame(msg(2, b))


def command_seeds():
    w = lambda name, flags, chunk, data: write("agent_commands", name, bytes([flags, chunk]) + data)
    w("welcome", 0, 0, welcome())
    w("welcome_other_version", 0, 0, welcome(version=7, expire_ms=1))
    w("arm_disarm", 0, 0, welcome() + command(ARM, [1, 2, 3], signal=10, count=3) +
      command(DISARM, [2]) + command(FLUSH))
    w("arm_python_quiet", 0, 0, command(ARM, [5, 6, 7], count=32, python=True, quiet=True))
    w("arm_sampled", 1, 0, command(ARM, range(1, 70), count=1) + command(DISARM, range(1, 30)))
    w("arm_outside", 0, 0, command(ARM, [0, 1023, 1024, 4294967295, 131072], count=5,
                                   signal=99))
    w("arm_huge_count", 0, 0, command(ARM, [4], count=4294967295) + command(ARM, [4], count=0))
    w("chunked", 2, 2, welcome() + command(ARM, [9], count=2) + command(DISARM, [9]))
    w("small_max", 4, 0, welcome() + command(ARM, list(range(1, 40)), count=2))
    w("garbage", 0, 0, frame(b"\x0a\xff\xff\xff") + frame(b"") + welcome())
    w("oversized", 0, 0, struct.pack("<I", FRAME_MAX_COMMAND + 1) + b"\0" * 8)
    w("truncated", 0, 0, command(ARM, [1], count=1)[:6])
    w("unknown_kind", 0, 0, command(77, [1, 2], count=1) + frame(msg(9, b"")))
    # Scan commands (the flusher runs them; the fuzzer's stub counts them).
    w("scan_commands", 0, 0, command(30, [1]) + command(31) + command(32) + command(ARM, [2], count=1))


# ---------------------------------------------------------------- replies (cli_replies)

WANT_LEAKS, WANT_CLIENTS, WANT_RULES, WANT_MARK = 0, 1, 2, 3
FORMATS = {"text": 0, "json": 1, "folded": 2, "pprof": 3, "html": 4}


def hdr(want, fmt):
    return bytes([want | (FORMATS[fmt] << 2)])


def count(n, b):
    return f_varint(1, n) + f_varint(2, b)


def client_info(pid, exe, argv=(), state="connected", python=0):
    b = f_varint(1, pid) + f_varint(2, 1) + f_bytes(3, exe)
    b += b"".join(f_bytes(4, a) for a in argv) + f_bytes(5, state) + f_varint(6, 100)
    b += msg(10, count(3, 300)) + f_varint(23, python)
    b += msg(26, f_varint(1, 1700000000000) + f_varint(2, 100) + f_varint(3, 1))
    return b


def frame_msg(addr, module="", function="", file="", line=0, inline=False):
    b = f_varint(1, addr) + (f_bytes(2, module) if module else b"")
    b += (f_bytes(3, function) if function else b"") + f_varint(4, 16)
    b += (f_bytes(5, file) if file else b"") + f_varint(6, line) + f_varint(7, int(inline))
    return b + f_varint(9, addr & 0xfffff)


def stack_report(sid, pid, frames, klass="leak", python=(), missing=""):
    b = f_fixed64(1, sid) + f_varint(2, pid) + msg(3, count(2, 200)) + msg(4, count(2, 200))
    b += msg(6, count(5, 500)) + msg(8, count(3, 300))
    b += b"".join(msg(15, fr) for fr in frames) + f_bytes(20, klass) + f_double(21, 0.9)
    b += f_double(23, 180.0) + b"".join(msg(18, p) for p in python)
    b += msg(24, f_varint(1, 1700000000000) + f_varint(2, 300))
    if missing:
        b += f_bytes(31, missing)
    return b


def pytb(frames, blamed=True):
    b = b"".join(msg(1, f_bytes(1, f) + f_bytes(2, fn) + f_varint(3, ln)) for f, fn, ln in frames)
    return b + f_varint(2, 1) + msg(8, count(1, 100)) + f_varint(9, int(blamed))


def reply(body_field, body, error=0, message=""):
    b = f_int32(1, error) + (f_bytes(2, message) if message else b"") + msg(body_field, body)
    return frame(b)


def reply_seeds():
    w = lambda name, h, data: write("cli_replies", name, h + data)
    frames = [frame_msg(0x401000, "/usr/bin/demo", "remember_session", "demo.c", 32),
              frame_msg(0x401100, "/usr/lib/libpython3.11.so", "_PyEval_EvalFrameDefault"),
              frame_msg(0x401200, "/usr/bin/demo", "main", "demo.c", 59, inline=True)]
    py = [pytb([("/srv/leaky.py", "leaky", 18), ("/srv/leaky.py", "<module>", 55)])]
    report = (msg(1, client_info(7, "/usr/bin/demo", ["demo", "-v"], python=0x030b02f0)) +
              msg(2, stack_report(0x1234, 7, frames, python=py)) +
              msg(2, stack_report(0x5678, 7, frames[:1], klass="cache", missing="gil-released")) +
              f_varint(3, 1000) + f_bytes(4, "all") + f_varint(5, 1700000001000))
    for fmt in FORMATS:
        w("leaks_" + fmt, hdr(WANT_LEAKS, fmt), reply(3, report))
    # A Python program's stack as text and HTML merge it: a stripped
    # extension, the interpreter entered twice (runs to fold, a re-entry to
    # say), libc's start; each with and without --all-frames (bit 5).
    npy = "/usr/lib/python3/dist-packages/numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so"
    pyexe = "/usr/bin/python3.11"
    merged = [frame_msg(0x7f00de138, npy), frame_msg(0x52c000, pyexe, "_PyObject_MakeTpCall"),
              frame_msg(0x52c441, pyexe, "_PyEval_EvalFrameDefault"),
              frame_msg(0x7f0118330, npy), frame_msg(0x52c442, pyexe, "_PyEval_EvalFrameDefault"),
              frame_msg(0x5236bb, pyexe, "PyEval_EvalCode"), frame_msg(0x647d97, pyexe),
              frame_msg(0x7f2724a, "/lib/x86_64-linux-gnu/libc.so.6", "__libc_start_main"),
              frame_msg(0x627bd1, pyexe, "_start")]
    mreport = (msg(1, client_info(9, pyexe, ["python3", "leaky.py"], python=0x030b02f0)) +
               msg(2, stack_report(0x77, 9, merged, python=py + [pytb([("/srv/h.py", "h", 3)],
                                                                   blamed=False)])) +
               msg(2, stack_report(0x78, 9, merged[4:], missing="not-captured")))
    for fmt in ("text", "html"):
        w("merged_" + fmt, hdr(WANT_LEAKS, fmt), reply(3, mreport))
        w("merged_all_" + fmt, bytes([hdr(WANT_LEAKS, fmt)[0] | 0x20]), reply(3, mreport))
    # Names a hostile program can choose (its argv, its own symbols and files).
    evil = [frame_msg(1, "/tmp/</script><script>alert(1)</script>", "f\nnew line;semi colon 12",
                      "<!--x.c", 1),
            frame_msg(2, "\xff\xfe bad utf8", "\x01\x1f ctl", "a\"b\\c.c", 2)]
    evil_report = (msg(1, client_info(8, "/tmp/</script><!--", ["\u2028", "\ud7ff", "x\ny"])) +
                   msg(2, stack_report(0x9, 8, evil, python=[pytb([("</script>", "<!--", 1)])])))
    for fmt in FORMATS:
        w("evil_" + fmt, hdr(WANT_LEAKS, fmt), reply(3, evil_report))
    # Sub-messages left out: every Count, every frame field.
    bare = msg(2, f_fixed64(1, 1) + msg(15, b"") + msg(18, b"") + msg(26, b"") + msg(24, b""))
    bare += msg(1, b"")
    for fmt in FORMATS:
        w("bare_" + fmt, hdr(WANT_LEAKS, fmt), reply(3, bare))
    clients = msg(1, client_info(7, "/usr/bin/demo", ["demo"])) + msg(1, b"")
    w("clients_text", hdr(WANT_CLIENTS, "text"), reply(4, clients))
    w("clients_json", hdr(WANT_CLIENTS, "json"), reply(4, clients))
    w("mark", hdr(WANT_MARK, "text"), reply(4, clients))
    w("mark_none", hdr(WANT_MARK, "text"), reply(4, b""))
    rules = msg(1, f_varint(1, 1) + f_bytes(2, "^leaky$") + f_int32(5, -1) + f_int32(8, 10) +
                f_varint(9, 3)) + msg(1, f_varint(1, 2) + f_bytes(3, "numpy") + f_int32(8, 99))
    w("rules_text", hdr(WANT_RULES, "text"), reply(6, rules))
    w("rules_json", hdr(WANT_RULES, "json"), reply(6, rules))
    w("error", hdr(WANT_LEAKS, "text"), reply(3, b"", error=-22, message="unknown class"))
    w("error_errno", hdr(WANT_LEAKS, "text"), reply(3, b"", error=-999999))
    w("wrong_body", hdr(WANT_RULES, "json"), reply(5, f_varint(1, 1)))
    w("oversized_prefix", hdr(WANT_LEAKS, "text"), struct.pack("<I", 255 << 20) + b"\0" * 8)


def from_build(fuzz_dir):
    """Replies the real collectord code writes for the ctl_requests seeds."""
    exe = os.path.join(fuzz_dir, "fuzz_ctl_requests")
    tmp = tempfile.mkdtemp()
    try:
        env = dict(os.environ, STACKWATCH_FUZZ_DUMP=tmp)
        src = os.path.join(SEEDS, "ctl_requests")
        subprocess.run([exe, "-runs=0"] + [os.path.join(src, n) for n in sorted(os.listdir(src))],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kept = 0
        for name in sorted(os.listdir(tmp)):
            data = open(os.path.join(tmp, name), "rb").read()
            if len(data) > 16000:
                continue
            body = name.split("-")[0]  # leaks, clients, rules, pong, error
            if body == "leaks":
                for fmt in FORMATS:
                    write("cli_replies", "real_%s_%s" % (name, fmt), hdr(WANT_LEAKS, fmt) + data)
            elif body == "clients":
                write("cli_replies", "real_" + name, hdr(WANT_CLIENTS, "json") + data)
            elif body == "rules":
                write("cli_replies", "real_" + name, hdr(WANT_RULES, "text") + data)
            kept += 1
        print("cli_replies: %d replies from the real collectord code" % kept)
    finally:
        shutil.rmtree(tmp)


def main():
    ctl_seeds()
    command_seeds()
    reply_seeds()
    if len(sys.argv) > 2 and sys.argv[1] == "--from-build":
        from_build(sys.argv[2])


if __name__ == "__main__":
    main()
