"""Throughput of ``db.write_mosaic_results`` and ``db.register_mosaic_set`` (a benchmark, not a test).

Writes N mosaic_result rows in chunks into a fresh database per backend and prints rows/s for
the first write (the common case) and for a rewrite of every chunk (the retry path: an upsert
over existing rows), and mosaics/s for registering the mosaic set:

    .venv/bin/python benchmarks/db_write.py --rows 200000 --chunk 10000

``--baseline FILE`` also times another implementation of the two writes (a module file with
``register_mosaic_set`` and ``write_mosaic_results``, such as the single-module version from
``git show 9f3686b:db/writes.py > /tmp/writes_9f3686b.py``) in the same process, alternating
with the current one for ``--repeat`` rounds (the order flips every round), so that both see
the same machine load; the load average is printed with every line. Each implementation writes
into its own database, at ``--baseline-revision`` for the baseline (``0002``: the unpartitioned
``mosaic_result`` without stored summaries) and at head for the current code.

PostgreSQL: a temporary database on FOCUS_BENCH_POSTGRES_URL (default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres), dropped afterwards. SQLite: a file in a
temporary folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType

import numpy as np
import psycopg
from psycopg import sql
from sqlalchemy.engine import Engine, make_url

import db

SERVER_URL = os.environ.get("FOCUS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
N_IMAGES = 1000


def _load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"baseline_{Path(path).stem}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"Cannot load {path}; pass a Python file with register_mosaic_set and write_mosaic_results.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timed_writes(engine: Engine, writes: ModuleType, rows: int, chunk: int, rng: np.random.Generator) -> dict:
    dataset = db.register_dataset(
        engine, "bench", uuid.uuid4().hex * 2, [str(c) for c in range(10)],
        [f"img/{i:05d}" for i in range(N_IMAGES)], [i % 10 for i in range(N_IMAGES)], ["test"] * N_IMAGES,
    )  # fmt: skip
    image_ids = np.asarray(dataset.image_ids)[rng.integers(0, N_IMAGES, size=(rows, 4))]
    masks = np.tile([[True, True, False, False]], (rows, 1))
    start = time.perf_counter()
    mosaic_set = writes.register_mosaic_set(engine, uuid.uuid4().hex * 2, dataset.dataset_id, "test", 0, 1,
                                            "random", image_ids, rng.integers(0, 10, rows), masks)
    register_s = time.perf_counter() - start
    checkpoint = db.register_checkpoint(engine, uuid.uuid4().hex * 2, "bench", 10)
    method = db.register_method(engine, "bench", {"run": uuid.uuid4().hex})
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
            writes.write_mosaic_results(engine, evaluation, ids[lo:hi], sums[lo:hi], focus[lo:hi], predicted[lo:hi])
        timings.append(time.perf_counter() - start)
    stored = db.evaluation_results(engine, evaluation)
    assert len(stored) == rows and stored["focus"].isna().sum() == np.isnan(focus).sum()
    return {"insert_rows_per_s": rows / timings[0], "upsert_rows_per_s": rows / timings[1],
            "mosaics_per_s": rows / register_s}


def _postgresql_url() -> tuple[str, str]:
    server = make_url(SERVER_URL)
    conninfo = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"focus_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return server.set(database=name).render_as_string(hide_password=False), name


def _drop_postgresql(name: str) -> None:
    conninfo = make_url(SERVER_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _backend(name: str, implementations: dict[str, tuple[ModuleType, str]], rows: int, chunk: int,
             repeat: int) -> None:
    """Time every implementation, each on a fresh database at its revision, alternating them ``repeat`` times."""
    folder = tempfile.TemporaryDirectory()
    engines: dict[str, Engine] = {}
    databases = []
    try:
        for label, (_writes, revision) in implementations.items():
            if name == "postgresql":
                url, database = _postgresql_url()
                databases.append(database)
            else:
                url = f"sqlite:///{Path(folder.name) / f'{label}.db'}"
            db.upgrade(url, revision)
            engines[label] = db.get_engine(url, check=False)
        for round_ in range(repeat):
            order = list(implementations.items())
            for label, (writes, revision) in order if round_ % 2 == 0 else order[::-1]:  # neither always first
                result = _timed_writes(engines[label], writes, rows, chunk, np.random.default_rng(round_))
                print(f"{name:<10} {label:<8} rev {revision:<5} insert {result['insert_rows_per_s']:>9,.0f} rows/s   "
                      f"upsert (retry) {result['upsert_rows_per_s']:>9,.0f} rows/s   "
                      f"register mosaics {result['mosaics_per_s']:>8,.0f} mosaics/s   "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        for engine in engines.values():
            engine.dispose()
        for database in databases:
            _drop_postgresql(database)
        folder.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="mosaic_result rows to write per backend")
    parser.add_argument("--chunk", type=int, default=10_000, help="rows per write_mosaic_results call")
    parser.add_argument("--backend", choices=("postgresql", "sqlite", "both"), default="both")
    parser.add_argument("--baseline", metavar="FILE", help="another writes module to time in the same process")
    parser.add_argument("--baseline-revision", default="head", metavar="REV",
                        help="the schema revision the baseline writes into (e.g. 0002 for the unpartitioned table)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per implementation (alternating)")
    args = parser.parse_args()
    implementations: dict[str, tuple[ModuleType, str]] = {"current": (db, "head")}
    if args.baseline:
        implementations = {"baseline": (_load(args.baseline), args.baseline_revision), "current": (db, "head")}
    print(f"rows={args.rows} chunk={args.chunk} load average={' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name in ("postgresql", "sqlite"):
        if args.backend in (name, "both"):
            _backend(name, implementations, args.rows, args.chunk, args.repeat)


if __name__ == "__main__":
    main()
