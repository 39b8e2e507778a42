"""Seeded mosaic manifests and batched mosaic composition.

A mosaic is a 2x2 grid of tiles, numbered 0..3 in TL, TR, BL, BR order: two distinct images of
the target class and two distinct images of other classes, all from a split the model was not
trained on. A :class:`MosaicManifest` lists the mosaics of one set by dataset index; it is
deterministic (same dataset, seed and arguments, same manifest and :attr:`MosaicManifest.hash`
in every process). :func:`compose_mosaics` turns index rows into images with one gather.

This module holds the mosaic, the manifest, its seeded sampling and the target mask. Composition
(:func:`compose_mosaics`, :func:`compose_normalized`) lives in :mod:`focus_core.composition` and is
re-exported here, like :data:`LAYOUTS` from :mod:`focus_core.layouts`, so a mosaic set is used from one
import: ``from focus_core.mosaics import build_manifest, compose_normalized``.

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
from focus_core.layouts import LAYOUTS  # re-exported: mosaics.LAYOUTS

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
    """One mosaic: four dataset indices in TL, TR, BL, BR order and where its targets are.

    Examples
    --------
    >>> Mosaic(image_indices=(5, 9, 2, 7), target_class=3, target_quadrants=(0, 3))
    Mosaic(image_indices=(5, 9, 2, 7), target_class=3, target_quadrants=(0, 3))
    """

    image_indices: tuple[int, int, int, int]
    target_class: int
    target_quadrants: tuple[int, int]


@dataclass(frozen=True)
class MosaicManifest:
    """A deterministic set of mosaics drawn from one split of one dataset.

    Examples
    --------
    >>> m = MosaicManifest("abc", "test", 1, 0, "top", (Mosaic((4, 8, 1, 2), 3, (0, 1)),))
    >>> MosaicManifest.from_json(m.to_json()) == m
    True
    >>> m.index_tensor().tolist(), m.targets().tolist()
    ([[4, 8, 1, 2]], [3])
    """

    dataset_fingerprint: str
    split: str
    per_class: int
    seed: int
    layout: str
    mosaics: tuple[Mosaic, ...]

    def __len__(self) -> int:
        return len(self.mosaics)

    def to_json(self) -> str:
        """Return the canonical JSON text (:func:`focus_core.hashing.canonical_json`) of this manifest."""
        return canonical_json(self._payload())

    def _payload(self) -> dict[str, Any]:
        """The manifest as a JSON value: what :meth:`to_json` writes and :attr:`hash` hashes."""
        return {
            "format": _FORMAT,
            "dataset_fingerprint": self.dataset_fingerprint,
            "split": self.split,
            "per_class": self.per_class,
            "seed": self.seed,
            "layout": self.layout,
            "mosaics": [
                {
                    "image_indices": list(m.image_indices),
                    "target_class": m.target_class,
                    "target_quadrants": list(m.target_quadrants),
                }
                for m in self.mosaics
            ],
        }

    @classmethod
    def from_json(cls, text: str) -> MosaicManifest:
        """Rebuild a manifest from :meth:`to_json`'s text."""
        try:
            payload = json.loads(text)
            return cls(
                dataset_fingerprint=str(payload["dataset_fingerprint"]),
                split=str(payload["split"]),
                per_class=int(payload["per_class"]),
                seed=int(payload["seed"]),
                layout=str(payload["layout"]),
                mosaics=tuple(_mosaic_from_dict(m) for m in payload["mosaics"]),
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
        """Return the dataset indices as ``int64`` of shape ``(M, 4)`` in TL, TR, BL, BR order."""
        return torch.tensor([m.image_indices for m in self.mosaics], dtype=torch.int64).reshape(-1, 4)

    def targets(self) -> torch.Tensor:
        """Return the target class of every mosaic as ``int64`` of shape ``(M,)``."""
        return torch.tensor([m.target_class for m in self.mosaics], dtype=torch.int64)


def _mosaic_from_dict(m: dict) -> Mosaic:
    indices = tuple(int(i) for i in m["image_indices"])
    quadrants = tuple(int(q) for q in m["target_quadrants"])
    if len(indices) != 4 or len(quadrants) != 2:
        raise ValueError(f"a mosaic needs 4 image indices and 2 target quadrants, got {m}")
    return Mosaic(indices, int(m["target_class"]), quadrants)  # type: ignore[arg-type]


def _distinct_pairs(rng: np.random.Generator, pool: np.ndarray, count: int) -> np.ndarray:
    """Draw ``count`` ordered pairs of distinct elements of ``pool``, uniformly: shape (count, 2)."""
    first = rng.integers(len(pool), size=count)
    second = rng.integers(len(pool) - 1, size=count)
    second = second + (second >= first)
    return pool[np.stack([first, second], axis=1)]


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
) -> MosaicManifest:
    """Draw ``per_class`` mosaics for every target class from one held-out split.

    Each mosaic holds two distinct images of the target class and two distinct images of
    other classes (drawn uniformly from the other classes' images in the split). With
    ``layout="random"`` the two target quadrants are drawn per mosaic; otherwise they are
    ``LAYOUTS[layout]``. All draws come from ``numpy.random.default_rng(seed)``.

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
        A key of :data:`LAYOUTS`.
    classes : sequence of int or str, optional
        Target classes (labels or names); all classes by default.

    Returns
    -------
    MosaicManifest
        Mosaics ordered by target class, ``per_class`` each.

    Raises
    ------
    FocusError
        For the training split, an unknown split, layout or class, a class with fewer than
        two images in the split, or fewer than two images of other classes.

    Examples
    --------
    >>> from focus_core.data import load_digits
    >>> m = build_manifest(load_digits(tile_size=8), per_class=3, layout="top", classes=[0, 1])
    >>> [mosaic.target_quadrants for mosaic in m.mosaics] == [(0, 1)] * 6
    True
    """
    if split == "train":
        raise FocusError(
            "Mosaics must use images the model was never trained on: pass split='test' or split='val'."
        )
    if split not in SPLITS:
        raise FocusError(f"Unknown split {split!r}: pass split='test' or split='val'.")
    if layout not in LAYOUTS:
        raise FocusError(f"Unknown layout {layout!r}: use one of {sorted(LAYOUTS)}.")
    if not isinstance(per_class, (int, np.integer)) or isinstance(per_class, bool) or per_class < 1:
        raise FocusError(f"Expected per_class to be a positive integer but got {per_class!r}.")
    targets = _resolve_classes(dataset, classes)
    members = dataset.indices(split).numpy()
    member_labels = dataset.labels.numpy()[members]
    for c in targets:
        count = int((member_labels == c).sum())
        if count < 2:
            raise FocusError(
                f"The class {dataset.classes[c]!r} has {count} image(s) in the {split!r} split: a "
                f"mosaic needs two, so add images or leave the class out with classes=[...]."
            )
        if len(members) - count < 2:
            raise FocusError(
                f"The {split!r} split has fewer than two images outside class "
                f"{dataset.classes[c]!r}: add images of other classes to that split."
            )

    rng = np.random.default_rng(seed)
    fixed = LAYOUTS[layout]
    rows, quadrants = [], []
    for c in targets:
        target_pairs = _distinct_pairs(rng, members[member_labels == c], per_class)
        other_pairs = _distinct_pairs(rng, members[member_labels != c], per_class)
        if fixed is None:
            order = np.argsort(rng.random((per_class, 4)), axis=1)
            target_q = np.sort(order[:, :2], axis=1)
        else:
            target_q = np.tile(np.asarray(fixed), (per_class, 1))
        is_target = np.zeros((per_class, 4), dtype=bool)
        np.put_along_axis(is_target, target_q, True, axis=1)
        row = np.empty((per_class, 4), dtype=np.int64)
        # Boolean assignment fills each row left to right: targets, then others, in draw order.
        row[is_target] = target_pairs.reshape(-1)
        row[~is_target] = other_pairs.reshape(-1)
        rows.append(row)
        quadrants.append(target_q)
    mosaics = tuple(
        Mosaic(tuple(row.tolist()), c, tuple(q.tolist()))  # type: ignore[arg-type]
        for c, block, qblock in zip(targets, rows, quadrants)
        for row, q in zip(block, qblock)
    )
    return MosaicManifest(
        dataset_fingerprint=dataset.fingerprint,
        split=split,
        per_class=int(per_class),
        seed=int(seed),
        layout=layout,
        mosaics=mosaics,
    )


def target_mask(
    mosaics_or_manifest: MosaicManifest | Sequence[Mosaic], device: torch.device | str | None = None
) -> torch.Tensor:
    """Return a ``bool`` mask of shape ``(B, 4)``: True on each mosaic's target quadrants.

    Examples
    --------
    >>> target_mask([Mosaic((0, 1, 2, 3), 0, (1, 2))]).tolist()
    [[False, True, True, False]]
    """
    mosaics = (
        mosaics_or_manifest.mosaics
        if isinstance(mosaics_or_manifest, MosaicManifest)
        else mosaics_or_manifest
    )
    quadrants = torch.tensor([m.target_quadrants for m in mosaics], dtype=torch.int64).reshape(-1, 2)
    mask = torch.zeros(quadrants.shape[0], 4, dtype=torch.bool)
    mask.scatter_(1, quadrants, True)
    return mask.to(device) if device is not None else mask
