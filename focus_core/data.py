"""Datasets as uint8 tile tensors with labels, class names, relpaths and a seeded split per image.

Two sources: scikit-learn's bundled handwritten digits (:func:`load_digits`, the default for the
demo and the tests) and any ImageFolder directory (:func:`load_image_folder`). Both return a
:class:`TileDataset`: every tile decoded and resized once, kept as ``uint8`` so that mosaics are
composed by indexing and normalised to float only on the device, after composition.

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
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from focus_core.errors import FocusError
from focus_core.hashing import canonical_hash

__all__ = ["SPLITS", "TileDataset", "load_digits", "load_image_folder"]

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The split names, in the order the seeded split assigns them."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CACHE_FORMAT = 1


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


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
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


def _check_tile_size(tile_size: int, resize: int | None = None) -> None:
    if not isinstance(tile_size, int) or tile_size < 2:
        raise FocusError(f"Expected tile_size to be an integer >= 2 but got {tile_size!r}: pass e.g. 224.")
    if resize is not None and (not isinstance(resize, int) or resize < tile_size):
        raise FocusError(
            f"Expected resize to be an integer >= tile_size ({tile_size}) but got {resize!r}: "
            f"pass e.g. resize=256 with tile_size=224."
        )


def _stratified_splits(
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

    _check_tile_size(tile_size)
    fractions = _check_fractions(fractions)
    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)
    if tile_size != images.shape[-1]:
        images = torch.nn.functional.interpolate(
            images, size=(tile_size, tile_size), mode="bilinear", align_corners=False
        )
    tiles = images.round().clamp_(0, 255).to(torch.uint8).contiguous()
    labels = np.asarray(bunch.target, dtype=np.int64)
    splits = _stratified_splits(labels, fractions, seed)
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


def _images_under(folder: Path) -> list[Path]:
    """All image files below ``folder`` (recursively, hidden entries skipped), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(
            Path(dirpath, f)
            for f in filenames
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        )
    return sorted(found)


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_image_folder(root: Path) -> tuple[list[Path], list[str], list[str], list[str | None]]:
    """Return (paths, class name per image, class names, split per image or None)."""
    names = {p.name for p in _class_folders(root)}
    held_out = [s for s in ("val", "valid", "test") if s in names]
    if "val" in names and "valid" in names:
        raise FocusError(f"The folder '{root}' has both val/ and valid/: keep only one of them.")
    if "train" in names and not held_out:
        raise FocusError(
            f"The folder '{root}' has a train/ folder but no val/, valid/ or test/ folder: add one, "
            f"or point root at '{root / 'train'}' for a seeded split."
        )
    if "train" in names:
        groups = [("train", root / "train")] + [
            ("val" if s == "valid" else s, root / s) for s in held_out
        ]
    else:
        groups = [(None, root)]
    per_class: dict[str, int] = {}
    records: list[tuple[Path, str, str | None]] = []
    for split, folder in groups:
        for class_dir in _class_folders(folder):
            images = _images_under(class_dir)
            per_class[class_dir.name] = per_class.get(class_dir.name, 0) + len(images)
            records.extend((path, class_dir.name, split) for path in images)
    if not records:
        raise FocusError(
            f"The folder '{root}' contains no images in class sub-folders: put the images of each "
            f"class in a folder of its own (e.g. '{root / 'cat'}/001.jpg')."
        )
    classes = sorted(per_class)
    if len(classes) < 2:
        raise FocusError(
            f"The folder '{root}' has a single class ({classes[0]!r}): Focus needs images of at "
            f"least two classes, so add another class folder."
        )
    for name in classes:
        if per_class[name] < 2:
            raise FocusError(
                f"The class {name!r} in '{root}' has {per_class[name]} image(s): add at least two "
                f"images to it or remove the folder."
            )
    paths, labels, splits = zip(*records)
    return list(paths), list(labels), classes, list(splits)


def _decode(path: Path, tile_size: int, resize: int) -> np.ndarray:
    """Decode one image as RGB, resize its shorter side to ``resize`` and centre-crop ``tile_size``."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2 import functional as F

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise FocusError(
            f"The file '{path}' cannot be read as an image ({error.__class__.__name__}): "
            f"replace or remove it."
        ) from None
    tensor = F.pil_to_tensor(rgb)
    tensor = F.resize(tensor, [resize], antialias=True)
    return F.center_crop(tensor, [tile_size, tile_size]).numpy()


def _cache_key(root: Path, paths: list[Path], tile_size: int, resize: int) -> str:
    listing = []
    for path in paths:
        stat = path.stat()
        listing.append([path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    payload = {"format": _CACHE_FORMAT, "files": listing, "tile_size": tile_size, "resize": resize}
    return canonical_hash(payload, sort_keys=False)  # insertion order: the key that caches were first written under


def _load_cached(path: Path, shape: tuple[int, ...]) -> torch.Tensor | None:
    """Memory-map a cached tile array; ``None`` if it is missing or does not match ``shape``."""
    if not path.is_file():
        return None
    try:
        # Copy-on-write mapping: pages are read lazily like mmap_mode="r", but a write to the
        # tensor stays private instead of crashing on a read-only page or changing the file.
        array = np.load(path, mmap_mode="c")
    except (ValueError, OSError):
        return None
    if array.dtype != np.uint8 or array.shape != shape:
        return None
    return torch.from_numpy(array)


def _save_cached(path: Path, tiles: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(partial, "wb") as handle:
        np.save(handle, tiles)
    os.replace(partial, path)


def _decode_all(paths: list[Path], tile_size: int, resize: int) -> np.ndarray:
    from tqdm.auto import tqdm

    tiles = np.empty((len(paths), 3, tile_size, tile_size), dtype=np.uint8)
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        decoded = pool.map(lambda p: _decode(p, tile_size, resize), paths)
        progress = tqdm(
            decoded,
            total=len(paths),
            desc="decoding tiles",
            unit="img",
            disable=len(paths) < 256 or not sys.stderr.isatty(),
        )
        for i, tile in enumerate(progress):
            tiles[i] = tile
    return tiles


def load_image_folder(
    root: str | os.PathLike[str],
    seed: int = 0,
    tile_size: int = 224,
    resize: int = 256,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    cache_dir: str | os.PathLike[str] | None = None,
) -> TileDataset:
    """Load an ImageFolder directory (one sub-folder per class) as three-channel uint8 tiles.

    Every image is converted to RGB, its shorter side resized to ``resize`` and the centre
    ``tile_size`` square cropped (the paper: 256 then 224, 448x448 mosaics). A root with
    ``train/`` and ``val/`` (or ``valid/``) and/or ``test/`` sub-folders, each holding class
    folders, uses those as the splits; otherwise the split is stratified per class and seeded.

    Parameters
    ----------
    root : path
        The dataset folder; its name becomes the dataset's name.
    seed : int
        Seed of the stratified split (unused with predefined split folders).
    tile_size : int
        Side of the centre crop in pixels.
    resize : int
        The shorter side after resizing, before cropping (``>= tile_size``).
    fractions : sequence of float
        Shares of the train, val and test splits.
    cache_dir : path, optional
        Where decoded tiles are kept as a ``uint8`` ``.npy`` file keyed by the folder listing
        (names, sizes, modification times), ``tile_size`` and ``resize``; a later call with the
        same key memory-maps it instead of decoding again.

    Returns
    -------
    TileDataset
        Tiles ``(N, 3, tile_size, tile_size)``, ImageNet mean and std, relpaths relative to ``root``.

    Raises
    ------
    FocusError
        For a missing or empty folder, a single class, a class with fewer than two images,
        an unreadable image or bad fractions.

    Examples
    --------
    >>> ds = load_image_folder("data/dogs_vs_cats", cache_dir="cache")  # doctest: +SKIP
    >>> ds.tiles.shape[1:]  # doctest: +SKIP
    torch.Size([3, 224, 224])
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FocusError(f"The folder '{root}' does not exist: pass an ImageFolder directory.")
    _check_tile_size(tile_size, resize)
    fractions = _check_fractions(fractions)
    paths, label_names, classes, given_splits = _list_image_folder(root)
    label_of = {name: i for i, name in enumerate(classes)}
    labels = np.asarray([label_of[name] for name in label_names], dtype=np.int64)
    if given_splits[0] is None:
        splits = _stratified_splits(labels, fractions, seed)
    else:
        splits = tuple(str(s) for s in given_splits)

    shape = (len(paths), 3, tile_size, tile_size)
    tiles = None
    cache_file = None
    if cache_dir is not None:
        key = _cache_key(root, paths, tile_size, resize)
        cache_file = Path(cache_dir).expanduser() / f"tiles-{key}.npy"
        tiles = _load_cached(cache_file, shape)
    if tiles is None:
        array = _decode_all(paths, tile_size, resize)
        if cache_file is not None:
            _save_cached(cache_file, array)
        tiles = torch.from_numpy(array)
    return TileDataset(
        name=root.resolve().name,
        tiles=tiles,
        labels=torch.from_numpy(labels),
        splits=splits,
        relpaths=tuple(p.relative_to(root).as_posix() for p in paths),
        classes=tuple(classes),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        resize=resize,
    )
