"""How the ``focus`` command reports a failure: the user's mistakes in one line, the rest as failed.

A mistake the user can fix (a bad option, a missing file, a database at an old schema version)
is a :class:`UsageError`, a :class:`~focus_core.errors.FocusError`, a
:class:`~db.errors.StoreError` or one of the built-in errors of :func:`is_user_error`; the
command shows it as one line and exits with :data:`EXIT_USAGE`.

Examples
--------
>>> is_user_error(UsageError("The weights file 'x.pt' does not exist."))
True
>>> is_user_error(RuntimeError("CUDA error"))
False
>>> one_line(ValueError("two\\n   lines"))
'two lines'
"""

from __future__ import annotations

import logging
import os
import sys

from flows.worker import faults
from focus_core.errors import FocusError

__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "PROG",
    "UsageError",
    "info",
    "is_user_error",
    "one_line",
    "quiet_user_error_tracebacks",
    "user_cause",
]

PROG = "focus"
EXIT_USAGE = 2
EXIT_FAILED = 1


class UsageError(FocusError):
    """A mistake in how the command was called (one sentence, exit status 2)."""


def user_cause(error: BaseException) -> BaseException | None:
    """The user's mistake behind a failure, if any.

    A flow re-raises a chunk's FocusError or StoreError as its cause; a full, read-only or forbidden
    filesystem (:func:`flows.worker.faults.storage_fault`) counts wherever it is in the chain.
    """
    from db.errors import StoreError

    seen = 0
    cause = error.__cause__
    while cause is not None and seen < 10:
        if isinstance(cause, (FocusError, StoreError)):
            return cause
        cause, seen = cause.__cause__, seen + 1
    return faults.storage_fault(error)


def is_user_error(error: BaseException | None) -> bool:
    """Whether ``error`` itself is a mistake the user can fix (a bad value, a missing file, a full disk, ...)."""
    if error is None:
        return False
    if isinstance(error, OSError) and faults.is_storage_fault(error):
        return True
    user_errors: list[type[BaseException]] = [ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError]
    try:
        from prefect.exceptions import ParameterTypeError, SignatureMismatchError

        user_errors += [ParameterTypeError, SignatureMismatchError]
    except ImportError:  # pragma: no cover - prefect is a dependency
        pass
    return isinstance(error, tuple(user_errors))


def one_line(error: BaseException) -> str:
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
    if isinstance(error, OSError) and faults.is_storage_fault(error):
        return faults.describe(error)
    text = " ".join(str(error).split()) or type(error).__name__
    return text


class _NoUserErrorTraceback(logging.Filter):
    """Drop the traceback Prefect logs for a failed run when the error, or its cause, is the user's (one line stays)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and (is_user_error(record.exc_info[1]) or user_cause(record.exc_info[1]) is not None):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_user_error_tracebacks() -> None:
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


def info(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
