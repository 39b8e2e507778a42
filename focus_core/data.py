"""Datasets as uint8 tile tensors with labels, class names, relpaths and a seeded split per image.

Two sources: scikit-learn's bundled handwritten digits (:func:`load_digits`, the default for the
demo and the tests) and any ImageFolder directory (:func:`focus_core.image_folder.load_image_folder`). Both return a
:class:`TileDataset`: every tile decoded and resized once, kept as ``uint8`` so that mosaics are
composed by indexing and normalised to float only on the device, after composition.

This module holds the dataset type, the seeded stratified split and the digits. Reading an ImageFolder
(listing, decoding, the tile cache) lives in :mod:`focus_core.image_folder`, which builds on this one.

Examples
--------
>>> from focus_core.data import load_digits
>>> digits = load_digits(seed=0, tile_size=32)
>>> digits.tiles.shape, digits.tiles.dtype
(torch.Size([1797, 1, 32, 32]), torch.uint8)
>>> len(digits.indices("train")) + len(digits.indices("val")) + len(digits.indices("test"))
1797
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from focus_core.errors import FocusError
from focus_core.hashing import canonical_hash

__all__ = ["SPLITS", "TileDataset", "load_digits"]

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The split names, in the order the seeded split assigns them."""


@dataclass(frozen=True, eq=False)
class TileDataset:
    """Images of one dataset as uint8 tiles, with labels, relpaths, class names and splits.

    Parameters
    ----------
    name : str
        ``"digits"`` or the ImageFolder's folder name.
    tiles : torch.Tensor
        ``uint8`` tiles of shape ``(N, C, h, w)`` (possibly backed by a memory-mapped cache file).
    labels : torch.Tensor
        ``int64`` labels of shape ``(N,)``; they index into ``classes``.
    splits : tuple of str
        The split (one of :data:`SPLITS`) of every image.
    relpaths : tuple of str
        The stable identity of every image (``"digits/00017"`` or ``"cat/001.jpg"``).
    classes : tuple of str
        Class names.
    mean, std : tuple of float
        Per-channel normalisation constants on the ``[0, 1]`` scale.
    resize : int or None
        The shorter side images were resized to before the centre crop (``None``: tiles made otherwise).

    Examples
    --------
    >>> ds = load_digits(tile_size=16)
    >>> x = ds.normalize(ds.tiles[ds.indices("test")[:4]])
    >>> x.dtype, tuple(x.shape)
    (torch.float32, (4, 1, 16, 16))
    """

    name: str
    tiles: torch.Tensor
    labels: torch.Tensor
    splits: tuple[str, ...]
    relpaths: tuple[str, ...]
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None

    def __post_init__(self) -> None:
        if self.tiles.dtype != torch.uint8 or self.tiles.ndim != 4:
            raise FocusError(
                f"Expected uint8 tiles of shape (N, C, h, w) but got {self.tiles.dtype} "
                f"{tuple(self.tiles.shape)}: decode images to uint8 before building a TileDataset."
            )
        n, c = self.tiles.shape[:2]
        if self.labels.shape != (n,) or self.labels.dtype != torch.int64:
            raise FocusError(
                f"Expected int64 labels of shape ({n},) but got {self.labels.dtype} "
                f"{tuple(self.labels.shape)}: pass one int64 label per tile."
            )
        if len(self.splits) != n or len(self.relpaths) != n:
            raise FocusError(
                f"Expected {n} splits and relpaths but got {len(self.splits)} and "
                f"{len(self.relpaths)}: pass one split and one relpath per tile."
            )
        unknown = set(self.splits) - set(SPLITS)
        if unknown:
            raise FocusError(f"Unknown split names {sorted(unknown)}: use only {SPLITS}.")
        if len(self.mean) != c or len(self.std) != c:
            raise FocusError(
                f"Expected {c} mean and std values (one per channel) but got "
                f"{len(self.mean)} and {len(self.std)}: pass one per channel."
            )
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise FocusError(
                f"Labels must lie in [0, {len(self.classes)}): pass one class name per label value."
            )

    def __len__(self) -> int:
        return int(self.tiles.shape[0])

    @property
    def tile_size(self) -> int:
        """The side of a (square) tile in pixels."""
        return int(self.tiles.shape[-1])

    @functools.cached_property
    def _split_array(self) -> np.ndarray:
        return np.asarray(self.splits)

    def indices(self, split: str) -> torch.Tensor:
        """Return the ``int64`` indices of the images in ``split``, in increasing order.

        Examples
        --------
        >>> ds = load_digits(tile_size=8)
        >>> idx = ds.indices("test")
        >>> set(ds.splits[i] for i in idx.tolist())
        {'test'}
        """
        if split not in SPLITS:
            raise FocusError(f"Unknown split {split!r}: use one of {SPLITS}.")
        return torch.from_numpy(np.flatnonzero(self._split_array == split).astype(np.int64))

    def normalize(self, x_uint8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Return ``(x / 255 - mean) / std`` as floats on the device of ``x_uint8``.

        Parameters
        ----------
        x_uint8 : torch.Tensor
            ``uint8`` images of shape ``(..., C, H, W)``: tiles or composed mosaics.
        dtype : torch.dtype
            The floating point type of the result.

        Examples
        --------
        >>> ds = load_digits(tile_size=8)
        >>> x = ds.normalize(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8))
        >>> bool(torch.allclose(x, torch.tensor((1 - ds.mean[0]) / ds.std[0])))
        True
        """
        if x_uint8.dtype != torch.uint8 or x_uint8.ndim < 3 or x_uint8.shape[-3] != len(self.mean):
            raise FocusError(
                f"Expected uint8 images of shape (..., {len(self.mean)}, H, W) but got "
                f"{x_uint8.dtype} {tuple(x_uint8.shape)}: normalise tiles or mosaics of this dataset."
            )
        mean, std = self._channel_stats(dtype, x_uint8.device)
        return (x_uint8.to(dtype) / 255 - mean) / std

    def normalization(self, dtype: torch.dtype, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, shift)``, ``(C, 1, 1)`` each, with ``normalize(x) == x * scale + shift`` up to rounding.

        ``scale = 1 / (255 std)`` and ``shift = -mean / std``, built once per dtype and device: what a fused
        kernel (:func:`focus_core.mosaics.compose_normalized`) needs to normalise ``uint8`` pixels in one pass.

        Examples
        --------
        >>> ds = load_digits(tile_size=8)
        >>> scale, shift = ds.normalization(torch.float32, "cpu")
        >>> x = torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)
        >>> bool(torch.allclose(x * scale + shift, ds.normalize(x)))
        True
        """
        device = torch.device(device)
        key = ("affine", dtype, device)
        coefficients = self._stats_cache.get(key)
        if coefficients is None:
            mean, std = (torch.tensor(values, dtype=torch.float64) for values in (self.mean, self.std))
            shape = (len(self.mean), 1, 1)
            coefficients = ((1 / (255 * std)).to(dtype).view(shape).to(device),
                            (-mean / std).to(dtype).view(shape).to(device))
            self._stats_cache[key] = coefficients
        return coefficients

    def _channel_stats(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean`` and ``std`` as ``(C, 1, 1)`` tensors, built once per dtype and device (no copy per batch)."""
        key = (dtype, device)
        stats = self._stats_cache.get(key)
        if stats is None:
            shape = (len(self.mean), 1, 1)
            stats = (torch.tensor(self.mean, dtype=dtype).view(shape).to(device),
                     torch.tensor(self.std, dtype=dtype).view(shape).to(device))
            self._stats_cache[key] = stats  # a dict assignment: safe across threads, at worst built twice
        return stats

    @functools.cached_property
    def _stats_cache(self) -> dict[tuple, tuple[torch.Tensor, torch.Tensor]]:
        return {}

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 over name, classes, relpaths, labels, splits and how the tiles were made; the same in every process.

        The tile size, the resize before the crop and the normalisation are part of it: the same images at
        another size are other pixels for the model, so their mosaic sets and evaluations are other ones.
        """
        payload = {
            "name": self.name,
            "classes": list(self.classes),
            "relpaths": list(self.relpaths),
            "labels": self.labels.tolist(),
            "splits": list(self.splits),
            "tile_size": self.tile_size,
            "resize": self.resize,
            # 9 significant digits: a training split's mean differs in its last bits between thread counts
            "mean": [f"{m:.9g}" for m in self.mean],
            "std": [f"{v:.9g}" for v in self.std],
        }
        return canonical_hash(payload)


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if (
        len(values) != 3
        or any(not np.isfinite(f) or f < 0 for f in values)
        or values[0] <= 0
        or abs(sum(values) - 1.0) > 1e-6
    ):
        raise FocusError(
            f"Expected three non-negative split fractions (train, val, test) with train > 0 that "
            f"sum to 1 but got {tuple(fractions)}: pass e.g. (0.7, 0.15, 0.15)."
        )
    return values  # type: ignore[return-value]


def check_tile_size(tile_size: int, resize: int | None = None) -> None:
    if not isinstance(tile_size, int) or tile_size < 2:
        raise FocusError(f"Expected tile_size to be an integer >= 2 but got {tile_size!r}: pass e.g. 224.")
    if resize is not None and (not isinstance(resize, int) or resize < tile_size):
        raise FocusError(
            f"Expected resize to be an integer >= tile_size ({tile_size}) but got {resize!r}: "
            f"pass e.g. resize=256 with tile_size=224."
        )


def stratified_splits(
    labels: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> tuple[str, ...]:
    """Assign every image a split: per class, a seeded permutation cut at the cumulative fractions."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=object)
    bounds = np.cumsum(fractions)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        cuts = np.rint(bounds * len(members)).astype(int)
        cuts[-1] = len(members)
        for split, part in zip(SPLITS, np.split(members, cuts[:-1])):
            out[part] = split
    return tuple(out.tolist())


def load_digits(
    seed: int = 0, tile_size: int = 32, fractions: Sequence[float] = (0.6, 0.2, 0.2)
) -> TileDataset:
    """Load scikit-learn's bundled 8x8 handwritten digits as one-channel uint8 tiles.

    Pixel values 0..16 are scaled to 0..255 and the images upsampled bilinearly to
    ``tile_size``. The split is stratified per class and seeded (the same in every process).
    ``mean`` and ``std`` are measured on the training split.

    Parameters
    ----------
    seed : int
        Seed of the stratified split.
    tile_size : int
        Side of a tile in pixels (mosaics are twice as large).
    fractions : sequence of float
        Shares of the train, val and test splits.

    Returns
    -------
    TileDataset
        1797 tiles of shape ``(1, tile_size, tile_size)``, classes ``"0"`` to ``"9"``.

    Examples
    --------
    >>> ds = load_digits(tile_size=32)
    >>> ds.classes[:3], ds.relpaths[17], ds.tile_size
    (('0', '1', '2'), 'digits/00017', 32)
    """
    from sklearn.datasets import load_digits as sklearn_digits

    check_tile_size(tile_size)
    fractions = check_fractions(fractions)
    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)
    if tile_size != images.shape[-1]:
        images = torch.nn.functional.interpolate(
            images, size=(tile_size, tile_size), mode="bilinear", align_corners=False
        )
    tiles = images.round().clamp_(0, 255).to(torch.uint8).contiguous()
    labels = np.asarray(bunch.target, dtype=np.int64)
    splits = stratified_splits(labels, fractions, seed)
    train = tiles[torch.from_numpy(np.asarray(splits) == "train")].double() / 255
    return TileDataset(
        name="digits",
        tiles=tiles,
        labels=torch.from_numpy(labels),
        splits=splits,
        relpaths=tuple(f"digits/{i:05d}" for i in range(len(labels))),
        classes=tuple(str(c) for c in range(10)),
        mean=(float(train.mean()),),
        std=(float(train.std()),),
    )
