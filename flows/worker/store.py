"""One engine per database URL per process, opened with the schema check, logged without its password.

A flow's steps that read or write the store run through :func:`retrying`: a connection lost for a moment is
retried, a store that is gone stops the run at once in one sentence (``db.connection_faults``).

Examples
--------
>>> describe("postgresql+psycopg://me:secret@db/focus")
'postgresql+psycopg://me:***@db/focus'
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from db.connection_faults import is_transient, reachable
from db.engine import Engine, database_url, mask_url
from db.migrate import create_if_fresh, get_engine

__all__ = [
    "database_param", "engine_for", "describe", "dispose_engines", "prepare", "retrying", "RETRY_DELAYS_S",
]

T = TypeVar("T")
#: The waits before each new try of a step whose connection was lost (about 15 s in all).
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)

_ENGINES: dict[str, Engine] = {}
_LOCK = threading.Lock()


def database_param(params: Any) -> str | None:
    """The store a flow's parameters name (``run.database_url``), else ``None`` (the default)."""
    return params.run.database_url


def engine_for(url: str | None = None) -> Engine:
    """The engine of focus-audit's store at ``url`` (else ``FOCUS_DATABASE_URL``, else ``sqlite:///focus.db``).

    The first call per URL checks that the schema is at head (``db.errors.StoreError`` with
    "run `focus db upgrade`" otherwise); later calls reuse the engine and its pool.
    """
    key = database_url(url).render_as_string(hide_password=False)
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = get_engine(key, check=True)
        return engine


def prepare(url: str | None = None) -> str | None:
    """Open the store before a command starts Prefect; return the revision created, or ``None``.

    A fresh embedded SQLite file (missing, empty, no table) gets the schema at once
    (:func:`db.migrate.create_if_fresh`); every other store is only checked (:func:`engine_for`), so a
    database at an old revision fails in a second with "run `focus db upgrade`", never after Prefect
    has started. PostgreSQL is never migrated silently.
    """
    created = create_if_fresh(url)
    engine_for(url)
    return created


def describe(url: str | None = None) -> str:
    """The store's URL with the password hidden, for log lines and artifacts."""
    return mask_url(database_url(url))


def dispose_engines() -> None:
    """Close every pooled connection (before dropping a test database, or at the end of a worker)."""
    with _LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


def retrying(engine: Engine, step: Callable[[], T], delays: tuple[float, ...] = RETRY_DELAYS_S) -> T:
    """Run ``step`` (idempotent work on ``engine``'s store); after a transient connection fault, run it again.

    A transient fault (``db.connection_faults.is_transient``: a terminated connection, a server restarting) is
    retried after each of ``delays``; the last one is raised. A store that is gone raises its one-sentence
    ``StoreError`` at once, and any other error is raised as it is.
    """
    for delay in delays:
        try:
            with reachable(engine):
                return step()
        except Exception as error:
            if not is_transient(error):
                raise
            logging.getLogger(__name__).warning(
                "Lost the connection to the store at %s (%s); trying again in %.1f s", mask_url(engine.url),
                " ".join(str(getattr(error, "orig", error)).split())[:200], delay,
            )
            time.sleep(delay)
    with reachable(engine):
        return step()
