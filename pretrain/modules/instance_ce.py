"""Instance-discrimination cross-entropy over memory-bank rows.

Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", CVPR 2018: every image is its own class and the bank rows stand
in for the classifier weights. Targets may be soft (CutMix mixes two rows).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InstanceCELoss(nn.Module):
    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits: (B, C) cosines; targets: (B, C) probabilities. Returns the batch mean."""
        return -(targets * F.log_softmax(logits.float() / self.temperature, dim=1)).sum(dim=1).mean()
