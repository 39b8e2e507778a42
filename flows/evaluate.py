"""The ``evaluate`` flow: Focus of attribution methods on one checkpoint and one seeded mosaic set.

It reads like the paper's method section:

1. register the dataset, the checkpoint, the methods and the mosaic set (idempotent);
2. per method, create (or find) the evaluation and list the mosaics it has no row for yet;
3. split those into fixed chunks; each chunk is one task that composes the mosaics on the
   device, explains them in batches, sums the relevance per quadrant, scores Focus, predicts the
   class and writes the chunk's rows in one transaction;
4. close every complete evaluation with its summary; report a table artifact and the figures.

With ``model_reliance`` the model's reliance on each tile is measured first, once per model and mosaic set
(:mod:`flows.reliance`), and every finished evaluation gets model Focus and the explainer gap beside its Focus.

With ``disconnected`` every step explains (and measures) the disconnected model
(:class:`focus_core.disconnected.DisconnectedModel`): each tile through the feature extractor on its own. It is
recorded among each method's parameters, so these evaluations are not the connected ones.

Re-running the same request finds the rows already written and runs only the missing chunks.

Examples
--------
>>> from flows.params import EvaluateParams
>>> evaluate(EvaluateParams(model={"weights": "digits.pt"}))  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic.json_schema import SkipJsonSchema

import db
import focus_core
from flows import reliance as model_reliance
from flows.worker import leases, preflight, record, store
from flows.results import figure_store
from flows.results.artifacts import best_effort
from flows.worker.method_bounds import with_dataset_bounds
from flows.params import EvaluateParams
from flows.worker.record import RegisteredInputs
from flows.results.names import evaluate_name, named
from flows.specs import with_effective_dataset
from flows.tasks import (
    ChunkRequest,
    ChunkResult,
    evaluate_chunk,
    plan_chunks,
    retry_delays,
)
from focus_core import report

__all__ = ["evaluate", "EvaluationRecord", "LOG_CHUNK_DONE", "LOG_PLANNED", "run_evaluation"]

#: The flow's log line once the chunks are planned (to run, already finished), and after each chunk (done, of):
#: ``focus demo`` moves its progress bar on them.
LOG_PLANNED = "%d chunk(s) to run, %d already finished"
LOG_CHUNK_DONE = "%d of %d chunk(s) done"


@dataclass
class EvaluationRecord:
    """One evaluation of a request: its id, what ran now and its summary."""

    evaluation_id: int
    method: str
    params: dict[str, Any]
    chunks_total: int
    chunks_run: list[int] = field(default_factory=list)
    chunks_skipped: int = 0
    chunks_failed: list[int] = field(default_factory=list)
    rows_written: int = 0
    status: str = "pending"
    summary: dict[str, Any] = field(default_factory=dict)
    batch_sizes: dict[int, int] = field(default_factory=dict)  # chunk -> batch size it finished with

    def batch_size_metadata(self, requested: int) -> dict[str, Any]:
        """The batch sizes of the chunks run now, for the evaluation's metadata (below ``requested``: to fit memory)."""
        reduced = {str(chunk): size for chunk, size in sorted(self.batch_sizes.items()) if size < requested}
        used = min(self.batch_sizes.values(), default=requested)
        return {"requested": requested, "used": used, "reduced_chunks": reduced}

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def run_evaluation(
    params: EvaluateParams,
    *,
    audit_run_id: int | None = None,
    inputs: RegisteredInputs | None = None,
    artifacts: bool = True,
) -> dict[str, Any]:
    """The body of :func:`evaluate` (call it inside a flow): check, plan, run the missing chunks, close, report.

    Its dataset is first resolved for the model (:func:`flows.specs.effective_dataset`: a timm model's input
    size and normalisation on an ImageFolder), and the request is checked before anything is written
    (:func:`flows.worker.preflight.check_request`). The run owns
    the evaluations it starts and the chunks it computes (:mod:`flows.worker.leases`): an identical request running
    at the same time computes the other chunks, and this run waits for those (or takes them over when their
    run dies) before it closes the evaluations.
    """
    logger = get_run_logger()
    params = with_effective_dataset(params)  # the model's tile size and normalisation, recorded in the request
    params = with_dataset_bounds(params)  # LRP's z^B bounds: the dataset's input domain unless the request names them
    device = preflight.check_request(params)
    engine = store.engine_for(params.run.database_url)
    started = time.perf_counter()
    inputs = inputs or store.retrying(
        engine, lambda: record.register_inputs(
            engine, params.dataset, params.mosaics, params.model, max_mosaics=params.run.max_mosaics
        )
    )
    rnd = params.randomization
    logger.info(
        "Evaluating checkpoint %s (%s) on mosaic set %s (%d mosaics) on %s; store %s",
        inputs.checkpoint_sha256[:12], params.model.architecture, inputs.manifest_hash[:12],
        len(inputs.mosaic_ids), device, store.describe(params.run.database_url),
    )
    owner, lease = leases.run_owner(), params.run.lease_seconds
    store.retrying(engine, lambda: leases.hold(engine, owner))
    records, requests = store.retrying(
        engine, lambda: _plan(params, inputs, engine, owner, audit_run_id=audit_run_id, device=str(device))
    )
    logger.info(LOG_PLANNED, len(requests), sum(r.chunks_skipped for r in records))
    try:
        with leases.LeaseKeeper(engine, owner, [r.evaluation_id for r in records], lease):
            reliance = model_reliance.run_reliance_pass(params, inputs, engine, owner) if params.model_reliance \
                else None
            first_error = _run_chunks(params, engine, records, requests, artifacts)
    except BaseException as error:
        # the rows written are kept; the flow's state hooks mark a crash the same way
        status = "failed" if isinstance(error, Exception) else "crashed"
        try:
            leases.release_run(params.run.database_url, owner, status)
        except Exception:  # noqa: BLE001 - the store may be the fault: the error that stopped the run is raised
            logger.warning("The evaluations of this run could not be marked %s; the next run takes them over", status)
        raise

    metadata = _request_metadata(params)
    for entry in records:
        entry.chunks_run.sort()
        entry.chunks_failed.sort()
        store.retrying(engine, lambda entry=entry: _close(engine, entry, inputs, params, metadata, started))
    store.retrying(engine, lambda: leases.release_run(params.run.database_url, owner, "running"))  # resumable
    if reliance is not None:
        summarized = store.retrying(engine, lambda: model_reliance.store_summaries(
            engine, reliance, [r.evaluation_id for r in records], params.mosaics.grid))

    outcome = {
        "checkpoint_id": inputs.checkpoint_id,
        "checkpoint_sha256": inputs.checkpoint_sha256,
        "mosaic_set_id": inputs.mosaic_set_id,
        "manifest_hash": inputs.manifest_hash,
        "num_mosaics": len(inputs.mosaic_ids),
        "randomization": rnd.model_dump(),
        "evaluations": [r.as_dict() for r in records],
    }
    if params.disconnected:
        outcome["disconnected"] = True
    if reliance is not None:
        outcome["model_reliance"] = {**reliance.as_dict(), "summaries_stored": summarized}
    if artifacts:
        _report(params, inputs, records, engine)
    if first_error is not None:
        failed = sum(len(r.chunks_failed) for r in records)
        raise RuntimeError(
            f"{failed} of {len(requests)} chunk(s) failed (first: {first_error}); the rows of the other chunks "
            "are kept: fix the cause and run the same request again to finish the rest."
        ) from first_error
    return outcome


def _close(engine: Any, entry: EvaluationRecord, inputs: RegisteredInputs, params: EvaluateParams,
           metadata: dict[str, Any], started: float) -> None:
    """Close ``entry``'s evaluation: finished when every mosaic has a row, failed when a chunk failed (idempotent)."""
    missing = len(inputs.mosaic_ids) - len(db.finished_mosaic_ids(engine, entry.evaluation_id))
    # the request, and the batch sizes the chunks run now finished with (halved after running out of memory)
    closing = {**metadata, "batch_size": entry.batch_size_metadata(params.run.batch_size)}
    stored = db.evaluation_state(engine, entry.evaluation_id) if missing == 0 and not entry.chunks_run else None
    if missing == 0:  # chunks another run of the request computed meanwhile count as skipped too
        entry.chunks_skipped = entry.chunks_total - len(entry.chunks_run)
    if stored is not None and stored["status"] == "finished":
        entry.status = "finished"  # nothing done now: the record stays as the run that finished it wrote it
        entry.summary = stored["summary"]
    elif missing == 0:
        entry.status = "finished"
        entry.summary = db.finish_evaluation(
            engine, entry.evaluation_id, status="finished", seconds=time.perf_counter() - started, metadata=closing,
        )
    elif entry.chunks_failed:
        entry.status = "failed"
        db.finish_evaluation(engine, entry.evaluation_id, status="failed", metadata=closing)
    else:
        entry.status = "running"  # stopped by max_chunks: the next identical request finishes it


def _request_metadata(params: EvaluateParams) -> dict[str, Any]:
    exclude: dict[str, Any] = {"run": {"database_url"}}
    for option in ("model_reliance", "disconnected"):  # off: the request is recorded as it was without the option
        if not getattr(params, option):
            exclude[option] = True
    if not params.model_reliance or params.reliance_baseline == "mean":  # the default: recorded as before
        exclude["reliance_baseline"] = True
    return {"request": params.model_dump(mode="json", exclude=exclude)}


def _plan(
    params: EvaluateParams, inputs: RegisteredInputs, engine: Any, owner: str, *, audit_run_id: int | None,
    device: str,
) -> tuple[list[EvaluationRecord], list[ChunkRequest]]:
    """Open every method's evaluation, take over those a dead run left, and list the chunks still to compute."""
    logger = get_run_logger()
    records: list[EvaluationRecord] = []
    requests: list[ChunkRequest] = []
    budget = params.run.max_chunks
    for method in params.methods:
        evaluation_id, name, method_params = record.open_evaluation(
            engine, inputs, method, params.model, params.randomization, audit_run_id=audit_run_id, device=device,
            metadata=_request_metadata(params), precision=params.run.dtype,
            grid=params.mosaics.grid, disconnected=params.disconnected,
        )
        for dead in leases.take_over_dead(engine, [evaluation_id], owner, params.run.lease_seconds):
            logger.warning("The run %s working on evaluation %d has stopped; taking its work over at once", dead,
                           evaluation_id)
        for stale in db.leases.expire_stale_runs(engine, [evaluation_id]):
            logger.warning("Evaluation %d was left running by a run that stopped; marked crashed, taking it over", stale)
        finished_ids = db.finished_mosaic_ids(engine, evaluation_id)
        if params.randomization.kind == "full" and len(finished_ids) < len(inputs.mosaic_ids):
            finished_ids = _reuse_shared_network(engine, evaluation_id, finished_ids, params.randomization.seed)
        finished_positions = [p for p, mid in enumerate(inputs.mosaic_ids) if mid in finished_ids]
        plan = plan_chunks(len(inputs.mosaic_ids), params.run.chunk_size, finished_positions)
        total = -(-len(inputs.mosaic_ids) // params.run.chunk_size)
        records.append(EvaluationRecord(evaluation_id, name, method_params, total, chunks_skipped=total - len(plan)))
        if plan:
            db.start_evaluation(engine, evaluation_id, code_version=focus_core.__version__, device=device,
                                owner=owner, lease_seconds=params.run.lease_seconds)
        for chunk, positions in plan:
            if budget is not None and len(requests) >= budget:
                break
            requests.append(ChunkRequest.of(params, method, evaluation_id, [inputs.mosaic_ids[p] for p in positions],
                                            chunk=chunk, positions=positions, lease_owner=owner))
    return records, requests


def _reuse_shared_network(engine: Any, evaluation_id: int, finished_ids: set[int], seed: int | None) -> set[int]:
    """Fill a ``full`` evaluation with the rows of the same fully random network measured on another checkpoint of
    the architecture (:mod:`db.shared_networks`); return the finished mosaic ids after it."""
    twin = db.shared_network_twin(engine, evaluation_id)
    if twin is None:
        return finished_ids
    copied = db.copy_results(engine, twin, evaluation_id)
    get_run_logger().info(
        "Evaluation %d: the fully random network of seed %s is the one evaluation %d measured on another checkpoint "
        "of this architecture; %d rows reused, not computed again", evaluation_id, seed, twin, copied,
    )
    return db.finished_mosaic_ids(engine, evaluation_id)


def _run_chunks(
    params: EvaluateParams, engine: Any, records: list[EvaluationRecord], requests: list[ChunkRequest],
    artifacts: bool,
) -> BaseException | None:
    """Run the chunk tasks; wait for chunks another live run holds, take them over when it stops or its lease expires.

    Returns the first error of a failed chunk (the others still run and are recorded), except that a chunk
    that failed because the store cannot be used (a ``StoreError``: gone, full, read-only) stops the run at once:
    the chunks not started yet are cancelled.
    """
    logger = get_run_logger()
    by_id = {r.evaluation_id: r for r in records}
    progress_id = (best_effort(create_progress_artifact, 0.0, description="Chunks of mosaics explained")
                   if artifacts and requests else None)
    task = evaluate_chunk.with_options(
        retries=params.run.retries, retry_delay_seconds=retry_delays(params.run.retry_delay_seconds)
    )
    first_error: BaseException | None = None
    done, pending = 0, list(requests)
    while pending:
        futures = {task.submit(request): request for request in pending}
        held_elsewhere: list[ChunkRequest] = []
        for future in as_completed(list(futures)):
            request = futures[future]
            entry = by_id[request.evaluation_id]
            try:
                result: ChunkResult = future.result()
            except Exception as error:  # noqa: BLE001 - recorded, reported after the other chunks finish
                entry.chunks_failed.append(request.chunk)
                first_error = first_error or error
                logger.error("Chunk %d of evaluation %d failed: %s", request.chunk, request.evaluation_id, error)
                if isinstance(error, db.StoreError):  # the store is gone or full: no other chunk could be stored
                    _cancel_waiting(futures)
                    return error
            else:
                if result.held_elsewhere:
                    held_elsewhere.append(request)
                    continue
                if result.computed:
                    entry.chunks_run.append(result.chunk)
                    entry.rows_written += result.rows
                    entry.batch_sizes[result.chunk] = result.batch_size or request.batch_size
                if entry.batch_sizes.get(result.chunk, request.batch_size) < request.batch_size:
                    logger.warning(
                        "Chunk %d of evaluation %d finished at batch size %d instead of %d to fit the memory budget "
                        "(FOCUS_MEMORY_BUDGET) or the device's memory",
                        result.chunk, result.evaluation_id, entry.batch_sizes[result.chunk], request.batch_size,
                    )
            done += 1
            logger.info(LOG_CHUNK_DONE, done, len(requests))
            if progress_id is not None:
                best_effort(update_progress_artifact, progress_id, progress=100.0 * done / len(requests))
        pending = _wait_for_others(engine, held_elsewhere, requests[0].lease_owner, params.run.lease_seconds)
    return first_error


def _cancel_waiting(futures: dict[Any, ChunkRequest]) -> None:
    """Cancel the chunk tasks that have not started yet (those running finish on their own)."""
    for future in futures:
        wrapped = getattr(future, "wrapped_future", None)
        if wrapped is not None:
            wrapped.cancel()


def _wait_for_others(engine: Any, held: list[ChunkRequest], owner: str | None, lease_seconds: float
                     ) -> list[ChunkRequest]:
    """Wait until each chunk another run holds is finished there, or is free (its run stopped); return the latter."""
    if not held:
        return []
    get_run_logger().info("%d chunk(s) are being computed by another run of this request; waiting", len(held))
    while True:
        time.sleep(min(2.0, lease_seconds / 4))
        waiting, free = store.retrying(engine, lambda: _poll_held(engine, held, owner, lease_seconds))
        if free or not waiting:
            return free + waiting  # the waiting ones are claimed again: each attempt either waits or computes
        held = waiting


def _poll_held(engine: Any, held: list[ChunkRequest], owner: str | None, lease_seconds: float
               ) -> tuple[list[ChunkRequest], list[ChunkRequest]]:
    """The held chunks not finished yet, split into those a live run holds and those free to claim."""
    evaluation_ids = sorted({r.evaluation_id for r in held})
    if owner is not None:  # a run that stops while we wait is taken over at once, not when its lease expires
        leases.take_over_dead(engine, evaluation_ids, owner, lease_seconds)
    finished = {e: db.finished_mosaic_ids(engine, e) for e in evaluation_ids}  # once a poll
    waiting, free = [], []
    for request in held:
        if all(mosaic_id in finished[request.evaluation_id] for mosaic_id in request.mosaic_ids):
            continue
        live = db.leases.chunk_lease_live(engine, request.evaluation_id, request.chunk)
        (waiting if live else free).append(request)
    return waiting, free


def _report(params: EvaluateParams, inputs: RegisteredInputs, records: list[EvaluationRecord], engine: Any) -> None:
    """Summary table artifact (and figures when ``figures_dir`` is set); flow-level only."""
    frame = store.retrying(engine, lambda: db.evaluation_summary(engine, [r.evaluation_id for r in records]))
    table = []
    by_id = {r.evaluation_id: r for r in records}
    for row in frame.itertuples():
        entry = by_id[int(row.evaluation_id)]
        table.append({
            "method": entry.method,
            "evaluation": int(row.evaluation_id),
            "status": entry.status,
            "mosaics": int(row.n),
            "defined": int(row.n_defined),
            "median Focus": _rounded(row.median_focus),
            "mean Focus": _rounded(row.mean_focus),
            "q1": _rounded(row.q1_focus),
            "q3": _rounded(row.q3_focus),
            "mosaic accuracy": _rounded(row.mosaic_accuracy),
            "chunks run now": len(entry.chunks_run),
            "chunks skipped": entry.chunks_skipped,
        })
        if params.model_reliance:
            table[-1].update({"median model Focus": _rounded(row.median_model_focus),
                              "median explainer gap": _rounded(row.median_explainer_gap)})
    rnd = params.randomization
    suffix = "" if rnd.kind == "none" else f"-{rnd.kind}{'' if rnd.stage is None else rnd.stage}"
    best_effort(
        create_table_artifact,
        table,
        key=f"focus-{inputs.checkpoint_sha256[:12]}-{inputs.manifest_hash[:12]}{suffix}".lower().replace("_", "-"),
        description=f"Focus of {params.model.architecture} ({inputs.checkpoint_sha256[:12]}) on mosaic set "
        f"{inputs.manifest_hash[:12]}, randomization {rnd.kind}",
    )
    if params.figures_dir:
        scores = {
            r.method: store.retrying(engine, lambda r=r: db.evaluation_results(engine, r.evaluation_id))["focus"]
            .to_numpy(dtype=float)
            for r in records if r.status == "finished"
        }
        if scores:
            where = figure_store.save_figure(
                params.figures_dir, f"focus-{inputs.checkpoint_sha256[:12]}{suffix}.png",
                lambda path: report.plot_focus_distributions({params.model.label or params.model.architecture: scores},
                                                             path))
            figure_store.show_figures([where], "Focus distributions of this evaluation")


def _rounded(value: Any) -> float | None:
    from flows.results.artifacts import number

    return number(value, digits=4)


#: Two chunk threads: while one thread's chunk takes its turn on the device (``devices.device_turn``), the other
#: writes its finished chunk's rows and waits for the next turn.
CHUNK_THREADS = 2


@flow(name="evaluate", flow_run_name=named(evaluate_name, EvaluateParams), validate_parameters=True,
      persist_result=False, task_runner=ThreadPoolTaskRunner(max_workers=CHUNK_THREADS), **leases.STATE_HOOKS)
def evaluate(params: EvaluateParams, audit_run_id: SkipJsonSchema[int | None] = None) -> dict[str, Any]:
    """Evaluate attribution methods with Focus on one checkpoint and one seeded mosaic set.

    Args:
        params: What to evaluate (checkpoint, dataset, mosaic set, methods) and how (device,
            batch and chunk sizes, retries, store).
        audit_run_id: Set by the audit flow: records the evaluations as part of that audit run. Internal: it is
            left out of the parameter schema, so the deployment's form never shows it.

    Returns a dict with the checkpoint, the mosaic set and, per method, the evaluation id, the
    chunks run now / skipped / failed and the summary (n, n_defined, median, mean).
    """
    return run_evaluation(params, audit_run_id=audit_run_id)  # its first step checks the device
