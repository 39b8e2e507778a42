"""Transactions shared by every write: one per call on an ``Engine``, a savepoint inside a caller's.

Every write function takes a ``Store``: an ``Engine`` (the call runs in its own transaction) or a
``Connection`` (the call joins the caller's transaction inside a savepoint; the caller commits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from db.connection_faults import gone_error
from db.engine import mask_url
from db.errors import StoreError

__all__ = ["Store", "transaction", "idempotent", "get_or_create_keyed", "error_reason", "storage_error"]

Store = Engine | Connection
T = TypeVar("T")


@contextmanager
def transaction(store: Store) -> Iterator[Connection]:
    """A connection inside a transaction: a new one on an ``Engine``, a savepoint in a caller's.

    Raises
    ------
    StoreError
        When the database cannot be written at all (SQLite: its disk is full or the file is read-only;
        PostgreSQL: the server's disk is full or it is read-only), or is gone (dropped, renamed, its server
        refusing connections: ``db.connection_faults``); the transaction is rolled back.
    """
    try:
        if isinstance(store, Engine):
            with store.begin() as connection:
                yield connection
        elif store.in_transaction():
            with store.begin_nested():
                yield store
        else:
            with store.begin():
                yield store
    except DBAPIError as exc:  # disk full: OperationalError; PostgreSQL's read-only transaction: InternalError
        problem = storage_error(store, exc) or gone_error(store, exc)
        if problem is None:
            raise
        if isinstance(store, Engine) and store.url.get_backend_name() == "sqlite":
            _give_back_wal_space(store)
        raise problem from exc


def _give_back_wal_space(engine: Engine) -> None:
    """Copy SQLite's write-ahead log into the database and truncate it, freeing its disk space (best effort).

    After a write failed on a full disk, the committed frames still held in the log are updates of pages the
    database has already, so the checkpoint needs no new space, and the freed log lets the caller record that
    the work failed (an evaluation's status, the release of its leases).
    """
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    except DBAPIError:
        pass  # the disk is too full even for that: the error raised says what to do


#: SQLite's messages (lower case) for a database that cannot be written, and what to do about each.
_SQLITE_FAULTS = {
    "database or disk is full": "free space on its disk",
    "disk i/o error": "check that its disk has free space",
    "attempt to write a readonly database": "make the file and its folder writable",
}
#: PostgreSQL's SQLSTATEs for a server that cannot write: disk_full, read_only_sql_transaction.
_POSTGRES_FAULTS = {"53100": "free space on the database server", "25006": "connect to a server that accepts writes"}
_ELSEWHERE = "or point --database-url (or FOCUS_DATABASE_URL) at another database"


def storage_error(store: Store, exc: BaseException) -> StoreError | None:
    """The :class:`StoreError` for a driver error that says the database cannot be written, else ``None``.

    Examples
    --------
    >>> import sqlite3
    >>> from sqlalchemy import create_engine
    >>> from sqlalchemy.exc import OperationalError
    >>> error = OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    >>> print(storage_error(create_engine("sqlite:////data/focus.db"), error))
    The database file /data/focus.db cannot be written (database or disk is full): free space on its disk \
or point --database-url (or FOCUS_DATABASE_URL) at another database.
    """
    orig = getattr(exc, "orig", exc)
    url = store.engine.url
    reason = error_reason(exc)
    if url.get_backend_name() == "sqlite":
        remedy = next((fix for text, fix in _SQLITE_FAULTS.items() if text in str(orig).lower()), None)
        if remedy is None:
            return None
        return StoreError(f"The database file {url.database or '(in memory)'} cannot be written ({reason}): "
                          f"{remedy} {_ELSEWHERE}.")
    remedy = _POSTGRES_FAULTS.get(str(getattr(orig, "sqlstate", "") or ""))
    if remedy is None:
        return None
    return StoreError(f"The database at {mask_url(url)} cannot be written ({reason}): {remedy} {_ELSEWHERE}.")


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


def get_or_create_keyed(store: Store, table: Any, values: dict[str, Any], what: str, first: str) -> int:
    """The id of ``table``'s row whose ``natural_key`` is ``values["natural_key"]``, inserted from ``values`` if new.

    Idempotent (:func:`idempotent`): two callers racing for one key get the same id. A row the store refuses (a
    foreign key) raises :class:`StoreError`: "Cannot create ``what`` (the reason); ``first``", where ``first`` says
    what to register first.
    """
    from sqlalchemy import insert, select

    key = values["natural_key"]

    def work(connection: Connection) -> int:
        existing = connection.scalar(select(table.id).where(table.natural_key == key))
        if existing is not None:
            return existing
        return connection.scalar(insert(table).values(values).returning(table.id))

    try:
        return idempotent(store, work)
    except IntegrityError as exc:
        raise StoreError(f"Cannot create {what} ({error_reason(exc)}); {first}") from None


def error_reason(exc: BaseException) -> str:
    """The first line of a driver error, for a one-sentence message."""
    lines = str(getattr(exc, "orig", exc)).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(exc).__name__
