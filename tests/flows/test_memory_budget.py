"""The hot path's batch follows the memory budget: measured once, never larger than the budget allows.

Structural checks only (no timing, no RSS): the batch the budget allows shrinks with the budget, a chunk run under
a budget of three mosaics runs three at a time, never holds more composed mosaics than that at once, runs its large
batches on a steady heap, and gives the rows of an unbounded run, and a budget that is not a size is one
sentence. The peak RSS against the number of mosaics: ``benchmarks/peak_memory.py``.
"""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

from flows import tasks
from flows.params import DatasetSpec, MethodSpec, ModelSpec, MosaicSetSpec
from flows.worker import caches, memory
from focus_core import architectures, mosaics
from focus_core.errors import FocusError


@pytest.fixture(autouse=True)
def fresh_resources():
    caches.clear_caches()
    yield
    caches.clear_caches()


def _request(weights: str, batch_size: int = 8) -> tasks.ChunkRequest:
    return tasks.ChunkRequest(
        evaluation_id=1, chunk=0, positions=list(range(20)), mosaic_ids=list(range(1, 21)),
        dataset=DatasetSpec(), mosaics=MosaicSetSpec(split="test", per_class=2, seed=3),
        model=ModelSpec(architecture="digits_cnn", weights=weights), method=MethodSpec(name="gradient"),
        device="cpu", batch_size=batch_size,
    )


def _cost_of_one_mosaic(request: tasks.ChunkRequest) -> int:
    """What the hot path measures: the activations of one of the request's mosaics, times the cost factor."""
    dataset = caches.load_dataset(request.dataset)
    table = caches.manifest_tensors(request.dataset, request.mosaics, request.model)
    model = caches.load_model(request.model, request.dataset, "cpu")
    one = mosaics.compose_normalized(dataset.tiles, table.indices[request.positions[:1]], dataset)
    return int(np.ceil(memory.activation_bytes(model, one) * memory.COST_FACTOR))


def test_the_allowed_batch_shrinks_with_the_budget_and_grows_with_the_mosaics_cost():
    model = architectures.DigitsCNN(num_classes=6, in_channels=3).eval()
    small, large = (memory.activation_bytes(model, torch.zeros(1, 3, size, size)) for size in (224, 448))
    assert 3.5 < large / small < 4.5  # four times the pixels
    budgets = [2**34, 2**31, 2**29, 2**26]
    batches = [memory.batch_for_budget(int(small * memory.COST_FACTOR), budget, 64) for budget in budgets]
    assert batches[0] == 64 and batches == sorted(batches, reverse=True) and len(set(batches)) == len(batches)
    assert memory.batch_for_budget(int(large * memory.COST_FACTOR), 2**31, 64) < batches[1]
    assert memory.batch_for_budget(2**40, 2**31, 64) == 1  # one mosaic always runs


def test_a_chunk_runs_the_batch_that_fits_the_budget_and_gives_the_same_rows(digits_weights, monkeypatch):
    request = _request(digits_weights)
    monkeypatch.setenv(memory.BUDGET_ENV, "1G")
    unbounded = tasks.explain_chunk(request)
    assert unbounded.batch_size == 8

    cost = _cost_of_one_mosaic(request)
    budget = max(3 * cost, 2**20)
    allowed = budget // cost
    assert 1 <= allowed < 8
    monkeypatch.setenv(memory.BUDGET_ENV, str(budget))
    caches.clear_caches()
    bounded = tasks.explain_chunk(request)
    assert bounded.batch_size == allowed and bounded.batch_size * cost <= budget
    for ours, theirs in zip(bounded, unbounded):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_the_default_budget_is_at_most_two_gib_and_about_a_quarter_of_the_free_memory(monkeypatch):
    monkeypatch.delenv(memory.BUDGET_ENV, raising=False)
    available = memory.available_memory()
    budget = memory.memory_budget("cpu")
    assert 0 < budget <= memory.DEFAULT_BUDGET_BYTES
    assert available is None or budget == memory.DEFAULT_BUDGET_BYTES or budget < available / 3  # it moves a bit
    assert memory.memory_budget("cuda") is None  # the device raises there: the batch is halved then


def test_a_chunk_holds_one_batch_of_mosaics_at_a_time_and_hands_each_large_batch_back(digits_weights, monkeypatch):
    """However many mosaics a chunk has, the composed mosaics alive at any moment are one batch's: none is kept
    from an earlier batch (by the explainer, a list of results or a traceback), and each batch that may hold
    :data:`flows.worker.memory.TRIM_MIN_BYTES` or more runs on a heap made steady before the first batch and ends with
    its freed memory given back."""
    request = _request(digits_weights)
    cost = _cost_of_one_mosaic(request)
    budget = max(3 * cost, 2**20)
    allowed = budget // cost
    monkeypatch.setenv(memory.BUDGET_ENV, str(budget))
    monkeypatch.setattr(memory, "TRIM_MIN_BYTES", allowed * cost)  # each full batch of this chunk counts as large
    caches.clear_caches()

    alive: dict[int, int] = {}  # id of a composed batch -> its mosaics, while it is alive
    most: list[int] = []
    real_explain, real_steady, real_release = tasks._explain, memory.steady_heap, memory.release_freed
    released: list[bool] = []
    steadied: list[int] = []  # number of batches run when the heap was made steady

    def watched(explainer, model, x, targets):
        alive[id(x)] = x.shape[0]
        weakref.finalize(x, alive.pop, id(x), None)
        most.append(sum(alive.values()))
        return real_explain(explainer, model, x, targets)

    monkeypatch.setattr(tasks, "_explain", watched)
    monkeypatch.setattr(memory, "release_freed", lambda device, held: released.append(real_release(device, held)))
    monkeypatch.setattr(memory, "steady_heap",
                        lambda device, held: steadied.append(len(most)) or real_steady(device, held))
    scores = tasks.explain_chunk(request)
    batches = -(-len(request.positions) // allowed)
    assert scores.batch_size == allowed and len(scores.focus) == len(request.positions)
    assert len(most) == batches and max(most) <= allowed  # never two batches of mosaics at once
    assert steadied == [0] and len(released) == batches  # steady before the first batch, trimmed after each
    if memory._libc() is not None:  # glibc
        assert released == [True] * batches and real_steady("cpu", memory.TRIM_MIN_BYTES)
    assert real_release("cpu", memory.TRIM_MIN_BYTES - 1) is False
    assert real_release("meta", 2**40) is False and real_steady("meta", 2**40) is False  # only the CPU's heap


@pytest.mark.parametrize("text", ["lots", "2X", "100", "-1G", ""])
def test_a_budget_that_is_not_a_size_is_one_sentence(text, monkeypatch):
    with pytest.raises(FocusError, match=r"^FOCUS_MEMORY_BUDGET=.* set it to bytes or a size such as 2G") as error:
        memory.parse_bytes(text)
    assert "\n" not in str(error.value)
