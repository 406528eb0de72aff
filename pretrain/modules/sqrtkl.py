"""SqrtKL self-distillation loss.

Cao & Wu, arXiv 2404.19289 (2024). With p = softmax(s) over raw bank cosines and
u = p**a / sum(p**a) detached, the loss is KL(p || sg(u)). Its gradient equals
-(1 - a) times the gradient of the entropy of p: it flattens p, spreading the
gradient over many bank rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SqrtKLLoss(nn.Module):
    def __init__(self, power: float = 0.5) -> None:
        super().__init__()
        self.power = power

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """logits: (B, C) raw similarities (temperature 1). Returns the batch mean."""
        log_p = F.log_softmax(logits.float(), dim=1)
        # log u = a log p - logsumexp(a log p), computed stably and detached.
        log_u = (self.power * log_p - torch.logsumexp(self.power * log_p, dim=1, keepdim=True)).detach()
        return (log_p.exp() * (log_p - log_u)).sum(dim=1).mean()
