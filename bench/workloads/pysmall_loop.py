"""The small-object benchmark: JSON decoding of small objects (a dict with an
int, a float, a string and a list of two strings: about 14 CPython small
objects each, all from pymalloc), one result in 64 kept, the rest dropped at
once. Deterministic. Run with Debian's python3.

It decodes with JSONDecoder.raw_decode, json.loads without its whitespace
regex: each json.loads call also runs two re matches whose state (about
1 KB) comes from malloc, traced exactly by default, which would measure
malloc's exact cost (see bench/README.md) rather than the small objects'.
"loads" as a second argument uses json.loads.

  /usr/bin/python3 pysmall_loop.py [ITERATIONS [loads]]   (default 1000000)
"""
import json
import sys
import time


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
    docs = [json.dumps({"id": i, "name": "item%d" % i, "px": i * 0.25, "tags": ["t%d" % (i % 7), "x"]})
            for i in range(512)]
    keep = []
    if len(sys.argv) > 2 and sys.argv[2] == "loads":
        loads = json.loads
    else:
        raw = json.JSONDecoder().raw_decode
        loads = lambda s: raw(s)[0]  # noqa: E731
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(n):
        d = loads(docs[i & 511])
        if i & 63 == 0:
            keep.append(d)
    c1, t1 = time.process_time(), time.perf_counter()
    # The loop alone (no start-up, no exit): process CPU (every thread,
    # the agent's flusher included) and wall.
    sys.stderr.write("loop cpu=%.4f wall=%.4f\n" % (c1 - c0, t1 - t0))
    print(len(keep))


if __name__ == "__main__":
    main()
