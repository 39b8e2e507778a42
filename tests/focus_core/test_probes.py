"""Probe mosaics: the corner patch against a slow, obvious stamp, and its place in the manifest's identity."""

from __future__ import annotations

import pytest
import torch

from focus_core import mosaics, probes
from focus_core.data import load_digits
from focus_core.errors import FocusError
from focus_core.probes import CornerPatch


def slow_stamp(x: torch.Tensor, codes: torch.Tensor, size: int, fill: torch.Tensor) -> torch.Tensor:
    """One mosaic, one tile at a time."""
    out = x.clone()
    b, c, height, width = x.shape
    grid = int(round(codes.shape[1] ** 0.5))
    h, w = height // grid, width // grid
    for i in range(b):
        for t in range(grid * grid):
            code = int(codes[i, t])
            if code < 0:
                continue
            top = (t // grid) * h + (0 if code in (0, 1) else h - size)
            left = (t % grid) * w + (0 if code in (0, 2) else w - size)
            for ch in range(c):
                out[i, ch, top:top + size, left:left + size] = fill[ch]
    return out


@pytest.mark.parametrize("grid", [2, 3])
def test_stamp_matches_the_slow_stamp(grid: int) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(5, 3, 8 * grid, 8 * grid, generator=generator)
    codes = torch.randint(-1, 4, (5, grid * grid), generator=generator, dtype=torch.int64).to(torch.int8)
    fill = torch.tensor([2.0, 3.0, 4.0])
    assert torch.equal(probes.stamp(x, codes, 3, fill), slow_stamp(x, codes, 3, fill))
    assert not torch.equal(probes.stamp(x, codes, 3, fill), x)  # something was stamped, x left as it was


def test_codes_spare_the_target_tiles_and_follow_the_seed() -> None:
    masks = torch.tensor([[True, False, True, False]] * 50)
    codes = probes.corner_codes(CornerPatch(2, seed=3), masks)
    assert (codes[masks] == -1).all() and (codes[~masks] >= 0).all()
    assert set(codes[~masks].tolist()) == {0, 1, 2, 3}  # random corners
    assert torch.equal(codes, probes.corner_codes(CornerPatch(2, seed=3), masks))
    assert not torch.equal(codes, probes.corner_codes(CornerPatch(2, seed=4), masks))
    assert set(probes.corner_codes(CornerPatch(2, corner="tr"), masks)[~masks].tolist()) == {1}


def test_a_probe_is_part_of_the_manifest_identity_and_keeps_the_tiles() -> None:
    digits = load_digits(tile_size=12)
    clean = mosaics.build_manifest(digits, per_class=2, seed=0)
    probe = mosaics.build_manifest(digits, per_class=2, seed=0, probe={"kind": "corner_patch", "size": 3})
    other = mosaics.build_manifest(digits, per_class=2, seed=0, probe={"kind": "corner_patch", "size": 3, "seed": 1})
    assert clean.probe is None and clean.probe_codes() is None and "probe" not in clean.to_json()
    assert torch.equal(clean.index_tensor(), probe.index_tensor())
    assert len({clean.hash, probe.hash, other.hash}) == 3
    assert mosaics.MosaicManifest.from_json(probe.to_json()) == probe
    assert mosaics.MosaicManifest.from_json(probe.to_json()).hash == probe.hash
    codes = probe.probe_codes()
    assert torch.equal(codes < 0, mosaics.target_mask(probe))


def test_bright_fill_is_white_after_normalisation() -> None:
    digits = load_digits(tile_size=12)
    fill = probes.bright_fill(digits.normalize, 1, torch.float32, "cpu")
    white = digits.normalize(torch.full((1, 1, 1, 1), 255, dtype=torch.uint8))
    assert torch.allclose(fill, white.reshape(1))


@pytest.mark.parametrize("probe, words", [
    ({"kind": "blur"}, "Unknown probe kind"),
    ({"kind": "corner_patch", "size": 0}, "positive integer"),
    ({"kind": "corner_patch", "size": 2, "seed": -1}, "non-negative"),
    ({"kind": "corner_patch", "size": 2, "corner": "middle"}, "Unknown corner"),
    ({"kind": "corner_patch", "size": 2, "colour": 1}, "Unknown corner_patch option"),
    ({"kind": "corner_patch", "size": 7}, "does not fit"),
])
def test_a_bad_probe_is_refused_in_one_sentence(probe: dict, words: str) -> None:
    with pytest.raises(FocusError, match=words):
        mosaics.build_manifest(load_digits(tile_size=12), per_class=1, probe=probe)
