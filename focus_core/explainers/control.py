"""The random control: relevance that knows nothing about the model.

A faithful metric must score it about 0.5 on any model. The map of a sample depends only on the seed and the
sample's content (see :mod:`focus_core.explainers.noise`), so it is batch-invariant and reproducible.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from focus_core.explainers.base import ExplainerBase
from focus_core.explainers.noise import per_sample_uniform

__all__ = ["RandomControl"]


class RandomControl(ExplainerBase):
    """Noise uniform in ``[-1, 1)`` per pixel, seeded by ``seed`` and the sample's content.

    Parameters
    ----------
    seed : int, optional
        Seed of the noise (default 0).

    Examples
    --------
    >>> import torch
    >>> maps = RandomControl(seed=1)(torch.nn.Flatten(), torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]))
    >>> tuple(maps.shape)
    (2, 4, 4)
    """

    name = "random"
    spec: ClassVar[dict[str, tuple[str, Any]]] = {"seed": ("int", 0)}

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return per_sample_uniform(inputs, self.params["seed"], tuple(inputs.shape[-2:]))
