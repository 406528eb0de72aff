"""Weighted kNN and neighbour agreement in numpy, for export validation and edge-side checks.

The same protocol as ``pretrain.evaluate.knn_top1`` (Wu et al. 2018's weighted
vote: k nearest bank rows by cosine, weights exp(sim / t)), but torch-free so the
export checks and an edge install compute it without torch. Inputs are
L2-normalised (N, D) embeddings.
"""

from __future__ import annotations

import numpy as np

# The kNN protocol (Wu et al. 2018), one place for every stage: the training evaluation and export's check vote
# over the training images as a bank; a gallery's leave-one-out score, where each class holds a few hundred
# images, lets fewer neighbours vote.
KNN_K = 200
KNN_T = 0.1
LOO_K = 20


def top_k(sim: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest entries of each row, best first."""
    idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sim, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)


def knn_predict(bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray, k: int = KNN_K, t: float = KNN_T,
                num_classes: int | None = None, chunk: int = 1024) -> np.ndarray:
    """Predicted class of each query by a similarity-weighted vote of its k nearest bank rows."""
    bank = np.asarray(bank, np.float32)
    bank_labels = np.asarray(bank_labels, np.int64)
    queries = np.asarray(queries, np.float32)
    if len(bank) == 0 or len(bank) != len(bank_labels):
        raise ValueError(f"bank needs >= 1 row and one label per row, got {len(bank)} rows, {len(bank_labels)} labels")
    num_classes = num_classes or int(bank_labels.max()) + 1
    k = min(k, len(bank))
    preds = np.empty(len(queries), np.int64)
    for start in range(0, len(queries), chunk):
        preds[start:start + chunk] = _vote(queries[start:start + chunk] @ bank.T, bank_labels, k, t, num_classes)
    return preds


def _vote(sim: np.ndarray, bank_labels: np.ndarray, k: int, t: float, num_classes: int) -> np.ndarray:
    """The class each row of `sim` (queries x bank) gets from its k most similar bank rows, weighted exp(sim / t)."""
    idx = top_k(sim, k)
    weights = np.exp(np.take_along_axis(sim, idx, axis=1).astype(np.float64) / t)
    votes = np.zeros((len(idx), num_classes), np.float64)
    np.add.at(votes, (np.arange(len(idx))[:, None], bank_labels[idx]), weights)
    return votes.argmax(axis=1)


def neighbour_agreement(ref: np.ndarray, other: np.ndarray, k: int = 10) -> dict[str, float]:
    """How far two embeddings of the same images agree on who is whose neighbour (self excluded).

    ``top1``: fraction of images whose nearest neighbour is the same image;
    ``top{k}``: mean overlap of the k-nearest-neighbour sets.
    """
    ref, other = np.asarray(ref, np.float32), np.asarray(other, np.float32)
    if ref.shape[0] != other.shape[0] or ref.shape[0] < 2:
        raise ValueError(f"need the same >= 2 images in both, got {ref.shape[0]} and {other.shape[0]}")
    k = min(k, ref.shape[0] - 1)
    nn_ref, nn_other = (top_k(_others(x, np.arange(len(x))), k) for x in (ref, other))
    overlap = [len(np.intersect1d(a, b)) / k for a, b in zip(nn_ref, nn_other)]
    return {"top1": float((nn_ref[:, 0] == nn_other[:, 0]).mean()), f"top{k}": float(np.mean(overlap))}


def precision_at_k(embeddings: np.ndarray, labels: np.ndarray, k: int = 8,
                   queries: np.ndarray | None = None) -> float:
    """Leave-one-out retrieval precision@k: the mean share of each query's k nearest others with its label.

    What a retrieval page shows (each query's k closest gallery images), scored with the
    gallery's own labels; `queries` (row indices, default all) search the whole gallery
    but themselves. Chance is ``chance_precision(labels)``.
    """
    x, labels, rows = _checked(embeddings, labels, queries)
    k = min(k, len(x) - 1)
    hits = labels[top_k(_others(x, rows), k)] == labels[rows, None]
    return float(hits.mean())


def loo_knn_top1(embeddings: np.ndarray, labels: np.ndarray, k: int = LOO_K, t: float = KNN_T,
                 queries: np.ndarray | None = None) -> float:
    """Leave-one-out weighted kNN top-1: each query is classified by all the other images (no split needed)."""
    x, labels, rows = _checked(embeddings, labels, queries)
    preds = _vote(_others(x, rows), labels, min(k, len(x) - 1), t, int(labels.max()) + 1)
    return float((preds == labels[rows]).mean())


def _checked(embeddings: np.ndarray, labels: np.ndarray,
             queries: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(embeddings, np.float32)
    labels = np.asarray(labels, np.int64)
    if len(x) != len(labels) or len(x) < 2:
        raise ValueError(f"need >= 2 embeddings and one label each, got {len(x)} and {len(labels)}")
    return x, labels, np.arange(len(x)) if queries is None else np.asarray(queries, np.int64)


def _others(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Similarities of the query rows to every image, each query's own entry excluded."""
    sim = x[rows] @ x.T
    sim[np.arange(len(rows)), rows] = -np.inf
    return sim


def chance_precision(labels: np.ndarray) -> float:
    """precision@k of a retrieval that ignores the images: the chance that another image shares the label."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return float((counts * (counts - 1)).sum() / (counts.sum() * (counts.sum() - 1)))
