"""Python counterparts of benches/shm.rs (see xtask/src/bench.rs)."""
import fcntl
import json
import os
import shutil
import tempfile
from multiprocessing import Value, shared_memory

from common import QUICK, measure, report


def shared_memory_create_close_unlink():
    shm = shared_memory.SharedMemory(create=True, size=4096)
    shm.close()
    shm.unlink()


def raw_value_increment_op():
    v = Value("q", 0, lock=False)

    def op():
        v.value += 1

    return op


def json_file_update_op(directory):
    """The tutorial's ticket-office update, made as safe as FileDoc's:
    flock a side file, read, modify, write a temp file, fsync, rename,
    fsync the directory."""
    path = os.path.join(directory, "office.json")
    tmp = os.path.join(directory, ".office.json.tmp")
    lock = open(path + ".lock", "a")
    with open(path, "w") as f:
        json.dump({"count": 0}, f)

    def op():
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path) as f:
                doc = json.load(f)
            doc["count"] += 1
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, path)
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    return op, lock


def attach_and_hand_back(name):
    """A worker's side of a shared_memory hand-off: attach, hand it back."""
    shm = shared_memory.SharedMemory(name=name)
    shm.close()
    return name


def echo(b):
    return b


def handoffs(results):
    """A 1 GiB shared_memory block handed to a pool worker and back by name
    (the block made once, every page written; the hand-off is timed), and
    64 MiB of bytes copied to a worker and back."""
    from multiprocessing import Pool

    block = shared_memory.SharedMemory(create=True, size=1 << 30)
    try:
        for i in range(0, block.size, 4096):
            block.buf[i] = 1
        with Pool(1) as pool:
            results["shared_memory_handoff_1GiB"] = measure(
                lambda: pool.apply(attach_and_hand_back, (block.name,)), 10 if QUICK else 50
            )
            data = bytes(64 << 20)
            results["bytes_roundtrip_64MiB"] = measure(
                lambda: pool.apply(echo, (data,)), 1, 3 if QUICK else 7
            )
    finally:
        block.close()
        block.unlink()


def main():
    results = {}
    handoffs(results)
    results["shared_memory_create_close_unlink"] = measure(
        shared_memory_create_close_unlink, 200 if QUICK else 1000)
    results["raw_value_increment"] = measure(raw_value_increment_op(), 20000 if QUICK else 200000)
    directory = tempfile.mkdtemp(prefix="mproc-pybench-")
    try:
        op, lock = json_file_update_op(directory)
        results["json_file_update"] = measure(op, 20 if QUICK else 100)
        lock.close()
    finally:
        shutil.rmtree(directory)
    report(results)


if __name__ == "__main__":
    main()
