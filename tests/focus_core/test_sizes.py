"""Sizes a user can trust: 8/7 of the tile as the default resize, and one warning line when a resize upscales
images or the centre crop keeps less than half of each resized square."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from focus_core.image_folder import load_image_folder
from focus_core.sizes import MIN_CROP_SHARE, crop_share, default_resize, size_warning

LOGGER = "focus_core.image_folder"


def _folder(root: Path, side: int) -> Path:
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (side + 10 * i, side + 10 * i), colour).save(root / name / f"{i}.png")
    return root


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    found = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    caplog.clear()
    return found


def test_the_default_resize_is_8_7_of_the_tile_and_keeps_most_of_the_image() -> None:
    assert [default_resize(t) for t in (224, 64, 32, 384)] == [256, 73, 36, 438]
    for tile in range(16, 600):
        assert 0.74 < crop_share(tile, default_resize(tile)) < 0.83  # about (7/8)²: never a warning by itself
        assert size_warning(tile, default_resize(tile), smallest_side=None, upscaled=0, images=5) is None


def test_the_warning_names_what_happens_and_a_fix() -> None:
    upscaled = size_warning(64, 256, smallest_side=64, upscaled=240, images=240)
    assert upscaled is not None and "\n" not in upscaled
    assert upscaled.startswith("Resizing to 256 px upscales 240 of 240 images (the smallest side is 64 px: 4.0x)")
    assert "keeps 6% of each resized image's centre square" in upscaled and upscaled.endswith("pass --resize 64.")
    cropped = size_warning(100, 200, smallest_side=400, upscaled=0, images=9)
    assert cropped == ("The 100 px centre crop keeps 25% of each resized image's centre square: pass --resize 114 "
                       "(8/7 of the tile size).")
    smaller = size_warning(224, 256, smallest_side=64, upscaled=3, images=9)
    assert smaller is not None and smaller.endswith("no larger than the images, --tile-size 64 --resize 64.")
    assert crop_share(100, 141) >= MIN_CROP_SHARE and size_warning(100, 141, smallest_side=141, upscaled=0,
                                                                   images=1) is None


def test_loading_warns_once_per_load_also_from_the_tile_cache(tmp_path: Path, caplog) -> None:
    root = _folder(tmp_path / "small", 16)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    loaded = load_image_folder(root, tile_size=16, fractions=(0.5, 0.5, 0.0))
    assert loaded.resize == 18  # 8/7 of the tile
    [line] = _warnings(caplog)
    assert line.startswith("Resizing to 18 px upscales 2 of 6 images (the smallest side is 16 px: 1.1x)"), line
    assert line.endswith("pass --resize 16.")
    assert load_image_folder(root, tile_size=16, resize=16, fractions=(0.5, 0.5, 0.0)).resize == 16
    assert _warnings(caplog) == []  # no upscaling, the whole image kept
    cache = tmp_path / "cache"
    for _ in range(2):  # decoded, then memory-mapped: the sizes are kept beside the tiles
        load_image_folder(root, tile_size=8, resize=20, cache_dir=cache, fractions=(0.5, 0.5, 0.0))
        [line] = _warnings(caplog)
        assert line.startswith("Resizing to 20 px upscales 2 of 6 images") and "keeps 16%" in line, line
    [sizes] = cache.glob("*.sizes.json")
    sizes.unlink()  # a cache without its sizes: the file headers tell them
    load_image_folder(root, tile_size=8, resize=20, cache_dir=cache, fractions=(0.5, 0.5, 0.0))
    assert len(_warnings(caplog)) == 1 and sizes.is_file()
