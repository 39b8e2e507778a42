"""Idempotent registrations: datasets and their images, checkpoints and attribution methods.

Registering the same thing twice (same natural key) returns the row already there;
:func:`recorded_checkpoint` reads what is recorded about a weights file before it is registered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import exists, insert, select, update
from sqlalchemy.engine import Connection, Engine

from db.errors import StoreError
from db import keys
from db.models import SPLITS, CheckpointOrigin, Dataset, Evaluation, Image, ModelCheckpoint, MosaicResult, XaiMethod
from db.transactions import Store, idempotent, transaction

__all__ = [
    "RecordedCheckpoint",
    "RegisteredDataset",
    "check_split",
    "recorded_checkpoint",
    "recorded_sha256_at",
    "register_dataset",
    "register_checkpoint",
    "set_checkpoint_audit",
    "register_method",
    "disconnected_methods",
]


class RegisteredDataset(NamedTuple):
    """The dataset's id and its image ids, aligned with the image order given at registration."""

    dataset_id: int
    image_ids: list[int]


class RecordedCheckpoint(NamedTuple):
    """What the store records about a weights file: its id, architecture, class count and input channels.

    ``proven`` is whether the record is pinned: the file was trained by a recorded run, joined a lineage, or an
    evaluation of it stored a result. An unproven record (every evaluation of it failed before its first result)
    may be recorded again with another architecture (:func:`register_checkpoint`).
    """

    checkpoint_id: int
    architecture: str
    num_classes: int
    in_channels: int | None  # None where it was not recorded
    proven: bool = True


def check_split(split: str) -> None:
    """Raise ``StoreError`` unless ``split`` is one of ``SPLITS``."""
    if split not in SPLITS:
        raise StoreError(f"Expected split to be one of {SPLITS} but got {split!r}.")


def _check_images(name: str, classes: Sequence[str], relpaths: list[str], labels: list[int], splits: list[str]) -> None:
    if not (len(relpaths) == len(labels) == len(splits)):
        raise StoreError(
            f"Expected relpaths, labels and splits of equal length but got {len(relpaths)}, "
            f"{len(labels)}, {len(splits)}."
        )
    if len(set(relpaths)) != len(relpaths):
        raise StoreError(f"Expected unique relpaths in dataset {name!r} but some repeat.")
    for split in set(splits):
        check_split(split)
    bad = [x for x in labels if not 0 <= x < len(classes)]
    if bad:
        raise StoreError(f"Expected labels in [0, {len(classes)}) but got {bad[0]}.")


def _existing_images(connection: Connection, dataset_id: int, fingerprint: str, relpaths: list[str]) -> list[int]:
    by_path = dict(connection.execute(select(Image.relpath, Image.id).where(Image.dataset_id == dataset_id)).all())
    if len(by_path) != len(relpaths) or any(r not in by_path for r in relpaths):
        raise StoreError(
            f"Dataset fingerprint {fingerprint[:12]} is registered with other images; "
            f"compute the fingerprint from the images you pass."
        )
    return [by_path[r] for r in relpaths]


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
    _check_images(name, classes, relpaths, labels_list, splits)

    def work(connection: Connection) -> RegisteredDataset:
        existing = connection.scalar(select(Dataset.id).where(Dataset.fingerprint == fingerprint))
        if existing is not None:
            return RegisteredDataset(existing, _existing_images(connection, existing, fingerprint, relpaths))
        dataset_id = connection.scalar(
            insert(Dataset)
            .values(name=name, fingerprint=fingerprint, classes=[str(c) for c in classes],
                    num_images=len(relpaths), tile_size=tile_size, channels=channels)
            .returning(Dataset.id)
        )
        if not relpaths:
            return RegisteredDataset(dataset_id, [])
        rows = [
            {"dataset_id": dataset_id, "position": i, "relpath": r, "label": y, "split": s}
            for i, (r, y, s) in enumerate(zip(relpaths, labels_list, splits, strict=True))
        ]
        connection.execute(insert(Image), rows)
        order = select(Image.id).where(Image.dataset_id == dataset_id).order_by(Image.position)
        return RegisteredDataset(dataset_id, list(connection.scalars(order)))

    return idempotent(store, work)


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

    With ``training_run_id`` and ``epoch``, the (checkpoint, run, epoch) is recorded in ``checkpoint_origin``
    whether the weights are new or not: a second run that produces byte-identical weights is recorded as
    another origin of the same checkpoint (the checkpoint's own ``training_run_id``, ``epoch`` and ``label``
    stay the first run's). Calling again with the same arguments writes nothing.

    A file recorded with another architecture, class count or channel count keeps its record when the record is
    proven (see :class:`RecordedCheckpoint`); an unproven record takes the new architecture, class count and
    channels (the caller has loaded the weights into them), keeping its id, so the failed evaluations of the
    wrong architecture, which stored no result, are run again under the right one.

    Examples
    --------
    >>> register_checkpoint(engine, "ab" * 32, "digits_cnn", 10, path="w.pt")  # doctest: +SKIP
    1
    """
    if len(sha256) != 64:
        raise StoreError(f"Expected a 64-character sha256 hex digest but got {sha256!r}.")
    values = {
        "sha256": sha256, "architecture": architecture, "num_classes": int(num_classes), "in_channels": in_channels,
        "path": None if path is None else str(path), "training_run_id": training_run_id, "epoch": epoch,
        "audit": bool(audit), "label": label,
    }  # fmt: skip

    def work(connection: Connection) -> int:
        c = ModelCheckpoint
        row = connection.execute(
            select(c.id, c.architecture, c.num_classes, c.in_channels).where(c.sha256 == sha256).with_for_update()
        ).first()
        if row is None:
            checkpoint_id = connection.scalar(insert(c).values(values).returning(c.id))
        else:
            checkpoint_id = row.id
            shape = {"architecture": architecture, "num_classes": int(num_classes), "in_channels": in_channels}
            if (row.architecture, row.num_classes, row.in_channels) != tuple(shape.values()) and not _proven(
                connection, checkpoint_id
            ):
                connection.execute(update(c).where(c.id == checkpoint_id).values(shape))
        if training_run_id is not None and epoch is not None:
            _record_origin(connection, checkpoint_id, int(training_run_id), int(epoch))
        return checkpoint_id

    return idempotent(store, work)


def _record_origin(connection: Connection, checkpoint_id: int, training_run_id: int, epoch: int) -> None:
    """Record that ``training_run_id`` produced the checkpoint at ``epoch`` (nothing when it is recorded)."""
    o = CheckpointOrigin
    key = {"checkpoint_id": checkpoint_id, "training_run_id": training_run_id, "epoch": epoch}
    found = connection.scalar(select(o.checkpoint_id).where(
        o.checkpoint_id == checkpoint_id, o.training_run_id == training_run_id, o.epoch == epoch))
    if found is None:
        connection.execute(insert(o).values(key))


def _proven(connection: Connection, checkpoint_id: int) -> bool:
    """Whether the checkpoint's record is pinned: a training origin, a lineage, or a stored result of it."""
    c = ModelCheckpoint
    pinned = connection.execute(
        select(c.training_run_id, c.lineage_id).where(c.id == checkpoint_id)
    ).one()
    if pinned.training_run_id is not None or pinned.lineage_id is not None:
        return True
    if connection.scalar(select(exists().where(CheckpointOrigin.checkpoint_id == checkpoint_id))):
        return True
    evaluations = select(Evaluation.id).where(Evaluation.checkpoint_id == checkpoint_id)
    return bool(connection.scalar(select(exists().where(MosaicResult.evaluation_id.in_(evaluations)))))


def recorded_checkpoint(engine: Engine, sha256: str) -> RecordedCheckpoint | None:
    """The store's record of the weights file with this sha256, or ``None`` when it is not recorded.

    Examples
    --------
    >>> recorded_checkpoint(engine, "ab" * 32)  # doctest: +SKIP
    RecordedCheckpoint(checkpoint_id=1, architecture='digits_cnn', num_classes=10, in_channels=1, proven=True)
    """
    c = ModelCheckpoint
    with engine.connect() as connection:
        row = connection.execute(
            select(c.id, c.architecture, c.num_classes, c.in_channels).where(c.sha256 == sha256)
        ).first()
        if row is None:
            return None
        proven = _proven(connection, int(row.id))
    return RecordedCheckpoint(int(row.id), row.architecture, int(row.num_classes),
                              None if row.in_channels is None else int(row.in_channels), proven)


def recorded_sha256_at(engine: Engine, path: str) -> str | None:
    """The sha256 recorded for the checkpoint at ``path`` (a URL or a path; the newest such record), else ``None``.

    Examples
    --------
    >>> recorded_sha256_at(engine, "s3://models/r18.pt")  # doctest: +SKIP
    'abab...'
    """
    c = ModelCheckpoint
    with engine.connect() as connection:
        return connection.scalar(select(c.sha256).where(c.path == str(path)).order_by(c.id.desc()).limit(1))


def set_checkpoint_audit(store: Store, checkpoint_id: int, audit: bool = True, label: str | None = None) -> None:
    """Mark (or unmark) a checkpoint for the nightly audit, optionally setting its label."""
    values: dict[str, Any] = {"audit": bool(audit)}
    if label is not None:
        values["label"] = label
    with transaction(store) as connection:
        result = connection.execute(update(ModelCheckpoint).where(ModelCheckpoint.id == checkpoint_id).values(values))
        if result.rowcount != 1:
            raise StoreError(f"No checkpoint with id {checkpoint_id}; register it first.")


def register_method(store: Store, name: str, params: dict[str, Any], params_hash: str | None = None) -> int:
    """Register an attribution method with explicit parameters and return its id.

    The natural key is :func:`db.keys.params_hash` of ``(name, params)``; the same name and parameters, in
    any key order, return the same id.

    Parameters
    ----------
    store : Engine or Connection
        The store.
    name : str
        The method's registry name.
    params : dict
        Its explicit parameters (JSON values).
    params_hash : str, optional
        The hash the caller computed (the explainer's ``params_hash``). It is checked against the store's own
        computation, so the hash stored is the explainer's; they differ only through a bug.

    Raises
    ------
    StoreError
        When ``params_hash`` is given and is not the hash of ``(name, params)``.
    """
    key = keys.params_hash(name, params)
    if params_hash is not None and params_hash != key:
        raise StoreError(
            f"The hash {params_hash[:12]} given for method '{name}' is not that of its parameters ({key[:12]}): "
            f"this is a bug in focus-audit, please report it with the method's parameters."
        )

    def work(connection: Connection) -> int:
        existing = connection.scalar(select(XaiMethod.id).where(XaiMethod.params_hash == key))
        if existing is not None:
            return existing
        return connection.scalar(
            insert(XaiMethod).values(name=name, params=params, params_hash=key).returning(XaiMethod.id)
        )

    return idempotent(store, work)


def disconnected_methods(store: Store, method_ids: Sequence[int]) -> set[int]:
    """Those of ``method_ids`` recorded in the disconnected setting (``"disconnected": true`` among their
    parameters): what a table marks where it names the method."""
    ids = sorted({int(i) for i in method_ids})
    if not ids:
        return set()
    with transaction(store) as connection:
        rows = connection.execute(select(XaiMethod.id, XaiMethod.params).where(XaiMethod.id.in_(ids))).all()
    return {int(row.id) for row in rows if (row.params or {}).get("disconnected") is True}
