#!/usr/bin/env python3
"""Runs the integration tests against a build directory.

  run.py [--build DIR] [--agent-build DIR] [--progs DIR] [--quick] [-k PATTERN]

--build holds collectord and stackctl, --agent-build libstackagent.so (default:
the same), --progs the test programs (default: BUILD/progs). --quick runs the
classes marked quick (used for the sanitizer builds)."""

import argparse
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import swtest  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--agent-build")
    ap.add_argument("--progs")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("-k", dest="pattern", action="append")
    ap.add_argument("-v", action="store_true")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    swtest.configure(build, os.path.abspath(a.agent_build or build),
                     os.path.abspath(a.progs or os.path.join(build, "progs")))
    loader = unittest.TestLoader()
    if a.pattern:
        loader.testNamePatterns = ["*%s*" % p for p in a.pattern]
    suite = unittest.TestSuite()
    def walk(t):
        if isinstance(t, unittest.TestSuite):
            for x in t:
                yield from walk(x)
        else:
            yield t

    for case in walk(loader.discover(HERE, pattern="test_*.py")):
        # Import errors surface as _FailedTest cases: always keep them.
        if a.quick and not getattr(case, "quick", True):
            continue
        suite.addTest(case)
    r = unittest.TextTestRunner(verbosity=2 if a.v else 1).run(suite)
    return 0 if r.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
