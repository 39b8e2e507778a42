"""Registering what a run uses (dataset, mosaic set, checkpoint, method, evaluation) in the store.

Every call is idempotent (the store returns the existing row for a natural key), so a flow may
call these on every run; tasks and flows share them.

Examples
--------
>>> inputs = register_inputs(engine, DatasetSpec(), MosaicSetSpec(per_class=2), ModelSpec(weights="w.pt"))
... # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import db
import focus_core
from db import Engine
from flows.worker import caches
from flows.weights import weight_store
from flows.params import (
    DatasetSpec,
    MethodSpec,
    ModelSpec,
    MosaicSetSpec,
    RandomizationSpec,
)
from focus_core import explainers, mosaic_limits
from focus_core.errors import FocusError

__all__ = [
    "RegisteredInputs",
    "RegisteredMosaics",
    "check_recorded_checkpoint",
    "check_request_size",
    "grid_fields",
    "open_evaluation",
    "register_checkpoint",
    "register_inputs",
    "register_mosaics",
]


@dataclass(frozen=True)
class RegisteredMosaics:
    """The dataset and mosaic set of a request, as database ids."""

    dataset_id: int
    mosaic_set_id: int
    manifest_hash: str
    mosaic_ids: list[int]  # in manifest position order


@dataclass(frozen=True)
class RegisteredInputs(RegisteredMosaics):
    """A request's dataset, mosaic set and checkpoint, as database ids."""

    checkpoint_id: int
    checkpoint_sha256: str


def check_request_size(
    dataset_spec: DatasetSpec, mosaic_spec: MosaicSetSpec, limit: int = mosaic_limits.MAX_MOSAICS
) -> int:
    """The number of mosaics the spec asks for (per class x target classes); ``FocusError`` above ``limit``
    (:func:`focus_core.mosaic_limits.check_request_size`), before the manifest is drawn or any row written."""
    classes = mosaic_spec.classes or range(len(caches.load_dataset(dataset_spec).classes))
    return mosaic_limits.check_request_size(mosaic_spec.per_class, len(set(classes)), limit)


def register_mosaics(
    engine: Engine,
    dataset_spec: DatasetSpec,
    mosaic_spec: MosaicSetSpec,
    model: ModelSpec | None = None,
    *,
    max_mosaics: int = mosaic_limits.MAX_MOSAICS,
) -> RegisteredMosaics:
    """Register the dataset with its images and the seeded mosaic set built from it (``model``: the checkpoint
    whose predictions choose a confident set's tiles, :func:`flows.worker.caches.load_manifest`).

    A set of more than ``max_mosaics`` mosaics is refused before anything is written (:func:`check_request_size`).
    """
    check_request_size(dataset_spec, mosaic_spec, max_mosaics)
    dataset = caches.load_dataset(dataset_spec)
    registered = db.register_dataset(
        engine,
        dataset.name,
        dataset.fingerprint,
        dataset.classes,
        dataset.relpaths,
        dataset.labels.numpy(),
        dataset.splits,
        tile_size=int(dataset.tiles.shape[-1]),
        channels=int(dataset.tiles.shape[1]),
    )
    manifest = caches.load_manifest(dataset_spec, mosaic_spec, model)
    table = caches.manifest_tensors(dataset_spec, mosaic_spec, model)  # the chunks' own tensors: converted once
    image_ids = np.asarray(registered.image_ids, dtype=np.int64)[table.indices.numpy()]
    mosaic_set = db.register_mosaic_set(
        engine,
        manifest.hash,
        registered.dataset_id,
        manifest.split,
        manifest.seed,
        manifest.per_class,
        manifest.layout,
        image_ids.reshape(len(manifest.mosaics), -1),  # (M, N²), row-major tiles
        table.targets.numpy(),
        table.masks.numpy(),
        tile_size=int(dataset.tiles.shape[-1]),
        resize=dataset.resize,
        probe=None if manifest.probe is None else manifest.probe.to_dict(),
        **grid_fields(manifest),
    )
    return RegisteredMosaics(registered.dataset_id, mosaic_set.mosaic_set_id, manifest.hash, list(mosaic_set.mosaic_ids))


def grid_fields(manifest: Any) -> dict[str, Any]:
    """The grid fields of a manifest for :func:`db.register_mosaic_set` (2x2 with 2 targets when it has none).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> grid_fields(SimpleNamespace(grid=3, targets=3, confident=0.9, confident_model="ab"))
    {'grid': 3, 'targets': 3, 'confident': 0.9, 'confident_model': 'ab'}
    >>> grid_fields(SimpleNamespace())
    {'grid': 2, 'targets': 2, 'confident': None, 'confident_model': None}
    """
    return {"grid": int(getattr(manifest, "grid", 2)), "targets": int(getattr(manifest, "targets", 2)),
            "confident": getattr(manifest, "confident", None),
            "confident_model": getattr(manifest, "confident_model", None)}


def _checkpoint_shape(model: ModelSpec, dataset_spec: DatasetSpec) -> tuple[int, int]:
    """``(num_classes, in_channels)`` of the spec: its own values, else the dataset's."""
    dataset = caches.load_dataset(dataset_spec)
    return model.num_classes or len(dataset.classes), model.in_channels or int(dataset.tiles.shape[1])


#: (store, sha256, architecture, classes, channels) of the records this process found in agreement.
_AGREED: set[tuple[str, str, str, int, int]] = set()


def check_recorded_checkpoint(
    engine: Engine, model: ModelSpec, dataset_spec: DatasetSpec, sha256: str | None = None
) -> bool:
    """Check that the store's record of the spec's weights file agrees with the spec.

    A weights file is recorded once, by its sha256, with its architecture and class count; asking
    for the same file as another architecture (``--arch alexnet --weights digits.pt``) would
    otherwise reuse the recorded evaluations of the other model. A URL names the bytes recorded with
    it: weights read from a recorded URL must have the recorded sha256 (an object overwritten with
    other bytes is refused, on whichever worker reads it).

    A record that no training run, lineage or stored result pins (every evaluation of it failed before its first
    result, say under a wrong architecture) does not hold the file to its architecture: another one is accepted
    and recorded by :func:`register_checkpoint` once the weights load into it.

    Returns
    -------
    bool
        Whether the file is recorded as the spec says (``False``: not yet, or recorded unproven as another model).

    Raises
    ------
    FocusError
        When the file is recorded with another architecture, class count or channel count, or the
        URL is recorded with other bytes.
    """
    sha = sha256 or caches.weights_sha256(model.weights)
    if weight_store.is_url(model.weights):
        recorded_sha = db.recorded_sha256_at(engine, weight_store.canonical(model.weights, sha))
        if recorded_sha is not None and recorded_sha != sha:
            raise weight_store.mismatch_error(model.weights, sha, recorded_sha)
    num_classes, in_channels = _checkpoint_shape(model, dataset_spec)
    agreed = (str(engine.url), sha, model.architecture, num_classes, in_channels)
    if agreed in _AGREED:  # a record never changes its architecture: checked once per process
        return True
    row = db.recorded_checkpoint(engine, sha)
    if row is None:
        return False
    recorded = (row.architecture, row.num_classes, row.in_channels)
    if (recorded[0], recorded[1]) != (model.architecture, num_classes) or (
        recorded[2] is not None and int(recorded[2]) != in_channels
    ):
        if not row.proven:  # every evaluation of the recorded architecture failed before a result: not pinned
            return False
        channels = "" if recorded[2] is None else f", {recorded[2]} input channel(s)"
        raise FocusError(
            f"The weights file {weight_store.redact(model.weights)!r} is recorded as a {recorded[0]} checkpoint with "
            f"{recorded[1]} classes{channels}, not {model.architecture} with {num_classes} classes and {in_channels} "
            f"input channel(s): pass --arch {recorded[0]} --num-classes {recorded[1]}, or a weights file saved for "
            f"{model.architecture}."
        )
    if row.proven:  # an unproven record may still be recorded again under another architecture
        _AGREED.add(agreed)
    return True



def register_checkpoint(
    engine: Engine,
    model: ModelSpec,
    dataset_spec: DatasetSpec,
    *,
    training_run_id: int | None = None,
    epoch: int | None = None,
    audit: bool = False,
) -> tuple[int, str]:
    """Register the spec's weights by their sha256; return ``(checkpoint_id, sha256)``.

    The record's ``path`` is where the weights live: the URL, or the local path made absolute (a relative
    path means nothing on another worker); a registry alias is recorded as the version whose bytes were read
    (``models:/<name>/<version>``: the alias moves, the version does not). A file seen for the first time is loaded into the spec's
    architecture before it is recorded (so the store never records weights under the wrong
    architecture); a file already recorded must be asked for with the recorded architecture and class count,
    unless its record is unproven (:func:`check_recorded_checkpoint`): then the weights are loaded into the spec's
    architecture and the record takes it.

    Raises
    ------
    FocusError
        When the weights do not fit the architecture, or the record disagrees with the spec.
    """
    sha = caches.weights_sha256(model.weights)
    if not check_recorded_checkpoint(engine, model, dataset_spec, sha):
        caches.checked_model(model, dataset_spec)  # FocusError naming the mismatch when the weights do not fit
    num_classes, in_channels = _checkpoint_shape(model, dataset_spec)
    checkpoint_id = db.register_checkpoint(
        engine,
        sha,
        model.architecture,
        num_classes,
        path=weight_store.canonical(model.weights, sha),
        in_channels=in_channels,
        training_run_id=training_run_id,
        epoch=epoch,
        audit=audit,
        label=model.label,
    )
    return checkpoint_id, sha


def register_inputs(
    engine: Engine,
    dataset_spec: DatasetSpec,
    mosaic_spec: MosaicSetSpec,
    model: ModelSpec,
    *,
    max_mosaics: int = mosaic_limits.MAX_MOSAICS,
    **checkpoint: Any,
) -> RegisteredInputs:
    """Register the dataset, mosaic set and checkpoint of an evaluation request (at most ``max_mosaics`` mosaics)."""
    mosaic_set = register_mosaics(engine, dataset_spec, mosaic_spec, model, max_mosaics=max_mosaics)
    checkpoint_id, sha = register_checkpoint(engine, model, dataset_spec, **checkpoint)
    return RegisteredInputs(**mosaic_set.__dict__, checkpoint_id=checkpoint_id, checkpoint_sha256=sha)


def open_evaluation(
    engine: Engine,
    inputs: RegisteredInputs,
    method: MethodSpec,
    model: ModelSpec,
    randomization: RandomizationSpec,
    *,
    audit_run_id: int | None = None,
    device: str | None = None,
    metadata: dict[str, Any] | None = None,
    precision: str = "fp32",
    grid: int = 2,
    disconnected: bool = False,
) -> tuple[int, str, dict[str, Any]]:
    """Register the method (its explicit parameters) and get or create the evaluation.

    ``grid`` is the mosaic set's tiles per side: a method whose parameters follow it (LIME) is recorded with
    the parameters it runs with (:func:`flows.worker.caches.make_explainer`).

    Relevance computed under bf16 autocast is not the fp32 relevance (Focus differs by up to a
    few hundredths), so a ``precision`` other than fp32 is part of the method's recorded
    parameters: a bf16 run never resumes, or is mistaken for, an fp32 evaluation.

    The method hash stored is the explainer's ``params_hash`` (the store checks it against its own
    computation). Under bf16 the recorded parameters are the explainer's plus ``precision``, which the
    explainer knows nothing of, so the hash is :func:`focus_core.explainers.params_hash` of those
    parameters: the same function the explainer's hash comes from, over what is recorded.

    The disconnected setting (each tile through the feature extractor on its own) changes the relevance the same
    way, so ``disconnected`` is recorded as ``"disconnected": true`` among the method's parameters (GradCAM's layer
    is then the laid-out tile maps unless one is named): the evaluation's key differs from the connected one's, and
    every query that tells methods apart tells the two settings apart. Off, nothing is added.

    Returns
    -------
    tuple
        ``(evaluation_id, method name, explicit method parameters)``.
    """
    explainer = caches.make_explainer(method, model, grid=grid, disconnected=disconnected)
    extra = ({"precision": precision} if precision != "fp32" else {}) | ({"disconnected": True} if disconnected else {})
    if not extra:
        method_params, method_hash = dict(explainer.params), explainer.params_hash
    else:
        method_params = {**explainer.params, **extra}
        method_hash = explainers.params_hash(explainer.name, method_params)
    method_id = db.register_method(engine, explainer.name, method_params, params_hash=method_hash)
    evaluation_id = db.get_or_create_evaluation(
        engine,
        inputs.checkpoint_id,
        method_id,
        inputs.mosaic_set_id,
        randomization=randomization.kind,
        stage=randomization.stage,
        layer=randomization.layer,
        seed=None if randomization.kind == "none" else randomization.seed,
        audit_run_id=audit_run_id,
        code_version=focus_core.__version__,
        device=device,
        metadata=metadata,
    )
    return evaluation_id, explainer.name, method_params
