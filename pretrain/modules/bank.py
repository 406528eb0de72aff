"""Memory bank of instance features with feature calibration and two update rules.

Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", CVPR 2018 (the bank, the EMA update); Cao & Wu, arXiv
2404.19289 (2024) (feature calibration, the gradient update). Everything is a
batched tensor op on the bank's device: no host syncs, no Python sampling.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn


def first_columns(rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The first column of `rows` (C,) holding each of `values` (any shape), -1 where none does.

    One stable sort and a binary search: O(C log C), no (C, C) comparison and no host sync.
    """
    sorted_rows, order = torch.sort(rows, stable=True)
    pos = torch.searchsorted(sorted_rows, values).clamp_max(rows.numel() - 1)
    return torch.where(sorted_rows[pos] == values, order[pos], torch.full_like(order[pos], -1))


def repeated(rows: torch.Tensor) -> torch.Tensor:
    """(C,) True where rows[c] already occurs at an earlier column (the later copies, to leave out)."""
    return first_columns(rows, rows) != torch.arange(rows.numel(), device=rows.device)


class MemoryBank(nn.Module):
    """An (N, d) table of unit vectors, one per training image.

    Args:
        size: number of training images N.
        dim: feature size d.
        update: "ema" (w_i <- normalize(m w_i + (1 - m) z_i)) or "grad"
            (W_sel <- normalize(W_sel - eta (P - Y)^T z), the step along the
            instance CE's gradient with respect to the selected rows).
        momentum: m of the EMA rule.
        lr: eta of the grad rule (required by it); the default of PretrainConfig.effective_bank_lr, (1 - m) / m,
            moves a positive with p near 0 exactly as far as the EMA rule does.
    """

    def __init__(self, size: int, dim: int, update: str = "ema", momentum: float = 0.5,
                 lr: float | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if update not in ("ema", "grad"):
            raise ValueError(f"update must be 'ema' or 'grad', got {update!r}")
        self.update_rule = update
        self.momentum = momentum
        if update == "grad" and lr is None:
            raise ValueError("the grad rule needs its step lr (default: PretrainConfig.effective_bank_lr)")
        self.lr = lr if lr is not None else 0.0
        self.register_buffer("weight", F.normalize(torch.randn(size, dim), dim=1).to(dtype))
        # Rows never written by calibration or training stay at -1 (calibration must fill every row).
        self.register_buffer("filled", torch.zeros(size, dtype=torch.bool))

    @property
    def size(self) -> int:
        return self.weight.shape[0]

    @torch.no_grad()
    def calibrate(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                  encode: Callable[[torch.Tensor], torch.Tensor],
                  gather: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
                  ) -> None:
        """Fill rows with normalize(encode(x)) for every (x, idx) batch, the last partial one included.

        Under DDP each rank encodes its shard and `gather` collects every rank's rows.
        """
        for x, idx in batches:
            feats = F.normalize(encode(x).float(), dim=1)
            if gather is not None:
                feats, idx = gather(feats, idx)
            idx = idx.to(self.weight.device)
            self.weight[idx] = feats.to(self.weight.dtype)
            self.filled[idx] = True

    def select(self, idx: torch.Tensor, num_negatives: int, generator: torch.Generator | None = None,
               extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows for one step: the batch's own, then `extra` rows (neighbours), then K random others (read BEFORE
        any update).

        Returns (row indices (B+E+K,), rows (B+E+K, d) float32, mask (B+E+K,) True where an extra row repeats
        an earlier column or a sampled negative repeats a batch or extra row: those columns must be ignored).
        """
        rows, dup = idx, torch.zeros_like(idx, dtype=torch.bool)
        if extra is not None:
            rows = torch.cat([idx, extra])
            dup = repeated(rows)
        if num_negatives > 0:
            neg = torch.randint(0, self.size, (num_negatives,), device=self.weight.device, generator=generator)
            dup = torch.cat([dup, torch.isin(neg, rows)])
            rows = torch.cat([rows, neg])
        return rows, self.weight[rows].float(), dup

    @staticmethod
    def grad_direction(z: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(P - Y)^T z: tau times d(sum_b CE_b)/dW_sel for logits z W_sel^T / tau."""
        return (probs.float() - targets.float()).T @ z.float()

    @torch.no_grad()
    def update(self, idx: torch.Tensor, z: torch.Tensor, rows: torch.Tensor | None = None,
               probs: torch.Tensor | None = None, targets: torch.Tensor | None = None) -> None:
        """Apply the configured rule. z: (B, d) normalised features of the batch."""
        z = z.detach().float()
        if self.update_rule == "ema":
            new = self.momentum * self.weight[idx].float() + (1.0 - self.momentum) * z
            self.weight[idx] = F.normalize(new, dim=1).to(self.weight.dtype)
        else:
            if rows is None or probs is None or targets is None:
                raise ValueError("the grad rule needs the selected rows, their softmax and the targets")
            step = self.grad_direction(z, probs.detach(), targets)
            # index_add accumulates rows that occur more than once; re-normalising a
            # duplicated row twice writes the same value, so no unique() (a host sync).
            self.weight.index_add_(0, rows, (-self.lr * step).to(self.weight.dtype))
            self.weight[rows] = F.normalize(self.weight[rows].float(), dim=1).to(self.weight.dtype)
        self.filled[idx] = True
