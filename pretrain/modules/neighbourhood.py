"""Neighbourhood positives for instance discrimination: an image's nearest neighbours count as itself.

Huang, Dong, Gong and Zhu, "Unsupervised Deep Learning by Neighbourhood Discovery" (AND), ICML 2019,
arXiv:1904.11567: over an NPID memory bank, the loss of image i is -log of the softmax mass on its
neighbourhood N(i) (itself and its k nearest neighbours), not on its own row alone. Its gradient with
respect to the logits is (p - q) / tau, q the softmax restricted to N(i) and renormalised: the gradient of
a soft-target instance CE with target q held fixed. So this module only builds q, and the instance CE
(instance_ce.py) and the bank's grad rule use it as they use the CutMix targets.

Why it fits a person's own photos: started from a pretrained backbone, an image's nearest neighbours mostly
share its class, and pulling them together is what leave-one-out kNN rewards; instance discrimination alone
pushes them apart as negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrain.modules.bank import first_columns


@torch.no_grad()
def nearest_neighbours(feats: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor:
    """(N, k) indices of each row's k most cosine-similar other rows, most similar first (chunked: N x chunk)."""
    if not 0 < k < feats.shape[0]:
        raise ValueError(f"k must be in [1, N - 1] for N = {feats.shape[0]} rows, got {k}")
    z = F.normalize(feats.float(), dim=1)
    out = []
    for start in range(0, z.shape[0], chunk):
        sim = z[start:start + chunk] @ z.T
        sim[torch.arange(sim.shape[0]), torch.arange(start, start + sim.shape[0])] = -float("inf")
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out)


def neighbourhood_targets(logits: torch.Tensor, rows: torch.Tensor, sets: list[torch.Tensor],
                          weights: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """(B, C) targets q: per part, the softmax(logits / tau) mass on the columns of that part's set, renormalised.

    rows: (C,) bank row of each column (left-out columns must already hold a masked logit); sets: per part
    (B, 1 + k) distinct bank rows of a sample's neighbourhood (itself first, as `nearest_neighbours` gives
    them); weights: per part (B,) or scalar mass (CutMix: ratio on the own image's neighbourhood, 1 - ratio on
    the partner's). Each member is read at its first column: O(B k log C), no (B, k, C) comparison.
    """
    with torch.no_grad():
        p = torch.softmax(logits.float() / temperature, dim=1)
        q = torch.zeros_like(p)
        for members, w in zip(sets, weights):
            cols = first_columns(rows, members)  # (B, 1 + k): a member's later copies are masked, p ~ 0 there
            part = p.gather(1, cols.clamp_min(0)) * (cols >= 0)
            q.scatter_add_(1, cols.clamp_min(0), w.view(-1, 1) * part / part.sum(dim=1, keepdim=True).clamp_min(1e-12))
        return q
