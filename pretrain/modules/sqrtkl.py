"""SqrtKL self-distillation loss.

Cao & Wu, arXiv 2404.19289 (2024). With p = softmax(s) over raw bank cosines and
u = p**a / sum(p**a) detached, the loss is KL(p || sg(u)). Its gradient equals
-(1 - a) times the gradient of the entropy of p: it flattens p, spreading the
gradient over many bank rows.

The logits are (B, B + K): 21 MB at the authors' batch 512 and K 10000, per
intermediate. A hand-written backward keeps only the logits alive between forward
and backward (autograd would keep log p, p and log p - log u), so the step's peak
memory stays a fraction of SimCLR's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _log_ratio(logits: torch.Tensor, power: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(p, log p - log u) with u = p**a / sum(p**a); two (B, C) buffers."""
    log_p = F.log_softmax(logits.float(), dim=1)
    g = log_p * power
    g -= torch.logsumexp(g, dim=1, keepdim=True)  # log u
    torch.sub(log_p, g, out=g)
    return log_p.exp_(), g


class _SqrtKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, power: float) -> torch.Tensor:  # type: ignore[override]
        p, g = _log_ratio(logits, power)
        ctx.save_for_backward(logits)
        ctx.power = power
        return torch.linalg.vecdot(p, g, dim=1).mean()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        # d/ds_j sum_k p_k g_k = p_j (g_j - sum_k p_k g_k): the log p inside g contributes sum_k p_k dlog p_k = 0.
        (logits,) = ctx.saved_tensors
        p, g = _log_ratio(logits, ctx.power)
        g -= torch.linalg.vecdot(p, g, dim=1).unsqueeze(1)
        g *= p
        g *= grad_out / logits.shape[0]
        return g.to(logits.dtype), None


class SqrtKLLoss(nn.Module):
    def __init__(self, power: float = 0.5) -> None:
        super().__init__()
        self.power = power

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """logits: (B, C) raw similarities (temperature 1). Returns the batch mean."""
        return _SqrtKL.apply(logits, self.power)
