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
nothing and says ``reused: ...``; an interrupted run finishes where it stopped.

LRP runs as ``lrp_fast``: the paper's rules (z^B, epsilon, z+, folded BatchNorm) in plain torch,
equal to the zennit reference ``lrp`` to about 1e-5 and faster (benchmarks/README.md, section
"lrp_fast against zennit's LRP").

Examples
--------
::

    focus demo            # the real demo (about 3-5 minutes on two idle cores)
    focus demo --quick    # a one-epoch smoke run on a few mosaics (tests)
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.cli.params import parse_method

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
        help=f"Attribution method, repeatable (default: {', '.join(DEMO_METHODS)}).",
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


@contextmanager
def _progress(desc: str, total: int, unit: str, count: Callable[[], int], interval: float = 1.0) -> Iterator[None]:
    """A tqdm bar on stderr fed by polling ``count()`` (what is recorded) while the flow runs.

    The bar shows only on a terminal; the step lines with their timings show everywhere.
    """
    from tqdm import tqdm

    def safe_count() -> int | None:
        try:
            return min(int(count()), total)
        except Exception:  # noqa: BLE001 - a poll that fails (a locked file) just skips one update
            return None

    bar = tqdm(total=total, initial=safe_count() or 0, desc=f"  {desc}", unit=unit, file=sys.stderr,
               disable=None, dynamic_ncols=True, leave=False)
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(interval):
            done = safe_count()
            if done is not None and done > bar.n:
                bar.update(done - bar.n)

    thread = threading.Thread(target=poll, name="focus-demo-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        done = safe_count()
        if done is not None and done > bar.n:
            bar.update(done - bar.n)
        bar.close()


@contextmanager
def _quiet_prefect_console(verbose: bool) -> Iterator[None]:
    """Raise the console handlers to WARNING so the step lines and bars stay readable.

    Only stream handlers change: the logs still reach the Prefect API (and its UI) when there is one.
    """
    if verbose:
        yield
        return
    changed: list[tuple[logging.Handler, int]] = []
    loggers = [logging.getLogger()] + [
        logger for name, logger in list(logging.Logger.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and name.split(".")[0] in {"prefect", "uvicorn", "fastapi", "httpx"}
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                changed.append((handler, handler.level))
                handler.setLevel(max(handler.level, logging.WARNING))
    try:
        yield
    finally:
        for handler, level in changed:
            handler.setLevel(level)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


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


@dataclass
class _Step:
    number: int
    total: int
    title: str
    started: float = field(default_factory=time.monotonic)

    def begin(self) -> _Step:
        _say(f"[{self.number}/{self.total}] {self.title}")
        self.started = time.monotonic()
        return self

    def end(self, message: str) -> None:
        _say(f"      {message} ({_duration(time.monotonic() - self.started)})")


def _recorded(engine: Any, checkpoint_id: int, mosaic_set_id: int, methods: set[str],
              randomization: set[str]) -> Any:
    """The ``db.evaluation_summary`` rows of this checkpoint, mosaic set, methods and randomization kinds."""
    import db

    frame = db.evaluation_summary(engine, mosaic_set_id=mosaic_set_id)
    return frame[(frame["checkpoint_id"] == checkpoint_id) & frame["method"].isin(methods)
                 & frame["randomization"].isin(randomization)]


def run_demo(args: argparse.Namespace) -> DemoOutcome:
    """Run ``focus demo`` with its parsed options; print the tables and paths; return the outcome."""
    plan = plan_demo(args)
    started = time.monotonic()
    from flows.devices import require_device

    require_device(plan.device)  # before the store and Prefect: a machine without it fails in seconds

    import db
    from flows import record, store
    from flows.cli.run import prefect_target, run_flow
    from flows.params import (
        DatasetSpec,
        EvaluateParams,
        MethodSpec,
        MosaicSetSpec,
        RandomizationParams,
        TrainParams,
    )
    from flows.report import build_report
    from flows.train import checkpoint_path
    from focus_core import models, randomize

    revision = db.upgrade(plan.database_url)
    engine = store.engine_for(plan.database_url)
    _say(f"store {store.describe(plan.database_url)} (schema {revision}); checkpoints in {plan.checkpoint_dir}")
    _say(f"flows run on {prefect_target()}; {'showing' if plan.verbose else 'hiding (--verbose shows)'} Prefect's log lines")

    methods = [MethodSpec.model_validate(m) for m in plan.methods]
    cascading_methods = [MethodSpec.model_validate(m) for m in plan.cascading_methods]
    method_names = {m.name for m in methods}
    cascading_names = {m.name for m in cascading_methods}
    stages = len(randomize.cascading_stages(models.build_model("digits_cnn", num_classes=10, in_channels=1)))
    run = {"device": plan.device, "chunk_size": CHUNK_SIZE, "retry_delay_seconds": 1.0,
           "database_url": plan.database_param}
    dataset = DatasetSpec()
    test_mosaics = MosaicSetSpec(split="test", per_class=plan.per_class, seed=0)
    reused_epochs = reused_results = total_results = 0
    steps = 5

    with _quiet_prefect_console(plan.verbose):
        # 1. train
        train_params = TrainParams(
            name=DEMO_NAME, epochs=plan.epochs, device=plan.device, checkpoint_dir=str(plan.checkpoint_dir),
            focus_mosaics=MosaicSetSpec(split="val", per_class=FOCUS_PER_CLASS), focus_methods=[MethodSpec(name="gradcam")],
            audit=True, database_url=plan.database_param,
        )
        step = _Step(1, steps, f"train the digits CNN for {plan.epochs} epoch(s) with the paper's recipe, "
                               f"Focus (gradcam) on {FOCUS_PER_CLASS * 10} validation mosaics after each epoch").begin()
        # The train flow keeps each run's epochs in <checkpoint_dir>/<name>-<config hash>/ (flows.train).
        run_dir = plan.checkpoint_dir / f"{DEMO_NAME}-{train_params.config_hash()[:12]}"
        with _progress("epochs", plan.epochs, "epoch",
                       lambda: sum(checkpoint_path(run_dir, e).exists() for e in range(1, plan.epochs + 1))):
            trained = run_flow("train", "train", train_params, announce=False)
        final = trained["epochs"][-1] if trained["epochs"] else {}
        scores = (f"val accuracy {final.get('val_accuracy', float('nan')):.3f}, "
                  f"median Focus {final.get('focus_median') or float('nan'):.3f}")
        reused_epochs = plan.epochs - len(trained["epochs_run"])
        if not trained["epochs_run"]:
            step.end(f"reused: all {plan.epochs} epoch(s) and their checkpoints were recorded; nothing retrained; {scores}")
        else:
            note = f"reused: epochs 1-{reused_epochs} were recorded; " if reused_epochs else ""
            step.end(f"{note}trained epoch(s) {trained['epochs_run'][0]}-{trained['epochs_run'][-1]}: {scores}")
        model = {"architecture": "digits_cnn", "weights": trained["final_weights"], "label": f"{DEMO_NAME} final"}
        checkpoint_id = int(trained["final_checkpoint_id"])
        mosaic_set_id = record.register_mosaics(engine, dataset, test_mosaics).mosaic_set_id
        n_mosaics = plan.per_class * 10

        # 2. evaluate, 3. full randomization, 4. cascading randomization
        work = [
            (f"evaluate {', '.join(method_names_in_order(methods))} on {n_mosaics} test mosaics",
             "mosaics", lambda: run_flow("evaluate", "evaluate", EvaluateParams(
                 model=model, dataset=dataset, mosaics=test_mosaics, methods=methods, run=run), announce=False),
             method_names, {"none"}, len(methods)),
            ("full randomization: the same methods on a fully re-initialised copy of the model",
             "mosaics", lambda: run_flow("randomization", "randomization", RandomizationParams(
                 model=model, dataset=dataset, mosaics=test_mosaics, methods=methods, kinds=["full"], run=run),
                 announce=False),
             method_names, {"full"}, len(methods)),
            (f"cascading randomization: {', '.join(method_names_in_order(cascading_methods))} as the {stages} "
             + "layers are re-initialised from the top down",
             "mosaics", lambda: run_flow("randomization", "randomization", RandomizationParams(
                 model=model, dataset=dataset, mosaics=test_mosaics, methods=cascading_methods, kinds=["cascading"],
                 run=run), announce=False),
             cascading_names, {"cascading"}, len(cascading_methods) * stages),
        ]
        for number, (title, unit, run_step, names, kinds, evaluations) in enumerate(work, start=2):
            step = _Step(number, steps, title).begin()
            total = evaluations * n_mosaics
            recorded = _recorded(engine, checkpoint_id, mosaic_set_id, names, kinds)
            before = int(recorded["n"].sum())
            finished = int(((recorded["status"] == "finished") & (recorded["n"] == n_mosaics)).sum())
            reused_results += before
            total_results += total
            if finished >= evaluations:  # every evaluation finished with a row per mosaic: nothing to redo
                step.end(f"reused: all {total} mosaic results ({evaluations} evaluations) were recorded; nothing recomputed")
                continue
            with _progress("explained", total, unit,
                           lambda names=names, kinds=kinds: _recorded(engine, checkpoint_id, mosaic_set_id, names,
                                                                      kinds)["n"].sum()):
                run_step()
            after = int(_recorded(engine, checkpoint_id, mosaic_set_id, names, kinds)["n"].sum())
            note = f"reused: {before} of {total} mosaic results were recorded; " if before else ""
            step.end(f"{note}computed {after - before} mosaic results of {evaluations} evaluations")

        # 5. report
        step = _Step(5, steps, "build the report (figures, tables, paired tests) from the store").begin()
        report = build_report(plan.out, database_url=plan.database_url)
        step.end(f"wrote {report}")

    summary = db.evaluation_summary(engine, mosaic_set_id=mosaic_set_id)
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


def _fmt(value: float) -> str:
    return "  n/a" if math.isnan(value) else f"{value:.3f}"


def _table_text(frame: Any) -> str:
    columns = list(frame.columns)
    width = max([len("method")] + [len(str(i)) for i in frame.index]) + 2
    widths = [max(len(str(c)), 5) + 2 for c in columns]
    lines = ["method".ljust(width) + "".join(str(c).rjust(w) for c, w in zip(columns, widths))]
    for method, row in frame.iterrows():
        lines.append(str(method).ljust(width) + "".join(_fmt(row[c]).rjust(w) for c, w in zip(columns, widths)))
    return "\n".join(lines)


def _print_outcome(plan: DemoPlan, table: Any, cascade: Any, report: Path, database: str, reused: list[str],
                   elapsed: float, n_mosaics: int, final_epoch: dict[str, Any]) -> None:
    accuracy = final_epoch.get("val_accuracy")
    model = f"digits_cnn after {plan.epochs} epoch(s)" + (f", val accuracy {accuracy:.3f}" if accuracy is not None else "")
    print(f"\nMedian Focus on {n_mosaics} test mosaics ({model}); about 0.5 is chance, 1 is perfect:")
    print(_table_text(table))
    if "lrp_fast" in table.index:
        print("(lrp_fast: the paper's LRP rules in plain torch; equal to the zennit reference `lrp` to ~1e-5, ~3x faster)")
    if len(cascade) and len(cascade.columns) > 1:
        print("\nCascading randomization: median Focus as layers are re-initialised from the top (column: deepest one):")
        print(_table_text(cascade))
    print(f"\nReport:   {report}")
    sqlite_prefix = "sqlite:///"
    if plan.database_url.startswith(sqlite_prefix):
        print(f"Database: {plan.database_url[len(sqlite_prefix):]}  (`focus results`, or any SQLite client)")
    else:
        print(f"Database: {database}  (`focus results`)")
    if reused:
        print("Reused (recorded by an earlier run, not redone): " + ", ".join(reused) + ".")
    print(f"Done in {_duration(elapsed)}.")
