"""Engines for the results store: URL resolution and SQLite pragmas (the schema check is in :mod:`db.migrate`)."""

from __future__ import annotations

import math
import os
import re
import shlex
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from db.errors import StoreError

__all__ = [
    "Engine",  # sqlalchemy's, re-exported: callers of db type their engines without importing sqlalchemy
    "DEFAULT_URL",
    "ENV_VAR",
    "SECRET_QUERY_KEYS",
    "database_url",
    "has_secret",
    "mask_url",
    "build_engine",
    "connect_error",
    "missing_sqlite_file",
    "require_existing",
]

ENV_VAR = "FOCUS_DATABASE_URL"
DEFAULT_URL = "sqlite:///focus.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 10

_DIALECTS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}

#: Query-string keys whose values are secrets: libpq (and so psycopg) reads a password from
#: ``?password=`` as well as from the user-info part, and the SSL key's passphrase from
#: ``?sslpassword=``. ``passfile`` and ``sslkey`` name files, whose contents are never read here.
SECRET_QUERY_KEYS = frozenset({"password", "sslpassword"})
_MASK = "***"


def _parse(url: str | URL) -> URL | None:
    """The parsed URL; ``None`` when it does not parse, or when an unencoded ``@`` makes its user-info ambiguous
    (``user:p@ss@host`` parses as the password ``p`` at the host ``ss@host``: showing that host shows the secret)."""
    try:
        parsed = url if isinstance(url, URL) else make_url(str(url).strip())
    except (ArgumentError, ValueError):
        return None
    if "@" in (parsed.host or "") or "@" in (parsed.username or ""):
        return None
    return parsed


def _secret_keys(parsed: URL) -> list[str]:
    return [key for key in parsed.query if key.lower() in SECRET_QUERY_KEYS]


def has_secret(url: str | URL) -> bool:
    """Whether a database URL carries a secret: a user-info password or a secret query value.

    Such a URL must never become a flow parameter (the Prefect UI shows parameters); it travels
    in ``FOCUS_DATABASE_URL`` only. A URL that does not parse counts as secret when it holds an
    ``@`` or names a secret key, since nothing safe can be said about it.

    Examples
    --------
    >>> has_secret("postgresql+psycopg://focus:pw@db/focus"), has_secret("postgresql+psycopg://focus@db/f?password=pw")
    (True, True)
    >>> has_secret("postgresql+psycopg://focus@db/focus?sslmode=require"), has_secret("sqlite:///focus.db")
    (False, False)
    """
    parsed = _parse(url)
    if parsed is None:
        text = str(url).lower()
        return "@" in text or any(key in text for key in SECRET_QUERY_KEYS)
    return parsed.password is not None or bool(_secret_keys(parsed))


def _secret_values(parsed: URL) -> list[str]:
    """Every secret the URL carries, as text (to scrub from a driver's message)."""
    values = [str(parsed.password)] if parsed.password else []
    for key in _secret_keys(parsed):
        value = parsed.query[key]
        values += [value] if isinstance(value, str) else list(value)
    return [value for value in values if value]


def mask_url(url: str | URL) -> str:
    """Render a database URL with every secret hidden (the one function for logs, artifacts and errors).

    The user-info password and the values of :data:`SECRET_QUERY_KEYS` become ``***``; a URL
    that does not parse is not shown at all.

    Examples
    --------
    >>> mask_url("postgresql+psycopg://me:secret@db:5432/focus")
    'postgresql+psycopg://me:***@db:5432/focus'
    >>> mask_url("postgresql+psycopg://me@db/focus?password=secret&sslmode=require")
    'postgresql+psycopg://me@db/focus?password=***&sslmode=require'
    """
    parsed = _parse(url)
    if parsed is None:
        return "<a malformed URL>"
    masked = {}
    for key in _secret_keys(parsed):
        value = parsed.query[key]
        masked[key] = _MASK if isinstance(value, str) else tuple(_MASK for _ in value)
    rendered = parsed.update_query_dict(masked).render_as_string(hide_password=True) if masked else (
        parsed.render_as_string(hide_password=True)
    )
    return rendered.replace("%2A%2A%2A", _MASK)


def database_url(url: str | URL | None = None) -> URL:
    """Resolve the database URL: the argument, else ``FOCUS_DATABASE_URL``, else ``sqlite:///focus.db``.

    ``postgresql://`` and ``postgres://`` URLs use the psycopg 3 driver.

    Raises
    ------
    StoreError
        When the URL is malformed or names a database other than PostgreSQL or SQLite.

    Examples
    --------
    >>> database_url("postgresql://u@localhost/focus").drivername
    'postgresql+psycopg'
    """
    raw = url if url is not None else (os.environ.get(ENV_VAR) or DEFAULT_URL)
    parsed = _parse(raw)
    if parsed is None:
        shown = "(not shown: it may hold a password)" if has_secret(raw) else repr(str(raw))
        raise StoreError(
            f"The database URL {shown} is malformed; set {ENV_VAR} to a URL like "
            "postgresql+psycopg://user@host:5432/focus or sqlite:///focus.db, with '@', ':' and '/' in a password "
            "percent-encoded (%40, %3A, %2F)."
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in _DIALECTS:
        raise StoreError(
            f"The database URL {mask_url(parsed)} names {backend!r}, which focus-audit does not support; "
            f"use a postgresql+psycopg:// or sqlite:/// URL."
        )
    if not driver:
        parsed = parsed.set(drivername=_DIALECTS[backend])
    elif backend in ("postgresql", "postgres") and driver != "psycopg":
        raise StoreError(
            f"The database URL {mask_url(parsed)} asks for the driver {driver!r}; use postgresql+psycopg:// (psycopg 3)."
        )
    if backend == "postgres":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    try:  # the summary views need SQRT, a math function some SQLite builds leave out
        cursor.execute("SELECT sqrt(4.0)")
    except sqlite3.OperationalError:
        dbapi_connection.create_function("sqrt", 1, _sqrt, deterministic=True)
    cursor.close()


def _postgres_settings(dbapi_connection: Any, _record: Any) -> None:
    """Every PostgreSQL connection runs with JIT off.

    The store's queries read a few evaluations through their keys (milliseconds of work), but the planner's cost of
    an index scan grows with the partition it reads, so at about 10M rows their estimates pass ``jit_above_cost``
    and compiling the plan took 20-60 ms, more than the query itself (docs/scaling.md). A session setting, so it
    works behind a connection pooler that refuses startup options.
    """
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    cursor = dbapi_connection.cursor()
    cursor.execute("SET jit = off")
    cursor.close()
    dbapi_connection.autocommit = autocommit


def _sqrt(value: float | None) -> float | None:
    return None if value is None or value < 0 else math.sqrt(value)


def _scrub(text: str, url: URL) -> str:
    """``text`` with the URL's secrets masked where a secret stands as a whole: in a URL's user-info
    (``:secret@``), as the value of ``password=``, quoted or in brackets (plain or percent-encoded); never the same
    letters inside a longer word (the password ``st`` leaves ``host`` alone).

    Examples
    --------
    >>> _scrub('no host "host"; password=st, url me:st@db, value (st)', make_url("postgresql://me:st@db/f"))
    'no host "host"; password=***, url me:***@db, value (***)'
    """
    for secret in sorted(_secret_values(url), key=len, reverse=True):
        for form in {secret, quote(secret, safe="")}:
            text = re.sub(rf"(?<!\w){re.escape(form)}(?!\w)", _MASK, text)
    return text


#: libpq's lead-in to why a connection failed ('connection failed: connection to server at "h", port 5432 failed:
#: FATAL:  database "x" does not exist'): the reason is what follows.
_LIBPQ_PREFIX = re.compile(r"^(connection failed: )?(connection to server (at|on) .*? failed: )?(FATAL:\s+)?")


#: PostgreSQL's reason for a database name the server does not have.
_MISSING_DATABASE = re.compile(r'^database "(?P<name>.*)" does not exist$')


def _createdb(url: URL) -> str:
    """The ``createdb`` command that makes the database ``url`` names, on its server, as its user."""
    words = ["createdb"]
    for flag, value in (("-h", url.host), ("-p", url.port), ("-U", url.username)):
        if value:
            words += [flag, str(value)]
    return shlex.join([*words, str(url.database)])


def connect_error(url: URL, exc: BaseException) -> StoreError:
    """Turn a driver's connection failure into one clear sentence, every secret of the URL hidden.

    The driver's first line is kept with the URL's secrets scrubbed from it too; the advice
    fits the backend (a server that runs for PostgreSQL, a file's folder for SQLite). A PostgreSQL database that
    does not exist gets the ``createdb`` command that makes it (the server's own words, libpq's ``FATAL``, stay
    out).

    Examples
    --------
    >>> print(connect_error(make_url("sqlite:////no/dir/f.db"), OSError("unable to open database file")))
    ... # doctest: +NORMALIZE_WHITESPACE
    Cannot open the database at sqlite:////no/dir/f.db (unable to open database file); check FOCUS_DATABASE_URL:
    it must name a SQLite file (or a new one in a folder that exists) this user may write.
    >>> print(connect_error(make_url("postgresql+psycopg://me@db:5432/focsu"), OSError(
    ...     'connection failed: connection to server at "db", port 5432 failed: FATAL:  database "focsu" does not exist')))
    ... # doctest: +NORMALIZE_WHITESPACE
    The PostgreSQL server at db:5432 has no database 'focsu': create it with
    `createdb -h db -p 5432 -U me focsu`, then run `focus db upgrade` to give it the schema.
    """
    reason = str(getattr(exc, "orig", exc) or exc).strip().splitlines()
    first = reason[0].rstrip(".") if reason else type(exc).__name__
    first = _LIBPQ_PREFIX.sub("", first) or first  # the URL names the server already
    first = _scrub(first, url)
    if url.get_backend_name() != "sqlite" and _MISSING_DATABASE.match(first) and url.database:
        return StoreError(
            f"The PostgreSQL server at {url.host or 'localhost'}{f':{url.port}' if url.port else ''} has no database "
            f"{url.database!r}: create it "
            f"with `{_createdb(url)}`, then run `focus db upgrade` to give it the schema."
        )
    if url.get_backend_name() == "sqlite":
        advice = f"{ENV_VAR}: it must name a SQLite file (or a new one in a folder that exists) this user may write"
    else:
        advice = f"{ENV_VAR}, that the database exists and that the server is running"
    return StoreError(f"Cannot open the database at {mask_url(url)} ({first}); check {advice}.")


def build_engine(url: str | URL | None = None) -> Engine:
    """Create an engine for the results store without touching the database (no schema check).

    :func:`db.migrate.get_engine` (``db.get_engine``) also checks the schema; the check lives there, with the
    migrations, so that this module needs nothing from them.

    Parameters
    ----------
    url
        A SQLAlchemy URL; ``None`` reads ``FOCUS_DATABASE_URL`` and falls back to ``sqlite:///focus.db``.

    Returns
    -------
    Engine
        SQLite engines run with foreign keys on, WAL and a busy timeout; PostgreSQL ones with JIT off.

    Raises
    ------
    StoreError
        For a malformed URL or a database this project does not support.

    Examples
    --------
    >>> engine = build_engine("sqlite://")
    >>> engine.dialect.name
    'sqlite'
    """
    parsed = database_url(url)
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise StoreError(f"Cannot use the database URL {mask_url(parsed)} ({exc}); check {ENV_VAR}.") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        event.listen(engine, "connect", _postgres_settings)
    return engine


def missing_sqlite_file(url: str | URL | None = None) -> Path | None:
    """The file a SQLite URL names, when it does not exist (connecting would create it empty); else ``None``.

    ``None`` too for other databases, an in-memory SQLite database and a URL with SQLite's own ``mode``.

    Examples
    --------
    >>> missing_sqlite_file("sqlite:////no/such/focus.db")
    PosixPath('/no/such/focus.db')
    >>> missing_sqlite_file("sqlite://") is None, missing_sqlite_file("postgresql://u@db/focus") is None
    (True, True)
    """
    parsed = database_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:") or parsed.query.get("mode"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path.absolute()


def require_existing(url: str | URL | None = None) -> None:
    """Refuse to read a SQLite store whose file does not exist, before a connection would create it empty.

    Raises
    ------
    StoreError
        Naming the file, for a missing SQLite file (other databases pass: the server says what is missing).

    Examples
    --------
    >>> require_existing("sqlite:////no/such/focus.db")
    Traceback (most recent call last):
    ...
    db.errors.StoreError: There is no SQLite file '/no/such/focus.db' (the database URL sqlite:////no/such/focus.db): \
check the URL, or create the store there with `focus db upgrade`.
    """
    missing = missing_sqlite_file(url)
    if missing is not None:
        raise StoreError(
            f"There is no SQLite file '{missing}' (the database URL {mask_url(database_url(url))}): check the URL, "
            "or create the store there with `focus db upgrade`."
        )
