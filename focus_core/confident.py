"""The grid pointing game's protocol: only images the model classifies confidently and correctly become tiles.

Böhle et al.'s grid pointing game builds its mosaics from images that the model classifies correctly with a
softmax probability of at least a threshold (0.99 in their paper), so that a method is never asked to point at an
object the model did not see. :func:`confident_indices` finds those images of a split, one forward pass per
batch of single tiles; :func:`focus_core.mosaics.build_manifest` takes them as ``eligible`` and records the
threshold and the weights' sha256 in the manifest, so a confident mosaic set has an identity of its own.

Examples
--------
>>> from focus_core.data import load_digits
>>> digits = load_digits(tile_size=8)
>>> class Oracle(torch.nn.Module):  # logits from the true labels: every image confidently right
...     def forward(self, x):
...         return torch.nn.functional.one_hot(digits.labels[self.rows], 10).float() * 20
>>> oracle = Oracle()
>>> oracle.rows = digits.indices("test")
>>> bool(torch.equal(confident_indices(oracle, digits, "test", 0.99, batch_size=10_000), digits.indices("test")))
True
"""

from __future__ import annotations

import math

import torch
from torch import nn

from focus_core.data import TileDataset
from focus_core.errors import FocusError

__all__ = ["confident_indices"]


def confident_indices(
    model: nn.Module,
    dataset: TileDataset,
    split: str,
    threshold: float,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The images of ``split`` that ``model`` classifies correctly with softmax probability ``>= threshold``.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier of single tiles (its logits ``(B, K)``); put in eval mode and left there, its weights
        unchanged.
    dataset : TileDataset
        The images (their labels say what is correct).
    split : str
        ``"val"`` or ``"test"``: the split the mosaics are drawn from.
    threshold : float
        The least softmax probability of the true class, in ``(0, 1]``; the grid pointing game's is 0.99.
    batch_size : int
        Tiles per forward pass.
    device : torch.device or str, optional
        Where the model runs (default: where its first parameter is, else the CPU).

    Returns
    -------
    torch.Tensor
        ``int64`` dataset indices, increasing, on the CPU.

    Raises
    ------
    FocusError
        For the training split, a threshold outside ``(0, 1]``, or a model whose logits do not cover the classes.
    """
    if split not in ("val", "test"):
        raise FocusError(f"Confident tiles come from the mosaics' held-out split: pass 'val' or 'test', not {split!r}.")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) \
            or not 0 < threshold <= 1:
        raise FocusError(f"Expected a confidence threshold in (0, 1], such as 0.99, but got {threshold!r}.")
    if batch_size < 1:
        raise FocusError(f"Expected batch_size to be a positive integer but got {batch_size!r}.")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    members = dataset.indices(split)
    labels = dataset.labels.index_select(0, members)
    keep = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(members), batch_size):
            rows = members[start:start + batch_size]
            logits = model(dataset.normalize(dataset.tiles.index_select(0, rows)).to(device))
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] < len(dataset.classes):
                raise FocusError(
                    f"The model must return logits of shape (B, {len(dataset.classes)}) for single tiles: wrap it "
                    f"so that it does."
                )
            probability = logits.float().softmax(dim=1).cpu()
            truth = labels[start:start + batch_size]
            right = probability.argmax(dim=1) == truth
            sure = probability.gather(1, truth[:, None])[:, 0] >= threshold
            keep.append(rows[right & sure])
    return torch.cat(keep) if keep else torch.zeros(0, dtype=torch.int64)
