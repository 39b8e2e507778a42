"""``focus demo``: the paper's workflow end to end on the embedded defaults, in a few minutes on a CPU.

Five steps, each one of the project's flows (so the demo shows what the flows do, and reuses
what they record):

1. ``train``: the small digits CNN with the paper's recipe, Focus on a fixed validation mosaic
   set after every epoch;
2. ``evaluate``: GradCAM, LRP, SmoothGrad, Integrated Gradients and the random control on the
   held-out test mosaics;
3. ``randomization`` (full): the same methods on a fully re-initialised copy of the model;
4. ``randomization`` (cascading): GradCAM and LRP as layers are re-initialised from the top;
5. the static HTML report (:func:`flows.report.build_report`).

The defaults are the embedded ones: a SQLite file ``focus.db`` in the working directory (or
``--database-url`` / ``FOCUS_DATABASE_URL``), Prefect's local mode (or ``PREFECT_API_URL``), the
CPU and the bundled digits. A second run finds the epochs and mosaic results recorded, redoes
nothing and says ``reused: ...``; an interrupted run finishes where it stopped. What each step
computed and reused comes from what its flow returns; its progress bar (on a terminal) moves on the
flow's own log lines (:mod:`flows.cli.console`), so the demo reads the store only for the final tables.

LRP runs as ``lrp_fast``: the paper's rules (z^B, epsilon, z+, folded BatchNorm) in plain torch,
equal to the zennit reference ``lrp`` to about 1e-5 and faster (benchmarks/README.md, section
"lrp_fast against zennit's LRP").

Examples
--------
::

    focus demo            # the real demo (minutes on a CPU; docs/results.md gives a timed run)
    focus demo --quick    # a one-epoch smoke run on a few mosaics (tests)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.cli.console import (
    Steps,
    chunk_moves,
    duration,
    epoch_moves,
    progress,
    quiet_prefect_console,
    table_text,
)
from flows.cli.params import METHODS_PLACEHOLDER, parse_method

__all__ = [
    "CASCADING_METHODS",
    "DEMO_EPOCHS",
    "DEMO_METHODS",
    "DEMO_NAME",
    "DEMO_PER_CLASS",
    "DemoOutcome",
    "DemoPlan",
    "add_demo_options",
    "median_tables",
    "plan_demo",
    "run_demo",
]

DEMO_NAME = "demo-digits"
#: Epochs of the real demo: validation accuracy about 0.97 on the digits.
DEMO_EPOCHS = 10
#: Test mosaics per class of the real demo (10 classes).
DEMO_PER_CLASS = 20
#: Validation mosaics per class on which Focus is measured after every epoch (the same in --quick).
FOCUS_PER_CLASS = 5
#: The paper's methods plus Integrated Gradients and the random control; LRP as its fast, equal implementation.
DEMO_METHODS: tuple[str, ...] = ("gradcam", "lrp_fast", "smoothgrad", "integrated_gradients", "random")
#: Cascading randomization runs one evaluation per layer: the two fast methods of the paper.
CASCADING_METHODS: tuple[str, ...] = ("gradcam", "lrp_fast")
#: --quick: one epoch and two test mosaics per class (a smoke run for tests, not a result).
QUICK_EPOCHS = 1
QUICK_PER_CLASS = 2
#: Mosaics per chunk task: the unit of progress, retry and resumption.
CHUNK_SIZE = 25


def _say(message: str) -> None:
    print(f"focus demo: {message}", file=sys.stderr, flush=True)


# -- options and plan ---------------------------------------------------------------------------


def add_demo_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``focus demo`` (the database option is added by the caller)."""
    parser.add_argument("--epochs", type=int, metavar="N", help=f"Training epochs (default {DEMO_EPOCHS}; --quick {QUICK_EPOCHS}).")
    parser.add_argument(
        "--per-class", type=int, metavar="N",
        help=f"Test mosaics per class, 10 classes (default {DEMO_PER_CLASS}; --quick {QUICK_PER_CLASS}).",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help=f"A smoke run: {QUICK_EPOCHS} epoch and {QUICK_PER_CLASS} test mosaics per class (for tests; the numbers mean little).",
    )
    parser.add_argument(
        "--method", dest="methods", action="append", type=parse_method, metavar="NAME[:KEY=VALUE,...]",
        help=f"Attribution method, repeatable: {METHODS_PLACEHOLDER} (default: {', '.join(DEMO_METHODS)}).",
    )
    parser.add_argument("--device", default="cpu", metavar="DEV", help="cpu, cuda, cuda:N or mps (default cpu).")
    parser.add_argument("--checkpoint-dir", default="checkpoints", metavar="DIR", help="Where the demo's checkpoints go (default checkpoints).")
    parser.add_argument("--out", default="focus-report", metavar="DIR", help="Directory of the report (default focus-report).")
    parser.add_argument("--verbose", action="store_true", help="Show Prefect's log lines too (flow and task runs).")


@dataclass(frozen=True)
class DemoPlan:
    """What the demo runs, resolved from the options."""

    epochs: int
    per_class: int
    methods: tuple[dict[str, Any], ...]
    cascading_methods: tuple[dict[str, Any], ...]
    device: str
    checkpoint_dir: Path
    out: Path
    database_url: str          # the store (absolute for the default SQLite file)
    database_param: str | None  # the URL as a flow parameter (None when it carries a secret)
    verbose: bool = False


def plan_demo(args: argparse.Namespace) -> DemoPlan:
    """Resolve the options of ``focus demo`` (explicit values over ``--quick`` over the defaults)."""
    from flows.cli.params import database_url, has_secret
    from focus_core.errors import FocusError

    quick = bool(getattr(args, "quick", False))
    epochs = args.epochs if args.epochs is not None else (QUICK_EPOCHS if quick else DEMO_EPOCHS)
    per_class = args.per_class if args.per_class is not None else (QUICK_PER_CLASS if quick else DEMO_PER_CLASS)
    for name, value in (("--epochs", epochs), ("--per-class", per_class)):
        if value < 1:
            raise FocusError(f"{name} must be a positive integer but got {value}: pass 1 or more.")
    methods = tuple(parse_method(m) if isinstance(m, str) else m for m in (args.methods or DEMO_METHODS))
    cascading = tuple(m for m in methods if m["name"] in CASCADING_METHODS) or methods[:1]
    url = database_url(args)
    if url is None:  # the embedded default, made absolute so the printed path and every engine agree
        url = f"sqlite:///{Path('focus.db').resolve()}"
    return DemoPlan(
        epochs=epochs,
        per_class=per_class,
        methods=methods,
        cascading_methods=cascading,
        device=args.device,
        checkpoint_dir=Path(args.checkpoint_dir).expanduser().resolve(),
        out=Path(args.out).expanduser().resolve(),
        database_url=url,
        database_param=None if has_secret(url) else url,
        verbose=bool(getattr(args, "verbose", False)),
    )


# -- progress -----------------------------------------------------------------------------------


_chunk_moves = chunk_moves  # the evaluate flow's chunk lines (kept under the demo's old names)
_epoch_moves = epoch_moves


# -- the run ------------------------------------------------------------------------------------


@dataclass
class DemoOutcome:
    """What the demo did and produced."""

    report: Path
    database: str
    checkpoint_id: int
    mosaic_set_id: int
    trained: Any            # DataFrame: method, trained, fully random (median Focus)
    cascading: Any          # DataFrame: method x stage (median Focus)
    reused: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _mosaic_step(steps: Steps, title: str, evaluations: int, n_mosaics: int, run: Callable[[], int]) -> int:
    """Run one evaluating step (``run`` returns the rows it wrote), say what it computed; return the rows reused."""
    steps.begin(title)
    total = evaluations * n_mosaics
    with progress("chunks", "chunk", None, _chunk_moves(), prefix="focus demo:"):
        computed = run()
    if computed == 0:
        steps.end(f"reused: all {total} mosaic results ({evaluations} evaluations) were recorded; nothing recomputed")
    else:
        note = f"reused: {total - computed} of {total} mosaic results were recorded; " if computed < total else ""
        steps.end(f"{note}computed {computed} mosaic results of {evaluations} evaluations")
    return total - computed


def run_demo(args: argparse.Namespace) -> DemoOutcome:
    """Run ``focus demo`` with its parsed options; print the tables and paths; return the outcome.

    The five steps are the project's flows, run one after the other with :func:`flows.cli.run.run_flow`;
    what each computed and reused comes from what the flow returns.
    """
    plan = plan_demo(args)
    started = time.monotonic()
    from flows.worker.devices import require_device

    require_device(plan.device)  # before the store and Prefect: a machine without it fails in seconds

    import db
    from flows.worker import store
    from flows.cli.run import prefect_target, run_flow
    from flows.params import EvaluateParams, MethodSpec, MosaicSetSpec, RandomizationParams, TrainParams
    from flows.report import build_report
    from focus_core import models, randomize

    revision = db.upgrade(plan.database_url)
    _say(f"store {store.describe(plan.database_url)} (schema {revision}); checkpoints in {plan.checkpoint_dir}")
    _say(f"flows run on {prefect_target()}; {'showing' if plan.verbose else 'hiding (--verbose shows)'} Prefect's log lines")

    methods = [MethodSpec.model_validate(m) for m in plan.methods]
    cascading_methods = [MethodSpec.model_validate(m) for m in plan.cascading_methods]
    stages = len(randomize.cascading_stages(models.build_model("digits_cnn", num_classes=10, in_channels=1)))
    run = {"device": plan.device, "chunk_size": CHUNK_SIZE, "retry_delay_seconds": 1.0,
           "database_url": plan.database_param}
    test_mosaics = MosaicSetSpec(split="test", per_class=plan.per_class, seed=0)
    n_mosaics = plan.per_class * 10
    steps = Steps(5, _say)

    def randomization(kind: str, chosen: list[MethodSpec]) -> int:
        outcome = run_flow("randomization", "randomization", RandomizationParams(
            model=model, mosaics=test_mosaics, methods=chosen, kinds=[kind], run=run), announce=False)
        return sum(stage["rows_written"] for stage in outcome["stages"] if stage["kind"] == kind)

    with quiet_prefect_console(plan.verbose):
        steps.begin(f"train the digits CNN for {plan.epochs} epoch(s) with the paper's recipe, "
                    f"Focus (gradcam) on {FOCUS_PER_CLASS * 10} validation mosaics after each epoch")
        with progress("epochs", "epoch", plan.epochs, _epoch_moves(), prefix="focus demo:"):
            trained = run_flow("train", "train", TrainParams(
                name=DEMO_NAME, epochs=plan.epochs, checkpoint_dir=str(plan.checkpoint_dir),
                focus_mosaics=MosaicSetSpec(split="val", per_class=FOCUS_PER_CLASS),
                focus_methods=[MethodSpec(name="gradcam")], audit=True,
                run={"device": plan.device, "database_url": plan.database_param},
            ), announce=False)
        final = trained["epochs"][-1] if trained["epochs"] else {}
        scores = (f"val accuracy {final.get('val_accuracy', float('nan')):.3f}, "
                  f"median Focus {final.get('focus_median') or float('nan'):.3f}")
        reused_epochs = plan.epochs - len(trained["epochs_run"])
        if not trained["epochs_run"]:
            steps.end(f"reused: all {plan.epochs} epoch(s) and their checkpoints were recorded; nothing retrained; "
                      f"{scores}")
        else:
            note = f"reused: epochs 1-{reused_epochs} were recorded; " if reused_epochs else ""
            steps.end(f"{note}trained epoch(s) {trained['epochs_run'][0]}-{trained['epochs_run'][-1]}: {scores}")
        model = {"architecture": "digits_cnn", "weights": trained["final_weights"], "label": f"{DEMO_NAME} final"}

        evaluated: dict[str, Any] = {}

        def evaluate() -> int:
            evaluated.update(run_flow("evaluate", "evaluate", EvaluateParams(
                model=model, mosaics=test_mosaics, methods=methods, run=run), announce=False))
            return sum(e["rows_written"] for e in evaluated["evaluations"])

        reused_results = _mosaic_step(
            steps, f"evaluate {', '.join(method_names_in_order(methods))} on {n_mosaics} test mosaics",
            len(methods), n_mosaics, evaluate)
        reused_results += _mosaic_step(
            steps, "full randomization: the same methods on a fully re-initialised copy of the model",
            len(methods), n_mosaics, lambda: randomization("full", methods))
        reused_results += _mosaic_step(
            steps, f"cascading randomization: {', '.join(method_names_in_order(cascading_methods))} as the {stages} "
            "layers are re-initialised from the top down",
            len(cascading_methods) * stages, n_mosaics, lambda: randomization("cascading", cascading_methods))
        total_results = (2 * len(methods) + len(cascading_methods) * stages) * n_mosaics

        steps.begin("build the report (figures, tables, paired tests) from the store")
        report = build_report(plan.out, database_url=plan.database_url)
        steps.end(f"wrote {report}")

    checkpoint_id, mosaic_set_id = int(evaluated["checkpoint_id"]), int(evaluated["mosaic_set_id"])
    summary = db.evaluation_summary(store.engine_for(plan.database_url), mosaic_set_id=mosaic_set_id)
    summary = summary[summary["checkpoint_id"] == checkpoint_id]
    table, cascade = median_tables(summary, [m.name for m in methods], [m.name for m in cascading_methods])
    elapsed = time.monotonic() - started
    reused = []
    if reused_epochs:
        reused.append(f"{reused_epochs} of {plan.epochs} training epoch(s)")
    if reused_results:
        reused.append(f"{reused_results} of {total_results} mosaic results")
    _print_outcome(plan, table, cascade, report, store.describe(plan.database_url), reused, elapsed, n_mosaics,
                   final)
    return DemoOutcome(report=report, database=plan.database_url, checkpoint_id=checkpoint_id,
                       mosaic_set_id=mosaic_set_id, trained=table, cascading=cascade, reused=reused, seconds=elapsed)


def method_names_in_order(methods: Sequence[Any]) -> list[str]:
    return [m.name if hasattr(m, "name") else m["name"] for m in methods]


def median_tables(summary: Any, methods: Sequence[str], cascading_methods: Sequence[str]) -> tuple[Any, Any]:
    """Median Focus per method from ``db.evaluation_summary`` rows of one checkpoint and one mosaic set.

    Returns
    -------
    tuple of DataFrames
        ``trained``: one row per method with the columns ``trained`` and ``fully random``;
        ``cascading``: one row per cascading method with ``trained`` then one column per stage
        (the deepest re-initialised layer), top layer first.
    """
    import pandas as pd

    def median(method: str, kind: str, stage: int | None = None) -> float:
        rows = summary[(summary["method"] == method) & (summary["randomization"] == kind)]
        if stage is not None:
            rows = rows[rows["stage"] == stage]
        rows = rows[rows["status"] == "finished"]
        return float(rows["median_focus"].iloc[-1]) if len(rows) and pd.notna(rows["median_focus"].iloc[-1]) else float("nan")

    trained = pd.DataFrame(
        [{"method": m, "trained": median(m, "none"), "fully random": median(m, "full")} for m in methods]
    ).set_index("method")
    stages = (summary[summary["randomization"] == "cascading"][["stage", "layer"]]
              .drop_duplicates().sort_values("stage"))
    cascade = pd.DataFrame(
        [{"method": m, "trained": median(m, "none"),
          **{str(layer): median(m, "cascading", int(stage)) for stage, layer in stages.itertuples(index=False)}}
         for m in cascading_methods]
    )
    return trained, cascade.set_index("method") if len(cascade) else cascade


def _print_outcome(plan: DemoPlan, table: Any, cascade: Any, report: Path, database: str, reused: list[str],
                   elapsed: float, n_mosaics: int, final_epoch: dict[str, Any]) -> None:
    accuracy = final_epoch.get("val_accuracy")
    model = f"digits_cnn after {plan.epochs} epoch(s)" + (f", val accuracy {accuracy:.3f}" if accuracy is not None else "")
    print(f"\nMedian Focus on {n_mosaics} test mosaics ({model}); about 0.5 is chance, 1 is perfect:")
    print(table_text(table))
    if "lrp_fast" in table.index:
        print("(lrp_fast: the paper's LRP rules in plain torch; equal to the zennit reference `lrp` to ~1e-5, "
              "about three times as fast on a CPU)")
    if len(cascade) and len(cascade.columns) > 1:
        print("\nCascading randomization: median Focus as layers are re-initialised from the top (column: deepest one):")
        print(table_text(cascade))
    print(f"\nReport:   {report}")
    sqlite_prefix = "sqlite:///"
    if plan.database_url.startswith(sqlite_prefix):
        print(f"Database: {plan.database_url[len(sqlite_prefix):]}  (`focus results`, or any SQLite client)")
    else:
        print(f"Database: {database}  (`focus results`)")
    if reused:
        print("Reused (recorded by an earlier run, not redone): " + ", ".join(reused) + ".")
    print(f"Done in {duration(elapsed)}.")
