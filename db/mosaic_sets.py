"""Mosaic sets: a seeded manifest and its mosaics, registered once, in bulk.

A mosaic of an N x N set is N² image ids in row-major order (2x2: TL, TR, BL, BR), a target class
and a target-tile bitmask (bit ``p`` for tile ``p``) with exactly ``targets`` bits set. A 2x2 mosaic
keeps its ids in the ``mosaic.image_*`` columns; any other grid writes ``mosaic_tile`` rows. Every
tile must be an image of the set's dataset and split (mosaics use images the model never trained
on); that is checked before anything is written. On PostgreSQL the mosaics (and tiles) go in with
binary COPY. :func:`mosaic_tiles` reads one mosaic back with its tiles' relpaths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from db.errors import StoreError
from db.models import MAX_GRID, Dataset, Evaluation, Image, Mosaic, MosaicSet, MosaicTile, TrainingEpochEvaluation
from db.pg_copy import copy_into
from db.registry import check_split
from db.transactions import Store, error_reason, idempotent

__all__ = ["MosaicSetData", "MosaicTiles", "RegisteredMosaicSet", "mosaic_set_data", "mosaic_tiles",
           "register_mosaic_set", "training_mosaic_set"]

_CORNERS = ("image_tl", "image_tr", "image_bl", "image_br")


class RegisteredMosaicSet(NamedTuple):
    """The mosaic set's id and its mosaic ids in manifest position order."""

    mosaic_set_id: int
    mosaic_ids: list[int]


class MosaicTiles(NamedTuple):
    """One stored mosaic: its target class, target-tile bitmask and its tiles' relpaths in row-major order.

    ``grid`` is N of the N x N mosaic (``len(relpaths) == grid ** 2``; 2x2: TL, TR, BL, BR). ``probe`` is its set's
    probe (the JSON form of ``focus_core.probes.CornerPatch``; ``None``: a clean set), stamped by manifest position:
    ``position`` of the set's ``num_mosaics``.
    """

    mosaic_id: int
    target_class: int
    target_mask: int  # bit p set for a target tile at position p
    relpaths: list[str]
    grid: int = 2
    probe: dict[str, Any] | None = None
    position: int = 0
    num_mosaics: int = 1

    @property
    def target_positions(self) -> list[int]:
        """The row-major positions of the target tiles."""
        return [p for p in range(self.grid ** 2) if self.target_mask >> p & 1]


class MosaicSetData(NamedTuple):
    """What a mosaic set was made of: its dataset, how the images became tiles, its split and every split's size."""

    mosaic_set_id: int
    dataset: str
    classes: int
    tile_size: int | None
    resize: int | None  # None: the images were not resized (the bundled digits)
    split: str  # the split the mosaics are drawn from
    images_per_split: dict[str, int]  # train, val, test: the dataset's images in each (splits without images left out)


class _Mosaics(NamedTuple):
    image_ids: np.ndarray  # int64 (M, N²), row-major
    classes: np.ndarray  # int64 (M,)
    masks: np.ndarray  # int64 (M,), ``targets`` bits set


def _check_grid(grid: int, targets: int) -> None:
    if not 2 <= grid <= MAX_GRID:
        raise StoreError(f"Expected a grid of 2 to {MAX_GRID} tiles a side but got {grid}; use a smaller grid.")
    if not 1 <= targets < grid * grid:
        raise StoreError(f"Expected 1 to {grid * grid - 1} target tiles on a {grid}x{grid} grid but got {targets}.")


def _masks(target_masks: Sequence[Any] | np.ndarray, m: int, tiles: int, targets: int) -> np.ndarray:
    arr = np.asarray(target_masks)
    if arr.ndim == 2 and arr.shape == (m, tiles):
        bits = (arr.astype(bool).astype(np.int64) << np.arange(tiles, dtype=np.int64)).sum(axis=1)
    elif arr.shape == (m,):
        bits = arr.astype(np.int64)
    else:
        raise StoreError(f"Expected target_masks of shape ({m}, {tiles}) bool or ({m},) int but got {arr.shape}.")
    counts = ((bits[:, None] >> np.arange(tiles, dtype=np.int64)) & 1).sum(axis=1)
    bad = bits[(bits < 0) | (bits >= 1 << tiles) | (counts != targets)]
    if bad.size:
        raise StoreError(f"Expected every mosaic to have exactly {targets} target tile(s) of {tiles} "
                         f"but got the bitmask {bad[0]}.")
    return bits


def _mosaics(image_ids: Any, target_classes: Any, target_masks: Any, grid: int, targets: int) -> _Mosaics:
    tiles = grid * grid
    ids = np.asarray(image_ids, dtype=np.int64)
    if ids.ndim != 2 or ids.shape[1] != tiles:
        raise StoreError(f"Expected image_ids of shape (M, {tiles}) for a {grid}x{grid} grid but got {ids.shape}.")
    m = ids.shape[0]
    classes = np.asarray(target_classes, dtype=np.int64).reshape(-1)
    if classes.shape != (m,):
        raise StoreError(f"Expected target_classes of shape ({m},) but got {classes.shape}.")
    return _Mosaics(ids, classes, _masks(target_masks, m, tiles, targets))


def _check_tiles(connection: Connection, mosaics: _Mosaics, dataset_id: int, split: str, manifest_hash: str) -> None:
    """Every tile must be an image of ``dataset_id`` in ``split``; checked before anything is written."""
    allowed = connection.scalars(select(Image.id).where(Image.dataset_id == dataset_id, Image.split == split)).all()
    wrong = int((~np.isin(mosaics.image_ids, np.asarray(allowed, dtype=np.int64))).sum())
    if wrong:
        raise StoreError(
            f"{wrong} tiles of mosaic set {manifest_hash[:12]} are not {split!r} images of dataset {dataset_id}; "
            f"build the mosaics from that split only."
        )


def _bulk_insert(connection: Connection, model: type, columns: dict[str, np.ndarray]) -> None:
    """Equal-length numpy columns into ``model``'s table: binary COPY on PostgreSQL, executemany on SQLite."""
    if connection.dialect.name == "postgresql":
        copy_into(connection, model.__tablename__, columns)
        return
    names = list(columns)
    rows = zip(*(columns[n].tolist() for n in names), strict=True)
    connection.execute(insert(model), [dict(zip(names, row, strict=True)) for row in rows])


def _insert_mosaics(connection: Connection, set_id: int, mosaics: _Mosaics) -> list[int]:
    """Insert the mosaics in manifest order (and, off 2x2, their tiles) and return their ids."""
    m, tiles = mosaics.image_ids.shape
    columns = {"mosaic_set_id": np.full(m, set_id), "position": np.arange(m)}
    if tiles == 4:  # the 2x2 fast path: the tiles are columns of the mosaic
        columns.update({corner: mosaics.image_ids[:, q] for q, corner in enumerate(_CORNERS)})
    columns.update({"target_class": mosaics.classes, "target_mask": mosaics.masks})
    _bulk_insert(connection, Mosaic, columns)
    order = select(Mosaic.id).where(Mosaic.mosaic_set_id == set_id).order_by(Mosaic.position)
    ids = list(connection.scalars(order))
    if tiles != 4:
        _bulk_insert(connection, MosaicTile, {
            "mosaic_id": np.repeat(np.asarray(ids, dtype=np.int64), tiles),
            "position": np.tile(np.arange(tiles, dtype=np.int64), m),
            "image_id": mosaics.image_ids.reshape(-1),
        })
    return ids


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
    resize: int | None = None,
    grid: int = 2,
    targets: int = 2,
    confident: float | None = None,
    confident_model: str | None = None,
    probe: dict[str, Any] | None = None,
) -> RegisteredMosaicSet:
    """Register a mosaic set and its mosaics, or return the one registered with ``manifest_hash``.

    Parameters
    ----------
    image_ids
        ``(M, grid²)`` database image ids (from ``register_dataset``) in row-major tile order
        (2x2: TL, TR, BL, BR).
    target_classes
        ``(M,)`` target class of each mosaic.
    target_masks
        ``(M, grid²)`` bool (True where a tile holds a target image) or ``(M,)`` bitmasks
        (bit ``p`` for tile ``p``); exactly ``targets`` target tiles per mosaic.
    tile_size, resize
        How the images became tiles: the shorter side resized to ``resize`` (``None``: not resized), the centre
        ``tile_size`` square cropped.
    grid, targets
        N of the N x N mosaics (2 to :data:`db.models.MAX_GRID`) and the number k of target tiles.
    confident, confident_model
        The confident protocol's probability threshold and the sha256 of the weights whose
        predictions chose the tiles (both ``None`` when not used).
    probe
        A probe set's patch as its manifest records it (``focus_core.probes.CornerPatch.to_dict``); ``None`` for a
        clean set. A set registered without it gets it now.

    Raises
    ------
    StoreError
        When a tile is not an image of ``dataset_id`` in ``split`` (mosaics must use images the
        model never trained on), or the shapes or the grid disagree. Nothing is written then.
    """
    check_split(split)
    grid, targets = int(grid), int(targets)
    _check_grid(grid, targets)
    mosaics = _mosaics(image_ids, target_classes, target_masks, grid, targets)
    m = len(mosaics.classes)
    # only what differs from the columns' defaults: a 2x2 set is written exactly as before revision 0007
    grid_values: dict[str, Any] = {"grid": grid} if grid != 2 else {}
    grid_values |= {"targets": targets} if targets != 2 else {}
    grid_values |= {"confident": float(confident)} if confident is not None else {}
    grid_values |= {"confident_model": confident_model} if confident_model is not None else {}
    grid_values |= {"resize": int(resize)} if resize is not None else {}
    grid_values |= {"probe": dict(probe)} if probe is not None else {}

    def work(connection: Connection) -> RegisteredMosaicSet:
        existing = connection.scalar(select(MosaicSet.id).where(MosaicSet.manifest_hash == manifest_hash))
        if existing is not None:
            if probe is not None:  # registered before sets recorded their probe: the manifest (its hash) names it
                connection.execute(update(MosaicSet).where(MosaicSet.id == existing, MosaicSet.probe.is_(None))
                                   .values(probe=dict(probe)))
            order = select(Mosaic.id).where(Mosaic.mosaic_set_id == existing).order_by(Mosaic.position)
            return RegisteredMosaicSet(existing, list(connection.scalars(order)))
        _check_tiles(connection, mosaics, dataset_id, split, manifest_hash)
        set_id = connection.scalar(
            insert(MosaicSet)
            .values(manifest_hash=manifest_hash, dataset_id=dataset_id, split=split, seed=int(seed),
                    per_class=int(per_class), layout=layout, tile_size=tile_size, num_mosaics=m, **grid_values)
            .returning(MosaicSet.id)
        )
        return RegisteredMosaicSet(set_id, _insert_mosaics(connection, set_id, mosaics) if m else [])

    try:
        return idempotent(store, work)
    except IntegrityError as exc:
        raise StoreError(f"Cannot register mosaic set {manifest_hash[:12]} ({error_reason(exc)}); "
                         f"register its dataset and images first.") from None


def mosaic_tiles(engine: Engine, mosaic_id: int) -> MosaicTiles:
    """The target and the tile images (relpaths in their dataset, row-major; 2x2: TL, TR, BL, BR) of one mosaic.

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
        grid, probe, num_mosaics = connection.execute(
            select(MosaicSet.grid, MosaicSet.probe, MosaicSet.num_mosaics).where(MosaicSet.id == mosaic.mosaic_set_id)
        ).one()
        if grid == 2:
            image_ids = [getattr(mosaic, corner) for corner in _CORNERS]
        else:
            image_ids = list(connection.scalars(select(MosaicTile.image_id).where(MosaicTile.mosaic_id == mosaic.id)
                                                .order_by(MosaicTile.position)))
        relpaths = dict(connection.execute(select(Image.id, Image.relpath).where(Image.id.in_(image_ids))).all())
    return MosaicTiles(int(mosaic.id), int(mosaic.target_class), int(mosaic.target_mask),
                       [relpaths[i] for i in image_ids], int(grid), probe, int(mosaic.position), int(num_mosaics))


def mosaic_set_data(engine: Engine, mosaic_set_id: int) -> MosaicSetData | None:
    """The dataset, tile size, resize, split and split sizes of a mosaic set (``None``: no such set).

    Examples
    --------
    >>> mosaic_set_data(engine, 3)  # doctest: +SKIP
    MosaicSetData(mosaic_set_id=3, dataset='shapes', classes=6, tile_size=64, resize=73, split='test',
                  images_per_split={'train': 168, 'val': 36, 'test': 36})
    """
    with engine.connect() as connection:
        found = connection.execute(
            select(Dataset.id, Dataset.name, Dataset.classes, MosaicSet.tile_size, MosaicSet.resize, MosaicSet.split)
            .join(Dataset, Dataset.id == MosaicSet.dataset_id).where(MosaicSet.id == int(mosaic_set_id))
        ).first()
        if found is None:
            return None
        counts = dict(connection.execute(
            select(Image.split, func.count()).where(Image.dataset_id == found.id).group_by(Image.split)).all())
    order = ("train", "val", "test")
    per_split = {s: int(counts[s]) for s in order if counts.get(s)} | {
        str(s): int(n) for s, n in sorted(counts.items()) if s not in order}
    return MosaicSetData(int(mosaic_set_id), str(found.name), len(found.classes or []), found.tile_size,
                         found.resize, str(found.split), per_split)


def training_mosaic_set(engine: Engine, training_run_id: int) -> int | None:
    """The mosaic set a training run measures each epoch's Focus on (``None``: it measures none)."""
    with engine.connect() as connection:
        return connection.scalar(
            select(Evaluation.mosaic_set_id)
            .join(TrainingEpochEvaluation, TrainingEpochEvaluation.evaluation_id == Evaluation.id)
            .where(TrainingEpochEvaluation.training_run_id == int(training_run_id)).limit(1))
