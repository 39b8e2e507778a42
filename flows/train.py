"""The ``train`` flow: the paper's recipe, one task per epoch, Focus measured after every epoch.

Epoch 0 is the model before its first optimisation step: its weights are checkpointed, its loss
and accuracy on the validation split and its Focus for every method are recorded like any epoch's
(it trains nothing, so its training loss and accuracy stay empty). Each epoch task restores the
previous epoch's checkpoint (model and AMSGrad state), trains one epoch (seeded by the run's seed
and the epoch number, so a resumed run continues exactly like an uninterrupted one), writes its
checkpoint file atomically, registers the weights, evaluates Focus on the fixed validation mosaic
set with every method of ``focus_methods`` and records the epoch with those evaluations
(``training_epoch_focus``: one row per epoch and method). A re-run of the same request (or one
asking for more epochs) resumes after the last epoch that is both recorded and checkpointed (and
records epoch 0 when it is missing). At the end: the Pearson correlation of Focus and accuracy over
the epochs, with and without epoch 0.

The checkpoint folder may be a URL (``s3://bucket/prefix``, ``gs://``, ``az://``, ``file://``): each epoch's
files are then written to a local staging folder and uploaded (weights first, then the resume checkpoint,
so a checkpoint found means its weights are there), the store records their URLs, and a resumed run on
any worker downloads the last checkpoint (:mod:`flows.weights.weight_store`).

Examples
--------
>>> from flows.params import TrainParams
>>> train(TrainParams(epochs=2, checkpoint_dir="checkpoints"))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import tempfile
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

import db
from flows.results import analysis, figure_store
from flows.worker import caches, devices, leases, record, store
from flows.weights import lineages, weight_store
from flows.results.artifacts import artifact_key, best_effort
from flows.results.artifacts import number
from flows.params import NAME_PATTERN, RandomizationSpec, TrainParams
from flows.worker.record import RegisteredInputs, RegisteredMosaics
from flows.results.names import named, train_name
from flows.specs import with_effective_dataset
from flows.tasks import ChunkRequest, can_succeed_on_retry, explain_chunk, outage_delays
from focus_core import models, report
from focus_core import train as recipe
from focus_core.errors import FocusError

__all__ = ["train", "train_epoch", "EpochRequest", "LOG_EPOCH", "LOG_RESUMED", "completed_epochs", "checkpoint_path",
           "run_folder"]

#: The flow's log lines when it resumes a run (run id, epochs done, checkpoint) and after each epoch:
#: ``focus demo`` moves its progress bar on them.
LOG_RESUMED = "Training run %d resumes after epoch %d (checkpoint %s)"
LOG_EPOCH = "Epoch %d: val accuracy %.3f, median Focus %s"
#: Epoch 0's line (the untrained model): not an epoch trained, so the demo's bar does not move on it.
LOG_UNTRAINED = "Epoch 0 (untrained model): val accuracy %.3f, median Focus %s"
LOG_SAME_WEIGHTS = ("The final weights are byte-identical to those of training run %d (%s) epoch %s: checkpoint %d is "
                    "one record of both runs, and audits, sweeps and the report name it after both")


class EpochRequest(BaseModel):
    """One epoch of a training run, as ids and specs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    params: TrainParams
    training_run_id: int
    epoch: int
    run_dir: str
    mosaic_set_id: int
    manifest_hash: str
    mosaic_ids: list[int]
    dataset_id: int


def _in_folder(run_dir: str | Path, name: str) -> Path | str:
    return weight_store.join(run_dir, name) if weight_store.is_url(run_dir) else Path(run_dir) / name


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path | str:
    """The resumable checkpoint (model + optimizer) of an epoch (a URL in a URL's folder)."""
    return _in_folder(run_dir, f"epoch-{epoch:04d}.pt")


def weights_path(run_dir: str | Path, epoch: int) -> Path | str:
    """The plain weights file (a state_dict) of an epoch: what evaluations load and the store registers."""
    return _in_folder(run_dir, f"epoch-{epoch:04d}.weights.pt")


def run_folder(checkpoint_dir: str | Path, name: str, config_hash: str) -> Path | str:
    """The folder of a training run's checkpoints: ``<checkpoint_dir>/<name>-<config hash[:12]>``.

    A local folder is returned as an absolute :class:`~pathlib.Path`; a URL folder as the URL (a string).

    Raises
    ------
    FocusError
        When that folder would not lie inside ``checkpoint_dir`` (a name with ``..`` or ``/``, or a
        symbolic link that points elsewhere): the name rule of :data:`flows.params.NAME_PATTERN`
        refuses such a name up front; this check holds for any name.

    Examples
    --------
    >>> run_folder("/data/checkpoints", "digits", "0f1819c26eca" * 5).as_posix()
    '/data/checkpoints/digits-0f1819c26eca'
    >>> run_folder("s3://models/runs/", "digits", "0f1819c26eca" * 5)
    's3://models/runs/digits-0f1819c26eca'
    >>> run_folder("/data/checkpoints", "../../tmp/x", "0f1819c26eca" * 5)
    Traceback (most recent call last):
    ...
    focus_core.errors.FocusError: The training run's folder /tmp/x-0f1819c26eca lies outside the checkpoint \
folder /data/checkpoints: name the run with letters, digits, '.', '_' and '-' only.
    """
    if weight_store.is_url(checkpoint_dir):
        folder = f"{name}-{config_hash[:12]}"
        if not re.fullmatch(NAME_PATTERN, folder):  # a URL has no resolve(): the name rule is the whole check
            raise FocusError(
                f"The training run's folder {weight_store.join(weight_store.redact(checkpoint_dir), folder)} lies "
                f"outside the checkpoint folder {weight_store.redact(checkpoint_dir)}: name the run with letters, "
                "digits, '.', '_' and '-' only."
            )
        return weight_store.join(checkpoint_dir, folder)
    root = Path(checkpoint_dir).resolve()
    folder = (root / f"{name}-{config_hash[:12]}").resolve()
    if folder.parent != root:
        raise FocusError(
            f"The training run's folder {folder} lies outside the checkpoint folder {root}: "
            "name the run with letters, digits, '.', '_' and '-' only."
        )
    return folder


@contextlib.contextmanager
def _staging(run_dir: str) -> Iterator[Path]:
    """Where an epoch writes its files: the run's folder itself, or a local folder uploaded from (URL folders)."""
    if not weight_store.is_url(run_dir):
        yield Path(run_dir)
        return
    with tempfile.TemporaryDirectory(prefix="focus-staging-") as folder:
        yield Path(folder)


@task(name="train-epoch", task_run_name="epoch-{request.epoch}", cache_policy=NO_CACHE, persist_result=False,
      retry_condition_fn=can_succeed_on_retry)
def train_epoch(request: EpochRequest) -> dict[str, Any]:
    """Train one epoch from the previous checkpoint, checkpoint it, measure Focus and record the epoch.

    An epoch an earlier try trained and checkpointed (it failed while measuring Focus or recording) is not
    trained again: its stored weights and metrics are used.
    """
    params = request.params
    device = devices.require_device(params.run.device)
    engine = store.engine_for(params.run.database_url)
    dataset = caches.load_dataset(params.dataset)

    weights = weights_path(request.run_dir, request.epoch)
    if request.epoch == 0:  # the model before its first optimisation step: epoch 1 starts from the same weights
        metrics = _checkpoint_untrained(request, device, dataset)
    else:
        metrics = _trained_before(request) or _train_and_checkpoint(request, device, dataset)

    spec = params.model.model_copy(update={"weights": str(weights), "label": f"{params.name} epoch {request.epoch}"})
    checkpoint_id, sha = record.register_checkpoint(
        engine, spec, params.dataset, training_run_id=request.training_run_id, epoch=request.epoch
    )
    inputs = RegisteredInputs(request.dataset_id, request.mosaic_set_id, request.manifest_hash,
                              request.mosaic_ids, checkpoint_id, sha)
    focus: dict[str, dict[str, Any]] = {}
    for method in params.focus_methods:
        evaluation_id, name, _ = record.open_evaluation(engine, inputs, method, spec, RandomizationSpec(),
                                                        device=str(device), grid=params.focus_mosaics.grid)
        chunk = ChunkRequest.of(params.focus_specs(spec), method, evaluation_id, request.mosaic_ids)
        started = time.perf_counter()
        db.start_evaluation(engine, evaluation_id)
        db.write_mosaic_results(engine, evaluation_id, request.mosaic_ids, *explain_chunk(chunk))
        focus[name] = db.finish_evaluation(engine, evaluation_id, seconds=time.perf_counter() - started)
        focus[name]["evaluation_id"] = evaluation_id

    first = focus[params.focus_methods[0].name]
    db.record_epoch(
        engine,
        request.training_run_id,
        request.epoch,
        train_loss=metrics.train_loss,
        train_accuracy=metrics.train_accuracy,
        val_loss=metrics.val_loss,
        val_accuracy=metrics.val_accuracy,
        val_mean_class_accuracy=metrics.val_mean_class_accuracy,
        focus_median=first.get("median"),
        focus_mean=first.get("mean"),
        seconds=metrics.seconds,
        evaluation_ids=[f["evaluation_id"] for f in focus.values()],
    )
    return {"epoch": request.epoch, "metrics": metrics.__dict__, "focus": focus, "checkpoint_id": checkpoint_id,
            "weights": str(weights)}


def _trained_before(request: EpochRequest) -> recipe.EpochMetrics | None:
    """The epoch's metrics when an earlier try already trained and stored it (its Focus or its record failed after).

    Reusing those files instead of training again keeps the weights recorded at the epoch's URL the ones stored
    there (a device that is not bit-for-bit deterministic would give other bytes, which the store refuses).
    """
    location = checkpoint_path(request.run_dir, request.epoch)
    if not weight_store.exists(location):
        return None
    state = torch.load(weight_store.local_copy(location), map_location="cpu", weights_only=True)
    saved = state.get("metrics") if isinstance(state, dict) else None
    return recipe.EpochMetrics(**saved) if isinstance(saved, dict) else None  # older checkpoints: train again


def _train_and_checkpoint(request: EpochRequest, device: torch.device, dataset: Any) -> recipe.EpochMetrics:
    """Train the epoch from the previous checkpoint; write (or upload) its weights, then its resume checkpoint."""
    params = request.params
    torch.manual_seed(params.seed)
    model = caches.build_model(params.model, params.dataset)
    optimizer_state = None
    if request.epoch > 1:
        previous = weight_store.local_copy(checkpoint_path(request.run_dir, request.epoch - 1))  # URL: downloaded
        state = torch.load(previous, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer_state = state["optimizer"]
    config = recipe.TrainConfig(**{**params.recipe(), "epochs": request.epoch}, device=str(device))
    optimizer = recipe.make_optimizer(model, config)
    (metrics,) = recipe.train_model(
        model, dataset, config, start_epoch=request.epoch - 1, optimizer_state=optimizer_state, optimizer=optimizer
    )
    with _staging(request.run_dir) as folder:
        models.save_weights(model, weights_path(folder, request.epoch))
        models.save_atomically(
            {"model": {k: v.cpu() for k, v in model.state_dict().items()},
             "optimizer": optimizer.state_dict(), "epoch": request.epoch, "metrics": dataclasses.asdict(metrics)},
            checkpoint_path(folder, request.epoch),
        )
        if weight_store.is_url(request.run_dir):  # the weights first: a checkpoint found means its weights are there
            weight_store.upload(weights_path(folder, request.epoch), weights_path(request.run_dir, request.epoch))
            weight_store.upload(checkpoint_path(folder, request.epoch), checkpoint_path(request.run_dir, request.epoch))
    return metrics


def _checkpoint_untrained(request: EpochRequest, device: torch.device, dataset: Any) -> recipe.EpochMetrics:
    """Epoch 0: the model as built (seeded), its weights written (or uploaded) and its validation metrics."""
    torch.manual_seed(request.params.seed)
    model = caches.build_model(request.params.model, request.params.dataset)
    metrics = _untrained_metrics(model, dataset, device)
    with _staging(request.run_dir) as folder:
        models.save_weights(model, weights_path(folder, 0))
        if weight_store.is_url(request.run_dir):
            weight_store.upload(weights_path(folder, 0), weights_path(request.run_dir, 0))
    return metrics


def _untrained_metrics(model: torch.nn.Module, dataset: Any, device: torch.device) -> recipe.EpochMetrics:
    """Epoch 0's metrics: loss and accuracy of the model as built, on the validation split (nothing trained)."""
    started = time.perf_counter()
    model.to(device)
    val_loss, val_accuracy, val_mean_class = recipe.evaluate_accuracy(model, dataset, "val")
    model.cpu()
    return recipe.EpochMetrics(epoch=0, train_loss=math.nan, train_accuracy=math.nan, val_loss=val_loss,
                               val_accuracy=val_accuracy, val_mean_class_accuracy=val_mean_class,
                               seconds=time.perf_counter() - started)


def completed_epochs(engine: Any, training_run_id: int, run_dir: str | Path) -> int:
    """The last epoch ``k`` such that epochs ``1..k`` are all recorded and ``k`` has its checkpoint (file or URL;
    epoch 0, the untrained model, is recorded apart: :func:`train` records it whenever it is missing)."""
    recorded = set(db.training_curve(engine, training_run_id)["epoch"].astype(int))
    done = 0
    while done + 1 in recorded:
        done += 1
    while done > 0 and not weight_store.exists(checkpoint_path(run_dir, done)):
        done -= 1
    return done


@flow(name="train", flow_run_name=named(train_name, TrainParams), validate_parameters=True, persist_result=False)
def train(params: TrainParams = TrainParams()) -> dict[str, Any]:  # noqa: B008 - the form shows the defaults
    """Train a classifier with the paper's recipe, recording every epoch and its Focus.

    Args:
        params: Architecture, data, recipe, the validation mosaic set for Focus, checkpoint
            folder, device and store.

    Returns a dict with the training run id, the epochs trained now (``epochs_run``; whether epoch 0,
    the untrained model, was recorded now: ``untrained_recorded_now``), every epoch's metrics and
    Focus (``epochs``, from epoch 0), the final checkpoint and the Pearson correlation of Focus and
    validation accuracy per method, with and without epoch 0.
    """
    devices.require_device(params.run.device)
    params = with_effective_dataset(params)  # the model's tile size and normalisation (flows.specs)
    engine = store.engine_for(params.run.database_url)
    if params.lineage:  # a lineage holds one model: refused before anything is trained or written
        lineages.check_lineage_spec(engine, params.lineage, params.model, params.dataset)
    mosaic_set: RegisteredMosaics = record.register_mosaics(engine, params.dataset, params.focus_mosaics)
    config_hash = params.config_hash()
    training_run_id = leases.open_training_run(  # held by this run: if it dies, the next sweep marks it crashed
        engine,
        config_hash,
        params.model.architecture,
        {**params.recipe(), "model": params.model.model_dump(mode="json"),
         "dataset": params.dataset.model_dump(mode="json"),
         "focus_methods": [m.model_dump(mode="json") for m in params.focus_methods]},
        name=params.name,
        dataset_id=mosaic_set.dataset_id,
    )
    try:
        return _train_epochs(params, engine, mosaic_set, config_hash, training_run_id)
    except BaseException:
        with contextlib.suppress(Exception):  # the store may be what failed: the original error is the one to see
            db.finish_training_run(engine, training_run_id, status="failed")
        raise


def _train_epochs(
    params: TrainParams, engine: Any, mosaic_set: RegisteredMosaics, config_hash: str, training_run_id: int
) -> dict[str, Any]:
    """The body of :func:`train` once the run is registered: the missing epochs, then the summary."""
    logger = get_run_logger()
    run_dir = run_folder(params.checkpoint_dir, params.name, config_hash)
    if isinstance(run_dir, Path):
        run_dir.mkdir(parents=True, exist_ok=True)
    done = completed_epochs(engine, training_run_id, run_dir)
    if done:
        logger.info(LOG_RESUMED, training_run_id, done, weight_store.redact(checkpoint_path(run_dir, done)))
    untrained = [] if 0 in set(db.training_curve(engine, training_run_id)["epoch"]) else [0]
    epoch_task = train_epoch.with_options(retries=params.run.retries,
                                          retry_delay_seconds=outage_delays(params.run.retries))
    epochs_run = []
    for epoch in untrained + list(range(done + 1, params.epochs + 1)):
        result = epoch_task(EpochRequest(
            params=params, training_run_id=training_run_id, epoch=epoch, run_dir=str(run_dir),
            mosaic_set_id=mosaic_set.mosaic_set_id, manifest_hash=mosaic_set.manifest_hash,
            mosaic_ids=mosaic_set.mosaic_ids, dataset_id=mosaic_set.dataset_id,
        ))
        if epoch:
            epochs_run.append(epoch)
        medians = {m: f["median"] for m, f in result["focus"].items()}
        if epoch:
            logger.info(LOG_EPOCH, epoch, result["metrics"]["val_accuracy"], medians)
        else:
            logger.info(LOG_UNTRAINED, result["metrics"]["val_accuracy"], medians)

    curve = db.training_curve(engine, training_run_id)
    curve = curve[curve["epoch"] <= params.epochs]
    correlation = analysis.focus_accuracy_correlation(engine, training_run_id)
    correlations = analysis.focus_accuracy_correlations(engine, training_run_id)
    final_weights = weights_path(run_dir, params.epochs)
    final_checkpoint, final_sha = record.register_checkpoint(
        engine, params.model.model_copy(update={"weights": str(final_weights)}), params.dataset,
        training_run_id=training_run_id, epoch=params.epochs,
    )
    lineage = None
    if params.lineage:  # every epoch's checkpoint, in epoch order; --audit marks the lineage
        entries = db.register_training_epochs(engine, params.lineage, training_run_id, last_epoch=params.epochs,
                                              audit=True if params.audit else None)
        lineage = {"name": params.lineage, "versions": [e.version for e in entries]}
    elif params.audit:
        db.set_checkpoint_audit(engine, final_checkpoint, True)
    db.finish_training_run(engine, training_run_id)
    same_weights = _same_weights(engine, final_checkpoint, training_run_id)
    if same_weights is not None:
        logger.warning(LOG_SAME_WEIGHTS, same_weights["training_run_id"], same_weights["training_run_name"],
                       same_weights["epoch"], final_checkpoint)

    rows = [_plain(row) for row in curve.to_dict("records")]
    epochs = _epoch_records(rows)
    best_effort(
        create_table_artifact,
        [{k: row.get(k) for k in ("epoch", "method_name", "train_loss", "val_loss", "val_accuracy",
                                  "val_mean_class_accuracy", "focus_median", "focus_mean")} for row in rows],
        key=artifact_key("training", params.name, config_hash[:12]),
        description=f"Training run {params.name}: Pearson r(Focus, val accuracy) = {correlation['r']:.3f} "
                    f"over {correlation['n']} epochs, {correlation['r_without_epoch_0']:.3f} without epoch 0",
    )
    if params.figures_dir and epochs:
        records = [{k: v for k, v in row.items() if k not in ("focus_median", "focus_mean", "focus", "focus_stats")}
                   | {f"focus_{m}": v for m, v in row["focus"].items()} for row in epochs]
        where = [figure_store.save_figure(params.figures_dir, f"training-{params.name}.png",
                                          lambda path: report.plot_training_curves(records, path)),
                 figure_store.save_figure(params.figures_dir, f"focus-vs-metrics-{params.name}.png",
                                          lambda path: report.plot_focus_vs_metrics(records, path))]
        figure_store.show_figures(where, "Training figures")
    return {
        "training_run_id": training_run_id,
        "run_dir": str(run_dir),
        "epochs_run": epochs_run,
        "untrained_recorded_now": bool(untrained),
        "resumed_after": done,
        "epochs": epochs,
        "final_checkpoint_id": final_checkpoint,
        "final_weights": str(final_weights),
        "final_sha256": final_sha,
        "correlation": correlation,
        "correlations": [_plain(r) for r in correlations.to_dict("records")],
        "lineage": lineage,
        "same_weights_as": same_weights,
    }


def _epoch_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per epoch from the long curve: its metrics, ``focus`` ({method: median}), ``focus_stats``
    ({method: {median, n, n_defined, share_undefined}}: every median with its n and undefined share) and the first
    method's ``focus_median``/``focus_mean`` (the run's recorded ones for epochs without evaluations)."""
    epochs: dict[int, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (r["epoch"], r.get("evaluation_id") or 0)):
        record = epochs.get(row["epoch"])
        if record is None:
            record = epochs[row["epoch"]] = {k: v for k, v in row.items() if k not in (
                "evaluation_id", "method_id", "method_name", "focus_n", "focus_n_defined", "focus_q1", "focus_q3")}
            record["focus"], record["focus_stats"] = {}, {}
        if row.get("method_name"):
            record["focus"][row["method_name"]] = row["focus_median"]
            n, defined = row.get("focus_n"), row.get("focus_n_defined")
            record["focus_stats"][row["method_name"]] = {
                "median": row["focus_median"], "n": n, "n_defined": defined,
                "share_undefined": (n - defined) / n if n and defined is not None else None}
    return list(epochs.values())


def _same_weights(engine: Any, checkpoint_id: int, training_run_id: int) -> dict[str, Any] | None:
    """The other training run recorded with this checkpoint when both produced byte-identical weights, else None."""
    origin = db.checkpoint_origin(engine, checkpoint_id)
    return origin if origin is not None and origin["training_run_id"] != training_run_id else None


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, (np.integer,)):
            value = int(value)
        elif isinstance(value, (float, np.floating)):
            value = number(value)
        out[key] = value
    return out
