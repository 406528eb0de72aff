"""A stage readout: the embedding read from the last few stages of a timm backbone, not only from its last layer.

Hypercolumns (Hariharan et al., "Hypercolumns for Object Segmentation and Fine-grained Localization", CVPR 2015)
read a network at several depths. For an ImageNet backbone on a person's photos the class information is spread
over the last stages: on the 3,483 flower photos the init's pooled block stage 6 alone beats its deployed embedding
(BENCHMARKS.md, "Flowers", the readouts bench). `StageReadout` average-pools the chosen stages' outputs and takes
the backbone's own embedding, L2-normalises each part, removes its mean over the training photos (stored, so
every image is read alike), normalises again, concatenates, and projects linearly to the embedding.

Files: the trunk stays timm-native in ``model.safetensors`` (``timm.create_model("hf-hub:...")`` loads it and gives
the trunk's own embedding); the readout's tensors are ``readout.safetensors`` beside it, described by config.json's
``edgezoo.readout`` block (`zoo.layout.READOUT_KEY`). `zoo.timm_files.load_backbone` builds the readout whenever that block is
there, so evaluation, export, the card and `from_pretrained` embed through it. Imported only where torch is.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
from torch import nn


def intermediates_kwargs(trunk: nn.Module, indices: Sequence[int] | None = None) -> dict[str, Any]:
    """``forward_intermediates`` arguments for the `indices` stages (None: every stage, stem first): EfficientNet
    and MobileNet give every block stage, not only their feature_info's, with ``extra_blocks``. Read once per
    trunk (its signature does not change), not per forward pass."""
    kwargs: dict[str, Any] = {}
    if "extra_blocks" in inspect.signature(trunk.forward_intermediates).parameters:
        kwargs["extra_blocks"] = True
    if indices is not None:
        kwargs["indices"] = list(indices)
    return kwargs


def stage_maps(trunk: nn.Module, x: torch.Tensor, kwargs: dict[str, Any] | None = None,
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(the trunk's own embedding, the stage output maps `kwargs` asks for, by default every stage) from one pass
    through timm's ``forward_intermediates`` and ``forward_head``."""
    final, maps = trunk.forward_intermediates(x, **(intermediates_kwargs(trunk) if kwargs is None else kwargs))
    return trunk.forward_head(final), maps


def normalize(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(x, dim=-1)


class StageReadout(nn.Module):
    """trunk -> [pooled stage i for i in stages] (+ its embedding) -> each normalised and centred -> linear."""

    def __init__(self, trunk: nn.Module, stages: Sequence[int], part_dims: Sequence[int], dim: int,
                 with_embedding: bool = True) -> None:
        super().__init__()
        self.trunk = trunk
        self.stages = tuple(int(s) for s in stages)
        self.with_embedding = with_embedding
        self.part_dims = tuple(int(d) for d in part_dims)
        self.register_buffer("means", torch.zeros(sum(self.part_dims)))  # each part's mean over the training photos
        self.proj = nn.Linear(sum(self.part_dims), dim)
        self._take = intermediates_kwargs(trunk, self.stages)

    @classmethod
    def build(cls, trunk: nn.Module, count: int, dim: int, img_size: int, with_embedding: bool = True
              ) -> "StageReadout":
        """A readout of the trunk's last `count` stages, its part sizes measured."""
        param = next(trunk.parameters())
        with torch.no_grad():  # one probe pass: how many stages, and each part's width
            emb, maps = stage_maps(trunk.eval(), torch.zeros(1, 3, img_size, img_size, device=param.device))
        if not 1 <= count <= len(maps):
            raise ValueError(f"the readout needs 1 to {len(maps)} stages of this backbone, got {count}")
        stages = list(range(len(maps) - count, len(maps)))
        dims = ([emb.shape[1]] if with_embedding else []) + [m.shape[1] for m in maps[-count:]]
        return cls(trunk, stages, dims, dim, with_embedding)

    @classmethod
    def from_spec(cls, trunk: nn.Module, spec: dict[str, Any]) -> "StageReadout":
        """The readout config.json's ``edgezoo.readout`` block describes (its tensors loaded separately)."""
        return cls(trunk, spec["stages"], spec["part_dims"], int(spec["dim"]), bool(spec["with_embedding"]))

    def spec(self) -> dict[str, Any]:
        """config.json's ``edgezoo.readout`` block."""
        return {"stages": list(self.stages), "part_dims": list(self.part_dims), "dim": self.proj.out_features,
                "with_embedding": self.with_embedding}

    def readout_state(self) -> dict[str, torch.Tensor]:
        """readout.safetensors' tensors (the trunk's are model.safetensors')."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("trunk.")}

    def load_readout_state(self, state: dict[str, torch.Tensor]) -> None:
        """`readout_state`'s tensors back, strictly (the trunk holds its own weights already)."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("trunk.")]
        if missing or unexpected:
            raise ValueError(f"readout tensors do not match this readout: missing {missing}, unexpected {unexpected}")

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(N, sum(part_dims)) raw parts: the trunk's embedding and each stage's map average-pooled (what the
        training caches: the trunk is frozen)."""
        emb, maps = stage_maps(self.trunk, x, self._take)
        parts = ([emb] if self.with_embedding else []) + [m.mean((2, 3)) if m.ndim == 4 else m.mean(1) for m in maps]
        return torch.cat([p.float() for p in parts], dim=1)

    def center(self, pooled: torch.Tensor) -> torch.Tensor:
        """Each part L2-normalised, its stored mean removed, normalised again; concatenated."""
        parts = torch.split(pooled, self.part_dims, dim=-1)
        means = torch.split(self.means, self.part_dims)
        return torch.cat([normalize(normalize(p) - m) for p, m in zip(parts, means)], dim=-1)

    def set_means(self, pooled: torch.Tensor) -> None:
        """Each part's mean of its L2-normalised rows, from the training photos' pooled parts."""
        parts = torch.split(pooled, self.part_dims, dim=-1)
        self.means.copy_(torch.cat([normalize(p).mean(0) for p in parts]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.center(self.pooled(x)))
