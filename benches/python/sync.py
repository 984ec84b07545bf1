"""Python counterparts of benches/sync.rs (see xtask/src/bench.rs)."""
import time
from multiprocessing import Barrier, Event, Lock, Process, RLock, Value

from common import QUICK, measure, report


def two_process(target, args, parent_loop, n):
    """Starts `target(*args, n)` in a child, waits until it is ready, then
    times `parent_loop(n)` (which ends when the joint work is done)."""
    ready, go = Event(), Event()
    p = Process(target=target, args=(ready, go) + args + (n,))
    p.start()
    ready.wait()
    t0 = time.perf_counter_ns()
    go.set()
    parent_loop(n)
    elapsed = time.perf_counter_ns() - t0
    p.join()
    return elapsed / n


def incr_child(ready, go, v, n):
    ready.set()
    go.wait()
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def pong_child(ready, go, ping, pong, n):
    ready.set()
    go.wait()
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong.set()


def barrier_child(ready, go, b, n):
    ready.set()
    go.wait()
    for _ in range(n):
        b.wait()


def median(f, runs):
    xs = sorted(f() for _ in range(runs))
    return xs[len(xs) // 2]


def main():
    results = {}
    lock = Lock()

    def lock_op():
        lock.acquire()
        lock.release()

    rlock = RLock()

    def rlock_op():
        rlock.acquire()
        rlock.release()

    results["lock_uncontended"] = measure(lock_op, 20000 if QUICK else 200000)
    results["rlock_uncontended"] = measure(rlock_op, 20000 if QUICK else 200000)

    runs = 3 if QUICK else 7
    n = 20000 if QUICK else 100000

    def value_run():
        v = Value("q", 0)

        def loop(n):
            for _ in range(n):
                with v.get_lock():
                    v.value += 1
            while True:
                with v.get_lock():
                    if v.value >= 2 * n:
                        return

        return two_process(incr_child, (v,), loop, n)

    results["value_increment_2proc"] = median(value_run, runs)

    m = 2000 if QUICK else 10000

    def ping_run():
        ping, pong = Event(), Event()

        def loop(n):
            for _ in range(n):
                ping.set()
                pong.wait()
                pong.clear()

        return two_process(pong_child, (ping, pong), loop, m)

    results["event_ping_pong_2proc"] = median(ping_run, runs)

    def barrier_run():
        b = Barrier(2)

        def loop(n):
            for _ in range(n):
                b.wait()

        return two_process(barrier_child, (b,), loop, m)

    results["barrier_round_2proc"] = median(barrier_run, runs)
    report(results)


if __name__ == "__main__":
    main()
