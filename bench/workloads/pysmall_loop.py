"""The small-object benchmark: json.loads of small JSON objects (a dict with
an int, a float, a string and a list of two strings: about ten CPython small
objects each, all from pymalloc), one result in 64 kept, the rest dropped at
once. Deterministic. Run with Debian's python3.

  /usr/bin/python3 pysmall_loop.py [ITERATIONS]     (default 1000000)
"""
import json
import sys


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
    docs = [json.dumps({"id": i, "name": "item%d" % i, "px": i * 0.25, "tags": ["t%d" % (i % 7), "x"]})
            for i in range(512)]
    keep = []
    loads = json.loads
    for i in range(n):
        d = loads(docs[i & 511])
        if i & 63 == 0:
            keep.append(d)
    print(len(keep))


if __name__ == "__main__":
    main()
