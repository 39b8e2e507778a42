"""ImageFolder directories as uint8 tiles: listing the class folders, decoding and the tile cache.

:func:`load_image_folder` reads a folder with one sub-folder per class (and optionally ``train/``, ``val/``
or ``valid/``, ``test/`` split folders), decodes every image once to a centre-cropped ``uint8`` tile and
returns a :class:`focus_core.data.TileDataset`. With a ``cache_dir`` the decoded tiles are kept as one
``.npy`` file keyed by the folder listing and memory-mapped by later calls.

:mod:`focus_core.data` re-exports :func:`load_image_folder`: import it from there, with the other loaders
(``from focus_core.image_folder import load_image_folder``).

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> from PIL import Image
>>> tmp = tempfile.TemporaryDirectory()
>>> root = Path(tmp.name) / "shapes"
>>> for name, colour in [("red", (255, 0, 0)), ("blue", (0, 0, 255))]:
...     (root / name).mkdir(parents=True)
...     for i in range(2):
...         Image.new("RGB", (40, 30), colour).save(root / name / f"{i}.png")
>>> ds = load_image_folder(root, tile_size=16, resize=20, fractions=(0.5, 0.5, 0.0))
>>> ds.name, ds.classes, ds.tiles.shape
('shapes', ('blue', 'red'), torch.Size([4, 3, 16, 16]))
>>> tmp.cleanup()
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from focus_core.data import TileDataset, check_fractions, check_tile_size, stratified_splits
from focus_core.errors import FocusError
from focus_core.folder_classes import class_folders, split_folders
from focus_core.hashing import canonical_hash
from focus_core.sizes import default_resize, size_warning


__all__ = ["load_image_folder"]

_LOG = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CACHE_FORMAT = 1


def _images_under(folder: Path) -> list[Path]:
    """All image files below ``folder`` (recursively, hidden entries skipped, symbolic links followed), sorted.

    Raises
    ------
    FocusError
        When a folder is reached twice through symbolic links (a link loop, which would be walked for ever, or a
        link to a folder already listed, whose images would count twice).
    """
    found = []
    visited = {_identity(folder)}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in dirnames:
            identity = _identity(Path(dirpath, name))
            if identity in visited:
                raise FocusError(
                    f"The folder '{Path(dirpath, name)}' is reached twice through symbolic links (it leads back to "
                    f"'{os.path.realpath(Path(dirpath, name))}'): remove the link or make it point outside "
                    f"'{folder}'."
                )
            visited.add(identity)
        found.extend(
            Path(dirpath, f)
            for f in filenames
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        )
    return sorted(found)


def _identity(folder: Path) -> tuple[int, int]:
    """``(device, inode)`` of the folder ``folder`` leads to (links followed): the same for every way to reach it."""
    status = os.stat(folder)
    return status.st_dev, status.st_ino


def _list_image_folder(root: Path) -> tuple[list[Path], list[str], list[str], list[str | None]]:
    """Return (paths, class name per image, class names, split per image or None)."""
    per_class: dict[str, int] = {}
    records: list[tuple[Path, str, str | None]] = []
    for split, folder in split_folders(root):
        for class_dir in class_folders(folder):
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


def _decode(path: Path, tile_size: int, resize: int) -> tuple[np.ndarray, int]:
    """Decode one image as RGB, resize its shorter side to ``resize`` and centre-crop ``tile_size``.

    Returns the tile and the image's own shorter side.
    """
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2 import functional as F

    try:
        with Image.open(path) as image:  # reads the header only: a decompression bomb is refused before decoding
            if image.width * image.height > (Image.MAX_IMAGE_PIXELS or float("inf")):
                raise Image.DecompressionBombError(path)  # PIL only warns up to twice its limit
            rgb = image.convert("RGB")
    except Image.DecompressionBombError:
        raise FocusError(
            f"The image '{path}' claims more than {Image.MAX_IMAGE_PIXELS:,} pixels (a decompression bomb, or a "
            "scan too large to tile): shrink it to a few megapixels or remove it."
        ) from None
    except (UnidentifiedImageError, OSError) as error:
        raise FocusError(
            f"The file '{path}' cannot be read as an image ({error.__class__.__name__}): "
            f"replace or remove it."
        ) from None
    tensor = F.pil_to_tensor(rgb)
    side = min(rgb.width, rgb.height)
    tensor = F.resize(tensor, [resize], antialias=True)
    return F.center_crop(tensor, [tile_size, tile_size]).numpy(), side


def _shorter_sides(paths: list[Path]) -> np.ndarray:
    """Every image's shorter side, read from the file headers only (nothing is decoded)."""
    from PIL import Image

    def side(path: Path) -> int:
        with Image.open(path) as image:
            return min(image.size)

    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        return np.fromiter(pool.map(side, paths), dtype=np.int64, count=len(paths))


def _size_facts(sides: np.ndarray, resize: int) -> dict[str, int]:
    """What :func:`focus_core.sizes.size_warning` judges: the smallest shorter side and how many are upscaled."""
    return {"smallest": int(sides.min()), "upscaled": int((sides < resize).sum()), "images": int(sides.size)}


def _facts_file(cache_file: Path) -> Path:
    """The image sizes beside a cached tile array (its tiles no longer tell them)."""
    return cache_file.with_name(cache_file.stem + ".sizes.json")


def _read_facts(cache_file: Path) -> dict[str, int] | None:
    try:
        facts = json.loads(_facts_file(cache_file).read_text())
        return {key: int(facts[key]) for key in ("smallest", "upscaled", "images")}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _warn_about_sizes(tile_size: int, resize: int, facts: dict[str, int]) -> None:
    message = size_warning(tile_size, resize, smallest_side=facts["smallest"], upscaled=facts["upscaled"],
                           images=facts["images"])
    if message:
        _LOG.warning(message)


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


def _decode_all(paths: list[Path], tile_size: int, resize: int) -> tuple[np.ndarray, np.ndarray]:
    """The tiles ``(N, 3, tile_size, tile_size)`` and every image's own shorter side ``(N,)``."""
    from tqdm.auto import tqdm

    tiles = np.empty((len(paths), 3, tile_size, tile_size), dtype=np.uint8)
    sides = np.empty(len(paths), dtype=np.int64)
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
        for i, (tile, side) in enumerate(progress):
            tiles[i], sides[i] = tile, side
    return tiles, sides


def load_image_folder(
    root: str | os.PathLike[str],
    seed: int = 0,
    tile_size: int = 224,
    resize: int | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    cache_dir: str | os.PathLike[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> TileDataset:
    """Load an ImageFolder directory (one sub-folder per class) as three-channel uint8 tiles.

    Every image is converted to RGB, its shorter side resized to ``resize`` and the centre
    ``tile_size`` square cropped (the paper: 256 then 224, 448x448 mosaics). One warning line (logger
    ``focus_core.image_folder``) says when resizing upscales images or the crop keeps less than half of each
    resized square (:func:`focus_core.sizes.size_warning`). A root with
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
    resize : int, optional
        The shorter side after resizing, before cropping (``>= tile_size``); ``None``: 8/7 of ``tile_size``
        (:func:`focus_core.sizes.default_resize`, 256 for 224).
    fractions : sequence of float
        Shares of the train, val and test splits.
    cache_dir : path, optional
        Where decoded tiles are kept as a ``uint8`` ``.npy`` file keyed by the folder listing
        (names, sizes, modification times), ``tile_size`` and ``resize``; a later call with the
        same key memory-maps it instead of decoding again.
    mean, std : sequence of float, optional
        The per-channel normalisation (three values each, on the ``[0, 1]`` scale); ``None``: ImageNet's. They
        are part of the dataset's fingerprint, not of the tile cache's key (the cached tiles are ``uint8``).

    Returns
    -------
    TileDataset
        Tiles ``(N, 3, tile_size, tile_size)``, ``mean`` and ``std`` (ImageNet's by default), relpaths relative to
        ``root``.

    Raises
    ------
    FocusError
        For a missing or empty folder, a single class, a class with fewer than two images,
        an unreadable image, bad fractions, or a ``mean`` / ``std`` that is not three values (``std`` above 0).

    Examples
    --------
    >>> ds = load_image_folder("data/dogs_vs_cats", cache_dir="cache")  # doctest: +SKIP
    >>> ds.tiles.shape[1:]  # doctest: +SKIP
    torch.Size([3, 224, 224])
    """
    # focus_core.data re-exports this function, so it is imported here, on first use, not at the top

    root = Path(root).expanduser()
    if not root.is_dir():
        raise FocusError(f"The folder '{root}' does not exist: pass an ImageFolder directory.")
    resize = default_resize(tile_size) if resize is None else resize
    check_tile_size(tile_size, resize)
    fractions = check_fractions(fractions)
    mean, std = _normalisation(mean, std)
    paths, label_names, classes, given_splits = _list_image_folder(root)
    label_of = {name: i for i, name in enumerate(classes)}
    labels = np.asarray([label_of[name] for name in label_names], dtype=np.int64)
    if given_splits[0] is None:
        splits = stratified_splits(labels, fractions, seed)
    else:
        splits = tuple(str(s) for s in given_splits)

    shape = (len(paths), 3, tile_size, tile_size)
    tiles, facts = None, None
    cache_file = None
    if cache_dir is not None:
        key = _cache_key(root, paths, tile_size, resize)
        cache_file = Path(cache_dir).expanduser() / f"tiles-{key}.npy"
        tiles = _load_cached(cache_file, shape)
        if tiles is not None:
            facts = _read_facts(cache_file)
            if facts is None:  # a cache written without its sizes: the headers tell them
                facts = _size_facts(_shorter_sides(paths), resize)
                _facts_file(cache_file).write_text(json.dumps(facts))
    if tiles is None:
        array, sides = _decode_all(paths, tile_size, resize)
        facts = _size_facts(sides, resize)
        if cache_file is not None:
            _save_cached(cache_file, array)
            _facts_file(cache_file).write_text(json.dumps(facts))
        tiles = torch.from_numpy(array)
    _warn_about_sizes(tile_size, resize, facts)
    return TileDataset(
        name=root.resolve().name,
        tiles=tiles,
        labels=torch.from_numpy(labels),
        splits=splits,
        relpaths=tuple(p.relative_to(root).as_posix() for p in paths),
        classes=tuple(classes),
        mean=mean,
        std=std,
        resize=resize,
    )


def _normalisation(
    mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` as three floats each, ImageNet's where ``None``; a bad value raises one sentence."""
    mean = IMAGENET_MEAN if mean is None else tuple(float(m) for m in mean)
    std = IMAGENET_STD if std is None else tuple(float(s) for s in std)
    if len(mean) != 3 or len(std) != 3 or not all(np.isfinite(mean)) or not all(np.isfinite(s) and s > 0 for s in std):
        raise FocusError(
            f"An ImageFolder's tiles are RGB: pass three finite mean values and three std values above 0, not "
            f"mean={mean} and std={std}."
        )
    return mean, std
