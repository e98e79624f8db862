#!/usr/bin/env python3
"""Prints the import circles between the C modules of some folders.

  import_graph.py [-v] FOLDER...      (e.g. agent collector proto)

A module is x.c with x.h (either alone is a module too), named by its path
without the suffix (agent/flush). Module A depends on module B when A's .c or
.h has an `#include "..."` line naming B's .h. A quoted name is looked up as
the compiler does (-I. -Iproto): beside the including file, then from the
top of the tree, then under proto/; names found nowhere (generated headers,
pb-c) are not modules. Each FOLDER is taken with its subfolders; only
modules inside the folders given are part of the graph.

Every strongly connected component of more than one module is a circle:
it is printed with the include lines that make its edges. Exit status 1
when there is one, 0 when there is none, 2 on a usage error. -v prints the
whole graph too."""

import os
import re
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE_DIRS = [".", "proto"]
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def sources(folder):
    for dirpath, dirnames, filenames in os.walk(os.path.join(TOP, folder)):
        dirnames.sort()
        for f in sorted(filenames):
            if f.endswith((".c", ".h")):
                yield os.path.relpath(os.path.join(dirpath, f), TOP)


def resolve(including, name):
    """The path (from TOP) the compiler would open for `#include "name"`."""
    for d in [os.path.dirname(including)] + INCLUDE_DIRS:
        p = os.path.normpath(os.path.join(d, name))
        if os.path.isfile(os.path.join(TOP, p)):
            return p
    return None


def module_of(path):
    return os.path.splitext(path)[0]


def graph(folders):
    files = [f for folder in folders for f in sources(folder)]
    modules = {module_of(f) for f in files}
    edges = {m: {} for m in modules}  # module -> {module: [file:line, ...]}
    for f in files:
        a = module_of(f)
        with open(os.path.join(TOP, f), encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                m = INCLUDE_RE.match(line)
                if not m:
                    continue
                target = resolve(f, m.group(1))
                if target is None:
                    continue
                b = module_of(target)
                if b != a and b in modules:
                    edges[a].setdefault(b, []).append("%s:%d" % (f, n))
    return edges


def components(edges):
    """Tarjan's strongly connected components (iterative)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def main(argv):
    verbose = "-v" in argv
    folders = [a.rstrip("/") for a in argv if a != "-v"]
    if not folders or any(a.startswith("-") for a in folders):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    for folder in folders:
        if not os.path.isdir(os.path.join(TOP, folder)):
            print("import_graph.py: no folder %s" % folder, file=sys.stderr)
            return 2
    edges = graph(folders)
    if verbose:
        for a in sorted(edges):
            print("%s -> %s" % (a, " ".join(sorted(edges[a])) or "-"))
    circles = [c for c in components(edges) if len(c) > 1]
    for i, comp in enumerate(sorted(circles), 1):
        members = set(comp)
        print("circle %d: %d modules: %s" % (i, len(comp), " ".join(comp)))
        for a in comp:
            for b in sorted(edges[a]):
                if b in members:
                    print("  %s -> %s  (%s)" % (a, b, ", ".join(edges[a][b])))
    if circles:
        return 1
    print("import graph of %s: %d modules, no circle" % (" ".join(folders), len(edges)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
