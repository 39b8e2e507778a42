"""Fixtures of the flow tests: one real Prefect API per session, fresh stores, a trained digits model.

The Prefect API is ``prefect_test_harness`` (a real server on a temporary SQLite database, in a
temporary ``PREFECT_HOME``), started once per session and only for the tests that ask for it
(``prefect_api``), so the server-integration tests in this folder keep their own server.
focus-audit's tables go into their own SQLite file or PostgreSQL database, never Prefect's.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

HARNESS_START_TIMEOUT_S = 120
#: A PostgreSQL server database (the store tests' variable); each test gets a database of its own there.
POSTGRES_SERVER_URL = os.environ.get("FOCUS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A real Prefect API for the whole session (``prefect_test_harness``, own PREFECT_HOME)."""
    from prefect.settings import PREFECT_HOME, PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    with temporary_settings({PREFECT_HOME: str(home), PREFECT_SERVER_ANALYTICS_ENABLED: False}):
        with prefect_test_harness(server_startup_timeout=HARNESS_START_TIMEOUT_S):
            yield


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    """A migrated SQLite store in a file of its own."""
    import db

    url = f"sqlite:///{tmp_path / 'focus.db'}"
    db.upgrade(url)
    yield url
    from flows import store

    store.dispose_engines()


def _conninfo(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_postgres_database() -> str:
    """Create a uniquely named PostgreSQL database and return its URL; skip (fail in CI) without a server."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = f"focus_flows_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(_conninfo(POSTGRES_SERVER_URL), autocommit=True, connect_timeout=5)
    except psycopg.Error as error:
        reason = f"PostgreSQL is not reachable ({str(error).strip().splitlines()[0]})"
        if _in_ci():
            pytest.fail(f"{reason}; CI runs the flow tests on PostgreSQL.")
        pytest.skip(f"{reason}; start it or set FOCUS_TEST_POSTGRES_URL.")
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(POSTGRES_SERVER_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    """Drop a database made by :func:`create_postgres_database` (closing its connections)."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    with psycopg.connect(_conninfo(POSTGRES_SERVER_URL), autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A migrated PostgreSQL store in a database of its own, dropped afterwards."""
    import db

    url = create_postgres_database()
    try:
        db.upgrade(url)
        yield url
    finally:
        from flows import store

        store.dispose_engines()
        drop_postgres_database(url)


@pytest.fixture(scope="session")
def digits_weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A digits CNN trained for one epoch (a few seconds on the CPU), as a weights file."""
    import torch

    from focus_core import data, models, train

    torch.manual_seed(0)
    dataset = data.load_digits(seed=0, tile_size=32)
    model = models.build_model("digits_cnn", num_classes=10, in_channels=1)
    train.train_model(model, dataset, train.TrainConfig(epochs=1, batch_size=64, lr=3e-3, rotation=15.0, crop_padding=2, hflip=False, seed=0))
    path = tmp_path_factory.mktemp("weights") / "digits.pt"
    models.save_weights(model, path)
    return str(path)
