"""Fixtures the science tests share: one thread, the digits per tile size, and digit CNNs trained once per session."""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from collections.abc import Callable

import pytest
import torch

from focus_core.data import TileDataset, load_digits
from focus_core.models import build_model
from focus_core.train import EpochMetrics, TrainConfig, train_model
from tests.cache import once_per_session
from tests.focus_core.shortcut_model import fine_tune_shortcut


@pytest.fixture(scope="module")
def one_thread():
    """The digit models are too small to gain from intra-op threads; on a shared CPU they cost 5-10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits_at() -> Callable[[int], TileDataset]:
    """``digits_at(tile_size)``: the bundled digits (split seed 0) at that tile size, loaded once per session and size.

    Every test that asks for one size gets the same dataset: read its tensors, never change them in place.
    """
    return functools.cache(lambda tile_size: load_digits(seed=0, tile_size=tile_size))


@pytest.fixture(scope="session")
def digits32(digits_at: Callable[[int], TileDataset]) -> TileDataset:
    return digits_at(32)


@pytest.fixture(scope="session")
def trained_digits_cnn(
    digits32, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[int], tuple[torch.nn.Module, list[EpochMetrics], float]]:
    """``train(seed)``: a ``DigitsCNN`` trained with ``TrainConfig.digits(seed=seed)`` on one thread, once per seed.

    Once per seed for the whole run: pytest-xdist's workers share the trained weights (:mod:`tests.cache`).
    Returns the model (in eval mode; callers must not train it further or change its weights), its per-epoch
    history and the seconds its training took.
    """
    trained: dict[int, tuple[torch.nn.Module, list[EpochMetrics], float]] = {}

    def fit(seed: int) -> dict:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            torch.manual_seed(seed)
            model = build_model("digits_cnn", num_classes=len(digits32.classes), in_channels=1)
            started = time.perf_counter()
            history = train_model(model, digits32, TrainConfig.digits(seed=seed))
            return {"state": model.state_dict(), "history": [dataclasses.asdict(m) for m in history],
                    "seconds": time.perf_counter() - started}
        finally:
            torch.set_num_threads(threads)

    def train(seed: int) -> tuple[torch.nn.Module, list[EpochMetrics], float]:
        if seed not in trained:
            fitted = once_per_session(tmp_path_factory, f"digits_cnn-seed{seed}", lambda: fit(seed))
            model = build_model("digits_cnn", num_classes=len(digits32.classes), in_channels=1)
            model.load_state_dict(fitted["state"])
            trained[seed] = (model.eval(), [EpochMetrics(**m) for m in fitted["history"]], fitted["seconds"])
        return trained[seed]

    return train


@pytest.fixture(scope="session")
def shortcut_digits_cnn(trained_digits_cnn, digits32, tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(base, shortcut)``: the seed-0 trained ``DigitsCNN`` and its corner-square shortcut fine-tune
    (:mod:`tests.focus_core.shortcut_model`), trained once per run (shared by xdist workers) on one thread; both in eval mode, read only."""
    base = trained_digits_cnn(0)[0]

    def fit() -> dict:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fine_tune_shortcut(base, digits32).state_dict()
        finally:
            torch.set_num_threads(threads)

    shortcut = copy.deepcopy(base)
    shortcut.load_state_dict(once_per_session(tmp_path_factory, "digits_cnn-shortcut", fit))
    return base, shortcut.eval()
