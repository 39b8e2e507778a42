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
