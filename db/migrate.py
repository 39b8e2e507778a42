"""Schema migrations: one Alembic history inside the package, driven programmatically.

The version table is called ``focus_alembic_version`` so that it never clashes with another
Alembic user (Prefect's server uses ``alembic_version``). Nothing here prints; errors are
``StoreError`` with one sentence. :func:`get_engine` and :func:`open_store` open the store with the schema
check (an engine at head, or one sentence that says to run ``focus db upgrade``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, Table, inspect
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.schema import DropTable

from db.engine import build_engine, connect_error, mask_url
from db.errors import StoreError
from db.models import Base

__all__ = [
    "VERSION_TABLE",
    "MIGRATIONS_DIR",
    "alembic_config",
    "head",
    "current",
    "upgrade",
    "downgrade",
    "check_schema",
    "schema_diff",
    "get_engine",
    "open_store",
    "create_if_fresh",
]

VERSION_TABLE = "focus_alembic_version"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_OUR_TABLES = frozenset(Base.metadata.tables) | {VERSION_TABLE}


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for the package's history, independent of the working directory.

    ``connection`` is handed to ``env.py`` through ``config.attributes``.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_table", VERSION_TABLE)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The head revision of this focus-audit's migration history.

    Examples
    --------
    >>> head()
    '0016'
    """
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:  # pragma: no cover - guarded by a test
        raise StoreError(f"The migration history has {len(heads)} heads {heads}; merge them with `alembic merge`.")
    return heads[0]


def _revision(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _partitions(connection: Connection) -> frozenset[str]:
    """The partitions of partitioned tables (PostgreSQL's ``mosaic_result_p...``): parts of a table, not tables."""
    if connection.dialect.name != "postgresql":
        return frozenset()
    return frozenset(connection.exec_driver_sql("SELECT relname FROM pg_class WHERE relispartition").scalars())


def _table_names(connection: Connection) -> set[str]:
    """The tables of the database, without partitions and SQLite's own tables."""
    names = set(inspect(connection).get_table_names()) - _partitions(connection)
    return {n for n in names if not n.startswith("sqlite_")}


def _compare_options(connection: Connection) -> dict:
    """Alembic comparison options that leave partitions out (they follow their parent table)."""
    partitions = _partitions(connection)

    def include_name(name, type_, _parent) -> bool:
        return not (type_ == "table" and name in partitions)

    return {"version_table": VERSION_TABLE, "compare_type": True, "include_name": include_name}


def _foreign_tables(connection: Connection) -> list[str]:
    return sorted(n for n in _table_names(connection) if n not in _OUR_TABLES)


def _known(revision: str) -> bool:
    script = ScriptDirectory.from_config(alembic_config())
    try:
        return script.get_revision(revision) is not None
    except Exception:  # alembic raises several types for unknown ids
        return False


def _classify(connection: Connection, url: URL) -> str | None:
    """Return the current revision, refusing foreign databases and unknown revisions."""
    revision = _revision(connection)
    if revision is None:
        tables = _table_names(connection) - {VERSION_TABLE}
        foreign = sorted(tables - _OUR_TABLES)
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise StoreError(
                f"The database at {mask_url(url)} holds tables that focus-audit did not create ({shown}); "
                f"point FOCUS_DATABASE_URL at an empty database or one made by `focus db upgrade`."
            )
        if tables:
            raise _lost_version_table(connection, url)
        return None
    if not _known(revision):
        raise StoreError(
            f"The database at {mask_url(url)} is at revision {revision!r}, which this focus-audit does not know; "
            f"install the focus-audit version that created it or use another database."
        )
    return revision


def _lost_version_table(connection: Connection, url: URL) -> StoreError:
    """focus-audit's own tables without their version table (dropped): say how to record the revision again.

    Stamping is only advised when the tables are exactly this version's schema (Alembic's
    autogenerate comparison finds no difference); otherwise the revision cannot be told.
    """
    from alembic.autogenerate import compare_metadata

    context = MigrationContext.configure(connection, opts=_compare_options(connection))
    where = f"The database at {mask_url(url)} holds focus-audit's tables but not their version table {VERSION_TABLE}"
    if compare_metadata(context, Base.metadata):
        return StoreError(
            f"{where}, and they differ from this version's schema, so their revision cannot be told; restore "
            f"{VERSION_TABLE} from a backup, or start again with `focus db upgrade` on an empty database."
        )
    ini = MIGRATIONS_DIR.parent / "alembic.ini"
    return StoreError(
        f"{where}; they match this version's schema, so record its revision with "
        f"`alembic -c {ini} stamp {head()}` (with FOCUS_DATABASE_URL set to this database), then run the command again."
    )


def _engine(url: str | URL | Engine | None) -> tuple[Engine, bool]:
    if isinstance(url, Engine):
        return url, False
    return build_engine(url), True


def current(url: str | URL | Engine | None = None) -> str | None:
    """The revision of the database at ``url`` (``None`` for an empty database).

    Raises
    ------
    StoreError
        For an unreachable or malformed URL, a foreign database or an unknown revision.
    """
    engine, owned = _engine(url)
    try:
        with engine.connect() as connection:
            return _classify(connection, engine.url)
    except SQLAlchemyError as exc:
        raise connect_error(engine.url, exc) from None
    finally:
        if owned:
            engine.dispose()


@contextlib.contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction for migrating; on SQLite with foreign keys off while it migrates.

    SQLite alters a table by copying it, dropping it and renaming the copy. With foreign keys on, dropping
    ``evaluation`` cascades to every ``mosaic_result`` row (``ON DELETE CASCADE``), so the pragma is switched
    off, outside the transaction as SQLite requires, and on again afterwards; before the commit
    ``PRAGMA foreign_key_check`` must find nothing, or the migration is rolled back.
    """
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                yield connection
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise StoreError(
                            f"The migration would leave {len(broken)} row(s) pointing at missing rows (first in table "
                            f"{broken[0][0]!r}); nothing was changed: report this with the database attached."
                        )
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def upgrade(url: str | URL | Engine | None = None, revision: str = "head") -> str:
    """Migrate the database at ``url`` to ``revision`` (default: head) and return the new revision.

    An empty database gets the whole schema; a foreign database (tables that are not ours) is
    refused and left untouched.

    Examples
    --------
    >>> upgrade("sqlite://")
    '0016'
    """
    engine, owned = _engine(url)
    try:
        with _migrating(engine) as connection:
            _classify(connection, engine.url)
            command.upgrade(alembic_config(connection), revision)
        with engine.connect() as connection:
            return _revision(connection) or ""
    except SQLAlchemyError as exc:
        raise connect_error(engine.url, exc) from None
    finally:
        if owned:
            engine.dispose()


def downgrade(url: str | URL | Engine | None = None, revision: str = "base") -> str | None:
    """Migrate the database at ``url`` down to ``revision`` (default: base, an empty schema)."""
    engine, owned = _engine(url)
    try:
        with _migrating(engine) as connection:
            _classify(connection, engine.url)
            command.downgrade(alembic_config(connection), revision)
            if revision == "base":  # leave nothing behind, not even the empty version table
                connection.execute(DropTable(Table(VERSION_TABLE, MetaData()), if_exists=True))
                return None
        with engine.connect() as connection:
            return _revision(connection)
    except SQLAlchemyError as exc:
        raise connect_error(engine.url, exc) from None
    finally:
        if owned:
            engine.dispose()


def check_schema(engine: Engine) -> str:
    """Verify that the database is at head; return the revision.

    Raises
    ------
    StoreError
        For an empty database, a foreign one, an unknown revision, or one behind head: the
        message says to run ``focus db upgrade``. Nothing is upgraded silently.
    """
    with engine.connect() as connection:
        revision = _classify(connection, engine.url)
    if revision is None:
        raise StoreError(
            f"The database at {mask_url(engine.url)} has no focus-audit schema; run `focus db upgrade` to create it."
        )
    target = head()
    if revision != target:
        raise StoreError(
            f"The database at {mask_url(engine.url)} is at revision {revision}, behind this focus-audit's "
            f"{target}; run `focus db upgrade` to migrate it."
        )
    return revision


def schema_diff(url: str | URL | Engine | None = None) -> list:
    """Differences between the models and the migrated schema (empty when they match).

    The equivalent of ``alembic check``: Alembic's autogenerate comparison of
    ``db.models.Base.metadata`` with the live database.
    """
    from alembic.autogenerate import compare_metadata

    engine, owned = _engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts=_compare_options(connection))
            return compare_metadata(context, Base.metadata)
    finally:
        if owned:
            engine.dispose()


def get_engine(url: str | URL | None = None, *, check: bool = True) -> Engine:
    """Create an engine for the results store (:func:`db.engine.build_engine`) and check its schema.

    Parameters
    ----------
    url
        A SQLAlchemy URL; ``None`` reads ``FOCUS_DATABASE_URL`` and falls back to ``sqlite:///focus.db``.
    check
        Connect and verify that the schema is at this focus-audit's head revision
        (:func:`check_schema`). ``False`` only builds the engine.

    Returns
    -------
    Engine
        SQLite engines run with foreign keys on, WAL and a busy timeout.

    Raises
    ------
    StoreError
        For a malformed or unreachable URL, an empty or foreign database, or one behind head
        (the message says to run ``focus db upgrade``).

    Examples
    --------
    >>> engine = get_engine("sqlite://", check=False)
    >>> engine.dialect.name
    'sqlite'
    """
    engine = build_engine(url)
    if check:
        try:
            check_schema(engine)
        except StoreError:
            engine.dispose()
            raise
        except SQLAlchemyError as exc:  # unreachable server, refused login, ...
            engine.dispose()
            raise connect_error(engine.url, exc) from None
    return engine


def open_store(url: str | URL | None = None) -> Engine:
    """Open the results store for the application: ``get_engine(url, check=True)``.

    Examples
    --------
    >>> open_store("sqlite://")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    db.errors.StoreError: The database at sqlite:// has no focus-audit schema; run `focus db upgrade` to create it.
    """
    return get_engine(url, check=True)


def _fresh_sqlite_file(url: URL) -> bool:
    """A SQLite file URL whose file does not exist yet, or exists with no table at all."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:") or url.query.get("mode"):
        return False
    path = Path(url.database)
    if not path.exists() or path.stat().st_size == 0:
        return True
    engine = build_engine(url)
    try:
        with engine.connect() as connection:
            return not inspect(connection).get_table_names()
    except SQLAlchemyError:
        return False  # not a database file: the schema check says so in one sentence
    finally:
        engine.dispose()


def create_if_fresh(url: str | URL | None = None) -> str | None:
    """Create the schema of the embedded store when it is fresh; return the new revision, else ``None``.

    The embedded default is a SQLite file: when it does not exist yet, is empty, or holds no table,
    it gets this version's whole schema without asking (as MLflow does with its default store). Any
    other database (PostgreSQL, a SQLite file with tables) is left as it is: :func:`check_schema`
    then says whether it needs ``focus db upgrade``.

    Examples
    --------
    >>> create_if_fresh("postgresql+psycopg://focus@db/focus") is None
    True
    """
    from db.engine import database_url

    parsed = database_url(url)
    if not _fresh_sqlite_file(parsed):
        return None
    return upgrade(parsed)
