"""Benchmark: the store's write path alone, on SQLite and on a PostgreSQL server.

What a run hands the store, without the run: a deposition's readings (10 quantities a
sample, `add_readings`) and a cell test's samples (16 channels, 100 rows a call,
`add_cell_samples`; and 200 a call as a poll's columns, `add_cell_columns`, as the
channels hand them over), each with a checkpoint or channel update every 1,000 calls
(500 for the columns), committed as a run commits them (at least once a wall second,
`flush` at the end). Prints rows per second of each, then one JSON line.

    python bench/store_writes.py [--store postgresql://…] [--readings N] [--samples N]

With --store, the store's tables go into a schema of their own (`lipon_bench_<pid>`,
made through the address and dropped at the end): the address's user must be allowed to
create one.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

from lipon_hw.store import Store

QUANTITIES = [f"inst{i}.value" for i in range(10)]


def readings(store: Store, n: int) -> float:
    run_id = store.create_run("bench", "deposition", "b.yaml", "", "", None, None)
    t0 = time.perf_counter()
    for k in range(n // len(QUANTITIES)):
        store.add_readings(run_id, k * 1.0, {q: k + i * 0.1 for i, q in enumerate(QUANTITIES)})
        if k % 1000 == 999:
            store.checkpoint(run_id, k * 1.0, 0, {"k": k})
    store.flush()
    return n / (time.perf_counter() - t0)


def cell_samples(store: Store, n: int) -> float:
    run_id = store.create_run("bench", "cycling", "p.yaml", "", "", None, None)
    for ch in range(1, 17):
        store.add_channel(run_id, ch, "mes4", None, "p")
    t0 = time.perf_counter()
    calls = n // 100
    for k in range(calls):
        ch = k % 16 + 1
        t = (k // 16) * 100.0
        store.add_cell_samples(run_id, ch, [(t + i, 3.5 + i * 1e-4, 1e-6, 1, 1, 0, "CC_CHG")
                                            for i in range(100)])
        if k % 1000 == 999:
            store.update_channel(run_id, ch, "running", "", 1, 1, t, {"t_s": t})
    store.flush()
    return n / (time.perf_counter() - t0)


def cell_columns(store: Store, n: int) -> float:
    """As a cell test's poll hands them over: a step's samples as columns, 200 a call
    (`add_cell_columns`, what the engine's channels use)."""
    run_id = store.create_run("bench", "cycling", "p.yaml", "", "", None, None)
    for ch in range(1, 17):
        store.add_channel(run_id, ch, "mes4", None, "p")
    t0 = time.perf_counter()
    for k in range(n // 200):
        ch = k % 16 + 1
        t = (k // 16) * 200.0
        store.add_cell_columns(run_id, ch, [t + i for i in range(200)],
                               [3.5 + i * 1e-4 for i in range(200)], [1e-6] * 200, 1, 1, 0,
                               "CC_CHG")
        if k % 500 == 499:
            store.update_channel(run_id, ch, "running", "", 1, 1, t, {"t_s": t})
    store.flush()
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", help="a PostgreSQL address (default: SQLite)")
    ap.add_argument("--readings", type=int, default=500_000)
    ap.add_argument("--samples", type=int, default=1_000_000)
    args = ap.parse_args()
    url, drop = args.store, None
    if url:
        import psycopg

        schema = f"lipon_bench_{__import__('os').getpid()}"
        with psycopg.connect(url, autocommit=True) as con:
            con.execute(f"CREATE SCHEMA {schema}")
        drop = (url, schema)
        url = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    try:
        with tempfile.TemporaryDirectory() as data:
            store = Store(data, store=url) if url else Store(data)
            figures = {"bench": "store_writes", "store": "postgresql" if url else "sqlite",
                       "readings_per_s": round(readings(store, args.readings)),
                       "cell_samples_per_s": round(cell_samples(store, args.samples)),
                       "cell_columns_per_s": round(cell_columns(store, args.samples))}
            store.close()
    finally:
        if drop is not None:
            with psycopg.connect(drop[0], autocommit=True) as con:
                con.execute(f"DROP SCHEMA {drop[1]} CASCADE")
    print(f"{figures['store']}: {figures['readings_per_s']} readings/s, "
          f"{figures['cell_samples_per_s']} cell samples/s as rows, "
          f"{figures['cell_columns_per_s']} as a poll's columns")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
