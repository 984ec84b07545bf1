"""The tasks of redis_peers.py, importable by its worker processes."""
import os

try:
    from celery import Celery

    _url = os.environ.get("MPROC_BENCH_REDIS", "redis://127.0.0.1:6379/0")
    app = Celery("peer_tasks", broker=_url, backend=_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # The same prefetch as ours in benches/redis.rs (64 per process):
        # both tuned for trivial tasks.
        worker_prefetch_multiplier=64,
        broker_connection_retry_on_startup=True,
    )

    @app.task
    def square(x):
        return x * x

except ImportError:  # RQ alone needs only rq_square
    pass


def rq_square(x):
    return x * x
