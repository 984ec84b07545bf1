"""Python counterparts of benches/pool.rs (see xtask/src/bench.rs)."""
import math
import time
from multiprocessing import Pool

from common import QUICK, measure, median, report, timed


def square(x):
    return x * x


def uneven_durations_us(n, mean_us):
    """The durations of benches/src/lib.rs's uneven_durations_us."""
    x = 0x2545F4914F6CDD1D
    out = []
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        u = ((x >> 11) + 0.5) / float(1 << 53)
        out.append(round(-math.log(u) * mean_us))
    return out


def busy_for_us(us):
    end = time.perf_counter_ns() + us * 1000
    while time.perf_counter_ns() < end:
        pass


def main():
    results = {}
    runs = 3 if QUICK else 5
    with Pool(2) as pool:
        results["apply_async_get"] = measure(
            lambda: pool.apply_async(square, (7,)).get(), 200 if QUICK else 1000
        )
        results["map_1e6_default"] = median(
            lambda: timed(lambda: pool.map(square, range(1_000_000))), runs
        )
        # chunksize 1 moves ~34k items/s: time a tenth of the Rust run and
        # scale it up, so the quick mode stays quick.
        n = 10_000 if QUICK else 100_000
        per = median(lambda: timed(lambda: sum(pool.imap(square, range(n)))), runs) / n
        results["imap_100k_chunk1"] = per * 100_000
        durations = uneven_durations_us(50, 2000.0)
        results["uneven_map_chunk1"] = median(
            lambda: timed(lambda: pool.map(busy_for_us, durations, chunksize=1)), runs
        )
    # Pool(500) built and every worker has run a task (the default start
    # method; the join is not timed).
    def start_500():
        t0 = time.perf_counter_ns()
        pool = Pool(500)
        pool.map(square, range(500), chunksize=1)
        took = time.perf_counter_ns() - t0
        pool.close()
        pool.join()
        return took

    results["start_500_ready"] = median(start_500, 1 if QUICK else 3)
    report(results)


if __name__ == "__main__":
    main()
