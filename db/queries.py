"""Longitudinal queries over the results store, returned as pandas DataFrames.

Each function reads the views created by the migrations (``evaluation_summary``,
``training_epoch_focus``, ``audit_history``) or the tables, with bound parameters only, and
returns the same columns on PostgreSQL and SQLite (timestamps as UTC ``datetime64``).
Statistics over these values (correlations, paired tests) are computed by ``focus_core.stats``
in ``flows.results.analysis``: this module only reads.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Engine

from db.errors import StoreError

__all__ = [
    "evaluation_summary",
    "class_summary",
    "evaluation_results",
    "evaluation_tile_sums",
    "compare_methods",
    "training_curve",
    "checkpoint_history",
    "paired_focus",
    "focus_regressions",
    "checkpoints_to_audit",
    "randomization_medians",
    "latest_training_run",
    "finished_audit_runs",
    "checkpoint_origin",
    "checkpoint_origins",
    "split_images_per_class",
]

_SUMMARY_COLUMNS = (
    "s.evaluation_id, s.checkpoint_id, c.architecture, c.label AS checkpoint_label, "
    "COALESCE(c.label, tr.name || ' epoch ' || c.epoch) AS checkpoint_name, d.name AS dataset, ms.tile_size, ms.resize, "
    "s.method_id, m.name AS method, s.mosaic_set_id, s.randomization, s.stage, s.layer, s.seed, s.audit_run_id, "
    "s.status, s.n, s.n_defined, s.mean_focus, s.median_focus, s.q1_focus, s.q3_focus, "
    "s.min_focus, s.max_focus, s.mosaic_accuracy, s.std_focus, s.undefined_share, s.median_focus_undefined_as_zero, "
    "s.grid, s.targets, s.chance_level, s.median_model_focus, s.median_explainer_gap"
)
_SUMMARY_FROM = (
    "FROM evaluation_summary s JOIN model_checkpoint c ON c.id = s.checkpoint_id "
    "JOIN xai_method m ON m.id = s.method_id JOIN mosaic_set ms ON ms.id = s.mosaic_set_id "
    "JOIN dataset d ON d.id = ms.dataset_id LEFT JOIN training_run tr ON tr.id = c.training_run_id"
)


def _read(engine: Engine, sql: str, params: dict[str, Any] | None = None, *, expanding: tuple[str, ...] = (),
          timestamps: tuple[str, ...] = ()) -> pd.DataFrame:
    statement = text(sql)
    if expanding:
        statement = statement.bindparams(*(bindparam(name, expanding=True) for name in expanding))
    with engine.connect() as connection:
        frame = pd.read_sql_query(statement, connection, params=params or {})  # no table-name lookup first
    for column in timestamps:
        frame[column] = pd.to_datetime(frame[column], utc=True, format="mixed")
    return frame


def evaluation_summary(
    engine: Engine, evaluation_ids: list[int] | None = None, *, mosaic_set_id: int | None = None
) -> pd.DataFrame:
    """One row per evaluation: n, n_defined, mean, median, quartiles, min, max of Focus, mosaic accuracy.

    Quantiles are numpy's default (linear interpolation) over the defined Focus scores; NULL
    (undefined) scores count in ``n`` but not in ``n_defined`` or the statistics. Also
    ``std_focus`` (sample standard deviation), ``undefined_share`` and
    ``median_focus_undefined_as_zero`` (undefined maps counted as 0, Quantus's convention), and the mosaic
    set's ``grid`` (N), ``targets`` (k) and ``chance_level`` (k / N², what a random explanation scores), and what
    tells rows apart: ``checkpoint_name`` (the label, else "training run epoch N"), ``architecture``, ``dataset``
    (its name) and the mosaic set's ``tile_size`` and ``resize`` (``None`` when not resized); with a model-reliance
    pass (``db.reliance``), ``median_model_focus`` and ``median_explainer_gap`` (Focus minus model Focus), else
    ``None``. A
    closed evaluation's row is its stored summary (``db.summaries``); the others are computed from their rows.

    Examples
    --------
    >>> evaluation_summary(engine, [1])[["method", "median_focus"]]  # doctest: +SKIP
    """
    where, params, expanding = [], {}, ()
    if evaluation_ids is not None:
        if not evaluation_ids:
            where.append("1 = 0")
        else:
            where.append("s.evaluation_id IN :ids")
            params["ids"] = [int(i) for i in evaluation_ids]
            expanding = ("ids",)
    if mosaic_set_id is not None:
        where.append("s.mosaic_set_id = :mosaic_set_id")
        params["mosaic_set_id"] = int(mosaic_set_id)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return _read(engine, f"SELECT {_SUMMARY_COLUMNS} {_SUMMARY_FROM}{clause} ORDER BY s.evaluation_id", params,
                 expanding=expanding)


def split_images_per_class(engine: Engine, mosaic_set_id: int) -> int | None:
    """The fewest images any class has in the split a mosaic set draws from (``None``: no such set or no images)."""
    frame = _read(
        engine,
        "SELECT COUNT(*) AS images FROM image i JOIN mosaic_set ms ON ms.dataset_id = i.dataset_id "
        "AND ms.split = i.split WHERE ms.id = :mosaic_set_id GROUP BY i.label ORDER BY images LIMIT 1",
        {"mosaic_set_id": int(mosaic_set_id)},
    )
    return int(frame["images"].iloc[0]) if len(frame) else None


def class_summary(engine: Engine, evaluation_ids: list[int]) -> pd.DataFrame:
    """The stored per-target-class summary of closed evaluations, by evaluation and class.

    Columns ``evaluation_id, target_class, n, n_defined, mean_focus, median_focus, mosaic_accuracy,
    median_focus_undefined_as_zero``; an evaluation that is not closed (no stored summary) has no rows.
    """
    if not evaluation_ids:
        return _read(engine, "SELECT * FROM evaluation_class_stats WHERE 1 = 0")
    return _read(
        engine,
        "SELECT evaluation_id, target_class, n, n_defined, mean_focus, median_focus, mosaic_accuracy, "
        "median_focus_undefined_as_zero FROM evaluation_class_stats WHERE evaluation_id IN :ids "
        "ORDER BY evaluation_id, target_class",
        {"ids": [int(i) for i in evaluation_ids]}, expanding=("ids",),
    )


def evaluation_results(engine: Engine, evaluation_id: int) -> pd.DataFrame:
    """The per-mosaic rows of one evaluation with the mosaic's position, target class and mask.

    ``pos_*``/``neg_*`` are the 2x2 quadrant sums (NULL on other grids: :func:`evaluation_tile_sums`).
    """
    return _read(
        engine,
        "SELECT r.mosaic_id, mo.position, mo.target_class, mo.target_mask, r.predicted_class, r.focus, "
        "r.pos_tl, r.pos_tr, r.pos_bl, r.pos_br, r.neg_tl, r.neg_tr, r.neg_bl, r.neg_br "
        "FROM mosaic_result r JOIN mosaic mo ON mo.id = r.mosaic_id "
        "WHERE r.evaluation_id = :evaluation_id ORDER BY mo.position",
        {"evaluation_id": int(evaluation_id)},
    )


def evaluation_tile_sums(engine: Engine, evaluation_id: int) -> pd.DataFrame:
    """The per-tile relevance sums of one evaluation, any grid: one row per mosaic and tile.

    Columns ``mosaic_id, position`` (row-major tile, 2x2: TL, TR, BL, BR = 0..3), ``is_target`` (1 for a
    target tile), ``positive`` (>= 0), ``negative`` (<= 0); ordered by the mosaic's position in its set, then
    the tile's. Read from the view ``mosaic_result_tiles``.
    """
    return _read(
        engine,
        "SELECT t.mosaic_id, t.position, ((mo.target_mask >> t.position) & 1) AS is_target, t.positive, t.negative "
        "FROM mosaic_result_tiles t JOIN mosaic mo ON mo.id = t.mosaic_id "
        "WHERE t.evaluation_id = :evaluation_id ORDER BY mo.position, t.position",
        {"evaluation_id": int(evaluation_id)},
    )


def compare_methods(engine: Engine, mosaic_set_id: int, randomization: str = "none") -> pd.DataFrame:
    """Methods and architectures side by side on one mosaic set (audit and non-audit evaluations).

    One row per evaluation with that randomization kind, ordered by architecture, checkpoint and
    then median Focus (best first).
    """
    return _read(
        engine,
        f"SELECT {_SUMMARY_COLUMNS} {_SUMMARY_FROM} "
        "WHERE s.mosaic_set_id = :mosaic_set_id AND s.randomization = :randomization "
        "ORDER BY c.architecture, s.checkpoint_id, s.median_focus DESC, m.name, s.evaluation_id",
        {"mosaic_set_id": int(mosaic_set_id), "randomization": randomization},
    )


def training_curve(engine: Engine, training_run_id: int, method: str | None = None) -> pd.DataFrame:
    """Loss, accuracy, mean per-class accuracy and Focus of every epoch of a training run, one row per epoch and method.

    The rows of ``training_epoch_focus`` from epoch 0 (the model before its first optimisation step) on, ordered
    by epoch and method: ``method_name``, ``evaluation_id``, ``focus_n``, ``focus_n_defined``, ``focus_median``,
    ``focus_mean``, ``focus_q1``, ``focus_q3`` per method; an epoch recorded without evaluations has one row
    with no method. ``method`` keeps only that method's rows.
    """
    sql = "SELECT * FROM training_epoch_focus WHERE training_run_id = :run"
    params: dict[str, Any] = {"run": int(training_run_id)}
    if method is not None:
        sql += " AND method_name = :method"
        params["method"] = method
    return _read(engine, sql + " ORDER BY epoch, method_name, evaluation_id", params)


def checkpoint_history(engine: Engine, checkpoint_id: int, method: str | None = None) -> pd.DataFrame:
    """A checkpoint's Focus across audits, oldest first, with the change since the previous audit."""
    sql = "SELECT * FROM audit_history WHERE checkpoint_id = :checkpoint_id"
    params: dict[str, Any] = {"checkpoint_id": int(checkpoint_id)}
    if method is not None:
        sql += " AND method_name = :method"
        params["method"] = method
    sql += " ORDER BY method_name, mosaic_set_id, audit_started_at, audit_run_id"
    return _read(engine, sql, params, timestamps=("audit_started_at",))


def paired_focus(engine: Engine, evaluation_a: int, evaluation_b: int) -> pd.DataFrame:
    """Focus of two evaluations on the same mosaics (``mosaic_id``, ``focus_a``, ``focus_b``), both defined."""
    return _read(
        engine,
        "SELECT a.mosaic_id, a.focus AS focus_a, b.focus AS focus_b "
        "FROM mosaic_result a JOIN mosaic_result b ON b.mosaic_id = a.mosaic_id "
        "WHERE a.evaluation_id = :a AND b.evaluation_id = :b "
        "AND a.focus IS NOT NULL AND b.focus IS NOT NULL ORDER BY a.mosaic_id",
        {"a": int(evaluation_a), "b": int(evaluation_b)},
    )


def focus_regressions(engine: Engine, threshold: float = 0.05, audit_run_id: int | None = None) -> pd.DataFrame:
    """Audits whose median Focus fell by more than ``threshold`` since the previous audit.

    The rows of ``audit_history`` (each evaluation of an audit next to the same checkpoint x
    method x mosaic set in the previous audit) with ``median_change < -threshold``, oldest first.
    :func:`flows.results.analysis.focus_regressions` adds the paired test on the mosaics both scored.

    Examples
    --------
    >>> focus_regressions(engine, threshold=0.1)[["checkpoint_id", "method_name", "median_change"]]
    ... # doctest: +SKIP
    """
    if not threshold >= 0:
        raise StoreError(f"Expected a non-negative threshold but got {threshold}.")
    sql = (
        "SELECT * FROM audit_history WHERE previous_evaluation_id IS NOT NULL "
        "AND median_change < :negative_threshold"
    )
    params: dict[str, Any] = {"negative_threshold": -float(threshold)}
    if audit_run_id is not None:
        sql += " AND audit_run_id = :audit_run_id"
        params["audit_run_id"] = int(audit_run_id)
    sql += " ORDER BY audit_started_at, audit_run_id, checkpoint_id, method_name"
    return _read(engine, sql, params, timestamps=("audit_started_at",))


def checkpoints_to_audit(engine: Engine) -> pd.DataFrame:
    """The checkpoints marked for auditing (``audit`` flag), oldest first.

    ``lineage_id`` is set for a checkpoint of a lineage: the audit follows a lineage through its newest
    checkpoint (:func:`db.lineages_to_audit`), not through this flag.
    """
    frame = _read(
        engine,
        "SELECT id AS checkpoint_id, sha256, architecture, num_classes, in_channels, path, label, "
        "training_run_id, epoch, lineage_id FROM model_checkpoint WHERE audit = :flag ORDER BY id",
        {"flag": True},
    )
    return frame


def randomization_medians(engine: Engine, checkpoint_id: int, mosaic_set_id: int,
                          randomization: str = "full") -> pd.DataFrame:
    """Median Focus of every finished randomized evaluation of a checkpoint on a mosaic set, one row per seed.

    Columns: ``evaluation_id``, ``method_id``, ``method``, ``randomization``, ``stage``, ``layer``, ``seed``,
    ``n``, ``n_defined``, ``median_focus``, ``mean_focus``; ordered by method, stage, seed. Audit
    evaluations are left out. :func:`flows.results.analysis.random_seed_spread` summarises them over seeds.
    """
    return _read(
        engine,
        "SELECT s.evaluation_id, s.method_id, m.name AS method, s.randomization, s.stage, s.layer, s.seed, "
        "s.n, s.n_defined, s.median_focus, s.mean_focus FROM evaluation_summary s "
        "JOIN xai_method m ON m.id = s.method_id "
        "WHERE s.checkpoint_id = :checkpoint_id AND s.mosaic_set_id = :mosaic_set_id "
        "AND s.randomization = :randomization AND s.status = 'finished' AND s.audit_run_id IS NULL "
        "ORDER BY m.name, s.method_id, s.stage, s.layer, s.seed, s.evaluation_id",
        {"checkpoint_id": int(checkpoint_id), "mosaic_set_id": int(mosaic_set_id), "randomization": randomization},
    )


def latest_training_run(engine: Engine, run: int | str | None = None) -> int | None:
    """The id of a training run: ``run`` as an id or a name (the latest of that name), else the latest; or ``None``."""
    sql, params = "SELECT id FROM training_run", {}
    if run is not None and str(run).isdigit():
        sql, params = sql + " WHERE id = :id", {"id": int(run)}
    elif run is not None:
        sql, params = sql + " WHERE name = :name", {"name": str(run)}
    frame = _read(engine, sql + " ORDER BY id DESC LIMIT 1", params)
    return int(frame["id"].iloc[0]) if len(frame) else None


def finished_audit_runs(engine: Engine) -> int:
    """How many audit runs finished (so an empty regressions table can say that audits found none)."""
    frame = _read(engine, "SELECT COUNT(*) AS n FROM audit_run WHERE status = :status", {"status": "finished"})
    return int(frame["n"].iloc[0])


def checkpoint_origin(engine: Engine, checkpoint_id: int) -> dict[str, Any] | None:
    """The training run (id, name) and epoch recorded with a checkpoint, or ``None`` when none is.

    A checkpoint is its weights (sha256): when a second training run produces byte-identical weights, the
    record keeps the first run's; comparing this with the run at hand tells the two apart. Every run that
    produced the weights is in :func:`checkpoint_origins`.
    """
    frame = _read(
        engine,
        "SELECT c.training_run_id, t.name AS training_run_name, c.epoch FROM model_checkpoint c "
        "JOIN training_run t ON t.id = c.training_run_id WHERE c.id = :id",
        {"id": int(checkpoint_id)},
    )
    if not len(frame):
        return None
    row = frame.iloc[0]
    return {"training_run_id": int(row["training_run_id"]), "training_run_name": row["training_run_name"],
            "epoch": None if pd.isna(row["epoch"]) else int(row["epoch"])}


def checkpoint_origins(engine: Engine, checkpoint_ids: list[int] | None = None) -> pd.DataFrame:
    """Every (checkpoint, training run, epoch) that produced a checkpoint's weights, from ``checkpoint_origin``.

    Columns ``checkpoint_id, training_run_id, training_run_name, epoch``, ordered by checkpoint, run and epoch;
    a checkpoint that two training runs produced byte for byte has two rows. ``None`` reads every checkpoint;
    a checkpoint no training run produced (registered by hand) has no row.

    Examples
    --------
    >>> checkpoint_origins(engine, [9])[["training_run_name", "epoch"]]  # doctest: +SKIP
      training_run_name  epoch
    0       demo-digits      8
    1            digits      8
    """
    sql = ("SELECT o.checkpoint_id, o.training_run_id, t.name AS training_run_name, o.epoch FROM checkpoint_origin o "
           "JOIN training_run t ON t.id = o.training_run_id")
    params: dict[str, Any] = {}
    expanding: tuple[str, ...] = ()
    if checkpoint_ids is not None:
        if not checkpoint_ids:
            sql += " WHERE 1 = 0"
        else:
            sql += " WHERE o.checkpoint_id IN :ids"
            params, expanding = {"ids": sorted({int(i) for i in checkpoint_ids})}, ("ids",)
    return _read(engine, sql + " ORDER BY o.checkpoint_id, o.training_run_id, o.epoch", params, expanding=expanding)
