"""NT-Xent contrastive loss for the SimCLR baseline.

Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020: two views, 2B - 2 negatives per anchor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NTXentLoss(nn.Module):
    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        """z0, z1: (B, d) projections of two views of the same images."""
        z = F.normalize(torch.cat([z0, z1]).float(), dim=1)
        n = z0.shape[0]
        sim = z @ z.T / self.temperature
        sim.fill_diagonal_(float("-inf"))
        targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        return F.cross_entropy(sim, targets)
