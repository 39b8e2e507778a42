"""The model-reliance pass of an ``evaluate`` run and the reliance summaries of its evaluations.

The pass (:func:`focus_core.reliance.tile_reliance`) is the model's, not a method's: it is stored once per model
(checkpoint, randomization, and whether it is disconnected), mosaic set and baseline (:mod:`db.reliance`), and every evaluation of that model and
set reads it. :func:`run_reliance_pass` plans it like an evaluation: the mosaics without a stored row, in the same
fixed chunks (:func:`flows.tasks.plan_chunks`), each chunk one task (:func:`reliance_chunk`) that composes the
mosaics on the device, runs the ``N² + 1`` forward passes per mosaic in batches and writes the chunk in one
transaction. A re-run finds every row and computes nothing; an interrupted pass runs only its missing chunks. The
pass runs in fp32 whatever the run's precision (its identity has no precision). Each chunk is claimed first
(``db.leases.claim_reliance_chunk``): a chunk another live run holds is left to it and waited for, as the
evaluations' chunks are (:mod:`flows.evaluate`), so concurrent runs of one model and set measure it once.

Once an evaluation is finished and the pass has every mosaic, :func:`store_summaries` stores, per evaluation,
model Focus, the explainer gap (Focus minus model Focus) and, for grids of 3 and 4, the rank agreement over tiles
(``focus_core.reliance``), summarised by ``focus_core.stats``; an evaluation with a stored summary is left as it is.

Examples
--------
>>> from flows.params import EvaluateParams
>>> EvaluateParams(model={"weights": "w.pt"}).model_reliance
False
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

import db
from flows.specs import DatasetSpec, MosaicSetSpec, ModelSpec, RandomizationSpec, RunSpec
from flows.tasks import can_succeed_on_retry, compose_batch, plan_chunks, retry_delays
from flows.worker import caches, devices, store
from focus_core import stats
from focus_core.reliance import explainer_gap, model_focus, rank_agreement, tile_reliance

__all__ = ["BASELINE", "RelianceChunk", "ReliancePass", "reliance_chunk", "measure_chunk", "run_reliance_pass",
           "store_summaries", "summarize"]

#: The baseline the evaluate flow replaces a tile by unless ``reliance_baseline`` names the other
#: (``focus_core.reliance.BASELINES``; part of the pass's identity).
BASELINE = "mean"


class RelianceChunk(BaseModel):
    """One chunk of a reliance pass, as ids and specs: its mosaics and the model, data and run settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pass_id: int
    chunk: int = Field(description="Index of the chunk in the mosaic set (positions chunk*size .. (chunk+1)*size-1).")
    positions: list[int] = Field(description="Manifest positions of the mosaics still to do in this chunk.")
    mosaic_ids: list[int] = Field(description="Database ids of those mosaics, aligned with positions.")
    dataset: DatasetSpec
    mosaics: MosaicSetSpec
    model: ModelSpec
    randomization: RandomizationSpec = RandomizationSpec()
    run: RunSpec = Field(default_factory=RunSpec)
    baseline: str = BASELINE
    lease_owner: str | None = Field(
        None, description="The run that claims the chunk before measuring it; empty: no claim."
    )
    disconnected: bool = Field(False, description="Measure the disconnected model (focus_core.disconnected).")


@dataclass
class ReliancePass:
    """What :func:`run_reliance_pass` did: the pass, its chunks, those run now and the mosaics written."""

    pass_id: int
    chunks_total: int
    chunks_run: list[int] = field(default_factory=list)
    mosaics_written: int = 0
    complete: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def measure_chunk(request: RelianceChunk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(intact (M,), drops (M, N²), model Focus (M,) NaN where undefined)`` of the chunk's mosaics, as numpy.

    The mosaics are composed on the request's device in batches of ``run.batch_size`` (a probe set's patch stamped
    as the evaluation stamps it), and :func:`focus_core.reliance.tile_reliance` runs their variants in batches of
    ``run.batch_size`` rows, in one turn on the device (:func:`flows.worker.devices.device_turn`).
    """
    device = devices.require_device(request.run.device)
    dataset = caches.load_dataset(request.dataset)
    tiles = caches.device_tiles(request.dataset, device)
    table = caches.manifest_tensors(request.dataset, request.mosaics, request.model)
    model = caches.load_model(request.model, request.dataset, device, request.randomization,
                              disconnected=request.disconnected, grid=request.mosaics.grid)
    positions = torch.as_tensor(request.positions, dtype=torch.int64)
    indices, targets = table.indices.index_select(0, positions), table.targets.index_select(0, positions)
    masks = table.masks.index_select(0, positions)
    stamps = None if table.stamps is None else table.stamps.index_select(0, positions)
    grid, size = request.mosaics.grid, request.run.batch_size

    def turn() -> list[torch.Tensor]:
        intact, drops = [], []
        for start in range(0, len(indices), size):
            x = compose_batch(tiles, indices[start:start + size], dataset,
                              None if stamps is None else (request.mosaics.probe["size"], stamps[start:start + size]))
            found = tile_reliance(model, x, targets[start:start + size].to(device), grid, request.baseline, size)
            intact.append(found.intact)
            drops.append(found.drops)
        if not intact:
            empty = torch.zeros(0, grid * grid)
            return [empty[:, 0], empty, empty[:, 0]]
        drops_ = torch.cat(drops)
        return [t.cpu() for t in (torch.cat(intact), drops_, model_focus(drops_, masks.to(drops_.device)))]

    intact, drops, own = devices.device_turn(device, turn)
    return intact.double().numpy(), drops.double().numpy(), own.double().numpy()


def _chunk_run_name() -> str:
    from prefect.runtime import task_run

    request = task_run.parameters["request"]
    return f"reliance-chunk-{request.chunk}-pass-{request.pass_id}"


@task(name="reliance-chunk", task_run_name=_chunk_run_name, cache_policy=NO_CACHE, persist_result=False,
      retries=2, retry_condition_fn=can_succeed_on_retry)
def reliance_chunk(request: RelianceChunk) -> int | None:
    """Measure one chunk of the pass and write it in one transaction; the mosaics written (0: stored already).

    With ``lease_owner`` the chunk is claimed first: ``None`` when another live run holds it (nothing measured).
    Mosaics another run stored meanwhile are not measured again; the claim is released once the rows are written.
    """
    engine = store.engine_for(request.run.database_url)
    owner, leases_ = request.lease_owner, db.leases
    with db.connection_faults.reachable(engine):
        if owner is not None and not leases_.claim_reliance_chunk(engine, request.pass_id, request.chunk, owner,
                                                                  request.run.lease_seconds):
            return None
        try:
            stored = db.reliance_mosaic_ids(engine, request.pass_id)
            keep = [i for i, m in enumerate(request.mosaic_ids) if m not in stored]
            if not keep:
                return 0
            request = request.model_copy(update={"positions": [request.positions[i] for i in keep],
                                                 "mosaic_ids": [request.mosaic_ids[i] for i in keep]})
            intact, drops, own = measure_chunk(request)
            return db.write_reliance(engine, request.pass_id, request.mosaic_ids, intact, drops, own)
        finally:
            if owner is not None:
                leases_.release_reliance_chunk(engine, request.pass_id, request.chunk, owner)


def run_reliance_pass(params: Any, inputs: Any, engine: Any, owner: str | None = None) -> ReliancePass:
    """Open the pass of ``params``' model and mosaic set and run its missing chunks (``params``: ``EvaluateParams``).

    With ``params.disconnected`` the pass measures the disconnected model, a pass of its own. ``owner`` (the run's
    lease owner) claims each chunk; chunks another live run holds are waited for until their
    rows are stored, or claimed once that run's lease has expired.

    Raises
    ------
    RuntimeError
        When a chunk failed (the chunks written are kept; the same request runs the rest).
    """
    logger = get_run_logger()
    rnd, disconnected = params.randomization, bool(getattr(params, "disconnected", False))
    baseline = getattr(params, "reliance_baseline", BASELINE)
    pass_id = store.retrying(engine, lambda: db.get_or_create_reliance_pass(
        engine, inputs.checkpoint_id, inputs.mosaic_set_id, randomization=rnd.kind, stage=rnd.stage,
        layer=rnd.layer, seed=None if rnd.kind == "none" else rnd.seed, baseline=baseline,
        disconnected=disconnected))
    stored = store.retrying(engine, lambda: db.reliance_mosaic_ids(engine, pass_id))
    done = [p for p, mosaic_id in enumerate(inputs.mosaic_ids) if mosaic_id in stored]
    plan = plan_chunks(len(inputs.mosaic_ids), params.run.chunk_size, done)
    outcome = ReliancePass(pass_id, -(-len(inputs.mosaic_ids) // params.run.chunk_size))
    logger.info("Model reliance (pass %d, %s baseline): %d chunk(s) to run, %d already stored", pass_id, baseline,
                len(plan), outcome.chunks_total - len(plan))
    measure = reliance_chunk.with_options(retries=params.run.retries,
                                          retry_delay_seconds=retry_delays(params.run.retry_delay_seconds))
    pending = [RelianceChunk(
        pass_id=pass_id, chunk=chunk, positions=positions, mosaic_ids=[inputs.mosaic_ids[p] for p in positions],
        dataset=params.dataset, mosaics=params.mosaics, model=params.model, randomization=rnd, run=params.run,
        lease_owner=owner, disconnected=disconnected, baseline=baseline,
    ) for chunk, positions in plan]
    errors = []
    while pending:
        futures = {request.chunk: (request, measure.submit(request)) for request in pending}
        held = []
        for chunk, (request, future) in futures.items():
            try:
                written = future.result()
            except Exception as error:  # noqa: BLE001 - the other chunks finish and are kept
                errors.append(error)
                continue
            if written is None:
                held.append(request)
            else:
                outcome.mosaics_written += written
                outcome.chunks_run.append(chunk)
        pending = _wait_for_others(engine, held, params.run.lease_seconds) if held else []
    outcome.chunks_run.sort()
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(plan)} model-reliance chunk(s) failed (first: {errors[0]}); the "
                           "other chunks are kept: fix the cause and run the same request again.") from errors[0]
    outcome.complete = True
    return outcome


def _wait_for_others(engine: Any, held: list[RelianceChunk], lease_seconds: float) -> list[RelianceChunk]:
    """Wait until each chunk another run holds has its rows, or its lease is free; return those still missing."""
    get_run_logger().info("%d model-reliance chunk(s) are being measured by another run; waiting", len(held))
    while True:
        time.sleep(min(2.0, lease_seconds / 4))
        stored = store.retrying(engine, lambda: db.reliance_mosaic_ids(engine, held[0].pass_id))
        missing = [r for r in held if any(m not in stored for m in r.mosaic_ids)]
        live = [r for r in missing if store.retrying(
            engine, lambda r=r: db.leases.reliance_chunk_live(engine, r.pass_id, r.chunk))]
        if not live:
            return missing
        held = missing


def summarize(frame: Any, grid: int) -> dict[str, Any]:
    """The reliance summaries of one evaluation from :func:`db.reliance.evaluation_reliance_tiles`' rows.

    Model Focus and the gap: ``focus_core.stats.summarize`` (median, quartiles over the defined values) and
    ``cluster_bootstrap_median_ci`` (target classes and mosaics resampled); the rank agreement: the median of
    the defined per-mosaic Spearman correlations (none on 2x2).
    """
    tiles = grid * grid
    per_mosaic = frame.iloc[::tiles]
    classes = per_mosaic["target_class"].to_numpy()
    own = torch.tensor(per_mosaic["model_focus"].to_numpy(dtype=float))
    gap = explainer_gap(torch.tensor(per_mosaic["focus"].to_numpy(dtype=float)), own).numpy()
    positive = torch.tensor(frame["positive"].to_numpy(dtype=float).reshape(-1, tiles))
    drops = torch.tensor(frame["logit_drop"].to_numpy(dtype=float).reshape(-1, tiles))
    agreement = rank_agreement(positive, drops).numpy()
    summary: dict[str, Any] = {}
    for name, values in (("model_focus", own.numpy()), ("explainer_gap", gap)):
        found = stats.summarize(values)
        low, high = stats.cluster_bootstrap_median_ci(values, classes)
        summary.update({f"median_{name}": found["median"], f"q1_{name}": found["q1"], f"q3_{name}": found["q3"],
                        f"{name}_low": low, f"{name}_high": high})
    summary["n_model_defined"] = int(np.isfinite(own.numpy()).sum())
    summary["n_gap_defined"] = int(np.isfinite(gap).sum())
    defined = agreement[np.isfinite(agreement)]
    summary["median_rank_agreement"] = float(np.median(defined)) if len(defined) else None
    return summary


def store_summaries(engine: Any, outcome: ReliancePass, evaluation_ids: list[int], grid: int) -> list[int]:
    """Store the reliance summaries of the finished evaluations among ``evaluation_ids`` that have none yet
    (every mosaic of each must have a row in the pass); return the ids stored now."""
    if not outcome.complete or not evaluation_ids:
        return []
    have = set(db.evaluation_reliance(engine, evaluation_ids)["evaluation_id"].astype(int))
    states = {e: db.evaluation_state(engine, e)["status"] for e in evaluation_ids if e not in have}
    stored = []
    for evaluation_id, status in states.items():
        if status != "finished":
            continue
        frame = db.evaluation_reliance_tiles(engine, evaluation_id, outcome.pass_id)
        if not len(frame):
            continue
        db.store_evaluation_reliance(engine, evaluation_id, outcome.pass_id, summarize(frame, grid))
        stored.append(evaluation_id)
    return stored

