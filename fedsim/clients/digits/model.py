"""The digits model: a small CNN for 8×8 images."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """conv(1→8) → pool → conv(8→16) → pool → linear(64→10); 1,898 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))
