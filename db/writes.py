"""Writes to the results store: idempotent registrations and bulk, atomic result chunks.

Every function takes an ``Engine`` (it runs in its own transaction) or a ``Connection`` (it
joins the caller's transaction inside a savepoint; the caller commits). Inputs are plain Python
and numpy types: this module imports neither torch nor focus_core.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

import numpy as np
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from db.errors import StoreError
from db.models import (
    EVALUATION_STATUSES,
    RANDOMIZATIONS,
    SPLITS,
    AuditRun,
    Dataset,
    Evaluation,
    Image,
    ModelCheckpoint,
    Mosaic,
    MosaicSet,
    TrainingEpoch,
    TrainingRun,
    XaiMethod,
)
from db.types import utcnow

__all__ = [
    "Store",
    "RegisteredDataset",
    "RegisteredMosaicSet",
    "canonical_hash",
    "params_hash",
    "evaluation_key",
    "register_dataset",
    "register_checkpoint",
    "set_checkpoint_audit",
    "register_mosaic_set",
    "register_method",
    "register_training_run",
    "record_epoch",
    "finish_training_run",
    "start_audit_run",
    "finish_audit_run",
    "get_or_create_evaluation",
    "start_evaluation",
    "finish_evaluation",
    "write_mosaic_results",
    "finished_mosaic_ids",
]

Store = Engine | Connection
T = TypeVar("T")
_TWO_BIT_MASKS = frozenset({3, 5, 6, 9, 10, 12})
_RESULT_COLUMNS = (
    "pos_tl", "pos_tr", "pos_bl", "pos_br", "neg_tl", "neg_tr", "neg_bl", "neg_br", "focus", "predicted_class",
)  # fmt: skip


class RegisteredDataset(NamedTuple):
    """The dataset's id and its image ids, aligned with the image order given at registration."""

    dataset_id: int
    image_ids: list[int]


class RegisteredMosaicSet(NamedTuple):
    """The mosaic set's id and its mosaic ids in manifest position order."""

    mosaic_set_id: int
    mosaic_ids: list[int]


# --------------------------------------------------------------------------- helpers


@contextmanager
def _transaction(store: Store) -> Iterator[Connection]:
    if isinstance(store, Engine):
        with store.begin() as connection:
            yield connection
    elif store.in_transaction():
        with store.begin_nested():
            yield store
    else:
        with store.begin():
            yield store


def _idempotent(store: Store, work: Callable[[Connection], T]) -> T:
    """Run ``work`` in a transaction; after a unique-key race, run it once more (it then finds the row)."""
    try:
        with _transaction(store) as connection:
            return work(connection)
    except IntegrityError:
        if not isinstance(store, Engine):
            raise
        with _transaction(store) as connection:
            return work(connection)


def _reason(exc: BaseException) -> str:
    lines = str(getattr(exc, "orig", exc)).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(exc).__name__


def canonical_hash(value: Any) -> str:
    """sha256 of the canonical JSON of ``value`` (sorted keys, no spaces, no NaN).

    Examples
    --------
    >>> canonical_hash({"b": 1, "a": [1, 2]}) == canonical_hash({"a": [1, 2], "b": 1})
    True
    """
    try:
        payload = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"Expected JSON-serialisable values without NaN but got {value!r} ({exc}).") from None
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def params_hash(name: str, params: dict[str, Any]) -> str:
    """The natural key of an attribution method: sha256 of the canonical JSON of ``{name, params}``.

    Examples
    --------
    >>> len(params_hash("gradcam", {"layer": None}))
    64
    """
    return canonical_hash({"name": name, "params": params})


def evaluation_key(
    checkpoint_id: int,
    method_id: int,
    mosaic_set_id: int,
    randomization: str = "none",
    stage: int | None = None,
    layer: str | None = None,
    audit_run_id: int | None = None,
) -> str:
    """The natural key of an evaluation: sha256 of its identifying components.

    Examples
    --------
    >>> evaluation_key(1, 2, 3) == evaluation_key(1, 2, 3, "none")
    True
    """
    return canonical_hash(
        {
            "checkpoint": int(checkpoint_id),
            "method": int(method_id),
            "mosaic_set": int(mosaic_set_id),
            "randomization": randomization,
            "stage": None if stage is None else int(stage),
            "layer": layer,
            "audit_run": None if audit_run_id is None else int(audit_run_id),
        }
    )


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise StoreError(f"Expected split to be one of {SPLITS} but got {split!r}.")


def _upsert(connection: Connection):  # noqa: ANN202 - dialect-specific insert
    return (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)


# --------------------------------------------------------------------------- datasets


def register_dataset(
    store: Store,
    name: str,
    fingerprint: str,
    classes: Sequence[str],
    relpaths: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    splits: Sequence[str],
    *,
    tile_size: int | None = None,
    channels: int | None = None,
) -> RegisteredDataset:
    """Register a dataset and its images, or return the one already registered with ``fingerprint``.

    Parameters
    ----------
    store
        Engine or connection.
    name, fingerprint
        Dataset name and its stable content hash (the natural key).
    classes
        Class names; ``labels`` index into them.
    relpaths, labels, splits
        One entry per image, in dataset order (the image's ``position``).

    Returns
    -------
    RegisteredDataset
        ``dataset_id`` and ``image_ids[i]`` for the image at ``relpaths[i]``.

    Examples
    --------
    >>> ds = register_dataset(engine, "digits", "f" * 64, ["0", "1"], ["a", "b"], [0, 1], ["test", "test"])
    ... # doctest: +SKIP
    """
    relpaths = [str(r) for r in relpaths]
    labels_list = [int(x) for x in np.asarray(labels).reshape(-1)]
    splits = [str(s) for s in splits]
    if not (len(relpaths) == len(labels_list) == len(splits)):
        raise StoreError(
            f"Expected relpaths, labels and splits of equal length but got {len(relpaths)}, "
            f"{len(labels_list)}, {len(splits)}."
        )
    if len(set(relpaths)) != len(relpaths):
        raise StoreError(f"Expected unique relpaths in dataset {name!r} but some repeat.")
    for split in set(splits):
        _check_split(split)
    bad = [x for x in labels_list if not 0 <= x < len(classes)]
    if bad:
        raise StoreError(f"Expected labels in [0, {len(classes)}) but got {bad[0]}.")

    def work(connection: Connection) -> RegisteredDataset:
        existing = connection.scalar(select(Dataset.id).where(Dataset.fingerprint == fingerprint))
        if existing is not None:
            rows = connection.execute(select(Image.relpath, Image.id).where(Image.dataset_id == existing)).all()
            by_path = dict(rows)
            if len(by_path) != len(relpaths) or any(r not in by_path for r in relpaths):
                raise StoreError(
                    f"Dataset fingerprint {fingerprint[:12]} is registered with other images; "
                    f"compute the fingerprint from the images you pass."
                )
            return RegisteredDataset(existing, [by_path[r] for r in relpaths])
        dataset_id = connection.scalar(
            insert(Dataset)
            .values(
                name=name,
                fingerprint=fingerprint,
                classes=[str(c) for c in classes],
                num_images=len(relpaths),
                tile_size=tile_size,
                channels=channels,
            )
            .returning(Dataset.id)
        )
        image_ids: list[int] = []
        if relpaths:
            rows = [
                {"dataset_id": dataset_id, "position": i, "relpath": r, "label": y, "split": s}
                for i, (r, y, s) in enumerate(zip(relpaths, labels_list, splits, strict=True))
            ]
            connection.execute(insert(Image), rows)
            image_ids = list(
                connection.scalars(
                    select(Image.id).where(Image.dataset_id == dataset_id).order_by(Image.position)
                )
            )
        return RegisteredDataset(dataset_id, image_ids)

    return _idempotent(store, work)


# --------------------------------------------------------------------------- checkpoints and methods


def register_checkpoint(
    store: Store,
    sha256: str,
    architecture: str,
    num_classes: int,
    *,
    path: str | None = None,
    in_channels: int | None = None,
    training_run_id: int | None = None,
    epoch: int | None = None,
    audit: bool = False,
    label: str | None = None,
) -> int:
    """Register a weights file by its sha256 and return its id (the existing one on a second call).

    Examples
    --------
    >>> register_checkpoint(engine, "ab" * 32, "digits_cnn", 10, path="w.pt")  # doctest: +SKIP
    1
    """
    if len(sha256) != 64:
        raise StoreError(f"Expected a 64-character sha256 hex digest but got {sha256!r}.")

    def work(connection: Connection) -> int:
        existing = connection.scalar(select(ModelCheckpoint.id).where(ModelCheckpoint.sha256 == sha256))
        if existing is not None:
            return existing
        return connection.scalar(
            insert(ModelCheckpoint)
            .values(
                sha256=sha256,
                architecture=architecture,
                num_classes=int(num_classes),
                in_channels=in_channels,
                path=None if path is None else str(path),
                training_run_id=training_run_id,
                epoch=epoch,
                audit=bool(audit),
                label=label,
            )
            .returning(ModelCheckpoint.id)
        )

    return _idempotent(store, work)


def set_checkpoint_audit(store: Store, checkpoint_id: int, audit: bool = True, label: str | None = None) -> None:
    """Mark (or unmark) a checkpoint for the nightly audit, optionally setting its label."""
    values: dict[str, Any] = {"audit": bool(audit)}
    if label is not None:
        values["label"] = label
    with _transaction(store) as connection:
        result = connection.execute(update(ModelCheckpoint).where(ModelCheckpoint.id == checkpoint_id).values(values))
        if result.rowcount != 1:
            raise StoreError(f"No checkpoint with id {checkpoint_id}; register it first.")


def register_method(store: Store, name: str, params: dict[str, Any]) -> int:
    """Register an attribution method with explicit parameters and return its id.

    The natural key is ``params_hash(name, params)``; the same name and parameters, in any key
    order, return the same id.
    """
    key = params_hash(name, params)

    def work(connection: Connection) -> int:
        existing = connection.scalar(select(XaiMethod.id).where(XaiMethod.params_hash == key))
        if existing is not None:
            return existing
        return connection.scalar(
            insert(XaiMethod).values(name=name, params=params, params_hash=key).returning(XaiMethod.id)
        )

    return _idempotent(store, work)


# --------------------------------------------------------------------------- mosaic sets


def _masks(target_masks: Sequence[Any] | np.ndarray, m: int) -> list[int]:
    arr = np.asarray(target_masks)
    if arr.ndim == 2 and arr.shape == (m, 4):
        bits = (arr.astype(bool).astype(np.int64) * np.array([1, 2, 4, 8])).sum(axis=1)
    elif arr.shape == (m,):
        bits = arr.astype(np.int64)
    else:
        raise StoreError(f"Expected target_masks of shape ({m}, 4) bool or ({m},) int but got {arr.shape}.")
    bad = [int(b) for b in bits if int(b) not in _TWO_BIT_MASKS]
    if bad:
        raise StoreError(f"Expected every mosaic to have exactly two target quadrants but got the bitmask {bad[0]}.")
    return [int(b) for b in bits]


def register_mosaic_set(
    store: Store,
    manifest_hash: str,
    dataset_id: int,
    split: str,
    seed: int,
    per_class: int,
    layout: str,
    image_ids: Sequence[Sequence[int]] | np.ndarray,
    target_classes: Sequence[int] | np.ndarray,
    target_masks: Sequence[Any] | np.ndarray,
    *,
    tile_size: int | None = None,
) -> RegisteredMosaicSet:
    """Register a mosaic set and its mosaics, or return the one registered with ``manifest_hash``.

    Parameters
    ----------
    image_ids
        ``(M, 4)`` database image ids (from ``register_dataset``) in TL, TR, BL, BR order.
    target_classes
        ``(M,)`` target class of each mosaic.
    target_masks
        ``(M, 4)`` bool (True where a quadrant holds a target tile) or ``(M,)`` bitmasks
        (bit ``q`` for quadrant ``q``); exactly two target quadrants per mosaic.

    Raises
    ------
    StoreError
        When a tile is not an image of ``dataset_id`` in ``split`` (mosaics must use images the
        model never trained on), or the shapes disagree. Nothing is written then.
    """
    _check_split(split)
    ids = np.asarray(image_ids, dtype=np.int64)
    m = ids.shape[0] if ids.ndim == 2 else -1
    if ids.ndim != 2 or ids.shape[1] != 4:
        raise StoreError(f"Expected image_ids of shape (M, 4) but got {ids.shape}.")
    classes = np.asarray(target_classes, dtype=np.int64).reshape(-1)
    if classes.shape != (m,):
        raise StoreError(f"Expected target_classes of shape ({m},) but got {classes.shape}.")
    masks = _masks(target_masks, m)

    def work(connection: Connection) -> RegisteredMosaicSet:
        existing = connection.scalar(select(MosaicSet.id).where(MosaicSet.manifest_hash == manifest_hash))
        if existing is not None:
            mosaic_ids = connection.scalars(
                select(Mosaic.id).where(Mosaic.mosaic_set_id == existing).order_by(Mosaic.position)
            ).all()
            return RegisteredMosaicSet(existing, list(mosaic_ids))
        set_id = connection.scalar(
            insert(MosaicSet)
            .values(
                manifest_hash=manifest_hash,
                dataset_id=dataset_id,
                split=split,
                seed=int(seed),
                per_class=int(per_class),
                layout=layout,
                tile_size=tile_size,
                num_mosaics=m,
            )
            .returning(MosaicSet.id)
        )
        if m == 0:
            return RegisteredMosaicSet(set_id, [])
        rows = [
            {
                "mosaic_set_id": set_id,
                "position": i,
                "image_tl": int(row[0]),
                "image_tr": int(row[1]),
                "image_bl": int(row[2]),
                "image_br": int(row[3]),
                "target_class": int(c),
                "target_mask": mask,
            }
            for i, (row, c, mask) in enumerate(zip(ids.tolist(), classes.tolist(), masks, strict=True))
        ]
        connection.execute(insert(Mosaic), rows)
        mosaic_ids = list(
            connection.scalars(select(Mosaic.id).where(Mosaic.mosaic_set_id == set_id).order_by(Mosaic.position))
        )
        wrong = connection.execute(
            text(
                "SELECT COUNT(*) FROM mosaic m JOIN image i "
                "ON i.id IN (m.image_tl, m.image_tr, m.image_bl, m.image_br) "
                "WHERE m.mosaic_set_id = :set_id AND (i.dataset_id <> :dataset_id OR i.split <> :split)"
            ),
            {"set_id": set_id, "dataset_id": dataset_id, "split": split},
        ).scalar_one()
        if wrong:
            raise StoreError(
                f"{wrong} tiles of mosaic set {manifest_hash[:12]} are not {split!r} images of dataset {dataset_id}; "
                f"build the mosaics from that split only."
            )
        return RegisteredMosaicSet(set_id, mosaic_ids)

    try:
        return _idempotent(store, work)
    except IntegrityError as exc:
        raise StoreError(f"Cannot register mosaic set {manifest_hash[:12]} ({_reason(exc)}); "
                         f"register its dataset and images first.") from None


# --------------------------------------------------------------------------- training


def register_training_run(
    store: Store,
    config_hash: str,
    architecture: str,
    config: dict[str, Any],
    *,
    name: str | None = None,
    dataset_id: int | None = None,
) -> int:
    """Register a training run by the hash of its configuration and return its id (existing on a rerun)."""

    def work(connection: Connection) -> int:
        existing = connection.scalar(select(TrainingRun.id).where(TrainingRun.config_hash == config_hash))
        if existing is not None:
            return existing
        return connection.scalar(
            insert(TrainingRun)
            .values(config_hash=config_hash, architecture=architecture, config=config, name=name, dataset_id=dataset_id)
            .returning(TrainingRun.id)
        )

    return _idempotent(store, work)


def _opt_float(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def record_epoch(
    store: Store,
    training_run_id: int,
    epoch: int,
    *,
    train_loss: float | None = None,
    train_accuracy: float | None = None,
    val_loss: float | None = None,
    val_accuracy: float | None = None,
    val_mean_class_accuracy: float | None = None,
    focus_median: float | None = None,
    focus_mean: float | None = None,
    seconds: float | None = None,
) -> None:
    """Record (insert or replace) the metrics of one epoch; NaN is stored as NULL."""
    values = {
        "train_loss": _opt_float(train_loss),
        "train_accuracy": _opt_float(train_accuracy),
        "val_loss": _opt_float(val_loss),
        "val_accuracy": _opt_float(val_accuracy),
        "val_mean_class_accuracy": _opt_float(val_mean_class_accuracy),
        "focus_median": _opt_float(focus_median),
        "focus_mean": _opt_float(focus_mean),
        "seconds": _opt_float(seconds),
        "recorded_at": utcnow(),
    }
    with _transaction(store) as connection:
        stmt = _upsert(connection)(TrainingEpoch).values(training_run_id=training_run_id, epoch=int(epoch), **values)
        stmt = stmt.on_conflict_do_update(index_elements=["training_run_id", "epoch"], set_=values)
        try:
            connection.execute(stmt)
        except IntegrityError as exc:
            raise StoreError(f"Cannot record epoch {epoch} ({_reason(exc)}); register the training run first.") from None


def finish_training_run(store: Store, training_run_id: int, status: str = "finished") -> None:
    """Set a training run's final status and finish time."""
    with _transaction(store) as connection:
        connection.execute(
            update(TrainingRun)
            .where(TrainingRun.id == training_run_id)
            .values(status=status, finished_at=utcnow())
        )


# --------------------------------------------------------------------------- audits


def start_audit_run(
    store: Store,
    *,
    name: str | None = None,
    threshold: float | None = None,
    metadata: dict[str, Any] | None = None,
    started_at: dt.datetime | None = None,
) -> int:
    """Open an audit run and return its id."""
    with _transaction(store) as connection:
        return connection.scalar(
            insert(AuditRun)
            .values(name=name, threshold=threshold, metadata_=metadata, started_at=started_at or utcnow())
            .returning(AuditRun.id)
        )


def finish_audit_run(
    store: Store, audit_run_id: int, status: str = "finished", metadata: dict[str, Any] | None = None
) -> None:
    """Close an audit run with its status (and, optionally, replace its metadata)."""
    values: dict[str, Any] = {"status": status, "finished_at": utcnow()}
    if metadata is not None:
        values["metadata_"] = metadata
    with _transaction(store) as connection:
        connection.execute(update(AuditRun).where(AuditRun.id == audit_run_id).values(values))


# --------------------------------------------------------------------------- evaluations


def get_or_create_evaluation(
    store: Store,
    checkpoint_id: int,
    method_id: int,
    mosaic_set_id: int,
    *,
    randomization: str = "none",
    stage: int | None = None,
    layer: str | None = None,
    audit_run_id: int | None = None,
    code_version: str | None = None,
    device: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> int:
    """Return the id of the evaluation with this natural key, creating it (status ``pending``) if new.

    The natural key is checkpoint x method x mosaic set x randomization (kind, stage, layer) x
    audit run; see ``evaluation_key``.
    """
    if randomization not in RANDOMIZATIONS:
        raise StoreError(f"Expected randomization to be one of {RANDOMIZATIONS} but got {randomization!r}.")
    key = evaluation_key(checkpoint_id, method_id, mosaic_set_id, randomization, stage, layer, audit_run_id)

    def work(connection: Connection) -> int:
        existing = connection.scalar(select(Evaluation.id).where(Evaluation.natural_key == key))
        if existing is not None:
            return existing
        return connection.scalar(
            insert(Evaluation)
            .values(
                natural_key=key,
                checkpoint_id=checkpoint_id,
                method_id=method_id,
                mosaic_set_id=mosaic_set_id,
                randomization=randomization,
                stage=stage,
                layer=layer,
                audit_run_id=audit_run_id,
                code_version=code_version,
                device=device,
                metadata_=metadata,
            )
            .returning(Evaluation.id)
        )

    try:
        return _idempotent(store, work)
    except IntegrityError as exc:
        raise StoreError(
            f"Cannot create the evaluation ({_reason(exc)}); register its checkpoint, method and mosaic set first."
        ) from None


def start_evaluation(
    store: Store, evaluation_id: int, *, code_version: str | None = None, device: str | None = None
) -> None:
    """Mark an evaluation as running (its first start time is kept across retries)."""
    values: dict[str, Any] = {"status": "running"}
    if code_version is not None:
        values["code_version"] = code_version
    if device is not None:
        values["device"] = device
    with _transaction(store) as connection:
        result = connection.execute(
            update(Evaluation)
            .where(Evaluation.id == evaluation_id)
            .values(started_at=func.coalesce(Evaluation.started_at, utcnow()), **values)
        )
        if result.rowcount != 1:
            raise StoreError(f"No evaluation with id {evaluation_id}; create it with get_or_create_evaluation.")


def finish_evaluation(
    store: Store,
    evaluation_id: int,
    *,
    status: str = "finished",
    summary: dict[str, Any] | None = None,
    seconds: float | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Close an evaluation: status, finish time, seconds and summary columns.

    Parameters
    ----------
    summary
        ``n``, ``n_defined``, ``median``, ``mean`` (as from ``focus_core.stats.summarize``); ``None``
        computes them in the database from the rows written (the ``evaluation_summary`` view).

    Returns
    -------
    dict
        The summary stored.
    """
    if status not in EVALUATION_STATUSES:
        raise StoreError(f"Expected status to be one of {EVALUATION_STATUSES} but got {status!r}.")
    with _transaction(store) as connection:
        if summary is None:
            row = connection.execute(
                text(
                    "SELECT n, n_defined, median_focus, mean_focus FROM evaluation_summary "
                    "WHERE evaluation_id = :evaluation_id"
                ),
                {"evaluation_id": evaluation_id},
            ).one_or_none()
            if row is None:
                raise StoreError(f"No evaluation with id {evaluation_id}; create it with get_or_create_evaluation.")
            summary = {"n": row[0], "n_defined": row[1], "median": row[2], "mean": row[3]}
        values: dict[str, Any] = {
            "status": status,
            "finished_at": utcnow(),
            "n": None if summary.get("n") is None else int(summary["n"]),
            "n_defined": None if summary.get("n_defined") is None else int(summary["n_defined"]),
            "focus_median": _opt_float(summary.get("median")),
            "focus_mean": _opt_float(summary.get("mean")),
        }
        if seconds is not None:
            values["seconds"] = float(seconds)
        if metadata is not None:
            values["metadata_"] = metadata
        result = connection.execute(update(Evaluation).where(Evaluation.id == evaluation_id).values(values))
        if result.rowcount != 1:
            raise StoreError(f"No evaluation with id {evaluation_id}; create it with get_or_create_evaluation.")
    return summary


# --------------------------------------------------------------------------- mosaic results


class _Chunk(NamedTuple):
    ids: np.ndarray  # int64 (M,)
    sums: np.ndarray  # float64 (M, 4, 2), finite
    scores: np.ndarray  # float64 (M,), NaN where undefined
    preds: np.ndarray  # int64 (M,)

    def rows(self) -> list[tuple]:
        columns = [self.ids.tolist()]
        columns += [self.sums[:, q, 0].tolist() for q in range(4)]
        columns += [self.sums[:, q, 1].tolist() for q in range(4)]
        columns.append([None if math.isnan(x) else x for x in self.scores.tolist()])
        columns.append(self.preds.tolist())
        return list(zip(*columns, strict=True))


def _result_chunk(
    mosaic_ids: Sequence[int] | np.ndarray,
    quadrant_sums: np.ndarray,
    focus: Sequence[float] | np.ndarray,
    predicted: Sequence[int] | np.ndarray,
) -> _Chunk:
    ids = np.asarray(mosaic_ids).reshape(-1)
    m = ids.shape[0]
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise StoreError(f"Expected integer mosaic ids but got dtype {ids.dtype}.")
    sums = np.asarray(quadrant_sums, dtype=np.float64)
    if sums.shape != (m, 4, 2):
        raise StoreError(f"Expected quadrant_sums of shape ({m}, 4, 2) but got {sums.shape}.")
    if not np.isfinite(sums).all():
        raise StoreError("Expected finite quadrant_sums but some are NaN or infinite; check the explainer's output.")
    scores = np.asarray(focus, dtype=np.float64).reshape(-1)
    if scores.shape != (m,):
        raise StoreError(f"Expected focus of shape ({m},) but got {scores.shape}.")
    if np.isinf(scores).any():
        raise StoreError("Expected Focus scores in [0, 1] or NaN but some are infinite.")
    preds = np.asarray(predicted).reshape(-1)
    if preds.shape != (m,):
        raise StoreError(f"Expected predicted of shape ({m},) but got {preds.shape}.")
    if len(np.unique(ids)) != m:
        raise StoreError("Expected each mosaic id once per chunk but some repeat.")
    return _Chunk(ids.astype(np.int64), sums, scores, preds.astype(np.int64))


_TEMP = "_focus_result_chunk"
_TEMP_COLUMNS = "mosaic_id, " + ", ".join(_RESULT_COLUMNS)


def _upsert_sql(dialect: str) -> str:
    """``INSERT ... SELECT`` from the staged chunk, keeping only mosaics of the evaluation's set."""
    select_columns = ["t." + c for c in _RESULT_COLUMNS]
    if dialect == "postgresql":  # binary COPY carries NaN; PostgreSQL compares NaN equal to NaN
        select_columns[_RESULT_COLUMNS.index("focus")] = "NULLIF(t.focus, CAST('NaN' AS DOUBLE PRECISION))"
    return (
    f"INSERT INTO mosaic_result (evaluation_id, {_TEMP_COLUMNS}) "
    f"SELECT :evaluation_id, t.mosaic_id, {', '.join(select_columns)} "
    f"FROM {_TEMP} t JOIN mosaic m ON m.id = t.mosaic_id "
    f"WHERE m.mosaic_set_id = :mosaic_set_id "
    f"ON CONFLICT (evaluation_id, mosaic_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _RESULT_COLUMNS)
    )


_PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_PG_COPY_TRAILER = b"\xff\xff"


def _pg_binary_copy(ids: np.ndarray, sums: np.ndarray, scores: np.ndarray, preds: np.ndarray) -> bytes:
    """Encode the chunk in PostgreSQL's binary COPY format with one vectorised numpy pass.

    Every tuple has the same width (NaN Focus stays NaN here and becomes NULL in the upsert),
    so a packed big-endian structured array is the whole payload.
    """
    fields = [("n", ">i2"), ("l_id", ">i4"), ("mosaic_id", ">i4")]
    for name in _RESULT_COLUMNS[:-1]:
        fields += [(f"l_{name}", ">i4"), (name, ">f8")]
    fields += [("l_pred", ">i4"), ("predicted_class", ">i4")]
    records = np.empty(ids.shape[0], dtype=np.dtype(fields))
    records["n"] = len(_RESULT_COLUMNS) + 1
    records["l_id"] = 4
    records["mosaic_id"] = ids
    for q, corner in enumerate(("tl", "tr", "bl", "br")):
        records[f"l_pos_{corner}"] = records[f"l_neg_{corner}"] = 8
        records[f"pos_{corner}"] = sums[:, q, 0]
        records[f"neg_{corner}"] = sums[:, q, 1]
    records["l_focus"] = 8
    records["focus"] = scores
    records["l_pred"] = 4
    records["predicted_class"] = preds
    return _PG_COPY_HEADER + records.tobytes() + _PG_COPY_TRAILER


def _stage_postgresql(connection: Connection, chunk: _Chunk) -> None:
    connection.exec_driver_sql(
        f"CREATE TEMP TABLE {_TEMP} (mosaic_id integer, "
        + ", ".join(f"{c} double precision" for c in _RESULT_COLUMNS[:-1])
        + ", predicted_class integer) ON COMMIT DROP"
    )
    payload = _pg_binary_copy(chunk.ids, chunk.sums, chunk.scores, chunk.preds)
    raw = connection.connection.driver_connection
    with raw.cursor() as cursor:
        with cursor.copy(f"COPY {_TEMP} ({_TEMP_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(payload)


def _stage_sqlite(connection: Connection, chunk: _Chunk) -> None:
    connection.exec_driver_sql(
        f"CREATE TEMP TABLE IF NOT EXISTS {_TEMP} (mosaic_id INTEGER, "
        + ", ".join(f"{c} REAL" for c in _RESULT_COLUMNS[:-1])
        + ", predicted_class INTEGER)"
    )
    connection.exec_driver_sql(f"DELETE FROM {_TEMP}")
    placeholders = ", ".join("?" for _ in range(len(_RESULT_COLUMNS) + 1))
    connection.exec_driver_sql(f"INSERT INTO {_TEMP} ({_TEMP_COLUMNS}) VALUES ({placeholders})", chunk.rows())


@contextmanager
def _index_lookups(connection: Connection) -> Iterator[None]:
    """On PostgreSQL, check the chunk's mosaics by primary-key lookups instead of hashing the whole set.

    Left alone, the planner hashes every mosaic of the set (a full scan per chunk, 40 % of the
    time for a 200,000-mosaic set); a chunk is small, so index lookups win. Transaction-local,
    and the caller's settings are restored.
    """
    if connection.dialect.name != "postgresql":
        yield
        return
    names = ("enable_hashjoin", "enable_mergejoin")
    old = [connection.execute(text("SELECT current_setting(:name)"), {"name": n}).scalar_one() for n in names]
    for name in names:
        connection.execute(text("SELECT set_config(:name, 'off', true)"), {"name": name})
    try:
        yield
    finally:
        for name, value in zip(names, old, strict=True):
            connection.execute(text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value})


def write_mosaic_results(
    store: Store,
    evaluation_id: int,
    mosaic_ids: Sequence[int] | np.ndarray,
    quadrant_sums: np.ndarray,
    focus: Sequence[float] | np.ndarray,
    predicted: Sequence[int] | np.ndarray,
) -> int:
    """Write (upsert) the results of a chunk of mosaics in one transaction.

    Parameters
    ----------
    store
        Engine or connection.
    evaluation_id
        The evaluation the rows belong to.
    mosaic_ids
        ``(M,)`` mosaic ids of the evaluation's mosaic set, each once.
    quadrant_sums
        ``(M, 4, 2)`` float: ``[..., 0]`` positive and ``[..., 1]`` negative relevance per quadrant
        (TL, TR, BL, BR), as from ``focus_core.metric.quadrant_sums``.
    focus
        ``(M,)`` Focus scores; NaN (no positive relevance) is stored as NULL.
    predicted
        ``(M,)`` the model's predicted class per mosaic.

    Returns
    -------
    int
        Number of rows written. Writing the same chunk again replaces its rows (one row per
        mosaic); a chunk that fails (a mosaic outside the set, a missing evaluation) writes nothing.

    Notes
    -----
    PostgreSQL: COPY into a temporary table, then one ``INSERT ... SELECT ... ON CONFLICT DO
    UPDATE``. SQLite: executemany into a temporary table, then the same statement.

    Examples
    --------
    >>> write_mosaic_results(engine, 1, [10, 11], np.zeros((2, 4, 2)), [np.nan, 0.5], [3, 4])  # doctest: +SKIP
    2
    """
    chunk = _result_chunk(mosaic_ids, quadrant_sums, focus, predicted)
    m = chunk.ids.shape[0]
    if m == 0:
        return 0
    try:
        with _transaction(store) as connection:
            set_id = connection.scalar(select(Evaluation.mosaic_set_id).where(Evaluation.id == evaluation_id))
            if set_id is None:
                raise StoreError(f"No evaluation with id {evaluation_id}; create it with get_or_create_evaluation.")
            dialect = connection.dialect.name
            (_stage_postgresql if dialect == "postgresql" else _stage_sqlite)(connection, chunk)
            with _index_lookups(connection):
                written = connection.execute(
                    text(_upsert_sql(dialect)), {"evaluation_id": evaluation_id, "mosaic_set_id": set_id}
                ).rowcount
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(f"DROP TABLE {_TEMP}")
            if written != m:
                raise StoreError(
                    f"{m - written} of {m} mosaic ids are not in the mosaic set of evaluation "
                    f"{evaluation_id}; nothing of this chunk was written."
                )
    except IntegrityError as exc:
        raise StoreError(
            f"Writing results of evaluation {evaluation_id} failed ({_reason(exc)}); nothing of this chunk was written."
        ) from None
    return written


def finished_mosaic_ids(store: Store, evaluation_id: int) -> set[int]:
    """The ids of the mosaics that already have a result in this evaluation (to skip finished chunks)."""
    query = text("SELECT mosaic_id FROM mosaic_result WHERE evaluation_id = :evaluation_id")
    if isinstance(store, Engine):
        with store.connect() as connection:
            return set(connection.execute(query, {"evaluation_id": evaluation_id}).scalars())
    return set(store.execute(query, {"evaluation_id": evaluation_id}).scalars())
