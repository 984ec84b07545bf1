"""Python counterparts of benches/workloads.rs: SHA-256 of every file with
Pool.map, and word frequencies with Pool.imap_unordered(chunksize=16) and a
reduce, on the same corpus (written by the `corpus` binary of this package
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
        report(results)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
