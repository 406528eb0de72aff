"""One base for every method: backbone + projector, a training step, distributed hooks.

In the spirit of solo-learn's ``BaseMethod``: the trainer only knows this
interface; a method says how many views it needs and what its loss is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable

import torch
from torch import nn

from pretrain.config import PretrainConfig
from pretrain.distributed import Gather  # re-exported: a method's `gather` argument
from pretrain.methods.info import MethodInfo
from pretrain.modules import ProjectionHead


@dataclass
class StepOutput:
    loss: torch.Tensor


class Method(nn.Module):
    """Backbone f, projector g and a loss over one or more augmented views."""

    name: ClassVar[str] = "base"
    num_views: ClassVar[int] = 1
    # True: the trunk is frozen and the method is fitted on its cached features (pretrain/readout.py), not by the
    # trainer's loop of augment -> forward -> backward
    cached: ClassVar[bool] = False
    info: ClassVar[MethodInfo]  # name, paper, the options that matter: written into the run for the card

    @classmethod
    def title(cls, cfg: PretrainConfig) -> str:
        """The method's name as the card shows it for this run's options."""
        return cls.info.title

    def __init__(self, cfg: PretrainConfig, backbone: nn.Module, embed_dim: int, num_samples: int,
                 gather: Gather | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.embed_dim = embed_dim
        self.num_samples = num_samples
        self.projector = ProjectionHead(embed_dim, cfg.proj_hidden_dim, cfg.proj_dim, out_bn=cfg.proj_out_bn)
        self.gather = gather or Gather()

    def provenance(self) -> dict[str, Any]:
        """config.json's edgezoo block additions: what the weights owe to sources outside the run (distill's
        teacher), or what rebuilding the model needs besides timm (readout's stages)."""
        return {}

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))

    def setup(self, batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        """Called before the first epoch (and every `recalibrate_every` epochs) with (eval view, indices) batches."""

    def forward(self, views: list[torch.Tensor], idx: torch.Tensor, shared: torch.Generator | None = None,
                local: torch.Generator | None = None) -> StepOutput:
        """The training step (so that DistributedDataParallel can wrap the method)."""
        return self.training_step(views, idx, shared, local)

    def training_step(self, views: list[torch.Tensor], idx: torch.Tensor,
                      shared: torch.Generator | None = None, local: torch.Generator | None = None) -> StepOutput:
        """Loss for one batch of augmented views with dataset indices; may update state under no_grad.

        `shared` draws what every rank must draw alike (bank negatives); `local`
        what each rank draws for itself (CutMix).
        """
        raise NotImplementedError
