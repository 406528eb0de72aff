"""A supervised linear probe in numpy: the ceiling a label-free embedding is read against.

Leave-one-out kNN scores an embedding without labels in the loop. A linear softmax classifier trained on the same
frozen embeddings *with* the labels (the standard linear evaluation of self-supervised learning; Zhang et al., ECCV
2016; Kolesnikov et al., CVPR 2019) says how much class information the embedding holds at all, read by one layer:
when an unsupervised adaptation is asked to gain N points of 1-NN, the probe says whether the starting features
already hold that much. Stratified k-fold, so no split of a small gallery is needed; torch-free (numpy only), so the
benchmarks and an edge install can run it.
"""

from __future__ import annotations

import numpy as np

from zoo.preprocess import l2_normalize

PROBE_FOLDS = 5
PROBE_WEIGHT_DECAYS = (1e-2, 1e-3, 1e-4)  # the probe reports the best fold-mean over these
PROBE_STEPS = 300
PROBE_SCALE = 10.0  # logits = scale * (W x + b) on L2-normalised x: cosine-classifier sharpness


def stratified_folds(labels: np.ndarray, folds: int = PROBE_FOLDS, seed: int = 0) -> np.ndarray:
    """Fold index (0..folds-1) of each row, each class dealt round-robin over the folds after a seeded shuffle."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        fold[rows] = np.arange(len(rows)) % folds
    return fold


def fit_softmax(x: np.ndarray, y: np.ndarray, num_classes: int, weight_decay: float, steps: int = PROBE_STEPS,
                scale: float = PROBE_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by Nesterov-accelerated full-batch gradient descent.

    The loss is convex with a gradient Lipschitz constant at most scale^2 * max eigenvalue(X^T X / N) / 2 +
    weight_decay, so the step 1/L converges without a line search (x rows L2-normalised keep it <= scale^2 / 2).
    Returns (W (D, C), b (C,)).
    """
    n, d = x.shape
    onehot = np.eye(num_classes, dtype=np.float64)[y]
    x64 = np.asarray(x, np.float64)  # no copy when the caller already holds float64
    top = _top_eigenvalue(x64)
    step = 1.0 / (scale ** 2 * (top + 1.0) / 2 + weight_decay)  # +1: the bias column
    w, b = np.zeros((d, num_classes)), np.zeros(num_classes)
    w_prev, b_prev = w, b
    for t in range(1, steps + 1):
        momentum = (t - 1) / (t + 2)
        vw, vb = w + momentum * (w - w_prev), b + momentum * (b - b_prev)
        logits = scale * (x64 @ vw + vb)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        g = scale * (p - onehot) / n
        w_prev, b_prev = w, b
        w = vw - step * (x64.T @ g + weight_decay * vw)
        b = vb - step * g.sum(axis=0)
    return w, b


def _top_eigenvalue(x: np.ndarray, iterations: int = 30) -> float:
    """The largest eigenvalue of X^T X / N by power iteration through X (no SVD, no (D, D) Gram matrix)."""
    v = np.ones(x.shape[1]) / np.sqrt(x.shape[1])
    for _ in range(iterations):
        v = x.T @ (x @ v) / len(x)
        v /= max(np.linalg.norm(v), 1e-12)
    return float(np.linalg.norm(x @ v) ** 2 / len(x)) * 1.05  # from below: a margin keeps the step safe


def linear_probe_accuracy(embeddings: np.ndarray, labels: np.ndarray, folds: int = PROBE_FOLDS,
                          weight_decays: tuple[float, ...] = PROBE_WEIGHT_DECAYS, seed: int = 0) -> float:
    """Stratified k-fold accuracy of a softmax classifier on the L2-normalised embeddings (best weight decay).

    An oracle that uses the labels: a ceiling for a label-free score of the same embeddings, not a result of one.
    """
    x = np.asarray(l2_normalize(embeddings), np.float64)  # once, not per fold and weight decay
    labels = np.asarray(labels, np.int64)
    if len(x) != len(labels):
        raise ValueError(f"need one label per embedding, got {len(x)} and {len(labels)}")
    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2 or counts.min() < folds:
        raise ValueError(f"a {folds}-fold probe needs >= 2 classes of >= {folds} images each, got {counts.tolist()}")
    fold = stratified_folds(labels, folds, seed)
    num_classes = int(labels.max()) + 1
    best = 0.0
    for wd in weight_decays:
        hits = 0
        for f in range(folds):
            train, test = fold != f, fold == f
            w, b = fit_softmax(x[train], labels[train], num_classes, wd)
            hits += int(((x[test] @ w + b).argmax(axis=1) == labels[test]).sum())
        best = max(best, hits / len(x))
    return best
