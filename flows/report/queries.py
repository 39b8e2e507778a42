"""Reading the store: the selected finished evaluations with their per-mosaic scores, and training runs.

:func:`load_evaluations` reads each evaluation with what it measured (checkpoint, method,
mosaic set, dataset), its per-mosaic results and their statistics (:func:`focus_core.stats.summarize`
and the bootstrap CI of the median). Id lists are sent in chunks of :data:`_ID_CHUNK` so a large
selection stays within the database's parameter limits.

Examples
--------
>>> evals, notes = load_evaluations(engine, [1, 2])  # doctest: +SKIP
>>> evals[0].summary["median"]  # doctest: +SKIP
0.91
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine

from db.models import (
    Dataset,
    Evaluation,
    ModelCheckpoint,
    Mosaic,
    MosaicResult,
    MosaicSet,
    TrainingEpoch,
    TrainingRun,
    XaiMethod,
)
from focus_core import stats
from focus_core.errors import FocusError

__all__ = ["CONFIDENCE", "BOOTSTRAP_RESAMPLES", "EvaluationData", "load_evaluations", "training_runs"]

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
_ID_CHUNK = 500  # evaluation ids per IN (...) list


@dataclass
class EvaluationData:
    """One finished evaluation: what it measured (ids, names) and its per-mosaic results."""

    evaluation_id: int
    status: str
    randomization: str
    stage: int | None
    layer: str | None
    audit_run_id: int | None
    finished_at: Any
    metadata: dict[str, Any] | None
    checkpoint_id: int
    architecture: str
    checkpoint_label: str | None
    sha256: str
    weights_path: str | None
    num_classes: int
    in_channels: int | None
    training_run_id: int | None
    epoch: int | None
    method: str
    method_params: dict[str, Any]
    mosaic_set_id: int
    layout: str
    split: str
    set_seed: int
    per_class: int
    dataset_id: int
    dataset_name: str
    dataset_fingerprint: str
    dataset_tile_size: int | None
    mosaic_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    focus: np.ndarray = field(default_factory=lambda: np.zeros(0))  # NaN where undefined
    predicted: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    targets: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    summary: dict[str, Any] = field(default_factory=dict)
    ci: tuple[float, float] = (math.nan, math.nan)

    @property
    def n(self) -> int:
        return int(self.focus.size)

    @property
    def mosaic_accuracy(self) -> float:
        return float((self.predicted == self.targets).mean()) if self.n else math.nan

    @property
    def randomization_label(self) -> str:
        if self.randomization == "none":
            return "none"
        if self.randomization == "cascading":
            return f"cascading {self.stage}" + (f" ({self.layer})" if self.layer else "")
        if self.randomization == "independent":
            return f"independent ({self.layer})"
        return self.randomization


def _chunks(ids: Sequence[int], size: int = _ID_CHUNK) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start:start + size])


def _evaluation_rows(engine: Engine, ids: Sequence[int] | None) -> list[dict[str, Any]]:
    e, c, m, s, d = Evaluation, ModelCheckpoint, XaiMethod, MosaicSet, Dataset
    base = (
        select(
            e.id.label("evaluation_id"), e.status, e.randomization, e.stage, e.layer, e.audit_run_id,
            e.finished_at, e.metadata_.label("metadata"),
            c.id.label("checkpoint_id"), c.architecture, c.label.label("checkpoint_label"), c.sha256,
            c.path.label("weights_path"), c.num_classes, c.in_channels, c.training_run_id, c.epoch,
            m.name.label("method"), m.params.label("method_params"),
            s.id.label("mosaic_set_id"), s.layout, s.split, s.seed.label("set_seed"), s.per_class,
            d.id.label("dataset_id"), d.name.label("dataset_name"), d.fingerprint.label("dataset_fingerprint"),
            d.tile_size.label("dataset_tile_size"),
        )
        .join(c, c.id == e.checkpoint_id)
        .join(m, m.id == e.method_id)
        .join(s, s.id == e.mosaic_set_id)
        .join(d, d.id == s.dataset_id)
        .order_by(e.id)
    )
    with engine.connect() as connection:
        if ids is None:
            return [dict(r._mapping) for r in connection.execute(base)]
        rows = []
        for chunk in _chunks(sorted(set(ids))):
            rows += [dict(r._mapping) for r in connection.execute(base.where(e.id.in_(chunk)))]
        return rows


def _results(engine: Engine, ids: Sequence[int]) -> pd.DataFrame:
    r, mo = MosaicResult, Mosaic
    frames = []
    with engine.connect() as connection:
        for chunk in _chunks(list(ids)):
            stmt = (
                select(r.evaluation_id, r.mosaic_id, mo.position, r.focus, r.predicted_class, mo.target_class)
                .join(mo, mo.id == r.mosaic_id)
                .where(r.evaluation_id.in_(chunk))
                .order_by(r.evaluation_id, mo.position)
            )
            frames.append(pd.DataFrame(connection.execute(stmt).all(),
                                       columns=["evaluation_id", "mosaic_id", "position", "focus",
                                                "predicted_class", "target_class"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_evaluations(engine: Engine, evaluations: Sequence[int] | None = None,
                     url_text: str = "the store") -> tuple[list[EvaluationData], list[str]]:
    """The finished evaluations of the selection with their per-mosaic scores and statistics.

    Returns
    -------
    tuple
        ``(evaluations, notes)``: the notes name selected evaluations left out (not finished).

    Raises
    ------
    FocusError
        When a selected id is not in the store, or nothing finished is left.
    """
    rows = _evaluation_rows(engine, evaluations)
    notes: list[str] = []
    if evaluations is not None:
        unknown = sorted(set(int(i) for i in evaluations) - {int(r["evaluation_id"]) for r in rows})
        if unknown:
            raise FocusError(
                f"Evaluation {', '.join(map(str, unknown))} is not in {url_text}: "
                "list the recorded evaluations with `focus results` and pass their ids."
            )
    unfinished = [r for r in rows if r["status"] != "finished"]
    if unfinished and evaluations is not None:
        notes.append(
            "Left out, not finished: " + ", ".join(f"evaluation {r['evaluation_id']} ({r['status']})" for r in unfinished)
            + ". Run the same request again to finish them."
        )
    rows = [r for r in rows if r["status"] == "finished"]
    if not rows:
        if evaluations is None:
            raise FocusError(f"No finished evaluation in {url_text}: run `focus evaluate` or `focus demo` first.")
        raise FocusError(
            f"None of the selected evaluations is finished in {url_text}: finish them with `focus evaluate` "
            "or select finished ones."
        )
    data = [EvaluationData(**{k: v for k, v in r.items()}) for r in rows]
    results = _results(engine, [d.evaluation_id for d in data])
    grouped = dict(tuple(results.groupby("evaluation_id"))) if len(results) else {}
    for item in data:
        frame = grouped.get(item.evaluation_id)
        if frame is not None:
            item.mosaic_ids = frame["mosaic_id"].to_numpy(np.int64)
            item.positions = frame["position"].to_numpy(np.int64)
            item.focus = pd.to_numeric(frame["focus"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
            item.predicted = frame["predicted_class"].to_numpy(np.int64)
            item.targets = frame["target_class"].to_numpy(np.int64)
        if item.n:
            item.summary = stats.summarize(item.focus)
            item.ci = stats.bootstrap_median_ci(item.focus, CONFIDENCE, BOOTSTRAP_RESAMPLES, seed=0)
        else:
            item.summary = {"n": 0, "n_defined": 0, "share_undefined": math.nan, "median": math.nan,
                            "mean": math.nan, "q1": math.nan, "q3": math.nan}
    return data, notes


def training_runs(engine: Engine, run_ids: Iterable[int] | None) -> dict[int, dict[str, Any]]:
    """``{run_id: {"run": row, "epochs": [row, ...]}}`` for the given runs (all runs with ``None``)."""
    t, te = TrainingRun, TrainingEpoch
    stmt = select(t.id, t.name, t.architecture, t.config, t.status, t.started_at).order_by(t.id)
    if run_ids is not None:
        ids = sorted(set(run_ids))
        if not ids:
            return {}
        stmt = stmt.where(t.id.in_(ids))
    runs: dict[int, dict[str, Any]] = {}
    with engine.connect() as connection:
        for r in connection.execute(stmt):
            runs[int(r.id)] = {"run": dict(r._mapping), "epochs": []}
        if runs:
            epochs = connection.execute(
                select(te).where(te.training_run_id.in_(list(runs))).order_by(te.training_run_id, te.epoch)
            ).all()
            for r in epochs:
                runs[int(r.training_run_id)]["epochs"].append(dict(r._mapping))
    return {k: v for k, v in runs.items() if v["epochs"]}
