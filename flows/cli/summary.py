"""What a ``focus`` command prints on stdout when it ends: a short human summary, or JSON for machines.

By default a command that ran a flow prints one screen: a table of median Focus per evaluation with
``n``, the share of undefined maps and a 95% bootstrap interval, where the results are, and what to
run next. ``--format json`` prints the flow's result as valid JSON and nothing else on stdout (the
progress and step lines go to stderr). ``--verbose`` shows Prefect's own log lines (stderr).

A command joins this machinery with two calls: :func:`add_output_options` on its parser and
:func:`register` for a function that turns its result into lines; :func:`flows.cli.main` then calls
:func:`emit` with what the handler returned. A command without a registered summary prints its
result as JSON in both formats.

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_output_options(parser)
>>> vars(parser.parse_args(["--format", "json"]))
{'format': 'json', 'verbose': False}
>>> evaluation_ids({"evaluations": [{"evaluation_id": 4}], "stages": [{"evaluation_ids": {"lrp": 7}}]})
[4, 7]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "SUMMARIES",
    "add_output_options",
    "emit",
    "evaluation_ids",
    "evaluation_table",
    "register",
    "wants_json",
]

#: The intervals of the summary table: percentile bootstrap of the median (as the report's tables).
CONFIDENCE = 0.95
RESAMPLES = 1000

Summary = Callable[[Any, argparse.Namespace], list[Any]]
#: command name -> function(result, args) returning the lines (str or rich renderables) of its summary.
SUMMARIES: dict[str, Summary] = {}


def register(command: str) -> Callable[[Summary], Summary]:
    """Decorator: ``function(result, args)`` returns the human summary of ``command`` as lines."""

    def decorate(function: Summary) -> Summary:
        SUMMARIES[command] = function
        return function

    return decorate


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--format text|json`` (what stdout holds) and ``--verbose`` (Prefect's log lines on stderr)."""
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="text: a short summary (default); json: the flow's whole result as JSON, alone on stdout.")
    parser.add_argument("--verbose", action="store_true", help="Show Prefect's own log lines (flow and task runs).")


def wants_json(args: argparse.Namespace) -> bool:
    return getattr(args, "format", "text") == "json"


def emit(command: str, result: Any, args: argparse.Namespace, stream: Any = None) -> None:
    """Print ``result`` of ``command``: JSON with ``--format json`` (or no summary registered), else the summary."""
    from flows.results.artifacts import json_safe

    stream = stream if stream is not None else sys.stdout
    if result is None:
        return
    summary = SUMMARIES.get(command)
    if wants_json(args) or summary is None:
        if hasattr(result, "model_dump"):
            result = result.model_dump(mode="json")
        stream.write(json.dumps(json_safe(result), indent=2, default=str) + "\n")
        return
    from rich.console import Console

    console = Console(file=stream, width=_width(stream), highlight=False, markup=False, emoji=False)
    for line in summary(result, args):
        console.print(line, soft_wrap=isinstance(line, str))  # a long path stays whole, a table fits the width


def _width(stream: Any) -> int:
    """The terminal's width on a terminal, 100 columns elsewhere (a pipe, a log, a test)."""
    import shutil

    isatty = getattr(stream, "isatty", None)
    return shutil.get_terminal_size((100, 24)).columns if isatty and isatty() else 100


def evaluation_ids(result: Any) -> list[int]:
    """Every evaluation id in a flow's result (keys ``evaluation_id`` and ``evaluation_ids``), in order, once."""
    found: list[int] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "evaluation_id" and isinstance(item, int):
                    found.append(item)
                elif key == "evaluation_ids" and isinstance(item, dict):
                    found.extend(int(i) for i in item.values() if i is not None)
                else:
                    walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(result)
    return list(dict.fromkeys(found))


def _fmt(value: Any, digits: int = 3) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(value) else f"{value:.{digits}f}"


def _randomization(row: Any) -> str:
    kind = str(row["randomization"])
    if kind == "none":
        return "trained"
    if kind == "cascading" and row["layer"] is not None:
        return f"cascading to {row['layer']}"
    if kind == "independent" and row["layer"] is not None:
        return f"independent {row['layer']}"
    return kind


def evaluation_table(engine: Any, ids: Iterable[int]) -> Any:
    """A rich table of the evaluations ``ids``: method, model state and seed, n, undefined share, median, intervals.

    Two 95% intervals of the median, as the report's: :func:`focus_core.stats.bootstrap_median_ci` over the
    mosaics (which assumes them independent) and :func:`focus_core.stats.cluster_bootstrap_median_ci`, which
    resamples target classes, then mosaics within them (mosaics of one class are not independent: this one is
    the wider and the one to trust). A checkpoint column appears only when the evaluations span several
    checkpoints; a model and a seed column only when one of them is randomized.
    """
    import db
    from focus_core import stats
    from rich.table import Table

    from flows.results.names import mark_disconnected

    ids = list(ids)
    frame = mark_disconnected(engine, db.evaluation_summary(engine, ids))
    order = {evaluation_id: i for i, evaluation_id in enumerate(ids)}
    frame = frame.assign(_order=frame["evaluation_id"].map(order)).sort_values("_order")
    several = frame["checkpoint_id"].nunique() > 1
    if several:  # a checkpoint several training runs produced byte for byte is named by all of them
        from flows.results.names import names_of

        labels = {int(r["checkpoint_id"]): r["checkpoint_label"] for r in frame.to_dict("records")}
        named = names_of(engine, labels)
        frame = frame.assign(checkpoint_label=frame["checkpoint_id"].map(lambda c: named[int(c)]))
    randomized = (frame["randomization"] != "none").any()
    table = Table(box=None, pad_edge=False, header_style="bold")
    if several:
        table.add_column("checkpoint")
    table.add_column("method")
    if randomized:
        table.add_column("model")
        table.add_column("seed", justify="right")
    for name in ("n", "undefined", "median Focus", "95% mosaics", "95% classes", "evaluation"):
        table.add_column(name, justify="right")
    for row in frame.to_dict("records"):
        n, defined = int(row["n"] or 0), int(row["n_defined"] or 0)
        results = db.evaluation_results(engine, int(row["evaluation_id"]))
        scores = results["focus"].to_numpy(dtype=float)
        classes = results["target_class"].to_numpy()
        low, high = (stats.bootstrap_median_ci(scores, CONFIDENCE, RESAMPLES, seed=0)
                     if len(scores) else (math.nan, math.nan))
        class_low, class_high = (stats.cluster_bootstrap_median_ci(scores, classes, CONFIDENCE, RESAMPLES, seed=0)
                                 if len(scores) else (math.nan, math.nan))
        status = "" if row["status"] == "finished" else f" ({row['status']})"
        cells = [str(row["checkpoint_label"] or f"checkpoint {row['checkpoint_id']}")] if several else []
        cells += [str(row["method"])]
        if randomized:
            seed = row.get("seed")
            cells += [_randomization(row), "" if seed is None or row["randomization"] == "none" or _missing(seed)
                      else str(int(seed))]
        cells += [str(n), f"{(n - defined) / n:.1%}" if n else "", _fmt(row["median_focus"]) + status,
                  _interval(low, high), _interval(class_low, class_high), str(int(row["evaluation_id"]))]
        table.add_row(*cells)
    return table


def _missing(value: Any) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def _interval(low: float, high: float) -> str:
    return f"{_fmt(low)}-{_fmt(high)}" if _fmt(low) else ""


def store_line(url: str | None) -> str:
    """Where the results are, in words a reader can paste (a SQLite path, or the masked URL)."""
    from flows.worker import store

    from pathlib import Path

    described = store.describe(url)
    prefix = "sqlite:///"
    if described.startswith(prefix) and len(described) > len(prefix):
        return f"Results: {Path(described[len(prefix):]).resolve()}  (`focus results`, or any SQLite client)"
    return f"Results: {described}  (`focus results`)"
