"""Fixtures of the flow tests: one real Prefect API per session, fresh stores, a trained digits model.

The Prefect API is ``prefect_test_harness`` (a real server on a temporary SQLite database, in a
temporary ``PREFECT_HOME``), started once per session and only for the tests that ask for it
(``prefect_api``), so the server-integration tests in this folder keep their own server.
focus-audit's tables go into their own SQLite file or PostgreSQL database, never Prefect's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import postgres

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

HARNESS_START_TIMEOUT_S = 120


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
    from flows.worker import store

    store.dispose_engines()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A migrated PostgreSQL store in a database of its own, dropped afterwards."""
    import db

    url = postgres.create_database("focus_flows")
    try:
        db.upgrade(url)
        yield url
    finally:
        from flows.worker import store

        store.dispose_engines()
        postgres.drop_database(url)


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
