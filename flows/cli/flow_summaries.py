"""The human summaries of the commands that run a flow: train, evaluate, randomize, sweep and audit.

Each one is registered with :func:`flows.cli.summary.register` and reads the few rows it shows
from the store: medians with ``n``, the undefined share and the interval, where the results are,
and what to run next. One screen each (``focus evaluate`` of one method: about ten lines).
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from flows.cli import params as opts
from flows.cli.summary import evaluation_ids, evaluation_table, register, store_line

__all__ = ["audit_summary", "data_line", "evaluate_command", "evaluate_summary", "randomize_summary", "small_set",
           "sweep_summary", "train_summary"]

def reading(chance: list[float]) -> str:
    """The line under every Focus table: how to read it (``chance``: the mosaic sets' chance levels k/N²)."""
    levels = " or ".join(f"{c:.3g}" for c in chance or [0.5]) + (" (per mosaic set)" if len(chance) > 1 else "")
    return (f"(chance level {levels}, 1 is perfect; undefined: no positive relevance, left out of the median;\n"
            " 95% bootstrap intervals of the median: over mosaics, and over target classes then mosaics)")
#: At most this many epochs in the train summary (the first, then the last ones).
EPOCH_ROWS = 12
#: Fewer test images per class than this, and a summary says the set is small.
SMALL_SET = 10


def small_set(engine: Any, mosaic_set_id: int) -> list[str]:
    """One line when the mosaic set's split has fewer than :data:`SMALL_SET` images in some class, else none."""
    import db

    fewest = db.split_images_per_class(engine, mosaic_set_id)
    if fewest is None or fewest >= SMALL_SET:
        return []
    return [f"Small set: {fewest} test images per class (the fewest); medians over so few images are coin flips."]


def data_line(engine: Any, mosaic_set_id: int | None) -> list[str]:
    """One line: the dataset, its classes and split sizes, how its images became tiles, the split of the mosaics.

    E.g. ``Data: shapes, 6 classes, 168 train / 36 val / 36 test images; resized to 73 px, centre 64 px crop; test
    mosaics.`` (the shorter side is resized); none for an unknown set.
    """
    import db

    found = None if mosaic_set_id is None else db.mosaic_sets.mosaic_set_data(engine, int(mosaic_set_id))
    if found is None:
        return []
    splits = " / ".join(f"{n} {split}" for split, n in found.images_per_split.items())
    tiles = (f"resized to {found.resize} px, centre {found.tile_size} px crop" if found.resize
             else f"{found.tile_size} px tiles")
    return [f"Data: {found.dataset}, {found.classes} classes, {splits} images; {tiles}; {found.split} mosaics."]


def _engine(args: argparse.Namespace) -> Any:
    from flows.worker import store

    return store.engine_for(opts.database_url(args))


def _database_flag(args: argparse.Namespace) -> str:
    """`` --database-url URL`` for the next commands; nothing when the URL carries a secret (never printed)."""
    url = getattr(args, "database_url", None)
    if not url or opts.has_secret(url):
        return ""
    return f" --database-url {shlex.quote(url)}"


def evaluate_command(args: argparse.Namespace, weights: str) -> str:
    """``focus evaluate`` of ``weights`` with the data and model flags of the training run ``args`` started.

    The architecture, channels and classes, the data folder, its split seed, tile size, resize, mean and std
    (those the run was given: evaluate fills the rest with the same defaults), so the command runs as printed.
    """
    from flows.cli.run import training_params

    params = training_params(args)
    data, model = params.dataset, params.model
    flags = [("--weights", weights), ("--arch", model.architecture), ("--in-channels", model.in_channels),
             ("--num-classes", model.num_classes)]
    if data.kind == "image_folder":
        flags.append(("--data", str(data.root)))
    flags += [("--data-seed", data.seed or None), ("--tile-size", data.tile_size), ("--resize", data.resize),
              ("--mean", _floats(data.mean)), ("--std", _floats(data.std)),
              ("--cache-dir", None if data.cache_dir is None else str(data.cache_dir))]
    words = " ".join(f"{flag} {shlex.quote(str(value))}" for flag, value in flags if value is not None)
    return f"focus evaluate {words}{_database_flag(args)}"


def _floats(values: list[float] | None) -> str | None:
    return None if values is None else ",".join(repr(float(v)) for v in values)


def _ids_flags(ids: list[int]) -> str:
    return " ".join(f"--evaluation {i}" for i in ids)


def _fmt(value: Any, digits: int = 3) -> str:
    from flows.results.artifacts import number

    value = number(value)
    return "" if value is None else f"{value:.{digits}f}"


@register("train")
def train_summary(result: dict[str, Any], args: argparse.Namespace) -> list[Any]:
    """The epochs (loss, accuracy, each method's median Focus with its undefined share), the correlations with their
    epoch counts and what they can show, the final checkpoint and what to run next."""
    from rich.table import Table

    from flows.results.analysis import correlation_caveat

    epochs = result.get("epochs") or []
    run_now = result.get("epochs_run") or []
    shown = epochs if len(epochs) <= EPOCH_ROWS else epochs[:1] + epochs[-(EPOCH_ROWS - 1):]
    done = (f"epochs {run_now[0]}-{run_now[-1]} trained now" if run_now
            else "every epoch was recorded (nothing retrained)")
    title = f"Training run {result['training_run_id']}: {done}"
    methods = list(dict.fromkeys(m for row in epochs for m in (row.get("focus_stats") or {})))
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ["epoch", "train loss", "val loss", "val accuracy"] + (methods or ["recorded Focus"]):
        table.add_column(name, justify="right")
    sizes = set()
    for row in shown:
        focus_stats = row.get("focus_stats") or {}
        cells = []
        for method in methods:
            s = focus_stats.get(method)
            if s is None:
                cells.append("")
                continue
            sizes.add(s.get("n"))
            share = s.get("share_undefined")
            cells.append(_fmt(s.get("median")) + ("" if share is None else f" ({share:.0%})"))
        if not methods:  # the run's own recorded median, without evaluations behind it
            cells = [_fmt(row.get("focus_median"))]
        table.add_row(str(row["epoch"]), _fmt(row.get("train_loss")), _fmt(row.get("val_loss")),
                      _fmt(row.get("val_accuracy")), *cells)
    import db

    lines: list[Any] = [title, *data_line(_engine(args), db.mosaic_sets.training_mosaic_set(
        _engine(args), int(result["training_run_id"]))), table]
    if methods:
        n = ", ".join(str(v) for v in sorted(v for v in sizes if v is not None)) or "?"
        lines.append(f"(median Focus of the defined maps per method, on {n} mosaics per epoch; in brackets the "
                     "share of undefined maps)")
    correlations = [c for c in result.get("correlations") or [result.get("correlation") or {}] if _fmt(c.get("r"))]
    for c in correlations:
        name = c.get("method") or "recorded Focus"
        without = (f"; without epoch 0: r = {_fmt(c.get('r_without_epoch_0'))}, n = {c.get('n_without_epoch_0')}, "
                   f"p = {_fmt(c.get('p_value_without_epoch_0'))}" if _fmt(c.get("r_without_epoch_0")) else "")
        lines.append(f"Pearson r(median Focus of {name}, val accuracy) = {_fmt(c.get('r'))} over n = {c.get('n')} "
                     f"epochs (p = {_fmt(c.get('p_value'))}){without}")
    if correlations:
        lines.append(correlation_caveat(min(int(c.get("n") or 0) for c in correlations)))
    weights = result["final_weights"]
    same = result.get("same_weights_as")
    if same:
        lines.append(f"Note: these weights are byte-identical to training run {same['training_run_id']} "
                     f"({same['training_run_name']}) epoch {same['epoch']}; the store keeps one checkpoint for both "
                     "runs, named after both (same recipe and seed give the same weights: change --seed for another "
                     "model).")
    lines += [
        f"Final checkpoint {result['final_checkpoint_id']} (sha256 {str(result['final_sha256'])[:12]}): {weights}",
        store_line(opts.database_url(args)),
        f"Next: {evaluate_command(args, weights)}",
        f"      focus results epochs --training-run {result['training_run_id']}{_database_flag(args)}",
    ]
    return lines


@register("evaluate")
def evaluate_summary(result: dict[str, Any], args: argparse.Namespace) -> list[Any]:
    """One row per method: n, undefined share, median Focus and its interval; where they are; what next."""
    ids = evaluation_ids(result)
    rows_now = sum(int(e.get("rows_written") or 0) for e in result.get("evaluations", []))
    setting = (", disconnected (each tile through the feature extractor on its own)," if result.get("disconnected")
               else "")
    title = (f"Focus of checkpoint {result['checkpoint_id']} ({str(result['checkpoint_sha256'])[:12]}){setting} on "
             f"{result['num_mosaics']} mosaics (mosaic set {result['mosaic_set_id']}), "
             f"{rows_now} results computed now:")
    unfinished = [e for e in result.get("evaluations", []) if e.get("status") != "finished"]
    engine = _engine(args)
    lines: list[Any] = [title, *data_line(engine, result["mosaic_set_id"]), evaluation_table(engine, ids),
                        reading(_chance_levels(engine, ids)), *small_set(engine, result["mosaic_set_id"])]
    if unfinished:
        lines.append(f"{len(unfinished)} evaluation(s) not finished: run the same command again to finish them.")
    if result.get("model_reliance"):
        lines += _reliance_lines(engine, ids, result["model_reliance"])
    lines += [
        store_line(opts.database_url(args)),
        f"Next: focus results compare --mosaic-set {result['mosaic_set_id']}{_database_flag(args)}",
        f"      focus report{_database_flag(args)}   (figures and paired tests)",
    ]
    return lines


@register("randomize")
def randomize_summary(result: dict[str, Any], args: argparse.Namespace) -> list[Any]:
    """Every stage and seed with its median, both intervals, then the mean and spread over the seeds."""
    engine = _engine(args)
    ids = evaluation_ids(result)
    chance = _chance_levels(engine, ids)  # one mosaic set: one level
    title = (f"Randomization test of checkpoint {result['checkpoint_id']} on mosaic set {result['mosaic_set_id']}: "
             f"a faithful method falls to about chance ({chance[0]:.3g}):")
    lines: list[Any] = [title, *data_line(engine, result["mosaic_set_id"]), evaluation_table(engine, ids),
                        reading(chance), *small_set(engine, result["mosaic_set_id"])]
    spread = _seed_spread_table(result, chance[0])
    if spread is not None:
        lines += ["Over seeds (one random model's median is a handful of coin flips: judge the "
                  "mean):", spread]
    return lines + [
        store_line(opts.database_url(args)),
        f"Next: focus results compare --mosaic-set {result['mosaic_set_id']} --randomization cascading"
        f"{_database_flag(args)}",
        f"      focus report{_database_flag(args)}   (the cascading figure)",
    ]


def _reliance_lines(engine: Any, ids: list[int], reliance: dict[str, Any]) -> list[str]:
    """The model's own Focus (its reliance on the target tiles) and each method's gap to it, in two lines."""
    import db

    frame = db.evaluation_summary(engine, ids) if ids else None
    computed = f"{len(reliance.get('chunks_run') or [])} of {reliance.get('chunks_total')} chunk(s) computed now"
    if frame is None or frame["median_model_focus"].isna().all():
        return [f"Model reliance (pass {reliance.get('pass_id')}, {computed}): no finished evaluation to compare."]
    model = _fmt(frame["median_model_focus"].dropna().iloc[0])
    gaps = ", ".join(f"{row.method} {_fmt(row.median_explainer_gap)}" for row in frame.itertuples()
                     if row.median_explainer_gap == row.median_explainer_gap)
    return [f"Model reliance (pass {reliance.get('pass_id')}, {computed}): median model Focus {model}.",
            f"Median explainer gap (Focus - model Focus; 0: follows the model): {gaps or 'none defined'}."]


def _chance_levels(engine: Any, ids: list[int]) -> list[float]:
    """The chance levels k/N² of the evaluations' mosaic sets, largest first (``[0.5]`` without rows)."""
    import db

    levels = db.evaluation_summary(engine, ids)["chance_level"].dropna() if ids else []
    return sorted({round(float(c), 12) for c in levels}, reverse=True) or [0.5]


def _seed_spread_table(result: dict[str, Any], chance: float) -> Any:
    """Mean, sd, min and max over the seeds of each randomized stage and method; ``None`` with one seed."""
    from rich.table import Table

    from flows.results import analysis

    stages = result.get("stages") or []
    methods = list(dict.fromkeys(m for s in stages for m in s.get("medians", {})))
    rows = [r for r in analysis.seed_spreads(stages, methods, chance) if len(r["seeds"]) > 1]
    if not rows:
        return None
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name, justify in (("method", "left"), ("model", "left"), ("seeds", "left"), ("mean", "right"),
                          ("sd", "right"), ("min", "right"), ("max", "right"), ("about chance", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        model = "full" if r["kind"] == "full" else f"{r['kind']} {r['layer'] or r['stage']}"
        about = "" if r["about_chance"] is None else ("yes" if r["about_chance"] else "no")
        table.add_row(r["method"], model, ",".join(map(str, r["seeds"])), _fmt(r["mean"]), _fmt(r["std"]),
                      _fmt(r["min"]), _fmt(r["max"]), f"{about} (±{_fmt(r['tolerance'])})")
    return table


@register("sweep")
def sweep_summary(result: dict[str, Any], args: argparse.Namespace) -> list[Any]:
    """Every cell of the grid: checkpoint, method, n, undefined share, median and interval."""
    ids = evaluation_ids(result)
    title = f"Sweep of {len(result.get('cells', []))} cell(s), checkpoint x method:"
    return [
        title,
        evaluation_table(_engine(args), ids),
        reading(_chance_levels(_engine(args), ids)),
        store_line(opts.database_url(args)),
        f"Next: focus results evaluations {_ids_flags(ids)}{_database_flag(args)}",
        f"      focus report{_database_flag(args)}",
    ]


#: What each ``cause`` of a regression means, in the audit summary's words (docs/reliance.md, "Which one changed").
_CAUSE_WORDS = {"model": "the model's reliance on the target tiles moved, the explanation followed",
                "explainer": "the explanation moved, the model's reliance held",
                "both": "both the model's reliance and the explanation moved",
                "unclear": "unclear whether the model or the explanation changed"}


@register("audit")
def audit_summary(result: dict[str, Any], args: argparse.Namespace) -> list[Any]:
    """Each audited checkpoint x method: median now, before, the change, the paired test and the verdict."""
    from rich.table import Table

    results = result.get("results") or []
    regressions = result.get("regressions") or []
    count = len(regressions) if isinstance(regressions, list) else int(regressions)
    title = (f"Audit run {result['audit_run_id']}: {len(results)} checkpoint x method x comparison result(s), "
             f"{count} regression(s)")
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name, justify in (("checkpoint", "left"), ("method", "left"), ("median Focus", "right"),
                          ("compared with", "left"), ("as", "left"), ("before", "right"), ("change", "right"),
                          ("p", "right"), ("verdict", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in results:
        verdict = "REGRESSED" if row.get("regressed") else ("first audit" if row.get("previous_evaluation_id") is None
                                                          else "ok")
        if not row.get("regressed") and row.get("significant") is False and (row.get("median_change") or 0) < -(
                row.get("threshold") or 0):
            verdict = "fell, not significant"
        if row.get("mosaic_set_changed"):
            verdict = "new mosaic set"
        table.add_row(str(row.get("checkpoint_name") or row["checkpoint"]), str(row["method"]),
                      _fmt(row.get("median_focus")), str(row.get("compared_with_name") or ""),
                      str(row.get("kind") or ""),
                      _fmt(row.get("previous_median_focus")), _fmt(row.get("median_change")),
                      _fmt(row.get("p_value")), verdict)
    causes = [f"{row.get('checkpoint_name') or row['checkpoint']} with {row['method']} ({row.get('kind')}): "
              f"{_CAUSE_WORDS.get(row.get('cause'), _CAUSE_WORDS['unclear'])} (model Focus change "
              f"{_fmt(row.get('model_focus_change'))})" for row in results if row.get("regressed")]
    fell = result.get("class_regressions") or []
    classes = [f"Class {row.get('class_name') or row['class']} fell on the {row.get('probe') or 'clean'} set "
               f"with {row['method']} ({row.get('kind')}, change {_fmt(row.get('median_change'))}, "
               f"Holm p {row['p_adjusted']:.2g}): {_CAUSE_WORDS.get(row.get('cause'), _CAUSE_WORDS['unclear'])}"
               for row in fell]
    nothing = ("No lineage or checkpoint is marked for auditing "
               "(`focus train --audit`, `focus checkpoint register --audit`).")
    lines: list[Any] = [title, table, *causes, *classes] if results else [nothing]
    lines += [
        store_line(opts.database_url(args)),
        f"Next: focus results regressions{_database_flag(args)}",
        f"      focus report{_database_flag(args)}",
    ]
    return lines
