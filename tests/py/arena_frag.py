"""pymalloc fragmentation: makes ~48 MB of small strings, then drops 15 of
every 16. Each 16 KiB pool keeps a live string, so no arena can be
returned: the process's memory stays while the live objects shrink to a
sixteenth. On "frag" from stdin it does that and answers "ok"; it runs
until stdin reaches EOF."""
import sys

kept = []
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "frag":
        objs = ["%08d" % i * 6 for i in range(600000)]  # 48-byte texts: ~97 B objects
        kept.extend(objs[::16])
        del objs
        print("ok", flush=True)
