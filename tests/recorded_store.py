"""A small, real record of focus-audit's store, shared by the tests that read a store.

It trains a digits CNN on 16x16 tiles for three epochs (seconds on the CPU), scores real Focus
with GradCAM, LRP and the random control on seeded mosaic sets (trained, fully random,
cascading stages, two fixed layouts, per-epoch validation), and writes it all through the
``db`` write API, with two audit runs of the final checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import db
from flows.worker import store
from flows.params import DatasetSpec
from focus_core import data, explainers, metric, models, mosaics, randomize, train

__all__ = ["EPOCHS", "METHODS", "TILE_SIZE", "Record", "Scored", "build_record", "write_record"]

METHODS = ("gradcam", "lrp", "random")
EPOCHS = 3  # Pearson r needs three epochs
TILE_SIZE = 16  # 32x32 mosaics: three epochs train in seconds on a busy CPU


@dataclass
class Scored:
    """One evaluation's inputs (names, not ids) and its real per-mosaic results."""

    checkpoint: str  # key into Record.checkpoints
    method: str
    mosaic_set: str  # key into Record.manifests
    randomization: str = "none"
    stage: int | None = None
    layer: str | None = None
    sums: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 2)))
    focus: np.ndarray = field(default_factory=lambda: np.zeros(0))
    predicted: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    finished: bool = True


@dataclass
class Record:
    dataset: data.TileDataset
    manifests: dict[str, mosaics.MosaicManifest]
    checkpoints: dict[str, tuple[str, int]]  # name -> (weights path, epoch)
    epochs: list[train.EpochMetrics]
    scored: list[Scored]


def _score(model: torch.nn.Module, dataset: data.TileDataset, manifest: mosaics.MosaicManifest, method: str):
    x = mosaics.compose_normalized(dataset.tiles, manifest.index_tensor(), dataset)  # as the flows compose
    y = manifest.target_classes()
    relevance = explainers.get_explainer(method)(model, x, y).detach()
    sums = metric.quadrant_sums(relevance)
    focus = metric.focus_from_sums(sums, mosaics.target_mask(manifest))
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    return sums.double().numpy(), focus.double().numpy(), predicted.numpy()


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_record(folder: Path) -> Record:
    """Train, score and collect the record; weights files go to ``folder``."""
    torch.manual_seed(0)
    dataset = data.load_digits(seed=0, tile_size=TILE_SIZE)
    manifests = {
        "test": mosaics.build_manifest(dataset, "test", per_class=3, seed=0),
        "val": mosaics.build_manifest(dataset, "val", per_class=2, seed=0),
        "top": mosaics.build_manifest(dataset, "test", per_class=2, seed=1, layout="top"),
        "diagonal": mosaics.build_manifest(dataset, "test", per_class=2, seed=1, layout="diagonal"),
    }
    checkpoints: dict[str, tuple[str, int]] = {}
    scored: list[Scored] = []

    def on_epoch(metrics: train.EpochMetrics, model: torch.nn.Module) -> None:
        path = folder / f"epoch-{metrics.epoch}.pt"
        models.save_weights(model, path)
        checkpoints[f"epoch{metrics.epoch}"] = (str(path), metrics.epoch)
        frozen = _frozen(models.load_weights(models.build_model("digits_cnn", 10, 1), path))
        scored.append(Scored(f"epoch{metrics.epoch}", "gradcam", "val",
                             **dict(zip(("sums", "focus", "predicted"), _score(frozen, dataset, manifests["val"], "gradcam")))))

    model = models.build_model("digits_cnn", num_classes=10, in_channels=1)
    config = train.TrainConfig(epochs=EPOCHS, batch_size=128, lr=5e-3, rotation=15.0, crop_padding=1, hflip=False, seed=0)
    epochs = train.train_model(model, dataset, config, on_epoch=on_epoch)
    final = f"epoch{epochs[-1].epoch}"
    trained = _frozen(models.load_weights(models.build_model("digits_cnn", 10, 1), checkpoints[final][0]))

    def add(model_: torch.nn.Module, method: str, mosaic_set: str, **kind: Any) -> None:
        result = _score(model_, dataset, manifests[mosaic_set], method)
        scored.append(Scored(final, method, mosaic_set, **kind, **dict(zip(("sums", "focus", "predicted"), result))))

    for method in METHODS:
        add(trained, method, "test")
    for method in ("gradcam", "lrp"):
        add(_frozen(randomize.randomize_full(trained, seed=0)), method, "test", randomization="full")
    for stage, layer in enumerate(randomize.cascading_stages(trained)):
        add(_frozen(randomize.randomize_cascading(trained, stage, seed=0)), "gradcam", "test",
            randomization="cascading", stage=stage, layer=layer)
    for layout in ("top", "diagonal"):
        add(trained, "gradcam", layout)
    unfinished = Scored(final, "lrp", "val", **dict(zip(("sums", "focus", "predicted"),
                                                       _score(trained, dataset, manifests["val"], "lrp"))))
    unfinished.finished = False
    scored.append(unfinished)
    return Record(dataset, manifests, checkpoints, epochs, scored)


def write_record(url: str, record: Record, *, audits: bool = False) -> dict[str, Any]:
    """Write the record through the db write API; returns the ids the tests need.

    With ``audits``, two nightly audit runs of the final checkpoint follow (GradCAM on the test
    mosaics): the first with the trained model's scores, the second with the fully random
    model's, as if the weights served under that checkpoint had been broken overnight.
    """
    engine = store.engine_for(url)
    ds = record.dataset
    registered = db.register_dataset(engine, ds.name, ds.fingerprint, ds.classes, ds.relpaths, ds.labels.numpy(),
                                     ds.splits, tile_size=ds.tile_size, channels=1)
    image_ids = np.asarray(registered.image_ids, dtype=np.int64)
    sets = {}
    for name, manifest in record.manifests.items():
        sets[name] = db.register_mosaic_set(
            engine, manifest.hash, registered.dataset_id, manifest.split, manifest.seed, manifest.per_class,
            manifest.layout, image_ids[manifest.index_tensor().numpy()], manifest.target_classes().numpy(),
            mosaics.target_mask(manifest).numpy(), tile_size=ds.tile_size)
    run_id = db.register_training_run(engine, "c" * 64, "digits_cnn", {"epochs": EPOCHS, "focus_methods": [{"name": "gradcam"}]},
                                      name="demo-digits", dataset_id=registered.dataset_id)  # as the demo
    checkpoint_ids = {}
    for name, (path, epoch) in record.checkpoints.items():
        checkpoint_ids[name] = db.register_checkpoint(engine, models.weights_sha256(path), "digits_cnn", 10, path=path,
                                                      in_channels=1, training_run_id=run_id, epoch=epoch)
    request = {"dataset": DatasetSpec(tile_size=TILE_SIZE).model_dump(mode="json")}
    evaluation_ids, unfinished = [], []
    for item in record.scored:
        explainer = explainers.get_explainer(item.method)
        method_id = db.register_method(engine, explainer.name, dict(explainer.params))
        evaluation_id = db.get_or_create_evaluation(
            engine, checkpoint_ids[item.checkpoint], method_id, sets[item.mosaic_set].mosaic_set_id,
            randomization=item.randomization, stage=item.stage, layer=item.layer, metadata={"request": request})
        db.start_evaluation(engine, evaluation_id)
        ids = sets[item.mosaic_set].mosaic_ids
        count = len(ids) if item.finished else 5
        db.write_mosaic_results(engine, evaluation_id, ids[:count], item.sums[:count], item.focus[:count],
                                item.predicted[:count])
        if item.finished:
            db.finish_evaluation(engine, evaluation_id)
            evaluation_ids.append(evaluation_id)
        else:
            unfinished.append(evaluation_id)
    for metrics in record.epochs:
        focus = next(s.focus for s in record.scored if s.checkpoint == f"epoch{metrics.epoch}" and s.mosaic_set == "val")
        db.record_epoch(engine, run_id, metrics.epoch, train_loss=metrics.train_loss,
                        train_accuracy=metrics.train_accuracy, val_loss=metrics.val_loss,
                        val_accuracy=metrics.val_accuracy, val_mean_class_accuracy=metrics.val_mean_class_accuracy,
                        focus_median=float(np.nanmedian(focus)), seconds=metrics.seconds)
    db.finish_training_run(engine, run_id)
    ids = {"finished": evaluation_ids, "unfinished": unfinished, "run_id": run_id}
    if audits:
        final = max(record.checkpoints, key=lambda name: record.checkpoints[name][1])
        ids["audits"] = _write_audits(engine, record, checkpoint_ids[final], sets["test"])
    return ids


def _write_audits(engine: Any, record: Record, checkpoint_id: int, mosaic_set: Any) -> list[int]:
    trained, broken = (
        next(s for s in record.scored if s.method == "gradcam" and s.mosaic_set == "test" and s.randomization == kind)
        for kind in ("none", "full")
    )
    explainer = explainers.get_explainer("gradcam")
    method_id = db.register_method(engine, explainer.name, dict(explainer.params))
    audit_ids = []
    db.set_checkpoint_audit(engine, checkpoint_id, True)  # marked for the nightly audit, as the demo's final one
    for night, scored in enumerate((trained, broken), start=1):
        audit_id = db.start_audit_run(engine, name=f"nightly-{night}", threshold=0.05)
        evaluation_id = db.get_or_create_evaluation(
            engine, checkpoint_id, method_id, mosaic_set.mosaic_set_id, audit_run_id=audit_id
        )
        db.start_evaluation(engine, evaluation_id)
        db.write_mosaic_results(engine, evaluation_id, mosaic_set.mosaic_ids, scored.sums, scored.focus,
                                scored.predicted)
        db.finish_evaluation(engine, evaluation_id)
        db.finish_audit_run(engine, audit_id)
        audit_ids.append(audit_id)
    return audit_ids


