"""Parameter regularisers for continual pretraining: pull toward the starting weights.

L2-SP: Li et al., "Explicit Inductive Bias for Transfer Learning with Convolutional
Networks", ICML 2018. MAS: Aljundi et al., "Memory Aware Synapses: Learning What
(not) to Forget", ECCV 2018 (importance = mean |d ||f(x)||^2 / d theta| over the
previous chunk's images). Used for streaming SSL as in Hu et al., "How Well Does
Self-Supervised Pre-Training Perform with Streaming Data?", ICLR 2022.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from zoo.backbones import in_mode


class AnchorPenalty(nn.Module):
    """weight/2 * sum_i importance_i * (theta_i - anchor_i)^2 over a module's parameters.

    With all importances 1 this is L2-SP; with MAS importances it is MAS.
    """

    def __init__(self, module: nn.Module, weight: float, importance: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.weight = weight
        self.names = [n for n, p in module.named_parameters() if p.requires_grad]
        for i, (n, p) in enumerate(module.named_parameters()):
            if n in self.names:
                self.register_buffer(f"anchor_{i}", p.detach().clone())
                imp = importance.get(n) if importance is not None else None
                self.register_buffer(f"importance_{i}", imp.to(p) if imp is not None else torch.ones_like(p))
        self._index = {n: i for i, (n, _) in enumerate(module.named_parameters())}

    def forward(self, module: nn.Module) -> torch.Tensor:
        total = torch.zeros((), device=next(module.parameters()).device)
        for n, p in module.named_parameters():
            if n in self._index and hasattr(self, f"anchor_{self._index[n]}"):
                i = self._index[n]
                total = total + (getattr(self, f"importance_{i}") * (p - getattr(self, f"anchor_{i}")) ** 2).sum()
        return 0.5 * self.weight * total


@torch.no_grad()
def _zero_like(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: torch.zeros_like(p) for n, p in module.named_parameters() if p.requires_grad}


def mas_importance(module: nn.Module, batches: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
    """MAS importance: the mean absolute gradient of the squared L2 norm of the output, per parameter."""
    importance = _zero_like(module)
    count = 0
    with in_mode(module):
        for x in batches:
            module.zero_grad(set_to_none=True)
            out = module(x)
            (out.pow(2).sum(dim=1).mean()).backward()
            for n, p in module.named_parameters():
                if p.grad is not None and n in importance:
                    importance[n] += p.grad.detach().abs() * x.shape[0]
            count += x.shape[0]
        module.zero_grad(set_to_none=True)
    return {n: v / max(count, 1) for n, v in importance.items()}


def scale_to_unit_max(importance: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Divide every importance by the largest one, so the largest is 1.

    Raw MAS importances scale with the network's output norm, and the penalty's curvature,
    weight * importance, must stay below 2 (1 + momentum) / lr for SGD to be stable. The
    raw importances of a cpu-quick step-1 network reach 25.9, and at that recipe's lr 0.6
    the MAS step diverged (BENCHMARKS.md, continual). Scaled, the largest importance is 1,
    the value L2-SP gives every parameter, so --reg-weight means the same for both.
    """
    top = max((float(v.max()) for v in importance.values()), default=0.0)
    return {n: v / top for n, v in importance.items()} if top > 0 else importance
