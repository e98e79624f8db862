#!/usr/bin/env python3
"""Writes seed inputs for tests/fuzz/fuzz_agent_frames.c into tests/fuzz/seeds/agent_frames/.

Each seed is two harness bytes (flags; chunk size and aging clock) and then
agent streams: length-prefixed AgentMsg frames as proto/stackwatch.proto and
proto/frame.h define them, connections separated by SEP. Protobuf is encoded
by hand so that only the standard library is needed.

    python3 tests/fuzz/make_seeds.py [OUTDIR]
"""
import os
import struct
import sys

# Harness flags (keep in step with fuzz_agent_frames.c).
F_HELLO, F_KEEP, F_NEWINST, F_CHUNK, F_AGE, F_NOREAD = 1, 2, 4, 8, 16, 32
EXP_1MS, EXP_1NS, EXP_1S, EXP_10S = 0 << 6, 1 << 6, 2 << 6, 3 << 6
AGE_NOW, AGE_EVENT, AGE_FAR, AGE_NONE = 0, 1, 2, 3
SEP = b"\xffSW\xff"

PROTO_VERSION = 1
ALLOC, FREE = 0, 1
INSTANCE = 0x1122334455667788


# ---------------------------------------------------------------- protobuf wire format

def varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def zigzag(v):
    return (v << 1) ^ (v >> 63) if v >= 0 else ((-v) << 1) - 1


def f_varint(field, v):
    return varint(field << 3) + varint(v) if v else b""


def f_fixed64(field, v):
    return varint((field << 3) | 1) + struct.pack("<Q", v & ((1 << 64) - 1)) if v else b""


def f_bytes(field, b):
    if isinstance(b, str):
        b = b.encode()
    return varint((field << 3) | 2) + varint(len(b)) + b


def f_packed(field, values, enc=varint):
    if not values:
        return b""
    body = b"".join(enc(v) for v in values)
    return f_bytes(field, body)


def frame(payload):
    return struct.pack("<I", len(payload)) + payload


def agent_msg(field, body):
    return frame(f_bytes(field, body))


# ---------------------------------------------------------------- messages

def hello(instance=INSTANCE, version=PROTO_VERSION, pid=4242, exe="/usr/bin/demo",
          argv=("demo", "-v"), parent_instance=0, reconnects=0, python_version=0,
          python_status="", sample_bytes=0, attached=False, flusher_tid=0):
    b = f_varint(1, version) + f_varint(2, pid) + f_varint(3, 1) + f_bytes(4, exe)
    b += b"".join(f_bytes(5, a) for a in argv)
    b += f_varint(6, 1700000000123456789) + f_fixed64(7, instance) + f_varint(8, 64)
    b += f_bytes(9, "all") + f_varint(10, 5000000000) + f_varint(11, reconnects)
    b += f_fixed64(12, parent_instance)
    b += f_varint(13, python_version)
    if python_status:
        b += f_bytes(14, python_status)
    if sample_bytes:
        b += f_varint(15, sample_bytes)
    b += f_varint(30, 1 if attached else 0) + f_varint(31, flusher_tid)
    return agent_msg(1, b)


def module(mid, path, bias, ranges, build_id=b"", gen_added=1, gen_removed=0):
    b = f_varint(1, mid) + f_bytes(2, path) + f_varint(3, bias) + f_packed(4, ranges)
    if build_id:
        b += f_bytes(5, build_id)
    b += f_varint(6, gen_added) + f_varint(7, gen_removed)
    return b


def modules(*mods):
    return agent_msg(2, b"".join(f_bytes(1, m) for m in mods))


def stackdef(index, sid, gen, pcs, truncated=False):
    return (f_varint(1, index) + f_fixed64(2, sid) + f_varint(3, gen) + f_packed(4, pcs) +
            f_varint(5, 1 if truncated else 0))


def stacks(*defs):
    return agent_msg(3, b"".join(f_bytes(1, d) for d in defs))


def events(evs, ts_base=None):
    """evs: (kind, addr, ts, tid[, size, stack]) in the order they are sent."""
    if ts_base is None:
        ts_base = min(e[2] for e in evs)
    kinds, addrs, deltas, tids, sizes, stks = [], [], [], [], [], []
    prev = ts_base
    for e in evs:
        kinds.append(e[0])
        addrs.append(e[1])
        deltas.append(e[2] - prev)
        prev = e[2]
        tids.append(e[3])
        if e[0] == ALLOC:
            sizes.append(e[4])
            stks.append(e[5])
    b = f_varint(1, ts_base) + f_packed(2, kinds) + f_packed(3, addrs)
    b += f_packed(4, deltas, lambda v: varint(zigzag(v))) + f_packed(5, tids)
    b += f_packed(6, sizes) + f_packed(7, stks)
    return agent_msg(4, b)


def raw_events(ts_base, kinds, addrs, deltas, tids, sizes, stks):
    """An EventBatch with columns exactly as given (for malformed batches)."""
    b = f_varint(1, ts_base) + f_packed(2, kinds) + f_packed(3, addrs)
    b += f_packed(4, deltas, lambda v: varint(zigzag(v))) + f_packed(5, tids)
    b += f_packed(6, sizes) + f_packed(7, stks)
    return agent_msg(4, b)


def folded(ts_base, folds, evs=()):
    """An EventBatch of folded pairs (stack, count, bytes, lt_sum, lt_min, lt_max)
    and a few plain events (kind, addr, delta, tid, size, stack)."""
    b = f_varint(1, ts_base)
    if evs:
        b += f_packed(2, [e[0] for e in evs]) + f_packed(3, [e[1] for e in evs])
        b += f_packed(4, [e[2] for e in evs], lambda v: varint(zigzag(v)))
        b += f_packed(5, [e[3] for e in evs])
        b += f_packed(6, [e[4] for e in evs if e[0] != FREE])
        b += f_packed(7, [e[5] for e in evs if e[0] != FREE])
    for k in range(6):
        b += f_packed(8 + k, [f[k] for f in folds])
    return agent_msg(4, b)


def folded_body():
    """Folded pairs, good and impossible; an unsampled (armed-only) allocation."""
    s = MODS + STACKS
    s += folded(T0, [(0, 10, 1000, 50, 2, 9), (1, 1, 16, 3, 3, 3)],
                [(ALLOC, A, 0, 100, 64, 0), (2, B, 5, 100, 32, 1), (FREE, B, 7, 100, 0, 0)])
    s += folded(T0 + 100, [(2, 3, 30, 4, 5, 1)])               # min > max: refused
    s += folded(T0 + 200, [(2, 0, 0, 0, 0, 0)])                # zero count: refused
    return s


def stats(dropped=0, failed=3, unwind=1, intern_full=0, evs=100, threads=2):
    b = (f_varint(1, dropped) + f_varint(2, failed) + f_varint(3, unwind) +
         f_varint(4, intern_full) + f_varint(5, evs) + f_varint(6, threads) +
         f_varint(7, 1 << 20) + f_varint(8, 65536) + f_varint(9, 1) + f_varint(10, 0))
    return agent_msg(5, b)


def note(addr, ts, text):
    return agent_msg(6, f_varint(1, addr) + f_varint(2, ts) + f_bytes(3, text))


def pyframe(file, function, line):
    return f_bytes(1, file) + f_bytes(2, function) + f_varint(3, line)


def pynote(addr, ts, stack, frames=(), text=None, tid=0, truncated=False):
    """A Note with Python frames (file, function, line), innermost first, and/or text."""
    b = f_varint(1, addr) + f_varint(2, ts)
    if text is not None:
        b += f_bytes(3, text)
    b += b"".join(f_bytes(4, pyframe(*fr)) for fr in frames)
    b += f_varint(5, stack) + f_varint(6, tid) + f_varint(7, 1 if truncated else 0)
    return agent_msg(6, b)


def gap(lost, from_ts, to_ts):
    return agent_msg(7, f_varint(1, lost) + f_varint(2, from_ts) + f_varint(3, to_ts))


def bye(ts, detached=False):
    # An empty Goodbye still selects the oneof member: encode the field even if 0.
    return agent_msg(8, f_varint(1, ts) + f_varint(30, 1 if detached else 0))


def scan_reply(token, phase, watermark=0, regions=(), busy=0, ptracer=0):
    """A ScanReply no scan asked for (collectord ignores it)."""
    b = f_fixed64(1, token) + f_varint(2, phase) + f_varint(3, watermark)
    b += f_packed(4, list(regions)) + f_varint(5, busy) + f_varint(6, ptracer & ((1 << 64) - 1))
    return agent_msg(30, b)


def scan_ask(token, why="exit"):
    """The agent asks for a scan of itself as it ends (STACKWATCH_SCAN_AT_EXIT)."""
    return agent_msg(31, f_fixed64(1, token) + f_bytes(2, why))


# ---------------------------------------------------------------- a plausible process

EXE_BASE = 0x555555554000
LIBC_BASE = 0x7ffff7d80000
T0 = 10_000_000_000          # agent CLOCK_MONOTONIC of the first event
MS = 1_000_000

BUILD_ID = bytes(range(20))

MODS = modules(
    module(0, "/usr/bin/demo", EXE_BASE, [EXE_BASE, EXE_BASE + 0x3000], BUILD_ID),
    module(1, "/usr/lib/x86_64-linux-gnu/libc.so.6", LIBC_BASE,
           [LIBC_BASE, LIBC_BASE + 0x28000, LIBC_BASE + 0x28000, LIBC_BASE + 0x1bd000],
           bytes(range(100, 120))),
    module(2, "linux-vdso.so.1", 0x7ffff7fc1000, [0x7ffff7fc1000, 0x7ffff7fc3000]),
)

STACKS = stacks(
    stackdef(0, 0xA000000000000001, 1, [EXE_BASE + 0x1149, EXE_BASE + 0x11a0, LIBC_BASE + 0x29d90]),
    stackdef(1, 0xA000000000000002, 1, [EXE_BASE + 0x1200, LIBC_BASE + 0x29d90]),
    stackdef(2, 0xA000000000000003, 1, [0xdeadbeef, EXE_BASE + 0x1300] + [EXE_BASE + 0x1400] * 62,
             truncated=True),
)

A = 0x5555555592a0  # heap addresses
B = A + 0x40
C = A + 0x80
D = A + 0x100


def session_body():
    """A gap (what a reconnect sends right after its hello; collectord allows
    it nowhere else), modules, stacks, events with leaks and frees, stats, a
    note, more events."""
    s = gap(17, T0 - 5 * MS, T0) + MODS + STACKS
    s += events([
        (ALLOC, A, T0 + 1, 100, 32, 0),
        (ALLOC, B, T0 + 2, 100, 48, 1),
        (ALLOC, C, T0 + 3, 101, 4096, 2),
        (FREE, A, T0 + 5, 100),
        (ALLOC, A, T0 + 6, 101, 16, 0),       # the address reused after its free
        (ALLOC, D, T0 + 7, 100, 0, 1),        # malloc(0)
    ])
    s += stats()
    s += note(B, T0 + 2, "Traceback (most recent call last):\n  File \"x.py\", line 1\n")
    s += events([
        (FREE, B, T0 + 3 * MS, 100),          # freed after it expired (1 ms)
        (FREE, 0x1234, T0 + 3 * MS + 1, 100), # never seen: allocated before tracing
        (ALLOC, B, T0 + 4 * MS, 102, 64, 1),
    ])
    s += events([
        (FREE, B, T0 + 6 * MS, 102),
        (ALLOC, B, T0 + 7 * MS, 102, 8, 0),
        (ALLOC, A + 0x1000, T0 + 2000 * MS, 100, 1 << 20, 2),
    ])
    s += stats(evs=112)
    return s


def cross_thread_body():
    """Per-thread rings deliver out of time order."""
    t = T0 + 100 * MS
    s = MODS + STACKS
    # Thread 2's free of X arrives before thread 1's allocation of it.
    s += events([(FREE, A, t + 50, 2)])
    s += events([(ALLOC, A, t + 10, 1, 24, 0)])
    # Address reuse arrives before the free of the previous owner: implied
    # free and a tombstone; the late free falls inside it.
    s += events([(ALLOC, B, t + 100, 1, 40, 1)])
    s += events([(ALLOC, B, t + 300, 3, 80, 0)])
    s += events([(FREE, B, t + 200, 1)])
    # An allocation older than the live block at its address.
    s += events([(ALLOC, C, t + 500, 1, 8, 0)])
    s += events([(ALLOC, C, t + 400, 2, 8, 1)])
    # A free stamped before its allocation, then the real free.
    s += events([(ALLOC, D, t + 600, 1, 100, 2), (FREE, D, t + 550, 2), (FREE, D, t + 700, 1)])
    # Unsorted batch with negative deltas, two frees of one unknown address.
    s += events([(FREE, 0x9000, t + 900, 4), (FREE, 0x9000, t + 800, 5),
                 (ALLOC, 0x9000, t + 700, 6, 12, 1)], ts_base=t + 900)
    # A stack used before its StackDef arrives.
    s += events([(ALLOC, D + 0x100, t + 1000, 1, 5, 7)])
    s += stacks(stackdef(7, 0xA000000000000007, 2, [EXE_BASE + 0x1500]))
    # A redefinition of an index with another id (new generation).
    s += stacks(stackdef(1, 0xB000000000000002, 2, [LIBC_BASE + 0x1234]))
    s += bye(t + 2000)
    return s


def big_batch_body(n=260):
    evs = []
    t = T0
    for i in range(n):
        t += 997
        addr = A + 0x20 * (i % 97)
        if i % 3 == 2:
            evs.append((FREE, addr, t, 100 + i % 4))
        else:
            evs.append((ALLOC, addr, t, 100 + i % 4, 16 + i, i % 3))
    return STACKS + events(evs) + bye(t)


PY_VERSION = 0x030B04F0  # CPython 3.11.4
PY_A = (("/srv/app/cache.py", "fill", 42), ("/srv/app/main.py", "<module>", 7))
PY_B = (("/srv/app/cache.py", "fill", 43), ("/srv/app/main.py", "<module>", 7))
TB_TEXT = "Traceback (most recent call last):\n  File \"/srv/app/cache.py\", line 42, in fill\n"


def python_notes_body():
    """Notes on blocks: deduplicated, distinct, stale, text-only, empty, unknown stacks."""
    s = MODS + STACKS
    s += events([
        (ALLOC, A, T0 + 1, 100, 32, 0),
        (ALLOC, B, T0 + 2, 100, 48, 0),
        (ALLOC, C, T0 + 3, 101, 64, 1),
        (ALLOC, D, T0 + 4, 101, 16, 2),
    ])
    s += pynote(A, T0 + 1, 0, PY_A, tid=100)           # ties A to a traceback
    s += pynote(B, T0 + 2, 0, PY_A, tid=100)           # the same one: deduplicated
    s += pynote(C, T0 + 3, 1, PY_B, tid=101)           # another stack, another traceback
    s += pynote(D, T0 + 1, 2, PY_A, tid=101)           # ts of an earlier block at D: freed
    s += pynote(A, T0 + 1, 0, text=TB_TEXT, tid=100)   # handler text for a noted block
    s += pynote(D, T0 + 4, 2, text=TB_TEXT, tid=101)   # text-only on a block without frames
    s += pynote(C, T0 + 3, 1, tid=101)                 # nothing to attach
    s += pynote(C, T0 + 3, 1, text="", tid=101)        # empty text: nothing either
    s += pynote(A, T0 + 1, 9, PY_A)                    # stack index never defined
    s += pynote(A, T0 + 1, (1 << 20) + 5, PY_A)        # stack index out of range
    s += pynote(0x7777, T0 + 9, 0, PY_B, truncated=True)  # no block there at all
    s += events([
        (FREE, B, T0 + 2 * MS, 100),                   # a noted block freed (expired if aged)
        (ALLOC, A, T0 + 3 * MS, 102, 24, 1),           # reuse: the noted A's free implied
        (ALLOC, B, T0 + 4 * MS, 100, 8, 0),
    ])
    s += pynote(B, T0 + 4 * MS, 0, PY_A)               # the new block at B
    s += pynote(A, T0 + 3 * MS, 1, PY_B, text=TB_TEXT)  # frames and text together
    s += events([(FREE, C, T0 + 6 * MS, 101), (FREE, B, T0 + 7 * MS, 100)])
    return s


def many_frames_note():
    """More Python frames than collectord keeps (64) in one Note."""
    frames = [("d.py", "r", 100 + i) for i in range(70)]
    return pynote(A, T0 + 1, 0, frames, tid=100)


def write(outdir, name, flags, byte1, *segments):
    data = bytes([flags, byte1]) + SEP.join(segments)
    assert len(data) <= 4096, (name, len(data))
    with open(os.path.join(outdir, name), "wb") as f:
        f.write(data)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "seeds", "agent_frames")
    os.makedirs(outdir, exist_ok=True)
    age_event = AGE_EVENT << 6

    # One clean session, aging on the event clock after the connection.
    write(outdir, "session_clean", EXP_1MS | F_AGE, age_event,
          hello() + session_body() + bye(T0 + 3000 * MS))
    # The same without Goodbye: ended uncleanly (lost), blocks stay as exit_live.
    write(outdir, "session_lost", EXP_1S | F_AGE, AGE_NOW << 6, hello() + session_body())
    # Cross-thread reordering.
    write(outdir, "cross_thread", EXP_1MS | F_AGE, age_event, hello() + cross_thread_body())
    # Harness-prepended Hello, 7-byte chunks, aging between chunks.
    write(outdir, "chunked_prehello", EXP_1MS | F_HELLO | F_CHUNK | F_AGE, 6 | age_event,
          session_body() + bye(T0 + 3000 * MS))
    # Reconnect of one process image: lost, then revived by the second connection.
    write(outdir, "reconnect", EXP_1MS | F_HELLO | F_AGE, age_event,
          session_body(), cross_thread_body())
    # Reconnect while the first connection is still open: it is replaced.
    write(outdir, "replace_open", EXP_10S | F_HELLO | F_KEEP, AGE_NOW << 6,
          MODS + STACKS + events([(ALLOC, A, T0, 1, 8, 0)]),
          events([(FREE, A, T0 + 5, 1)]) + bye(T0 + 10))
    # exec: the same pid with new instances, earlier connections left open.
    write(outdir, "exec_chain", EXP_1MS | F_HELLO | F_NEWINST | F_KEEP | F_AGE, age_event,
          MODS + STACKS + events([(ALLOC, A, T0, 1, 8, 0)]),
          MODS + STACKS + events([(ALLOC, B, T0 + 1, 1, 8, 1)]),
          STACKS + events([(ALLOC, C, T0 + 2, 1, 8, 2)]) + bye(T0 + 3))
    # A clean exit, then the same instance connects again (a confused or
    # hostile agent). No aging: clients_prune would drop the first record.
    write(outdir, "bye_then_again", EXP_1MS, age_event,
          hello() + MODS + STACKS + events([(ALLOC, A, T0, 1, 8, 0)]) + bye(T0 + 1),
          hello(reconnects=1) + events([(ALLOC, B, T0 + 2, 1, 8, 0), (FREE, A, T0 + 3, 1)]))
    # Lost, then an exec of the same pid: the lost image is treated as ended cleanly.
    write(outdir, "lost_then_exec", EXP_1MS | F_AGE, age_event,
          hello(instance=1) + MODS + STACKS + events([(ALLOC, A, T0, 1, 8, 0)]),
          hello(instance=2, exe="/usr/bin/other") + STACKS + bye(T0 + 5))
    # A fork child naming its parent's instance.
    write(outdir, "fork_child", EXP_1MS | F_AGE, age_event,
          hello(instance=10) + STACKS + events([(ALLOC, A, T0, 1, 8, 0)]) + bye(T0 + 1),
          hello(instance=11, parent_instance=10) + STACKS +
          events([(FREE, A, T0 + 2, 1)]) + bye(T0 + 3))
    # Many events in one batch.
    write(outdir, "big_batch", EXP_1MS | F_HELLO | F_AGE, age_event, big_batch_body())
    # Extreme clocks and a peer that never reads (the Welcome cannot be sent).
    write(outdir, "extremes", EXP_1NS | F_HELLO | F_AGE, AGE_FAR << 6,
          STACKS + events([(ALLOC, A, (1 << 64) - 2, 1, (1 << 63), 0),
                           (ALLOC, B, 0, 1, (1 << 48), 1), (FREE, B, 1, 1)], ts_base=(1 << 64) - 2) +
          gap((1 << 64) - 1, 0, (1 << 64) - 1) + bye((1 << 64) - 1))
    write(outdir, "noread", EXP_1MS | F_HELLO | F_NOREAD, 0, STACKS + bye(T0))
    # An attached session (stackctl attach) that detaches; scan replies nobody
    # asked for, odd regions and a negative ptracer among them.
    write(outdir, "attached_detach", EXP_1MS | F_AGE, age_event,
          hello(attached=True, flusher_tid=4243) + session_body() +
          scan_reply(7, 1, ptracer=-1) +
          scan_reply(7, 2, T0, [A, A + 64, 5, 3, 0xffffffffffff], busy=2) +
          scan_reply(0, 9) + bye(T0 + 3000 * MS, detached=True))

    # Scans asked at the end: twice (the second answered at once), a zero
    # token; the peer is the harness itself, which collectord cannot scan.
    write(outdir, "scan_ask", EXP_1MS | F_AGE, age_event,
          hello(flusher_tid=4243) + session_body() + scan_ask(9) + scan_ask(9, "main returned") +
          scan_ask(0) + bye(T0 + 3000 * MS))

    # Python notes: a Python client whose noted blocks expire, are freed and reused.
    write(outdir, "python_notes", EXP_1MS | F_AGE, age_event,
          hello(python_version=PY_VERSION) + python_notes_body() + bye(T0 + 3000 * MS))
    # The same in 5-byte chunks with aging in between, lost (no Goodbye), then
    # a reconnect (its Gap right after the Hello, the only place one is
    # accepted) whose notes name blocks of the first connection.
    write(outdir, "python_notes_reconnect", EXP_1MS | F_HELLO | F_CHUNK | F_AGE,
          4 | age_event,
          python_notes_body(),
          gap(3, T0 + 8 * MS, T0 + 9 * MS) + STACKS + pynote(D, T0 + 4, 2, PY_B) +
          pynote(A, T0 + 3 * MS, 1, text=TB_TEXT) +
          events([(FREE, D, T0 + 10 * MS, 101)]) + pynote(D, T0 + 4, 2, PY_B) +
          bye(T0 + 20 * MS))
    # Many frames in one Note (cut to 64), repeated; aged on the collector clock.
    write(outdir, "python_many_frames", EXP_10S | F_AGE, AGE_NOW << 6,
          hello(python_version=PY_VERSION) + STACKS +
          events([(ALLOC, A, T0 + 1, 100, 32, 0), (ALLOC, B, T0 + 2, 100, 32, 0)]) +
          many_frames_note() + many_frames_note() +
          pynote(B, T0 + 2, 0, [("d.py", "r", 100 + i) for i in range(64)],
                 truncated=True) +
          bye(T0 + 5))

    # Folded pairs and unsampled allocations, exact and sampled clients.
    write(outdir, "folded", EXP_1MS | F_AGE, age_event,
          hello() + folded_body() + bye(T0 + 3000 * MS))
    write(outdir, "folded_sampled", EXP_1MS | F_HELLO | F_AGE, age_event,
          hello(sample_bytes=65536, reconnects=1) + folded_body())

    # Protocol errors, one connection each: every one must close just that connection.
    bad = [
        struct.pack("<I", (8 << 20) + 1) + b"xx",                 # length over the maximum
        hello() + struct.pack("<I", 100) + b"\x0a\x02",          # ends inside a frame
        hello(version=2),                                         # wrong protocol version
        hello(instance=0),                                        # no instance token
        hello() + hello(),                                        # second hello
        stats(),                                                  # first frame not a hello
        frame(b"\xff\xff\xff"),                                   # not protobuf
        hello() + frame(b""),                                     # empty AgentMsg: no member set
        hello() + raw_events(T0, [0, 1], [A], [0, 1], [1, 1], [8], [0]),  # columns differ
        hello() + raw_events(T0, [0, 7], [A, B], [0, 1], [1, 1], [8], [0]),  # unknown kind
        hello() + raw_events(T0, [1], [A], [0], [1], [8], [0]),   # size for no alloc
        hello() + events([(ALLOC, A, T0, 1, 8, 1 << 20)]),       # stack index out of range
        hello() + stacks(stackdef(1 << 20, 1, 1, [1])),           # stack index out of range
        hello() + stacks(stackdef(0, 1, 1, list(range(1, 258)))), # too deep
        hello() + modules(module(65536, "/x", 0, [0, 1])),       # module id out of range
        hello() + modules(module(3, "/x", 0, [0, 1, 2])),        # odd range count
        hello() + modules(module(3, "/x", 0, [], b"\x01" * 40)),  # long build-id (truncated)
        hello() + modules(module(65535, "", 0, list(range(64)))),  # largest id, 32 ranges
    ]
    # The harness takes at most 16 connections per input.
    write(outdir, "protocol_errors_1", EXP_1MS | F_AGE, age_event, *bad[:9])
    write(outdir, "protocol_errors_2", EXP_1MS | F_AGE, age_event, *bad[9:])


if __name__ == "__main__":
    main()
