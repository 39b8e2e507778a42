"""Throw-away PostgreSQL databases for the tests (one per test, dropped afterwards).

The server is 127.0.0.1:5432 with trust authentication (override with FOCUS_TEST_POSTGRES_URL,
a URL to a server database such as ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``).
With CI=true a server that does not answer fails the test; locally it skips with the reason.
"""

from __future__ import annotations

import os
import uuid

import pytest

__all__ = ["SERVER_URL", "create_database", "drop_database", "in_ci"]

SERVER_URL = os.environ.get("FOCUS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _conninfo(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(prefix: str = "focus_test") -> str:
    """Create a uniquely named, empty database and return its SQLAlchemy URL."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(_conninfo(SERVER_URL), autocommit=True, connect_timeout=5)
    except psycopg.Error as error:
        reason = f"PostgreSQL is not reachable ({str(error).strip().splitlines()[0]})"
        if in_ci():
            pytest.fail(f"{reason}; CI runs these tests on PostgreSQL.")
        pytest.skip(f"{reason}; start it or set FOCUS_TEST_POSTGRES_URL.")
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop a database made by :func:`create_database`, closing its connections."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    with psycopg.connect(_conninfo(SERVER_URL), autocommit=True, connect_timeout=60) as admin:  # 60 s: a hang
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
