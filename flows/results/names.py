"""Names that say what a thing is: a flow run's name, and a checkpoint's name when several runs made it.

**Flow runs** (``evaluate digits_cnn gradcam``, ``train digits digits_cnn 10 epochs``). Prefect names a
flow run after what :func:`named` returns for its parameters (``flow_run_name``), so the UI's list of runs, a
parent flow's sub-runs and the logs read as the work they did instead of random words (``calculating-guppy``).

**Checkpoints.** A checkpoint is its weights (sha256): two runs with the same recipe and seed under two names
share one checkpoint, whose label is the first run's ("demo-digits epoch 8"). Wherever a checkpoint is named (the
report, the audit, the sweep), it is named by every run that produced it.

Examples
--------
>>> from flows.params import EvaluateParams
>>> evaluate_name(EvaluateParams(model={"weights": "/w.pt"}, methods=[{"name": "gradcam"}, {"name": "lrp"}]))
'evaluate digits_cnn gradcam+lrp'
>>> evaluate_name(EvaluateParams(model={"weights": "/w.pt", "label": "r18"}, randomization={"kind": "cascading",
...               "stage": 2}))
'evaluate r18 gradcam cascading 2'
>>> evaluate_name(EvaluateParams(model={"weights": "/w.pt"}, disconnected=True))
'evaluate digits_cnn gradcam disconnected'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import db

__all__ = [
    "audit_name",
    "checkpoint_name",
    "evaluate_name",
    "mark_disconnected",
    "named",
    "names_of",
    "Origins",
    "origins_of",
    "randomization_name",
    "shared_weights_notes",
    "sweep_name",
    "train_name",
]


def _model(model: Any) -> str:
    return str(model.label or model.architecture)


def _methods(methods: Any) -> str:
    return "+".join(m.name for m in methods)


def evaluate_name(params: Any) -> str:
    rnd = params.randomization
    tail = "" if rnd.kind == "none" else f" {rnd.kind}" + ("" if rnd.stage is None else f" {rnd.stage}")
    tail += f" {rnd.layer}" if rnd.kind == "independent" and rnd.layer else ""
    tail += " disconnected" if getattr(params, "disconnected", False) else ""
    return f"evaluate {_model(params.model)} {_methods(params.methods)}{tail}"


def mark_disconnected(engine: Any, frame: Any) -> Any:
    """``frame`` (rows with ``method_id`` and ``method``) with ``method`` marked "(disconnected)" where the
    evaluation explained the disconnected model (:func:`db.registry.disconnected_methods`)."""
    if not len(frame) or "method_id" not in frame or "method" not in frame:
        return frame
    marked = db.disconnected_methods(engine, [int(m) for m in frame["method_id"]])
    if not marked:
        return frame
    return frame.assign(method=[f"{name} (disconnected)" if int(m) in marked else name
                                for m, name in zip(frame["method_id"], frame["method"])])


def train_name(params: Any) -> str:
    return f"train {params.name} {params.model.architecture} {params.epochs} epochs"


def randomization_name(params: Any) -> str:
    return f"randomize {_model(params.model)} {_methods(params.methods)} {'+'.join(params.kinds)}"


def sweep_name(params: Any) -> str:
    return f"sweep {len(params.checkpoints)} checkpoints x {len(params.methods)} methods {_methods(params.methods)}"


def audit_name(params: Any) -> str:
    which = f"{len(params.checkpoints)} checkpoint(s)" if params.checkpoints else "marked checkpoints"
    return f"audit {params.name + ' ' if params.name else ''}{which} {_methods(params.methods)}"


def named(build: Callable[[Any], str], model: type) -> Callable[[], str]:
    """A ``flow_run_name`` callable: ``build`` of the run's ``params`` (validated into ``model`` when a dict)."""

    def name() -> str:
        from prefect.runtime import flow_run

        params = flow_run.parameters["params"]
        return build(params if isinstance(params, model) else model.model_validate(params))

    name.__name__ = build.__name__
    return name

#: ``{checkpoint_id: [(training run name, epoch), ...]}`` in training run order.
Origins = dict[int, list[tuple[str, int]]]


def checkpoint_name(label: str | None, origins: Sequence[tuple[str, int]]) -> str | None:
    """``label`` when at most one run produced the weights; else every run's "name epoch N", joined by " = ".

    A label that is not one run's own name (a human label) is kept in front of them.

    Examples
    --------
    >>> checkpoint_name("demo-digits epoch 8", [("demo-digits", 8), ("digits", 8)])
    'demo-digits epoch 8 = digits epoch 8'
    >>> checkpoint_name("nightly model", [("demo-digits", 8), ("digits", 8)])
    'nightly model (demo-digits epoch 8 = digits epoch 8)'
    >>> checkpoint_name("demo-digits epoch 8", [("demo-digits", 8)])
    'demo-digits epoch 8'
    """
    if len(origins) < 2:
        return label
    names = [f"{run} epoch {epoch}" for run, epoch in origins]
    joined = " = ".join(names)
    return joined if label is None or label in names else f"{label} ({joined})"


def origins_of(engine: Any, checkpoint_ids: Iterable[int]) -> Origins:
    """The training runs and epochs that produced each checkpoint (``db.checkpoint_origins``)."""
    frame = db.checkpoint_origins(engine, [int(i) for i in checkpoint_ids])
    out: Origins = {}
    for row in frame.to_dict("records"):
        out.setdefault(int(row["checkpoint_id"]), []).append((str(row["training_run_name"]), int(row["epoch"])))
    return out


def names_of(engine: Any, labels: dict[int, str | None]) -> dict[int, str | None]:
    """``{checkpoint_id: name}`` for ``{checkpoint_id: label}``: :func:`checkpoint_name` over the store's origins."""
    origins = origins_of(engine, labels)
    return {cid: checkpoint_name(label, origins.get(cid, [])) for cid, label in labels.items()}


def shared_weights_notes(origins: Origins) -> list[str]:
    """One sentence per checkpoint that several training runs (or epochs) produced byte for byte."""
    notes = []
    for cid, found in sorted(origins.items()):
        if len(found) < 2:
            continue
        runs = list(dict.fromkeys(run for run, _ in found))
        who = (f"Training runs {', '.join(runs[:-1])} and {runs[-1]}" if len(runs) > 1
               else f"Training run {runs[0]}")
        notes.append(f"{who} produced the same weights (byte-identical): checkpoint {cid} is "
                     f"{checkpoint_name(None, found)}; the store keeps one checkpoint for them "
                     "(the same recipe and seed give the same weights).")
    return notes
