"""The Focus metric against a slow, obvious per-pixel reference."""

import math

import pytest
import torch
import torch.nn.functional as F

from focus_core.errors import FocusError
from focus_core.metric import focus_from_sums, focus_score, quadrant_sums, upsampled_quadrant_sums

DEVICES = ["cpu", "meta"] + (["cuda"] if torch.cuda.is_available() else [])


def reference_quadrant_sums(relevance: torch.Tensor) -> list[list[list[float]]]:
    """Visit every pixel, decide its quadrant, add it to the positive or negative sum."""
    out = []
    for r in relevance.tolist():
        height, width = len(r), len(r[0])
        sums = [[0.0, 0.0] for _ in range(4)]
        for y in range(height):
            for x in range(width):
                quadrant = (0 if y < height // 2 else 2) + (0 if x < width // 2 else 1)
                value = r[y][x]
                if value > 0:
                    sums[quadrant][0] += value
                else:
                    sums[quadrant][1] += value
        out.append(sums)
    return out


def reference_focus(relevance: torch.Tensor, mask: torch.Tensor) -> list[float]:
    scores = []
    for sums, targets in zip(reference_quadrant_sums(relevance), mask.tolist()):
        total = sum(s[0] for s in sums)
        on_target = sum(s[0] for s, t in zip(sums, targets) if t)
        scores.append(on_target / total if total > 0 else math.nan)
    return scores


def random_mask(batch: int, generator: torch.Generator) -> torch.Tensor:
    order = torch.rand(batch, 4, generator=generator).argsort(dim=1)
    return torch.zeros(batch, 4, dtype=torch.bool).scatter_(1, order[:, :2], True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("height,width", [(8, 8), (7, 9), (5, 2), (2, 3), (13, 6)])
def test_matches_per_pixel_reference(dtype: torch.dtype, height: int, width: int) -> None:
    generator = torch.Generator().manual_seed(height * 100 + width)
    relevance = torch.randn(5, height, width, generator=generator, dtype=dtype)
    relevance[1] = -relevance[1].abs()  # a map with no positive relevance
    relevance[2] = 0.0  # an all-zero map
    mask = random_mask(5, generator)

    sums = quadrant_sums(relevance)
    assert sums.shape == (5, 4, 2) and sums.dtype == dtype
    expected_sums = torch.tensor(reference_quadrant_sums(relevance), dtype=torch.float64)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(sums.double(), expected_sums, rtol=tolerance, atol=tolerance)
    assert (sums[..., 0] >= 0).all() and (sums[..., 1] <= 0).all()

    scores = focus_score(relevance, mask)
    expected = torch.tensor(reference_focus(relevance, mask), dtype=torch.float64)
    assert scores.shape == (5,) and scores.dtype == dtype
    torch.testing.assert_close(scores.double(), expected, rtol=tolerance, atol=tolerance, equal_nan=True)
    assert scores[1].isnan() and scores[2].isnan()
    assert not scores[[0, 3, 4]].isnan().any()
    torch.testing.assert_close(focus_from_sums(sums, mask), scores, equal_nan=True)


@pytest.mark.parametrize("height,width", [(8, 6), (7, 6)])
def test_non_contiguous_maps_match_the_reference(height: int, width: int) -> None:
    generator = torch.Generator().manual_seed(7)
    relevance = torch.randn(3, width, height, generator=generator).transpose(1, 2)  # (3, height, width), strided
    expected = torch.tensor(reference_quadrant_sums(relevance), dtype=torch.float64)
    torch.testing.assert_close(quadrant_sums(relevance).double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("small", "size"), [((13, 13), (448, 448)), ((7, 5), (224, 161)), ((3, 4), (9, 8)),
                                             ((1, 1), (6, 6)), ((14, 14), (13, 15))])
def test_upsampled_quadrant_sums_are_those_of_the_upsampled_maps(small: tuple[int, int], size: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(small[0] * 31 + size[1])
    maps = torch.rand(4, *small, generator=generator)
    maps[1] = 0.0  # an all-zero map
    maps[2, : small[0] // 2 + 1] = 0.0  # relevance on one half only
    big = F.interpolate(maps[:, None].double(), size=size, mode="bilinear", align_corners=False)[:, 0]
    expected = torch.tensor(reference_quadrant_sums(big), dtype=torch.float64)
    sums = upsampled_quadrant_sums(maps, size)
    assert sums.shape == (4, 4, 2) and sums.dtype == torch.float32
    torch.testing.assert_close(sums.double(), expected, rtol=1e-5, atol=1e-5)
    assert (sums[..., 1] == 0).all() and (sums[1] == 0).all()


def test_upsampled_quadrant_sums_stay_float32_under_autocast() -> None:
    maps = torch.rand(2, 13, 13, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sums = upsampled_quadrant_sums(maps, (448, 448))
    assert sums.dtype == torch.float32
    torch.testing.assert_close(sums, upsampled_quadrant_sums(maps, (448, 448)))


def test_hand_computed_example() -> None:
    # 5x5 map: split at row 2 and column 2, so TL is 2x2, TR 2x3, BL 3x2, BR 3x3.
    relevance = torch.zeros(1, 5, 5, dtype=torch.float64)
    relevance[0, 0, 0] = 2.0  # TL
    relevance[0, 1, 4] = 1.0  # TR
    relevance[0, 1, 3] = -4.0  # TR negative
    relevance[0, 4, 1] = 3.0  # BL
    relevance[0, 2, 2] = 4.0  # BR (the centre pixel belongs to BR)
    sums = quadrant_sums(relevance)
    assert sums[0].tolist() == [[2.0, 0.0], [1.0, -4.0], [3.0, 0.0], [4.0, 0.0]]
    mask = torch.tensor([[True, False, False, True]])
    assert focus_score(relevance, mask).tolist() == [0.6]  # (2 + 4) / 10
    assert focus_score(relevance, ~mask).tolist() == [0.4]


def test_all_relevance_on_targets_is_one_and_off_targets_is_zero() -> None:
    relevance = torch.rand(3, 6, 6)
    relevance[:, 3:, :] = -1.0  # bottom half negative
    top = torch.tensor([[True, True, False, False]] * 3)
    assert focus_score(relevance, top).tolist() == [1.0, 1.0, 1.0]
    assert focus_score(relevance, ~top).tolist() == [0.0, 0.0, 0.0]


def test_half_precision_sums_in_float32() -> None:
    relevance = torch.full((1, 256, 256), 1.0, dtype=torch.float16)  # 65536 > float16's max
    sums = quadrant_sums(relevance)
    assert sums.dtype == torch.float32 and sums[0, :, 0].tolist() == [16384.0] * 4


@pytest.mark.parametrize("device", DEVICES)
def test_result_on_device_of_input(device: str) -> None:
    relevance = torch.randn(4, 6, 7).to(device)
    mask = random_mask(4, torch.Generator().manual_seed(0))  # a CPU mask is moved along
    assert quadrant_sums(relevance).device.type == device
    scores = focus_score(relevance, mask)
    assert scores.device.type == device and scores.shape == (4,)
    if device != "meta":
        expected = focus_score(relevance.cpu(), mask)
        torch.testing.assert_close(scores.cpu(), expected, equal_nan=True)


@pytest.mark.parametrize(
    "relevance,mask,fragment",
    [
        (torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, dtype=torch.bool), "(2, 3, 4, 4)"),
        (torch.zeros(2, 1, 4), torch.zeros(2, 4, dtype=torch.bool), "(2, 1, 4)"),
        (torch.zeros(2, 4, 4, dtype=torch.int64), torch.zeros(2, 4, dtype=torch.bool), "torch.int64"),
        (torch.zeros(2, 4, 4), torch.zeros(3, 4, dtype=torch.bool), "(3, 4)"),
        (torch.zeros(2, 4, 4), torch.zeros(2, 4), "torch.float32 (2, 4)"),
    ],
)
def test_bad_arguments_name_the_shape(relevance: torch.Tensor, mask: torch.Tensor, fragment: str) -> None:
    with pytest.raises(FocusError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        focus_score(relevance, mask)


def test_focus_from_sums_checks_shape() -> None:
    with pytest.raises(FocusError, match=r"\(2, 4\)"):
        focus_from_sums(torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.bool))
