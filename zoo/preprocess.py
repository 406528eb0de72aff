"""Deployment preprocessing, numpy + Pillow only: the one definition every stage uses.

timm's eval transform: resize the shorter side to floor(img_size / crop_pct),
centre-crop img_size, scale to [0, 1], normalise with mean/std. Training decodes
images once to the resized square (``resize_size``) so that evaluation,
calibration, export validation and the edge runtime all see the same pixels
(pretrain/preprocess.py crops and normalises those squares on the training device).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from zoo.images import SkipReport, decode_many, interpolation_from_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class Preprocess:
    """How raw images become the network's input tensor."""

    img_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 1.0
    interpolation: str = "bicubic"

    @property
    def resize_size(self) -> int:
        return int(math.floor(self.img_size / self.crop_pct))

    @classmethod
    def from_pretrained_cfg(cls, cfg: dict[str, Any]) -> "Preprocess":
        """From a timm pretrained_cfg (config.json's ``pretrained_cfg``)."""
        size = cfg["input_size"][-1]
        return cls(img_size=int(size), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                   crop_pct=float(cfg.get("crop_pct", 1.0)), interpolation=cfg.get("interpolation", "bicubic"))

    def to_pretrained_cfg(self) -> dict[str, Any]:
        return {"input_size": [3, self.img_size, self.img_size], "mean": list(self.mean), "std": list(self.std),
                "crop_pct": self.crop_pct, "crop_mode": "center", "interpolation": self.interpolation}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def decode(self, items: Iterable[Any], *, size: int | None = None, skip: SkipReport | None = None,
               ) -> tuple[np.ndarray, list[int]]:
        """Images (paths, PIL, arrays) to (N, s, s, 3) uint8 at the eval crop (or `size`)."""
        crop = size or self.img_size
        resize = self.resize_size if crop == self.img_size else crop
        return decode_many(items, resize, crop, interpolation_from_name(self.interpolation), skip)

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 normalised network input."""
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise ValueError(f"expected (N, H, W, 3) uint8, got {batch.shape} {batch.dtype}")
        mean = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1)
        x = batch.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
        return (x - mean) / std


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def batched(seq: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]
