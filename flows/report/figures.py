"""The report's figures: a writer that turns a failed drawing into a note, and the figure sections.

:class:`FigureWriter` writes PNG files under ``out/figures`` with :mod:`focus_core.report`.
The sections here are made of figures only: Focus distributions per method and architecture
(Figure 4), trained vs fully random model (Figure 3), the cascading randomization curve and
Focus per positional layout (Figure 2). Each section says in a sentence when its data is not
recorded.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flows.report.page import DASH, Figure, Section, count, fmt, row, seed_list, table
from flows.report.queries import EvaluationData
from flows.report.selection import final_checkpoints, latest, method_key, slug
from focus_core import report, stats
from focus_core.errors import FocusError
from focus_core.layouts import LAYOUTS

__all__ = [
    "FIGURES_DIR",
    "LAYOUT_ORDER",
    "FigureWriter",
    "distributions_section",
    "trained_vs_random_section",
    "cascading_section",
    "layout_section",
]

FIGURES_DIR = "figures"
#: Fixed layouts in the order of ``LAYOUTS`` (the paper's); "random" (per-mosaic positions) drawn last, for reference.
LAYOUT_ORDER = tuple(layout for layout in LAYOUTS if layout != "random") + ("random",)


class FigureWriter:
    """Writes figures under ``out/figures`` and turns a failed drawing into a note, never an abort."""

    def __init__(self, out: Path) -> None:
        self.folder = out / FIGURES_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("fig*.png"):  # only the files earlier builds wrote
            old.unlink()
        self.names: set[str] = set()

    def draw(self, section: Section, name: str, caption: str, alt: str, plot: Any, *args: Any, **kwargs: Any) -> bool:
        stem, i = name, 2
        while stem in self.names:
            stem, i = f"{name}-{i}", i + 1
        self.names.add(stem)
        path = self.folder / f"{stem}.png"
        try:
            plot(*args, path, **kwargs)
        except FocusError as error:
            section.notes.append(f"Could not draw “{alt}”: {error}")
            return False
        section.figures.append(Figure(f"{FIGURES_DIR}/{stem}.png", alt, caption, figure_id=stem))
        return True


def _accuracy_by_checkpoint(evals: Sequence[EvaluationData], runs: dict[int, dict[str, Any]]) -> dict[int, float]:
    """Mean per-class validation accuracy of a checkpoint's training epoch (what the paper shows as acc)."""
    out = {}
    for e in evals:
        run = runs.get(e.training_run_id) if e.training_run_id is not None else None
        if run is None or e.epoch is None:
            continue
        for epoch in run["epochs"]:
            if epoch["epoch"] == e.epoch:
                value = epoch.get("val_mean_class_accuracy")
                value = epoch.get("val_accuracy") if value is None else value
                if value is not None:
                    out[e.checkpoint_id] = float(value)
    return out


def distributions_section(evals: Sequence[EvaluationData], names: dict[int, str], runs: dict[int, dict[str, Any]],
                           figures: FigureWriter) -> Section:
    """Figure 4: one violin panel per final trained checkpoint on random-layout mosaics, per dataset."""
    section = Section(
        "distributions", "Focus per method and architecture",
        "Distribution of Focus over the mosaics, one violin per method and one panel per checkpoint (the paper's "
        "Figure 4): the white dot is the median, the bar the interquartile range, the dashed line the chance level "
        "k/N² (what a random explanation scores: 0.5 on 2x2 mosaics with 2 target tiles).",
    )
    finals = final_checkpoints(evals)
    accuracy = _accuracy_by_checkpoint(evals, runs)
    # one figure per dataset and grid (N, k): scores of different chance levels never share a panel
    by_dataset: dict[tuple[str, int, int], dict[int, dict[str, list[EvaluationData]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for e in evals:
        if e.randomization == "none" and e.layout == "random" and e.n and e.checkpoint_id in finals:
            by_dataset[(e.dataset_name, e.grid, e.target_tiles)][e.checkpoint_id][e.method].append(e)
    if not by_dataset:
        section.missing = "No trained evaluation on a random-layout mosaic set is selected."
        return section
    grids = {(g, k) for _, g, k in by_dataset}
    for (dataset_name, grid, targets), checkpoints in sorted(by_dataset.items()):
        scores = {}
        acc = {}
        used = []
        for cid in sorted(checkpoints, key=lambda c: names[c]):
            methods = {}
            for method in sorted(checkpoints[cid], key=method_key):
                # prefer the test split, then the latest evaluation
                pick = max(checkpoints[cid][method], key=lambda e: (e.split == "test", e.evaluation_id))
                methods[method] = pick.focus
                used.append(pick.evaluation_id)
            scores[names[cid]] = methods
            if cid in accuracy:
                acc[names[cid]] = accuracy[cid]
        shared = [names[cid] for cid in sorted(checkpoints) if len({run for run, _ in
                  next(iter(checkpoints[cid].values()))[0].runs_and_epochs}) > 1]
        chance = next(iter(next(iter(checkpoints.values())).values()))[0].chance_level
        on = f"{grid}x{grid} mosaics with {targets} target tiles (chance level {fmt(chance)})"
        caption = (f"Dataset {dataset_name}, {on}; evaluations {', '.join(map(str, sorted(used)))}. "
                   + ("acc: mean per-class validation accuracy of the checkpoint's epoch. " if acc else "")
                   + "".join(f"“{name}” is one checkpoint that several training runs produced byte for byte "
                             "(one panel for all of them). " for name in shared)).strip()
        name = f"fig4-{slug(dataset_name)}" + ("" if grids == {(2, 2)} else f"-{grid}x{grid}-k{targets}")
        figures.draw(section, name, caption, f"Focus distributions on {dataset_name}",
                     report.plot_focus_distributions, scores, accuracy_by_group=acc or None, chance=chance)
    return section


def trained_vs_random_section(evals: Sequence[EvaluationData], names: dict[int, str], figures: FigureWriter) -> Section:
    """Figure 3: per checkpoint, method and mosaic set, the trained model against its full randomizations.

    The random histogram pools the per-mosaic scores of every seed (each seed is another random model).
    """
    section = Section(
        "randomization", "Trained vs random model",
        "Focus of the trained model and of its fully randomized copies on the same mosaics (the paper's Figure 3; "
        "the random histogram pools every seed's mosaics): a faithful method falls to about the chance level k/N² "
        "(0.5 on 2x2 mosaics with 2 target tiles) on the random models.",
    )
    trained: dict[tuple, list[EvaluationData]] = defaultdict(list)
    random: dict[tuple, list[EvaluationData]] = defaultdict(list)
    for e in evals:
        if not e.n:
            continue
        key = (e.checkpoint_id, e.method, e.mosaic_set_id)
        if e.randomization == "none":
            trained[key].append(e)
        elif e.randomization == "full":
            random[key].append(e)
    pairs = sorted(set(trained) & set(random), key=lambda k: (k[0], method_key(k[1]), k[2]))
    if not pairs:
        section.missing = ("No full randomization evaluation is selected (with its trained counterpart on the same "
                           "mosaics): run `focus randomize` to add one.")
        return section
    for cid, method, set_id in pairs:
        t, seeds = latest(trained[(cid, method, set_id)]), _one_per_seed(random[(cid, method, set_id)])
        pooled = np.concatenate([r.focus for r in seeds])
        described = ", ".join(f"{r.evaluation_id} (seed {r.seed}, median {fmt(r.summary['median'])})" for r in seeds)
        caption = (f"{method} on {names[cid]}, mosaic set {set_id} ({t.grid_label}): trained evaluation "
                   f"{t.evaluation_id} (median {fmt(t.summary['median'])}); random: {described}, "
                   f"{count(len(seeds), 'seed')} pooled ({pooled.size} scores); chance level {fmt(t.chance_level)}.")
        figures.draw(section, f"fig3-{slug(names[cid], method, set_id)}", caption,
                     f"Trained vs random: {method} on {names[cid]}", report.plot_trained_vs_random,
                     t.focus, pooled, method=method, chance=t.chance_level)
    return section


def _one_per_seed(evals: Sequence[EvaluationData]) -> list[EvaluationData]:
    """The latest evaluation of each randomization seed, by seed."""
    by_seed: dict[int, list[EvaluationData]] = defaultdict(list)
    for e in evals:
        by_seed[int(e.seed or 0)].append(e)
    return [latest(by_seed[s]) for s in sorted(by_seed)]


def cascading_section(evals: Sequence[EvaluationData], names: dict[int, str], figures: FigureWriter) -> Section:
    """The cascading randomization curve per checkpoint and mosaic set, the trained model as first stage.

    Each stage pools the per-mosaic scores of every seed (its median and quartiles are over all of them); the
    table under the figure gives, per stage and method, the seeds, the pooled ``n``, undefined share and median,
    and the mean and standard deviation of the seeds' own medians.
    """
    section = Section(
        "cascading", "Cascading randomization",
        "Median Focus (band: interquartile range) as the layers are re-initialised from the top down (Adebayo et "
        "al.): the first point is the trained model; Focus should fall to about the chance level k/N² (the dashed "
        "line: 0.5 on 2x2 mosaics with 2 target tiles) once the top layer is random. With several seeds, each stage "
        "pools the mosaics of every seed; the table gives the spread of the seeds' own medians.",
    )
    groups: dict[tuple[int, int], list[EvaluationData]] = defaultdict(list)
    for e in evals:
        if e.n and e.randomization in ("cascading", "none"):
            groups[(e.checkpoint_id, e.mosaic_set_id)].append(e)
    drawn = False
    for (cid, set_id), members in sorted(groups.items()):
        cascading = [e for e in members if e.randomization == "cascading" and e.stage is not None]
        if not cascading:
            continue
        stages = sorted({e.stage for e in cascading})
        layer_of = {e.stage: e.layer for e in cascading if e.layer}
        labels = ["trained"] + [layer_of.get(s) or f"stage {s}" for s in stages]
        methods = sorted({e.method for e in cascading}, key=method_key)
        medians, q1s, q3s = {}, {}, {}
        rows = []
        for method in methods:
            series = []
            for stage in [None] + stages:
                hits = [e for e in members if e.method == method and (
                    (stage is None and e.randomization == "none") or (e.randomization == "cascading" and e.stage == stage))]
                chosen = ([latest(hits)] if stage is None else _one_per_seed(hits)) if hits else []
                pooled = stats.summarize(np.concatenate([e.focus for e in chosen])) if chosen else None
                series.append(pooled)
                if chosen:
                    rows.append(_cascading_row(cid, set_id, method, stage, layer_of.get(stage), chosen, pooled))
            medians[method] = [math.nan if s is None else s["median"] for s in series]
            q1s[method] = [math.nan if s is None else s["q1"] for s in series]
            q3s[method] = [math.nan if s is None else s["q3"] for s in series]
        first = cascading[0]
        seeds = sorted({int(e.seed or 0) for e in cascading})
        caption = (f"{names[cid]}, mosaic set {set_id} ({first.grid_label}, chance level {fmt(first.chance_level)}): "
                   f"{count(len(stages), 'stage')}, methods {', '.join(methods)}, {seed_list(seeds)} pooled per "
                   "stage.")
        drawn |= figures.draw(section, f"fig-cascading-{slug(names[cid], set_id)}", caption,
                              f"Cascading randomization of {names[cid]}", report.plot_cascading_randomization,
                              labels, medians, q1_by_method=q1s, q3_by_method=q3s, chance=first.chance_level)
        section.blocks.append('<div class="table-wrap">' + table(
            ["method", "stage", "seeds", "n", "undefined", "median (pooled)", "mean of seed medians", "sd"],
            rows, table_id=f"cascading-{cid}-{set_id}") + "</div>")
    if not drawn and not section.notes:
        section.missing = "No cascading randomization stage is recorded for the selection: run `focus randomize` with kind cascading."
    return section


def _cascading_row(cid: int, set_id: int, method: str, stage: int | None, layer: str | None,
                   chosen: Sequence[EvaluationData], pooled: dict[str, Any]) -> str:
    """One stage of one method: its seeds, the pooled statistics and the spread of the seeds' medians."""
    seeds = [e.seed for e in chosen if e.seed is not None]
    spread = stats.seed_summary([e.summary["median"] for e in chosen], chosen[0].chance_level)
    name = "trained" if stage is None else f"{stage} ({layer})" if layer else str(stage)
    data = {"checkpoint_id": cid, "mosaic_set_id": set_id, "method": method, "stage": stage, "layer": layer,
            "seeds": ",".join(map(str, seeds)), "evaluations": ",".join(str(e.evaluation_id) for e in chosen),
            "n": pooled["n"], "share_undefined": pooled["share_undefined"], "median": pooled["median"],
            "seed_mean": spread["mean"], "seed_std": spread["std"]}
    cells = [method, name, seed_list(seeds) if seeds else DASH, fmt(pooled["n"]), fmt(pooled["share_undefined"]),
             fmt(pooled["median"]), fmt(spread["mean"]), fmt(spread["std"])]
    return row(data, cells, numeric=[False, False, False, True, True, True, True, True])


def layout_section(evals: Sequence[EvaluationData], names: dict[int, str], figures: FigureWriter) -> Section:
    """Figure 2: Focus per fixed layout of the target tiles, per checkpoint and method."""
    section = Section(
        "layouts", "Position of the target tiles",
        "Focus per fixed arrangement of the two target tiles (the paper's Figure 2), with the random arrangement for "
        "reference: a method or model biased towards a region of the image scores differently per layout.",
    )
    groups: dict[tuple[int, str, str, int, int], dict[str, list[EvaluationData]]] = defaultdict(
        lambda: defaultdict(list))
    for e in evals:
        if e.randomization == "none" and e.n:
            groups[(e.checkpoint_id, e.method, e.dataset_name, e.grid, e.target_tiles)][e.layout].append(e)
    fixed = {k: v for k, v in groups.items() if any(layout != "random" for layout in v)}
    if not fixed:
        section.missing = ("No fixed-layout mosaic set is evaluated in the selection: evaluate with a mosaic layout such "
                           "as top, bottom or diagonal to see the positional test.")
        return section
    for (cid, method, dataset_name, grid, targets), by_layout in sorted(
            fixed.items(), key=lambda kv: (kv[0][0], method_key(kv[0][1]), kv[0][3], kv[0][4])):
        order = [lay for lay in LAYOUT_ORDER if lay in by_layout] + sorted(set(by_layout) - set(LAYOUT_ORDER))
        chosen = {lay: latest(by_layout[lay]) for lay in order}
        chance = next(iter(chosen.values())).chance_level
        caption = (f"{method} on {names[cid]} ({dataset_name}, {grid}x{grid} mosaics with {targets} target tiles, "
                   f"chance level {fmt(chance)}); evaluations "
                   + ", ".join(f"{lay} {e.evaluation_id}" for lay, e in chosen.items()) + ".")
        name = f"fig2-{slug(names[cid], method)}" + ("" if (grid, targets) == (2, 2) else f"-{grid}x{grid}-k{targets}")
        figures.draw(section, name, caption, f"Focus per layout: {method} on {names[cid]}",
                     report.plot_layout_boxplots, {lay: e.focus for lay, e in chosen.items()}, chance=chance)
    return section
