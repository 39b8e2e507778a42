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
from typing import Any

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
    if "prefect" in sys.modules:  # a Prefect error comes from a loaded Prefect: a mistake found before, none loaded
        from prefect.exceptions import ParameterTypeError, SignatureMismatchError

        user_errors += [ParameterTypeError, SignatureMismatchError]
    return isinstance(error, tuple(user_errors))


def one_line(error: BaseException, flags: dict[str, tuple[str, Any]] | None = None) -> str:
    """The error as one line; a pydantic ValidationError names the field and what is wrong.

    ``flags`` (:func:`flows.cli.params.given_flags`: ``{field: (flag, value)}`` of the options given) makes an
    error about a field the user set with an option name that option (``--per-class 0``, ``--method gradcm``)
    instead of the field's path (``mosaics.per_class``, ``methods.0``); and with ``--database-url`` given, advice
    to check FOCUS_DATABASE_URL says ``--database-url``.

    Examples
    --------
    >>> from flows.params import EvaluateParams
    >>> try:
    ...     EvaluateParams(model={"weights": "w.pt"}, mosaics={"per_class": 0})
    ... except ValueError as error:
    ...     print(one_line(error, {"mosaics.per_class": ("--per-class", 0)}))
    invalid parameters: --per-class 0: Input should be greater than or equal to 1
    """
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        ValidationError = ()  # type: ignore[assignment,misc]
    flags = flags or {}
    if isinstance(error, ValidationError):
        problems = []
        for item in error.errors():
            where = _where(tuple(item.get("loc", ())), flags)
            message = str(item.get("msg", "")).removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        shown = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        return f"invalid parameters: {shown}"
    if isinstance(error, OSError) and faults.is_storage_fault(error):
        return faults.describe(error)
    text = " ".join(str(error).split()) or type(error).__name__
    if "run.database_url" in flags or "database_url" in flags:
        text = text.replace("check FOCUS_DATABASE_URL", "check --database-url")
    return text


def _where(loc: tuple[Any, ...], flags: dict[str, tuple[str, Any]]) -> str:
    """The option the user gave for the field at ``loc`` (with its value), else the field's dotted path."""
    path = ".".join(str(part) for part in loc) or "parameters"
    for end in range(len(loc), 0, -1):
        field = ".".join(str(part) for part in loc[:end])
        if field not in flags:
            continue
        flag, value = flags[field]
        rest = loc[end:]
        if rest and isinstance(rest[0], int) and isinstance(value, list) and rest[0] < len(value):
            value, rest = value[rest[0]], rest[1:]
        shown = _shown(value) if "database_url" not in field else None
        return " ".join(filter(None, [flag, shown])) + (f" ({'.'.join(map(str, rest))})" if rest else "")
    return path


def _shown(value: Any) -> str | None:
    """A value as the user typed it: a number, a short word, a method ``name[:key=value,...]``; else ``None``."""
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        params = ",".join(f"{k}={v}" for k, v in (value.get("params") or {}).items())
        return value["name"] + (f":{params}" if params else "")
    if isinstance(value, (int, float)) or (isinstance(value, str) and len(value) <= 80 and " " not in value):
        return str(value)
    return None


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
