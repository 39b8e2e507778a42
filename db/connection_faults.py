"""A store that is gone for good, or a connection lost for a moment: told apart by SQLSTATE and the driver's words.

*Gone*: the database does not exist (SQLSTATE 3D000: dropped or renamed), the server refuses connections or
cannot be found, the login is refused (28000, 28P01). Retrying cannot help: :func:`gone_error` is the one-sentence
:class:`~db.errors.StoreError` to stop with (``db.engine.connect_error``), and :func:`reachable` raises it.

*Transient*: the server ended this connection (57P01 admin_shutdown, e.g. ``pg_terminate_backend``; 57P02
crash_shutdown; 57P03 cannot_connect_now), a connection exception (class 08), a serialization failure or a
deadlock (40001, 40P01), or a connection that SQLAlchemy found broken (``connection_invalidated``): the same call,
on a new connection, may succeed (:func:`is_transient`). Every write of ``db`` is idempotent, so it may be retried.

libpq reports a failed connection without a SQLSTATE; its message is matched instead (lower case).

Examples
--------
>>> import psycopg
>>> from sqlalchemy.exc import OperationalError
>>> dropped = OperationalError("SELECT 1", {}, psycopg.OperationalError(
...     'connection failed: connection to server at "db" (10.0.0.5), port 5432 failed: '
...     'FATAL:  database "focus" does not exist'))
>>> is_gone(dropped), is_transient(dropped)
(True, False)
>>> ended = OperationalError("SELECT 1", {}, psycopg.errors.AdminShutdown("terminating connection"))
>>> is_gone(ended), is_transient(ended)
(False, True)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from db.engine import connect_error
from db.errors import StoreError

__all__ = ["is_gone", "is_transient", "gone_error", "reachable"]

#: invalid_catalog_name (the database does not exist), invalid_authorization_specification, invalid_password.
_GONE_SQLSTATES = frozenset({"3D000", "28000", "28P01"})
#: What libpq says when it cannot connect for good.
_GONE_WORDS = ("does not exist", "connection refused", "password authentication failed", "no pg_hba.conf entry",
               "could not translate host name", "name or service not known", "no such file or directory")
#: admin_shutdown, crash_shutdown, cannot_connect_now, serialization_failure, deadlock_detected.
_TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "40001", "40P01"})
#: What libpq says when a connection breaks, or when the server is starting or stopping.
_TRANSIENT_WORDS = ("server closed the connection", "consuming input failed", "connection reset", "broken pipe",
                    "terminating connection", "ssl syscall error", "the database system is", "connection timeout",
                    "timeout expired", "lost synchronization")


def _sqlstate(exc: BaseException) -> str:
    return str(getattr(getattr(exc, "orig", exc), "sqlstate", "") or "")


def _words(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc)).lower()


def is_gone(exc: BaseException) -> bool:
    """Whether a driver error says the store is gone for good (see the module's docstring)."""
    if not isinstance(exc, DBAPIError):
        return False
    state = _sqlstate(exc)
    if state:
        return state in _GONE_SQLSTATES
    words = _words(exc)
    return any(w in words for w in _GONE_WORDS) and not any(w in words for w in _TRANSIENT_WORDS)


def is_transient(exc: BaseException) -> bool:
    """Whether a driver error is a lost or refused-for-now connection worth another try (never a gone store)."""
    if not isinstance(exc, DBAPIError) or is_gone(exc):
        return False
    state = _sqlstate(exc)
    if state in _TRANSIENT_SQLSTATES or state.startswith("08") or exc.connection_invalidated:
        return True
    words = _words(exc)
    return not state and any(w in words for w in _TRANSIENT_WORDS)


def gone_error(store: Engine | Connection, exc: BaseException) -> StoreError | None:
    """The one-sentence :class:`StoreError` for an error that says the store is gone, else ``None``."""
    return connect_error(store.engine.url, exc) if is_gone(exc) else None


@contextmanager
def reachable(store: Engine | Connection) -> Iterator[None]:
    """Raise :func:`gone_error`'s ``StoreError`` (not the driver's error) when the store turns out to be gone.

    A transient error is checked with one new connection first: a database dropped under a running statement
    ends its connection (57P01) before anything says it is gone, and only the next connection tells.
    """
    try:
        yield
    except DBAPIError as exc:
        problem = gone_error(store, exc) or (_probe(store) if is_transient(exc) else None)
        if problem is None:
            raise
        raise problem from None


def _probe(store: Engine | Connection) -> StoreError | None:
    """The gone store's ``StoreError`` if a new connection says it is gone, else ``None``."""
    try:
        with store.engine.connect():
            return None
    except DBAPIError as exc:
        return gone_error(store, exc)
