"""zoo.probe: the supervised linear probe that BENCHMARKS reads label-free scores against, and the readouts bench.

The probe is an oracle: it must find a class signal a linear layer can read, find none where the labels are
noise, and refuse a gallery too small for its folds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo.knn import loo_knn_top1
from zoo.probe import PROBE_FOLDS, linear_probe_accuracy, stratified_folds


def test_folds_deal_every_class_evenly() -> None:
    labels = np.repeat([0, 1, 2], [10, 7, 23])
    fold = stratified_folds(labels, folds=5, seed=3)
    for c, n in zip(range(3), (10, 7, 23)):
        counts = np.bincount(fold[labels == c], minlength=5)
        assert counts.sum() == n and counts.max() - counts.min() <= 1
    assert not np.array_equal(fold, stratified_folds(labels, folds=5, seed=4))  # the seed shuffles


def _linear_but_not_local(n: int = 300, d: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels set by one weak direction under large isotropic noise: a linear layer reads them, a neighbour
    vote mostly does not."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    x = rng.normal(size=(n, d))
    x[:, 0] += np.where(labels == 1, 1.5, -1.5)
    return x.astype(np.float32), labels


def test_the_probe_reads_a_linear_signal_that_neighbours_miss() -> None:
    x, labels = _linear_but_not_local()
    probe = linear_probe_accuracy(x, labels)
    assert probe > 0.85
    assert probe > loo_knn_top1(x, labels, k=1) + 0.1  # what the probe measures that 1-NN does not


def test_the_probe_finds_nothing_in_noise_labels() -> None:
    x, _ = _linear_but_not_local()
    noise = np.random.default_rng(1).integers(0, 2, len(x))
    assert 0.35 < linear_probe_accuracy(x, noise) < 0.65


def test_the_probe_refuses_a_class_smaller_than_its_folds() -> None:
    x = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    labels = np.array([0] * (20 - PROBE_FOLDS + 1) + [1] * (PROBE_FOLDS - 1))
    with pytest.raises(ValueError, match="images each"):
        linear_probe_accuracy(x, labels)


def test_readouts_bench_scores_every_stage_and_probes_the_embedding(tmp_path: Path, hymenoptera_root,
                                                                    capsys) -> None:
    from pretrain.init import IMAGENET_WHEELS

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import photo_bench
    import readouts

    pytest.importorskip(IMAGENET_WHEELS[photo_bench.INIT].module, reason='pip install ".[imagenet]"')
    src = photo_bench.smoke_folder(hymenoptera_root / "val", tmp_path / "src", per_class=20)
    out = tmp_path / "readouts"
    assert readouts.main(["--data", str(src), "--img-size", "96", "--out", str(out)]) == 0
    rows = {r["readout"]: r for r in json.loads((out / "readouts.json").read_text())["rows"]}
    stages = [k for k in rows if k.startswith("stage ")]
    assert len(stages) == 8  # Lite0: the stem and its 7 block stages
    concat = rows["last 4 stages, concatenated"]
    assert concat["dim"] == sum(rows[k]["dim"] for k in stages[-4:])
    assert {k for k, r in rows.items() if "linear_probe" in r} == {readouts.DEPLOYED, "last 4 stages, concatenated"}
    assert rows[readouts.DEPLOYED]["linear_probe"] > 0.8  # ants vs bees from ImageNet features, read with labels
    assert "| embedding (as deployed) | 1280 |" in capsys.readouterr().out
