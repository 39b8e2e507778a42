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
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Bar", "Steps", "chunk_moves", "duration", "epoch_moves", "progress", "quiet_prefect_console",
           "table_text"]


#: Seconds between two plain-text progress lines when the stream is not a terminal (``FOCUS_PROGRESS_SECONDS``).
PLAIN_PROGRESS_SECONDS = 10.0


class Bar:
    """What a flow's log lines move: ``total`` (``None`` while unknown), ``n`` done, :meth:`update`.

    On a terminal it draws a rich progress bar; elsewhere (a pipe, a CI log) a thread prints one plain
    line every :data:`PLAIN_PROGRESS_SECONDS`, e.g. ``focus demo: epochs: 3/10 (1 min 02 s)``, so a long
    step shows it is alive without filling the log with carriage returns.
    """

    def __init__(self, desc: str, total: int | None, stream: Any, prefix: str, every: float | None = None) -> None:
        self.desc, self.total, self.n, self.stream, self.prefix = desc, total, 0, stream, prefix
        self.started = time.monotonic()
        self.every = every if every is not None else float(os.environ.get("FOCUS_PROGRESS_SECONDS",
                                                                          PLAIN_PROGRESS_SECONDS))
        self._rich: Any = None
        self._task: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Bar:
        if _is_terminal(self.stream):
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._rich = Progress(TextColumn(f"  {self.desc}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=Console(file=self.stream), transient=True)
            self._rich.start()
            self._task = self._rich.add_task(self.desc, total=self.total)
        elif self.every > 0:
            self._thread = threading.Thread(target=self._plain_lines, name="focus-progress", daemon=True)
            self._thread.start()
        return self

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._rich is not None:
            self._rich.update(self._task, completed=self.n, total=self.total)

    def line(self) -> str:
        done = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        return f"{self.prefix} {self.desc}: {done} ({duration(time.monotonic() - self.started)})"

    def _plain_lines(self) -> None:
        while not self._stop.wait(self.every):
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._rich is not None:
            self._rich.stop()


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


@contextmanager
def progress(desc: str, unit: str, total: int | None, moves: dict[str, Callable[[Any, tuple], None]],
             prefix: str = "focus:", stream: Any = None) -> Iterator[Bar]:
    """A progress display on stderr moved by the flows' own log lines while they run; nothing reads the store.

    ``moves`` maps a flow's log template (e.g. :data:`flows.evaluate.LOG_CHUNK_DONE`) to what its
    arguments do to the :class:`Bar` (``bar.total``, ``bar.n``, ``bar.update(k)``). A rich bar on a
    terminal, a plain line every few seconds elsewhere; ``unit`` names what is counted.
    """
    bar = Bar(desc or unit, total, stream if stream is not None else sys.stderr, prefix).start()

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


def chunk_moves() -> dict[str, Callable[[Any, tuple], None]]:
    """The evaluate flow's planning line grows the total (the chunks already finished count as done) and every
    chunk line moves the bar by one; a randomization's evaluate runs add theirs as they start."""
    from flows.evaluate import LOG_CHUNK_DONE, LOG_PLANNED

    def planned(bar: Any, args: tuple) -> None:
        bar.total = (bar.total or 0) + args[0] + args[1]
        bar.update(args[1])

    return {LOG_PLANNED: planned, LOG_CHUNK_DONE: lambda bar, args: bar.update(1)}


def epoch_moves() -> dict[str, Callable[[Any, tuple], None]]:
    """The train flow's resume line sets the epochs already done; every epoch line moves the bar by one."""
    from flows.train import LOG_EPOCH, LOG_RESUMED

    return {LOG_RESUMED: lambda bar, args: bar.update(args[1] - bar.n), LOG_EPOCH: lambda bar, args: bar.update(1)}


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
