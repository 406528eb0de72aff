"""The first stages of a timm backbone, for --freeze-stages: trained networks keep the early, generic layers.

Surgical fine-tuning (Lee et al., "Surgical Fine-Tuning Improves Adaptation to Distribution Shifts", ICLR 2023)
finds that tuning a subset of layers adapts a pretrained network better than tuning all of them, and on a CPU
every frozen stage is also a stage with no backward pass. A stage is one of timm's coarse parameter groups
(`group_matcher(coarse=True)`: the stem, then each block stage; the last group holds the head), so the same
number means the same thing for every timm backbone.
"""

from __future__ import annotations

from torch import nn


def stage_modules(backbone: nn.Module) -> list[list[nn.Module]]:
    """The backbone's parameter-holding modules, stage by stage (the stem first)."""
    from timm.models import group_modules

    matcher = getattr(backbone, "group_matcher", None)
    if matcher is None:
        raise ValueError(f"{type(backbone).__name__} has no timm group_matcher: its stages are unknown")
    named = dict(backbone.named_modules())
    groups = group_modules(backbone, matcher(coarse=True))
    return [[named[name] for name in groups[gid]] for gid in sorted(groups)]


def first_stages(backbone: nn.Module, n: int) -> list[nn.Module]:
    """The modules of the first `n` stages; ValueError unless at least one stage stays trainable."""
    stages = stage_modules(backbone)
    if not 0 <= n < len(stages):
        raise ValueError(f"--freeze-stages must be in [0, {len(stages) - 1}] for {type(backbone).__name__} "
                         f"({len(stages)} stages: the stem, the blocks, the head's); got {n}")
    return [module for stage in stages[:n] for module in stage]


def freeze(modules: list[nn.Module]) -> None:
    """No gradients and running statistics as they are (eval mode) for every module given."""
    for module in modules:
        module.requires_grad_(False)
        module.eval()
