"""Fixtures for the results store: a fresh SQLite file and a fresh PostgreSQL database per test.

PostgreSQL runs on 127.0.0.1:5432 (override with FOCUS_TEST_POSTGRES_URL, a URL to a server
database such as ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``). Each test gets
its own uniquely named database, dropped afterwards. With CI=true a missing server fails the
run; locally it skips with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import Engine, make_url

import db

SERVER_URL = os.environ.get("FOCUS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BACKENDS = ("sqlite", "postgresql")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The server URL, after checking that PostgreSQL answers (fail in CI, skip locally)."""
    try:
        with psycopg.connect(_conninfo(SERVER_URL), connect_timeout=5):
            pass
    except psycopg.Error as exc:
        reason = f"PostgreSQL is not reachable at {db.mask_url(SERVER_URL)} ({str(exc).strip().splitlines()[0]})"
        if _in_ci():
            pytest.fail(f"{reason}; CI must run the store tests on PostgreSQL.")
        pytest.skip(f"{reason}; start it or set FOCUS_TEST_POSTGRES_URL.")
    return SERVER_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A new, empty PostgreSQL database; dropped (with its connections) after the test."""
    name = f"focus_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_conninfo(pg_server), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_conninfo(pg_server), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


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
