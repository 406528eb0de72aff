"""Projection head of the efficient single-branch method.

Cao & Wu, "On Improving the Algorithm-, Model-, and Data- Efficiency of
Self-Supervised Learning", arXiv 2404.19289 (2024): Linear-BN-ReLU x2, then Linear.
"""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Sequential):
    """Linear(F, h) - BN - ReLU - Linear(h, h) - BN - ReLU - Linear(h, d)."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 2048) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)
