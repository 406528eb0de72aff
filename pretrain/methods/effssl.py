"""The efficient single-branch method (effssl) and its NPID baseline.

Cao & Wu, "On Improving the Algorithm-, Model-, and Data- Efficiency of
Self-Supervised Learning", arXiv 2404.19289 (2024), built on Wu et al., "Unsupervised
Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018.
One view per image: one forward, one backward. See ../shared/design/METHOD.md.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterable

import torch
import torch.nn.functional as F

from pretrain.config import PretrainConfig
from pretrain.methods.base import Gather, Method, StepOutput
from pretrain.methods.info import Citation, MethodInfo
from pretrain.modules import CutMix, InstanceCELoss, MemoryBank, SqrtKLLoss, cutmix_targets
from pretrain.modules.neighbourhood import nearest_neighbours, neighbourhood_targets
from zoo.backbones import in_mode

CAO_WU_2024 = Citation(
    key="cao2024efficiency",
    text='Yun-Hao Cao and Jianxin Wu. "On Improving the Algorithm-, Model-, and Data- Efficiency of '
         'Self-Supervised Learning." arXiv:2404.19289, 2024.',
    bibtex="@article{cao2024efficiency,\n"
           "  title   = {On Improving the Algorithm-, Model-, and Data- Efficiency of Self-Supervised Learning},\n"
           "  author  = {Cao, Yun-Hao and Wu, Jianxin},\n"
           "  journal = {arXiv preprint arXiv:2404.19289},\n"
           "  year    = {2024}\n}",
    arxiv="2404.19289")
WU_2018 = Citation(
    key="wu2018unsupervised",
    text='Zhirong Wu, Yuanjun Xiong, Stella X. Yu and Dahua Lin. "Unsupervised Feature Learning via '
         'Non-Parametric Instance Discrimination." CVPR 2018, arXiv:1805.01978.',
    bibtex="@inproceedings{wu2018unsupervised,\n"
           "  title     = {Unsupervised Feature Learning via Non-Parametric Instance Discrimination},\n"
           "  author    = {Wu, Zhirong and Xiong, Yuanjun and Yu, Stella X. and Lin, Dahua},\n"
           "  booktitle = {CVPR},\n"
           "  year      = {2018}\n}",
    arxiv="1805.01978")

# Logit for sampled negatives that duplicate a batch row: excluded from both softmaxes.
_MASKED = -1e4


class EffSSL(Method):
    name: ClassVar[str] = "effssl"
    num_views: ClassVar[int] = 1
    # The components a baseline switches off whatever the config says (FIXED); effssl takes them from the config.
    SWITCHES: ClassVar[tuple[str, ...]] = ("bank_update", "calibrate", "sqrtkl_weight", "cutmix_alpha")
    FIXED: ClassVar[dict[str, Any]] = {}
    info: ClassVar[MethodInfo] = MethodInfo(
        "EffSSL", CAO_WU_2024, ("temperature", "num_negatives", "proj_dim", "proj_out_bn", "sqrtkl_weight",
                                "cutmix_alpha", "bank_update", "calibrate_view", "recalibrate_every", "neighbours"))

    @classmethod
    def title(cls, cfg: PretrainConfig) -> str:
        """The method with the components this run actually used (a recipe may switch some off)."""
        parts = ["instance CE with a memory bank"]
        if cfg.calibrate:
            every = cfg.recalibrate_every
            parts.append("feature calibration" + (f" every {every} epoch{'s' if every > 1 else ''}" if every else ""))
        if cfg.sqrtkl_weight > 0:
            parts.append("SqrtKL self-distillation")
        if cfg.cutmix_alpha > 0:
            parts.append("CutMix")
        if cfg.proj_out_bn:
            parts.append("a BatchNorm on the projector output")
        if cfg.neighbours:
            parts.append(f"each image's {cfg.neighbours} nearest neighbours as positives (AND, Huang et al. 2019)")
        return f"{cls.info.title} ({', '.join(parts)}; Cao & Wu 2024)"

    def __init__(self, cfg: PretrainConfig, backbone: torch.nn.Module, embed_dim: int, num_samples: int,
                 gather: Gather | None = None) -> None:
        super().__init__(cfg, backbone, embed_dim, num_samples, gather)
        own = {name: self.FIXED.get(name, getattr(cfg, name)) for name in self.SWITCHES}
        self.bank_update: str = own["bank_update"]
        self.calibrate: bool = own["calibrate"]
        self.sqrtkl_weight: float = own["sqrtkl_weight"]
        self.cutmix_alpha: float = own["cutmix_alpha"]
        self.bank = MemoryBank(num_samples, cfg.proj_dim, update=self.bank_update, momentum=cfg.bank_momentum,
                               lr=cfg.effective_bank_lr if self.bank_update == "grad" else None,
                               dtype=getattr(torch, cfg.bank_dtype))  # config.BANK_DTYPES: torch names
        self.ce = InstanceCELoss(cfg.temperature)
        self.sqrtkl = SqrtKLLoss(cfg.sqrtkl_power)
        self.cutmix = CutMix(self.cutmix_alpha) if self.cutmix_alpha > 0 else None
        self.num_negatives = min(cfg.num_negatives, num_samples)
        # AND's neighbourhoods: bank rows of each image's nearest neighbours, mined at every setup
        # (a buffer, so a resumed run keeps the ones it trained with)
        self.num_neighbours = min(cfg.neighbours, num_samples - 1)
        if self.num_neighbours:
            self.register_buffer("neighbours", torch.zeros(num_samples, self.num_neighbours, dtype=torch.long))

    @torch.no_grad()
    def setup(self, batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        """Feature calibrate: one no-grad pass of the network fills every bank row.

        Before training (the authors' calibration) and, with `recalibrate_every`, again
        at the start of those epochs, so rows do not lag a network that moves fast.

        BatchNorm runs in train mode (batch statistics), as in the authors' code: at
        initialisation the running statistics are 0/1 and eval mode would map every
        image to nearly the same direction, leaving nothing to discriminate.
        """
        if self.num_neighbours:
            self._mine_neighbours(batches())
        if not self.calibrate:
            return
        gather = (lambda f, i: (self.gather(f), self.gather(i))) if self.gather.world_size > 1 else None
        with in_mode(self, training=True):
            self.bank.calibrate(batches(), self.project, gather)

    @torch.no_grad()
    def _mine_neighbours(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Each image's nearest neighbours in the backbone's embedding (eval mode: the kNN evaluation's features)."""
        feats = torch.zeros(self.num_samples, self.embed_dim, device=self.neighbours.device)
        with in_mode(self.backbone, training=False):
            for x, idx in batches:
                f, i = self.gather(self.backbone(x).float()), self.gather(idx)
                feats[i.to(feats.device)] = f.to(feats.device)
        self.neighbours.copy_(nearest_neighbours(feats, self.num_neighbours))

    def training_step(self, views: list[torch.Tensor], idx: torch.Tensor,
                      shared: torch.Generator | None = None, local: torch.Generator | None = None) -> StepOutput:
        x = views[0]
        b = x.shape[0]
        perm = ratio = None
        if self.cutmix is not None:
            x, perm, ratio = self.cutmix(x, local)
        z = F.normalize(self.project(x).float(), dim=1)
        all_idx = self.gather(idx)
        nbr = self.neighbours[all_idx] if self.num_neighbours else None  # (B_all, k) bank rows
        rows, w_sel, dup = self.bank.select(all_idx, self.num_negatives, shared, None if nbr is None else nbr.flatten())
        # In place: the matmul's backward needs its inputs, not its output (one (B, B + K) buffer less).
        logits = (z @ w_sel.T).masked_fill_(dup.view(1, -1), _MASKED)
        own = self.gather.rank * b + torch.arange(b, device=z.device)
        if perm is None:  # no CutMix: all mass on the own row
            partner, ratio = own, torch.ones((), device=z.device)
        else:
            partner = own[perm]
        if nbr is not None:  # AND: the own image's (and its CutMix partner's) mass spread over its neighbourhood
            sets = torch.cat([all_idx.view(-1, 1), nbr], dim=1)  # (B_all, 1 + k): itself first
            targets = neighbourhood_targets(logits, rows, [sets[own], sets[partner]], [ratio, 1.0 - ratio],
                                            self.cfg.temperature)
        else:
            targets = cutmix_targets(logits.shape[1], own, partner, ratio)
        loss = self.ce(logits, targets)
        if self.sqrtkl_weight > 0:
            loss = loss + self.sqrtkl_weight * self.sqrtkl(logits)
        with torch.no_grad():
            if self.bank.update_rule == "grad":
                probs = torch.softmax(logits / self.cfg.temperature, dim=1)
                self.bank.update(all_idx, self.gather(z.detach()), rows, self.gather(probs), self.gather(targets))
            else:
                self.bank.update(all_idx, self.gather(z.detach()))
        return StepOutput(loss)


class NPID(EffSSL):
    """NPID baseline in the same engine: random bank init, EMA update, no SqrtKL, no CutMix."""

    name: ClassVar[str] = "npid"
    FIXED: ClassVar[dict[str, Any]] = {"bank_update": "ema", "calibrate": False, "sqrtkl_weight": 0.0,
                                       "cutmix_alpha": 0.0}
    info: ClassVar[MethodInfo] = MethodInfo("NPID (non-parametric instance discrimination)", WU_2018,
                                            ("temperature", "num_negatives", "proj_dim", "bank_momentum"))

    @classmethod
    def title(cls, cfg: PretrainConfig) -> str:
        return cls.info.title  # not EffSSL's list of components: NPID has none of them
