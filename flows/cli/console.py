"""How the ``focus`` command line shows its work: step lines, progress bars moved by the flows' logs, tables.

Nothing here reads the store: a bar moves on the log lines a flow writes as it goes (e.g.
:data:`flows.evaluate.LOG_CHUNK_DONE`), which the flows write anyway for the Prefect UI.

Examples
--------
>>> import pandas as pd
>>> print(table_text(pd.DataFrame({"trained": [0.9, float("nan")]}, index=pd.Index(["gradcam", "random"]))))
method     trained
gradcam      0.900
random         n/a
>>> duration(75.2)
'1 min 15 s'
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Steps", "duration", "progress", "quiet_prefect_console", "table_text"]


@contextmanager
def progress(desc: str, unit: str, total: int | None, moves: dict[str, Callable[[Any, tuple], None]],
              **bar_options: Any) -> Iterator[Any]:
    """A tqdm bar on stderr moved by the flows' own log lines while they run; nothing reads the store.

    ``moves`` maps a flow's log template (e.g. :data:`flows.evaluate.LOG_CHUNK_DONE`) to what its
    arguments do to the bar. The bar shows only on a terminal; the step lines with their timings show
    everywhere.
    """
    from tqdm import tqdm

    bar = tqdm(total=total, desc=f"  {desc}", unit=unit, leave=False, dynamic_ncols=True,
               **{"file": sys.stderr, "disable": None, **bar_options})

    class Moves(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            move = moves.get(record.msg) if isinstance(record.msg, str) else None
            if move is not None and isinstance(record.args, tuple):
                move(bar, record.args)

    handler, logger = Moves(logging.INFO), logging.getLogger("prefect.flow_runs")
    logger.addHandler(handler)
    try:
        yield bar
    finally:
        logger.removeHandler(handler)
        bar.close()


@contextmanager
def quiet_prefect_console(verbose: bool) -> Iterator[None]:
    """Raise the console handlers to WARNING so the step lines and bars stay readable.

    Only stream handlers change: the logs still reach the Prefect API (and its UI) when there is one.
    """
    from prefect import flow  # noqa: F401 - Prefect sets up its logging (the console handlers) on this import
    loggers = [logging.getLogger()] + [
        logger for name, logger in list(logging.Logger.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and name.split(".")[0] in {"prefect", "uvicorn", "fastapi", "httpx"}
    ]
    changed = [] if verbose else [
        (handler, handler.level) for logger in loggers for handler in logger.handlers
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
    ]
    for handler, level in changed:
        handler.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        for handler, level in changed:
            handler.setLevel(level)


def duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


@dataclass
class Steps:
    """The numbered step lines on stderr: ``[2/5] title`` when a step starts, its outcome and time when it ends."""

    total: int
    say: Callable[[str], None]
    number: int = 0
    started: float = field(default_factory=time.monotonic)

    def begin(self, title: str) -> None:
        self.number += 1
        self.say(f"[{self.number}/{self.total}] {title}")
        self.started = time.monotonic()

    def end(self, message: str) -> None:
        self.say(f"      {message} ({duration(time.monotonic() - self.started)})")


def _number(value: float) -> str:
    return "  n/a" if math.isnan(value) else f"{value:.3f}"


def table_text(frame: Any) -> str:
    """A DataFrame of numbers as a text table: its index under ``method``, every value with three decimals."""
    columns = list(frame.columns)
    width = max([len("method")] + [len(str(i)) for i in frame.index]) + 2
    widths = [max(len(str(c)), 5) + 2 for c in columns]
    lines = ["method".ljust(width) + "".join(str(c).rjust(w) for c, w in zip(columns, widths))]
    for method, row in frame.iterrows():
        lines.append(str(method).ljust(width) + "".join(_number(row[c]).rjust(w) for c, w in zip(columns, widths)))
    return "\n".join(lines)
