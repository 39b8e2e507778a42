"""The report's sections on how sure a Focus number is: per target class, and random models over seeds.

- :func:`per_class_section`: median Focus per target class of each final trained checkpoint (a table
  and a figure: which classes the explanations miss, the extended paper's bias angle), and the paired
  method comparison per class (Wilcoxon signed-rank test and rank-biserial effect size).
- :func:`seeds_section`: the fully random models of a checkpoint over their seeds (mean and spread of
  their medians: "a random model scores about the chance level k/N²" is judged on the mean), and the randomization
  test as a decision per method (:func:`focus_core.stats.randomization_test`).

Every statistic comes from :mod:`focus_core.stats`.
"""

from __future__ import annotations

import html
import itertools
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from flows.report.figures import FigureWriter
from flows.report.page import DASH, Section, count, fmt, fmt_p, row, seed_list, table
from flows.report.queries import EvaluationData
from flows.report.selection import final_checkpoints, latest, method_key, slug
from focus_core import report, stats

__all__ = ["per_class_section", "seeds_section", "ALPHA"]

ALPHA = 0.05


def _trained_groups(evals: Sequence[EvaluationData]) -> dict[tuple[int, int], dict[str, EvaluationData]]:
    """``{(checkpoint, mosaic set): {method: latest trained evaluation}}`` of the final checkpoints (no audits)."""
    finals = final_checkpoints(evals)
    groups: dict[tuple[int, int], dict[str, list[EvaluationData]]] = defaultdict(lambda: defaultdict(list))
    for e in evals:
        if e.randomization == "none" and e.n and e.checkpoint_id in finals and e.audit_run_id is None:
            groups[(e.checkpoint_id, e.mosaic_set_id)][e.method].append(e)
    return {key: {m: latest(v) for m, v in sorted(methods.items(), key=lambda kv: method_key(kv[0]))}
            for key, methods in sorted(groups.items())}


def per_class_section(evals: Sequence[EvaluationData], names: dict[int, str], figures: FigureWriter) -> Section:
    """Median Focus per target class (table and figure) and the paired method comparison per class."""
    section = Section(
        "per-class", "Focus per target class",
        "Median Focus of each target class's mosaics, per method (undefined maps left out; in brackets counted as "
        "0, Quantus's convention). A class far below the others is one the explanations miss. Below, the paired "
        "comparison of methods within each class: Wilcoxon signed-rank test and rank-biserial effect size.",
    )
    groups = _trained_groups(evals)
    if not groups:
        section.missing = "No trained evaluation of a final checkpoint is selected."
        return section
    for (checkpoint_id, mosaic_set_id), methods in groups.items():
        first = next(iter(methods.values()))
        title = (f"{names[checkpoint_id]} on mosaic set #{mosaic_set_id} ({first.grid_label}, chance level "
                 f"{fmt(first.chance_level)})")
        per_method = {m: {r["class"]: r for r in stats.per_class_summary(e.focus, e.targets)}
                      for m, e in methods.items()}
        classes = sorted({c for rows in per_method.values() for c in rows})
        start = len(section.figures)
        figures.draw(section, f"fig-classes-{slug(names[checkpoint_id], mosaic_set_id)}",
                     f"{title}: median Focus per target class.", f"Median Focus per class of {title}",
                     report.plot_per_class_focus, [str(c) for c in classes],
                     {m: [rows[c]["median"] if c in rows else np.nan for c in classes]
                      for m, rows in per_method.items()}, chance=next(iter(methods.values())).chance_level)
        section.blocks.append(f"<h3>{html.escape(title)}</h3>")
        drawn = "\n".join(f.render() for f in section.figures[start:])
        section.blocks.append(f'<div class="figures">{drawn}</div>')
        del section.figures[start:]
        headers = ["target class", "mosaics"] + [f"{m} median (undefined as 0)" for m in methods]
        rows = []
        for c in classes:
            n = max(rows_[c]["n"] for rows_ in per_method.values() if c in rows_)
            cells = [str(c), fmt(n)] + [
                DASH if c not in per_method[m] else
                f"{fmt(per_method[m][c]['median'])} ({fmt(per_method[m][c]['median_undefined_as_zero'])})"
                for m in methods]
            data = {"checkpoint_id": checkpoint_id, "mosaic_set_id": mosaic_set_id, "target_class": c, "n": n}
            data.update({f"median_{slug(m)}": per_method[m].get(c, {}).get("median") for m in methods})
            data.update({f"median_undefined_as_zero_{slug(m)}": per_method[m].get(c, {}).get("median_undefined_as_zero")
                         for m in methods})
            rows.append(row(data, cells, numeric=[True] * len(cells)))
        section.blocks.append('<div class="table-wrap">' + table(
            headers, rows, table_id=f"per-class-{checkpoint_id}-{mosaic_set_id}") + "</div>")
        paired = _paired_by_class_rows(methods, checkpoint_id, mosaic_set_id)
        if paired:
            section.blocks.append(
                "<details><summary>Paired comparison of methods per target class</summary><div class=\"table-wrap\">"
                + table(["method A", "method B", "target class", "pairs", "median A−B", "W", "p-value",
                         "rank-biserial r"], paired, table_id=f"paired-per-class-{checkpoint_id}-{mosaic_set_id}")
                + "</div></details>")
    return section


def _paired_by_class_rows(methods: dict[str, EvaluationData], checkpoint_id: int, mosaic_set_id: int) -> list[str]:
    rows = []
    for a, b in itertools.combinations(methods.values(), 2):
        common, ia, ib = np.intersect1d(a.mosaic_ids, b.mosaic_ids, return_indices=True)
        if common.size == 0:
            continue
        overall = stats.paired_test(a.focus[ia], b.focus[ib])
        by_class = stats.paired_test_by_class(a.focus[ia], b.focus[ib], a.targets[ia])
        for result in [{"class": "all", **overall}] + by_class:
            significant = result["p_value"] < ALPHA
            rows.append(row(
                {"checkpoint_id": checkpoint_id, "mosaic_set_id": mosaic_set_id, "method_a": a.method,
                 "method_b": b.method, "target_class": result["class"], "n": result["n"],
                 "median_difference": result["median_difference"], "statistic": result["statistic"],
                 "p_value": result["p_value"], "rank_biserial": result["rank_biserial"]},
                [a.method, b.method, str(result["class"]), fmt(result["n"]), fmt(result["median_difference"]),
                 fmt(result["statistic"]), fmt_p(result["p_value"]), fmt(result["rank_biserial"])],
                numeric=[False, False, False, True, True, True, True, True],
                classes=[""] * 6 + (["sig"] if significant else [""]) + [""],
            ))
    return rows


def seeds_section(evals: Sequence[EvaluationData], names: dict[int, str], figures: FigureWriter) -> Section:
    """Random models over seeds (mean and spread), and per method whether the trained Focus is above theirs."""
    section = Section(
        "seeds", "Random models over seeds: the randomization test",
        "Each seed re-initialises the checkpoint into another fully random model; the new weights depend on the "
        "architecture and the seed only, so checkpoints of one architecture share their random models (one set of "
        "seeds, compared with each trained checkpoint). One random model's median over a "
        "few classes is a handful of coin flips, so 'a random model scores about the chance level' (k/N²: 0.5 on "
        "2x2 mosaics with 2 target tiles) is judged on the mean over seeds, within a fifth of the distance from the "
        "chance level to the nearer end of [0, 1] (± 0.1 at chance 0.5, ± 0.022 at 1/9: the column 'within'). "
        "The decision: is the trained checkpoint's Focus significantly above "
        f"the random models' at {ALPHA}? Test: {stats.RANDOMIZATION_TEST}; both p-values must be below {ALPHA}.",
    )
    # a full re-initialisation depends on the architecture and the seed only, never on the trained weights: the
    # fully random models of checkpoints of one architecture are the same networks, one set of seeds for all of them
    random: dict[tuple, dict[str, dict[int, EvaluationData]]] = defaultdict(lambda: defaultdict(dict))
    owners: dict[tuple, set[int]] = defaultdict(set)
    for e in sorted(evals, key=lambda e: e.evaluation_id):
        if e.randomization == "full" and e.n and e.audit_run_id is None:
            key = _random_network(e)
            random[key][e.method][int(e.seed or 0)] = e
            owners[key].add(e.checkpoint_id)
    if not random:
        section.missing = ("No fully random model is selected: run `focus randomize --kind full --seeds 0,1,2,3,4` "
                           "to judge the random models over seeds.")
        return section
    trained_groups = _trained_all(evals)
    for key, methods in sorted(random.items(), key=lambda kv: str(kv[0])):
        checkpoints = sorted(owners[key])
        if len(checkpoints) > 1:
            seeds = sorted({s for by_seed in methods.values() for s in by_seed})
            section.notes.append(
                f"The fully random models of {', '.join(names[c] for c in checkpoints)} on mosaic set #{key[-1]} are "
                f"the same networks (same architecture; a full re-initialisation does not depend on the trained "
                f"weights): {seed_list(seeds)} are {count(len(seeds), 'random model')}, counted once and "
                "compared with each trained checkpoint, not independent replicates per checkpoint.")
        for checkpoint_id in checkpoints:
            _seeds_block(section, figures, names, checkpoint_id, key[-1], methods,
                         trained_groups.get((checkpoint_id, key[-1]), {}))
    return section


def _random_network(e: EvaluationData) -> tuple:
    """What a fully random model of ``e`` is made from (besides the seed): architecture, classes, channels; and the
    mosaic set it was scored on."""
    return (e.architecture, e.num_classes, e.in_channels, e.mosaic_set_id)


def _seeds_block(section: Section, figures: FigureWriter, names: dict[int, str], checkpoint_id: int,
                 mosaic_set_id: int, methods: dict[str, dict[int, EvaluationData]],
                 trained: dict[str, EvaluationData]) -> None:
    """One checkpoint's figure and table: its architecture's random models over seeds against its trained model."""
    title = f"{names[checkpoint_id]} on mosaic set #{mosaic_set_id}"
    ordered = sorted(methods, key=method_key)
    figures.draw(section, f"fig-seeds-{slug(names[checkpoint_id], mosaic_set_id)}",
                 f"{title}: each dot one random model's median Focus; square and whisker their mean ± sd; "
                 "diamond the trained checkpoint.", f"Random models over seeds of {title}",
                 report.plot_random_seeds,
                 {m: [methods[m][s].summary["median"] for s in sorted(methods[m])] for m in ordered},
                 trained={m: trained[m].summary["median"] for m in ordered if m in trained},
                 chance=methods[ordered[0]][min(methods[ordered[0]])].chance_level)
    rows = [_seed_row(m, methods[m], trained.get(m), checkpoint_id, mosaic_set_id) for m in ordered]
    section.blocks.append(f"<h3>{html.escape(title)}</h3>")
    section.blocks.append('<div class="table-wrap">' + table(
        ["method", "seeds", "random mean", "sd", "min", "max", "chance", "within", "about chance", "trained median",
         "p (mosaics)", "p (class medians)", "rank-biserial r", "trained above random"],
        rows, table_id=f"seeds-{checkpoint_id}-{mosaic_set_id}") + "</div>")


def _trained_all(evals: Sequence[EvaluationData]) -> dict[tuple[int, int], dict[str, EvaluationData]]:
    """``{(checkpoint, mosaic set): {method: latest trained evaluation}}`` of every checkpoint (no audits)."""
    groups: dict[tuple[int, int], dict[str, list[EvaluationData]]] = defaultdict(lambda: defaultdict(list))
    for e in evals:
        if e.randomization == "none" and e.n and e.audit_run_id is None:
            groups[(e.checkpoint_id, e.mosaic_set_id)][e.method].append(e)
    return {key: {m: latest(v) for m, v in methods.items()} for key, methods in groups.items()}


def _seed_row(method: str, by_seed: dict[int, EvaluationData], trained: EvaluationData | None,
              checkpoint_id: int, mosaic_set_id: int) -> str:
    seeds = sorted(by_seed)
    chance = by_seed[seeds[0]].chance_level  # one mosaic set: one grid and target count
    spread = stats.seed_summary([by_seed[s].summary["median"] for s in seeds], chance)
    data = {"checkpoint_id": checkpoint_id, "mosaic_set_id": mosaic_set_id, "method": method, "chance_level": chance,
            "seeds": ",".join(map(str, seeds)), "evaluations": ",".join(str(by_seed[s].evaluation_id) for s in seeds),
            "n_seeds": spread["n_seeds"], "mean": spread["mean"],
            "std": spread["std"], "min": spread["min"], "max": spread["max"],
            "tolerance": spread["tolerance"], "about_chance": spread["about_chance"]}
    decision_cells = [DASH, DASH, DASH, DASH, "no trained evaluation"]
    if trained is not None:
        position = {int(m): i for i, m in enumerate(trained.mosaic_ids)}
        matrix = np.full((len(seeds), trained.n), np.nan)
        for row_index, s in enumerate(seeds):
            e = by_seed[s]
            for mosaic, value in zip(e.mosaic_ids, e.focus):
                if int(mosaic) in position:
                    matrix[row_index, position[int(mosaic)]] = value
        test = stats.randomization_test(trained.focus, matrix, trained.targets, alpha=ALPHA)
        data.update(trained_median=trained.summary["median"], p_value=test["p_value"],
                    p_value_classes=test["p_value_classes"], rank_biserial=test["rank_biserial"],
                    significant=test["significant"], test=test["test"])
        decision_cells = [fmt(trained.summary["median"]), fmt_p(test["p_value"]), fmt_p(test["p_value_classes"]),
                          fmt(test["rank_biserial"]), "yes" if test["significant"] else "no"]
    about = DASH if spread["about_chance"] is None else ("yes" if spread["about_chance"] else "no")
    cells = [method, seed_list(seeds), fmt(spread["mean"]), fmt(spread["std"]), fmt(spread["min"]),
             fmt(spread["max"]), fmt(chance), f"± {fmt(spread['tolerance'])}", about, *decision_cells]
    return row(data, cells, numeric=[False, False, True, True, True, True, True, True, False, True, True, True, True,
                                     False])
