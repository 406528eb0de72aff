"""How well a model retrieves in the demo's gallery, in numbers the page can show.

A retrieval page "looks finished" whatever the model: eight thumbnails come back
for any query. When the gallery is labelled (every image in a folder named after
its class, as an ImageFolder tree), the demo scores what it shows: leave-one-out
precision@k, the share of each image's k nearest other images that carry its
label, for the served model, for the same architecture at random initialisation
(when torch is installed) and for chance. At most ``QUALITY_IMAGES`` images (a fixed
subset) are queries; each searches the whole gallery but itself, as the page does,
so a 10,000-image gallery costs a 2,000 x 10,000 similarity matrix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from zoo.index import GalleryIndex, ProgressFn

log = logging.getLogger(__name__)

QUALITY_IMAGES = 2000
MIN_PER_LABEL = 2


def gallery_labels(paths: Sequence[Path]) -> np.ndarray | None:
    """Integer labels from each image's folder name; None unless >= 2 labels hold >= 2 images each."""
    names = [Path(p).parent.name for p in paths]
    classes, labels, counts = np.unique(names, return_inverse=True, return_counts=True)
    if len(classes) < 2 or counts.min() < MIN_PER_LABEL:
        return None
    return labels


def quality_rows(n: int, seed: int = 0) -> np.ndarray:
    """The fixed subset of gallery rows the score runs on (all of them up to QUALITY_IMAGES)."""
    if n <= QUALITY_IMAGES:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, QUALITY_IMAGES, replace=False))


@dataclass(frozen=True)
class GalleryQuality:
    """Leave-one-out precision@k over a labelled gallery (fractions in [0, 1])."""

    k: int
    images: int
    classes: int
    model: float
    chance: float
    random_init: float | None = None

    def line(self) -> str:
        """The demo's status line."""
        rnd = (f"random-init network {100 * self.random_init:.1f}%" if self.random_init is not None
               else "random-init network not measured (needs torch)")
        return (f"precision@{self.k} on this gallery's labels ({self.images} images, {self.classes} classes, "
                f"leave-one-out): **this model {100 * self.model:.1f}%**, {rnd}, chance {100 * self.chance:.1f}%")


def score(gallery: "GalleryIndex", config: dict[str, Any] | None, index_dir: Path, k: int,
          progress: "ProgressFn | None" = None) -> GalleryQuality | None:
    """precision@k of the gallery's model, of its architecture at random init and of chance; None if unlabelled.

    The random-init embeddings are an index of their own (built once per gallery and
    architecture, then loaded), over the scored rows only.
    """
    from zoo.index import build_gallery_index, index_stem
    from zoo.knn import chance_precision, precision_at_k

    paths = [gallery.path(i) for i in range(len(gallery))]
    labels = gallery_labels(paths)
    if labels is None:
        return None
    rows = quality_rows(len(paths))
    rnd = None
    embed = random_init_embedder(config) if config else None
    if embed is not None:
        key = random_init_key(config)
        ref = build_gallery_index(gallery.root, paths, embed, key, index_stem(index_dir, gallery.root, key["name"]),
                                  progress=progress)
        if len(ref) == len(paths):
            rnd = precision_at_k(ref.index.embeddings, labels, k, rows)
    return GalleryQuality(k, len(rows), len(np.unique(labels)),
                          precision_at_k(gallery.index.embeddings, labels, k, rows), chance_precision(labels), rnd)


def random_init_key(config: dict[str, Any]) -> dict[str, Any]:
    """What identifies the random-init reference: architecture, input, and the libraries that draw it."""
    import timm
    import torch

    return {"name": f"random-init-{config['architecture']}", "architecture": config["architecture"],
            "pretrained_cfg": config.get("pretrained_cfg"), "seed": 0, "torch": torch.__version__,
            "timm": timm.__version__}


def random_init_embedder(config: dict[str, Any], seed: int = 0) -> Callable[[Sequence[Any]], np.ndarray] | None:
    """An embedder of the config's architecture at random initialisation, or None without torch/timm."""
    try:
        from zoo.pretrained import TorchEmbedder

        return TorchEmbedder.random_init(config, seed).embed
    except ImportError as exc:
        log.info("no random-init reference for the gallery score: %s", exc)
        return None
