"""The evaluation hot path (``flows.tasks.explain_chunk``): one forward pass, the old results, out-of-memory halving.

The reference is the two-pass path the hot path replaced: compose, normalise, explain, then a second forward pass
under ``no_grad`` for the predicted class, with Focus and the host copy per batch.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from sqlalchemy import text

from flows.worker import caches, devices, store
from flows import tasks
from flows.evaluate import evaluate
from flows.params import (
    DatasetSpec,
    EvaluateParams,
    MethodSpec,
    ModelSpec,
    MosaicSetSpec,
    RunSpec,
)
from focus_core import metric, mosaics
from focus_core.errors import FocusError
from focus_core.explainers import EXPLAINERS, register_explainer
from focus_core.explainers.gradients import Gradient

MOSAICS = MosaicSetSpec(split="test", per_class=2, seed=3)  # 20 mosaics
DATASET = DatasetSpec()


@pytest.fixture(autouse=True)
def fresh_resources():
    """Every test loads its own model (forward hooks, the fitting batch sizes of out-of-memory tests)."""
    caches.clear_caches()
    yield
    caches.clear_caches()


def _request(weights: str, method: str, batch_size: int = 8, **params: Any) -> tasks.ChunkRequest:
    return tasks.ChunkRequest(
        evaluation_id=1, chunk=0, positions=list(range(20)), mosaic_ids=list(range(1, 21)),
        dataset=DATASET, mosaics=MOSAICS, model=ModelSpec(architecture="digits_cnn", weights=weights),
        method=MethodSpec(name=method, params=params), run=RunSpec(device="cpu", batch_size=batch_size),
    )


def _two_pass(request: tasks.ChunkRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hot path as it was: explainer, then a second forward pass, Focus and the host copy per batch."""
    dataset = caches.load_dataset(request.dataset)
    manifest = caches.load_manifest(request.dataset, request.mosaics)
    model = caches.load_model(request.model, request.dataset, "cpu")
    explainer = caches.make_explainer(request.method, request.model)
    chosen = [manifest.mosaics[p] for p in request.positions]
    indices = torch.tensor([m.image_indices for m in chosen])
    targets = torch.tensor([m.target_class for m in chosen])
    masks = mosaics.target_mask(chosen)
    sums, scores, predicted = [], [], []
    for start in range(0, len(chosen), request.batch_size):
        stop = start + request.batch_size
        x = mosaics.compose_normalized(dataset.tiles, indices[start:stop], dataset)
        relevance = explainer(model, x, targets[start:stop])
        with torch.no_grad():
            predicted.append(model(x).argmax(dim=1))
        batch_sums = metric.quadrant_sums(relevance)
        scores.append(metric.focus_from_sums(batch_sums, masks[start:stop]))
        sums.append(batch_sums)
    return torch.cat(sums).double().numpy(), torch.cat(scores).double().numpy(), torch.cat(predicted).numpy()


@pytest.mark.parametrize(
    ("method", "params"),
    [("gradcam", {}), ("gradient", {}), ("lrp_fast", {}), ("lrp", {}), ("smoothgrad", {"n_samples": 3}),
     ("random", {})],
)
def test_results_are_those_of_the_two_pass_path(digits_weights, method, params):
    request = _request(digits_weights, method, **params)
    sums, focus, predicted = tasks.explain_chunk(request)
    ref_sums, ref_focus, ref_predicted = _two_pass(request)
    np.testing.assert_allclose(sums, ref_sums, rtol=1e-5, atol=1e-6 * np.abs(ref_sums).max())
    np.testing.assert_allclose(focus, ref_focus, rtol=1e-5, atol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(predicted, ref_predicted)
    assert sums.shape == (20, 4, 2) and focus.shape == (20,) and predicted.dtype == np.int64


def test_the_hot_path_never_upsamples_gradcam_maps(digits_weights, monkeypatch):
    """Its sums come from the small map; the (B, H, W) relevance is never read, so never computed."""
    from focus_core.explainers import gradcam

    def refuse(cam, size):
        raise AssertionError("the hot path read GradCAM's upsampled map")

    monkeypatch.setattr(gradcam, "_upsample", refuse)
    sums, focus, _ = tasks.explain_chunk(_request(digits_weights, "gradcam"))
    assert np.isfinite(sums).all() and np.isfinite(focus).sum() > 0


def test_a_chunk_takes_any_positions_and_refuses_ones_outside_the_set(digits_weights):
    full = tasks.explain_chunk(_request(digits_weights, "gradient"))
    some = tasks.explain_chunk(_request(digits_weights, "gradient").model_copy(update={"positions": [7, 2, 19]}))
    np.testing.assert_allclose(some.sums, full.sums[[7, 2, 19]], rtol=1e-5, atol=1e-6 * np.abs(full.sums).max())
    np.testing.assert_array_equal(some.predicted, full.predicted[[7, 2, 19]])
    for positions in ([3, 20], [-1]):
        with pytest.raises(FocusError, match="mosaic set has 20 mosaics"):
            tasks.explain_chunk(_request(digits_weights, "gradient").model_copy(update={"positions": positions}))


@pytest.mark.parametrize(("method", "runs_per_mosaic"), [("gradcam", 1), ("gradient", 1), ("random", 1),
                                                         ("smoothgrad", 3 + 1)])
def test_the_model_runs_once_per_batch_where_the_explainer_already_ran_it(digits_weights, method, runs_per_mosaic):
    """20 mosaics in batches of 8 (8, 8, 4). GradCAM and the gradient predict from their own forward pass; SmoothGrad
    (3 noisy copies per mosaic, in passes of at most one batch) never runs the clean mosaics, and the random control
    runs nothing, so the predicted class costs them one more pass per batch."""
    request = _request(digits_weights, method, **({"n_samples": 3} if method == "smoothgrad" else {}))
    model = caches.load_model(request.model, request.dataset, "cpu")
    calls: list[int] = []
    handle = model.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        tasks.explain_chunk(request)
    finally:
        handle.remove()
    assert sum(calls) == 20 * runs_per_mosaic and max(calls) <= 8, calls
    if method != "smoothgrad":
        assert calls == [8, 8, 4]


def test_smoothgrad_passes_hold_one_batch_by_default(digits_weights):
    request = _request(digits_weights, "smoothgrad", batch_size=4, n_samples=5)
    model = caches.load_model(request.model, request.dataset, "cpu")
    calls: list[int] = []
    handle = model.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        tasks.explain_chunk(request)
    finally:
        handle.remove()
    assert max(calls) == 4  # not 4 x 5 noisy copies at once



def _two_chunks(digits_weights: str, device: str = "cpu") -> list[tasks.ChunkRequest]:
    """12 mosaics in batches of 4 and 9 in batches of 3: the batch sizes tell the chunks apart."""
    first = _request(digits_weights, "gradient", batch_size=4).model_copy(
        update={"positions": list(range(12)), "device": device})
    second = _request(digits_weights, "gradient", batch_size=3).model_copy(
        update={"chunk": 1, "positions": list(range(11, 20)), "device": device})
    return [first, second]


def _run_together(requests: list[tasks.ChunkRequest]) -> tuple[list[tasks.ChunkScores], list, set[int]]:
    """The chunks from two threads started at once; the (thread, batch size) of every forward pass; the callers."""
    model = caches.load_model(requests[0].model, requests[0].dataset, requests[0].device)
    calls: list[tuple[int, int]] = []

    def record(module, args, output):
        calls.append((threading.get_ident(), args[0].shape[0]))
        time.sleep(0.005)  # room for the other chunk to cut in between two batches, were it allowed to

    callers, start = set(), threading.Barrier(2)

    def run(request: tasks.ChunkRequest) -> tasks.ChunkScores:
        callers.add(threading.get_ident())
        start.wait()
        return tasks.explain_chunk(request)

    handle = model.register_forward_hook(record)
    try:
        with ThreadPoolExecutor(2) as pool:
            together = list(pool.map(run, requests))
    finally:
        handle.remove()
    return together, calls, callers


def test_chunks_from_two_threads_take_turns_on_the_device(digits_weights):
    """Each chunk runs whole, one after the other, not interleaved batch by batch: one chunk's database write then
    overlaps the next chunk's compute, instead of both chunks ending (and writing) together."""
    requests = _two_chunks(digits_weights)
    alone = [tasks.explain_chunk(request) for request in requests]
    together, calls, callers = _run_together(requests)
    threads, sizes = zip(*calls)
    assert sizes in ((4, 4, 4, 3, 3, 3), (3, 3, 3, 4, 4, 4)), f"the chunks interleaved: batches {sizes}"
    assert set(threads) == callers, "on the CPU each chunk computes in its caller's thread"
    for ours, theirs in zip(together, alone):
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_turns_run_in_one_device_thread_and_the_queued_host_copy_gives_the_cpu_results(digits_weights):
    """On CUDA every turn runs in the process's one thread for the device (cuDNN's plans are per thread); the copy
    to the host is queued before the turn ends and waited for after: what arrives is the chunk's own results."""
    requests = _two_chunks(digits_weights, "cuda")
    together, calls, callers = _run_together(requests)
    threads, sizes = zip(*calls)
    assert len(set(threads)) == 1 and threads[0] not in callers
    assert sizes in ((4, 4, 4, 3, 3, 3), (3, 3, 3, 4, 4, 4)), f"the chunks interleaved: batches {sizes}"
    current = torch.cuda.current_device()
    assert devices.device_worker(torch.device("cuda", current)).submit(torch.cuda.current_device).result() == current
    for scores, request in zip(together, requests):
        on_cpu = tasks.explain_chunk(request.model_copy(update={"run": request.run.model_copy(update={"device": "cpu"})}))
        np.testing.assert_allclose(scores.sums, on_cpu.sums, rtol=1e-4, atol=1e-5 * np.abs(on_cpu.sums).max())
        np.testing.assert_allclose(scores.focus, on_cpu.focus, rtol=1e-4, atol=1e-5, equal_nan=True)


# --- out of memory: halve the batch and continue --------------------------------------------------------------


class OutOfMemoryGradient(Gradient):
    """The gradient, on a pretend device that holds at most ``fits`` mosaics per batch."""

    name = "test_out_of_memory_gradient"
    fits = 3
    batches: ClassVar[list[int]] = []

    def _attribute(self, model, inputs, targets):
        type(self).batches.append(inputs.shape[0])
        if inputs.shape[0] > type(self).fits:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected: {inputs.shape[0]} mosaics > {self.fits})")
        return super()._attribute(model, inputs, targets)


@pytest.fixture
def out_of_memory_method():
    register_explainer(OutOfMemoryGradient)
    OutOfMemoryGradient.fits, OutOfMemoryGradient.batches = 3, []
    yield OutOfMemoryGradient.name
    EXPLAINERS.pop(OutOfMemoryGradient.name, None)


def test_out_of_memory_halves_the_batch_and_gives_the_same_rows(digits_weights, out_of_memory_method):
    request = _request(digits_weights, out_of_memory_method, batch_size=8)
    scores = tasks.explain_chunk(request)
    assert scores.batch_size == 2  # 8 -> 4 -> 2
    assert OutOfMemoryGradient.batches[:3] == [8, 4, 2] and set(OutOfMemoryGradient.batches[3:]) == {2}
    reference = tasks.explain_chunk(_request(digits_weights, "gradient", batch_size=8))
    for ours, theirs in zip(scores, reference):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6, equal_nan=True)

    # the next chunk of the same work in this process starts at the size that fitted
    OutOfMemoryGradient.batches = []
    again = tasks.explain_chunk(request)
    assert again.batch_size == 2 and set(OutOfMemoryGradient.batches) == {2}


def test_out_of_memory_with_one_mosaic_is_a_clear_error(digits_weights, out_of_memory_method):
    OutOfMemoryGradient.fits = 0
    with pytest.raises(FocusError, match="ran out of memory explaining a single mosaic .*: free the device"):
        tasks.explain_chunk(_request(digits_weights, out_of_memory_method, batch_size=4))
    assert OutOfMemoryGradient.batches == [4, 2, 1]


def test_the_evaluation_records_the_halved_batch_and_every_row(
    prefect_api, sqlite_url, digits_weights, out_of_memory_method
):
    params = EvaluateParams(
        model={"architecture": "digits_cnn", "weights": digits_weights},
        mosaics=MOSAICS.model_dump(),
        methods=[{"name": out_of_memory_method}],
        run={"device": "cpu", "batch_size": 8, "chunk_size": 8, "retries": 0, "database_url": sqlite_url},
    )
    outcome = evaluate(params)
    (record,) = outcome["evaluations"]
    assert record["status"] == "finished" and record["chunks_run"] == [0, 1, 2]
    with store.engine_for(sqlite_url).connect() as connection:
        rows = connection.execute(
            text("SELECT COUNT(*), COUNT(DISTINCT mosaic_id), COUNT(predicted_class) FROM mosaic_result "
                 "WHERE evaluation_id = :e"), {"e": record["evaluation_id"]},
        ).one()
        metadata = connection.execute(
            text("SELECT metadata FROM evaluation WHERE id = :e"), {"e": record["evaluation_id"]}
        ).scalar_one()
    assert tuple(rows) == (20, 20, 20)
    if isinstance(metadata, str):
        import json

        metadata = json.loads(metadata)
    assert metadata["batch_size"] == {"requested": 8, "used": 2, "reduced_chunks": {"0": 2, "1": 2, "2": 2}}
    assert metadata["request"]["run"]["batch_size"] == 8  # the request is kept beside it


def test_bf16_runs_the_chunk_under_autocast_with_fp32_sums(digits_weights):
    fp32 = tasks.explain_chunk(_request(digits_weights, "gradcam"))
    request = _request(digits_weights, "gradcam").model_copy(update={"run": RunSpec(batch_size=8, dtype="bf16")})
    bf16 = tasks.explain_chunk(request)
    assert bf16.sums.dtype == np.float64 and np.isfinite(bf16.sums).all()
    both = np.isfinite(fp32.focus) & np.isfinite(bf16.focus)
    assert both.sum() >= 15 and np.abs(fp32.focus - bf16.focus)[both].max() < 0.1


def test_a_bf16_evaluation_is_recorded_apart_from_the_fp32_one(prefect_api, sqlite_url, digits_weights):
    def run(dtype: str) -> dict[str, Any]:
        params = EvaluateParams(
            model={"architecture": "digits_cnn", "weights": digits_weights},
            mosaics=MOSAICS.model_dump(),
            methods=[{"name": "gradcam"}],
            run={"device": "cpu", "batch_size": 8, "chunk_size": 20, "dtype": dtype, "database_url": sqlite_url},
        )
        (record,) = evaluate(params)["evaluations"]
        return record

    fp32, bf16 = run("fp32"), run("bf16")
    assert fp32["evaluation_id"] != bf16["evaluation_id"]
    assert bf16["chunks_run"] == [0], "the bf16 run computes its own rows instead of resuming the fp32 ones"
    assert bf16["params"]["precision"] == "bf16" and "precision" not in fp32["params"]
