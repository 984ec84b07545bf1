"""Python counterparts of benches/queue.rs (see xtask/src/bench.rs). Not
named queue.py: that would shadow the standard library module.

Throughput runs start their processes first, meet at an Event, and time
from "go" until every consumer has its last item, as the Rust side does.
"""
import time
from multiprocessing import Event, JoinableQueue, Pipe, Process, Queue

from common import QUICK, measure, report


def producer(go, q, item, n):
    go.wait()
    for _ in range(n):
        q.put(item)
    q.put(None)


def consumer(go, q, done):
    go.wait()
    while q.get() is not None:
        pass
    done.put(1)


def mpmc(pc, item, total):
    """ns per item moving `total` items from pc producers to pc consumers."""
    q, done, go = Queue(), Queue(), Event()
    per = total // pc
    kids = [Process(target=producer, args=(go, q, item, per)) for _ in range(pc)]
    kids += [Process(target=consumer, args=(go, q, done)) for _ in range(pc)]
    for k in kids:
        k.start()
    t0 = time.perf_counter_ns()
    go.set()
    for _ in range(pc):
        done.get()
    elapsed = time.perf_counter_ns() - t0
    for k in kids:
        k.join()
    return elapsed / (per * pc)


def median(f, runs):
    xs = sorted(f() for _ in range(runs))
    return xs[len(xs) // 2]


def task_doer(jq):
    while True:
        jq.get()
        jq.task_done()


# Under fork the child inherits the parent's end too, so EOF never comes:
# the parent says goodbye with None instead.
def echo(conn):
    while (n := conn.recv()) is not None:
        conn.send(n)


def sender(conn, size):
    payload = b"\x03" * size
    while (n := conn.recv()) is not None:
        for _ in range(n):
            conn.send_bytes(payload)


def main():
    results = {}
    runs = 3 if QUICK else 5
    scale = 1 if QUICK else 4
    results["queue_1to1_8B"] = median(lambda: mpmc(1, 0x123456789ABCDEF0, 20000 * scale), runs)
    results["queue_1to1_1KiB"] = median(lambda: mpmc(1, b"\x07" * 1024, 20000 * scale), runs)
    results["queue_1to1_64KiB"] = median(lambda: mpmc(1, b"\x07" * (64 << 10), 2000 * scale), runs)
    results["queue_2to2_1KiB"] = median(lambda: mpmc(2, b"\x07" * 1024, 20000 * scale), runs)

    jq = JoinableQueue()
    w = Process(target=task_doer, args=(jq,), daemon=True)
    w.start()

    def cycle():
        jq.put(1)
        jq.join()

    results["joinable_put_task_done_join"] = measure(cycle, 500 if QUICK else 2000)
    w.terminate()
    w.join()

    ours, theirs = Pipe()
    p = Process(target=echo, args=(theirs,))
    p.start()
    theirs.close()

    def round_trip():
        ours.send(1)
        ours.recv()

    results["pipe_round_trip"] = measure(round_trip, 1000 if QUICK else 5000)
    ours.send(None)
    ours.close()
    p.join()

    for key, size, n in [("pipe_oneway_1KiB", 1024, 20000), ("pipe_oneway_1MiB", 1 << 20, 200)]:
        ours, theirs = Pipe()
        p = Process(target=sender, args=(theirs, size))
        p.start()
        theirs.close()

        def run():
            ours.send(n)
            t0 = time.perf_counter_ns()
            for _ in range(n):
                ours.recv_bytes()
            return (time.perf_counter_ns() - t0) / n

        results[key] = median(run, runs)
        ours.send(None)
        ours.close()
        p.join()
    report(results)


if __name__ == "__main__":
    main()
