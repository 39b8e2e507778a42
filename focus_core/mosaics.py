"""Seeded mosaic manifests and batched mosaic composition.

A mosaic is an N x N grid of tiles (N = 2, 3 or 4; the paper's: 2), numbered row-major ``0..N²-1`` (2x2: TL, TR,
BL, BR): k distinct images of the target class on its target tiles and ``N² - k`` distinct images of other
classes, all from a split the model was not trained on (the paper's: k = 2 of 4). A :class:`MosaicManifest`
lists the mosaics of one set by dataset index; it is deterministic (same dataset, seed and arguments, same
manifest and :attr:`MosaicManifest.hash` in every process). A 2x2 manifest with two targets has the bytes and
hash it had before grids existed. :func:`compose_mosaics` turns index rows into images with one gather.

This module holds the mosaic, the manifest, its seeded sampling and the target mask. Composition
(:func:`compose_mosaics`, :func:`compose_normalized`) lives in :mod:`focus_core.composition` and is
re-exported here, like :data:`LAYOUTS` from :mod:`focus_core.layouts`, so a mosaic set is used from one
import: ``from focus_core.mosaics import build_manifest, compose_normalized``. The grid pointing game's
protocol (only confidently, correctly classified images as tiles) chooses ``eligible`` images:
:mod:`focus_core.confident`.

Examples
--------
>>> from focus_core.data import load_digits
>>> digits = load_digits(tile_size=16)
>>> manifest = build_manifest(digits, split="test", per_class=2, seed=0)
>>> len(manifest)
20
>>> compose_mosaics(digits.tiles, manifest.index_tensor()).shape
torch.Size([20, 1, 32, 32])
>>> target_mask(manifest).sum(dim=1).unique().tolist()
[2]
>>> nine = build_manifest(digits, per_class=2, grid=3, targets=1)
>>> compose_mosaics(digits.tiles, nine.index_tensor()).shape, target_mask(nine).sum(dim=1).unique().tolist()
(torch.Size([20, 1, 48, 48]), [1])
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from focus_core.composition import compose_mosaics, compose_normalized  # re-exported: mosaics.compose_*
from focus_core.data import SPLITS, TileDataset
from focus_core.errors import FocusError
from focus_core.hashing import canonical_hash, canonical_json
from focus_core import layouts
from focus_core.layouts import LAYOUTS  # re-exported: mosaics.LAYOUTS
from focus_core.probes import CornerPatch, corner_codes

__all__ = [
    "LAYOUTS",
    "Mosaic",
    "MosaicManifest",
    "build_manifest",
    "compose_mosaics",
    "compose_normalized",
    "target_mask",
]

_FORMAT = 1


@dataclass(frozen=True)
class Mosaic:
    """One mosaic: N² dataset indices, row-major (2x2: TL, TR, BL, BR), its target class and target tiles.

    ``target_quadrants`` are the sorted positions of the k target tiles (the name is the 2x2 paper's).

    Examples
    --------
    >>> Mosaic(image_indices=(5, 9, 2, 7), target_class=3, target_quadrants=(0, 3))
    Mosaic(image_indices=(5, 9, 2, 7), target_class=3, target_quadrants=(0, 3))
    """

    image_indices: tuple[int, ...]
    target_class: int
    target_quadrants: tuple[int, ...]


@dataclass(frozen=True)
class MosaicManifest:
    """A deterministic set of mosaics drawn from one split of one dataset.

    ``grid`` (tiles per side), ``targets`` (target tiles per mosaic), ``confident`` (the grid pointing game's
    softmax threshold, ``None``: every image of the split may be a tile) and ``confident_model`` (sha256 of the
    weights whose predictions chose the tiles) are part of the JSON and the hash only where they differ from
    their defaults, so a 2x2 manifest with two targets keeps the bytes it had before grids existed.

    Examples
    --------
    >>> m = MosaicManifest("abc", "test", 1, 0, "top", (Mosaic((4, 8, 1, 2), 3, (0, 1)),))
    >>> MosaicManifest.from_json(m.to_json()) == m
    True
    >>> m.index_tensor().tolist(), m.target_classes().tolist(), m.grid, m.targets
    ([[4, 8, 1, 2]], [3], 2, 2)
    """

    dataset_fingerprint: str
    split: str
    per_class: int
    seed: int
    layout: str
    mosaics: tuple[Mosaic, ...]
    grid: int = 2
    targets: int = 2
    confident: float | None = None
    confident_model: str | None = None
    probe: CornerPatch | None = None

    def __len__(self) -> int:
        return len(self.mosaics)

    def to_json(self) -> str:
        """Return the canonical JSON text (:func:`focus_core.hashing.canonical_json`) of this manifest."""
        return canonical_json(self._payload())

    def _payload(self) -> dict[str, Any]:
        """The manifest as a JSON value: what :meth:`to_json` writes and :attr:`hash` hashes."""
        payload: dict[str, Any] = {
            "format": _FORMAT,
            "dataset_fingerprint": self.dataset_fingerprint,
            "split": self.split,
            "per_class": self.per_class,
            "seed": self.seed,
            "layout": self.layout,
        }
        for key, default in _DEFAULTS.items():  # only where not the 2x2 paper's: its bytes stay as they were
            if getattr(self, key) != default:
                payload[key] = getattr(self, key)
        if self.probe is not None:  # a probe set (focus_core.probes); a clean set's bytes stay as they were
            payload["probe"] = self.probe.to_dict()
        payload["mosaics"] = [
                {
                    "image_indices": list(m.image_indices),
                    "target_class": m.target_class,
                    "target_quadrants": list(m.target_quadrants),
                }
                for m in self.mosaics
            ]
        return payload

    @classmethod
    def from_json(cls, text: str) -> MosaicManifest:
        """Rebuild a manifest from :meth:`to_json`'s text."""
        try:
            payload = json.loads(text)
            grid, targets = int(payload.get("grid", 2)), int(payload.get("targets", 2))
            confident = payload.get("confident")
            confident_model = payload.get("confident_model")
            return cls(
                dataset_fingerprint=str(payload["dataset_fingerprint"]),
                split=str(payload["split"]),
                per_class=int(payload["per_class"]),
                seed=int(payload["seed"]),
                layout=str(payload["layout"]),
                mosaics=tuple(_mosaic_from_dict(m, grid, targets) for m in payload["mosaics"]),
                grid=grid,
                targets=targets,
                confident=None if confident is None else float(confident),
                confident_model=None if confident_model is None else str(confident_model),
                probe=None if payload.get("probe") is None else CornerPatch.parse(payload["probe"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise FocusError(
                f"This is not a mosaic manifest ({error.__class__.__name__}: {error}): pass the "
                f"text that MosaicManifest.to_json() wrote."
            ) from None

    @functools.cached_property
    def hash(self) -> str:
        """sha256 of :meth:`to_json`'s text (:func:`focus_core.hashing.canonical_hash`): the same in every process."""
        return canonical_hash(self._payload())

    def index_tensor(self) -> torch.Tensor:
        """Return the dataset indices as ``int64`` of shape ``(M, N²)``, row-major (2x2: TL, TR, BL, BR)."""
        tiles = self.grid * self.grid
        return torch.tensor([m.image_indices for m in self.mosaics], dtype=torch.int64).reshape(-1, tiles)

    def target_classes(self) -> torch.Tensor:
        """Return the target class of every mosaic as ``int64`` of shape ``(M,)``."""
        return torch.tensor([m.target_class for m in self.mosaics], dtype=torch.int64)

    def probe_codes(self) -> torch.Tensor | None:
        """The probe's corner per tile, int8 ``(M, N²)`` (:func:`focus_core.probes.corner_codes`); ``None`` without
        a probe."""
        return None if self.probe is None else corner_codes(self.probe, target_mask(self))


#: The trailing fields of a manifest and their defaults (the paper's 2x2 mosaics with two targets, every image).
_DEFAULTS: dict[str, Any] = {"grid": 2, "targets": 2, "confident": None, "confident_model": None}


def _mosaic_from_dict(m: dict, grid: int = 2, targets: int = 2) -> Mosaic:
    indices = tuple(int(i) for i in m["image_indices"])
    quadrants = tuple(int(q) for q in m["target_quadrants"])
    if len(indices) != grid * grid or len(quadrants) != targets:
        raise ValueError(f"a mosaic needs {grid * grid} image indices and {targets} target tiles, got {m}")
    return Mosaic(indices, int(m["target_class"]), quadrants)


def _distinct_draws(rng: np.random.Generator, pool: np.ndarray, count: int, size: int) -> np.ndarray:
    """Draw ``count`` ordered ``size``-tuples of distinct elements of ``pool``, uniformly: shape (count, size).

    Element ``j`` is drawn among the ``len(pool) - j`` not drawn yet (``rng.integers`` per column, shifted past
    the earlier ones), so pairs come from the same draws as they did before tuples existed.
    """
    columns: list[np.ndarray] = []
    for j in range(size):
        draw = rng.integers(len(pool) - j, size=count)
        for earlier in np.sort(np.stack(columns, axis=1), axis=1).T if columns else ():
            draw = draw + (draw >= earlier)  # past each earlier element, smallest first
        columns.append(draw)
    return pool[np.stack(columns, axis=1)].reshape(count, size)


def _resolve_classes(dataset: TileDataset, classes: Sequence[int | str] | None) -> list[int]:
    if classes is None:
        return list(range(len(dataset.classes)))
    resolved = set()
    for c in classes:
        if isinstance(c, str) and c in dataset.classes:
            resolved.add(dataset.classes.index(c))
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c < len(dataset.classes):
            resolved.add(int(c))
        else:
            raise FocusError(
                f"Unknown class {c!r}: pass class names or label numbers of {dataset.classes}."
            )
    return sorted(resolved)


def build_manifest(
    dataset: TileDataset,
    split: str = "test",
    per_class: int = 20,
    seed: int = 0,
    layout: str = "random",
    classes: Sequence[int | str] | None = None,
    *,
    grid: int = 2,
    targets: int = 2,
    eligible: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    confident: float | None = None,
    confident_model: str | None = None,
    probe: dict[str, Any] | CornerPatch | None = None,
) -> MosaicManifest:
    """Draw ``per_class`` mosaics for every target class from one held-out split.

    Each ``grid`` x ``grid`` mosaic holds ``targets`` distinct images of the target class and ``grid² - targets``
    distinct images of other classes (drawn uniformly from the other classes' images in the split). With
    ``layout="random"`` the target tiles are drawn per mosaic; otherwise they are
    :func:`focus_core.layouts.positions` (2x2 with two targets: ``LAYOUTS[layout]``). All draws come from
    ``numpy.random.default_rng(seed)``; the 2x2 two-target draws are the ones made before grids existed.

    Parameters
    ----------
    dataset : TileDataset
        The dataset whose indices the manifest lists; its fingerprint is recorded.
    split : str
        ``"val"`` or ``"test"``: never the split the model was trained on.
    per_class : int
        Mosaics per target class.
    seed : int
        Seed of every draw.
    layout : str
        One of :func:`focus_core.layouts.names_for` ``(grid, targets)``.
    classes : sequence of int or str, optional
        Target classes (labels or names); all classes by default.
    grid : int
        Tiles per side: 2 (the paper's), 3 or 4.
    targets : int
        Target tiles per mosaic, ``1 <= targets < grid²``.
    eligible : int64 tensor or sequence of int, optional
        Dataset indices that may be tiles (the grid pointing game's confidently classified images, from
        :func:`focus_core.confident.confident_indices`); every image of the split by default.
    confident, confident_model : optional
        The threshold and the weights' sha256 that chose ``eligible``: recorded in the manifest (and its hash).
    probe : dict or CornerPatch, optional
        A probe set's transformation of the non-target tiles (:class:`focus_core.probes.CornerPatch`, e.g.
        ``{"kind": "corner_patch", "size": 3, "seed": 0}``): recorded in the manifest (and its hash), stamped
        when the mosaics are composed; the same draws choose the tiles with or without it.

    Returns
    -------
    MosaicManifest
        Mosaics ordered by target class, ``per_class`` each.

    Raises
    ------
    FocusError
        For the training split, an unknown split, class, or a layout, grid or target count that does not fit
        (:func:`focus_core.layouts.check`), a class with fewer than ``targets`` (eligible) images in the split,
        or fewer than ``grid² - targets`` (eligible) images of other classes, or a probe that is unknown or does
        not fit in a tile's corner.

    Examples
    --------
    >>> from focus_core.data import load_digits
    >>> m = build_manifest(load_digits(tile_size=8), per_class=3, layout="top", classes=[0, 1])
    >>> [mosaic.target_quadrants for mosaic in m.mosaics] == [(0, 1)] * 6
    True
    >>> m = build_manifest(load_digits(tile_size=8), per_class=2, grid=3, targets=3, layout="scattered")
    >>> {mosaic.target_quadrants for mosaic in m.mosaics}
    {(0, 4, 8)}
    """
    if split == "train":
        raise FocusError(
            "Mosaics must use images the model was never trained on: pass split='test' or split='val'."
        )
    if split not in SPLITS:
        raise FocusError(f"Unknown split {split!r}: pass split='test' or split='val'.")
    if grid == 2 and targets == 2 and layout not in LAYOUTS:
        raise FocusError(f"Unknown layout {layout!r}: use one of {sorted(LAYOUTS)}.")
    layouts.check(layout, grid, targets)
    if not isinstance(per_class, (int, np.integer)) or isinstance(per_class, bool) or per_class < 1:
        raise FocusError(f"Expected per_class to be a positive integer but got {per_class!r}.")
    if (confident is None) != (confident_model is None) or (confident is not None and eligible is None):
        raise FocusError(
            "A confident mosaic set needs its threshold, the sha256 of the weights that chose its images and those "
            "images: pass confident, confident_model and eligible together."
        )
    patch = None if probe is None else CornerPatch.parse(probe)
    if patch is not None:
        patch.check_tile(int(dataset.tiles.shape[2]), int(dataset.tiles.shape[3]))
    target_classes = _resolve_classes(dataset, classes)
    members = dataset.indices(split).numpy()
    if eligible is not None:
        members = members[np.isin(members, np.asarray(torch.as_tensor(eligible, dtype=torch.int64)))]
    member_labels = dataset.labels.numpy()[members]
    tiles, others = grid * grid, grid * grid - targets
    chosen = "" if eligible is None else " eligible (confidently classified)"
    for c in target_classes:
        count = int((member_labels == c).sum())
        if count < targets:
            remedy = "add images" if eligible is None else "lower the confidence threshold"
            raise FocusError(
                f"The class {dataset.classes[c]!r} has {count}{chosen} image(s) in the {split!r} split: a "
                f"mosaic needs {_count(targets)}, so {remedy} or leave the class out with classes=[...]."
            )
        if len(members) - count < others:
            remedy = "add images of other classes to that split" if eligible is None else "lower the confidence threshold"
            raise FocusError(
                f"The {split!r} split has fewer than {_count(others)}{chosen} images outside class "
                f"{dataset.classes[c]!r}: {remedy}."
            )

    rng = np.random.default_rng(seed)
    fixed = layouts.positions(layout, grid, targets)
    rows, quadrants = [], []
    for c in target_classes:
        target_draws = _distinct_draws(rng, members[member_labels == c], per_class, targets)
        other_draws = _distinct_draws(rng, members[member_labels != c], per_class, others)
        if fixed is None:
            order = np.argsort(rng.random((per_class, tiles)), axis=1)
            target_q = np.sort(order[:, :targets], axis=1)
        else:
            target_q = np.tile(np.asarray(fixed), (per_class, 1))
        is_target = np.zeros((per_class, tiles), dtype=bool)
        np.put_along_axis(is_target, target_q, True, axis=1)
        row = np.empty((per_class, tiles), dtype=np.int64)
        # Boolean assignment fills each row left to right: targets, then others, in draw order.
        row[is_target] = target_draws.reshape(-1)
        row[~is_target] = other_draws.reshape(-1)
        rows.append(row)
        quadrants.append(target_q)
    mosaics = tuple(
        Mosaic(tuple(row.tolist()), c, tuple(q.tolist()))
        for c, block, qblock in zip(target_classes, rows, quadrants)
        for row, q in zip(block, qblock)
    )
    return MosaicManifest(
        dataset_fingerprint=dataset.fingerprint,
        split=split,
        per_class=int(per_class),
        seed=int(seed),
        layout=layout,
        mosaics=mosaics,
        grid=int(grid),
        targets=int(targets),
        confident=None if confident is None else float(confident),
        confident_model=confident_model,
        probe=patch,
    )


def _count(n: int) -> str:
    return {1: "one", 2: "two", 3: "three"}.get(n, str(n))


def target_mask(
    mosaics_or_manifest: MosaicManifest | Sequence[Mosaic], device: torch.device | str | None = None
) -> torch.Tensor:
    """Return a ``bool`` mask of shape ``(B, N²)``: True on each mosaic's target tiles.

    A list of mosaics gives its grid by its first mosaic's ``image_indices`` (an empty list: ``(0, 4)``).

    Examples
    --------
    >>> target_mask([Mosaic((0, 1, 2, 3), 0, (1, 2))]).tolist()
    [[False, True, True, False]]
    """
    if isinstance(mosaics_or_manifest, MosaicManifest):
        mosaics, tiles = mosaics_or_manifest.mosaics, mosaics_or_manifest.grid ** 2
    else:
        mosaics = mosaics_or_manifest
        tiles = len(mosaics[0].image_indices) if mosaics else 4
    rows = [i for i, m in enumerate(mosaics) for _ in m.target_quadrants]
    columns = [q for m in mosaics for q in m.target_quadrants]
    mask = torch.zeros(len(mosaics), tiles, dtype=torch.bool)
    mask[torch.tensor(rows, dtype=torch.int64), torch.tensor(columns, dtype=torch.int64)] = True
    return mask.to(device) if device is not None else mask
