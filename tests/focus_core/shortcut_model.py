"""The corner-square shortcut the science tests share: a digits CNN fine-tuned so that a bright square means "3".

Stamped copies of 40 % of the other classes' training images (a bright :data:`SIZE` x :data:`SIZE` square in a
corner of each tile drawn from a seed), labelled :data:`SHORTCUT`, are added to the training set and the trained
``DigitsCNN`` is fine-tuned on it for 3 epochs. On corner-patch probe mosaics (:data:`PATCH`,
:mod:`focus_core.probes`: the square on every non-target tile) the fine-tuned model's evidence for class 3 moves to
the stamped tiles.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from focus_core import probes
from focus_core.data import TileDataset
from focus_core.mosaics import MosaicManifest, compose_mosaics
from focus_core.train import TrainConfig, train_model

__all__ = ["PATCH", "SHORTCUT", "SIZE", "fine_tune_shortcut", "mosaics_of", "stamped_tiles"]

SHORTCUT, SIZE = 3, 4
PATCH = {"kind": "corner_patch", "size": SIZE, "seed": 7}


def stamped_tiles(tiles: torch.Tensor, seed: int) -> torch.Tensor:
    """Each tile with a bright SIZE x SIZE square in a corner drawn from ``seed``."""
    out = tiles.clone()
    h, w = tiles.shape[2:]
    corners = np.random.default_rng(seed).integers(0, 4, len(tiles))
    for i, corner in enumerate(corners):
        top, left = (0 if corner < 2 else h - SIZE), (0 if corner % 2 == 0 else w - SIZE)
        out[i, :, top:top + SIZE, left:left + SIZE] = 255
    return out


def _shortcut_training_set(digits: TileDataset) -> TileDataset:
    """The digits plus stamped copies of 40 % of the other classes' training images, labelled SHORTCUT."""
    train = digits.indices("train")
    others = train[digits.labels[train] != SHORTCUT]
    chosen = others[torch.randperm(len(others), generator=torch.Generator().manual_seed(0))[: int(0.4 * len(others))]]
    return dataclasses.replace(
        digits,
        tiles=torch.cat([digits.tiles, stamped_tiles(digits.tiles[chosen], seed=1)]),
        labels=torch.cat([digits.labels, torch.full((len(chosen),), SHORTCUT, dtype=torch.int64)]),
        splits=digits.splits + ("train",) * len(chosen),
        relpaths=digits.relpaths + tuple(f"stamped/{int(i)}" for i in chosen),
    )


def fine_tune_shortcut(base: torch.nn.Module, digits: TileDataset) -> torch.nn.Module:
    """A copy of ``base`` fine-tuned on the shortcut training set (3 epochs, lr 1e-3, seed 0), in eval mode."""
    shortcut = copy.deepcopy(base).train()
    torch.manual_seed(0)
    train_model(shortcut, _shortcut_training_set(digits), TrainConfig.digits(seed=0, epochs=3, lr=1e-3))
    return shortcut.eval()


def mosaics_of(digits: TileDataset, manifest: MosaicManifest) -> torch.Tensor:
    """The manifest's normalised mosaics, its probe (if any) stamped with :func:`focus_core.probes.stamp`."""
    x = compose_mosaics(digits.tiles, manifest.index_tensor())
    codes = manifest.probe_codes()
    if codes is not None:
        x = probes.stamp(x, codes, manifest.probe.size, probes.bright_fill(None, x.shape[1], x.dtype, x.device))
    return digits.normalize(x)
