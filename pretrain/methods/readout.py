"""Stage readout: a linear embedding over a frozen backbone's last stages, learnt by NT-Xent on cached views.

An ImageNet backbone already tells a person's photos apart better than its last layer shows: on 3,483 flower
photos its last four stages, pooled and concatenated untrained, beat its embedding by 3.9 points of leave-one-out
1-NN, and every fine-tune of the whole network at CPU budgets stays near it (BENCHMARKS.md, "Flowers"). So this
method reads those stages (hypercolumns: Hariharan et al., CVPR 2015; zoo/readout.py) and learns only a linear
map from them to the embedding, with SimCLR's NT-Xent (Chen et al., ICML 2020) between two augmented views of
each photo. The trunk never trains, so its pooled stages of every view are computed once and cached
(pretrain/readout.py): the head then trains for hundreds of epochs in seconds, where the trainer's loop would
pay a trunk pass for every step. That is the method's claim: accuracy per unit of compute.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from pretrain.config import PretrainConfig
from pretrain.distributed import Gather
from pretrain.methods.base import Method, StepOutput
from pretrain.methods.info import Citation, MethodInfo
from pretrain.modules import NTXentLoss
from zoo.layout import READOUT_KEY
from zoo.readout import StageReadout

HARIHARAN_2015 = Citation(
    key="hariharan2015hypercolumns",
    text='Bharath Hariharan, Pablo Arbelaez, Ross Girshick and Jitendra Malik. "Hypercolumns for Object '
         'Segmentation and Fine-grained Localization." CVPR 2015, arXiv:1411.5752.',
    bibtex="@inproceedings{hariharan2015hypercolumns,\n"
           "  title     = {Hypercolumns for Object Segmentation and Fine-grained Localization},\n"
           "  author    = {Hariharan, Bharath and Arbel{\\'a}ez, Pablo and Girshick, Ross and Malik, Jitendra},\n"
           "  booktitle = {CVPR},\n"
           "  year      = {2015}\n}",
    arxiv="1411.5752")


class Readout(Method):
    """`backbone` is the `StageReadout` (what is saved and deployed); only its linear map trains."""

    name: ClassVar[str] = "readout"
    num_views: ClassVar[int] = 2
    cached: ClassVar[bool] = True  # trained by pretrain/readout.py on cached trunk features
    info: ClassVar[MethodInfo] = MethodInfo(
        "Stage readout (a linear embedding over the frozen backbone's last stages, NT-Xent on cached views)",
        HARIHARAN_2015, ("readout_stages", "readout_views", "proj_dim", "temperature"))

    def __init__(self, cfg: PretrainConfig, backbone: nn.Module, embed_dim: int, num_samples: int,
                 gather: Gather | None = None) -> None:
        nn.Module.__init__(self)  # not Method's: the readout's linear map is the head, there is no projector
        self.cfg, self.num_samples, self.gather = cfg, num_samples, gather or Gather()
        backbone.eval().requires_grad_(False)
        self.backbone = StageReadout.build(backbone, cfg.readout_stages, cfg.proj_dim, cfg.img_size)
        self.embed_dim = cfg.proj_dim
        self.loss_fn = NTXentLoss(cfg.temperature)

    def provenance(self) -> dict[str, Any]:
        """config.json's edgezoo.readout block: how `zoo.timm_files.load_backbone` rebuilds the readout."""
        return {READOUT_KEY: self.backbone.spec()}

    def train(self, mode: bool = True) -> "Readout":
        super().train(mode)
        self.backbone.trunk.eval()  # frozen: its BatchNorm keeps the statistics the cache was read with
        return self

    def training_step(self, views: list[torch.Tensor], idx: torch.Tensor,
                      shared: torch.Generator | None = None, local: torch.Generator | None = None) -> StepOutput:
        """`views`: two (B, sum(part_dims)) batches of cached pooled parts (`StageReadout.pooled`) of the same
        images."""
        readout = self.backbone
        z0, z1 = (readout.proj(readout.center(v)) for v in views)
        return StepOutput(self.loss_fn(z0, z1))
