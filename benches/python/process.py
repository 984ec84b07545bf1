"""Python counterparts of benches/process.rs (see xtask/src/bench.rs)."""
import multiprocessing as mp

from common import QUICK, measure, report


def empty():
    pass


def start_join(ctx):
    def op():
        p = ctx.Process(target=empty)
        p.start()
        p.join()
    return op


def start_join_100(ctx):
    def op():
        ps = [ctx.Process(target=empty) for _ in range(100)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
    return op


def main():
    results = {}
    for method, batch in [("fork", 20 if QUICK else 100), ("forkserver", 5 if QUICK else 20), ("spawn", 3 if QUICK else 10)]:
        ctx = mp.get_context(method)
        results["start_join_" + method] = measure(start_join(ctx), batch, 3 if QUICK else 7)
    results["start_join_100_fork"] = measure(start_join_100(mp.get_context("fork")), 1, 3 if QUICK else 7)
    report(results)


if __name__ == "__main__":
    main()
