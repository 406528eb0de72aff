"""A FIFO queue of embeddings: the negatives of MoCo, and SEED's bank of teacher embeddings.

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020 (the queue); Fang et
al., "SEED: Self-supervised Distillation For Visual Representation", ICLR 2021 (a queue of a frozen teacher's
embeddings, which never go stale). Unlike `MemoryBank` (one row per training image, indexed by dataset index),
rows are written in arrival order and the oldest are overwritten. Starts as random unit vectors, as SEED's does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingQueue(nn.Module):
    """K unit vectors of dimension d and the write position: buffers, so they are checkpointed and resumed."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        self.register_buffer("embeddings", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.embeddings.shape[0]

    @torch.no_grad()
    def push(self, keys: torch.Tensor) -> None:
        """Write `keys` (n, d) over the n oldest rows (wrapping around; of more than K keys the last K stay).

        No host sync: the write position stays on the device.
        """
        keys = keys.detach()[-self.size:].to(self.embeddings.dtype)
        rows = (self.ptr + torch.arange(keys.shape[0], device=self.ptr.device)) % self.size
        self.embeddings.index_copy_(0, rows, keys)
        self.ptr.copy_((self.ptr + keys.shape[0]) % self.size)
