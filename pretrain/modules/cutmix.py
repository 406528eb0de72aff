"""CutMix for instance discrimination.

Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with
Localizable Features", ICCV 2019; used on the single view by Cao & Wu (2024)
with r ~ Beta(a, a), r = max(r, 1 - r): the target is r * own + (1 - r) * partner.
"""

from __future__ import annotations

import torch
from torch import nn


def cutmix_targets(num_classes: int, own: torch.Tensor, partner: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """(B, C) soft targets: `ratio` on column own[b], 1 - ratio on column partner[b]."""
    b = own.shape[0]
    t = torch.zeros(b, num_classes, device=own.device, dtype=torch.float32)
    t.scatter_add_(1, own.view(-1, 1), ratio.expand(b).view(-1, 1).float())
    t.scatter_add_(1, partner.view(-1, 1), (1.0 - ratio).expand(b).view(-1, 1).float())
    return t


class CutMix(nn.Module):
    """Pastes a box of a shuffled partner into each image; returns the partner order and the kept ratio."""

    def __init__(self, alpha: float = 0.5) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        dev = x.device
        perm = torch.randperm(b, device=dev, generator=generator)
        # Beta(a, a) from two Gammas drawn on the device with the step's generator: no host
        # sync, and a resumed run draws the same ratios (the global RNG is not checkpointed).
        a = torch.full((2,), self.alpha, dtype=torch.float32, device=dev)
        g = torch._standard_gamma(a, generator=generator)
        r = g[:1] / g.sum()
        r = torch.maximum(r, 1 - r)
        cut = torch.sqrt(1.0 - r)
        ch, cw = (cut * h).long(), (cut * w).long()
        cy = torch.randint(0, h, (1,), device=dev, generator=generator)
        cx = torch.randint(0, w, (1,), device=dev, generator=generator)
        y0, y1 = (cy - ch // 2).clamp(0, h), (cy + ch // 2).clamp(0, h)
        x0, x1 = (cx - cw // 2).clamp(0, w), (cx + cw // 2).clamp(0, w)
        ys = torch.arange(h, device=dev).view(1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, w)
        box = ((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)).to(x.dtype)
        mixed = x * (1 - box) + x[perm] * box
        # The exact kept area, as in the reference implementation.
        ratio = 1.0 - ((y1 - y0) * (x1 - x0)).float() / float(h * w)
        return mixed, perm, ratio.view(())
