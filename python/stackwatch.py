"""stackwatch's signal route, for programs that want the write-up's way.

    import signal, stackwatch
    stackwatch.install(signal.SIGUSR1)

Then `stackctl trigger add --match array_boolean_subscript --signal USR1`
makes every firing print the Python stack of the thread that allocated, and
hands that text to the agent, which attaches it to the allocation in the
report ("from the signal handler").

This route is late: CPython runs Python signal handlers only in the main
thread, at the next eval-breaker check, so the printed stack shows where that
thread is *now*, a line or more after the allocation (measured: inside
numba's dispatcher instead of on `sub = chunk[mask]`). The agent's default
capture needs none of this: it reads the allocating thread's Python frames
synchronously inside malloc, and `stackctl query leaks` shows them.

Standard library only. Without the agent preloaded, install() says so and
returns False.
"""

import ctypes
import signal
import sys
import threading
import traceback

__all__ = ["install", "last_fire"]

# `pytest -p stackwatch` loads this module as a plugin: its hooks are in
# stackwatch_pytest.py (installed beside it); nothing else imports it.
pytest_plugins = ["stackwatch_pytest"]
__version__ = "0.9.0"  # kept equal to collector/common/version.h (make check-install compares)

_lib = None


def _agent():
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(None)  # LD_PRELOAD puts the agent in the global scope
        try:
            fire = lib.stackwatch_last_fire
            note = lib.stackwatch_note
        except AttributeError:
            _lib = False
            return None
        fire.argtypes = [ctypes.POINTER(ctypes.c_uint64 * 4)]
        fire.restype = ctypes.c_int
        note.argtypes = [ctypes.c_uint64, ctypes.c_char_p]
        note.restype = ctypes.c_int
        _lib = (fire, note)
    return _lib or None


def last_fire():
    """(thread ident, address, size, timestamp ns) of the last firing, or None."""
    agent = _agent()
    if not agent:
        return None
    out = (ctypes.c_uint64 * 4)()
    if agent[0](ctypes.byref(out)) != 0:
        return None
    return int(out[0]), int(out[1]), int(out[2]), int(out[3])


def install(signum=signal.SIGUSR1, file=None):
    """Installs a handler for signum that prints the allocating thread's
    Python stack for each firing and attaches it to the allocation."""
    agent = _agent()
    out = file or sys.stderr
    if not agent:
        print("stackwatch: the agent is not loaded (LD_PRELOAD=.../libstackagent.so)",
              file=out)
        return False

    def handler(sig, frame):
        fire = last_fire()
        if fire is None:
            stack = traceback.format_stack(frame)
            thread, addr, size = threading.main_thread().ident, 0, 0
        else:
            thread, addr, size, _ = fire
            frames = sys._current_frames()
            target = frames.get(thread, frame)
            stack = traceback.format_stack(target)
        names = {t.ident: t.name for t in threading.enumerate()}
        text = "".join(stack)
        print("stackwatch: malloc @ %#x for %d in thread %s (%s); its Python stack now:\n%s"
              % (addr, size, thread, names.get(thread, "?"), text), end="", file=out)
        out.flush()
        if addr:
            agent[1](addr, text.encode("utf-8", "replace"))

    signal.signal(signum, handler)
    return True
