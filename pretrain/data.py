"""Training data: a source decoded once into memory, with the exact file list recorded in RUN_DIR."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pretrain.config import PretrainConfig
from zoo import datasets
from zoo.fsutil import atomic_write_text
from zoo.layout import DATA
from zoo.preprocess import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, Preprocess


@dataclass
class Split:
    """Decoded images (N, R, R, 3) uint8 with their file list and labels."""

    images: np.ndarray
    files: datasets.ImageList

    @property
    def labels(self) -> torch.Tensor | None:
        return torch.tensor(self.files.labels) if self.files.labels is not None else None


def data_stats(cfg: PretrainConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if cfg.mean is not None and cfg.std is not None:
        return tuple(cfg.mean), tuple(cfg.std)
    if datasets.split_spec(cfg.data)[0].lower() == "cifar10":
        return CIFAR10_MEAN, CIFAR10_STD
    return IMAGENET_MEAN, IMAGENET_STD


def preprocess_of(cfg: PretrainConfig) -> Preprocess:
    mean, std = data_stats(cfg)
    return Preprocess(cfg.img_size, mean, std, cfg.crop_pct, cfg.interpolation)


def subset_indices(n: int, max_images: int | None, seed: int) -> list[int]:
    """A fixed random subset (sorted), the same for a given (n, max_images, seed)."""
    if not max_images or max_images >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, size=max_images, replace=False).tolist())


def load_split(spec: str, preprocess: Preprocess, max_images: int | None = None, seed: int = 0) -> Split:
    files = datasets.resolve(spec)
    files = files.subset(subset_indices(len(files), max_images, seed))
    r = preprocess.resize_size
    images, files = datasets.decode(files, r, r, preprocess.interpolation)
    return Split(images, files)


def load_train_split(cfg: PretrainConfig, preprocess: Preprocess) -> Split:
    return load_split(cfg.data, preprocess, cfg.max_images, cfg.seed)


def load_knn_bank(cfg: PretrainConfig, preprocess: Preprocess, data: str | None = None) -> Split:
    """The labelled kNN bank: the whole training source (not the pretraining subset), capped at eval_max_train.

    Drawn independently of `max_images` so runs on different subsets are scored
    against the same bank, as the evaluation protocol (METHOD.md) asks.
    """
    return load_split(data or cfg.data, preprocess, cfg.eval_max_train, cfg.seed + 1)


def write_data_record(run_dir: Path, cfg: PretrainConfig, train: Split, eval_spec: str | None) -> None:
    files = train.files
    record = {
        "train": {"spec": cfg.data, "root": str(files.root.resolve()), "num_images": len(files),
                  "classes": files.classes, "max_images": cfg.max_images, "seed": cfg.seed},
        "eval": {"spec": eval_spec} if eval_spec else None,
        "files": [p.relative_to(files.root).as_posix() for p in files.paths],
    }
    atomic_write_text(run_dir / DATA, json.dumps(record))
