"""Statistics over stored results: ``db`` returns the values, :mod:`focus_core.stats` computes.

The one place where a flow or a ``focus`` command combines a query with a statistic, so that the
audit, ``focus results regressions`` and the training flow apply the same rules as the report
(which calls :mod:`focus_core.stats` on the rows it loads): a paired Wilcoxon test of two
evaluations on the mosaics both scored, the audit regressions with that test, and the Pearson
correlation of Focus with a training metric. Nothing here writes to the store.

Examples
--------
>>> from flows.results import analysis
>>> analysis.paired_comparison(engine, 12, 7)["p_value"]  # doctest: +SKIP
0.0009765625
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

import db
from focus_core import stats
from focus_core.cause import ChangeCause, which_changed
from focus_core.errors import FocusError

__all__ = ["FOCUS_COLUMNS", "METRIC_COLUMNS", "REGRESSION_TEST_COLUMNS", "SEED_SPREAD_COLUMNS", "paired_comparison",
           "change_cause", "change_causes_by_class",
           "focus_regressions", "focus_accuracy_correlation", "focus_accuracy_correlations", "random_seed_spread",
           "seed_spread_of_stages", "seed_spreads", "FEW_EPOCHS", "correlation_caveat"]

FOCUS_COLUMNS = ("focus_median", "focus_mean")
METRIC_COLUMNS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_mean_class_accuracy")
REGRESSION_TEST_COLUMNS = ("n_paired", "median_difference", "statistic", "p_value")
SEED_SPREAD_COLUMNS = ("method", "stage", "layer", "seeds", "n_seeds", "mean", "std", "min", "max", "about_chance")


def paired_comparison(engine: Any, evaluation_a: int, evaluation_b: int) -> dict[str, Any]:
    """:func:`focus_core.stats.paired_test` of ``a - b`` on the mosaics both evaluations scored (both defined).

    Parameters
    ----------
    engine
        The results store's engine (:func:`flows.worker.store.engine_for`).
    evaluation_a, evaluation_b
        Evaluation ids; the differences are ``a - b`` (e.g. this audit minus the previous one).

    Returns
    -------
    dict
        :func:`focus_core.stats.paired_test`'s result; ``n`` is 0 and the numbers NaN when the
        two evaluations share no mosaic with a defined Focus in both.
    """
    pairs = db.paired_focus(engine, evaluation_a, evaluation_b)
    return stats.paired_test(pairs["focus_a"].to_numpy(float), pairs["focus_b"].to_numpy(float))


def change_cause(engine: Any, evaluation_later: int, evaluation_earlier: int) -> ChangeCause:
    """:func:`focus_core.cause.which_changed` of two evaluations on the mosaics both scored: did the model's reliance
    or the explanation move from ``evaluation_earlier`` to ``evaluation_later``?

    Reads each mosaic's Focus and model Focus through each evaluation's own reliance pass; where either evaluation
    ran without the pass there are no pairs, and the answer is ``unclear`` with ``n`` 0.
    """
    return _which_changed(db.paired_model_focus(engine, evaluation_later, evaluation_earlier))


def change_causes_by_class(engine: Any, evaluation_later: int, evaluation_earlier: int) -> dict[int, ChangeCause]:
    """:func:`change_cause` on each target class's mosaics alone: ``{target class: ChangeCause}`` for the classes
    with at least one mosaic both evaluations and both reliance passes have (none where either ran without it)."""
    pairs = db.paired_model_focus(engine, evaluation_later, evaluation_earlier)
    return {int(label): _which_changed(group) for label, group in pairs.groupby("target_class", sort=True)}


def _which_changed(pairs: pd.DataFrame) -> ChangeCause:
    return which_changed(pairs["focus_b"].to_numpy(float), pairs["focus_a"].to_numpy(float),
                         pairs["model_focus_b"].to_numpy(float), pairs["model_focus_a"].to_numpy(float))


def focus_regressions(engine: Any, threshold: float = 0.05, audit_run_id: int | None = None) -> pd.DataFrame:
    """:func:`db.focus_regressions` with a paired Wilcoxon test per row, as ``focus results regressions`` shows it.

    Parameters
    ----------
    engine
        The results store's engine (:func:`flows.worker.store.engine_for`).
    threshold
        A row is a regression when median Focus fell by more than this since the previous audit.
    audit_run_id
        Only the regressions of this audit run (all audits with ``None``).

    Returns
    -------
    pandas.DataFrame
        The ``audit_history`` columns of :func:`db.focus_regressions`, then ``n_paired``,
        ``median_difference`` (current - previous, on the paired mosaics), ``statistic`` and
        ``p_value`` of :func:`paired_comparison`.

    Raises
    ------
    db.StoreError
        When ``threshold`` is negative.
    """
    frame = db.focus_regressions(engine, threshold=threshold, audit_run_id=audit_run_id)
    tests = []
    for row in frame.itertuples():
        result = paired_comparison(engine, int(row.evaluation_id), int(row.previous_evaluation_id))
        tests.append({"n_paired": result["n"], "median_difference": result["median_difference"],
                      "statistic": result["statistic"], "p_value": result["p_value"]})
    extra = pd.DataFrame(tests, columns=list(REGRESSION_TEST_COLUMNS), index=frame.index)
    return pd.concat([frame, extra], axis=1)


def focus_accuracy_correlation(
    engine: Any, training_run_id: int, focus: str = "focus_median", metric: str = "val_accuracy",
    method: str | None = None,
) -> dict[str, Any]:
    """:func:`focus_core.stats.pearson` of one method's Focus and a training metric over the epochs of a run.

    Epoch 0 (the untrained model) is one of the points, and often the one that makes r high: the
    correlation is also given without it.

    Parameters
    ----------
    engine
        The results store's engine (:func:`flows.worker.store.engine_for`).
    training_run_id
        The training run whose epochs :func:`db.training_curve` returns.
    focus
        ``"focus_median"`` or ``"focus_mean"``.
    metric
        One of ``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy``, ``val_mean_class_accuracy``.
    method
        The method's name; ``None``: the first the run measured (the lowest evaluation id), or the
        run's own recorded Focus for epochs recorded without evaluations.

    Returns
    -------
    dict
        ``method``, ``n`` (epochs where both are recorded), ``r`` and ``p_value``, and the same without epoch 0
        (``n_without_epoch_0``, ``r_without_epoch_0``, ``p_value_without_epoch_0``): NaN where
        :func:`focus_core.stats.pearson` has no correlation (a constant series) or refuses one (fewer than 3
        such epochs), as the report shows it.

    Raises
    ------
    db.StoreError
        When ``focus`` or ``metric`` names no column of the training curve.
    """
    if focus not in FOCUS_COLUMNS:
        raise db.StoreError(f"Expected focus to be one of {FOCUS_COLUMNS} but got {focus!r}.")
    if metric not in METRIC_COLUMNS:
        raise db.StoreError(f"Expected metric to be one of {METRIC_COLUMNS} but got {metric!r}.")
    curve = db.training_curve(engine, training_run_id)
    method, rows = _method_rows(curve, method)
    rows = rows[["epoch", focus, metric]].dropna()
    result: dict[str, Any] = {"method": method}
    for suffix, part in (("", rows), ("_without_epoch_0", rows[rows["epoch"] != 0])):
        try:
            r, p = stats.pearson(part[focus].to_numpy(float), part[metric].to_numpy(float))
        except FocusError:  # fewer than 3 epochs with both values: no correlation to report
            r, p = math.nan, math.nan
        result.update({f"n{suffix}": int(len(part)), f"r{suffix}": r, f"p_value{suffix}": p})
    return result


def _method_rows(curve: pd.DataFrame, method: str | None) -> tuple[str | None, pd.DataFrame]:
    """One method's rows of a long training curve (``None``: the first measured, else the run's recorded Focus)."""
    if method is None:
        measured = curve.dropna(subset=["method_name"])
        if measured.empty:
            return None, curve[curve["method_name"].isna()]
        method = str(measured.sort_values("evaluation_id")["method_name"].iloc[0])
    return method, curve[curve["method_name"] == method]


#: Below this many epochs, a Pearson r over one training run is a description of that run, not evidence.
FEW_EPOCHS = 10


def correlation_caveat(n: int) -> str:
    """What a Pearson r of Focus and accuracy over ``n`` consecutive epochs of one run can and cannot show.

    Examples
    --------
    >>> correlation_caveat(7).startswith("With 7 epochs")
    True
    """
    caveat = ("r describes how Focus and accuracy moved together during this one run; consecutive epochs are not "
              "independent (both follow training), so the p-value overstates the evidence, and r says nothing about "
              "other runs or models, nor whether Focus follows accuracy.")
    if n < FEW_EPOCHS:
        caveat = (f"With {n} epochs, one epoch can swing r (epoch 0 often does: compare r without it): read r as a "
                  "description, not as a test. " + caveat[0].upper() + caveat[1:])
    return caveat


def focus_accuracy_correlations(engine: Any, training_run_id: int, metric: str = "val_accuracy") -> pd.DataFrame:
    """:func:`focus_accuracy_correlation` of median Focus for every method the run measured, one row each."""
    curve = db.training_curve(engine, training_run_id)
    methods = list(dict.fromkeys(curve.dropna(subset=["method_name"]).sort_values("evaluation_id")["method_name"]))
    rows = [focus_accuracy_correlation(engine, training_run_id, metric=metric, method=m) for m in methods or [None]]
    return pd.DataFrame(rows)


def random_seed_spread(engine: Any, checkpoint_id: int, mosaic_set_id: int, randomization: str = "full",
                       chance: float = 0.5) -> pd.DataFrame:
    """Mean and spread over seeds of the randomized models' median Focus (:func:`focus_core.stats.seed_summary`).

    "A random model scores about ``chance``" is judged on the mean over seeds (``about_chance``), since
    one random model's median over a few classes is a handful of coin flips.

    Parameters
    ----------
    engine
        The results store's engine (:func:`flows.worker.store.engine_for`).
    checkpoint_id, mosaic_set_id
        The trained checkpoint whose randomized copies were evaluated, and the mosaic set.
    randomization
        ``"full"`` (default), ``"cascading"`` or ``"independent"``: one row per method and stage/layer.
    chance
        What a random explanation scores (``k / N**2``: 0.5 on 2x2 mosaics); the accepted distance is
        :func:`focus_core.stats.chance_tolerance` of it.

    Returns
    -------
    pandas.DataFrame
        :data:`SEED_SPREAD_COLUMNS`: ``seeds`` lists the seeds, ``mean``/``std``/``min``/``max`` are over their
        medians (``std`` NaN with one seed).
    """
    frame = db.randomization_medians(engine, checkpoint_id, mosaic_set_id, randomization)
    rows = []
    for (method, stage, layer), group in frame.groupby(["method", "stage", "layer"], dropna=False, sort=False):
        summary = stats.seed_summary(group["median_focus"].to_numpy(float), chance)
        rows.append({"method": method, "stage": None if pd.isna(stage) else int(stage),
                     "layer": None if pd.isna(layer) else layer, "seeds": [int(s) for s in group["seed"]],
                     **{k: summary[k] for k in SEED_SPREAD_COLUMNS[4:]}})
    return pd.DataFrame(rows, columns=list(SEED_SPREAD_COLUMNS))


def seed_spread_of_stages(
    stages: list[dict[str, Any]], methods: list[str], chance: float = 0.5
) -> dict[str, dict[str, Any]]:
    """Per method, :func:`focus_core.stats.seed_summary` of the fully random stages' medians (the flow's result).

    ``chance`` is the mosaic set's chance level (``k / N²``: 0.5 on the paper's 2x2 mosaics); "about chance"
    is :func:`focus_core.stats.about_chance`.
    """
    spread = {}
    for method in methods:
        medians = [s["medians"].get(method) for s in stages if s["kind"] == "full"]
        if medians:
            summary = stats.seed_summary([math.nan if m is None else m for m in medians], chance)
            spread[method] = {**summary, "seeds": [s["seed"] for s in stages if s["kind"] == "full"]}
    return spread


def seed_spreads(stages: list[dict[str, Any]], methods: list[str], chance: float = 0.5) -> list[dict[str, Any]]:
    """:func:`focus_core.stats.seed_summary` of every randomized stage over its seeds, one row per method and stage.

    ``stages`` are the randomization flow's (``kind``, ``stage``, ``layer``, ``seed``, ``medians``); rows come in
    the order the stages ran (full, then each cascading stage, then each independent layer), each with
    ``method``, ``kind``, ``stage``, ``layer``, ``seeds`` and the summary's keys.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for s in stages:
        if s["kind"] != "none":
            groups.setdefault((s["kind"], s.get("stage"), s.get("layer")), []).append(s)
    rows = []
    for (kind, stage, layer), members in groups.items():
        for method in methods:
            medians = [m["medians"].get(method) for m in members]
            summary = stats.seed_summary([math.nan if v is None else v for v in medians], chance)
            rows.append({"method": method, "kind": kind, "stage": stage, "layer": layer,
                         "seeds": [m["seed"] for m in members], **summary})
    return rows
