"""The demo scores its gallery: leave-one-out kNN and precision@k, against random init and chance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.gallery import GalleryQuality, Scores, gallery_labels, score
from zoo.knn import chance_precision, loo_knn_top1, precision_at_k


def test_leave_one_out_scores_on_known_embeddings():
    # Two tight clusters, one image of class 1 sitting inside class 0's cluster.
    emb = np.array([[1, 0], [1, 0.01], [1, -0.01], [1, 0.05], [0, 1], [0.01, 1], [-0.01, 1]], np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    # k=1: every image's nearest other is in its own cluster; the stray class-1 image is wrong.
    assert loo_knn_top1(emb, labels, k=1) == pytest.approx(6 / 7)
    assert precision_at_k(emb, labels, k=1) == pytest.approx(6 / 7)
    # queries search everything but themselves: image 0 alone, its 2 nearest are 1 and 2
    assert precision_at_k(emb, labels, k=2, queries=np.array([0])) == 1.0
    assert chance_precision(labels) == pytest.approx((3 * 2 + 4 * 3) / (7 * 6))


def test_labels_come_from_class_folders_only(tmp_path):
    labelled = [tmp_path / c / f"{i}.jpg" for c in ("ants", "bees") for i in range(3)]
    assert gallery_labels(labelled).tolist() == [0, 0, 0, 1, 1, 1]
    assert gallery_labels([tmp_path / f"{i}.jpg" for i in range(5)]) is None  # a flat folder
    assert gallery_labels(labelled + [tmp_path / "wasps" / "1.jpg"]) is None  # a class of one


def test_status_line_reports_model_random_init_and_chance():
    q = GalleryQuality(8, 2000, 10000, 10, Scores(0.342, 0.243), 0.1, Scores(0.191, 0.155))
    line = q.line()
    assert "34.2%" in line and "19.1%" in line and "+15.1 points" in line and "chance 10.0%" in line
    assert "not measured" in GalleryQuality(8, 20, 20, 2, Scores(0.6, 0.6), 0.5).line()


@pytest.fixture(scope="module")
def photos(tmp_path_factory, hymenoptera_root) -> Path:
    dest = tmp_path_factory.mktemp("photos")
    for cls in ("ants", "bees"):
        (dest / cls).mkdir()
        for src in sorted((hymenoptera_root / "val" / cls).iterdir())[:12]:
            shutil.copy2(src, dest / cls / src.name)
    return dest


def test_score_of_a_perfect_embedder_and_of_random_init(photos, tmp_path):
    """An embedder that sees the label scores 100%; the random-init reference is a real resnet18."""
    from zoo.backbones import create_backbone, embedding_dim
    from zoo.images import find_images
    from zoo.index import build_gallery_index
    from zoo.preprocess import Preprocess
    from zoo.timm_files import make_config

    paths = find_images(photos)

    def oracle(batch):
        return np.array([[1.0, 0.0] if Path(p).parent.name == "ants" else [0.0, 1.0] for p in batch], np.float32)

    index = build_gallery_index(photos, paths, oracle, {"name": "oracle"}, tmp_path / "idx" / "oracle")
    pre = Preprocess(img_size=32)
    config = make_config("resnet18", embedding_dim(create_backbone("resnet18"), 32), pre)
    q = score(index, config, tmp_path / "idx", k=8)
    assert q.images == q.queries == len(paths) == 24 and q.classes == 2
    assert q.model == Scores(1.0, 1.0)
    assert q.random_init is not None and q.random_init.precision < 1.0
    assert q.chance == pytest.approx(11 / 23)
    assert score(index, None, tmp_path / "idx", k=8).random_init is None  # no architecture: not measured
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in paths[:4]:
        shutil.copy2(p, flat / p.name)
    flat_index = build_gallery_index(flat, find_images(flat), oracle, {"name": "oracle"}, tmp_path / "idx" / "flat")
    assert score(flat_index, config, tmp_path / "idx", k=8) is None  # no labels, no score


def test_default_gallery_is_the_models_own_held_out_split(tmp_path, cifar_root, hymenoptera_root):
    from app.demo import default_gallery

    run = tmp_path / "run"
    run.mkdir()
    (run / "data.json").write_text(json.dumps({"train": {"spec": "cifar10", "root": str(cifar_root / "train")},
                                               "eval": {"spec": "cifar10:test"}}))
    assert default_gallery(run) == cifar_root / "test"
    assert default_gallery(None, {"edgezoo": {"data": "cifar10"}}) == cifar_root / "test"  # a published model
    own = tmp_path / "own"
    (own / "x").mkdir(parents=True)
    (run / "data.json").write_text(json.dumps({"train": {"spec": str(own), "root": str(own)}}))
    assert default_gallery(run) == own  # no held-out split: the training folder
    assert default_gallery(None) == hymenoptera_root.parent / "hymenoptera"


def test_status_line_compares_with_the_starting_weights():
    q = GalleryQuality(8, 398, 398, 2, Scores(0.95, 0.90), 0.5, Scores(0.60, 0.55), Scores(0.92, 0.88),
                       "tf_efficientnet_lite0.in1k")
    line = q.line()
    assert "its starting weights tf_efficientnet_lite0.in1k 92.0% (**+3.0 points**)" in line
    assert "tf_efficientnet_lite0.in1k 88.0%" in line  # precision@8 beside random init's


def test_score_measures_the_init_a_model_started_from(photos, tmp_path):
    """A model trained with --init is scored against those weights untrained: the ImageNet Lite0 here (its
    config.json's edgezoo.init, as the trainer writes it); the oracle beats it, and it beats random init."""
    from pretrain.init import IMAGENET_WHEELS

    lite0 = "tf_efficientnet_lite0.in1k"
    pytest.importorskip(IMAGENET_WHEELS[lite0].module, reason='pip install ".[imagenet]"')
    from zoo.backbones import create_backbone, embedding_dim
    from zoo.images import find_images
    from zoo.index import build_gallery_index
    from zoo.preprocess import Preprocess
    from zoo.timm_files import make_config

    paths = find_images(photos)
    oracle = lambda batch: np.array([[1.0, 0.0] if Path(p).parent.name == "ants" else [0.0, 1.0] for p in batch],
                                    np.float32)  # noqa: E731
    index = build_gallery_index(photos, paths, oracle, {"name": "oracle"}, tmp_path / "idx" / "oracle")
    pre = Preprocess(img_size=96, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    arch = "tf_efficientnet_lite0"
    config = make_config(arch, embedding_dim(create_backbone(arch), 96), pre,
                         extra={"init": {"source": lite0, "kind": "imagenet-wheel", "sha256": "x"}})
    q = score(index, config, tmp_path / "idx", k=8)
    assert q.init_name == lite0 and q.init is not None and q.random_init is not None
    assert q.random_init.knn_top1 < q.init.knn_top1 < q.model.knn_top1 == 1.0
    assert "its starting weights" in q.line()
    config["edgezoo"]["init"]["source"] = str(tmp_path / "gone.safetensors")  # not loadable here: left out
    assert score(index, config, tmp_path / "idx2", k=8).init is None
