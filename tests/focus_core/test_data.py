"""Datasets: digits tiles, seeded stratified splits, ImageFolder decoding, tile cache, clear errors."""

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
import torch
from PIL import Image

from focus_core.data import SPLITS, TileDataset, load_digits
from focus_core.image_folder import load_image_folder
from focus_core.errors import FocusError

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


@pytest.fixture(scope="module")
def digits(digits_at) -> TileDataset:
    return digits_at(32)


def write_images(root: Path, counts: dict[str, int], size: tuple[int, int] = (40, 30)) -> None:
    """Write ``counts[class]`` solid-colour PNGs into ``root/class/``."""
    for c, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", size, (10 * c, 20 * i % 256, 77)).save(root / name / f"{i:03d}.png")


def test_digits_tiles_labels_and_relpaths(digits: TileDataset) -> None:
    assert digits.tiles.shape == (1797, 1, 32, 32) and digits.tiles.dtype == torch.uint8
    assert digits.tile_size == 32 and len(digits) == 1797
    assert digits.labels.dtype == torch.int64 and digits.classes == tuple("0123456789")
    assert digits.relpaths[17] == "digits/00017" and len(set(digits.relpaths)) == 1797
    source = sklearn.datasets.load_digits()
    assert digits.labels.tolist() == source.target.tolist()
    native = load_digits(tile_size=8)  # no resampling: exactly the scaled source pixels
    expected = np.rint(source.images * 255 / 16).astype(np.uint8)
    assert np.array_equal(native.tiles[:, 0].numpy(), expected)
    assert int(digits.tiles.max()) == 255 and int(digits.tiles.min()) == 0


def test_digits_split_is_stratified_and_seeded(digits: TileDataset) -> None:
    assert set(digits.splits) == set(SPLITS)
    for c in range(10):
        members = [s for s, label in zip(digits.splits, digits.labels.tolist()) if label == c]
        counts = Counter(members)
        assert abs(counts["train"] - 0.6 * len(members)) <= 1
        assert abs(counts["val"] - 0.2 * len(members)) <= 1
    again = load_digits(seed=0, tile_size=16)
    assert again.splits == digits.splits  # the split does not depend on the tile size
    other = load_digits(seed=1, tile_size=32)
    assert other.splits != digits.splits and other.fingerprint != digits.fingerprint
    other_fractions = load_digits(seed=0, fractions=(0.8, 0.1, 0.1))
    assert Counter(other_fractions.splits)["train"] > Counter(digits.splits)["train"]


def test_indices_agree_with_splits(digits: TileDataset) -> None:
    seen = []
    for split in SPLITS:
        idx = digits.indices(split)
        assert idx.dtype == torch.int64
        assert idx.tolist() == [i for i, s in enumerate(digits.splits) if s == split]
        seen += idx.tolist()
    assert sorted(seen) == list(range(1797))
    with pytest.raises(FocusError, match="'training'"):
        digits.indices("training")


def test_normalize_matches_per_pixel_formula(digits: TileDataset) -> None:
    x = digits.tiles[:3, :, :4, :5]
    out = digits.normalize(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    mean, std = digits.mean[0], digits.std[0]
    for (b, c, i, j), value in np.ndenumerate(x.numpy()):
        assert out[b, c, i, j].item() == pytest.approx((value / 255 - mean) / std, rel=1e-5, abs=1e-6)
    assert digits.normalize(x, dtype=torch.float64).dtype == torch.float64
    train = digits.normalize(digits.tiles[digits.indices("train")], dtype=torch.float64)
    assert abs(train.mean().item()) < 1e-6 and abs(train.std().item() - 1) < 1e-6
    with pytest.raises(FocusError, match="uint8"):
        digits.normalize(x.float())
    if torch.cuda.is_available():
        assert torch.allclose(digits.normalize(x.cuda()).cpu(), out)


def test_fingerprint_is_stable_across_processes(digits: TileDataset) -> None:
    script = "from focus_core.data import load_digits; print(load_digits(seed=0, tile_size=32).fingerprint)"
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONHASHSEED": "7", "OMP_NUM_THREADS": "1"},
    )
    assert result.stdout.strip() == digits.fingerprint
    assert len(digits.fingerprint) == 64


def test_image_folder_decodes_rgb_and_splits(tmp_path: Path) -> None:
    write_images(tmp_path / "pets", {"cat": 12, "dog": 8})
    Image.new("L", (30, 30), 100).save(tmp_path / "pets" / "dog" / "gray.jpg")
    (tmp_path / "pets" / "dog" / "notes.txt").write_text("not an image")
    pets = load_image_folder(tmp_path / "pets", seed=0, tile_size=16, resize=20)
    assert pets.name == "pets" and pets.classes == ("cat", "dog")
    assert pets.tiles.shape == (21, 3, 16, 16) and pets.tiles.dtype == torch.uint8
    assert pets.relpaths[0] == "cat/000.png" and "dog/gray.jpg" in pets.relpaths
    assert pets.mean == (0.485, 0.456, 0.406) and pets.std == (0.229, 0.224, 0.225)
    for tile, relpath in zip(pets.tiles, pets.relpaths):
        if relpath.endswith(".png"):  # solid colours survive resizing exactly
            c, i = ("cat dog".split().index(relpath[:3]), int(relpath[4:7]))
            assert tile.flatten(1).unique(dim=1).T.tolist() == [[10 * c, 20 * i, 77]]
    gray = pets.tiles[pets.relpaths.index("dog/gray.jpg")]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    labels = pets.labels.tolist()
    for c, n in ((0, 12), (1, 9)):
        counts = Counter(s for s, label in zip(pets.splits, labels) if label == c)
        assert counts["train"] == round(0.7 * n) and sum(counts.values()) == n
    again = load_image_folder(tmp_path / "pets", seed=0, tile_size=16, resize=20)
    assert again.fingerprint == pets.fingerprint and again.splits == pets.splits


def test_resize_shorter_side_then_centre_crop(tmp_path: Path) -> None:
    # 512x256 stripes: red | blue | green with the blue band exactly the 224 centre columns.
    image = Image.new("RGB", (512, 256), RED)
    image.paste(BLUE, (144, 0, 368, 256))
    image.paste(GREEN, (368, 0, 512, 256))
    for name in ("a", "b"):
        (tmp_path / "stripes" / name).mkdir(parents=True)
        image.save(tmp_path / "stripes" / name / "full.png")
        image.resize((256, 128), Image.NEAREST).save(tmp_path / "stripes" / name / "half.png")
    ds = load_image_folder(tmp_path / "stripes")  # the paper's 256 -> 224
    assert ds.tiles.shape == (4, 3, 224, 224)
    full = ds.tiles[ds.relpaths.index("a/full.png")]
    assert (full.flatten(1).T == torch.tensor(BLUE, dtype=torch.uint8)).all()
    half = ds.tiles[ds.relpaths.index("a/half.png")]  # upscaled 2x: only the edges may blur
    assert (half[:, :, 2:-2].flatten(1).T == torch.tensor(BLUE, dtype=torch.uint8)).all()


def test_predefined_split_folders(tmp_path: Path) -> None:
    write_images(tmp_path / "ds" / "train", {"cat": 3, "dog": 3})
    write_images(tmp_path / "ds" / "valid", {"cat": 1, "dog": 2})
    write_images(tmp_path / "ds" / "test", {"cat": 2})
    ds = load_image_folder(tmp_path / "ds", tile_size=8, resize=8)
    assert Counter(ds.splits) == {"train": 6, "val": 3, "test": 2}
    for relpath, split in zip(ds.relpaths, ds.splits):
        folder = relpath.split("/")[0]
        assert split == ("val" if folder == "valid" else folder)
    assert ds.classes == ("cat", "dog")


def test_tile_cache_is_written_once_and_memory_mapped(tmp_path: Path) -> None:
    write_images(tmp_path / "pets", {"cat": 3, "dog": 3})
    cache = tmp_path / "cache"
    first = load_image_folder(tmp_path / "pets", tile_size=8, resize=10, cache_dir=cache)
    files = list(cache.glob("*.npy"))
    assert len(files) == 1
    assert np.array_equal(np.load(files[0]), first.tiles.numpy())
    # Prove the second call reads the cache instead of decoding: change the cached pixels.
    np.save(files[0], np.full((6, 3, 8, 8), 3, dtype=np.uint8))
    second = load_image_folder(tmp_path / "pets", tile_size=8, resize=10, cache_dir=cache)
    assert (second.tiles == 3).all()
    assert isinstance(np.load(files[0], mmap_mode="c"), np.memmap)
    second.tiles[0] = 9  # copy-on-write: a write never reaches the cache file
    assert (np.load(files[0]) == 3).all()
    # A different tile size, or a changed image, gets a new key and a fresh decode.
    load_image_folder(tmp_path / "pets", tile_size=6, resize=10, cache_dir=cache)
    Image.new("RGB", (50, 50), RED).save(tmp_path / "pets" / "cat" / "000.png")
    os.utime(tmp_path / "pets" / "cat" / "000.png", ns=(1, 1))
    third = load_image_folder(tmp_path / "pets", tile_size=8, resize=10, cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 3
    assert third.tiles[0].flatten(1).unique(dim=1).T.tolist() == [list(RED)]
    assert torch.equal(third.tiles[1:], first.tiles[1:])


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FocusError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(FocusError, match="contains no images"):
        load_image_folder(tmp_path / "empty")
    write_images(tmp_path / "single", {"cat": 3})
    with pytest.raises(FocusError, match="single class"):
        load_image_folder(tmp_path / "single")
    write_images(tmp_path / "lonely", {"cat": 3, "dog": 1})
    with pytest.raises(FocusError, match="'dog' .* 1 image"):
        load_image_folder(tmp_path / "lonely")
    write_images(tmp_path / "ok", {"cat": 2, "dog": 2})
    for fractions in [(0.5, 0.5), (0.7, 0.2, 0.2), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)]:
        with pytest.raises(FocusError, match="fractions"):
            load_image_folder(tmp_path / "ok", fractions=fractions)
        with pytest.raises(FocusError, match="fractions"):
            load_digits(fractions=fractions)
    with pytest.raises(FocusError, match="resize"):
        load_image_folder(tmp_path / "ok", tile_size=224, resize=200)
    (tmp_path / "ok" / "dog" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(FocusError, match="broken.png"):
        load_image_folder(tmp_path / "ok", tile_size=8, resize=8)
    write_images(tmp_path / "half" / "train", {"cat": 2, "dog": 2})
    with pytest.raises(FocusError, match="no val/, valid/ or test/"):
        load_image_folder(tmp_path / "half")


def test_the_fingerprint_tells_tile_sizes_apart() -> None:
    """The same images at another tile size are other pixels: their mosaic sets must not be reused."""
    small, large = load_digits(seed=0, tile_size=32), load_digits(seed=0, tile_size=48)
    assert small.relpaths == large.relpaths and small.splits == large.splits
    assert small.fingerprint != large.fingerprint
    assert load_digits(seed=0, tile_size=32).fingerprint == small.fingerprint
