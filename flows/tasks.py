"""The units of retry: explaining and recording one chunk of mosaics.

A task takes ids and specs (never tensors), loads what it needs through :mod:`flows.worker.caches`
(once per process), and writes its rows in one transaction, so running it twice leaves the same
rows. Tasks make no artifact or event calls: those stay in the flows.

Examples
--------
>>> plan_chunks(5, chunk_size=2, finished=[0, 1, 3])
[(1, [2]), (2, [4])]
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Self

import numpy as np
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ConfigDict, Field, model_validator

import db
from flows.worker import caches, devices, faults, leases, memory, store
from flows.specs import (
    DatasetSpec,
    EvaluationSpecs,
    MethodSpec,
    ModelSpec,
    MosaicSetSpec,
    RandomizationSpec,
    RunSpec,
    nest_run_fields,
    spec_key,
)
from focus_core import metric, mosaics, probes
from focus_core.errors import FocusError
from focus_core.explainers.base import Explanation

__all__ = [
    "ChunkRequest",
    "compose_batch",
    "ChunkResult",
    "ChunkScores",
    "plan_chunks",
    "explain_chunk",
    "evaluate_chunk",
    "retry_delays",
    "outage_delays",
    "OUTAGE_ENV_VARS",
    "can_succeed_on_retry",
]


class ChunkRequest(BaseModel):
    """Everything a chunk task needs, as ids and specs: its mosaics, and its evaluation's specs and run settings.

    Build one with :meth:`of` from an evaluation's :class:`~flows.specs.EvaluationSpecs` (an ``EvaluateParams``
    is one). The run settings a chunk reads (device, batch size, precision, store, lease length) are those of
    ``run``, also readable as attributes of the request (``request.device`` is ``request.run.device``). The flat
    form (``device=...``, ``batch_size=...`` beside the specs) is read into ``run``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    evaluation_id: int
    chunk: int = Field(description="Index of the chunk in the mosaic set (positions chunk*size .. (chunk+1)*size-1).")
    positions: list[int] = Field(description="Manifest positions of the mosaics still to do in this chunk.")
    mosaic_ids: list[int] = Field(description="Database ids of those mosaics, aligned with positions.")
    dataset: DatasetSpec
    mosaics: MosaicSetSpec
    model: ModelSpec
    randomization: RandomizationSpec = RandomizationSpec()
    method: MethodSpec
    run: RunSpec = Field(default_factory=RunSpec, description="Device, batch size, precision, store, lease length.")
    lease_owner: str | None = Field(
        None, description="The run that claims the chunk in the store before computing it; empty: no claim."
    )
    disconnected: bool = Field(
        False, description="Explain the model in the disconnected setting (focus_core.disconnected): each tile "
        "through the feature extractor on its own."
    )

    @model_validator(mode="before")
    @classmethod
    def _flat_run(cls, value: Any) -> Any:
        return nest_run_fields(value, RunSpec)

    @classmethod
    def of(cls, specs: EvaluationSpecs | Any, method: MethodSpec, evaluation_id: int, mosaic_ids: list[int], *,
           chunk: int = 0, positions: list[int] | None = None, lease_owner: str | None = None) -> ChunkRequest:
        """The request of one chunk of the evaluation of ``method`` under ``specs``.

        ``specs`` is an :class:`~flows.specs.EvaluationSpecs` or anything with its fields (an ``EvaluateParams``,
        whose ``disconnected`` the chunk follows); ``positions`` (the manifest positions of ``mosaic_ids``) default
        to ``0 .. len(mosaic_ids) - 1``.
        """
        return cls(
            evaluation_id=evaluation_id, chunk=chunk, mosaic_ids=list(mosaic_ids),
            positions=list(range(len(mosaic_ids))) if positions is None else list(positions),
            dataset=specs.dataset, mosaics=specs.mosaics, model=specs.model, randomization=specs.randomization,
            method=method, run=specs.run, lease_owner=lease_owner,
            disconnected=bool(getattr(specs, "disconnected", False)),
        )

    @property
    def device(self) -> str:
        return self.run.device

    @property
    def batch_size(self) -> int:
        return self.run.batch_size

    @property
    def dtype(self) -> str:
        return self.run.dtype

    @property
    def database_url(self) -> str | None:
        return self.run.database_url

    @property
    def lease_seconds(self) -> float:
        return self.run.lease_seconds


class ChunkResult(BaseModel):
    """What a chunk task reports back (small: no per-mosaic data)."""

    evaluation_id: int
    chunk: int
    rows: int
    seconds: float
    batch_size: int | None = Field(
        None, description="The batch size the chunk finished with: below the request's to fit the memory budget "
        "or the device's memory."
    )
    computed: bool = Field(True, description="False when another run had written every mosaic of it already.")
    held_elsewhere: bool = Field(False, description="Another live run holds the chunk: nothing was computed here.")


class _Scores(NamedTuple):
    sums: np.ndarray
    focus: np.ndarray
    predicted: np.ndarray


class ChunkScores(_Scores):
    """What :func:`explain_chunk` returns: ``(sums (M, T, 2), focus (M,), predicted (M,))``, unpacked as a triple.

    ``T`` is the mosaic set's number of tiles, ``grid²`` (4 for the paper's 2x2 mosaics), row-major.

    ``batch_size`` (an attribute, not a fourth item) is the batch size the chunk finished with.
    """

    batch_size: int

    def __new__(cls, sums: np.ndarray, focus: np.ndarray, predicted: np.ndarray, batch_size: int) -> Self:
        scores = super().__new__(cls, sums, focus, predicted)
        scores.batch_size = batch_size
        return scores


def plan_chunks(num_mosaics: int, chunk_size: int, finished: Iterable[int]) -> list[tuple[int, list[int]]]:
    """Split manifest positions ``0..num_mosaics-1`` into fixed chunks; keep the unfinished positions.

    Chunk ``k`` always covers positions ``k*chunk_size .. (k+1)*chunk_size - 1``, so a chunk has
    the same identity in every run of the same request; fully finished chunks are left out.
    """
    if chunk_size < 1:
        raise ValueError(f"Expected chunk_size to be a positive integer but got {chunk_size}")
    done = set(finished)
    plan = []
    for start in range(0, num_mosaics, chunk_size):
        todo = [p for p in range(start, min(start + chunk_size, num_mosaics)) if p not in done]
        if todo:
            plan.append((start // chunk_size, todo))
    return plan


def explain_chunk(request: ChunkRequest) -> ChunkScores:
    """Compose, explain and score the chunk's mosaics in batches on the request's device.

    Per batch: the mosaics are composed on the device from CPU indices (checked on the CPU), normalised,
    explained (the explainer's own forward pass on the clean mosaics gives the predicted class where it has
    one; otherwise one extra forward pass under ``no_grad``), and reduced to per-tile sums (2x2: quadrant sums,
    GradCAM's from its small map; other grids: :func:`focus_core.metric.tile_sums` of the map), all without
    reading back to the host; Focus and the copy to the host happen once per chunk. ``request.dtype == "bf16"``
    runs the model and the explainer under ``torch.autocast(bfloat16)``; sums and Focus stay fp32.

    The device work is one turn on the device (:func:`flows.worker.devices.device_turn`; on CUDA in the process's
    one thread for the device): the chunks of the flow's threads take turns instead of interleaving batch by
    batch, so one chunk's database write runs while the next chunk computes. On CUDA the host copy is queued
    before the turn ends and waited for after it, so the device never drains between chunks.

    A batch holds at most what fits the memory budget (:mod:`flows.worker.memory`: on the CPU, the smaller of
    2 GiB and a quarter of the available memory unless ``FOCUS_MEMORY_BUDGET`` says otherwise), so the chunk's
    memory does not grow with its number of mosaics. When the device runs out of memory all the same, the cache
    is emptied and the batch is halved (down to 1) and the same mosaics are tried again; the chunk continues at
    the smaller size, and later chunks of the same work in this process start there.

    Returns
    -------
    ChunkScores
        ``(tile sums (M, grid², 2), focus (M,) with NaN where undefined, predicted class (M,))`` as numpy
        arrays, with ``batch_size``: the batch size the chunk finished with.

    Raises
    ------
    FocusError
        When even one mosaic does not fit in the device's memory.
    """
    device = devices.require_device(request.device)
    dataset = caches.load_dataset(request.dataset)
    tiles = caches.device_tiles(request.dataset, device)
    table = caches.manifest_tensors(request.dataset, request.mosaics, request.model)
    model = caches.load_model(request.model, request.dataset, device, request.randomization,
                              disconnected=request.disconnected, grid=request.mosaics.grid)

    positions = _positions(request, len(table.targets))
    indices = table.indices.index_select(0, positions)  # stays on the CPU
    targets = table.targets.index_select(0, positions)  # checked on the CPU per batch
    stamps = None if table.stamps is None else table.stamps.index_select(0, positions)  # a probe set's corners
    work = _work_key(request)
    if not len(positions):
        size = caches.fitting_batch_size(work, request.batch_size)
        tiles = request.mosaics.grid ** 2
        return ChunkScores(np.zeros((0, tiles, 2)), np.zeros(0), np.zeros(0, dtype=np.int64), size)
    masks = table.masks.index_select(0, positions)

    def turn() -> tuple[Callable[[], list[np.ndarray]], int]:  # holds the model too (explainers hook into it)
        sums, predicted, size = _explain_batches(request, model, dataset, tiles, indices, targets, work, stamps)
        focus = metric.focus_from_sums(sums, masks.to(device, non_blocking=True))
        return _copy_to_host(sums, focus, predicted), size

    copied, size = devices.device_turn(device, turn)
    sums, focus, predicted = copied()
    return ChunkScores(sums.astype(np.float64), focus.astype(np.float64), predicted, size)


def _explain_batches(
    request: ChunkRequest,
    model: torch.nn.Module,
    dataset: Any,
    tiles: torch.Tensor,
    indices: torch.Tensor,
    targets: torch.Tensor,
    work: str,
    stamps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Tile sums ``(M, grid², 2)`` and predicted classes ``(M,)`` on the device, and the batch size that fitted.

    The first batch is the request's batch size, at most what fits the memory budget
    (:func:`_budget_batch_size`) and what this process fitted before; a batch that runs out of memory is halved.
    Large CPU batches run on a steady heap: their blocks mapped on their own, their freed memory given back after
    each (:func:`flows.worker.memory.steady_heap`, :func:`flows.worker.memory.release_freed`).
    """
    budget_size, per_mosaic = _budget_batch_size(request, model, dataset, tiles, indices, work)
    size = min(caches.fitting_batch_size(work, request.batch_size), budget_size)
    memory.steady_heap(tiles.device, size * per_mosaic)
    grid = request.mosaics.grid
    explainer = caches.make_explainer(request.method, request.model, size, request.batch_size, grid,
                                      request.disconnected)
    sums, predicted = [], []
    start = 0
    while start < len(indices):
        stop = start + size
        try:
            batch_sums, batch_predicted = _explain_batch(
                explainer, model, dataset, tiles, indices[start:stop], targets[start:stop], request.dtype, grid,
                None if stamps is None else (request.mosaics.probe["size"], stamps[start:stop]),
            )
        except (torch.OutOfMemoryError, RuntimeError) as error:  # torch.cuda.OutOfMemoryError is the same class
            if not _out_of_memory(error):
                raise
            if size == 1:
                raise FocusError(
                    f"The device {request.device} ran out of memory explaining a single mosaic with "
                    f"{request.method.name} ({(str(error) or 'out of memory').splitlines()[0]}): "
                    "free the device, use smaller mosaics or a device with more memory."
                ) from error
            out_of_memory = True  # handled below, once the traceback (and the batch's tensors) is released
        else:
            out_of_memory = False
        if out_of_memory:
            if tiles.device.type == "cuda":
                torch.cuda.empty_cache()
            size //= 2
            caches.remember_fitting_batch_size(work, size)
            explainer = caches.make_explainer(request.method, request.model, size, request.batch_size, grid,
                                              request.disconnected)
            continue
        sums.append(batch_sums)
        predicted.append(batch_predicted)
        start = stop
        memory.release_freed(tiles.device, size * per_mosaic)
    return torch.cat(sums), torch.cat(predicted), size


def _budget_batch_size(
    request: ChunkRequest, model: torch.nn.Module, dataset: Any, tiles: torch.Tensor, indices: torch.Tensor, work: str
) -> tuple[int, int]:
    """The largest batch of ``work`` that fits :func:`flows.worker.memory.memory_budget`, at most the request's,
    and the bytes one mosaic costs (0: not measured).

    The cost of a mosaic is measured once per work in this process, on the chunk's first mosaic
    (:func:`flows.worker.memory.activation_bytes`); without a budget (CUDA) the batch is the request's.
    """
    budget = memory.memory_budget(tiles.device)
    if budget is None or not len(indices):
        return request.batch_size, 0

    def measure() -> int:
        one = mosaics.compose_normalized(tiles, indices[:1], dataset)
        return memory.activation_bytes(model, one, lambda: _precision(request.dtype, one.device))

    cost = memory.mosaic_cost(work, measure)
    return memory.batch_for_budget(cost, budget, request.batch_size), cost


def _out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says the device ran out of memory (the CPU allocator raises a plain ``RuntimeError``)."""
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


def _copy_to_host(*tensors: torch.Tensor) -> Callable[[], list[np.ndarray]]:
    """Start copying ``tensors`` to the host; the returned function waits for the copies and gives numpy arrays.

    On CUDA the copies go to pinned memory behind the work already queued on the device's stream, and the
    wait is for them alone (an event), not for whatever other threads queue meanwhile; elsewhere they are
    plain synchronous copies.
    """
    if not tensors[0].is_cuda:
        host = [t.cpu().numpy() for t in tensors]
        return lambda: host
    pending = [t.to("cpu", non_blocking=True) for t in tensors]
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream(tensors[0].device))

    def wait() -> list[np.ndarray]:
        done.synchronize()
        return [t.numpy() for t in pending]

    return wait


def _positions(request: ChunkRequest, size: int) -> torch.Tensor:
    """The request's manifest positions as an int64 tensor, checked against the mosaic set's size."""
    positions = torch.as_tensor(request.positions, dtype=torch.int64)
    if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= size):
        raise FocusError(
            f"Chunk {request.chunk} asks for manifest positions {int(positions.min())}..{int(positions.max())} "
            f"but the mosaic set has {size} mosaics: plan chunks from the same mosaic set."
        )
    return positions


def compose_batch(tiles: torch.Tensor, indices: torch.Tensor, dataset: Any,
                  stamps: tuple[int, torch.Tensor] | None = None) -> torch.Tensor:
    """The normalised mosaics of one batch, as every chunk of an evaluation or a reliance pass sees them.

    ``stamps``: a probe set's patch size and the batch's corner codes, stamped bright before normalising
    (:func:`focus_core.probes.stamp`); ``None`` for a clean set.
    """
    x = mosaics.compose_normalized(tiles, indices, dataset)
    if stamps is None:
        return x
    return probes.stamp(x, stamps[1], stamps[0], probes.bright_fill(dataset.normalize, x.shape[1], x.dtype, x.device))


def _explain_batch(
    explainer: Any,
    model: torch.nn.Module,
    dataset: Any,
    tiles: torch.Tensor,
    indices: torch.Tensor,
    targets: torch.Tensor,
    dtype: str,
    grid: int = 2,
    stamps: tuple[int, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tile sums ``(B, grid², 2)`` (fp32) and predicted classes ``(B,)`` of one batch, left on the device.

    ``stamps``: a probe set's patch size and corner codes for the batch (:func:`focus_core.probes.stamp`).
    """
    x = compose_batch(tiles, indices, dataset, stamps)
    with _precision(dtype, x.device):
        explanation = _explain(explainer, model, x, targets)
        logits = explanation.logits
        if logits is None:  # the method never ran the model on the clean mosaics
            with torch.no_grad():
                logits = model(x)
        predicted = logits.argmax(dim=1)
    if grid != 2:
        return metric.tile_sums(explanation.relevance.float(), grid).float(), predicted
    sums = explanation.quadrant_sums  # GradCAM's come from its small map: no pass over the upsampled one
    if sums is None:
        sums = metric.quadrant_sums(explanation.relevance.float())
    return sums.float(), predicted


def _explain(explainer: Any, model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor) -> Explanation:
    """``explainer.explain`` where it has one; a plain ``Explainer`` gives only the relevance."""
    explain = getattr(explainer, "explain", None)
    if explain is not None:
        return explain(model, x, targets)
    return Explanation(explainer(model, x, targets.to(x.device)), None)


def _precision(dtype: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bfloat16 for ``bf16``, nothing for ``fp32``."""
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _work_key(request: ChunkRequest) -> str:
    """What decides a batch's memory: device, precision, model (disconnected or not), dataset (tile size), method,
    randomization, grid."""
    key = "|".join([request.device, request.dtype, spec_key(request.model), spec_key(request.dataset),
                    spec_key(request.method), spec_key(request.randomization)])
    key = f"{key}|disconnected" if request.disconnected else key
    return key if request.mosaics.grid == 2 else f"{key}|grid {request.mosaics.grid}"  # larger mosaics


def can_succeed_on_retry(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: retry transient failures, never errors that would fail again.

    A ``ValueError`` (``FocusError``, ``StoreError``, a pydantic validation error: a bad
    parameter, a missing file, a wrong schema) or a ``TypeError``, ``LookupError`` or ``AttributeError`` (a bug) fails
    the same way on every try, and so do a full, read-only or forbidden filesystem
    (:func:`flows.worker.faults.is_storage_fault`: ENOSPC, EDQUOT, EROFS, EACCES, ...) and a store that is gone
    (:func:`db.connection_faults.is_gone`); a lost database connection, a CUDA error or an out-of-memory error
    may not.
    """
    try:
        state.result()
    except (ValueError, TypeError, LookupError, AttributeError, NotImplementedError):
        return False
    except Exception as error:  # noqa: BLE001 - anything else is worth another try
        return not (faults.is_storage_fault(error) or db.connection_faults.is_gone(error))
    return True


def retry_delays(first_delay: float) -> Any:
    """Exponential back-off starting at ``first_delay`` seconds (0: retry at once)."""
    return exponential_backoff(backoff_factor=first_delay) if first_delay > 0 else 0


#: The first back-off delay and the least time all retries span, in seconds (what :func:`outage_delays` reads).
OUTAGE_ENV_VARS = ("FOCUS_RETRY_FIRST_DELAY_S", "FOCUS_RETRY_WINDOW_S")
_OUTAGE_DEFAULTS = (5.0, 60.0)  # an object store or database restarting is away for about half a minute


def outage_delays(retries: int, environ: Any = None) -> list[float]:
    """Delays before each of ``retries`` retries: doubling from the first, the last stretched so that all of them
    together span at least the window, so a task that fails while a store restarts (~30 s) succeeds on a retry.

    ``FOCUS_RETRY_FIRST_DELAY_S`` (default 5) and ``FOCUS_RETRY_WINDOW_S`` (default 60) set both, e.g. smaller
    in tests.

    Examples
    --------
    >>> outage_delays(1, {}), outage_delays(3, {}), outage_delays(0, {})
    ([60.0], [5.0, 10.0, 45.0], [])
    >>> outage_delays(2, {"FOCUS_RETRY_FIRST_DELAY_S": "0.5", "FOCUS_RETRY_WINDOW_S": "4"})
    [0.5, 3.5]
    """
    env = os.environ if environ is None else environ
    first, window = (float(env.get(name) or default) for name, default in zip(OUTAGE_ENV_VARS, _OUTAGE_DEFAULTS))
    delays = [first * 2**i for i in range(retries)]
    if delays:
        delays[-1] = max(delays[-1], window - sum(delays[:-1]))
    return delays


def _chunk_run_name() -> str:
    from prefect.runtime import task_run

    request = task_run.parameters["request"]
    return f"chunk-{request.chunk}-evaluation-{request.evaluation_id}"


@task(
    name="evaluate-chunk",
    task_run_name=_chunk_run_name,
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    retry_condition_fn=can_succeed_on_retry,
)
def evaluate_chunk(request: ChunkRequest) -> ChunkResult:
    """Explain one chunk of mosaics and write its rows (one per mosaic) in one transaction.

    With ``request.lease_owner`` the chunk is claimed in the store first (``db.leases.claim_chunk``): a chunk
    that another live run holds is left to it (``held_elsewhere``), and mosaics another run wrote meanwhile
    are not computed again. The claim is released once the rows are written.
    """
    started = time.perf_counter()
    engine = store.engine_for(request.database_url)
    with db.connection_faults.reachable(engine):  # a store that is gone: its StoreError, never retried
        return _evaluate_chunk(engine, request, started)


def _evaluate_chunk(engine: Any, request: ChunkRequest, started: float) -> ChunkResult:
    owner = request.lease_owner
    if owner is not None:
        if not _claim(engine, request, owner):
            return ChunkResult(evaluation_id=request.evaluation_id, chunk=request.chunk, rows=0, seconds=0.0,
                               computed=False, held_elsewhere=True)
        request = _still_missing(engine, request)
    try:
        if not request.positions:
            return ChunkResult(evaluation_id=request.evaluation_id, chunk=request.chunk, rows=0,
                               seconds=time.perf_counter() - started, computed=False)
        scores = explain_chunk(request)
        sums, focus, predicted = scores
        rows = db.write_mosaic_results(engine, request.evaluation_id, request.mosaic_ids, sums, focus, predicted)
    finally:
        if owner is not None:
            db.leases.release_chunk(engine, request.evaluation_id, request.chunk, owner)
    return ChunkResult(
        evaluation_id=request.evaluation_id, chunk=request.chunk, rows=rows, seconds=time.perf_counter() - started,
        batch_size=getattr(scores, "batch_size", request.batch_size),
    )


def _claim(engine: Any, request: ChunkRequest, owner: str) -> bool:
    """Claim the chunk for ``owner``; a claim whose run has stopped is taken over at once (``flows.worker.leases``)."""
    evaluation_id, chunk, seconds = request.evaluation_id, request.chunk, request.lease_seconds
    if db.leases.claim_chunk(engine, evaluation_id, chunk, owner, seconds):
        return True
    return bool(leases.take_over_dead(engine, [evaluation_id], owner, seconds)) and db.leases.claim_chunk(
        engine, evaluation_id, chunk, owner, seconds
    )


def _still_missing(engine: Any, request: ChunkRequest) -> ChunkRequest:
    """The request without the mosaics that already have a row (another run may have written them)."""
    finished = db.finished_mosaic_ids(engine, request.evaluation_id)
    keep = [i for i, mosaic_id in enumerate(request.mosaic_ids) if mosaic_id not in finished]
    if len(keep) == len(request.mosaic_ids):
        return request
    return request.model_copy(update={"positions": [request.positions[i] for i in keep],
                                      "mosaic_ids": [request.mosaic_ids[i] for i in keep]})
