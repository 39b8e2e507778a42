"""Flow-run names that say what a run does: ``evaluate digits_cnn gradcam``, ``train digits digits_cnn 10 epochs``.

Prefect names a flow run after what :func:`named` returns for its parameters (``flow_run_name``), so the
UI's list of runs, a parent flow's sub-runs and the logs read as the work they did instead of random
words (``calculating-guppy``).

Examples
--------
>>> from flows.params import EvaluateParams
>>> evaluate_name(EvaluateParams(model={"weights": "/w.pt"}, methods=[{"name": "gradcam"}, {"name": "lrp"}]))
'evaluate digits_cnn gradcam+lrp'
>>> evaluate_name(EvaluateParams(model={"weights": "/w.pt", "label": "r18"}, randomization={"kind": "cascading",
...               "stage": 2}))
'evaluate r18 gradcam cascading 2'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["audit_name", "evaluate_name", "named", "randomization_name", "sweep_name", "train_name"]


def _model(model: Any) -> str:
    return str(model.label or model.architecture)


def _methods(methods: Any) -> str:
    return "+".join(m.name for m in methods)


def evaluate_name(params: Any) -> str:
    rnd = params.randomization
    tail = "" if rnd.kind == "none" else f" {rnd.kind}" + ("" if rnd.stage is None else f" {rnd.stage}")
    tail += f" {rnd.layer}" if rnd.kind == "independent" and rnd.layer else ""
    return f"evaluate {_model(params.model)} {_methods(params.methods)}{tail}"


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
