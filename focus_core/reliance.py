"""Model reliance per tile: how much the model's target logit falls when one tile of a mosaic is taken away.

Focus asks an explanation how much of its positive relevance lands on the target tiles; this module asks the
model the same question. For each N x N mosaic, :func:`tile_reliance` replaces one tile at a time by a baseline
and records the drop of the target logit, ``drop_t = logit(mosaic) - logit(mosaic with tile t replaced)``, and the
intact mosaic's target logit: N² + 1 forward passes per mosaic, batched (:func:`occluded_batch` builds any slice of
the ``B (N² + 1)`` variants with one gather and one masked fill, and they run in batches of ``batch_size`` under
``torch.no_grad``). Tiles are numbered and bounded as in :mod:`focus_core.metric` (row-major; tile row ``i`` spans
rows ``i * H // N`` to ``(i + 1) * H // N``).

Baselines (:data:`BASELINES`): ``"mean"`` sets the tile to zero after normalisation, which is the dataset's mean
colour: a tile with no content that the normalised inputs are centred on (docs/reliance.md says why);
``"blur"`` replaces the tile by a Gaussian blur of itself (sigma a tenth of the tile side, kernel clipped to the
tile, reflected at the tile's own edges so nothing of the neighbours enters): its colours stay, its shapes go.

Read from the drops:

- :func:`model_focus`: the share of the positive drops that falls on the target tiles, the model's own Focus
  (:func:`focus_core.metric.focus_from_sums` on the drops, so a mosaic with no positive drop is NaN, undefined,
  as a relevance map with no positive relevance is);
- :func:`explainer_gap`: Focus minus model Focus per mosaic;
- :func:`rank_agreement`: Spearman's rank correlation over the tiles between the explanation's positive relevance
  per tile and the drops, for grids of 3 and 4 (2x2 has too few tiles to rank: NaN).

Examples
--------
>>> import torch
>>> from focus_core.architectures import DigitsCNN
>>> torch.manual_seed(0) and None
>>> model = DigitsCNN().eval()
>>> reliance = tile_reliance(model, torch.randn(3, 1, 64, 64), torch.tensor([1, 2, 3]), grid=2)
>>> reliance.intact.shape, reliance.drops.shape
(torch.Size([3]), torch.Size([3, 4]))
>>> drops = torch.tensor([[2.0, 1.0, 1.0, -3.0], [-1.0, -1.0, -1.0, -1.0]])
>>> model_focus(drops, torch.tensor([[True, False, False, True], [True, True, False, False]])).tolist()
[0.5, nan]
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torchvision.transforms.functional as TF
from torch import nn

from focus_core.errors import FocusError
from focus_core.metric import focus_from_sums

__all__ = [
    "BASELINES",
    "TileReliance",
    "baseline_mosaics",
    "explainer_gap",
    "model_focus",
    "occluded_batch",
    "rank_agreement",
    "tile_reliance",
]

#: The baselines a tile can be replaced by (see the module doc).
BASELINES: tuple[str, ...] = ("mean", "blur")

_GRIDS = (2, 3, 4)


@dataclass(frozen=True)
class TileReliance:
    """The model's reliance on each tile of a batch of mosaics.

    ``intact``: ``(B,)`` the target logit of each intact mosaic; ``drops``: ``(B, N²)`` the intact target logit
    minus the target logit with tile ``t`` replaced by the baseline (positive: the model used the tile for the
    target class; negative: the tile spoke against it). Both float32, on the inputs' device.
    """

    intact: torch.Tensor
    drops: torch.Tensor


def _check(inputs: torch.Tensor, grid: int, baseline: str) -> None:
    if isinstance(grid, bool) or not isinstance(grid, int) or grid not in _GRIDS:
        raise FocusError(f"Expected a grid of 2, 3 or 4 tiles per side but got {grid!r}.")
    if baseline not in BASELINES:
        raise FocusError(f"Unknown baseline {baseline!r}: use one of {', '.join(BASELINES)}.")
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4 or not inputs.dtype.is_floating_point \
            or inputs.shape[2] < grid or inputs.shape[3] < grid:
        got = f"{inputs.dtype} {tuple(inputs.shape)}" if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise FocusError(
            f"Expected normalised float mosaics (B, C, H, W) of at least {grid}x{grid} pixels but got {got}: "
            f"pass compose_normalized(...)'s output."
        )


def _bounds(size: int, grid: int) -> list[tuple[int, int]]:
    """The ``(start, stop)`` of each tile row (or column) of ``size`` pixels, as :mod:`focus_core.metric` splits."""
    edges = [i * size // grid for i in range(grid + 1)]
    return list(zip(edges, edges[1:]))


@functools.lru_cache(maxsize=32)
def _variant_masks(height: int, width: int, grid: int, device: torch.device) -> torch.Tensor:
    """``(N² + 1, 1, H, W)`` bool: variant 0 (the intact mosaic) masks nothing, variant ``t + 1`` masks tile ``t``."""
    masks = torch.zeros(grid * grid + 1, 1, height, width, dtype=torch.bool)
    for t, ((r0, r1), (c0, c1)) in enumerate((r, c) for r in _bounds(height, grid) for c in _bounds(width, grid)):
        masks[t + 1, :, r0:r1, c0:c1] = True
    return masks.to(device)


def baseline_mosaics(inputs: torch.Tensor, grid: int, baseline: str = "mean") -> torch.Tensor | None:
    """What each tile of each mosaic is replaced by, as mosaics ``(B, C, H, W)``; ``None`` for ``"mean"`` (zeros).

    ``"blur"``: every tile blurred on its own (:func:`torchvision.transforms.functional.gaussian_blur`, sigma
    ``max(h, w) / 10``, an odd kernel of about four sigma clipped to the tile, reflect padding inside the tile).

    Examples
    --------
    >>> x = torch.zeros(1, 1, 8, 8); x[..., :4, :4] = 1.0
    >>> blurred = baseline_mosaics(x, 2, "blur")
    >>> round(float(blurred[..., :4, :4].mean()), 4), float(blurred[..., 4:, :].abs().max())
    (1.0, 0.0)
    """
    _check(inputs, grid, baseline)
    if baseline == "mean":
        return None
    out = torch.empty_like(inputs)
    for r0, r1 in _bounds(inputs.shape[2], grid):
        for c0, c1 in _bounds(inputs.shape[3], grid):
            tile = inputs[:, :, r0:r1, c0:c1]
            sigma = max(r1 - r0, c1 - c0) / 10
            kernel = [_odd_kernel(sigma, side) for side in (c1 - c0, r1 - r0)]  # (x, y) as torchvision wants
            out[:, :, r0:r1, c0:c1] = TF.gaussian_blur(tile, kernel, [sigma, sigma]) if max(kernel) > 1 else tile
    return out


def _odd_kernel(sigma: float, side: int) -> int:
    """An odd kernel of about 4 sigma, small enough for reflect padding inside a tile of ``side`` pixels."""
    size = 2 * math.ceil(2 * sigma) + 1
    return max(1, min(size, side - 1 if side % 2 == 0 else side))


def occluded_batch(
    inputs: torch.Tensor, base: torch.Tensor | None, rows: torch.Tensor, grid: int
) -> torch.Tensor:
    """Rows ``rows`` of the ``B (N² + 1)`` occlusion variants, mosaic-major: row ``r`` is mosaic ``r // (N² + 1)``
    with tile ``r % (N² + 1) - 1`` replaced (``r % (N² + 1) == 0``: intact).

    ``base`` is :func:`baseline_mosaics`' output (``None``: zeros). One gather and one masked fill.
    """
    variants = grid * grid + 1
    mosaic, variant = rows // variants, rows % variants
    masks = _variant_masks(inputs.shape[2], inputs.shape[3], grid, inputs.device)[variant]
    batch = inputs[mosaic]
    if base is None:
        return batch.masked_fill_(masks, 0)
    return torch.where(masks, base[mosaic], batch)


def tile_reliance(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, grid: int, baseline: str = "mean",
    batch_size: int = 64,
) -> TileReliance:
    """Measure the drop of the target logit when each tile is replaced by ``baseline``, batched.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier, in eval mode, on the device of ``inputs``; ``model(x)`` gives ``(n, classes)`` logits.
    inputs : torch.Tensor
        Normalised mosaics ``(B, C, H, W)`` (zero is the dataset's mean), ``grid`` x ``grid`` tiles each.
    targets : torch.Tensor
        ``(B,)`` integer target classes.
    grid : int
        Tiles per side: 2, 3 or 4.
    baseline : str
        ``"mean"`` (default) or ``"blur"``: :data:`BASELINES`.
    batch_size : int
        Forward-pass rows per batch: the ``B (N² + 1)`` variants run in batches of this many, whatever ``B``.

    Returns
    -------
    TileReliance
        ``intact`` ``(B,)`` and ``drops`` ``(B, N²)``, float32 on the inputs' device.

    Raises
    ------
    FocusError
        For a grid, baseline, input, target or batch size it cannot use, or a model whose output is not
        ``(n, classes)`` logits with every target below ``classes``: before any forward pass where it can tell.
    """
    _check(inputs, grid, baseline)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FocusError(f"Expected a positive integer batch size but got {batch_size!r}.")
    if not isinstance(targets, torch.Tensor) or targets.dtype not in (torch.int32, torch.int64) \
            or targets.shape != (inputs.shape[0],) or (targets.numel() and int(targets.min()) < 0):
        raise FocusError(
            f"Expected ({inputs.shape[0]},) non-negative integer targets, one per mosaic: pass the target classes."
        )
    variants = grid * grid + 1
    largest = int(targets.max()) if targets.numel() else -1  # read once: no device-to-host copy per batch
    targets = targets.to(device=inputs.device, dtype=torch.int64)
    logits = torch.empty(inputs.shape[0] * variants, device=inputs.device, dtype=torch.float32)
    with torch.no_grad():
        base = baseline_mosaics(inputs, grid, baseline)
        for start in range(0, logits.shape[0], batch_size):
            rows = torch.arange(start, min(start + batch_size, logits.shape[0]), device=inputs.device)
            out = model(occluded_batch(inputs, base, rows, grid))
            logits[rows] = _target_logits(out, targets[rows // variants], largest, model)
    table = logits.view(-1, variants)
    return TileReliance(intact=table[:, 0].clone(), drops=table[:, :1] - table[:, 1:])


def _target_logits(out: object, targets: torch.Tensor, largest: int, model: nn.Module) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != targets.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise FocusError(f"{type(model).__name__} returned {shape}, not (n, classes) logits: pass a classifier.")
    if largest >= out.shape[1]:
        raise FocusError(
            f"A target class is {largest} but {type(model).__name__} has {out.shape[1]} outputs: "
            f"pass targets below {out.shape[1]}."
        )
    return out.gather(1, targets[:, None])[:, 0].float()


def model_focus(drops: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """The share of each mosaic's positive drops on its target tiles: ``(B,)``, NaN where no drop is positive.

    ``drops`` ``(B, N²)`` from :func:`tile_reliance`; ``target_mask`` ``(B, N²)`` bool
    (:func:`focus_core.mosaics.target_mask`). The same reduction as Focus
    (:func:`focus_core.metric.focus_from_sums`), with the drops in place of relevance.
    """
    if not isinstance(drops, torch.Tensor) or drops.ndim != 2:
        shape = tuple(drops.shape) if isinstance(drops, torch.Tensor) else type(drops).__name__
        raise FocusError(f"Expected drops of shape (B, N²) but got {shape}: pass tile_reliance(...).drops.")
    return focus_from_sums(torch.stack([drops.clamp(min=0), drops.clamp(max=0)], dim=2), target_mask)


def explainer_gap(focus: torch.Tensor, model_focus_: torch.Tensor) -> torch.Tensor:
    """Focus minus model Focus per mosaic: positive, the explanation puts more on the targets than the model's
    reliance does; NaN where either is undefined.

    Examples
    --------
    >>> explainer_gap(torch.tensor([0.75, 0.5]), torch.tensor([0.5, float("nan")])).tolist()
    [0.25, nan]
    """
    if not isinstance(focus, torch.Tensor) or not isinstance(model_focus_, torch.Tensor) \
            or focus.shape != model_focus_.shape or focus.ndim != 1:
        raise FocusError("Expected Focus and model Focus of the same (B,) shape: pass one value per mosaic of each.")
    return focus - model_focus_.to(focus.device, focus.dtype)


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks ``1..T`` along the last dimension, ties given their average rank (as ``scipy.stats.rankdata``)."""
    less = (x[..., None, :] < x[..., :, None]).sum(-1)
    equal = (x[..., None, :] == x[..., :, None]).sum(-1)
    return less.to(torch.float64) + (equal.to(torch.float64) + 1) / 2


def rank_agreement(relevance: torch.Tensor, drops: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation over the tiles between positive relevance per tile and the drops: ``(B,)``.

    ``relevance`` ``(B, N²)``: the positive relevance sum of each tile (``tile_sums(maps, N)[..., 0]``);
    ``drops`` ``(B, N²)`` from :func:`tile_reliance`. Ties take their average rank (scipy's ``spearmanr``).
    NaN where either side is constant over the tiles (no ranking), and for 2x2 mosaics (four tiles rank too
    coarsely to read a correlation from).

    Examples
    --------
    >>> relevance = torch.tensor([[9.0, 1, 0, 0, 0, 0, 0, 0, 2], [1.0] * 9])
    >>> drops = torch.tensor([[5.0, 2, 0, -1, 0, 0, 0, 0, 1], list(range(9))])
    >>> [round(v, 4) for v in rank_agreement(relevance, drops).tolist()]
    [0.9003, nan]
    """
    if not isinstance(relevance, torch.Tensor) or not isinstance(drops, torch.Tensor) or relevance.ndim != 2 \
            or relevance.shape != drops.shape or relevance.shape[1] not in (4, 9, 16):
        raise FocusError("Expected relevance and drops of the same (B, N²) shape, N = 2, 3 or 4: one row per mosaic.")
    if relevance.shape[1] == 4:
        return torch.full((relevance.shape[0],), float("nan"), device=drops.device)
    a = _average_ranks(relevance.to(drops.device, torch.float64))
    b = _average_ranks(drops.to(torch.float64))
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    denominator = (a.square().sum(1) * b.square().sum(1)).sqrt()
    nan = torch.full_like(denominator, float("nan"))
    return torch.where(denominator > 0, (a * b).sum(1) / torch.where(denominator > 0, denominator, 1), nan).float()
