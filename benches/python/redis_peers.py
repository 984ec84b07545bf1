"""Peers of benches/redis.rs: Celery 5 (Redis broker and result backend),
RQ, and Ray (remote functions and ray.util.multiprocessing.Pool), each with
two workers on this machine, against the redis-server at $REDIS_URL.

Prints one JSON object: scenario key -> median ns per operation (for the
10,000-task rows, one operation is the 10,000 tasks), and "_unavailable": {peer: why} for a peer that
is not installed or would not start. A peer that fails never fails the
others. Run by `cargo xtask bench` with the interpreter of a venv where it
installed the peers from PyPI.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

QUICK = "--quick" in sys.argv
HERE = os.path.dirname(os.path.abspath(__file__))
URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
N = 10_000


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def round_trips(call, n):
    """Median ns of `call()` over n calls (after a few to warm up)."""
    for _ in range(5):
        call()
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - t0)
    return median(times)


def per_10k(run, n, runs):
    """Median ns of `run(n)` (which submits n tasks and gathers their
    results) over `runs` runs, scaled to 10,000 tasks (a slow peer runs
    fewer in quick mode)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        run(n)
        times.append((time.perf_counter_ns() - t0) * N / n)
    return median(times)


def wait_for(check, what, bound=60):
    deadline = time.time() + bound
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up in {bound} s")


def stop(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def celery_peer(out):
    import celery  # noqa: F401  (fails here when not installed)
    from celery import group

    sys.path.insert(0, HERE)
    os.environ["MPROC_BENCH_REDIS"] = URL
    from peer_tasks import app, square

    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "peer_tasks", "worker",
         "--concurrency=2", "--pool=prefork", "--loglevel=WARNING",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=HERE, env=dict(os.environ), stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: square.delay(3).get(timeout=2) == 9, "the celery worker")
        out["celery_apply"] = round_trips(
            lambda: square.delay(7).get(timeout=30), 100 if QUICK else 400)
        n = 1_000 if QUICK else N

        def burst(n):
            res = group(square.s(i) for i in range(n)).apply_async()
            res.get(timeout=600)

        out["celery_10k"] = per_10k(burst, n, 2 if QUICK else 3)
    finally:
        stop([worker])
        app.close()


def rq_peer(out):
    import redis
    import rq  # noqa: F401
    from rq import Queue

    sys.path.insert(0, HERE)
    from peer_tasks import rq_square

    conn = redis.Redis.from_url(URL)
    q = Queue("mproc-bench", connection=conn)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "rq.cli", "worker", "--url", URL, "--quiet",
             "mproc-bench"],
            cwd=HERE, env=dict(os.environ, PYTHONPATH=HERE),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]

    def gather(jobs, bound=600):
        # RQ has no gather: wait for each job in turn (one status read per
        # poll, so the harness's own traffic stays linear in the jobs).
        deadline = time.time() + bound
        for j in jobs:
            while j.get_status(refresh=True) not in ("finished", "failed"):
                if time.time() > deadline:
                    raise RuntimeError("rq jobs did not finish")
                time.sleep(0.001)

    try:
        wait_for(lambda: (lambda j: (gather([j], 10), j.return_value() == 9)[1])(
            q.enqueue(rq_square, 3)), "the rq workers")
        out["rq_apply"] = round_trips(
            lambda: gather([q.enqueue(rq_square, 7)]), 20 if QUICK else 100)
        n = 200 if QUICK else 1_000

        def burst(n):
            gather([q.enqueue(rq_square, i) for i in range(n)])

        out["rq_10k"] = per_10k(burst, n, 1 if QUICK else 3)
    finally:
        stop(workers)


def ray_peer(out):
    import ray
    from ray.util.multiprocessing import Pool

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        @ray.remote
        def square(x):
            return x * x

        ray.get([square.remote(i) for i in range(100)])
        out["ray_remote_apply"] = round_trips(
            lambda: ray.get(square.remote(7)), 200 if QUICK else 1000)
        n = 2_000 if QUICK else N
        out["ray_remote_10k"] = per_10k(
            lambda n: ray.get([square.remote(i) for i in range(n)]), n, 3 if QUICK else 5)
        with Pool(2) as pool:
            pool.map(abs, range(100))
            out["ray_pool_apply"] = round_trips(
                lambda: pool.apply(abs, (-7,)), 50 if QUICK else 200)
            out["ray_pool_map_10k"] = per_10k(
                lambda n: pool.map(abs, range(n)), N, 3 if QUICK else 5)
    finally:
        ray.shutdown()


def main():
    out = {}
    unavailable = {}
    only = [a for a in sys.argv[1:] if not a.startswith("--")]
    for name, peer in [("celery", celery_peer), ("rq", rq_peer), ("ray", ray_peer)]:
        if only and name not in only:
            continue
        try:
            peer(out)
        except Exception as e:  # a peer that cannot run says why
            unavailable[name] = f"{type(e).__name__}: {e}"[:300]
    out["_unavailable"] = unavailable
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
