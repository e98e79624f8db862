"""C memory (malloc through ctypes) kept only through Python objects: a
module-level dict -> a list -> Holder objects (a ctypes Structure whose one
field, the block's address, is a raw pointer inside the object). Reachable
and may-leak: a reachability scan's retention path names the objects'
types. The dict and the list are of subclasses (Registry, Items): plain
ones may come from the interpreter's free lists, whose stale slots (in
_PyRuntime) then point at them, a root one hop away. Runs until stdin
reaches EOF."""
import ctypes
import sys
import threading

libc = ctypes.PyDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]


class Holder(ctypes.Structure):
    _fields_ = [("p", ctypes.c_void_p)]


class Registry(dict):
    pass


class Items(list):
    pass


REGISTRY = Registry()


def grab(n):
    return libc.malloc(n)  # @PY chain_block


def fill(k):
    held = Items()
    for _ in range(k):
        held.append(Holder(grab(4099)))
    REGISTRY["held"] = held


def scrub():
    """Overwrites the frame fill() ran in (the interpreter's data stack
    keeps a dead frame's words): no stale word there points at the list."""
    a = b = c = d = e = f = g = h = i = j = k = m = n = o = q = r = s = t = u = v = 0
    return a + b + c + d + e + f + g + h + i + j + k + m + n + o + q + r + s + t + u + v


# In a thread that ends: the stale words its C frames leave (a pointer to
# the list's items in a spilled register) go with its stack, which a scan
# does not read once the thread is gone.
n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
if len(sys.argv) > 2 and sys.argv[2] == "main":
    fill(n)
else:
    t = threading.Thread(target=fill, args=(n,))
    t.start()
    t.join()
    del t
scrub()
print("ready", flush=True)
sys.stdin.read()
