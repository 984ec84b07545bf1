"""Python counterparts of benches/manager.rs (see xtask/src/bench.rs)."""
from multiprocessing import Manager

from common import measure, report


def main():
    with Manager() as m:
        d = m.dict()
        state = {"i": 0}

        def insert():
            i = state["i"] = (state["i"] + 1) % 1000
            d[i] = i

        def get():
            i = state["i"] = (state["i"] + 1) % 1000
            return d[i]

        def get_then_set():
            # Not atomic: CPython's proxies have no read-modify-write.
            d[7] = d.get(7, 0) + 1

        results = {
            "dict_insert": measure(insert, 2000),
            "dict_get": measure(get, 2000),
            "dict_get_then_set": measure(get_then_set, 1000),
        }
    report(results)


if __name__ == "__main__":
    main()
