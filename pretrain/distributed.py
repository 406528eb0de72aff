"""Multi-process pieces: a BatchNorm synchronised over gloo (CPU) and helpers.

torch's SyncBatchNorm runs on GPUs only; CPU DDP (gloo) would otherwise
normalise each rank's shard with its own statistics, and training would no longer
equal one process with the combined batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class AllReduceBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are all-reduced across ranks (differentiably)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        stats = all_reduce(torch.cat([x.sum(dims), count]))
        total = stats[-1]
        mean = stats[:c] / total
        # Two passes (centred squares) rather than E[x^2] - E[x]^2: no cancellation in float32.
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / total
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                mom = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - mom).add_(mom * mean.detach())
                self.running_var.mul_(1 - mom).add_(mom * var.detach() * total / (total - 1))
                self.num_batches_tracked.add_(1)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """torch's SyncBatchNorm on CUDA, AllReduceBatchNorm elsewhere; same parameters and buffers."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    out = module
    # Plain BatchNorm only: timm's norm+act layers keep their fused activation (use CUDA for those).
    if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d):
        out = AllReduceBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                 module.track_running_stats)
        out.load_state_dict(module.state_dict())
    for name, child in module.named_children():
        out.add_module(name, _convert(child))
    return out


def gather_rows(features: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gather (features, indices) of equal-sized shards from every rank."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return features, idx
    world = dist.get_world_size()
    fs = [torch.empty_like(features) for _ in range(world)]
    ids = [torch.empty_like(idx) for _ in range(world)]
    dist.all_gather(fs, features.contiguous())
    dist.all_gather(ids, idx.contiguous())
    return torch.cat(fs), torch.cat(ids)
