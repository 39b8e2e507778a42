"""Mosaic sets: a seeded manifest and its mosaics, registered once, in bulk.

A mosaic is four image ids in TL, TR, BL, BR order, a target class and a target-quadrant
bitmask (bit ``q`` for quadrant ``q``). Every tile must be an image of the set's dataset and
split (mosaics use images the model never trained on); that is checked before anything is
written. On PostgreSQL the mosaics go in with one binary COPY. :func:`mosaic_tiles` reads one
mosaic back with its tiles' relpaths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from db.errors import StoreError
from db.models import Image, Mosaic, MosaicSet
from db.pg_copy import copy_into
from db.registry import check_split
from db.transactions import Store, error_reason, idempotent

__all__ = ["MosaicTiles", "RegisteredMosaicSet", "mosaic_tiles", "register_mosaic_set"]

_TWO_BIT_MASKS = frozenset({3, 5, 6, 9, 10, 12})
_CORNERS = ("image_tl", "image_tr", "image_bl", "image_br")


class RegisteredMosaicSet(NamedTuple):
    """The mosaic set's id and its mosaic ids in manifest position order."""

    mosaic_set_id: int
    mosaic_ids: list[int]


class MosaicTiles(NamedTuple):
    """One stored mosaic: its target class, target-quadrant bitmask and its tiles' relpaths in TL, TR, BL, BR order."""

    mosaic_id: int
    target_class: int
    target_mask: int  # bit q set for a target tile in quadrant q
    relpaths: list[str]


class _Mosaics(NamedTuple):
    image_ids: np.ndarray  # int64 (M, 4), TL, TR, BL, BR
    classes: np.ndarray  # int64 (M,)
    masks: np.ndarray  # int64 (M,), two bits set


def _masks(target_masks: Sequence[Any] | np.ndarray, m: int) -> np.ndarray:
    arr = np.asarray(target_masks)
    if arr.ndim == 2 and arr.shape == (m, 4):
        bits = (arr.astype(bool).astype(np.int64) * np.array([1, 2, 4, 8])).sum(axis=1)
    elif arr.shape == (m,):
        bits = arr.astype(np.int64)
    else:
        raise StoreError(f"Expected target_masks of shape ({m}, 4) bool or ({m},) int but got {arr.shape}.")
    bad = bits[~np.isin(bits, list(_TWO_BIT_MASKS))]
    if bad.size:
        raise StoreError(f"Expected every mosaic to have exactly two target quadrants but got the bitmask {bad[0]}.")
    return bits


def _mosaics(image_ids: Any, target_classes: Any, target_masks: Any) -> _Mosaics:
    ids = np.asarray(image_ids, dtype=np.int64)
    if ids.ndim != 2 or ids.shape[1] != 4:
        raise StoreError(f"Expected image_ids of shape (M, 4) but got {ids.shape}.")
    m = ids.shape[0]
    classes = np.asarray(target_classes, dtype=np.int64).reshape(-1)
    if classes.shape != (m,):
        raise StoreError(f"Expected target_classes of shape ({m},) but got {classes.shape}.")
    return _Mosaics(ids, classes, _masks(target_masks, m))


def _check_tiles(connection: Connection, mosaics: _Mosaics, dataset_id: int, split: str, manifest_hash: str) -> None:
    """Every tile must be an image of ``dataset_id`` in ``split``; checked before anything is written."""
    allowed = connection.scalars(select(Image.id).where(Image.dataset_id == dataset_id, Image.split == split)).all()
    wrong = int((~np.isin(mosaics.image_ids, np.asarray(allowed, dtype=np.int64))).sum())
    if wrong:
        raise StoreError(
            f"{wrong} tiles of mosaic set {manifest_hash[:12]} are not {split!r} images of dataset {dataset_id}; "
            f"build the mosaics from that split only."
        )


def _insert_mosaics(connection: Connection, set_id: int, mosaics: _Mosaics) -> list[int]:
    """Insert the mosaics in manifest order (binary COPY on PostgreSQL) and return their ids."""
    m = len(mosaics.classes)
    columns = {"mosaic_set_id": np.full(m, set_id), "position": np.arange(m)}
    columns.update({corner: mosaics.image_ids[:, q] for q, corner in enumerate(_CORNERS)})
    columns.update({"target_class": mosaics.classes, "target_mask": mosaics.masks})
    if connection.dialect.name == "postgresql":
        copy_into(connection, Mosaic.__tablename__, columns)
    else:
        names = list(columns)
        rows = zip(*(columns[n].tolist() for n in names), strict=True)
        connection.execute(insert(Mosaic), [dict(zip(names, row, strict=True)) for row in rows])
    order = select(Mosaic.id).where(Mosaic.mosaic_set_id == set_id).order_by(Mosaic.position)
    return list(connection.scalars(order))


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
    check_split(split)
    mosaics = _mosaics(image_ids, target_classes, target_masks)
    m = len(mosaics.classes)

    def work(connection: Connection) -> RegisteredMosaicSet:
        existing = connection.scalar(select(MosaicSet.id).where(MosaicSet.manifest_hash == manifest_hash))
        if existing is not None:
            order = select(Mosaic.id).where(Mosaic.mosaic_set_id == existing).order_by(Mosaic.position)
            return RegisteredMosaicSet(existing, list(connection.scalars(order)))
        _check_tiles(connection, mosaics, dataset_id, split, manifest_hash)
        set_id = connection.scalar(
            insert(MosaicSet)
            .values(manifest_hash=manifest_hash, dataset_id=dataset_id, split=split, seed=int(seed),
                    per_class=int(per_class), layout=layout, tile_size=tile_size, num_mosaics=m)
            .returning(MosaicSet.id)
        )
        return RegisteredMosaicSet(set_id, _insert_mosaics(connection, set_id, mosaics) if m else [])

    try:
        return idempotent(store, work)
    except IntegrityError as exc:
        raise StoreError(f"Cannot register mosaic set {manifest_hash[:12]} ({error_reason(exc)}); "
                         f"register its dataset and images first.") from None


def mosaic_tiles(engine: Engine, mosaic_id: int) -> MosaicTiles:
    """The target and the four tile images (relpaths in their dataset, TL, TR, BL, BR) of one stored mosaic.

    Examples
    --------
    >>> mosaic_tiles(engine, 7).relpaths  # doctest: +SKIP
    ['3/0041.png', '5/0007.png', '3/0102.png', '8/0013.png']

    Raises
    ------
    StoreError
        When no mosaic has that id.
    """
    with engine.connect() as connection:
        mosaic = connection.execute(select(Mosaic).where(Mosaic.id == int(mosaic_id))).first()
        if mosaic is None:
            raise StoreError(f"No mosaic with id {mosaic_id} in the store; pick one from its evaluation's results.")
        image_ids = [getattr(mosaic, corner) for corner in _CORNERS]
        relpaths = dict(connection.execute(select(Image.id, Image.relpath).where(Image.id.in_(image_ids))).all())
    return MosaicTiles(int(mosaic.id), int(mosaic.target_class), int(mosaic.target_mask),
                       [relpaths[i] for i in image_ids])
