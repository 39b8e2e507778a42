"""Throughput of ``db.write_mosaic_results`` on PostgreSQL and SQLite (a benchmark, not a test).

Writes N mosaic_result rows in chunks into a fresh database per backend and prints rows/s:

    .venv/bin/python benchmarks/db_write.py --rows 200000 --chunk 10000

PostgreSQL: a temporary database on FOCUS_BENCH_POSTGRES_URL (default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres), dropped afterwards. SQLite: a file in a
temporary folder. Registering the mosaic set is timed separately. A second pass rewrites every
chunk (the retry path: an upsert over existing rows).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

import db

SERVER_URL = os.environ.get("FOCUS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _run(url: str, rows: int, chunk: int) -> dict[str, float]:
    db.upgrade(url)
    engine = db.open_store(url)
    try:
        n_images = 1000
        dataset = db.register_dataset(
            engine, "bench", uuid.uuid4().hex * 2, [str(c) for c in range(10)],
            [f"img/{i:05d}" for i in range(n_images)], [i % 10 for i in range(n_images)], ["test"] * n_images,
        )
        rng = np.random.default_rng(0)
        image_ids = np.asarray(dataset.image_ids)[rng.integers(0, n_images, size=(rows, 4))]
        masks = np.tile([[True, True, False, False]], (rows, 1))
        start = time.perf_counter()
        mosaic_set = db.register_mosaic_set(engine, uuid.uuid4().hex * 2, dataset.dataset_id, "test", 0, 1,
                                            "random", image_ids, rng.integers(0, 10, rows), masks)
        register_s = time.perf_counter() - start
        checkpoint = db.register_checkpoint(engine, uuid.uuid4().hex * 2, "bench", 10)
        method = db.register_method(engine, "bench", {})
        evaluation = db.get_or_create_evaluation(engine, checkpoint, method, mosaic_set.mosaic_set_id)
        ids = np.asarray(mosaic_set.mosaic_ids)
        sums = rng.random((rows, 4, 2)) * np.array([1.0, -1.0])
        focus = rng.random(rows)
        focus[rng.random(rows) < 0.05] = np.nan
        predicted = rng.integers(0, 10, rows)
        timings = []
        for _ in range(2):  # first write, then the retry of every chunk
            start = time.perf_counter()
            for lo in range(0, rows, chunk):
                hi = min(lo + chunk, rows)
                db.write_mosaic_results(engine, evaluation, ids[lo:hi], sums[lo:hi], focus[lo:hi], predicted[lo:hi])
            timings.append(time.perf_counter() - start)
        assert len(db.finished_mosaic_ids(engine, evaluation)) == rows
        return {"mosaics_per_s": rows / register_s, "insert_rows_per_s": rows / timings[0],
                "upsert_rows_per_s": rows / timings[1]}
    finally:
        engine.dispose()


def _postgresql(rows: int, chunk: int) -> dict[str, float]:
    server = make_url(SERVER_URL)
    conninfo = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"focus_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        return _run(server.set(database=name).render_as_string(hide_password=False), rows, chunk)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _sqlite(rows: int, chunk: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        return _run(f"sqlite:///{Path(folder) / 'bench.db'}", rows, chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="mosaic_result rows to write per backend")
    parser.add_argument("--chunk", type=int, default=10_000, help="rows per write_mosaic_results call")
    parser.add_argument("--backend", choices=("postgresql", "sqlite", "both"), default="both")
    args = parser.parse_args()
    print(f"rows={args.rows} chunk={args.chunk} load average={os.getloadavg()[0]:.2f}")
    backends = {"postgresql": _postgresql, "sqlite": _sqlite}
    for name, run in backends.items():
        if args.backend in (name, "both"):
            result = run(args.rows, args.chunk)
            print(f"{name:<10} insert {result['insert_rows_per_s']:>9,.0f} rows/s   "
                  f"upsert (retry) {result['upsert_rows_per_s']:>9,.0f} rows/s   "
                  f"register mosaics {result['mosaics_per_s']:>8,.0f} mosaics/s")


if __name__ == "__main__":
    main()
