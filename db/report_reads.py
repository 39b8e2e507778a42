"""What a report reads: evaluations with what they measured, their per-mosaic scores, their model reliance,
audit runs and training runs.

Plain Python and pandas values at the boundary; :mod:`flows.report` computes the statistics
over them. Id lists go to the database in chunks of at most :data:`ID_CHUNK` ids per
``IN (...)`` list, so a large selection stays within the driver's bound-parameter limits
(SQLite allows 32766 in one statement, PostgreSQL's protocol 65535); the rows come back in the
order each function states, whatever the chunking.

Examples
--------
>>> rows = evaluation_records(engine, [1, 2])  # doctest: +SKIP
>>> rows[0]["method"], rows[0]["status"]  # doctest: +SKIP
('gradcam', 'finished')
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine

from db.errors import StoreError
from db.models import (
    AuditRun,
    Dataset,
    Evaluation,
    EvaluationReliance,
    ModelCheckpoint,
    Mosaic,
    MosaicReliance,
    MosaicResult,
    MosaicSet,
    ReliancePass,
    TrainingEpoch,
    TrainingRun,
    XaiMethod,
)

__all__ = ["ID_CHUNK", "MODEL_FOCUS_COLUMNS", "SCORE_COLUMNS", "audit_runs", "evaluation_records", "mosaic_model_focus",
           "mosaic_scores", "reliance_summaries", "training_runs"]

ID_CHUNK = 500  # ids per IN (...) list
SCORE_COLUMNS = ("evaluation_id", "mosaic_id", "position", "focus", "predicted_class", "target_class")
MODEL_FOCUS_COLUMNS = ("evaluation_id", "mosaic_id", "focus", "model_focus")


def _chunks(ids: Sequence[int], size: int) -> Iterator[list[int]]:
    if size < 1:
        raise StoreError(f"Expected a positive chunk size but got {size}.")
    for start in range(0, len(ids), size):
        yield [int(i) for i in ids[start:start + size]]


def evaluation_records(engine: Engine, evaluation_ids: Sequence[int] | None = None, *,
                       chunk: int = ID_CHUNK) -> list[dict[str, Any]]:
    """One dict per evaluation (every status) with its checkpoint, method, mosaic set and dataset, by id.

    Parameters
    ----------
    engine
        The store.
    evaluation_ids
        The evaluations to read (repeats are read once; ids not in the store are left out, so
        the caller can name them); ``None`` reads every evaluation.
    chunk
        Ids per ``IN (...)`` list.

    Returns
    -------
    list of dict
        Ordered by evaluation id, with the keys ``evaluation_id, status, randomization, stage,
        layer, seed, audit_run_id, finished_at, metadata`` (the evaluation), ``checkpoint_id,
        architecture, checkpoint_label, sha256, weights_path, num_classes, in_channels,
        training_run_id, epoch`` (its checkpoint), ``method, method_params``, ``mosaic_set_id,
        layout, split, set_seed, per_class, grid, target_tiles, chance_level`` (N of the N x N mosaics, the
        number k of target tiles and k / N², what a random explanation scores), ``tile_size, resize`` (how its images
        became tiles; ``resize`` ``None`` when not resized) and ``dataset_id, dataset_name,
        dataset_fingerprint, dataset_tile_size``. JSON columns come back as Python values and
        ``finished_at`` as a UTC ``datetime`` (or ``None``).
    """
    e, c, m, s, d = Evaluation, ModelCheckpoint, XaiMethod, MosaicSet, Dataset
    base = (
        select(
            e.id.label("evaluation_id"), e.status, e.randomization, e.stage, e.layer, e.seed, e.audit_run_id,
            e.finished_at, e.metadata_.label("metadata"),
            c.id.label("checkpoint_id"), c.architecture, c.label.label("checkpoint_label"), c.sha256,
            c.path.label("weights_path"), c.num_classes, c.in_channels, c.training_run_id, c.epoch,
            m.name.label("method"), m.params.label("method_params"),
            s.id.label("mosaic_set_id"), s.layout, s.split, s.seed.label("set_seed"), s.per_class,
            s.grid, s.targets.label("target_tiles"), s.chance_level.label("chance_level"), s.tile_size, s.resize,
            d.id.label("dataset_id"), d.name.label("dataset_name"), d.fingerprint.label("dataset_fingerprint"),
            d.tile_size.label("dataset_tile_size"),
        )
        .join(c, c.id == e.checkpoint_id)
        .join(m, m.id == e.method_id)
        .join(s, s.id == e.mosaic_set_id)
        .join(d, d.id == s.dataset_id)
        .order_by(e.id)
    )  # fmt: skip
    with engine.connect() as connection:
        if evaluation_ids is None:
            return [dict(r._mapping) for r in connection.execute(base)]
        rows: list[dict[str, Any]] = []
        for ids in _chunks(sorted({int(i) for i in evaluation_ids}), chunk):
            rows += [dict(r._mapping) for r in connection.execute(base.where(e.id.in_(ids)))]
        return rows


def mosaic_scores(engine: Engine, evaluation_ids: Sequence[int], *, chunk: int = ID_CHUNK) -> pd.DataFrame:
    """The per-mosaic Focus and prediction of the given evaluations, with each mosaic's position and target.

    Parameters
    ----------
    engine
        The store.
    evaluation_ids
        The evaluations to read (repeats are read once).
    chunk
        Ids per ``IN (...)`` list.

    Returns
    -------
    pandas.DataFrame
        The columns :data:`SCORE_COLUMNS`, one row per stored result, ordered by evaluation id
        and mosaic position; ``focus`` is ``None`` (or NaN) where it is undefined (no positive
        relevance).
    """
    r, mo = MosaicResult, Mosaic
    frames = []
    with engine.connect() as connection:
        for ids in _chunks(sorted({int(i) for i in evaluation_ids}), chunk):
            stmt = (
                select(r.evaluation_id, r.mosaic_id, mo.position, r.focus, r.predicted_class, mo.target_class)
                .join(mo, mo.id == r.mosaic_id)
                .where(r.evaluation_id.in_(ids))
                .order_by(r.evaluation_id, mo.position)
            )
            frames.append(pd.DataFrame(connection.execute(stmt).all(), columns=list(SCORE_COLUMNS)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(SCORE_COLUMNS))


def training_runs(engine: Engine, run_ids: Iterable[int] | None = None, *,
                  chunk: int = ID_CHUNK) -> dict[int, dict[str, Any]]:
    """Training runs with their recorded epochs: ``{run_id: {"run": {...}, "epochs": [{...}, ...]}}``.

    Parameters
    ----------
    engine
        The store.
    run_ids
        The runs to read (ids not in the store are left out); ``None`` reads every run.
    chunk
        Ids per ``IN (...)`` list.

    Returns
    -------
    dict
        By run id, ascending: ``"run"`` holds ``id, name, architecture, config, status,
        started_at``; ``"epochs"`` every column of ``training_epoch``, one dict per epoch in
        epoch order (empty for a run with no recorded epoch).
    """
    t, te = TrainingRun, TrainingEpoch
    stmt = select(t.id, t.name, t.architecture, t.config, t.status, t.started_at).order_by(t.id)
    runs: dict[int, dict[str, Any]] = {}
    with engine.connect() as connection:
        if run_ids is None:
            found = list(connection.execute(stmt))
        else:
            found = []
            for ids in _chunks(sorted({int(i) for i in run_ids}), chunk):
                found += list(connection.execute(stmt.where(t.id.in_(ids))))
        for r in found:
            runs[int(r.id)] = {"run": dict(r._mapping), "epochs": []}
        for ids in _chunks(list(runs), chunk):
            epochs = connection.execute(
                select(te).where(te.training_run_id.in_(ids)).order_by(te.training_run_id, te.epoch)
            ).all()
            for r in epochs:
                runs[int(r.training_run_id)]["epochs"].append(dict(r._mapping))
    return runs


def reliance_summaries(engine: Engine, evaluation_ids: Sequence[int], *, chunk: int = ID_CHUNK) -> pd.DataFrame:
    """The stored reliance summaries of the given evaluations (``evaluation_reliance``) with their pass's baseline.

    Returns
    -------
    pandas.DataFrame
        Every column of ``evaluation_reliance`` but ``computed_at``, then ``baseline``; one row per evaluation
        that has a summary (the others have none), ordered by evaluation id.
    """
    er, p = EvaluationReliance, ReliancePass
    columns = [c for c in er.__table__.columns if c.name != "computed_at"]
    stmt = select(*columns, p.baseline).join(p, p.id == er.pass_id).order_by(er.evaluation_id)
    names = [c.name for c in columns] + ["baseline"]
    frames = []
    with engine.connect() as connection:
        for ids in _chunks(sorted({int(i) for i in evaluation_ids}), chunk):
            frames.append(pd.DataFrame(connection.execute(stmt.where(er.evaluation_id.in_(ids))).all(),
                                       columns=names))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=names)


def mosaic_model_focus(engine: Engine, evaluation_ids: Sequence[int], *, chunk: int = ID_CHUNK) -> pd.DataFrame:
    """Focus and model Focus per mosaic of the given evaluations, model Focus read through each evaluation's own
    reliance pass (``evaluation_reliance.pass_id``).

    Returns
    -------
    pandas.DataFrame
        The columns :data:`MODEL_FOCUS_COLUMNS` (``focus`` and ``model_focus`` floats, NaN where undefined), one
        row per mosaic the evaluation scored and its pass measured, ordered by evaluation id and mosaic id; no rows
        for an evaluation without a reliance summary.
    """
    er, mr, r = EvaluationReliance, MosaicReliance, MosaicResult
    stmt = (
        select(er.evaluation_id, r.mosaic_id, r.focus, mr.model_focus)
        .join(r, r.evaluation_id == er.evaluation_id)
        .join(mr, (mr.pass_id == er.pass_id) & (mr.mosaic_id == r.mosaic_id))
        .order_by(er.evaluation_id, r.mosaic_id)
    )
    frames = []
    with engine.connect() as connection:
        for ids in _chunks(sorted({int(i) for i in evaluation_ids}), chunk):
            frames.append(pd.DataFrame(connection.execute(stmt.where(er.evaluation_id.in_(ids))).all(),
                                       columns=list(MODEL_FOCUS_COLUMNS)))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(MODEL_FOCUS_COLUMNS))
    for column in ("focus", "model_focus"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def audit_runs(engine: Engine, audit_run_ids: Sequence[int], *, chunk: int = ID_CHUNK) -> list[dict[str, Any]]:
    """The given audit runs, by id: ``audit_run_id, name, status, threshold, started_at, metadata`` (the JSON the
    audit stored: its ``regressions``, each with ``model_focus_change`` and ``cause``); unknown ids are left out."""
    a = AuditRun
    stmt = select(a.id.label("audit_run_id"), a.name, a.status, a.threshold, a.started_at,
                  a.metadata_.label("metadata")).order_by(a.id)
    rows: list[dict[str, Any]] = []
    with engine.connect() as connection:
        for ids in _chunks(sorted({int(i) for i in audit_run_ids}), chunk):
            rows += [dict(r._mapping) for r in connection.execute(stmt.where(a.id.in_(ids)))]
    return rows
