"""A store that cannot be written (a full disk, a read-only file or server) is one StoreError naming it."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

import db
from db.transactions import storage_error


def test_a_read_only_sqlite_file_is_a_store_error_naming_it(tmp_path):
    path = tmp_path / "focus.db"
    db.upgrade(f"sqlite:///{path}")
    engine = db.get_engine(f"sqlite:///file:{path}?mode=ro&uri=true", check=False)
    try:
        with pytest.raises(db.StoreError, match="readonly database.*make the file and its folder writable") as raised:
            db.start_audit_run(engine, name="nightly")
    finally:
        engine.dispose()
    assert str(path) in str(raised.value) and "--database-url" in str(raised.value)


def test_a_read_only_postgresql_server_is_a_store_error(pg_url):
    db.upgrade(pg_url)
    engine = db.get_engine(f"{pg_url}?options=-c%20default_transaction_read_only%3Don", check=False)
    try:
        with pytest.raises(db.StoreError, match="cannot be written .*read-only transaction.*accepts writes") as raised:
            db.start_audit_run(engine, name="nightly")
    finally:
        engine.dispose()
    assert "postgresql+psycopg://" in str(raised.value)


def test_postgresql_disk_full_is_recognised_and_other_errors_are_not(pg_url):
    engine = db.get_engine(pg_url, check=False)
    full = OperationalError("INSERT", {}, psycopg.errors.DiskFull("could not extend file: No space left on device"))
    problem = storage_error(engine, full)
    assert problem is not None and "free space on the database server" in str(problem)
    lost = OperationalError("INSERT", {}, psycopg.OperationalError("server closed the connection unexpectedly"))
    assert storage_error(engine, lost) is None  # transient: left to the retries
    duplicate = IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("duplicate key"))
    assert storage_error(engine, duplicate) is None
    engine.dispose()


def _admin():
    from tests.postgres import SERVER_URL

    from sqlalchemy.engine import make_url

    conninfo = make_url(SERVER_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(conninfo, autocommit=True)


def test_a_terminated_connection_is_transient_and_a_dropped_database_is_gone_in_one_sentence(pg_url):
    from sqlalchemy import text

    from db.connection_faults import is_gone, is_transient

    db.upgrade(pg_url)
    engine = db.get_engine(pg_url, check=False)
    try:
        with engine.connect() as connection, _admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [connection.connection.dbapi_connection.info.backend_pid])
            with pytest.raises(OperationalError) as terminated:
                connection.execute(text("SELECT 1"))
        assert is_transient(terminated.value) and not is_gone(terminated.value)
        name = engine.url.database
        with _admin() as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        with pytest.raises(db.StoreError) as gone:
            db.start_audit_run(engine, name="nightly")
    finally:
        engine.dispose()
    message = str(gone.value)
    assert f"has no database '{name}'" in message and "createdb -h 127.0.0.1" in message and "\n" not in message


def test_a_server_that_refuses_connections_is_gone():
    engine = db.get_engine("postgresql+psycopg://focus@127.0.0.1:1/focus", check=False)
    try:
        with pytest.raises(db.StoreError, match="Connection refused.*that the server is running"):
            db.start_audit_run(engine, name="nightly")
    finally:
        engine.dispose()
