"""Opening the store: URL resolution, SQLite settings and one clear sentence for every bad database."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, inspect, select
from sqlalchemy.engine import make_url

import db
import db.migrate
from db.types import UTCDateTime

NEWER_REVISION = '''"""A later schema, for the test of a database behind head."""
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("audit_run", sa.Column("note", sa.Text(), nullable=True))


def downgrade():
    op.drop_column("audit_run", "note")
'''


def test_url_resolution(monkeypatch):
    monkeypatch.delenv(db.ENV_VAR, raising=False)
    assert db.database_url().render_as_string() == "sqlite:///focus.db"
    monkeypatch.setenv(db.ENV_VAR, "postgresql://me@host/focus")
    assert db.database_url().drivername == "postgresql+psycopg"
    assert db.database_url("postgres://me@host/focus").drivername == "postgresql+psycopg"
    assert db.mask_url("postgresql+psycopg://me:s3cret@host/focus") == "postgresql+psycopg://me:***@host/focus"


@pytest.mark.parametrize("url", ["not a url", "://nothing", "postgresql+psycopg://me@host:notaport/db"])
def test_malformed_url_is_one_sentence(url):
    with pytest.raises(db.StoreError, match=r"malformed|Cannot") as info:
        db.get_engine(url)
    assert "\n" not in str(info.value)


def test_unsupported_database():
    with pytest.raises(db.StoreError, match="does not support"):
        db.get_engine("mysql://me@localhost/focus")


def test_unreachable_server_masks_the_password():
    url = "postgresql+psycopg://me:s3cret@127.0.0.1:1/focus"
    for call in (db.open_store, db.upgrade, db.current):
        with pytest.raises(db.StoreError, match=r"^Cannot open the database at .*server is running\.$") as info:
            call(url)
        assert "s3cret" not in str(info.value)
        assert "\n" not in str(info.value)


SECRET_URLS = {
    "user-info": "postgresql+psycopg://me:SEKRET1@127.0.0.1:1/focus",
    "query password": "postgresql+psycopg://me@127.0.0.1:1/focus?password=SEKRET1&sslmode=prefer",
    "query sslpassword": "postgresql+psycopg://me@127.0.0.1:1/focus?sslpassword=SEKRET1",
    "repeated": "postgresql+psycopg://me@127.0.0.1:1/focus?password=SEKRET1&password=SEKRET2",
    "upper-case key": "postgresql://me@127.0.0.1:1/focus?PASSWORD=SEKRET1",
    "every place": "postgresql+psycopg://me:SEKRET1@127.0.0.1:1/focus?password=SEKRET2&sslpassword=SEKRET3",
}


@pytest.mark.parametrize("url", SECRET_URLS.values(), ids=SECRET_URLS.keys())
def test_every_secret_of_a_url_is_masked_and_detected(url):
    shown = db.mask_url(url)
    assert "SEKRET" not in shown and "***" in shown
    assert shown.startswith(("postgresql+psycopg://me", "postgresql://me")) and "127.0.0.1:1/focus" in shown
    assert db.engine.has_secret(url)
    assert "sslmode=prefer" in db.mask_url(SECRET_URLS["query password"])  # what is not a secret stays


def test_urls_without_a_secret_are_shown_as_they_are():
    for url in ("postgresql+psycopg://me@db/focus?sslmode=require&passfile=/home/me/.pgpass", "sqlite:///focus.db"):
        assert not db.engine.has_secret(url)
        assert db.mask_url(url) == make_url(url).render_as_string(hide_password=False)


@pytest.mark.parametrize("url", SECRET_URLS.values(), ids=SECRET_URLS.keys())
def test_unreachable_server_hides_every_secret(url):
    for call in (db.open_store, db.upgrade, db.current):
        with pytest.raises(db.StoreError, match=r"^Cannot open the database at .*server is running\.$") as info:
            call(url)
        assert "SEKRET" not in str(info.value) and "\n" not in str(info.value)


def test_a_driver_message_that_repeats_a_secret_is_scrubbed():
    url = db.database_url(SECRET_URLS["every place"])
    error = db.engine.connect_error(url, ValueError("invalid value 'SEKRET3' for 'SEKRET2' (SEKRET1)"))
    assert "SEKRET" not in str(error) and "invalid value '***' for '***' (***)" in str(error)


def test_malformed_url_with_a_query_password_is_not_shown():
    with pytest.raises(db.StoreError, match="not shown") as info:
        db.get_engine("postgresql+psycopg://me@host:notaport/db?password=SEKRET1")
    assert "SEKRET" not in str(info.value)


def test_sqlite_in_a_missing_folder_or_not_a_database(tmp_path):
    """SQLite has no server to check: the message points at the file and its folder."""
    not_a_database = tmp_path / "notes.db"
    not_a_database.write_text("these are my notes, not a database\n" * 100)
    for path, reason in ((tmp_path / "missing" / "focus.db", "unable to open"), (not_a_database, "not a database")):
        for call in (db.upgrade, db.open_store, db.current):
            with pytest.raises(db.StoreError, match=f"^Cannot open the database at .*{reason}") as info:
                call(f"sqlite:///{path}")
            assert "server" not in str(info.value)
            assert "SQLite file (or a new one in a folder that exists)" in str(info.value)


def test_sqlite_runs_with_foreign_keys_wal_and_busy_timeout(sqlite_url):
    db.upgrade(sqlite_url)
    engine = db.open_store(sqlite_url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one() >= 1000
    finally:
        engine.dispose()


def test_postgresql_connections_run_without_jit(pg_url):
    """JIT compiling cost 20-60 ms of the store's millisecond queries once a partition's size raised their costs."""
    db.upgrade(pg_url)
    engine = db.open_store(pg_url)
    try:
        for _ in range(2):  # a new connection and one back from the pool, after a transaction
            with engine.begin() as connection:
                assert connection.exec_driver_sql("SHOW jit").scalar_one() == "off"
                assert connection.exec_driver_sql("SELECT COUNT(*) FROM evaluation").scalar_one() == 0
    finally:
        engine.dispose()


def test_empty_database_is_refused_with_the_upgrade_command(empty_url):
    with pytest.raises(db.StoreError, match=r"no focus-audit schema; run `focus db upgrade`"):
        db.open_store(empty_url)


def test_database_behind_head_is_refused(empty_url, tmp_path, monkeypatch):
    at = db.upgrade(empty_url)  # at this code's head
    newer = tmp_path / "migrations"
    shutil.copytree(db.migrate.MIGRATIONS_DIR, newer, ignore=shutil.ignore_patterns("__pycache__"))
    (newer / "versions" / "9999_note.py").write_text(NEWER_REVISION.replace("{head}", at))
    monkeypatch.setattr(db.migrate, "MIGRATIONS_DIR", newer)  # this code now knows 9999
    assert db.head() == "9999"
    with pytest.raises(db.StoreError, match=rf"at revision {at}, behind .* 9999; run `focus db upgrade`") as info:
        db.open_store(empty_url)
    assert "\n" not in str(info.value)
    assert db.current(empty_url) == at  # nothing upgraded silently
    assert db.upgrade(empty_url) == "9999"
    db.open_store(empty_url).dispose()


def test_unknown_revision_is_refused(engine):
    with engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE {db.VERSION_TABLE} SET version_num = 'ffff9999'")
    with pytest.raises(db.StoreError, match="does not know"):
        db.open_store(engine.url)
    with pytest.raises(db.StoreError, match="does not know"):
        db.upgrade(engine.url)


def test_foreign_database_is_refused_and_left_intact(empty_url):
    engine = db.get_engine(empty_url, check=False)
    metadata = MetaData()
    flow_run = Table("flow_run", metadata, Column("id", Integer, primary_key=True))
    version = Table("alembic_version", metadata, Column("version_num", Integer, primary_key=True))
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(flow_run.insert(), [{"id": 1}, {"id": 2}])
        connection.execute(version.insert(), [{"version_num": 7}])
    try:
        for call in (db.upgrade, db.open_store, db.current):
            with pytest.raises(db.StoreError, match=r"tables that focus-audit did not create \(alembic_version, flow_run\)"):
                call(empty_url)
        assert set(inspect(engine).get_table_names()) == {"flow_run", "alembic_version"}
        with engine.connect() as connection:
            assert connection.execute(select(flow_run.c.id).order_by(flow_run.c.id)).scalars().all() == [1, 2]
    finally:
        engine.dispose()


def test_a_dropped_version_table_is_recognised_and_the_stamp_it_advises_works(empty_url, monkeypatch):
    """focus-audit's own tables are not foreign: the message says how to record the revision again."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    db.upgrade(empty_url)
    engine = db.get_engine(empty_url, check=False)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP TABLE {db.VERSION_TABLE}")
        for call in (db.open_store, db.upgrade, db.current):
            with pytest.raises(db.StoreError, match=f"holds focus-audit's tables but not their version table") as info:
                call(empty_url)
            assert "did not create" not in str(info.value) and "\n" not in str(info.value)
        command = re.search(r"`(alembic -c \S+ stamp \w+)`", str(info.value)).group(1).split()
        alembic = str(Path(sys.executable).with_name("alembic"))
        monkeypatch.setenv("FOCUS_DATABASE_URL", empty_url)
        done = subprocess.run([alembic, *command[1:]], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert db.current(empty_url) == db.head()
        db.open_store(empty_url).dispose()
        # tables that differ from this version's schema: no stamp is advised
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP TABLE {db.VERSION_TABLE}")
            connection.exec_driver_sql("ALTER TABLE dataset ADD COLUMN surprise INTEGER")
        with pytest.raises(db.StoreError, match="differ from this version's schema") as info:
            db.open_store(empty_url)
        assert "stamp" not in str(info.value)
        # one foreign table among ours: only it is named as foreign
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE mine (id INTEGER PRIMARY KEY)")
        with pytest.raises(db.StoreError, match=r"did not create \(mine\);"):
            db.open_store(empty_url)
    finally:
        engine.dispose()


def test_utc_timestamps_round_trip(engine):
    metadata = MetaData()
    table = Table("stamp_probe", metadata, Column("id", Integer, primary_key=True), Column("at", UTCDateTime()))
    metadata.create_all(engine)
    plus_two = dt.timezone(dt.timedelta(hours=2))
    moment = dt.datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=plus_two)
    with engine.begin() as connection:
        connection.execute(table.insert(), {"id": 1, "at": moment})
        stored = connection.execute(select(table.c.at)).scalar_one()
    assert stored == moment
    assert stored.utcoffset() == dt.timedelta(0)
    assert stored.hour == 10
    with pytest.raises(Exception, match="timezone-aware"):
        with engine.begin() as connection:
            connection.execute(table.insert(), {"id": 2, "at": dt.datetime(2024, 5, 1)})
