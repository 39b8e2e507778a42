"""``focus demo``: the short end-to-end run on the embedded defaults.

Train the digits CNN (Focus per epoch), evaluate several methods on the test mosaics, run the full
and cascading randomization tests, build the report, and print median Focus per method for the
trained and the fully random model. Every step is a flow that reuses what is recorded, so a second
run finishes in seconds and says what it reused.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["run_demo", "median_table"]

DEMO_NAME = "demo-digits"
RANDOMIZATION_METHODS = ("gradcam", "lrp")


def _say(message: str) -> None:
    print(f"focus demo: {message}", file=sys.stderr, flush=True)


def median_table(summary: Any) -> Any:
    """Median Focus per method (rows) for the trained model and its randomizations (columns)."""
    import pandas as pd

    if summary.empty:
        return pd.DataFrame()
    frame = summary.copy()
    frame["model"] = frame["randomization"].where(frame["randomization"] != "none", "trained")
    cascading = frame["randomization"] == "cascading"
    frame.loc[cascading, "model"] = "cascading " + frame.loc[cascading, "stage"].astype("Int64").astype(str)
    table = frame.pivot_table(index="method", columns="model", values="median_focus", aggfunc="first")
    ordered = [c for c in ("trained", "full") if c in table.columns] + sorted(
        (c for c in table.columns if c not in ("trained", "full")), key=lambda c: (len(c), c)
    )
    return table[ordered].round(3)


def run_demo(args: argparse.Namespace) -> Path:
    """Run the demo with the options of ``focus demo``; return the report's path."""
    import db
    from flows import cli, store
    from flows.cli_params import database_url
    from flows.cli_report import build_report
    from flows.params import EvaluateParams, RandomizationParams, TrainParams

    started = time.monotonic()
    url = database_url(args)
    revision = db.upgrade(url)
    _say(f"store {store.describe(url)} at schema revision {revision}")
    methods = args.methods or [{"name": m} for m in cli.DEMO_METHODS]
    checkpoint_dir = str(Path(args.checkpoint_dir).resolve())

    _say(f"1/4 training the digits CNN for {args.epochs} epoch(s), Focus per epoch")
    trained = cli.run_flow("train", "train", TrainParams(
        name=DEMO_NAME, epochs=args.epochs, device=args.device, checkpoint_dir=checkpoint_dir,
        focus_mosaics={"split": "val", "per_class": max(1, args.per_class // 2)}, audit=True,
    ))
    if not trained["epochs_run"]:
        _say(f"   reused: all {args.epochs} epoch(s) were already recorded")
    weights = trained["final_weights"]
    model = {"architecture": "digits_cnn", "weights": weights, "label": DEMO_NAME}
    mosaics = {"split": "test", "per_class": args.per_class, "seed": 0}
    run = {"device": args.device}

    _say(f"2/4 evaluating {', '.join(m['name'] for m in methods)} on {args.per_class * 10} test mosaics")
    evaluated = cli.run_flow("evaluate", "evaluate", EvaluateParams(
        model=model, mosaics=mosaics, methods=methods, run=run,
    ))
    skipped = sum(e.get("chunks_skipped", 0) for e in evaluated.get("evaluations", []))
    if skipped:
        _say(f"   reused: {skipped} chunk(s) were already recorded")

    _say("3/4 randomization tests: fully random model and cascading randomization from the top layer")
    cli.run_flow("randomization", "randomization", RandomizationParams(
        model=model, mosaics=mosaics, methods=[{"name": m} for m in RANDOMIZATION_METHODS],
        kinds=["full", "cascading"], run=run,
    ))

    _say("4/4 building the report")
    report = build_report(Path(args.out), database_url=url)

    engine = store.engine_for(url)
    summary = db.evaluation_summary(engine)
    summary = summary[summary["checkpoint_id"] == trained["final_checkpoint_id"]]
    table = median_table(summary)
    print("\nMedian Focus per method (trained model vs randomized copies; about 0.5 is chance):")
    print(table.to_string() if not table.empty else "(no finished evaluations)")
    print(f"\nReport: {report}")
    _say(f"done in {time.monotonic() - started:.0f} s")
    return report
