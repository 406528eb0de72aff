"""A replay reservoir of earlier images for continual pretraining.

Vitter's reservoir sampling (algorithm R): after offering n images, each one is in
the reservoir with probability capacity / n, whatever the order of the chunks.
Images are stored as uint8 arrays inside the RUN_DIR (never references to
folders that may vanish), written atomically, and carried to the next step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.errors import ConfigError
from zoo.fsutil import atomic_path
from zoo.layout import REPLAY


@dataclass
class Reservoir:
    capacity: int
    images: np.ndarray | None = None  # (M, R, R, 3) uint8, M <= capacity
    seen: int = 0  # images offered so far, over every chunk
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def __len__(self) -> int:
        return 0 if self.images is None else len(self.images)

    def offer(self, batch: np.ndarray) -> None:
        """Offer every image of `batch` (N, R, R, 3) in order."""
        if self.capacity <= 0:
            self.seen += len(batch)
            return
        if self.images is None:
            self.images = np.zeros((0, *batch.shape[1:]), np.uint8)
        if self.images.shape[1:] != batch.shape[1:]:
            raise ConfigError(f"replay images are {self.images.shape[1:]}, new chunk is {batch.shape[1:]}: "
                             "continual steps must share img_size and crop_pct")
        fill = min(self.capacity - len(self.images), len(batch))
        if fill > 0:
            self.images = np.concatenate([self.images, batch[:fill]])
        for k in range(fill, len(batch)):
            j = int(self.rng.integers(0, self.seen + k + 1))
            if j < self.capacity:
                self.images[j] = batch[k]
        self.seen += len(batch)

    def save(self, run_dir: Path, name: str = REPLAY) -> Path:
        path = Path(run_dir) / name
        images = self.images if self.images is not None else np.zeros((0, 1, 1, 3), np.uint8)
        with atomic_path(path, ".tmp.npz") as tmp:  # np.savez adds .npz to any other name
            np.savez(tmp, images=images, seen=np.int64(self.seen), capacity=np.int64(self.capacity))
        return path

    @classmethod
    def load(cls, run_dir: Path, capacity: int | None = None, seed: int = 0, name: str = REPLAY,
             ) -> "Reservoir":
        path = Path(run_dir) / name
        rng = np.random.default_rng(seed)
        if not path.is_file():
            return cls(capacity or 0, rng=rng)
        with np.load(path) as z:
            images = z["images"] if len(z["images"]) else None
            res = cls(int(capacity if capacity is not None else z["capacity"]), images, int(z["seen"]), rng)
        if res.images is not None and len(res.images) > res.capacity:
            keep = np.sort(rng.choice(len(res.images), res.capacity, replace=False))
            res.images = res.images[keep]
        return res
