"""Mosaic manifests (seeded, held-out, balanced) and batched composition vs a per-mosaic paste."""

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from focus_core.data import TileDataset
from focus_core.image_folder import load_image_folder
from focus_core.errors import FocusError
from focus_core.mosaics import (
    LAYOUTS,
    Mosaic,
    MosaicManifest,
    build_manifest,
    compose_mosaics,
    compose_normalized,
    target_mask,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def digits(digits_at) -> TileDataset:
    return digits_at(12)


def paste_reference(tiles: torch.Tensor, rows: list[list[int]]) -> torch.Tensor:
    """Build each mosaic by pasting its four tiles into an empty canvas, one at a time."""
    n, c, h, w = tiles.shape
    out = torch.zeros(len(rows), c, 2 * h, 2 * w, dtype=tiles.dtype)
    for b, row in enumerate(rows):
        for quadrant, index in enumerate(row):
            top, left = (quadrant // 2) * h, (quadrant % 2) * w
            out[b, :, top : top + h, left : left + w] = tiles[index]
    return out


@pytest.mark.parametrize("device", DEVICES)
def test_composition_equals_pasting(digits: TileDataset, device: str) -> None:
    manifest = build_manifest(digits, per_class=3, seed=1)
    rows = manifest.index_tensor()
    mosaics = compose_mosaics(digits.tiles.to(device), rows)
    assert mosaics.shape == (30, 1, 24, 24) and mosaics.dtype == torch.uint8
    assert mosaics.device.type == device
    assert torch.equal(mosaics.cpu(), paste_reference(digits.tiles, rows.tolist()))


def test_composition_of_rgb_tiles_with_non_square_tiles_and_device_argument() -> None:
    generator = torch.Generator().manual_seed(0)
    tiles = torch.randint(0, 256, (7, 3, 5, 6), generator=generator, dtype=torch.uint8)
    rows = torch.randint(0, 7, (9, 4), generator=generator)
    expected = paste_reference(tiles, rows.tolist())
    assert torch.equal(compose_mosaics(tiles, rows), expected)
    assert torch.equal(compose_mosaics(tiles, rows.int(), device=DEVICES[-1]).cpu(), expected)
    assert compose_mosaics(tiles, rows[:0]).shape == (0, 3, 10, 12)


def test_composition_rejects_bad_indices(digits: TileDataset) -> None:
    with pytest.raises(FocusError, match=r"\(2, 3\)"):
        compose_mosaics(digits.tiles, torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(FocusError, match="1797"):
        compose_mosaics(digits.tiles, torch.tensor([[0, 1, 2, 1797]]))


def _rgb_dataset(tiles: torch.Tensor) -> TileDataset:
    n = tiles.shape[0]
    return TileDataset(name="rgb", tiles=tiles, labels=torch.zeros(n, dtype=torch.int64), splits=("test",) * n,
                       relpaths=tuple(f"{i}" for i in range(n)), classes=("a",), mean=(0.485, 0.456, 0.406),
                       std=(0.229, 0.224, 0.225))


@pytest.mark.parametrize("device", DEVICES)
def test_fused_composition_equals_pasting_then_normalising(device: str) -> None:
    generator = torch.Generator().manual_seed(1)
    tiles = torch.randint(0, 256, (7, 3, 5, 6), generator=generator, dtype=torch.uint8)
    dataset = _rgb_dataset(tiles)
    rows = torch.randint(0, 7, (9, 4), generator=generator)
    expected = dataset.normalize(paste_reference(tiles, rows.tolist()), dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        x = compose_normalized(tiles.to(device), rows, dataset, dtype=dtype)
        assert x.dtype == dtype and x.device.type == device and x.is_contiguous()
        torch.testing.assert_close(x.cpu().double(), expected, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)
    assert compose_normalized(tiles, rows[:0], dataset).shape == (0, 3, 10, 12)


def test_fused_composition_rejects_tiles_the_dataset_cannot_normalise(digits: TileDataset) -> None:
    rows = torch.tensor([[0, 1, 2, 3]])
    with pytest.raises(FocusError, match="uint8 tiles of shape"):
        compose_normalized(digits.tiles.float(), rows, digits)
    with pytest.raises(FocusError, match=r"\(N, 1, h, w\)"):
        compose_normalized(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), rows, digits)
    with pytest.raises(FocusError, match="1797"):
        compose_normalized(digits.tiles, torch.tensor([[0, 1, 2, 1797]]), digits)


@pytest.mark.parametrize("split", ["test", "val"])
def test_every_mosaic_is_well_formed_and_held_out(digits: TileDataset, split: str) -> None:
    manifest = build_manifest(digits, split=split, per_class=20, seed=3)
    assert len(manifest) == 200 and manifest.split == split
    assert manifest.dataset_fingerprint == digits.fingerprint
    labels = digits.labels.tolist()
    for mosaic in manifest.mosaics:
        indices = mosaic.image_indices
        assert all(digits.splits[i] == split for i in indices)  # never a training image
        assert len(set(indices)) == 4
        targets = [q for q in range(4) if labels[indices[q]] == mosaic.target_class]
        assert targets == list(mosaic.target_quadrants)  # exactly two, sorted, where it says
    assert Counter(manifest.target_classes().tolist()) == {c: 20 for c in range(10)}  # balanced
    assert torch.equal(target_mask(manifest).sum(dim=1), torch.full((200,), 2))


def test_random_layout_uses_every_arrangement(digits: TileDataset) -> None:
    manifest = build_manifest(digits, per_class=30, seed=0)
    arrangements = Counter(m.target_quadrants for m in manifest.mosaics)
    assert set(arrangements) == {q for q in LAYOUTS.values() if q is not None}
    assert min(arrangements.values()) > 20  # 300 mosaics over 6 arrangements: about 50 each


@pytest.mark.parametrize("layout", [name for name in LAYOUTS if name != "random"])
def test_fixed_layouts_put_targets_where_they_belong(digits: TileDataset, layout: str) -> None:
    manifest = build_manifest(digits, per_class=4, seed=0, layout=layout, classes=["3", 7])
    assert manifest.target_classes().tolist() == [3] * 4 + [7] * 4
    mask = target_mask(manifest)
    expected = torch.zeros(4, dtype=torch.bool)
    expected[list(LAYOUTS[layout])] = True
    assert torch.equal(mask, expected.expand(8, 4))
    labels = digits.labels[manifest.index_tensor()]
    assert torch.equal(labels == manifest.target_classes()[:, None], mask)


def test_same_seed_same_manifest_across_processes(digits: TileDataset) -> None:
    manifest = build_manifest(digits, per_class=5, seed=11)
    assert build_manifest(digits, per_class=5, seed=11) == manifest
    assert build_manifest(digits, per_class=5, seed=12).hash != manifest.hash
    script = (
        "from focus_core.data import load_digits\n"
        "from focus_core.mosaics import build_manifest\n"
        "print(build_manifest(load_digits(seed=0, tile_size=12), per_class=5, seed=11).hash)\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONHASHSEED": "123", "OMP_NUM_THREADS": "1"},
    )
    assert result.stdout.strip() == manifest.hash


def test_json_round_trip(digits: TileDataset) -> None:
    manifest = build_manifest(digits, per_class=2, seed=0, layout="diagonal")
    again = MosaicManifest.from_json(manifest.to_json())
    assert again == manifest and again.hash == manifest.hash
    assert torch.equal(again.index_tensor(), manifest.index_tensor())
    with pytest.raises(FocusError, match="to_json"):
        MosaicManifest.from_json('{"split": "test"}')


def test_target_mask_of_a_list() -> None:
    mosaics = [Mosaic((0, 1, 2, 3), 0, (0, 3)), Mosaic((4, 5, 6, 7), 1, (1, 2))]
    assert target_mask(mosaics).tolist() == [[True, False, False, True], [False, True, True, False]]
    assert target_mask([]).shape == (0, 4)


def test_refuses_the_training_split_and_bad_arguments(digits: TileDataset) -> None:
    with pytest.raises(FocusError, match="never trained on"):
        build_manifest(digits, split="train")
    with pytest.raises(FocusError, match="layout"):
        build_manifest(digits, layout="middle")
    with pytest.raises(FocusError, match="'ten'"):
        build_manifest(digits, classes=["ten"])
    with pytest.raises(FocusError, match="per_class"):
        build_manifest(digits, per_class=0)


def test_refuses_a_class_with_one_image_in_the_split(tmp_path: Path) -> None:
    layout = {"train": {"cat": 2, "dog": 2, "owl": 2}, "test": {"cat": 1, "dog": 3, "owl": 2}}
    for split, counts in layout.items():
        for name, count in counts.items():
            folder = tmp_path / "pets" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (20, 16), (40 * i, 90, 200)).save(folder / f"{i}.png")
    pets = load_image_folder(tmp_path / "pets", tile_size=8, resize=8)
    with pytest.raises(FocusError, match="'cat' has 1 image"):
        build_manifest(pets, split="test", per_class=2)
    manifest = build_manifest(pets, split="test", per_class=2, classes=["dog", "owl"])
    assert manifest.target_classes().tolist() == [pets.classes.index("dog")] * 2 + [pets.classes.index("owl")] * 2
    assert {pets.relpaths[i].split("/")[0] for m in manifest.mosaics for i in m.image_indices} == {"test"}
