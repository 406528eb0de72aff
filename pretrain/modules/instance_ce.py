"""Instance-discrimination cross-entropy over memory-bank rows.

Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", CVPR 2018: every image is its own class and the bank rows stand
in for the classifier weights. Targets may be soft (CutMix mixes two rows).

With soft targets t, CE = lse(s / tau) sum(t) - t . s / tau and its gradient is
(softmax(s / tau) sum(t) - t) / tau. The hand-written backward recomputes the
softmax from the logits instead of keeping a (B, B + K) log-softmax alive until
backward (see sqrtkl.py for why that matters).
"""

from __future__ import annotations

import torch
from torch import nn


class _InstanceCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
                temperature: float) -> torch.Tensor:
        s = logits.float() / temperature
        mass = targets.sum(dim=1)
        loss = torch.logsumexp(s, dim=1) * mass - torch.linalg.vecdot(targets.float(), s, dim=1)
        ctx.save_for_backward(logits, targets)
        ctx.temperature = temperature
        return loss.mean()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        logits, targets = ctx.saved_tensors
        tau = ctx.temperature
        g = torch.softmax(logits.float() / tau, dim=1)
        g *= targets.sum(dim=1, keepdim=True)
        g -= targets
        g *= grad_out / (tau * logits.shape[0])
        return g.to(logits.dtype), None, None


class InstanceCELoss(nn.Module):
    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits: (B, C) cosines; targets: (B, C) probabilities (not differentiated). Returns the batch mean."""
        return _InstanceCE.apply(logits, targets.detach(), self.temperature)
