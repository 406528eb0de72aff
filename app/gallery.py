"""How well a model retrieves in the demo's gallery, in numbers the page can show.

A retrieval page "looks finished" whatever the model: eight thumbnails come back
for any query. When the gallery is labelled (every image in a folder named after
its class, as an ImageFolder tree), the demo scores what it shows, leave-one-out: kNN
top-1 (the label that an image's 20 nearest other images vote for, weighted as in
the training evaluation) and precision@k (the share of the k results shown that
carry the query's label), for the served model, for the same architecture at
random initialisation (when torch is installed), for the pretrained weights it started
from (``--init``: the free baseline a person compares it with) and, for precision, for chance.
At most ``QUALITY_IMAGES`` images (a fixed subset) are queries; each searches the
whole gallery but itself, as the page does, so a 10,000-image gallery costs a
2,000 x 10,000 similarity matrix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from zoo.errors import EdgezooError
from zoo.knn import KNN_T, LOO_K

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
class Scores:
    """Leave-one-out scores of one embedding of the gallery (fractions in [0, 1])."""

    knn_top1: float  # weighted kNN (k = LOO_K, t = KNN_T): the label the nearest others vote for
    precision: float  # precision@k: the share of the k results shown that carry the query's label


@dataclass(frozen=True)
class GalleryQuality:
    """The served model against a random-init network of its architecture, on the gallery's own labels."""

    k: int
    queries: int
    images: int
    classes: int
    model: Scores
    chance: float  # precision@k (and expected kNN) of an answer that ignores the images
    random_init: Scores | None = None
    init: Scores | None = None  # the --init weights the model started from, untrained on these photos
    init_name: str | None = None

    def line(self) -> str:
        """The demo's status line."""
        m, r = self.model, self.random_init
        rnd = (f"random-init network {100 * r.knn_top1:.1f}% (**{100 * (m.knn_top1 - r.knn_top1):+.1f} points**)"
               if r is not None else "random-init network not measured (needs torch)")
        p_rnd = f", random init {100 * r.precision:.1f}%" if r is not None else ""
        if self.init is not None:
            i = self.init
            rnd += (f", its starting weights {self.init_name} {100 * i.knn_top1:.1f}% "
                    f"(**{100 * (m.knn_top1 - i.knn_top1):+.1f} points**)")
            p_rnd += f", {self.init_name} {100 * i.precision:.1f}%"
        return (f"on this gallery's labels ({self.classes} classes; {self.queries} queries, each searching the "
                f"{self.images} images but itself): kNN top-1 (k={LOO_K}) **this model {100 * m.knn_top1:.1f}%**, "
                f"{rnd}; precision@{self.k} {100 * m.precision:.1f}%{p_rnd}, chance {100 * self.chance:.1f}%")


def score(gallery: "GalleryIndex", config: dict[str, Any] | None, index_dir: Path, k: int,
          progress: "ProgressFn | None" = None) -> GalleryQuality | None:
    """The model's scores, its architecture's at random init and chance's on the gallery; None if unlabelled.

    The random-init embeddings are an index of their own (built once per gallery and
    architecture, then loaded).
    """
    from zoo.index import build_gallery_index, index_stem
    from zoo.knn import chance_precision

    paths = [gallery.path(i) for i in range(len(gallery))]
    labels = gallery_labels(paths)
    if labels is None:
        return None
    rows = quality_rows(len(paths))

    def reference(embed: Callable[[Sequence[Any]], np.ndarray] | None,
                  key_of: Callable[[dict[str, Any]], dict[str, Any]]) -> Scores | None:
        if embed is None:  # (the key names library versions: only asked for when there is an embedder)
            return None
        key = key_of(config)
        ref = build_gallery_index(gallery.root, paths, embed, key, index_stem(index_dir, gallery.root, key["name"]),
                                  progress=progress)
        return _scores(ref.index.embeddings, labels, rows, k) if len(ref) == len(paths) else None

    rnd = reference(random_init_embedder(config), random_init_key) if config else None
    init = init_record(config)
    start = reference(init_embedder(config), init_key) if init else None
    return GalleryQuality(k, len(rows), len(paths), len(np.unique(labels)),
                          _scores(gallery.index.embeddings, labels, rows, k), chance_precision(labels), rnd,
                          start, init["source"] if init else None)


def _scores(embeddings: np.ndarray, labels: np.ndarray, rows: np.ndarray, k: int) -> Scores:
    from zoo.knn import loo_knn_top1, precision_at_k

    return Scores(loo_knn_top1(embeddings, labels, LOO_K, KNN_T, rows), precision_at_k(embeddings, labels, k, rows))


def random_init_key(config: dict[str, Any]) -> dict[str, Any]:
    """What identifies the random-init reference: architecture, input, and the libraries that draw it."""
    import timm
    import torch

    return {"name": f"random-init-{config['architecture']}", "architecture": config["architecture"],
            "model_args": config.get("model_args") or {}, "pretrained_cfg": config.get("pretrained_cfg"), "seed": 0, "torch": torch.__version__,
            "timm": timm.__version__}


def init_record(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the model's config.json says it started from (``--init``), or None."""
    return ((config or {}).get("edgezoo") or {}).get("init") or None


def init_key(config: dict[str, Any]) -> dict[str, Any]:
    """What identifies the starting weights' reference index: the source, its file's sha256 and the input."""
    record = init_record(config) or {}
    name = "".join(c if c.isalnum() else "-" for c in str(record.get("source")))
    return {"name": f"init-{name}", "source": record.get("source"), "sha256": record.get("sha256"),
            "architecture": config["architecture"], "pretrained_cfg": config.get("pretrained_cfg")}


def init_embedder(config: dict[str, Any]) -> Callable[[Sequence[Any]], np.ndarray] | None:
    """An embedder of the weights the model started from, in the model's preprocessing; None without the
    training extra or when the source cannot be loaded here (the score then leaves it out, saying why)."""
    record = init_record(config)
    try:
        from pretrain.init import load_init
        from zoo.pretrained import TorchEmbedder
        from zoo.timm_files import backbone_from_config

        model = backbone_from_config(config)
        load_init(model, record["source"], config["architecture"])
        return TorchEmbedder.of(model, config).embed
    except ImportError as exc:
        log.info("no reference for the starting weights in the gallery score: %s", exc)
    except EdgezooError as exc:
        log.warning("the gallery score leaves out the starting weights %s: %s", record.get("source"), exc)
    return None


def random_init_embedder(config: dict[str, Any], seed: int = 0) -> Callable[[Sequence[Any]], np.ndarray] | None:
    """An embedder of the config's architecture at random initialisation, or None without torch/timm."""
    try:
        from zoo.pretrained import TorchEmbedder

        return TorchEmbedder.random_init(config, seed).embed
    except ImportError as exc:
        log.info("no random-init reference for the gallery score: %s", exc)
        return None
