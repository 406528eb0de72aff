"""The efficient single-branch method (effssl) and its NPID baseline.

Cao & Wu, "On Improving the Algorithm-, Model-, and Data- Efficiency of
Self-Supervised Learning", arXiv 2404.19289 (2024), built on Wu et al., "Unsupervised
Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018.
One view per image: one forward, one backward. See ../shared/design/METHOD.md.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Iterable

import torch
import torch.nn.functional as F

from pretrain.config import PretrainConfig
from pretrain.distributed import gather_rows
from pretrain.methods.base import Gather, Method, StepOutput
from pretrain.modules import CutMix, InstanceCELoss, MemoryBank, SqrtKLLoss, cutmix_targets

# Logit for sampled negatives that duplicate a batch row: excluded from both softmaxes.
_MASKED = -1e4

_BANK_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class EffSSL(Method):
    name: ClassVar[str] = "effssl"
    num_views: ClassVar[int] = 1

    def __init__(self, cfg: PretrainConfig, backbone: torch.nn.Module, embed_dim: int, num_samples: int,
                 gather: Gather | None = None) -> None:
        super().__init__(cfg, backbone, embed_dim, num_samples, gather)
        self.bank = MemoryBank(num_samples, cfg.proj_dim, update=self.bank_update, momentum=cfg.bank_momentum,
                               lr=cfg.effective_bank_lr if self.bank_update == "grad" else None,
                               dtype=_BANK_DTYPES[cfg.bank_dtype])
        self.ce = InstanceCELoss(cfg.temperature)
        self.sqrtkl = SqrtKLLoss(cfg.sqrtkl_power)
        self.cutmix = CutMix(cfg.cutmix_alpha) if self.cutmix_alpha > 0 else None
        self.num_negatives = min(cfg.num_negatives, num_samples)

    # The baselines override these four.
    @property
    def bank_update(self) -> str:
        return self.cfg.bank_update

    @property
    def calibrate(self) -> bool:
        return self.cfg.calibrate

    @property
    def sqrtkl_weight(self) -> float:
        return self.cfg.sqrtkl_weight

    @property
    def cutmix_alpha(self) -> float:
        return self.cfg.cutmix_alpha

    @torch.no_grad()
    def setup(self, batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        """Feature calibrate: one no-grad pass of the network fills every bank row.

        Before training (the authors' calibration) and, with `recalibrate_every`, again
        at the start of those epochs, so rows do not lag a network that moves fast.

        BatchNorm runs in train mode (batch statistics), as in the authors' code: at
        initialisation the running statistics are 0/1 and eval mode would map every
        image to nearly the same direction, leaving nothing to discriminate.
        """
        if not self.calibrate:
            return
        was_training = self.training
        self.train()
        gather = gather_rows if self.gather.world_size > 1 else None
        self.bank.calibrate(batches(), self.project, gather)
        self.train(was_training)

    def training_step(self, views: list[torch.Tensor], idx: torch.Tensor,
                      shared: torch.Generator | None = None, local: torch.Generator | None = None) -> StepOutput:
        x = views[0]
        b = x.shape[0]
        perm = ratio = None
        if self.cutmix is not None:
            x, perm, ratio = self.cutmix(x, local)
        z = F.normalize(self.project(x).float(), dim=1)
        all_idx = self.gather(idx)
        rows, w_sel, dup = self.bank.select(all_idx, self.num_negatives, shared)
        # In place: the matmul's backward needs its inputs, not its output (one (B, B + K) buffer less).
        logits = (z @ w_sel.T).masked_fill_(dup.view(1, -1), _MASKED)
        own = self.gather.rank * b + torch.arange(b, device=z.device)
        if perm is None:  # no CutMix: all mass on the own row
            partner, ratio = own, torch.ones((), device=z.device)
        else:
            partner = own[perm]
        targets = cutmix_targets(logits.shape[1], own, partner, ratio)
        loss_ce = self.ce(logits, targets)
        loss = loss_ce
        logs = {"loss_ce": loss_ce.detach()}
        if self.sqrtkl_weight > 0:
            loss_kl = self.sqrtkl(logits)
            loss = loss + self.sqrtkl_weight * loss_kl
            logs["loss_sqrtkl"] = loss_kl.detach()
        with torch.no_grad():
            logs["inst_acc"] = (logits.argmax(dim=1) == own).float().mean()
            if self.bank.update_rule == "grad":
                probs = torch.softmax(logits / self.cfg.temperature, dim=1)
                self.bank.update(all_idx, self.gather(z.detach()), rows, self.gather(probs), self.gather(targets))
            else:
                self.bank.update(all_idx, self.gather(z.detach()))
        return StepOutput(loss, logs)


class NPID(EffSSL):
    """NPID baseline in the same engine: random bank init, EMA update, no SqrtKL, no CutMix."""

    name: ClassVar[str] = "npid"

    @property
    def bank_update(self) -> str:
        return "ema"

    @property
    def calibrate(self) -> bool:
        return False

    @property
    def sqrtkl_weight(self) -> float:
        return 0.0

    @property
    def cutmix_alpha(self) -> float:
        return 0.0
