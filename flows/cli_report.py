"""``focus report``: a static HTML page of the paper's figures and tables, built from the store.

:func:`build_report` reads the selected finished evaluations (default: all) with their
per-mosaic Focus scores, the training runs of their checkpoints, and writes ``out/index.html``
with the figures as PNG files in ``out/figures/``. Nothing on the page needs a server or the
network: the CSS is inline, the images are relative files.

What the page holds, each part only when its data is recorded (otherwise a sentence says so):

- Figure 1: one mosaic with each method's heat map, recomputed from the checkpoint's weights
  file and the dataset (a note replaces it when the weights or the data are gone);
- Figure 4: Focus distributions per method and architecture;
- summary table per evaluation (n, undefined share, median with its bootstrap 95% CI, mean,
  quartiles, mosaic accuracy) and the paired Wilcoxon comparison of methods on the same mosaics;
- Figure 3: trained vs fully random model; the cascading randomization curve;
- Figures 5 and 6: training curves with Focus, Focus vs accuracy and loss (with Pearson r);
- Figure 2: Focus per fixed positional layout of the target tiles.

Examples
--------
>>> build_report(Path("focus-report"), database_url="sqlite:///focus.db")  # doctest: +SKIP
PosixPath('focus-report/index.html')
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine

import focus_core
from db.models import Dataset, Evaluation, Image, ModelCheckpoint, Mosaic, MosaicResult, MosaicSet, TrainingEpoch, TrainingRun, XaiMethod
from flows import store
from flows.report_html import DASH, Figure, Section, fmt, fmt_p, page, row, table
from focus_core import report, stats
from focus_core.errors import FocusError

__all__ = ["build_report", "EvaluationData", "load_evaluations"]

FIGURES_DIR = "figures"
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
#: Fixed layouts in the paper's order; "random" (per-mosaic positions) is drawn last for reference.
LAYOUT_ORDER = ("top", "bottom", "left", "right", "diagonal", "antidiagonal", "random")
_METHOD_ORDER = ("gradcam", "lrp", "smoothgrad", "integrated_gradients", "gradcam++", "gradient",
                 "input_x_gradient", "random")
_RANDOMIZATION_ORDER = {"none": 0, "full": 1, "cascading": 2, "independent": 3}
_ID_CHUNK = 500  # evaluation ids per IN (...) list


# --------------------------------------------------------------------------- reading the store


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


def _training_runs(engine: Engine, run_ids: Iterable[int] | None) -> dict[int, dict[str, Any]]:
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


# --------------------------------------------------------------------------- naming and grouping


def _method_key(name: str) -> tuple[int, str]:
    return (_METHOD_ORDER.index(name) if name in _METHOD_ORDER else len(_METHOD_ORDER), name)


def _slug(*parts: Any) -> str:
    text = "-".join(str(p) for p in parts if p is not None and str(p) != "")
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:80] or "x"


def _checkpoint_names(evals: Sequence[EvaluationData]) -> dict[int, str]:
    """A short unique name per checkpoint: its label, else its architecture (and id when shared)."""
    base = {}
    for e in evals:
        name = e.checkpoint_label or e.architecture
        if e.epoch is not None and not e.checkpoint_label:
            name += f" epoch {e.epoch}"
        base[e.checkpoint_id] = name
    counts = defaultdict(int)
    for name in base.values():
        counts[name] += 1
    return {cid: (name if counts[name] == 1 else f"{name} #{cid}") for cid, name in base.items()}


def _latest(evals: Iterable[EvaluationData]) -> EvaluationData:
    return max(evals, key=lambda e: e.evaluation_id)


def _final_checkpoints(evals: Sequence[EvaluationData]) -> set[int]:
    """Checkpoints that are not an intermediate epoch of a training run (per-epoch ones are for Figure 5)."""
    last_epoch: dict[int, int] = {}
    for e in evals:
        if e.training_run_id is not None and e.epoch is not None:
            last_epoch[e.training_run_id] = max(last_epoch.get(e.training_run_id, e.epoch), e.epoch)
    return {e.checkpoint_id for e in evals
            if e.training_run_id is None or e.epoch is None or e.epoch == last_epoch[e.training_run_id]}


# --------------------------------------------------------------------------- the build


class _Figures:
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


def build_report(out: Path, database_url: str | None = None, evaluations: list[int] | None = None) -> Path:
    """Build the static HTML report of the selected evaluations and return the path of ``index.html``.

    Parameters
    ----------
    out : Path
        Directory of the report; ``index.html`` and ``figures/*.png`` are written there (figures
        of an earlier build in that folder are replaced).
    database_url : str, optional
        The store (default ``FOCUS_DATABASE_URL``, else ``sqlite:///focus.db``).
    evaluations : list of int, optional
        Evaluation ids to report; default every finished evaluation. Unfinished ones among them
        are left out with a note.

    Returns
    -------
    Path
        ``out / "index.html"``.

    Raises
    ------
    FocusError
        When there is no finished evaluation to report, or a selected id is unknown.
    db.errors.StoreError
        When the database cannot be opened or is not at the current schema.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FocusError(f"The report folder '{out}' is a file: pass a directory with --out.")
    engine = store.engine_for(database_url)
    url_text = store.describe(database_url)
    evals, notes = load_evaluations(engine, evaluations, url_text)
    run_ids = None if evaluations is None else {e.training_run_id for e in evals if e.training_run_id is not None}
    runs = _training_runs(engine, run_ids)

    out.mkdir(parents=True, exist_ok=True)
    figures = _Figures(out)
    names = _checkpoint_names(evals)
    sections = [
        _sample_mosaic_section(engine, evals, names, figures),
        _distributions_section(evals, names, runs, figures),
        _summary_section(evals, names),
        _paired_section(evals, names),
        _trained_vs_random_section(evals, names, figures),
        _cascading_section(evals, names, figures),
        _training_section(evals, runs, figures),
        _layout_section(evals, names, figures),
    ]
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    methods = sorted({e.method for e in evals}, key=_method_key)
    header = [
        f"Generated {now} by focus-audit {focus_core.__version__} from {url_text}.",
        f"{len(evals)} finished evaluation(s) of {len({e.checkpoint_id for e in evals})} checkpoint(s) "
        f"on {len({e.mosaic_set_id for e in evals})} mosaic set(s); methods: {', '.join(methods)}"
        + ("." if evaluations is None else f"; selection: {', '.join(map(str, sorted(set(evaluations))))}."),
    ]
    finished = sorted(pd.to_datetime([e.finished_at for e in evals if e.finished_at is not None], utc=True))
    if finished:
        first, last = (f"{t:%Y-%m-%d %H:%M} UTC" for t in (finished[0], finished[-1]))
        header.append(f"Evaluations finished {first}" + ("" if first == last else f" to {last}") + ".")
    sections[0].notes[:0] = notes
    footer = (
        "Focus = (R_t1 + R_t2) / (R_1 + R_2 + R_3 + R_4), the share of an explanation's positive relevance that "
        "lands on the two target-class tiles of a 2x2 mosaic (Arias-Duart et al.). About 0.5 is what a random "
        "explanation scores; a faithful method on a good model approaches 1. Undefined scores (no positive "
        "relevance) are counted apart, never as 0 or 0.5."
    )
    index = out / "index.html"
    partial = out / ".index.html.tmp"
    partial.write_text(page("Focus report", header, sections, footer), encoding="utf-8")
    os.replace(partial, index)
    return index


# --------------------------------------------------------------------------- figure 1


def _sample_choice(evals: Sequence[EvaluationData]) -> tuple[list[EvaluationData], int] | None:
    """The trained evaluations of one checkpoint on one mosaic set (most methods) and one mosaic id."""
    finals = _final_checkpoints(evals)
    groups: dict[tuple[int, int], dict[str, EvaluationData]] = defaultdict(dict)
    for e in sorted(evals, key=lambda e: e.evaluation_id):
        if e.randomization == "none" and e.n:
            groups[(e.checkpoint_id, e.mosaic_set_id)][e.method] = e  # latest per method
    if not groups:
        return None
    key = max(groups, key=lambda k: (k[0] in finals, groups[k][next(iter(groups[k]))].layout == "random",
                                     len(groups[k]), max(x.evaluation_id for x in groups[k].values())))
    chosen = sorted(groups[key].values(), key=lambda e: _method_key(e.method))
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
    from flows import resources
    from flows.params import DatasetSpec
    from focus_core import data

    request = (sample.metadata or {}).get("request") or {}
    if request.get("dataset"):
        return resources.load_dataset(DatasetSpec.model_validate(request["dataset"]))
    if sample.dataset_name == "digits":
        return data.load_digits(tile_size=sample.dataset_tile_size or 32)
    raise FocusError(
        f"The evaluation does not record where dataset '{sample.dataset_name}' lives; "
        "re-run it with `focus evaluate` to record its request."
    )


def _sample_mosaic_section(engine: Engine, evals: Sequence[EvaluationData], names: dict[int, str],
                           figures: _Figures) -> Section:
    section = Section(
        "sample", "Sample mosaic and heat maps",
        "A 2x2 mosaic with two tiles of the target class (outlined) and each method's positive relevance over it "
        "(the paper's Figure 1). Focus is the share of that relevance on the outlined tiles.",
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
    caption = (f"Mosaic {mosaic_id} of mosaic set {first.mosaic_set_id} ({first.dataset_name}, {first.split} split), "
               f"target class {target}, checkpoint {names[first.checkpoint_id]} ({first.sha256[:12]}).")
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


def _recompute_maps(engine: Engine, chosen: Sequence[EvaluationData], mosaic_id: int) -> tuple:
    """Recompute one mosaic's maps from the checkpoint's weights file and the dataset."""
    import torch

    from focus_core import explainers, metric, models, mosaics

    first = chosen[0]
    path = first.weights_path
    if not path or not Path(path).is_file():
        raise FocusError(f"the weights file {path or '(not recorded)'} is gone")
    if models.weights_sha256(path) != first.sha256:
        raise FocusError(f"the weights file {path} changed since it was recorded (its sha256 differs)")
    with engine.connect() as connection:
        mo = connection.execute(select(Mosaic).where(Mosaic.id == mosaic_id)).one()
        image_ids = [mo.image_tl, mo.image_tr, mo.image_bl, mo.image_br]
        relpaths = dict(connection.execute(select(Image.id, Image.relpath).where(Image.id.in_(image_ids))).all())
    dataset = _load_dataset_for(first)
    index = {r: i for i, r in enumerate(dataset.relpaths)}
    missing = [relpaths[i] for i in image_ids if relpaths[i] not in index]
    if missing:
        raise FocusError(f"the dataset loaded now has no image {missing[0]}")
    indices = torch.tensor([[index[relpaths[i]] for i in image_ids]], dtype=torch.int64)
    composed = mosaics.compose_mosaics(dataset.tiles, indices)
    x = dataset.normalize(composed)
    mask = torch.tensor([[bool(mo.target_mask >> q & 1) for q in range(4)]])
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
        focus[e.method] = float(metric.focus_score(relevance, mask.to(relevance.device))[0])
    classes = None
    try:
        classes = dataset.classes[int(mo.target_class)]
    except (IndexError, AttributeError):
        pass
    target_name = f"{int(mo.target_class)}" + (f" ('{classes}')" if classes is not None and classes != str(int(mo.target_class)) else "")
    return composed[0], maps, focus, target_name, mask[0]


# --------------------------------------------------------------------------- figure 4 and the tables


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


def _distributions_section(evals: Sequence[EvaluationData], names: dict[int, str], runs: dict[int, dict[str, Any]],
                           figures: _Figures) -> Section:
    section = Section(
        "distributions", "Focus per method and architecture",
        "Distribution of Focus over the mosaics, one violin per method and one panel per checkpoint (the paper's "
        "Figure 4): the white dot is the median, the bar the interquartile range, the dashed line 0.5 (random).",
    )
    finals = _final_checkpoints(evals)
    accuracy = _accuracy_by_checkpoint(evals, runs)
    by_dataset: dict[str, dict[int, dict[str, list[EvaluationData]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for e in evals:
        if e.randomization == "none" and e.layout == "random" and e.n and e.checkpoint_id in finals:
            by_dataset[e.dataset_name][e.checkpoint_id][e.method].append(e)
    if not by_dataset:
        section.missing = "No trained evaluation on a random-layout mosaic set is selected."
        return section
    for dataset_name, checkpoints in sorted(by_dataset.items()):
        scores = {}
        acc = {}
        used = []
        for cid in sorted(checkpoints, key=lambda c: names[c]):
            methods = {}
            for method in sorted(checkpoints[cid], key=_method_key):
                # prefer the test split, then the latest evaluation
                pick = max(checkpoints[cid][method], key=lambda e: (e.split == "test", e.evaluation_id))
                methods[method] = pick.focus
                used.append(pick.evaluation_id)
            scores[names[cid]] = methods
            if cid in accuracy:
                acc[names[cid]] = accuracy[cid]
        caption = (f"Dataset {dataset_name}; evaluations {', '.join(map(str, sorted(used)))}. "
                   + ("acc: mean per-class validation accuracy of the checkpoint's epoch." if acc else ""))
        figures.draw(section, f"fig4-{_slug(dataset_name)}", caption, f"Focus distributions on {dataset_name}",
                     report.plot_focus_distributions, scores, accuracy_by_group=acc or None)
    return section


_SUMMARY_TITLES = {
    "checkpoint": "label, else architecture and epoch; hover for the sha256 of the weights",
    "mosaic set": "id, split and layout; hover for the dataset and mosaics per class",
    "audit": "audit run id",
    "n": "mosaics scored",
    "undefined": "share of mosaics without positive relevance (Focus undefined)",
    "median": "median Focus of the defined scores",
    f"{int(CONFIDENCE * 100)}% CI of median": f"percentile bootstrap, {BOOTSTRAP_RESAMPLES} resamples, seed 0",
    "q1": "first quartile",
    "q3": "third quartile",
    "mosaic acc.": "mosaic accuracy: share of mosaics whose predicted class is the target class",
}


def _checkpoint_cell(e: EvaluationData, names: dict[int, str]) -> tuple[str, str]:
    where = f", weights {e.weights_path}" if e.weights_path else ""
    return names[e.checkpoint_id], f"{e.architecture}, sha256 {e.sha256[:16]}{where}"


def _mosaic_set_cell(e: EvaluationData) -> tuple[str, str]:
    return (f"#{e.mosaic_set_id} {e.split}, {e.layout}",
            f"dataset {e.dataset_name}, {e.per_class} mosaics per class, seed {e.set_seed}")


def _summary_section(evals: Sequence[EvaluationData], names: dict[int, str]) -> Section:
    section = Section(
        "summary", "Summary per evaluation",
        "One row per evaluation (checkpoint x method x mosaic set x randomization). Statistics are over the defined "
        "Focus scores; the confidence interval of the median is a percentile bootstrap. Hover a header or a "
        "checkpoint for details.",
    )
    with_architecture = any(e.checkpoint_label for e in evals)
    with_audit = any(e.audit_run_id is not None for e in evals)
    headers = (["evaluation", "checkpoint"] + (["architecture"] if with_architecture else [])
               + ["method", "mosaic set", "randomization"] + (["audit"] if with_audit else [])
               + ["n", "undefined", "median", f"{int(CONFIDENCE * 100)}% CI of median", "mean", "q1", "q3",
                  "mosaic acc."])
    rows = []
    for e in sorted(evals, key=lambda e: (e.checkpoint_id, e.mosaic_set_id, _RANDOMIZATION_ORDER.get(e.randomization, 9),
                                          e.stage or 0, str(e.layer), _method_key(e.method), e.evaluation_id)):
        s = e.summary
        checkpoint, checkpoint_tip = _checkpoint_cell(e, names)
        mosaic_set, mosaic_set_tip = _mosaic_set_cell(e)
        cells = ([str(e.evaluation_id), checkpoint] + ([e.architecture] if with_architecture else [])
                 + [e.method, mosaic_set, e.randomization_label]
                 + ([DASH if e.audit_run_id is None else str(e.audit_run_id)] if with_audit else [])
                 + [fmt(s["n"]), fmt(s["share_undefined"]), fmt(s["median"]), _ci_text(e.ci), fmt(s["mean"]),
                    fmt(s["q1"]), fmt(s["q3"]), fmt(e.mosaic_accuracy)])
        text_columns = {"checkpoint", "architecture", "method", "mosaic set", "randomization"}
        tips = {"checkpoint": checkpoint_tip, "mosaic set": mosaic_set_tip}
        rows.append(row(
            {"evaluation_id": e.evaluation_id, "checkpoint_id": e.checkpoint_id, "method": e.method,
             "mosaic_set_id": e.mosaic_set_id, "randomization": e.randomization, "stage": e.stage,
             "audit_run_id": e.audit_run_id, "n": s["n"], "n_defined": s["n_defined"],
             "share_undefined": s["share_undefined"], "median": s["median"], "ci_low": e.ci[0], "ci_high": e.ci[1],
             "mean": s["mean"], "q1": s["q1"], "q3": s["q3"], "mosaic_accuracy": e.mosaic_accuracy},
            cells,
            numeric=[h not in text_columns for h in headers],
            titles=[tips.get(h) for h in headers],
        ))
    section.blocks.append('<div class="table-wrap">' + table(headers, rows, table_id="summary-table",
                                                             titles=[_SUMMARY_TITLES.get(h) for h in headers])
                          + "</div>")
    return section


def _ci_text(ci: tuple[float, float]) -> str:
    if any(math.isnan(v) for v in ci):
        return DASH
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _paired_rows(evals: Sequence[EvaluationData], names: dict[int, str]) -> tuple[list[str], list[str]]:
    """Wilcoxon rows for every pair of methods on the same mosaics: (trained rows, randomized rows)."""
    groups: dict[tuple, dict[str, EvaluationData]] = defaultdict(dict)
    for e in sorted(evals, key=lambda e: e.evaluation_id):
        if e.n:
            groups[(e.checkpoint_id, e.mosaic_set_id, e.randomization, e.stage, e.layer, e.audit_run_id)][e.method] = e
    trained, randomized = [], []
    for key in sorted(groups, key=lambda k: (k[0], k[1], _RANDOMIZATION_ORDER.get(k[2], 9), k[3] or 0, str(k[4]),
                                             k[5] or 0)):
        methods = sorted(groups[key].values(), key=lambda e: _method_key(e.method))
        for a, b in itertools.combinations(methods, 2):
            common, ia, ib = np.intersect1d(a.mosaic_ids, b.mosaic_ids, return_indices=True)
            if common.size == 0:
                continue
            result = stats.paired_test(a.focus[ia], b.focus[ib])
            significant = not math.isnan(result["p_value"]) and result["p_value"] < 0.05
            if result["n"] == 0:
                verdict = "no defined pair"
            elif not significant:
                verdict = "not significant"
            else:
                a_higher = (result["median_difference"], result["mean_difference"]) > (0.0, 0.0)
                verdict = f"{a.method if a_higher else b.method} higher"
            target = trained if a.randomization == "none" else randomized
            target.append(row(
                {"evaluation_a": a.evaluation_id, "evaluation_b": b.evaluation_id, "method_a": a.method,
                 "method_b": b.method, "n": result["n"], "median_difference": result["median_difference"],
                 "mean_difference": result["mean_difference"], "statistic": result["statistic"],
                 "p_value": result["p_value"]},
                [_checkpoint_cell(a, names)[0], _mosaic_set_cell(a)[0], a.randomization_label,
                 f"{a.method} #{a.evaluation_id}", f"{b.method} #{b.evaluation_id}",
                 fmt(result["n"]), fmt(result["median_difference"]), fmt(result["mean_difference"]),
                 fmt(result["statistic"]), fmt_p(result["p_value"]), verdict],
                numeric=[False, False, False, False, False, True, True, True, True, True, False],
                classes=[""] * 9 + (["sig"] if significant else [""]) + [""],
                titles=[_checkpoint_cell(a, names)[1], _mosaic_set_cell(a)[1]],
            ))
    return trained, randomized


_PAIRED_HEADERS = ["checkpoint", "mosaic set", "randomization", "method A #evaluation", "method B #evaluation",
                   "pairs", "median A−B", "mean A−B", "W", "p-value", "at 0.05"]


def _paired_section(evals: Sequence[EvaluationData], names: dict[int, str]) -> Section:
    section = Section(
        "paired", "Paired comparison of methods",
        "Two methods on the same mosaics of the same model: Wilcoxon signed-rank test of the per-mosaic differences "
        "A − B (mosaics where either Focus is undefined are dropped). A small p-value says the methods differ "
        "systematically on these mosaics.",
    )
    trained, randomized = _paired_rows(evals, names)
    if not trained and not randomized:
        section.missing = "No two methods were evaluated on the same mosaics of the same model, so there is nothing to pair."
        return section
    if trained:
        section.blocks.append('<div class="table-wrap">' + table(_PAIRED_HEADERS, trained, table_id="paired-table") + "</div>")
    else:
        section.missing = "No two methods were evaluated on the same mosaics of a trained model."
    if randomized:
        section.blocks.append(
            f"<details><summary>Randomized models ({len(randomized)} comparison{'s' if len(randomized) != 1 else ''})</summary>"
            '<div class="table-wrap">' + table(_PAIRED_HEADERS, randomized, table_id="paired-randomized-table")
            + "</div></details>"
        )
    return section


# --------------------------------------------------------------------------- randomization


def _trained_vs_random_section(evals: Sequence[EvaluationData], names: dict[int, str], figures: _Figures) -> Section:
    section = Section(
        "randomization", "Trained vs random model",
        "Focus of the trained model and of a fully randomized copy on the same mosaics (the paper's Figure 3): a "
        "faithful method falls to about 0.5 on the random model.",
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
    pairs = sorted(set(trained) & set(random), key=lambda k: (k[0], _method_key(k[1]), k[2]))
    if not pairs:
        section.missing = ("No full randomization evaluation is selected (with its trained counterpart on the same "
                           "mosaics): run `focus randomize` to add one.")
        return section
    for cid, method, set_id in pairs:
        t, r = _latest(trained[(cid, method, set_id)]), _latest(random[(cid, method, set_id)])
        caption = (f"{method} on {names[cid]}, mosaic set {set_id}: trained evaluation {t.evaluation_id} "
                   f"(median {fmt(t.summary['median'])}), random evaluation {r.evaluation_id} (median {fmt(r.summary['median'])}).")
        figures.draw(section, f"fig3-{_slug(names[cid], method, set_id)}", caption,
                     f"Trained vs random: {method} on {names[cid]}", report.plot_trained_vs_random,
                     t.focus, r.focus, method=method)
    return section


def _cascading_section(evals: Sequence[EvaluationData], names: dict[int, str], figures: _Figures) -> Section:
    section = Section(
        "cascading", "Cascading randomization",
        "Median Focus (band: interquartile range) as the layers are re-initialised from the top down (Adebayo et "
        "al.): the first point is the trained model; Focus should fall to about 0.5 once the top layer is random.",
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
        methods = sorted({e.method for e in cascading}, key=_method_key)
        medians, q1s, q3s = {}, {}, {}
        for method in methods:
            series = []
            for stage in [None] + stages:
                hits = [e for e in members if e.method == method and (
                    (stage is None and e.randomization == "none") or (e.randomization == "cascading" and e.stage == stage))]
                series.append(_latest(hits).summary if hits else None)
            medians[method] = [math.nan if s is None else s["median"] for s in series]
            q1s[method] = [math.nan if s is None else s["q1"] for s in series]
            q3s[method] = [math.nan if s is None else s["q3"] for s in series]
        caption = f"{names[cid]}, mosaic set {set_id}: {len(stages)} stage(s), methods {', '.join(methods)}."
        drawn |= figures.draw(section, f"fig-cascading-{_slug(names[cid], set_id)}", caption,
                              f"Cascading randomization of {names[cid]}", report.plot_cascading_randomization,
                              labels, medians, q1_by_method=q1s, q3_by_method=q3s)
    if not drawn and not section.notes:
        section.missing = "No cascading randomization stage is recorded for the selection: run `focus randomize` with kind cascading."
    return section


# --------------------------------------------------------------------------- training


def _epoch_records(run: dict[str, Any], evals: Sequence[EvaluationData]) -> tuple[list[dict[str, Any]], str]:
    """Figure 5/6 records of a run: epoch metrics plus Focus per method (from per-epoch evaluations when recorded)."""
    run_id = run["run"]["id"]
    candidates = [e for e in evals
                  if e.training_run_id == run_id and e.epoch is not None and e.randomization == "none" and e.n]
    # Focus per epoch is measured on one fixed mosaic set: the set evaluated in the most epochs.
    epochs_per_set: dict[int, set[int]] = defaultdict(set)
    for e in candidates:
        epochs_per_set[e.mosaic_set_id].add(e.epoch)
    per_epoch: dict[tuple[int, str], list[EvaluationData]] = defaultdict(list)
    if epochs_per_set:
        fixed = max(epochs_per_set, key=lambda s: (len(epochs_per_set[s]), -s))
        for e in candidates:
            if e.mosaic_set_id == fixed:
                per_epoch[(e.epoch, e.method)].append(e)
    records, source = [], "per-epoch evaluations"
    fallback = _recorded_focus_name(run["run"].get("config"))
    for epoch in run["epochs"]:
        record = {k: epoch.get(k) for k in ("epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy",
                                             "val_mean_class_accuracy")}
        methods = {m for (ep, m) in per_epoch if ep == epoch["epoch"]}
        for method in methods:
            s = _latest(per_epoch[(epoch["epoch"], method)]).summary
            record[f"focus_{method}"] = s["median"]
            record[f"focus_{method}_q1"] = s["q1"]
            record[f"focus_{method}_q3"] = s["q3"]
        records.append(record)
    if not per_epoch:
        source = "the training run's recorded median Focus per epoch"
        for record, epoch in zip(records, run["epochs"]):
            if epoch.get("focus_median") is not None:
                record[f"focus_{fallback}"] = epoch["focus_median"]
    return records, source


def _recorded_focus_name(config: Any) -> str:
    try:
        methods = (config or {}).get("focus_methods") or []
        if len(methods) == 1:
            return str(methods[0]["name"] if isinstance(methods[0], dict) else methods[0])
    except (AttributeError, KeyError, TypeError):
        pass
    return "recorded"


def _training_section(evals: Sequence[EvaluationData], runs: dict[int, dict[str, Any]], figures: _Figures) -> Section:
    section = Section(
        "training", "Training curves and Focus",
        "Loss and accuracy per epoch with the median Focus on the fixed validation mosaic set (the paper's Figure 5), "
        "and Focus against validation accuracy and loss with Pearson's r (Figure 6).",
    )
    if not runs:
        section.missing = "No training run recorded for the selection: train with `focus train` (or `focus demo`) to see Focus per epoch."
        return section
    for run_id, run in sorted(runs.items()):
        info = run["run"]
        name = info.get("name") or f"run {run_id}"
        records, source = _epoch_records(run, evals)
        section.blocks.append(f"<h3>{_esc(name)} ({_esc(info['architecture'])}, training run {run_id}, "
                              f"{len(records)} epoch(s), {_esc(info['status'])})</h3>")
        start = len(section.figures)
        figures.draw(section, f"fig5-{_slug(name, run_id)}", f"Training run {run_id}; Focus from {source}.",
                     f"Training curves of {name}", report.plot_training_curves, records)
        if any(k.startswith("focus_") for r in records for k in r):
            figures.draw(section, f"fig6-{_slug(name, run_id)}", f"Training run {run_id}: one point per epoch.",
                         f"Focus vs accuracy and loss of {name}", report.plot_focus_vs_metrics, records)
        else:
            section.notes.append(f"Training run {run_id} recorded no Focus per epoch, so Focus vs accuracy is not drawn.")
        # keep each run's figures next to its heading
        section.blocks.append('<div class="figures">' + "\n".join(f.render() for f in section.figures[start:]) + "</div>")
        del section.figures[start:]
        section.blocks.append(_epochs_table(run_id, records))
    return section


def _esc(text: Any) -> str:
    return html.escape(str(text))


def _epochs_table(run_id: int, records: list[dict[str, Any]]) -> str:
    methods = sorted({k[len("focus_"):] for r in records for k in r
                      if k.startswith("focus_") and not k.endswith(("_q1", "_q3"))}, key=_method_key)
    headers = ["epoch", "train loss", "val loss", "train accuracy", "val accuracy", "val mean class accuracy"]
    headers += [f"Focus median ({m})" for m in methods]
    rows = []
    for r in records:
        values = [r.get("train_loss"), r.get("val_loss"), r.get("train_accuracy"), r.get("val_accuracy"),
                  r.get("val_mean_class_accuracy")] + [r.get(f"focus_{m}") for m in methods]
        data = {"training_run_id": run_id, "epoch": r["epoch"], "val_accuracy": r.get("val_accuracy"),
                "val_loss": r.get("val_loss")}
        data.update({f"focus_{_slug(m)}": r.get(f"focus_{m}") for m in methods})
        rows.append(row(data, [str(r["epoch"])] + [fmt(v) for v in values], numeric=[True] * (1 + len(values))))
    corr_rows = []
    for m in methods:
        for key, label in (("val_accuracy", "val accuracy"), ("val_loss", "val loss")):
            x = [math.nan if r.get(key) is None else r[key] for r in records]
            y = [math.nan if r.get(f"focus_{m}") is None else r[f"focus_{m}"] for r in records]
            try:
                rho, p = stats.pearson(x, y)
                n = int(np.sum(~(np.isnan(np.asarray(x, float)) | np.isnan(np.asarray(y, float)))))
            except FocusError:
                rho, p, n = math.nan, math.nan, int(np.sum(~(np.isnan(np.asarray(x, float)) | np.isnan(np.asarray(y, float)))))
            corr_rows.append(row({"training_run_id": run_id, "method": m, "metric": key, "n": n, "r": rho, "p_value": p},
                                 [m, label, fmt(n), fmt(rho), fmt_p(p)],
                                 numeric=[False, False, True, True, True]))
    html_text = '<div class="table-wrap">' + table(headers, rows, table_id=f"epochs-{run_id}") + "</div>"
    if corr_rows:
        html_text += ('<div class="table-wrap">' + table(["method", "against", "epochs", "Pearson r", "p-value"],
                                                         corr_rows, table_id=f"correlation-{run_id}")
                      + "</div><p class=\"caption\">Pearson r needs at least 3 epochs with both values (a dash otherwise).</p>")
    return html_text


# --------------------------------------------------------------------------- figure 2


def _layout_section(evals: Sequence[EvaluationData], names: dict[int, str], figures: _Figures) -> Section:
    section = Section(
        "layouts", "Position of the target tiles",
        "Focus per fixed arrangement of the two target tiles (the paper's Figure 2), with the random arrangement for "
        "reference: a method or model biased towards a region of the image scores differently per layout.",
    )
    groups: dict[tuple[int, str, str], dict[str, list[EvaluationData]]] = defaultdict(lambda: defaultdict(list))
    for e in evals:
        if e.randomization == "none" and e.n:
            groups[(e.checkpoint_id, e.method, e.dataset_name)][e.layout].append(e)
    fixed = {k: v for k, v in groups.items() if any(layout != "random" for layout in v)}
    if not fixed:
        section.missing = ("No fixed-layout mosaic set is evaluated in the selection: evaluate with a mosaic layout such "
                           "as top, bottom or diagonal to see the positional test.")
        return section
    for (cid, method, dataset_name), by_layout in sorted(fixed.items(), key=lambda kv: (kv[0][0], _method_key(kv[0][1]))):
        order = [lay for lay in LAYOUT_ORDER if lay in by_layout] + sorted(set(by_layout) - set(LAYOUT_ORDER))
        chosen = {lay: _latest(by_layout[lay]) for lay in order}
        caption = (f"{method} on {names[cid]} ({dataset_name}); evaluations "
                   + ", ".join(f"{lay} {e.evaluation_id}" for lay, e in chosen.items()) + ".")
        figures.draw(section, f"fig2-{_slug(names[cid], method)}", caption, f"Focus per layout: {method} on {names[cid]}",
                     report.plot_layout_boxplots, {lay: e.focus for lay, e in chosen.items()})
    return section
