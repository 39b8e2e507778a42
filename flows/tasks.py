"""The units of retry: explaining and recording one chunk of mosaics.

A task takes ids and specs (never tensors), loads what it needs through :mod:`flows.resources`
(once per process), and writes its rows in one transaction, so running it twice leaves the same
rows. Tasks make no artifact or event calls: those stay in the flows.

Examples
--------
>>> plan_chunks(5, chunk_size=2, finished=[0, 1, 3])
[(1, [2]), (2, [4])]
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ConfigDict, Field

import db
from flows import resources, store
from flows.params import DatasetSpec, MethodSpec, ModelSpec, MosaicSetSpec, RandomizationSpec
from focus_core import metric, mosaics

__all__ = [
    "ChunkRequest",
    "ChunkResult",
    "plan_chunks",
    "explain_chunk",
    "evaluate_chunk",
    "retry_delays",
    "can_succeed_on_retry",
]


class ChunkRequest(BaseModel):
    """Everything a chunk task needs, as ids and specs."""

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
    device: str
    batch_size: int
    database_url: str | None = None


class ChunkResult(BaseModel):
    """What a chunk task reports back (small: no per-mosaic data)."""

    evaluation_id: int
    chunk: int
    rows: int
    seconds: float


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


def explain_chunk(request: ChunkRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compose, explain and score the chunk's mosaics in batches on the request's device.

    Returns
    -------
    tuple of numpy arrays
        ``(quadrant_sums (M, 4, 2), focus (M,) with NaN where undefined, predicted class (M,))``.
    """
    device = resources.require_device(request.device)
    dataset = resources.load_dataset(request.dataset)
    tiles = resources.device_tiles(request.dataset, device)
    manifest = resources.load_manifest(request.dataset, request.mosaics)
    model = resources.load_model(request.model, request.dataset, device, request.randomization)
    explainer = resources.make_explainer(request.method, request.model)

    chosen = [manifest.mosaics[p] for p in request.positions]
    indices = torch.tensor([m.image_indices for m in chosen], dtype=torch.int64).reshape(-1, 4)
    targets = torch.tensor([m.target_class for m in chosen], dtype=torch.int64)
    masks = mosaics.target_mask(chosen)
    sums, scores, predicted = [], [], []
    for start in range(0, len(chosen), request.batch_size):
        stop = start + request.batch_size
        x = dataset.normalize(mosaics.compose_mosaics(tiles, indices[start:stop].to(device)))
        y = targets[start:stop].to(device)
        with resources.model_lock(model):
            relevance = explainer(model, x, y)
            with torch.no_grad():
                predicted.append(model(x).argmax(dim=1).cpu())
        batch_sums = metric.quadrant_sums(relevance.detach())
        scores.append(metric.focus_from_sums(batch_sums, masks[start:stop].to(batch_sums.device)).cpu())
        sums.append(batch_sums.cpu())
    return (
        torch.cat(sums).double().numpy(),
        torch.cat(scores).double().numpy(),
        torch.cat(predicted).numpy(),
    )


def can_succeed_on_retry(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: retry transient failures, never errors that would fail again.

    A ``ValueError`` (``FocusError``, ``StoreError``, a pydantic validation error: a bad
    parameter, a missing file, a wrong schema) or a ``TypeError``, ``LookupError`` or ``AttributeError`` (a bug) fails
    the same way on every try; a lost database connection, a CUDA error or an out-of-memory
    error may not.
    """
    try:
        state.result()
    except (ValueError, TypeError, LookupError, AttributeError, NotImplementedError):
        return False
    except Exception:  # noqa: BLE001 - anything else is worth another try
        return True
    return True


def retry_delays(first_delay: float) -> Any:
    """Exponential back-off starting at ``first_delay`` seconds (0: retry at once)."""
    return exponential_backoff(backoff_factor=first_delay) if first_delay > 0 else 0


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
    """Explain one chunk of mosaics and write its rows (one per mosaic) in one transaction."""
    started = time.perf_counter()
    sums, scores, predicted = explain_chunk(request)
    rows = db.write_mosaic_results(
        store.engine_for(request.database_url), request.evaluation_id, request.mosaic_ids, sums, scores, predicted
    )
    return ChunkResult(
        evaluation_id=request.evaluation_id, chunk=request.chunk, rows=rows, seconds=time.perf_counter() - started
    )
