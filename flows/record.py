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
from sqlalchemy.engine import Engine

import db
import focus_core
from flows import resources
from flows.params import DatasetSpec, MethodSpec, ModelSpec, MosaicSetSpec, RandomizationSpec
from focus_core import models, mosaics

__all__ = ["RegisteredMosaics", "RegisteredInputs", "register_mosaics", "register_checkpoint", "register_inputs",
           "open_evaluation"]


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


def register_mosaics(engine: Engine, dataset_spec: DatasetSpec, mosaic_spec: MosaicSetSpec) -> RegisteredMosaics:
    """Register the dataset with its images and the seeded mosaic set built from it."""
    dataset = resources.load_dataset(dataset_spec)
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
    manifest = resources.load_manifest(dataset_spec, mosaic_spec)
    image_ids = np.asarray(registered.image_ids, dtype=np.int64)[manifest.index_tensor().numpy()]
    mosaic_set = db.register_mosaic_set(
        engine,
        manifest.hash,
        registered.dataset_id,
        manifest.split,
        manifest.seed,
        manifest.per_class,
        manifest.layout,
        image_ids.reshape(-1, 4),
        manifest.targets().numpy(),
        mosaics.target_mask(manifest).numpy(),
        tile_size=int(dataset.tiles.shape[-1]),
    )
    return RegisteredMosaics(registered.dataset_id, mosaic_set.mosaic_set_id, manifest.hash, list(mosaic_set.mosaic_ids))


def register_checkpoint(
    engine: Engine,
    model: ModelSpec,
    dataset_spec: DatasetSpec,
    *,
    training_run_id: int | None = None,
    epoch: int | None = None,
    audit: bool = False,
) -> tuple[int, str]:
    """Register the spec's weights file by its sha256; return ``(checkpoint_id, sha256)``."""
    dataset = resources.load_dataset(dataset_spec)
    sha = models.weights_sha256(model.weights)
    checkpoint_id = db.register_checkpoint(
        engine,
        sha,
        model.architecture,
        model.num_classes or len(dataset.classes),
        path=str(model.weights),
        in_channels=model.in_channels or int(dataset.tiles.shape[1]),
        training_run_id=training_run_id,
        epoch=epoch,
        audit=audit,
        label=model.label,
    )
    return checkpoint_id, sha


def register_inputs(
    engine: Engine, dataset_spec: DatasetSpec, mosaic_spec: MosaicSetSpec, model: ModelSpec, **checkpoint: Any
) -> RegisteredInputs:
    """Register the dataset, mosaic set and checkpoint of an evaluation request."""
    mosaic_set = register_mosaics(engine, dataset_spec, mosaic_spec)
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
) -> tuple[int, str, dict[str, Any]]:
    """Register the method (its explicit parameters) and get or create the evaluation.

    Returns
    -------
    tuple
        ``(evaluation_id, method name, explicit method parameters)``.
    """
    explainer = resources.make_explainer(method, model)
    method_id = db.register_method(engine, explainer.name, dict(explainer.params))
    evaluation_id = db.get_or_create_evaluation(
        engine,
        inputs.checkpoint_id,
        method_id,
        inputs.mosaic_set_id,
        randomization=randomization.kind,
        stage=randomization.stage,
        layer=randomization.layer,
        audit_run_id=audit_run_id,
        code_version=focus_core.__version__,
        device=device,
        metadata=metadata,
    )
    return evaluation_id, explainer.name, dict(explainer.params)
