"""Python counterparts of benches/workloads.rs: SHA-256 of every file with
Pool.map, and word frequencies with Pool.imap_unordered(chunksize=16) and a
reduce, and with the reduce done in the workers first (Pool.map over groups
of files, each group's counts merged in its worker: what mproc's
Pool::map_reduce does), on the same corpus (written by the `corpus` binary of this package
into a temporary directory, removed at the end)."""
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from multiprocessing import Pool

from common import QUICK, median, report, timed

FULL_BYTES = 100 << 20


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).digest()


def count_words(path):
    with open(path, "r") as f:
        return Counter(f.read().split())


def count_group(paths):
    total = Counter()
    for p in paths:
        total.update(count_words(p))
    return total


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    scratch = tempfile.mkdtemp(prefix="mproc-bench-corpus-py-")
    try:
        subprocess.run(
            ["cargo", "run", "--quiet", "--release", "--package", "mproc-benches",
             "--bin", "corpus", "--", scratch, str(FULL_BYTES)],
            cwd=root, check=True, stdout=subprocess.DEVNULL,
        )
        paths = sorted(os.path.join(scratch, p) for p in os.listdir(scratch))
        runs = 3 if QUICK else 5
        results = {}
        with Pool(os.cpu_count()) as pool:
            results["sha256_pool_map"] = median(
                lambda: timed(lambda: pool.map(sha256_file, paths)), runs
            )

            def words():
                total = Counter()
                for c in pool.imap_unordered(count_words, paths, chunksize=16):
                    total.update(c)
                return total

            results["words_pool_imap_unordered"] = median(lambda: timed(words), runs)

            # CPython's default map chunk size: ceil(len / (4 * workers)).
            size = -(-len(paths) // (4 * os.cpu_count()))
            groups = [paths[i:i + size] for i in range(0, len(paths), size)]

            def words_in_workers():
                total = Counter()
                for c in pool.map(count_group, groups):
                    total.update(c)
                return total

            results["words_pool_map_reduce"] = median(lambda: timed(words_in_workers), runs)
        report(results)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
