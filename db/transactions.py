"""Transactions shared by every write: one per call on an ``Engine``, a savepoint inside a caller's.

Every write function takes a ``Store``: an ``Engine`` (the call runs in its own transaction) or a
``Connection`` (the call joins the caller's transaction inside a savepoint; the caller commits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

__all__ = ["Store", "transaction", "idempotent", "error_reason"]

Store = Engine | Connection
T = TypeVar("T")


@contextmanager
def transaction(store: Store) -> Iterator[Connection]:
    """A connection inside a transaction: a new one on an ``Engine``, a savepoint in a caller's."""
    if isinstance(store, Engine):
        with store.begin() as connection:
            yield connection
    elif store.in_transaction():
        with store.begin_nested():
            yield store
    else:
        with store.begin():
            yield store


def idempotent(store: Store, work: Callable[[Connection], T]) -> T:
    """Run ``work`` in a transaction; after a unique-key race, run it once more (it then finds the row)."""
    try:
        with transaction(store) as connection:
            return work(connection)
    except IntegrityError:
        if not isinstance(store, Engine):
            raise
        with transaction(store) as connection:
            return work(connection)


def error_reason(exc: BaseException) -> str:
    """The first line of a driver error, for a one-sentence message."""
    lines = str(getattr(exc, "orig", exc)).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(exc).__name__
