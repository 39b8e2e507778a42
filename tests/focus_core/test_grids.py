"""N x N mosaics: grids of 2, 3 or 4 tiles per side with k target tiles.

The 2x2 two-target case must stay bit for bit what it was before grids existed: manifests (JSON and hash, pinned
below from the code before the change), composed mosaics (pinned), the target mask (pinned) and the sums, Focus
and fused composition (compared with ``torch.equal`` against the code before the change, kept here verbatim as
``_old_*``). Every other grid is checked against slow, obvious reference implementations.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from focus_core import layouts, metric
from focus_core.data import TileDataset
from focus_core.errors import FocusError
from focus_core.explainers import get_explainer
from focus_core.explainers.lime import grid_mask, tile_feature_masks
from focus_core.mosaics import (
    Mosaic,
    MosaicManifest,
    build_manifest,
    compose_mosaics,
    compose_normalized,
    target_mask,
)

# (seed, layout, per_class, classes, split) -> sha256 of the manifest, of compose_mosaics' bytes, of the mask's
# bytes: computed with the code before grids existed (commit 7504bcb) on load_digits(seed=0, tile_size=8).
PINNED = {
    (0, "random", 5, None, "test"): ("49430c2aa3614c7edd14a7327228888dca3fbe0359e2e0f0f4464677ff8d3e22",
                                     "2ebcfb7bcdebc23cac93f152192da1081a868bc108f372c936e0f63f5fd2943f",
                                     "0a59854cdbaffc264c2b8352359958c3480de12a207dd539a20b69de2740109f"),
    (3, "random", 2, None, "val"): ("2a5a96b3be551bc9800f2223fa4fea649fe98eca0350e8a767ddad024b71c9bb",
                                    "7fceed915aaa4785bdf00069b51cf492f2ad1aea98a254eaa108eca20010978e",
                                    "ff58815e9be93f87aa685d6cfa1b67164398321cf769e9ccc3ab8236d3963d8a"),
    (1, "diagonal", 3, (0, 4, 7), "test"): ("c1b64609929d7042c44d2e050d05ed330106236ddbe35dbb27241c69ee8bd1d5",
                                            "2f29819611f0371a3e7d000af828a0659cd27197d186927479fc3b1a1d5de205",
                                            "03c79125d7301b3588c7de0c0286c4ebc8b7b44998bf0c524213a49196321c1f"),
    (7, "top", 4, None, "test"): ("24a9c9d59087857eb69537ca52536d84ad473c81bc07dad2097fd53772fa449f",
                                  "423292a1b08d84cf656113a40e453c74e4fc27946128076a4c8b1b1b5118347c",
                                  "446e68615df8b6cfa5155a236f2d0614512ce073af3dad84dffc88e2907aa524"),
    (2, "antidiagonal", 2, (9, 1), "val"): ("d36a15ca61ec17b0c2818d003bce7faccb36e5f306e752867e14e0ae23b6597a",
                                            "3cc20a3cc56586806bc5af2a6f956dcd052c310cf4819b200e5357848bbca70c",
                                            "ab441bb1e2f8c02d3ea8343718d4362e8ebc5c54246604759e8bb684a95a7646"),
}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
GRID_MASKS = {(16, 16, 4): "f06ec0ddcee01e8e97327c6c5229c3dc681de718911ebae31acc86a412ffc737",
              (15, 17, 9): "115c591d39f20991d4793320d2599304f81d63d65b51a60096046ee53d2b1b3e"}


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def digits(digits_at) -> TileDataset:
    return digits_at(8)


# --- the code before grids existed, verbatim -----------------------------------------------------------------

def _old_quadrant_totals(x, h2, w2):
    top, bottom = x[:, :h2].sum(dim=1), x[:, h2:].sum(dim=1)
    return torch.stack([top[:, :w2].sum(dim=1), top[:, w2:].sum(dim=1),
                        bottom[:, :w2].sum(dim=1), bottom[:, w2:].sum(dim=1)], dim=1)


def _old_quadrant_sums(relevance):
    if relevance.dtype in (torch.float16, torch.bfloat16):
        relevance = relevance.float()
    b, h, w = relevance.shape
    h2, w2 = h // 2, w // 2
    if h % 2 or w % 2:
        positive = relevance.clamp(min=0)
        return torch.stack([_old_quadrant_totals(positive, h2, w2),
                            _old_quadrant_totals(relevance - positive, h2, w2)], dim=2)
    quadrants = relevance.view(b, 2, h2, 2, w2) if relevance.is_contiguous() else relevance.reshape(b, 2, h2, 2, w2)
    return torch.stack([quadrants.clamp(min=0).sum(dim=(2, 4)).view(b, 4),
                        quadrants.clamp(max=0).sum(dim=(2, 4)).view(b, 4)], dim=2)


def _old_focus_from_sums(sums, mask):
    positive = sums[..., 0]
    total = positive.sum(dim=1)
    on_target = (positive * mask.to(device=positive.device, dtype=positive.dtype)).sum(dim=1)
    nan = torch.full_like(total, float("nan"))
    return torch.where(total > 0, on_target / torch.where(total > 0, total, 1), nan)


def _old_upsampled_quadrant_sums(maps, size):
    b, h, w = maps.shape

    def halves(n, s):
        spread = F.interpolate(torch.eye(n, dtype=torch.float64)[:, None, :], size=s, mode="linear",
                               align_corners=False)[:, 0]
        return torch.stack([spread[:, : s // 2].sum(1), spread[:, s // 2:].sum(1)]).float()

    totals = torch.einsum("rh,bhw,cw->brc", halves(h, size[0]), maps.float(), halves(w, size[1])).reshape(b, 4)
    return torch.stack([totals, torch.zeros_like(totals)], dim=2)


def _old_compose_normalized(tiles, image_indices, dataset):
    flat = image_indices.reshape(-1).to(torch.int64)
    n, c, h, w = tiles.shape
    b = flat.shape[0] // 4
    rows = flat.view(b, 1, 2, 1, 2) * (c * h) + torch.arange(c * h, dtype=torch.int64).view(1, c, 1, h, 1)
    pixels = tiles.reshape(n * c * h, w).index_select(0, rows.reshape(-1)).view(b, c, 4 * h * w)
    scale, shift = (t.view(1, c, 1) for t in dataset.normalization(torch.float32, tiles.device))
    out = torch.empty((b, c, 2 * h, 2 * w), dtype=torch.float32)
    torch.addcmul(shift, pixels, scale, out=out.view(b, c, 4 * h * w))
    return out


# --- 2x2, two targets: as before ------------------------------------------------------------------------------

@pytest.mark.parametrize("key", list(PINNED))
def test_two_by_two_manifests_mosaics_and_masks_keep_their_bytes(digits: TileDataset, key) -> None:
    seed, layout, per_class, classes, split = key
    manifest = build_manifest(digits, split=split, per_class=per_class, seed=seed, layout=layout, classes=classes)
    digest, composed, mask = PINNED[key]
    assert manifest.hash == digest
    assert hashlib.sha256(manifest.to_json().encode()).hexdigest() == digest
    assert not {"grid", "targets", "confident", "confident_model"} & set(json.loads(manifest.to_json()))
    assert _sha(compose_mosaics(digits.tiles, manifest.index_tensor())) == composed
    assert _sha(target_mask(manifest)) == mask
    explicit = build_manifest(digits, split=split, per_class=per_class, seed=seed, layout=layout, classes=classes,
                              grid=2, targets=2)
    assert explicit == manifest and explicit.hash == digest


@pytest.mark.parametrize("key", list(PINNED))
def test_two_by_two_sums_focus_and_fused_composition_equal_the_old_code(digits: TileDataset, key) -> None:
    seed, layout, per_class, classes, split = key
    manifest = build_manifest(digits, split=split, per_class=per_class, seed=seed, layout=layout, classes=classes)
    index, mask = manifest.index_tensor(), target_mask(manifest)
    assert torch.equal(compose_normalized(digits.tiles, index, digits), _old_compose_normalized(digits.tiles, index, digits))
    g = torch.Generator().manual_seed(seed)
    for shape in ((16, 16), (15, 17)):
        relevance = torch.randn(len(manifest), *shape, generator=g)
        old = _old_quadrant_sums(relevance)
        for sums in (metric.quadrant_sums(relevance), metric.tile_sums(relevance, 2)):
            assert torch.equal(sums, old)
        assert np.array_equal(metric.focus_from_sums(old, mask).numpy(), _old_focus_from_sums(old, mask).numpy(),
                              equal_nan=True)
        assert np.array_equal(metric.focus_score(relevance, mask).numpy(), _old_focus_from_sums(old, mask).numpy(),
                              equal_nan=True)
    cam = torch.rand(len(manifest), 3, 5, generator=g)
    for size in ((16, 16), (15, 17)):
        assert torch.equal(metric.upsampled_quadrant_sums(cam, size), _old_upsampled_quadrant_sums(cam, size))
        assert torch.equal(metric.upsampled_tile_sums(cam, size, 2), _old_upsampled_quadrant_sums(cam, size))


def test_lime_keeps_its_two_by_two_features_and_params_hash() -> None:
    for (h, w, segments), digest in GRID_MASKS.items():
        assert _sha(grid_mask(h, w, segments)) == digest
        assert torch.equal(grid_mask(h, w, segments, grid=2), grid_mask(h, w, segments))
    lime = get_explainer("lime")
    assert "grid" not in lime.params
    assert lime.params_hash == get_explainer("lime", grid=2).params_hash
    three = get_explainer("lime", grid=3)
    assert three.params["grid"] == 3 and three.params_hash != lime.params_hash
    with pytest.raises(FocusError, match="'grid'"):
        get_explainer("lime", grid=5)


# --- N x N: against slow references ---------------------------------------------------------------------------

def _reference_tile_sums(relevance: torch.Tensor, grid: int) -> torch.Tensor:
    """One tile at a time, with the edges written out: i * H // N."""
    b, h, w = relevance.shape
    out = torch.zeros(b, grid * grid, 2, dtype=torch.float64)
    for i in range(grid):
        for j in range(grid):
            tile = relevance[:, i * h // grid:(i + 1) * h // grid, j * w // grid:(j + 1) * w // grid].double()
            out[:, i * grid + j, 0] = tile.clamp(min=0).sum(dim=(1, 2))
            out[:, i * grid + j, 1] = tile.clamp(max=0).sum(dim=(1, 2))
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grid", [2, 3, 4])
@pytest.mark.parametrize("shape", [(24, 24), (25, 23), (12, 36), (7, 9)])
def test_tile_sums_equal_the_reference(grid: int, shape: tuple[int, int], device: str) -> None:
    relevance = torch.randn(3, *shape, generator=torch.Generator().manual_seed(grid))
    sums = metric.tile_sums(relevance.to(device), grid)
    assert sums.shape == (3, grid * grid, 2) and sums.dtype == torch.float32 and sums.device.type == device
    sums = sums.cpu()
    torch.testing.assert_close(sums.double(), _reference_tile_sums(relevance, grid), rtol=1e-5, atol=1e-5)
    assert (sums[..., 0] >= 0).all() and (sums[..., 1] <= 0).all()
    half = metric.tile_sums(relevance.half(), grid)
    assert half.dtype == torch.float32


def test_tile_sums_and_focus_refuse_what_does_not_fit() -> None:
    with pytest.raises(FocusError, match="grid of 2, 3 or 4"):
        metric.tile_sums(torch.zeros(1, 8, 8), 5)
    with pytest.raises(FocusError, match="at least 4x4"):
        metric.tile_sums(torch.zeros(1, 3, 8), 4)
    with pytest.raises(FocusError, match=r"\(B, T, 2\)"):
        metric.focus_from_sums(torch.zeros(2, 5, 2), torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(FocusError, match=r"\(2, 9\)"):
        metric.focus_from_sums(torch.zeros(2, 9, 2), torch.zeros(2, 4, dtype=torch.bool))


@pytest.mark.parametrize("grid", [3, 4])
def test_focus_of_any_grid_is_the_share_on_the_target_tiles(grid: int) -> None:
    g = torch.Generator().manual_seed(grid)
    relevance = torch.randn(6, grid * 5, grid * 5, generator=g)
    relevance[0] = -1.0  # nothing positive: undefined
    mask = torch.zeros(6, grid * grid, dtype=torch.bool)
    for row, tiles in enumerate([[0], [1, 4], [grid * grid - 1], [2, 3, 5], [0, 8], [4]]):
        mask[row, tiles] = True
    reference = _reference_tile_sums(relevance, grid)[..., 0]
    expected = (reference * mask).sum(1) / reference.sum(1)
    score = metric.focus_score(relevance, mask)
    assert score[0].isnan() and not score[1:].isnan().any()
    torch.testing.assert_close(score[1:].double(), expected[1:], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metric.focus_from_sums(metric.tile_sums(relevance, grid), mask), score, equal_nan=True)


@pytest.mark.parametrize("grid", [3, 4])
def test_upsampled_tile_sums_equal_the_sums_of_the_upsampled_maps(grid: int) -> None:
    maps = torch.rand(4, 7, 6, generator=torch.Generator().manual_seed(0))
    for size in ((grid * 16, grid * 16), (50, 61)):
        big = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        torch.testing.assert_close(metric.upsampled_tile_sums(maps, size, grid), metric.tile_sums(big, grid),
                                   rtol=1e-5, atol=1e-5)


def _pasted(tiles: torch.Tensor, rows: torch.Tensor, grid: int) -> torch.Tensor:
    b, (c, h, w) = rows.shape[0], tiles.shape[1:]
    out = torch.zeros(b, c, grid * h, grid * w, dtype=tiles.dtype)
    for m in range(b):
        for p in range(grid * grid):
            i, j = divmod(p, grid)
            out[m, :, i * h:(i + 1) * h, j * w:(j + 1) * w] = tiles[rows[m, p]]
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grid", [3, 4])
def test_composition_of_any_grid_equals_pasting(digits: TileDataset, grid: int, device: str) -> None:
    manifest = build_manifest(digits, per_class=2, seed=5, grid=grid, targets=2)
    rows = manifest.index_tensor()
    assert rows.shape == (20, grid * grid)
    expected = _pasted(digits.tiles, rows, grid)
    tiles = digits.tiles.to(device)
    assert torch.equal(compose_mosaics(tiles, rows).cpu(), expected)
    assert torch.equal(compose_mosaics(digits.tiles, rows, device=device).cpu(), expected)
    torch.testing.assert_close(compose_normalized(tiles, rows, digits).cpu(), digits.normalize(expected),
                               atol=1e-6, rtol=0)
    with pytest.raises(FocusError, match=r"\(B, 9\)"):
        compose_mosaics(digits.tiles, torch.zeros(2, 5, dtype=torch.int64))


# --- manifests of any grid ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("grid", "targets"), [(2, 1), (2, 3), (3, 1), (3, 4), (4, 2), (4, 15)])
def test_every_grid_mosaic_is_well_formed(digits: TileDataset, grid: int, targets: int) -> None:
    manifest = build_manifest(digits, split="val", per_class=4, seed=1, grid=grid, targets=targets)
    labels, split = digits.labels.numpy(), set(digits.indices("val").tolist())
    assert (manifest.grid, manifest.targets, len(manifest)) == (grid, targets, 40)
    mask = target_mask(manifest).numpy()
    assert mask.shape == (40, grid * grid) and (mask.sum(1) == targets).all()
    for m, row in zip(manifest.mosaics, mask):
        assert len(m.image_indices) == grid * grid and set(m.image_indices) <= split
        assert len(set(m.image_indices)) == grid * grid  # distinct images: k of the class, the rest of others
        assert list(m.target_quadrants) == sorted(m.target_quadrants) == np.flatnonzero(row).tolist()
        on = labels[np.asarray(m.image_indices)] == m.target_class
        assert on.tolist() == row.tolist()


def test_random_grid_layout_uses_every_tile_and_fixed_ones_put_targets_where_they_belong(digits) -> None:
    manifest = build_manifest(digits, per_class=20, seed=0, grid=3, targets=1)
    assert {m.target_quadrants[0] for m in manifest.mosaics} == set(range(9))
    for grid, targets, layout, expected in [(3, 2, "contiguous", (0, 1)), (3, 2, "scattered", (2, 6)),
                                            (3, 5, "scattered", (0, 2, 4, 6, 8)), (4, 3, "contiguous", (0, 1, 2)),
                                            (2, 1, "scattered", (3,)), (3, 1, "scattered", (4,))]:
        m = build_manifest(digits, per_class=2, seed=0, grid=grid, targets=targets, layout=layout)
        assert {mosaic.target_quadrants for mosaic in m.mosaics} == {expected}
        assert layouts.positions(layout, grid, targets) == expected


@pytest.mark.parametrize(("grid", "targets"), [(3, 2), (3, 5), (4, 8)])
def test_scattered_targets_never_share_an_edge(grid: int, targets: int) -> None:
    tiles = layouts.positions("scattered", grid, targets)
    assert len(set(tiles)) == targets
    for a in tiles:
        for b in tiles:
            assert abs(a // grid - b // grid) + abs(a % grid - b % grid) != 1


def test_layouts_that_do_not_fit_are_refused_in_one_sentence(digits: TileDataset) -> None:
    cases = [(dict(grid=3, targets=9), "between 1 and 8"), (dict(grid=3, targets=0), "between 1 and 8"),
             (dict(grid=5), "2, 3 or 4"), (dict(grid=3, layout="diagonal"), "does not fit 3x3"),
             (dict(grid=2, targets=1, layout="top"), "does not fit 2x2"),
             (dict(grid=3, targets=6, layout="scattered"), "use one of random, contiguous.$"),
             (dict(layout="contiguous"), "Unknown layout")]
    for kwargs, message in cases:
        with pytest.raises(FocusError, match=message):
            build_manifest(digits, per_class=1, **kwargs)
    assert layouts.names_for(2) == tuple(layouts.LAYOUTS)
    assert layouts.chance_level(2, 2) == 0.5 and layouts.chance_level(4, 1) == 1 / 16


def test_grid_manifests_have_their_own_identity_and_round_trip(digits: TileDataset) -> None:
    two = build_manifest(digits, per_class=2, seed=0)
    three = build_manifest(digits, per_class=2, seed=0, grid=3, targets=2)
    one = build_manifest(digits, per_class=2, seed=0, grid=3, targets=1)
    assert len({two.hash, three.hash, one.hash}) == 3
    payload = json.loads(one.to_json())
    assert (payload["grid"], payload["targets"]) == (3, 1) and "confident" not in payload
    for manifest in (two, three, one):
        again = MosaicManifest.from_json(manifest.to_json())
        assert again == manifest and again.hash == manifest.hash
    assert build_manifest(digits, per_class=2, seed=0, grid=3, targets=1).hash == one.hash
    broken = payload | {"targets": 2}
    with pytest.raises(FocusError, match="not a mosaic manifest"):
        MosaicManifest.from_json(json.dumps(broken))


def test_target_mask_of_a_grid_list_and_lime_features_of_a_grid() -> None:
    mosaics = [Mosaic(tuple(range(9)), 0, (4,)), Mosaic(tuple(range(9, 18)), 1, (0, 8))]
    mask = target_mask(mosaics)
    assert mask.shape == (2, 9) and mask[0].nonzero().flatten().tolist() == [4]
    assert mask[1].nonzero().flatten().tolist() == [0, 8]
    ids = tile_feature_masks(torch.zeros(1, 1, 25, 24), "grid", segments=4, grid=3)[0, 0]
    assert ids.unique().tolist() == list(range(36))
    for i in range(3):
        for j in range(3):
            tile = ids[i * 25 // 3:(i + 1) * 25 // 3, j * 24 // 3:(j + 1) * 24 // 3]
            assert set(tile.unique().tolist()) == set(range((i * 3 + j) * 4, (i * 3 + j + 1) * 4))


def test_lime_on_a_grid_keeps_features_inside_tiles() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(2, 3))
    x = torch.randn(2, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    relevance = get_explainer("lime", n_samples=16, segments=4, grid=3)(model, x, torch.tensor([0, 2]))
    ids = grid_mask(24, 24, 4, grid=3)
    for feature in range(36):  # one weight per feature, every feature inside one 8x8 tile
        values = relevance[:, ids == feature]
        assert torch.equal(values, values[:, :1].expand_as(values))
