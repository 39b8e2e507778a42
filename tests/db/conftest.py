"""Fixtures for the results store: a fresh SQLite file and a fresh PostgreSQL database per test.

Each PostgreSQL test gets its own database on 127.0.0.1:5432 (``tests/postgres.py``), dropped
afterwards. With CI=true a missing server fails the run; locally it skips with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from sqlalchemy.engine import Engine

import db

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def pg_url(postgres_database: str) -> str:
    """A new, empty PostgreSQL database (see tests/postgres.py); dropped after the test."""
    return postgres_database


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'focus.db'}"


@pytest.fixture(params=BACKENDS)
def empty_url(request) -> str:
    """An empty database on each backend."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(empty_url: str) -> Iterator[Engine]:
    """A migrated store on each backend."""
    db.upgrade(empty_url)
    engine = db.open_store(empty_url)
    try:
        yield engine
    finally:
        engine.dispose()


@dataclass
class World:
    """A small registered world: 2 classes x 6 images, one checkpoint, two methods, 4 test mosaics."""

    dataset_id: int
    image_ids: list[int]
    checkpoint_id: int
    method_ids: dict[str, int]
    mosaic_set_id: int
    mosaic_ids: list[int]
    image_index: np.ndarray  # (M, 4) dataset indices
    targets: np.ndarray  # (M,)
    masks: np.ndarray  # (M, 4) bool


RELPATHS = [f"c{c}/{i:03d}.png" for c in range(2) for i in range(6)]
LABELS = [c for c in range(2) for _ in range(6)]
SPLITS = ["train", "train", "test", "test", "test", "test"] * 2
# dataset indices: class 0 test images are 2..5, class 1 test images are 8..11
MOSAIC_INDEX = np.array([[2, 8, 3, 9], [8, 2, 9, 3], [4, 5, 10, 11], [10, 4, 11, 5]])
MOSAIC_TARGETS = np.array([0, 0, 0, 1])
MOSAIC_MASKS = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0], [1, 0, 1, 0]], dtype=bool)


def make_world(engine: Engine) -> World:
    ds = db.register_dataset(engine, "toy", "f" * 64, ["zero", "one"], RELPATHS, LABELS, SPLITS, tile_size=8)
    ids = np.asarray(ds.image_ids)
    ms = db.register_mosaic_set(
        engine, "m" * 64, ds.dataset_id, "test", 0, 2, "random", ids[MOSAIC_INDEX], MOSAIC_TARGETS, MOSAIC_MASKS
    )
    checkpoint = db.register_checkpoint(engine, "c" * 64, "digits_cnn", 2, path="w.pt", label="prod")
    methods = {
        "gradcam": db.register_method(engine, "gradcam", {"layer": None}),
        "lrp": db.register_method(engine, "lrp", {"epsilon": 1e-6, "canonizer": "auto"}),
    }
    return World(ds.dataset_id, ds.image_ids, checkpoint, methods, ms.mosaic_set_id, ms.mosaic_ids,
                 MOSAIC_INDEX, MOSAIC_TARGETS, MOSAIC_MASKS)


@pytest.fixture
def world(engine: Engine) -> World:
    return make_world(engine)


def sums_for(focus: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Quadrant sums (M, 4, 2) whose positive part gives exactly ``focus`` (NaN: no positive relevance)."""
    m = len(focus)
    sums = np.zeros((m, 4, 2))
    for i, f in enumerate(focus):
        sums[i, :, 1] = -0.25
        if np.isnan(f):
            continue
        target = np.flatnonzero(masks[i])
        other = np.flatnonzero(~masks[i])
        sums[i, target, 0] = f / 2
        sums[i, other, 0] = (1 - f) / 2
    return sums


@pytest.fixture
def build_sums():
    """``sums_for`` as a fixture, so test modules need not import this conftest."""
    return sums_for


@pytest.fixture
def build_world():
    """``make_world`` as a fixture (for tests that open their own engines)."""
    return make_world


@pytest.fixture
def write_paths(monkeypatch) -> list[str]:
    """The path each chunk write takes, in order: ``"insert"`` (plain first write) or ``"upsert"``."""
    from db import results

    calls: list[str] = []
    for name in ("insert", "upsert"):
        original = getattr(results, f"_{name}")

        def recorded(*args, _original=original, _name=name):
            calls.append(_name)
            return _original(*args)

        monkeypatch.setattr(results, f"_{name}", recorded)
    return calls
