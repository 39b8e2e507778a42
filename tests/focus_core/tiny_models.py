"""The small conv-BN-ReLU classifier the explainer tests share."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TinyDigitsCNN", "tiny_model"]


class TinyDigitsCNN(nn.Module):
    """conv-BN-ReLU x2, global average pooling, linear head; activations are nn.ReLU modules."""

    def __init__(self, in_channels: int = 1, num_classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def tiny_model(seed: int = 0, in_channels: int = 1, num_classes: int = 4) -> nn.Module:
    """A seeded :class:`TinyDigitsCNN` with non-trivial BatchNorm statistics.

    A canonizer that forgot to restore BatchNorm, or an LRP that ignored it, shows on this model.
    """
    torch.manual_seed(seed)
    model = TinyDigitsCNN(in_channels, num_classes)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model
