"""Timing helpers shared by the Python counterparts of mproc's benches.

Each script prints one JSON object: scenario key -> median nanoseconds per
operation, measured the way criterion does (batches, median of batches).
"""
import json
import sys
import time

QUICK = "--quick" in sys.argv


def measure(op, batch, batches=None):
    """Median ns per call of `op` over `batches` batches of `batch` calls."""
    batches = batches or (7 if QUICK else 25)
    for _ in range(max(1, batch // 10)):
        op()
    samples = []
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        for _ in range(batch):
            op()
        samples.append((time.perf_counter_ns() - t0) / batch)
    samples.sort()
    return samples[len(samples) // 2]


def median(f, runs):
    """The median of `runs` calls of `f`."""
    xs = sorted(f() for _ in range(runs))
    return xs[len(xs) // 2]


def timed(f):
    """Nanoseconds one call of `f` takes."""
    t0 = time.perf_counter_ns()
    f()
    return time.perf_counter_ns() - t0


def report(results):
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")
