"""The ``focus`` command line: every flow, the results, the report and the store's schema.

Each command builds the flow's pydantic parameters (:mod:`flows.params`) from its options and
runs the flow in this process. Without ``PREFECT_API_URL`` Prefect runs in its local ephemeral
mode; with it, the run is recorded on that server (and shows in its UI). To run on a work pool's
workers instead, trigger the deployment (``prefect deployment run`` or the UI).

A mistake the user can fix (a bad option, a missing file, a database at an old schema version)
ends with one line on stderr and exit status 2; ``--debug`` shows the traceback instead.

Examples
--------
::

    focus db upgrade
    focus train --epochs 5
    focus evaluate --weights checkpoints/digits/final.pt --method gradcam --method lrp
    focus results --format csv > focus.csv
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from flows import cli_demo
from flows import cli_params as opts
from focus_core.errors import FocusError

__all__ = ["main", "build_parser", "UsageError"]

PROG = "focus"
EXIT_USAGE = 2
EXIT_FAILED = 1


class UsageError(FocusError):
    """A mistake in how the command was called (one sentence, exit status 2)."""


# -- argument parsing ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage block), exit status 2, no abbreviations."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # `--epoch 3` must not quietly mean `--epochs 3`
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _subparser(subparsers: Any, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name, help=help, description=description or help
    )
    parser.add_argument("--debug", action="store_true", help="Show the full traceback when something fails.")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The ``focus`` parser with one sub-command per flow and the store's commands."""
    parser = _Parser(
        prog=PROG,
        description="Measure how faithful feature-attribution explanations are with the Focus metric. "
        "Without PREFECT_API_URL the flows run in Prefect's local mode; with it, on that server.",
    )
    parser.add_argument("--debug", action="store_true", help="Show the full traceback when something fails.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    # train
    p = _subparser(
        commands,
        "train",
        "Train a classifier with the paper's recipe, recording loss, accuracy and Focus every epoch.",
        "Train a classifier with the paper's recipe (rotation, random crop, flip, AMSGrad), checkpointing every "
        "epoch (an interrupted run resumes) and measuring Focus on a fixed validation mosaic set after each epoch.",
    )
    opts.add_params_file_option(p)
    p.add_argument("--name", help="Name of the training run (default digits).")
    opts.add_model_options(p, weights_help="Weights to start from (default: a fresh initialisation).")
    opts.add_dataset_options(p)
    p.add_argument("--epochs", type=int, metavar="N", help="Number of epochs (default 10).")
    p.add_argument("--batch-size", type=int, metavar="N", help="Images per optimisation step (default 64).")
    p.add_argument("--lr", type=float, metavar="RATE", help="AMSGrad learning rate (default 0.003 for digits, 0.001 else).")
    p.add_argument("--rotation", type=float, metavar="DEG", help="Maximum random rotation (default 15 for digits, the paper's 30 else).")
    p.add_argument("--crop-padding", type=int, metavar="PX", help="Random-crop padding (default 2 for digits, 1/8 of the tile else).")
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                   help="Random horizontal flips (default off for digits, on else).")
    p.add_argument("--retries", type=int, metavar="N", help="Retries of a failed epoch, from the last checkpoint (default 1).")
    p.add_argument("--figures-dir", metavar="DIR", help="Write the training-curve figures here (default: none).")
    p.add_argument("--seed", type=int, metavar="N", help="Seed of initialisation, augmentation and batch order (default 0).")
    p.add_argument("--focus-per-class", type=int, metavar="N", help="Validation mosaics per class for Focus per epoch (default 10).")
    opts.add_method_options(p, default="gradcam", dest="focus_methods")
    p.add_argument("--checkpoint-dir", metavar="DIR", help="Where per-epoch checkpoints go (default checkpoints).")
    p.add_argument("--device", metavar="DEV", help="cpu, cuda, cuda:N or mps (default cpu); a machine without it fails at once.")
    p.add_argument("--audit", action="store_true", default=None, help="Mark the final checkpoint for the nightly audit.")
    opts.add_database_option(p)
    p.set_defaults(handler=cmd_train)

    # evaluate
    p = _subparser(
        commands,
        "evaluate",
        "Evaluate attribution methods on one checkpoint with the Focus metric.",
        "Evaluate attribution methods on one checkpoint: build (or reuse) a seeded mosaic set, explain every mosaic "
        "in batches and record one row per mosaic. Running the same command again finishes missing chunks only.",
    )
    opts.add_params_file_option(p)
    opts.add_model_options(p, weights_help="Weights file (a state_dict) of the checkpoint to explain (required).")
    opts.add_dataset_options(p)
    opts.add_mosaic_options(p)
    opts.add_method_options(p)
    group = p.add_argument_group("randomization")
    group.add_argument(
        "--randomization",
        choices=("none", "full", "cascading", "independent"),
        help="Evaluate a randomized copy of the checkpoint instead (default none).",
    )
    group.add_argument("--stage", type=int, metavar="N", help="Cascading: re-initialise layers 0..N from the top.")
    group.add_argument("--layer", metavar="MODULE", help="Independent: the one layer to re-initialise.")
    group.add_argument("--randomization-seed", type=int, metavar="N", help="Seed of the re-initialisation (default 0).")
    opts.add_run_options(p)
    p.add_argument("--figures-dir", metavar="DIR", help="Write the summary figures here (default: none).")
    opts.add_database_option(p)
    p.set_defaults(handler=cmd_evaluate)

    # randomize
    p = _subparser(
        commands,
        "randomize",
        "The randomization sanity check: Focus of a checkpoint, its random copy and cascading randomization.",
        "Evaluate a trained checkpoint, its fully random copy and cascading (and independent) layer randomization "
        "from the top layer down (Adebayo et al.), one evaluation per stage: a faithful method falls to about 0.5.",
    )
    opts.add_params_file_option(p)
    opts.add_model_options(p, weights_help="Weights file of the trained checkpoint (required).")
    opts.add_dataset_options(p)
    opts.add_mosaic_options(p)
    opts.add_method_options(p)
    p.add_argument(
        "--kind",
        dest="kinds",
        action="append",
        choices=("full", "cascading", "independent"),
        help="Randomization to run, repeatable (default: full and cascading).",
    )
    p.add_argument("--max-stages", type=int, metavar="N", help="Cascading/independent: only the top N layers (default all).")
    p.add_argument("--seed", type=int, metavar="N", help="Seed of the re-initialisations (default 0).")
    opts.add_run_options(p)
    opts.add_database_option(p)
    p.set_defaults(handler=cmd_randomize)

    # sweep
    p = _subparser(
        commands,
        "sweep",
        "The paper's grid (checkpoints x methods), one evaluate run per cell.",
        "Evaluate every checkpoint with every method, one evaluate run per cell. With --deployment the cells are "
        "fanned out onto the work pool (run_deployment), so several GPU workers share the grid; the workers then "
        "write to their own FOCUS_DATABASE_URL. Without it the cells run here, one after the other.",
    )
    opts.add_params_file_option(p)
    p.add_argument(
        "--checkpoint",
        dest="checkpoints",
        action="append",
        metavar="[ARCH=]WEIGHTS",
        help="A checkpoint of the grid, repeatable: a weights file, optionally prefixed by its architecture "
        "(e.g. resnet18=/models/r18.pt; default architecture: --arch).",
    )
    p.add_argument("--arch", metavar="NAME", help="Architecture of checkpoints given without one (default digits_cnn).")
    opts.add_dataset_options(p)
    opts.add_mosaic_options(p)
    opts.add_method_options(p)
    opts.add_run_options(p)
    p.add_argument(
        "--deployment", metavar="FLOW/NAME", help="The evaluate deployment to fan out to, e.g. evaluate/evaluate (default: run here)."
    )
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="Give up waiting for a cell after this long (default: wait).")
    opts.add_database_option(p)
    p.set_defaults(handler=cmd_sweep)

    # audit
    p = _subparser(
        commands,
        "audit",
        "Audit every checkpoint marked for auditing; emit focus.audit.regressed when Focus falls.",
        "Evaluate the standard methods on each audited checkpoint's audit mosaic set, compare with its previous "
        "audit on the same mosaics (paired test) and emit the Prefect event focus.audit.regressed when median Focus "
        "falls by more than the threshold (an automation in deployments/automations.yaml turns it into a notification).",
    )
    opts.add_params_file_option(p)
    opts.add_method_options(p, default="gradcam, lrp and smoothgrad")
    opts.add_dataset_options(p)
    opts.add_mosaic_options(p)
    p.add_argument("--threshold", type=float, metavar="DROP", help="Regression: median Focus falls by more than this (default 0.05).")
    p.add_argument("--alpha", type=float, metavar="P", help="Significance level of the paired test (default 0.05).")
    p.add_argument(
        "--checkpoint",
        dest="checkpoints",
        action="append",
        metavar="SHA256",
        help="Audit only this checkpoint (sha256 of its weights), repeatable (default: every one marked for auditing).",
    )
    p.add_argument("--name", help="Name of the audit run, e.g. nightly.")
    opts.add_run_options(p)
    opts.add_database_option(p)
    p.set_defaults(handler=cmd_audit)

    # results
    p = _subparser(
        commands,
        "results",
        "Print recorded results as a text table, CSV or JSON.",
        "Print a table from the store. evaluations: median, quartiles and mosaic accuracy of every evaluation; "
        "compare: the methods side by side on one mosaic set; epochs: loss, accuracy and Focus per epoch of a "
        "training run; regressions: audits whose median Focus fell, with the paired test; checkpoints: those "
        "marked for the nightly audit.",
    )
    p.add_argument(
        "table",
        nargs="?",
        default="evaluations",
        choices=RESULT_TABLES,
        help="Which table to print (default evaluations).",
    )
    p.add_argument("--evaluation", dest="evaluations", action="append", type=int, metavar="ID",
                   help="evaluations: only this evaluation, repeatable (default all).")
    p.add_argument("--mosaic-set", type=int, metavar="ID", help="evaluations, compare: only this mosaic set.")
    p.add_argument("--randomization", choices=("none", "full", "cascading", "independent"),
                   help="compare: the randomization kind to compare (default none).")
    p.add_argument("--training-run", type=int, metavar="ID", help="epochs: the training run.")
    p.add_argument("--threshold", type=float, metavar="DROP", help="regressions: a fall in median Focus larger than this (default 0.05).")
    p.add_argument("--format", choices=("text", "csv", "json"), default="text", help="Output format (default text).")
    p.add_argument("--output", "-o", metavar="FILE", help="Write to this file instead of standard output.")
    p.add_argument("--limit", type=int, metavar="N", help="Print at most N rows (default all).")
    opts.add_database_option(p)
    p.set_defaults(handler=cmd_results)

    # report
    p = _subparser(
        commands,
        "report",
        "Build a static HTML report (figures and tables) from the store.",
        "Build a static HTML page from the store: figures and summary tables of the selected evaluations.",
    )
    p.add_argument("--out", metavar="DIR", default="focus-report", help="Directory of the report (index.html and figures).")
    p.add_argument(
        "--evaluation", dest="evaluations", action="append", type=int, metavar="ID", help="Only this evaluation, repeatable (default all)."
    )
    opts.add_database_option(p)
    p.set_defaults(handler=cmd_report)

    # db
    p = _subparser(commands, "db", "Create or migrate focus-audit's database schema.")
    db_commands = p.add_subparsers(dest="db_command", metavar="ACTION", parser_class=_Parser)
    db_commands.required = True
    q = _subparser(db_commands, "upgrade", "Create the schema, or migrate it to this version's head (idempotent).")
    opts.add_database_option(q)
    q.set_defaults(handler=cmd_db_upgrade)
    q = _subparser(db_commands, "current", "Print the schema revision of the database (and whether it is at head).")
    opts.add_database_option(q)
    q.set_defaults(handler=cmd_db_current)

    # demo
    p = _subparser(
        commands,
        "demo",
        "A short end-to-end run on the bundled digits: train, evaluate, randomize, report.",
        "Train the small digits CNN with Focus per epoch, evaluate GradCAM, LRP, SmoothGrad, Integrated Gradients and "
        "the random control on test mosaics, run the full and cascading randomization tests, record everything in "
        "the store (default: the SQLite file focus.db here) and build the HTML report. A few minutes on a CPU; "
        "running it again reuses what is recorded and says so.",
    )
    cli_demo.add_demo_options(p)
    opts.add_database_option(p)
    p.set_defaults(handler=cmd_demo)
    return parser


# -- running flows ------------------------------------------------------------------------------

RESULT_TABLES = ("evaluations", "compare", "epochs", "regressions", "checkpoints")


def _load_flow(module: str, name: str) -> Any:
    return getattr(importlib.import_module(f"flows.{module}"), name)


def _build(model_name: str, fields: dict[str, Any], params_file: str | None = None) -> Any:
    """Validate ``fields`` (over the ``--params`` file) into the flow's parameter model."""
    from flows import params as flow_params

    model = getattr(flow_params, model_name)
    merged = opts.deep_merge(opts.load_params_file(params_file), fields)
    return model.model_validate(merged)


def _nonempty(**sections: dict[str, Any] | None) -> dict[str, Any]:
    return {key: value for key, value in sections.items() if value not in (None, {}, [])}


def _require_file(path: str | None, what: str, hint: str) -> None:
    if path and not Path(path).is_file():
        raise UsageError(f"The {what} {path!r} does not exist: {hint}.")


def _require_dir(path: str | None, what: str) -> None:
    if path and not Path(path).is_dir():
        raise UsageError(f"The {what} {path!r} does not exist: pass an existing directory.")


def _check_inputs(params: Any) -> None:
    """Fail before Prefect starts (seconds) for paths this machine does not have."""
    model = getattr(params, "model", None)
    if model is not None:
        _require_file(model.weights, "weights file", "pass --weights with a file that `focus train` wrote")
    for checkpoint in getattr(params, "checkpoints", None) or []:
        weights = getattr(checkpoint, "weights", None)
        _require_file(weights, "weights file", "pass --checkpoint with an existing weights file")
    dataset = getattr(params, "dataset", None)
    if dataset is not None and dataset.kind == "image_folder":
        _require_dir(dataset.root, "ImageFolder directory")


def _database_param(params: Any) -> str | None:
    run = getattr(params, "run", None)
    return getattr(run, "database_url", None) if run is not None else getattr(params, "database_url", None)


def _check_model(params: Any) -> None:
    """Build the checkpoint's model and find GradCAM's layer here, before Prefect starts.

    A weights file for another architecture (or recorded as another one), a broken
    ``module:factory`` path or a model whose GradCAM layer cannot be inferred then ends with one
    line, in seconds, instead of a failed flow run. The model and data stay cached in this process
    for the flow.
    """
    model_spec = getattr(params, "model", None)
    dataset_spec = getattr(params, "dataset", None)
    if model_spec is None or dataset_spec is None or not model_spec.weights:
        return
    from flows import record, resources, store
    from focus_core.explainers.gradcam import resolve_layer

    if hasattr(params, "run"):  # evaluating flows register the checkpoint: the record must agree
        record.check_recorded_checkpoint(store.engine_for(_database_param(params)), model_spec, dataset_spec)
    model = resources.build_model(model_spec, dataset_spec)
    methods = list(getattr(params, "methods", None) or []) + list(getattr(params, "focus_methods", None) or [])
    for method in methods:
        if method.name.startswith("gradcam"):
            explainer = resources.make_explainer(method, model_spec)
            try:
                resolve_layer(model, explainer.params.get("layer"))
            except FocusError:
                if explainer.params.get("layer") is None:
                    raise UsageError(
                        f"Cannot infer GradCAM's layer for {type(model).__name__} ({model_spec.architecture}): pass "
                        "--gradcam-layer with the dotted name of its last convolutional block's output "
                        f"(one of: {_conv_block_hint(model)})."
                    ) from None
                raise


def _conv_block_hint(model: Any) -> str:
    """The model's last few module names that can serve as GradCAM's layer, for the error message."""
    from torch import nn

    names = [name for name, module in model.named_modules()
             if name and isinstance(module, (nn.Conv2d, nn.ReLU, nn.BatchNorm2d, nn.Sequential))]
    return ", ".join(names[-4:]) or "see model.named_modules()"


def prefect_target() -> str:
    """Where flows run: the server of PREFECT_API_URL (env or settings), else Prefect's local mode."""
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        try:
            from prefect.settings import PREFECT_API_URL

            url = PREFECT_API_URL.value()
        except Exception:  # noqa: BLE001 - settings unavailable: the local mode
            url = None
    return f"the Prefect API at {url}" if url else "Prefect's local mode (a temporary API in this process)"


def run_flow(module: str, flow_name: str, params: Any, *, announce: bool = True) -> Any:
    """Run ``flows.<module>.<flow_name>(params=params)`` here (ephemeral mode or PREFECT_API_URL).

    Paths, the model, its weights and GradCAM's layer are checked first, so a user's mistake ends
    in seconds with one line; ``announce`` prints where the flow runs and how long it took.
    """
    _check_inputs(params)
    _check_model(params)
    flow = _load_flow(module, flow_name)
    _quiet_user_error_tracebacks()
    if announce:
        _info(f"running flow {flow_name!r} on {prefect_target()}")
    started = time.monotonic()
    result = flow(params=params)
    if announce:
        _info(f"flow {flow_name!r} finished in {time.monotonic() - started:.0f} s")
    return result


class _NoUserErrorTraceback(logging.Filter):
    """Drop the traceback Prefect logs for a failed run when the error is the user's (one line stays)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _is_user_error(record.exc_info[1]):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_user_error_tracebacks() -> None:
    if os.environ.get("FOCUS_DEBUG"):
        return
    loggers = [logging.getLogger()] + [
        logger for name, logger in logging.Logger.manager.loggerDict.items()
        if name.startswith("prefect") and isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, _NoUserErrorTraceback) for f in handler.filters):
                handler.addFilter(_NoUserErrorTraceback())


def _info(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _print_result(result: Any) -> None:
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
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _use_database(args: argparse.Namespace) -> None:
    """``--database-url`` wins over ``$FOCUS_DATABASE_URL`` for everything this process runs."""
    if getattr(args, "database_url", None):
        os.environ["FOCUS_DATABASE_URL"] = args.database_url


# -- commands -----------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> Any:
    focus_mosaics = {"split": "val", "per_class": args.focus_per_class} if args.focus_per_class is not None else {}
    fields = _nonempty(
        name=args.name,
        model=opts.model_fields(args),
        dataset=opts.dataset_fields(args),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        rotation=args.rotation,
        crop_padding=args.crop_padding,
        hflip=args.hflip,
        seed=args.seed,
        retries=args.retries,
        figures_dir=str(Path(args.figures_dir).resolve()) if args.figures_dir else None,
        focus_mosaics=focus_mosaics,
        focus_methods=opts.method_specs(args, "focus_methods"),
        checkpoint_dir=str(Path(args.checkpoint_dir).resolve()) if args.checkpoint_dir else None,
        device=args.device,
        audit=args.audit,
    )
    if args.database_url and not opts.has_password(args.database_url):
        fields["database_url"] = args.database_url
    params = _build("TrainParams", fields, args.params)
    return run_flow("train", "train", params)


def cmd_evaluate(args: argparse.Namespace) -> Any:
    randomization = {
        k: v
        for k, v in {
            "kind": args.randomization, "stage": args.stage, "layer": args.layer, "seed": args.randomization_seed
        }.items()
        if v is not None
    }
    fields = _nonempty(
        model=opts.model_fields(args),
        dataset=opts.dataset_fields(args),
        mosaics=opts.mosaic_fields(args),
        methods=opts.method_specs(args),
        randomization=randomization,
        run=opts.run_fields(args),
        figures_dir=str(Path(args.figures_dir).resolve()) if args.figures_dir else None,
    )
    params = _build("EvaluateParams", fields, args.params)
    return run_flow("evaluate", "evaluate", params)


def cmd_randomize(args: argparse.Namespace) -> Any:
    fields = _nonempty(
        model=opts.model_fields(args),
        dataset=opts.dataset_fields(args),
        mosaics=opts.mosaic_fields(args),
        methods=opts.method_specs(args),
        kinds=args.kinds,
        max_stages=args.max_stages,
        seed=args.seed,
        run=opts.run_fields(args),
    )
    params = _build("RandomizationParams", fields, args.params)
    return run_flow("randomization", "randomization", params)


def _checkpoint_spec(text: str, default_arch: str | None) -> dict[str, Any]:
    arch, sep, weights = text.rpartition("=")
    spec: dict[str, Any] = {"weights": str(Path(weights).expanduser().resolve())}
    if sep and arch:
        spec["architecture"] = arch
    elif default_arch:
        spec["architecture"] = default_arch
    return spec


def cmd_sweep(args: argparse.Namespace) -> Any:
    checkpoints = [_checkpoint_spec(c, args.arch) for c in args.checkpoints or []]
    fields = _nonempty(
        checkpoints=checkpoints,
        dataset=opts.dataset_fields(args),
        mosaics=opts.mosaic_fields(args),
        methods=opts.method_specs(args),
        run=opts.run_fields(args),
        deployment=args.deployment,
        timeout_seconds=args.timeout,
    )
    params = _build("SweepParams", fields, args.params)
    if args.deployment and not os.environ.get("PREFECT_API_URL"):
        raise UsageError(
            "--deployment fans the cells out to a work pool, which needs a Prefect server: set PREFECT_API_URL "
            "(e.g. http://127.0.0.1:4200/api) or leave --deployment out to run the cells here."
        )
    return run_flow("sweep", "sweep", params)


def cmd_audit(args: argparse.Namespace) -> Any:
    fields = _nonempty(
        methods=opts.method_specs(args),
        dataset=opts.dataset_fields(args),
        mosaics=opts.mosaic_fields(args),
        threshold=args.threshold,
        alpha=args.alpha,
        checkpoints=args.checkpoints,
        name=args.name,
        run=opts.run_fields(args),
    )
    params = _build("AuditParams", fields, args.params)
    return run_flow("audit", "audit", params)


def _results_table(args: argparse.Namespace) -> Any:
    """The DataFrame of ``focus results <table>`` from the store's queries."""
    import db
    from flows import store

    engine = store.engine_for(opts.database_url(args))  # StoreError (one sentence) for an old schema
    if args.table == "evaluations":
        return db.evaluation_summary(engine, args.evaluations, mosaic_set_id=args.mosaic_set)
    if args.table == "compare":
        if args.mosaic_set is None:
            raise UsageError("`focus results compare` needs --mosaic-set ID (see `focus results evaluations`).")
        return db.compare_methods(engine, args.mosaic_set, randomization=args.randomization or "none")
    if args.table == "epochs":
        if args.training_run is None:
            raise UsageError("`focus results epochs` needs --training-run ID (the id `focus train` printed).")
        return db.training_curve(engine, args.training_run)
    if args.table == "regressions":
        return db.focus_regressions(engine, threshold=args.threshold if args.threshold is not None else 0.05)
    if args.table == "checkpoints":
        return db.checkpoints_to_audit(engine)
    raise UsageError(f"Unknown table {args.table!r}: use one of {', '.join(RESULT_TABLES)}.")  # pragma: no cover


def cmd_results(args: argparse.Namespace) -> None:
    frame = _results_table(args)
    if args.limit is not None:
        frame = frame.head(args.limit)
    if args.format == "csv":
        text = frame.to_csv(index=False)
    elif args.format == "json":
        text = frame.to_json(orient="records", date_format="iso", indent=2) + "\n"
    else:
        text = (frame.to_string(index=False) if len(frame) else f"(no {args.table} recorded yet)") + "\n"
    if args.output:
        Path(args.output).write_text(text)
        _info(f"wrote {len(frame)} rows to {args.output}")
    else:
        sys.stdout.write(text)


def cmd_report(args: argparse.Namespace) -> Path:
    from flows.report import build_report

    path = build_report(Path(args.out), database_url=opts.database_url(args), evaluations=args.evaluations)
    print(path)
    return path


def cmd_db_upgrade(args: argparse.Namespace) -> None:
    import db

    url = opts.database_url(args)
    before = db.current(url)
    after = db.upgrade(url)
    if before == after:
        print(f"The database is already at revision {after} (head).")
    else:
        print(f"Upgraded the database from revision {before or '(empty)'} to {after}.")


def cmd_db_current(args: argparse.Namespace) -> None:
    import db

    url = opts.database_url(args)
    revision = db.current(url)
    head = db.head()
    if revision is None:
        print(f"(empty) - no focus-audit schema; run `focus db upgrade` to create revision {head}.")
    elif revision == head:
        print(f"{revision} (head)")
    else:
        print(f"{revision} - behind head {head}; run `focus db upgrade`.")


def cmd_demo(args: argparse.Namespace) -> None:
    from flows.cli_demo import run_demo

    run_demo(args)


# -- entry point --------------------------------------------------------------------------------


def _user_cause(error: BaseException) -> BaseException | None:
    """The user's mistake behind a failure (a flow re-raises a chunk's FocusError as its cause), if any."""
    from db.errors import StoreError

    seen = 0
    cause = error.__cause__
    while cause is not None and seen < 10:
        if isinstance(cause, (FocusError, StoreError)):
            return cause
        cause, seen = cause.__cause__, seen + 1
    return None


def _is_user_error(error: BaseException | None) -> bool:
    if error is None:
        return False
    user_errors: list[type[BaseException]] = [ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError]
    try:
        from prefect.exceptions import ParameterTypeError, SignatureMismatchError

        user_errors += [ParameterTypeError, SignatureMismatchError]
    except ImportError:  # pragma: no cover - prefect is a dependency
        pass
    return isinstance(error, tuple(user_errors))


def _one_line(error: BaseException) -> str:
    """The error as one line; a pydantic ValidationError names the field and what is wrong."""
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        ValidationError = ()  # type: ignore[assignment,misc]
    if isinstance(error, ValidationError):
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item.get("loc", ())) or "parameters"
            message = str(item.get("msg", "")).removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        shown = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        return f"invalid parameters: {shown}"
    text = " ".join(str(error).split()) or type(error).__name__
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``focus`` command and return its exit status: 0, 1 (failed) or 2 (a user mistake)."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's local mode starts a temporary server; on a busy laptop it needs more than the 20 s default.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(args.debug or os.environ.get("FOCUS_DEBUG"))
    if debug:
        os.environ["FOCUS_DEBUG"] = "1"
    prog = f"{PROG} {args.command}" + (f" {args.db_command}" if getattr(args, "db_command", None) else "")
    handler: Callable[[argparse.Namespace], Any] = args.handler
    try:
        _use_database(args)
        result = handler(args)
        if args.command in {"train", "evaluate", "randomize", "sweep", "audit"}:
            _print_result(result)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rows already written are kept, run the same command to finish.", file=sys.stderr)
        return 130
    except BaseException as error:  # noqa: BLE001 - the top of the command line
        if isinstance(error, SystemExit):
            raise
        if debug:
            raise
        if _is_user_error(error):
            print(f"{prog}: error: {_one_line(error)}", file=sys.stderr)
            return EXIT_USAGE
        cause = _user_cause(error)
        if cause is not None:
            print(f"{prog}: error: {_one_line(cause)}", file=sys.stderr)
            return EXIT_USAGE
        print(
            f"{prog}: failed: {type(error).__name__}: {_one_line(error)} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
