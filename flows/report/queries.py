"""Reading the store: the selected finished evaluations with their per-mosaic scores, and training runs.

:func:`load_evaluations` reads each evaluation with what it measured (checkpoint, method,
mosaic set, dataset) and its per-mosaic results through :mod:`db.report_reads` (which sends id
lists in chunks, so a large selection stays within the database's parameter limits), and adds
their statistics (:func:`focus_core.stats.summarize`, the bootstrap CI of the median over mosaics and
the cluster bootstrap CI over target classes and mosaics).

Examples
--------
>>> evals, notes = load_evaluations(engine, [1, 2])  # doctest: +SKIP
>>> evals[0].summary["median"]  # doctest: +SKIP
0.91
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

import db
from db import Engine
from flows.results.analysis import change_cause
from focus_core import stats
from focus_core.cause import ChangeCause
from focus_core.errors import FocusError

__all__ = ["CONFIDENCE", "BOOTSTRAP_RESAMPLES", "REGRESSION_THRESHOLD", "EvaluationData", "audit_causes",
           "audit_outcome", "load_evaluations", "stored_regressions", "training_runs"]

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
REGRESSION_THRESHOLD = 0.05  # the default of `focus results regressions`


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
    seed: int | None = None  # the randomization's seed (None for an unrandomized model)
    grid: int = 2  # N of the mosaic set's N x N mosaics
    target_tiles: int = 2  # k target tiles per mosaic
    chance_level: float = 0.5  # k / N² (from the store): what a random explanation scores
    tile_size: int | None = None  # the mosaic set's tiles (None: recorded without; the dataset's then)
    resize: int | None = None  # the shorter side its images were resized to before the crop (None: not resized)
    mosaic_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    focus: np.ndarray = field(default_factory=lambda: np.zeros(0))  # NaN where undefined
    predicted: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    targets: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    summary: dict[str, Any] = field(default_factory=dict)
    ci: tuple[float, float] = (math.nan, math.nan)
    cluster_ci: tuple[float, float] = (math.nan, math.nan)  # resampling target classes, then mosaics
    # every (training run id, run name, epoch) that produced the weights (two when two runs gave the same bytes)
    origins: list[tuple[int, str, int]] = field(default_factory=list)

    @property
    def runs_and_epochs(self) -> list[tuple[int, int]]:
        """``(training run id, epoch)`` of every run that produced the weights (the recorded one without origins)."""
        if self.origins:
            return [(run, epoch) for run, _name, epoch in self.origins]
        if self.training_run_id is None or self.epoch is None:
            return []
        return [(self.training_run_id, self.epoch)]

    def epoch_in(self, training_run_id: int) -> int | None:
        """The epoch at which ``training_run_id`` produced these weights, or ``None`` when it did not."""
        return next((epoch for run, epoch in self.runs_and_epochs if run == training_run_id), None)

    @property
    def grid_label(self) -> str:
        """``"2x2, k=2"``: the grid and the number of target tiles."""
        return f"{self.grid}x{self.grid}, k={self.target_tiles}"

    @property
    def sizes_label(self) -> str:
        """``"64/73 px"`` (tile size / resize), ``"32 px"`` without a resize, empty when neither is recorded."""
        tile = self.tile_size or self.dataset_tile_size
        if tile is None:
            return ""
        return f"{tile}/{self.resize} px" if self.resize else f"{tile} px"

    @property
    def set_label(self) -> str:
        """A short name of the mosaic set: ``"#3 shapes 64/73 px"``, then its split, layout and grid where they are
        not the usual test split, random positions and 2x2 with 2 targets (:attr:`set_description` says all)."""
        parts = [f"#{self.mosaic_set_id}", self.dataset_name, self.sizes_label]
        parts += [self.split] if self.split != "test" else []
        parts += [self.layout] if self.layout != "random" else []
        parts += [self.grid_label] if (self.grid, self.target_tiles) != (2, 2) else []
        return " ".join(p for p in parts if p)

    @property
    def set_description(self) -> str:
        """Everything that identifies the mosaic set, in words (the label's tooltip)."""
        tile = self.tile_size or self.dataset_tile_size
        resize = (f"images resized to {self.resize} px (shorter side), centre {tile} px crop" if self.resize
                  else f"{self.sizes_label or 'tiles'} as recorded")
        return (f"mosaic set #{self.mosaic_set_id}: dataset {self.dataset_name} ({resize}), {self.split} split, "
                f"{self.per_class} mosaics per class, seed {self.set_seed}, layout {self.layout}, {self.grid}x"
                f"{self.grid} tiles with {self.target_tiles} of the target class (chance level "
                f"{self.chance_level:.3f})")

    @property
    def n(self) -> int:
        return int(self.focus.size)

    @property
    def mosaic_accuracy(self) -> float:
        return float((self.predicted == self.targets).mean()) if self.n else math.nan

    @property
    def randomization_label(self) -> str:
        """``"none"``, ``"full, seed 3"``, ``"cascading 1 (fc), seed 0"``, ``"independent (fc), seed 2"``."""
        if self.randomization == "none":
            return "none"
        seed = "" if self.seed is None else f", seed {self.seed}"
        if self.randomization == "cascading":
            return f"cascading {self.stage}" + (f" ({self.layer})" if self.layer else "") + seed
        if self.randomization == "independent":
            return f"independent ({self.layer})" + seed
        return self.randomization + seed


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
    rows = db.report_reads.evaluation_records(engine, evaluations)
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
    origins = db.checkpoint_origins(engine, sorted({d.checkpoint_id for d in data}))
    by_checkpoint: dict[int, list[tuple[int, str, int]]] = {}
    for o in origins.to_dict("records"):
        by_checkpoint.setdefault(int(o["checkpoint_id"]), []).append(
            (int(o["training_run_id"]), str(o["training_run_name"]), int(o["epoch"])))
    for item in data:
        item.origins = by_checkpoint.get(item.checkpoint_id, [])
    results = db.report_reads.mosaic_scores(engine, [d.evaluation_id for d in data])
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
            item.cluster_ci = stats.cluster_bootstrap_median_ci(item.focus, item.targets, CONFIDENCE,
                                                                BOOTSTRAP_RESAMPLES, seed=0)
        else:
            item.summary = {"n": 0, "n_defined": 0, "share_undefined": math.nan, "median": math.nan,
                            "mean": math.nan, "q1": math.nan, "q3": math.nan}
    return data, notes


def training_runs(engine: Engine, run_ids: Iterable[int] | None) -> dict[int, dict[str, Any]]:
    """``{run_id: {"run": row, "epochs": [row, ...]}}`` for the given runs (all runs with ``None``) with epochs."""
    runs = db.report_reads.training_runs(engine, run_ids)
    return {k: v for k, v in runs.items() if v["epochs"]}


def audit_outcome(engine: Engine, threshold: float = REGRESSION_THRESHOLD) -> str | None:
    """What the finished audits found, in a sentence ("2 audit run(s), no regression found ..."); else ``None``."""
    audits = db.finished_audit_runs(engine)
    if not audits:
        return None
    found = len(db.focus_regressions(engine, threshold=threshold))
    if not found:
        return (f"{audits} audit run(s), no regression found: no median Focus fell by more than {threshold} "
                "since the previous audit of the same checkpoint, method and mosaic set.")
    return (f"{audits} audit run(s), {found} regression(s) found (median Focus fell by more than {threshold}): "
            "`focus results regressions` lists them with the paired test.")


def audit_causes(engine: Engine, audited: Sequence[EvaluationData]) -> list[tuple[EvaluationData, EvaluationData,
                                                                               ChangeCause]]:
    """Each audit evaluation against the previous audit of its cell in the selection, with what changed.

    A cell is one checkpoint x method (and its parameters) x mosaic set x randomization; the previous audit is the
    cell's evaluation of the highest lower audit run id among ``audited``. ``(later, earlier, cause)`` triples,
    oldest audit first; the cause is recomputed from the stored per-mosaic Focus and model Focus
    (:func:`flows.results.analysis.change_cause`: ``n`` 0 and ``unclear`` where either ran without the reliance
    pass), the same call the audit makes for its own comparison with the previous audit.
    """
    cells: dict[tuple, list[EvaluationData]] = {}
    for e in audited:
        key = (e.checkpoint_id, e.method, json.dumps(e.method_params, sort_keys=True, default=str), e.mosaic_set_id,
               e.randomization, e.stage, e.layer, e.seed)
        cells.setdefault(key, []).append(e)
    found = []
    for members in cells.values():
        ordered = sorted(members, key=lambda e: (e.audit_run_id or 0, e.evaluation_id))
        for earlier, later in zip(ordered, ordered[1:]):
            found.append((later, earlier, change_cause(engine, later.evaluation_id, earlier.evaluation_id)))
    return sorted(found, key=lambda t: (t[0].audit_run_id or 0, t[0].checkpoint_id, t[0].evaluation_id))


def stored_regressions(engine: Engine, audit_run_ids: Iterable[int]) -> list[dict[str, Any]]:
    """The regressions the given audit runs stored in their metadata (``audit_run.metadata["regressions"]``, as the
    audit flow alerted them: each with ``model_focus_change`` and ``cause``), each with its ``audit_run_id``, oldest
    audit first. Audits recorded without them (or by another writer) contribute none."""
    found = []
    for run in db.report_reads.audit_runs(engine, sorted(set(audit_run_ids))):
        metadata = run["metadata"] if isinstance(run["metadata"], dict) else {}
        for item in metadata.get("regressions") or []:
            if isinstance(item, dict):
                found.append({"audit_run_id": int(run["audit_run_id"]), **item})
    return found
