"""Figure 1 of the report: one sample mosaic with each method's heat map, recomputed from the checkpoint.

The store keeps scores, not maps: the maps are recomputed from the checkpoint's weights file
(checked against its recorded sha256) and the dataset, and their Focus is compared with the
recorded one. When the weights or the data are gone, a note says why and the recorded scores
are shown alone.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import db
from db import Engine
from flows.weights import weight_store
from flows.report.figures import FigureWriter
from flows.report.page import Section, fmt, row, table
from flows.report.queries import EvaluationData
from flows.report.selection import final_checkpoints, method_key
from focus_core import report
from focus_core.errors import FocusError

__all__ = ["sample_section"]


def sample_section(engine: Engine, evals: Sequence[EvaluationData], names: dict[int, str],
                   figures: FigureWriter) -> Section:
    """Figure 1 and the recorded (and recomputed) Focus of the sample mosaic."""
    section = Section(
        "sample", "Sample mosaic and heat maps",
        "A mosaic (2x2 with two tiles of the target class in the paper; N x N with k in general) with its target "
        "tiles outlined and each method's positive relevance over it (the paper's Figure 1). Focus is the share of "
        "that relevance on the outlined tiles; a random explanation scores the chance level k/N².",
    )
    choice = _sample_choice(evals)
    if choice is None:
        section.missing = "No trained (non-randomized) evaluation with results is selected, so there is no sample mosaic to show."
        return section
    chosen, mosaic_id = choice
    first = chosen[0]
    recorded = {e.method: float(e.focus[list(e.mosaic_ids).index(mosaic_id)]) for e in chosen
                if mosaic_id in set(e.mosaic_ids.tolist())}
    try:
        mosaic, maps, recomputed, target, mask = _recompute_maps(engine, chosen, mosaic_id)
    except Exception as error:  # noqa: BLE001 - an optional figure: say why in the page, keep the rest
        reason = " ".join(str(error).split()) or type(error).__name__
        if not isinstance(error, (FocusError, OSError)):
            reason = f"{type(error).__name__}: {reason}"
        section.notes.append(
            f"The heat maps of checkpoint {names[first.checkpoint_id]} could not be recomputed ({reason}); "
            "the other figures and tables come from the recorded scores."
        )
        section.blocks.append(_recorded_focus_table(chosen, mosaic_id, recorded, {}))
        return section
    caption = (f"Mosaic {mosaic_id} of mosaic set {first.mosaic_set_id} ({first.dataset_name}, {first.split} split, "
               f"{first.grid_label}, chance level {fmt(first.chance_level)}), target class {target}, checkpoint "
               f"{names[first.checkpoint_id]} ({first.sha256[:12]}).")
    failed = {m: maps.pop(m) for m in list(maps) if isinstance(maps[m], str)}
    for method, reason in failed.items():
        section.notes.append(f"The {method} map could not be recomputed ({reason}).")
    if maps:
        figures.draw(section, "fig1-sample-mosaic", caption, "Sample mosaic with heat maps",
                     _plot_sample, mosaic, maps, mask, recomputed)
    differs = [m for m in maps if not _same(recomputed.get(m), recorded.get(m))]
    if differs:
        section.notes.append(
            "The recomputed Focus differs from the recorded one for " + ", ".join(differs)
            + ": the weights file or the method's code changed since the evaluation."
        )
    section.blocks.append(_recorded_focus_table(chosen, mosaic_id, recorded, recomputed))
    return section


def _sample_choice(evals: Sequence[EvaluationData]) -> tuple[list[EvaluationData], int] | None:
    """The trained evaluations of one checkpoint on one mosaic set (most methods) and one mosaic id."""
    finals = final_checkpoints(evals)
    groups: dict[tuple[int, int], dict[str, EvaluationData]] = defaultdict(dict)
    for e in sorted(evals, key=lambda e: e.evaluation_id):
        if e.randomization == "none" and e.n:
            groups[(e.checkpoint_id, e.mosaic_set_id)][e.method] = e  # latest per method
    if not groups:
        return None
    key = max(groups, key=lambda k: (k[0] in finals, groups[k][next(iter(groups[k]))].layout == "random",
                                     len(groups[k]), max(x.evaluation_id for x in groups[k].values())))
    chosen = sorted(groups[key].values(), key=lambda e: method_key(e.method))
    common = set(chosen[0].mosaic_ids.tolist())
    for e in chosen[1:]:
        common &= set(e.mosaic_ids.tolist())
    if not common:
        return None
    # Prefer a mosaic the model classifies right and every method explains (defined Focus), lowest position.
    first = chosen[0]
    order = np.argsort(first.positions, kind="stable")
    undefined = {mid for e in chosen for mid, f in zip(e.mosaic_ids.tolist(), e.focus.tolist()) if math.isnan(f)}
    rules = (
        lambda i, mid: mid not in undefined and first.predicted[i] == first.targets[i],
        lambda i, mid: mid not in undefined,
        lambda i, mid: True,
    )
    for wanted in rules:
        for i in order:
            mid = int(first.mosaic_ids[i])
            if mid in common and wanted(i, mid):
                return chosen, mid
    return None


def _load_dataset_for(sample: EvaluationData) -> Any:
    """The dataset the evaluation used: from its recorded request, else the bundled digits by name."""
    from flows.worker import caches
    from flows.params import DatasetSpec
    from focus_core import data

    request = (sample.metadata or {}).get("request") or {}
    if request.get("dataset"):
        return caches.load_dataset(DatasetSpec.model_validate(request["dataset"]))
    if sample.dataset_name == "digits":
        return data.load_digits(tile_size=sample.dataset_tile_size or 32)
    raise FocusError(
        f"The evaluation does not record where dataset '{sample.dataset_name}' lives; "
        "re-run it with `focus evaluate` to record its request."
    )


def _plot_sample(mosaic: Any, maps: dict, mask: Any, focus: dict, path: Path) -> Path:
    return report.plot_mosaic_explanations(mosaic, maps, path, target_quadrants=mask, focus=focus)


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= 1e-3


def _recorded_focus_table(chosen: Sequence[EvaluationData], mosaic_id: int, recorded: dict[str, float],
                          recomputed: dict[str, float]) -> str:
    rows = [
        row({"evaluation_id": e.evaluation_id, "method": e.method, "mosaic_id": mosaic_id,
             "focus": recorded.get(e.method), "recomputed": recomputed.get(e.method)},
            [str(e.evaluation_id), e.method, fmt(recorded.get(e.method)), fmt(recomputed.get(e.method))],
            numeric=[True, False, True, True])
        for e in chosen
    ]
    return '<div class="table-wrap">' + table(["evaluation", "method", "Focus (recorded)", "Focus (recomputed now)"],
                                             rows, table_id="sample-focus") + "</div>"


def _stamped(mo: db.mosaic_sets.MosaicTiles, mask: Any, dataset: Any, composed: Any, x: Any) -> tuple[Any, Any]:
    """The shown (``uint8``) and explained (normalised) mosaic with the probe set's patch, as its evaluation had it."""
    from focus_core import probes

    patch = probes.CornerPatch.parse(mo.probe)
    codes = probes.corner_codes_at(patch, mask, [mo.position], mo.num_mosaics)
    channels = int(x.shape[1])
    shown = probes.stamp(composed, codes, patch.size, probes.bright_fill(None, channels, composed.dtype, "cpu"))
    explained = probes.stamp(x, codes, patch.size, probes.bright_fill(dataset.normalize, channels, x.dtype, x.device))
    return shown, explained


def _recompute_maps(engine: Engine, chosen: Sequence[EvaluationData], mosaic_id: int) -> tuple:
    """Recompute one mosaic's maps from the checkpoint's weights file and the dataset."""
    import torch

    from focus_core import explainers, metric, models, mosaics

    first = chosen[0]
    path = first.weights_path
    if not path or not (weight_store.is_url(path) or Path(path).is_file()):
        raise FocusError(f"the weights file {path or '(not recorded)'} is gone")
    path = weight_store.local_copy(path, expected_sha256=first.sha256)  # a URL: through the cache, verified
    mo = db.mosaic_tiles(engine, mosaic_id)
    dataset = _load_dataset_for(first)
    index = {r: i for i, r in enumerate(dataset.relpaths)}
    missing = [r for r in mo.relpaths if r not in index]
    if missing:
        raise FocusError(f"the dataset loaded now has no image {missing[0]}")
    indices = torch.tensor([[index[r] for r in mo.relpaths]], dtype=torch.int64)
    composed = mosaics.compose_mosaics(dataset.tiles, indices)
    x = mosaics.compose_normalized(dataset.tiles, indices, dataset)  # the evaluation's bits: the same noise draws
    mask = torch.tensor([[bool(mo.target_mask >> p & 1) for p in range(mo.grid ** 2)]])  # (1, N²), row-major
    if mo.probe is not None:  # a probe set: the evaluation explained its mosaics with the patch stamped
        composed, x = _stamped(mo, mask, dataset, composed, x)
    target = torch.tensor([int(mo.target_class)])
    model = models.build_model(first.architecture, num_classes=first.num_classes,
                               in_channels=first.in_channels or int(dataset.tiles.shape[1]))
    model = models.load_weights(model, path).eval()
    maps: dict[str, Any] = {}
    focus: dict[str, float] = {}
    for e in chosen:
        try:
            explainer = explainers.get_explainer(e.method, **dict(e.method_params or {}))
            relevance = explainer(model, x, target).detach()
        except (FocusError, ValueError, RuntimeError, TypeError) as error:
            maps[e.method] = " ".join(str(error).split()) or type(error).__name__
            continue
        maps[e.method] = relevance[0].cpu()
        if mo.grid == 2:
            focus[e.method] = float(metric.focus_score(relevance, mask.to(relevance.device))[0])
        else:  # the N x N sums of the grid contract (focus_core.metric.tile_sums)
            sums = metric.tile_sums(relevance.float(), mo.grid)
            focus[e.method] = float(metric.focus_from_sums(sums, mask.to(sums.device))[0])
    classes = None
    try:
        classes = dataset.classes[int(mo.target_class)]
    except (IndexError, AttributeError):
        pass
    target_name = f"{int(mo.target_class)}" + (f" ('{classes}')" if classes is not None and classes != str(int(mo.target_class)) else "")
    return composed[0], maps, focus, target_name, mask[0]
