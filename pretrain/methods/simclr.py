"""SimCLR baseline: two views per image, NT-Xent.

Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020. Same backbone and projector as effssl, so step time
and memory compare one view against two.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from pretrain.methods.base import Method, StepOutput
from pretrain.methods.info import Citation, MethodInfo
from pretrain.modules import NTXentLoss


CHEN_2020 = Citation(
    key="chen2020simple",
    text='Ting Chen, Simon Kornblith, Mohammad Norouzi and Geoffrey Hinton. "A Simple Framework for '
         'Contrastive Learning of Visual Representations." ICML 2020, arXiv:2002.05709.',
    bibtex="@inproceedings{chen2020simple,\n"
           "  title     = {A Simple Framework for Contrastive Learning of Visual Representations},\n"
           "  author    = {Chen, Ting and Kornblith, Simon and Norouzi, Mohammad and Hinton, Geoffrey},\n"
           "  booktitle = {ICML},\n"
           "  year      = {2020}\n}",
    arxiv="2002.05709")


class SimCLR(Method):
    name: ClassVar[str] = "simclr"
    num_views: ClassVar[int] = 2
    info: ClassVar[MethodInfo] = MethodInfo("SimCLR", CHEN_2020, ("simclr_temperature", "proj_dim"))

    def __init__(self, cfg, backbone, embed_dim, num_samples, gather=None) -> None:
        super().__init__(cfg, backbone, embed_dim, num_samples, gather)
        self.loss_fn = NTXentLoss(cfg.simclr_temperature)

    def training_step(self, views: list[torch.Tensor], idx: torch.Tensor,
                      shared: torch.Generator | None = None, local: torch.Generator | None = None) -> StepOutput:
        b = views[0].shape[0]
        z = self.project(torch.cat(views))
        # Negatives come from this rank's batch (DDP averages the gradients).
        loss = self.loss_fn(z[:b], z[b:])
        return StepOutput(loss)
