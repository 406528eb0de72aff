"""Devices and processes, in one place: which device a process runs on, the process group torchrun asks
for, the all-gather every distributed method uses, and a BatchNorm synchronised over gloo (CPU).

torch's SyncBatchNorm runs on GPUs only; CPU DDP (gloo) would otherwise
normalise each rank's shard with its own statistics, and training would no longer
equal one process with the combined batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from zoo.errors import ConfigError


def select_device(name: str = "auto") -> torch.device:
    """--device: cuda (this process's LOCAL_RANK under torchrun), else mps, else cpu; or the device named."""
    if name != "auto":
        try:
            return torch.device(name)
        except RuntimeError as exc:  # torch's parse error of a device string
            raise ConfigError(f"device (--device) must be auto, cpu, cuda, cuda:N or mps; got {name!r}") from exc
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class DistInfo:
    world_size: int = 1
    rank: int = 0
    owns_group: bool = False  # this process group was created here, so `end_distributed` takes it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """torchrun sets WORLD_SIZE/RANK; gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_world_size(), dist.get_rank(), owns)


def end_distributed(info: DistInfo) -> None:
    """Every rank waits for the others, then the group is destroyed.

    Without it a rank that finishes first (the others skip rank 0's final evaluation and writes) exits with
    gloo's threads still running, and the C++ runtime may abort it ("terminate called without an active
    exception", SIGABRT) after a run that succeeded: torchrun then reports the run as failed.
    """
    if info.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class Gather:
    """All-gather of equal-sized shards along the batch dimension; the identity in a single process."""

    def __init__(self, world_size: int = 1, rank: int = 0) -> None:
        self.world_size = world_size
        self.rank = rank

    @classmethod
    def of_process_group(cls) -> "Gather":
        """Over the default process group, when there is one."""
        if not dist.is_initialized():
            return cls()
        return cls(dist.get_world_size(), dist.get_rank())

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return t
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(out, t.contiguous())
        return torch.cat(out)


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
