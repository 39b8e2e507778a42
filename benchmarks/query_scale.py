"""How the store's queries scale with its size (a benchmark, not a test).

For each size of ``--rows`` it creates a fresh PostgreSQL database on the ``--db`` server, fills it
through the project's own write path (``db.register_*``, ``db.write_mosaic_results``,
``db.finish_evaluation``) with the shape of a platform team's store and runs VACUUM (ANALYZE) (what
autovacuum does on a live server; ANALYZE on SQLite) and a CHECKPOINT. With every size filled, it times
every query of the SQL cookbook (docs/sql-cookbook.md) and every public ``db.queries`` function on each size
in turn (median of ``--repeat`` runs after one warm-up), checks each statement's plan with EXPLAIN and drops the
databases:

    .venv/bin/python benchmarks/query_scale.py --rows 1000000,10000000 --out benchmarks/results/query_scale.json

``--sqlite`` does the same on SQLite files in a temporary folder (the plans from ``EXPLAIN QUERY PLAN``:
a ``SCAN`` of a table is its full scan).

The shape, per size: a training run ``demo-digits`` (the name the cookbook asks for) with 5 epoch
checkpoints (GradCAM on a validation mosaic set, recorded as each epoch's Focus), its final checkpoint
under 6 methods, trained and fully random, on the test mosaic set, and nightly audits (4 audited
checkpoints x 6 methods on an audit mosaic set) for the remaining rows; every evaluation scores
``--mosaics`` mosaics. What a query asks for stays the same across sizes (the latest audit, the test set,
one training run); only the store grows.

JSON (``--out``): ``{"machine", "database", "sizes": [{"rows", "fill_s", "queries": {name: {"median_ms",
"plan_has_seq_scan_on_mosaic_result", ...}}}], "growth": {name: largest_over_smallest}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError

import db
from flows.results import analysis

ROOT = Path(__file__).resolve().parents[1]
SERVER_URL = os.environ.get("FOCUS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
METHODS = ("gradcam", "lrp", "gradient", "smoothgrad", "integrated_gradients", "random")
EPOCHS = 5
AUDITED = 4  # checkpoints per nightly audit
CLASSES = 10
IMAGES = 4000
RUN_NAME = "demo-digits"  # the training run the SQL cookbook names (written for what `make demo` records)
CHUNK = 2500


def cookbook() -> dict[str, str]:
    """The SQL cookbook's queries (docs/sql-cookbook.md), by name."""
    page = (ROOT / "docs" / "sql-cookbook.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", page, flags=re.S)
    names = ("cookbook_1_median_per_method", "cookbook_2_epoch_curve", "cookbook_3_lost_focus",
             "cookbook_4_disagreement")
    return {name: block.strip().rstrip(";") for name, block in zip(names, blocks, strict=False)}


class Filler:
    """Writes the store of one size through the db write API."""

    def __init__(self, engine: Engine, mosaics: int, seed: int = 0) -> None:
        self.engine, self.mosaics, self.rng = engine, mosaics, np.random.default_rng(seed)
        self.write_s, self.rows = 0.0, 0

    def _mosaic_set(self, dataset: db.RegisteredDataset, name: str, split: str) -> db.RegisteredMosaicSet:
        m, rng = self.mosaics, self.rng
        images = np.asarray(dataset.image_ids)[2 * rng.integers(0, IMAGES // 2, size=(m, 4)) + (split == "val")]
        masks = np.zeros((m, 4), dtype=bool)
        for i, row in enumerate(rng.random((m, 4)).argsort(axis=1)[:, :2]):
            masks[i, row] = True
        return db.register_mosaic_set(self.engine, uuid.uuid4().hex * 2, dataset.dataset_id, split, 0, m // CLASSES,
                                      name, images, rng.integers(0, CLASSES, m), masks)

    def evaluate(self, checkpoint: int, method: int, mosaic_set: db.RegisteredMosaicSet, *, level: float,
                 randomization: str = "none", audit_run_id: int | None = None) -> int:
        m, rng = self.mosaics, self.rng
        evaluation = db.get_or_create_evaluation(self.engine, checkpoint, method, mosaic_set.mosaic_set_id,
                                                 randomization=randomization, audit_run_id=audit_run_id,
                                                 seed=0 if randomization != "none" else None)
        db.start_evaluation(self.engine, evaluation)
        focus = rng.beta(10 * level, 10 * (1 - level), m)
        focus[rng.random(m) < 0.05] = np.nan
        sums = rng.random((m, 4, 2)) * np.array([1.0, -1.0])
        predicted = rng.integers(0, CLASSES, m)
        ids = np.asarray(mosaic_set.mosaic_ids)
        start = time.perf_counter()
        for lo in range(0, m, CHUNK):
            hi = min(lo + CHUNK, m)
            db.write_mosaic_results(self.engine, evaluation, ids[lo:hi], sums[lo:hi], focus[lo:hi], predicted[lo:hi])
        self.write_s += time.perf_counter() - start
        self.rows += m
        db.finish_evaluation(self.engine, evaluation)
        return evaluation

    def fill(self, rows: int) -> dict[str, Any]:
        """The whole store; returns the ids the queries ask about."""
        engine, rng = self.engine, self.rng
        dataset = db.register_dataset(engine, "bench", uuid.uuid4().hex * 2, [str(c) for c in range(CLASSES)],
                                      [f"img/{i:05d}.png" for i in range(IMAGES)], [i % CLASSES for i in range(IMAGES)],
                                      ["val" if i % 2 else "test" for i in range(IMAGES)])
        sets = {name: self._mosaic_set(dataset, layout, split) for name, layout, split in
                (("val", "random", "val"), ("test", "random", "test"), ("audit", "top", "test"))}
        methods = {name: db.register_method(engine, name, {"bench": name}) for name in METHODS}
        run = db.register_training_run(engine, uuid.uuid4().hex * 2, "digits_cnn", {"epochs": EPOCHS}, name=RUN_NAME,
                                       dataset_id=dataset.dataset_id)
        checkpoints = []
        for epoch in range(1, EPOCHS + 1):
            checkpoint = db.register_checkpoint(engine, uuid.uuid4().hex * 2, "digits_cnn", CLASSES,
                                                training_run_id=run, epoch=epoch)
            checkpoints.append(checkpoint)
            focus = self.evaluate(checkpoint, methods["gradcam"], sets["val"], level=0.5 + 0.06 * epoch)
            db.record_epoch(engine, run, epoch, train_loss=1.0 / epoch, val_loss=1.2 / epoch,
                            val_accuracy=0.5 + 0.08 * epoch, val_mean_class_accuracy=0.5 + 0.07 * epoch,
                            focus_median=0.5 + 0.06 * epoch, evaluation_ids=[focus])
        db.finish_training_run(engine, run)
        final = {}
        for name, method in methods.items():
            for kind in ("none", "full"):
                final[(name, kind)] = self.evaluate(checkpoints[-1], method, sets["test"],
                                                    level=0.8 if kind == "none" else 0.5, randomization=kind)
        audited = [db.register_checkpoint(engine, uuid.uuid4().hex * 2, "resnet18", CLASSES, audit=True,
                                          label=f"prod-{i}") for i in range(AUDITED)]
        nights = max(1, (rows - self.rows) // (self.mosaics * AUDITED * len(METHODS)))
        audits, latest = [], []
        for night in range(nights):
            audit = db.start_audit_run(engine, name=f"nightly-{night + 1}", threshold=0.05)
            latest = [self.evaluate(c, methods[name], sets["audit"], level=float(rng.uniform(0.6, 0.85)),
                                    audit_run_id=audit) for c in audited for name in METHODS]
            db.finish_audit_run(engine, audit)
            audits.append(audit)
        return {"run": run, "final": final, "audited": audited, "audits": audits, "latest": latest,
                "test_set": sets["test"].mosaic_set_id, "final_checkpoint": checkpoints[-1]}


def queries(ids: dict[str, Any]) -> dict[str, Callable[[Engine], Any]]:
    """Every cookbook query and public ``db.queries`` function (and the two analyses over them), by name."""
    latest, final = ids["latest"], ids["final"]

    def plain(sql_text: str) -> Callable[[Engine], Any]:
        def run(engine: Engine) -> list:
            with engine.connect() as connection:
                return connection.execute(text(sql_text)).all()
        return run

    named: dict[str, Callable[[Engine], Any]] = {name: plain(sql_text) for name, sql_text in cookbook().items()}
    named.update({
        "evaluation_summary": lambda e: db.evaluation_summary(e, latest),
        "class_summary": lambda e: db.class_summary(e, latest),
        "evaluation_results": lambda e: db.evaluation_results(e, latest[0]),
        "evaluation_tile_sums": lambda e: db.evaluation_tile_sums(e, latest[0]),
        "compare_methods": lambda e: db.compare_methods(e, ids["test_set"]),
        "split_images_per_class": lambda e: db.split_images_per_class(e, ids["test_set"]),
        "training_curve": lambda e: db.training_curve(e, ids["run"]),
        "checkpoint_history": lambda e: db.checkpoint_history(e, ids["audited"][0], "gradcam"),
        "paired_focus": lambda e: db.paired_focus(e, final[("gradcam", "none")], final[("lrp", "none")]),
        "focus_regressions": lambda e: db.focus_regressions(e, 0.05, ids["audits"][-1]),
        "checkpoints_to_audit": db.checkpoints_to_audit,
        "randomization_medians": lambda e: db.randomization_medians(e, ids["final_checkpoint"], ids["test_set"]),
        "latest_training_run": lambda e: db.latest_training_run(e, RUN_NAME),
        "finished_audit_runs": db.finished_audit_runs,
        "checkpoint_origin": lambda e: db.checkpoint_origin(e, ids["final_checkpoint"]),
        "checkpoint_origins": lambda e: db.checkpoint_origins(e, [ids["final_checkpoint"], *ids["audited"]]),
        "focus_accuracy_correlation": lambda e: analysis.focus_accuracy_correlation(e, ids["run"]),
    })
    return named


def _seq_scans(plan: dict) -> list[str]:
    found = []
    if plan.get("Node Type") == "Seq Scan":
        found.append(plan.get("Relation Name", "?"))
    for child in plan.get("Plans", []):
        found += _seq_scans(child)
    return found


_FROM = re.compile(r"\b(?:FROM|JOIN)\s+(\w+)(?:\s+(?:AS\s+)?(\w+))?", flags=re.I)
_NOT_ALIAS = {"on", "where", "join", "left", "inner", "cross", "group", "order", "union", "lateral", "using"}


def _sqlite_aliases(connection: Any, statement: str) -> dict[str, set[str]]:
    """Alias (or name) -> tables, from the statement and every view's SQL (SQLite's plans name aliases only)."""
    tables = {name for (name,) in connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")}
    sources = [statement, *(sql_text for (sql_text,) in connection.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'view'"))]
    aliases: dict[str, set[str]] = {}
    for source in sources:
        for table, alias in _FROM.findall(source):
            if table in tables:
                aliases.setdefault(table, set()).add(table)
                if alias and alias.lower() not in _NOT_ALIAS:
                    aliases.setdefault(alias, set()).add(table)
    return aliases


def _plan_scans(connection: Any, statement: str, parameters: Any) -> list[str]:
    """The relations a statement's plan reads whole: PostgreSQL's Seq Scans, SQLite's SCANs (by table name)."""
    if connection.dialect.name == "postgresql":
        plan = connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters or None).scalar()
        plan = json.loads(plan) if isinstance(plan, str) else plan
        return _seq_scans(plan[0]["Plan"])
    rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters or ()).all()
    aliases = _sqlite_aliases(connection, statement)
    scans = []
    for row in rows:
        words = str(row[-1]).split()
        if len(words) >= 2 and words[0] == "SCAN":  # of a table (a subquery's or a view's alias names none)
            scans += sorted(aliases.get(words[1], set()))
    return scans


# mosaic_result or one of its partitions; not mosaic_result_tile (empty for 2x2 grids, so a scan of it is free)
_MOSAIC_RESULT = re.compile(r"mosaic_result(_p\d+)?")


def measure(engine: Engine, run: Callable[[Engine], Any], repeat: int) -> dict[str, Any]:
    """Median wall time after a warm-up, and the relations each statement's plan reads with a Seq Scan."""
    statements: list[tuple[str, Any]] = []

    def record(_conn, _cursor, statement, parameters, _context, _executemany) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        run(engine)  # the warm-up, whose statements are explained below
    finally:
        event.remove(engine, "before_cursor_execute", record)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run(engine)
        times.append((time.perf_counter() - start) * 1000)
    scans: list[str] = []
    with engine.connect() as connection:
        for statement, parameters in statements:
            if not statement.lstrip().upper().startswith(("SELECT", "WITH")) or "pg_catalog" in statement:
                continue
            scans += _plan_scans(connection, statement, parameters)
    return {"median_ms": statistics.median(times), "runs_ms": [round(t, 2) for t in times],
            "plan_has_seq_scan_on_mosaic_result": any(_MOSAIC_RESULT.fullmatch(s) for s in scans),
            "seq_scans": sorted(set(scans))}


@contextmanager
def _database(server: str | None) -> Iterator[str]:
    """A new, empty database: on the PostgreSQL ``server`` (dropped afterwards), or a SQLite file (``None``)."""
    if server is None:
        with tempfile.TemporaryDirectory(prefix="focus_scale_") as folder:
            yield f"sqlite:///{Path(folder) / 'focus.db'}"
        return
    name = f"focus_scale_{uuid.uuid4().hex[:12]}"
    conninfo = make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


_PG_SIZE = ("SELECT pg_total_relation_size('mosaic_result') + COALESCE((SELECT SUM(pg_total_relation_size(relid)) "
            "FROM pg_partition_tree('mosaic_result') WHERE isleaf), 0)")


def _settle(engine: Engine) -> None:
    """What autovacuum does on a live server, done before the timings instead of during them.

    PostgreSQL: ``VACUUM (ANALYZE)``: statistics for the planner, and the fill's rows vacuumed and marked
    all-visible, so autovacuum has no reason to vacuum millions of fresh rows during the timings, on the same cores.
    SQLite: ``ANALYZE``, committed (in a rolled-back transaction it leaves no statistics).
    """
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM (ANALYZE)")
            try:  # the fill's dirty pages written now, not by the checkpointer during the timings
                connection.exec_driver_sql("CHECKPOINT")
            except DBAPIError:  # CHECKPOINT needs a superuser or pg_checkpoint; the timings go on without it
                pass
        return
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")


def fill_size(stack: ExitStack, server: str | None, rows: int, mosaics: int) -> tuple[Engine, dict, dict]:
    """Fill one store of ``rows`` rows (``server`` ``None``: SQLite), kept open on ``stack`` (dropped when it
    closes); returns its engine, the ids the queries ask about and its figures (``queries`` still empty)."""
    url = stack.enter_context(_database(server))
    db.upgrade(url)
    engine = db.open_store(url)
    stack.callback(engine.dispose)  # before the database is dropped
    start = time.perf_counter()
    filler = Filler(engine, mosaics)
    ids = filler.fill(rows)
    fill_s = time.perf_counter() - start
    _settle(engine)
    with engine.connect() as connection:
        stored = connection.scalar(text("SELECT COUNT(*) FROM mosaic_result"))
        if server is None:  # the whole file: SQLite keeps one table
            size, partitions = os.path.getsize(make_url(url).database), 1
        else:
            size = connection.scalar(text(_PG_SIZE))
            partitions = connection.scalar(text("SELECT COUNT(*) FROM pg_partition_tree('mosaic_result') "
                                                "WHERE isleaf"))
    figures = {"rows": int(stored), "requested_rows": rows, "evaluations": filler.rows // mosaics,
               "mosaics_per_evaluation": mosaics, "audits": len(ids["audits"]), "partitions": int(partitions),
               "mosaic_result_bytes": int(size), "fill_s": round(fill_s, 2),
               "write_rows_per_s": round(filler.rows / filler.write_s), "load_after_fill": os.getloadavg()[0],
               "queries": {}}
    return engine, ids, figures


def measure_sizes(server: str | None, sizes: list[int], mosaics: int, repeat: int) -> list[dict[str, Any]]:
    """Fill every size first, then measure each query on every size in turn (the sizes of one query minutes
    apart would compare two states of this shared machine, not two stores)."""
    with ExitStack() as stack:
        stores = [fill_size(stack, server, rows, mosaics) for rows in sizes]
        plans = [queries(ids) for _engine, ids, _figures in stores]
        for name in plans[0]:
            for (engine, _ids, figures), named in zip(stores, plans, strict=True):
                figures["queries"][name] = measure(engine, named[name], repeat)
        return [figures for _engine, _ids, figures in stores]


def _machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "commit": commit, "uptime_before": uptime, "load_before": os.getloadavg()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,10000000", help="comma-separated store sizes (mosaic_result rows)")
    parser.add_argument("--db", default=SERVER_URL, help="a PostgreSQL server URL (a database is created and dropped)")
    parser.add_argument("--sqlite", action="store_true", help="SQLite files in a temporary folder instead of --db")
    parser.add_argument("--mosaics", type=int, default=10_000, help="mosaics per evaluation")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per query after the warm-up")
    parser.add_argument("--out", help="write the JSON here")
    args = parser.parse_args(argv)
    sizes = [int(float(r)) for r in args.rows.split(",")]
    machine = _machine()
    if args.sqlite:
        server, database = None, {"dialect": "sqlite", "server_version": sqlite3.sqlite_version,
                                  "url": "sqlite:///<temporary folder>/focus.db"}
    else:
        server = args.db
        with psycopg.connect(make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)) as c:
            version = c.execute("SHOW server_version").fetchone()[0]
        database = {"dialect": "postgresql", "server_version": version, "url": db.mask_url(make_url(server)),
                    "partition_width_evaluations": 1000}
    result: dict[str, Any] = {
        "machine": machine,
        "database": database,
        "sizes": measure_sizes(server, sizes, args.mosaics, args.repeat),
    }
    result["machine"]["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True,
                                                       check=False).stdout.strip()
    first, last = result["sizes"][0]["queries"], result["sizes"][-1]["queries"]
    result["growth"] = {q: round(last[q]["median_ms"] / first[q]["median_ms"], 3) for q in first}
    _print(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _print(result: dict[str, Any]) -> None:
    sizes = result["sizes"]
    header = f"{'query':<30}" + "".join(f"{s['rows']:>14,} rows" for s in sizes) + f"{'growth':>9}  seq scan"
    print(header)
    for q in sizes[0]["queries"]:
        cells = "".join(f"{s['queries'][q]['median_ms']:>16.1f} ms" for s in sizes)
        scan = any(s["queries"][q]["plan_has_seq_scan_on_mosaic_result"] for s in sizes)
        print(f"{q:<30}{cells}{result['growth'][q]:>9.2f}  {'YES' if scan else 'no'}")
    for s in sizes:
        print(f"{s['rows']:,} rows: fill {s['fill_s']:.0f} s, writes {s['write_rows_per_s']:,} rows/s, "
              f"{s['partitions']} partitions, {s['mosaic_result_bytes'] / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
