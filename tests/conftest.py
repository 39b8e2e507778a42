"""Settings every test shares: a quiet, offline, deterministic CPU."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import torch  # noqa: E402

torch.set_flush_denormal(True)

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from tests import postgres  # noqa: E402


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database of its own, dropped (with its connections) afterwards."""
    url = postgres.create_database()
    try:
        yield url
    finally:
        postgres.drop_database(url)
