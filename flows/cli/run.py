"""The ``focus`` commands that run a flow: train, evaluate, randomize, sweep and audit.

Each command builds the flow's pydantic parameters (:mod:`flows.params`) from its options (over
the ``--params`` file), checks them (:mod:`flows.cli.checks`, then the worker's :mod:`flows.worker.preflight`)
and runs the flow in this process with :func:`run_flow`.

Examples
--------
>>> _checkpoint_spec("resnet18=/models/r18.pt", None)
{'weights': '/models/r18.pt', 'architecture': 'resnet18'}
>>> _json_safe({"median": float("nan"), "values": [1.0, float("inf")]})
{'median': None, 'values': [1.0, None]}
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import time
from typing import Any

from flows.cli import local_api
from flows.cli import params as opts
from flows.cli.checks import check_device, check_inputs
from flows.cli.console import chunk_moves, duration, epoch_moves, progress, quiet_prefect_console
from flows.cli.errors import UsageError, info, quiet_user_error_tracebacks

__all__ = [
    "cmd_audit",
    "cmd_evaluate",
    "cmd_randomize",
    "cmd_sweep",
    "cmd_train",
    "prefect_target",
    "training_params",
    "print_result",
    "run_flow",
]


def _load_flow(module: str, name: str) -> Any:
    return getattr(importlib.import_module(f"flows.{module}"), name)


def _build(model_name: str, fields: dict[str, Any], params_file: str | None = None) -> Any:
    """Validate ``fields`` (over the ``--params`` file) into the flow's parameter model."""
    from flows import params as flow_params

    model = getattr(flow_params, model_name)
    merged = opts.deep_merge(opts.load_params_file(params_file), fields)
    return model.model_validate(merged)


def prefect_target() -> str:
    """Where flows run: the server of PREFECT_API_URL (env or settings), else Prefect's local mode."""
    local = local_api.current_url()
    if local:
        return f"Prefect's local mode (a temporary API at {local}, stopped when this command ends)"
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        try:
            from prefect.settings import PREFECT_API_URL

            url = PREFECT_API_URL.value()
        except Exception:  # noqa: BLE001 - settings unavailable: the local mode
            url = None
    return f"the Prefect API at {url}" if url else "Prefect's local mode (a temporary API that this command starts)"


def run_flow(module: str, flow_name: str, params: Any, *, announce: bool = True, verbose: bool | None = None) -> Any:
    """Run ``flows.<module>.<flow_name>(params=params)`` here (ephemeral mode or PREFECT_API_URL).

    The device, paths, the model, its weights, GradCAM's layer and the request's size are checked first, so a user's
    mistake ends in seconds with one line; then, without PREFECT_API_URL, the temporary Prefect API
    starts (:mod:`flows.cli.local_api`, once per process); ``announce`` prints where the flow runs and
    how long it took. ``verbose`` False keeps Prefect's console lines below warnings from the moment Prefect is
    loaded (:func:`flows.cli.console.quiet_prefect_console`; a mistake found before never loads it); ``None``
    leaves the console as the caller set it.
    """
    from flows.worker import store  # the store's modules (SQLAlchemy, pandas): loaded when a flow runs, not for --help

    check_device(params)
    check_inputs(params)
    if not getattr(params, "deployment", None):  # a sweep fanned out writes to its workers' stores
        url = params.run.database_url
        created = prepare_store(url)
        if created and announce:
            info(f"created the schema (revision {created}) in the new store {store.describe(url)}")
    from flows.worker import preflight  # the worker's own pre-flight, here before Prefect starts (imports torch)

    preflight.check_model(params)
    preflight.check_request_size(params)
    with quiet_prefect_console(verbose) if verbose is not None else contextlib.nullcontext():
        return _run_here(module, flow_name, params, announce)


def _run_here(module: str, flow_name: str, params: Any, announce: bool) -> Any:
    """Start the local API if needed and run the flow (announced, with its progress bar)."""
    local_api.ensure_started()
    flow = _load_flow(module, flow_name)
    quiet_user_error_tracebacks()
    if not announce:
        return flow(params=params)
    info(f"running flow {flow_name!r} on {prefect_target()}")
    started = time.monotonic()
    desc, total, moves = _progress_moves(module, params)
    with progress(desc, desc, total, moves):
        result = flow(params=params)
    info(f"flow {flow_name!r} finished in {duration(time.monotonic() - started)}")
    return result


def prepare_store(url: str | None) -> str | None:
    """:func:`flows.worker.store.prepare` before Prefect: a fresh SQLite file gets the schema, another is checked."""
    from flows.worker import store

    return store.prepare(url)


def _progress_moves(module: str, params: Any) -> tuple[str, int | None, dict[str, Any]]:
    """What the flow's log lines move: epochs for train, chunks for the evaluating flows."""
    if module == "train":
        return "epochs", int(params.epochs), epoch_moves()
    return "chunks", None, chunk_moves()


def print_result(result: Any) -> None:
    """Print what a flow returned: a table as text, anything else as JSON."""
    if result is None:
        return
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(result, pd.DataFrame):
        print(result.to_string(index=False))
        return
    if hasattr(result, "model_dump"):
        result = result.model_dump(mode="json")
    print(json.dumps(_json_safe(result), indent=2, default=str))


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null, so the printed result is valid JSON."""
    from flows.results.artifacts import json_safe

    return json_safe(value)


def _parameters(args: argparse.Namespace, model_name: str, **fields: Any) -> Any:
    """The flow's parameters: the options given (:func:`flows.cli.params.given`) and ``fields``, over ``--params``."""
    return _build(model_name, {**opts.given(args), **fields}, args.params)


def _verbose(args: argparse.Namespace) -> bool:
    """``--verbose``: Prefect's own console lines too."""
    return bool(getattr(args, "verbose", False))


def training_params(args: argparse.Namespace) -> Any:
    """The validated ``TrainParams`` of a ``focus train`` command line (its options over its ``--params`` file)."""
    return _build("TrainParams", opts.given(args), getattr(args, "params", None))


def cmd_train(args: argparse.Namespace) -> Any:
    return run_flow("train", "train", training_params(args), verbose=_verbose(args))


def cmd_evaluate(args: argparse.Namespace) -> Any:
    return run_flow("evaluate", "evaluate", _parameters(args, "EvaluateParams"), verbose=_verbose(args))


def cmd_randomize(args: argparse.Namespace) -> Any:
    return run_flow("randomization", "randomization", _parameters(args, "RandomizationParams"),
                    verbose=_verbose(args))


def _checkpoint_spec(text: str, default_arch: str | None) -> dict[str, Any]:
    arch, sep, weights = text.partition("=")
    if not sep or "/" in arch or "://" in arch:  # no architecture prefix: the '=' belongs to a path or URL
        arch, sep, weights = "", "", text
    spec: dict[str, Any] = {"weights": opts.absolute(weights)}
    if sep and arch:
        spec["architecture"] = arch
    elif default_arch:
        spec["architecture"] = default_arch
    return spec


def cmd_sweep(args: argparse.Namespace) -> Any:
    checkpoints = [_checkpoint_spec(c, args.arch) for c in args.checkpoints or []]
    params = _parameters(args, "SweepParams", **({"checkpoints": checkpoints} if checkpoints else {}))
    if args.deployment and not os.environ.get("PREFECT_API_URL"):
        raise UsageError(
            "--deployment fans the cells out to a work pool, which needs a Prefect server: set PREFECT_API_URL "
            "(e.g. http://127.0.0.1:4200/api) or leave --deployment out to run the cells here."
        )
    return run_flow("sweep", "sweep", params, verbose=_verbose(args))


def cmd_audit(args: argparse.Namespace) -> Any:
    result = run_flow("audit", "audit", _parameters(args, "AuditParams"), verbose=_verbose(args))
    if getattr(args, "format", "text") != "json":
        return result  # the summary (flows.cli.flow_summaries.audit_summary)
    from flows.audit import REGRESSION_KEYS

    regressions = [{key: regression[key] for key in REGRESSION_KEYS} for regression in result["regressions"]]
    print(json.dumps(_json_safe({"audit_run_id": result["audit_run_id"], "regressions": regressions,
                                 "class_regressions": result.get("class_regressions") or []})))
    return None  # printed: nothing more on stdout
