"""Continual pretraining: replay reservoir (uniform, survives interrupts), regularisers, lineage."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pretrain.config import build_config
from pretrain.continual import inherited_config
from pretrain.modules.regularizers import AnchorPenalty, mas_importance, scale_to_unit_max
from pretrain.replay import Reservoir
from pretrain.trainer import Trainer, load_checkpoint
from zoo.layout import CHECKPOINT, LINEAGE, REPLAY_IN


def _ids(n: int, start: int) -> np.ndarray:
    """Images that carry their id in two pixels' channels."""
    ids = np.arange(start, start + n)
    out = np.zeros((n, 1, 2, 3), np.uint8)
    out[:, 0, 0, 0], out[:, 0, 0, 1] = ids // 256, ids % 256
    return out


def _decode(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0, 0].astype(int) * 256 + images[:, 0, 0, 1]


def test_reservoir_sampling_is_uniform_over_chunks():
    """Every image of three unequal chunks is kept with probability capacity / total (chi-square)."""
    sizes, capacity, trials = (100, 50, 150), 30, 3000
    total = sum(sizes)
    counts = np.zeros(total)
    for t in range(trials):
        res = Reservoir(capacity, rng=np.random.default_rng(t))
        start = 0
        for n in sizes:
            res.offer(_ids(n, start))
            start += n
        assert len(res) == capacity and res.seen == total
        counts[_decode(res.images)] += 1
    expected = trials * capacity / total
    chi2 = ((counts - expected) ** 2 / expected).sum()
    dof = total - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof), chi2  # far beyond what uniform sampling gives
    # no chunk is favoured
    first, last = counts[:100].mean(), counts[150:].mean()
    assert abs(first - last) < 0.05 * expected


def test_reservoir_round_trips_through_disk(tmp_path):
    res = Reservoir(5, rng=np.random.default_rng(0))
    res.offer(_ids(12, 0))
    res.save(tmp_path)
    back = Reservoir.load(tmp_path)
    assert back.seen == 12 and np.array_equal(back.images, res.images)
    smaller = Reservoir.load(tmp_path, capacity=3)
    assert len(smaller) == 3


def test_penalties_vanish_at_the_anchor_and_grow_away():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    imp = mas_importance(net, [torch.randn(8, 4) for _ in range(3)])
    assert set(imp) == {n for n, _ in net.named_parameters()} and all((v >= 0).all() for v in imp.values())
    for importance in (None, imp):
        pen = AnchorPenalty(net, 2.0, importance)
        assert float(pen(net)) == 0.0
        with torch.no_grad():
            net[0].weight.add_(0.1)
        assert float(pen(net)) > 0
        with torch.no_grad():
            net[0].weight.sub_(0.1)


def test_scaled_mas_importance_peaks_at_one_by_one_common_factor():
    """Scaled, the stiffest parameter has importance 1, as every parameter has under L2-SP."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    raw = mas_importance(net, [10.0 * torch.randn(8, 4) for _ in range(3)])
    assert max(float(v.max()) for v in raw.values()) > 1.0
    scaled = scale_to_unit_max(raw)
    assert max(float(v.max()) for v in scaled.values()) == pytest.approx(1.0)
    top = max(float(v.max()) for v in raw.values())
    assert all(torch.allclose(scaled[n] * top, raw[n]) for n in raw)  # one factor for all: the ranking is kept
    zeros = {"w": torch.zeros(3)}
    assert scale_to_unit_max(zeros) is zeros


def _chunk(root: Path, classes: list[str], per_class: int, cifar_root: Path) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for p in sorted((cifar_root / "train" / c).glob("*.png"))[:per_class]:
            shutil.copy(p, root / c / p.name)
    return root


TINY = dict(model="resnet18", small_stem=False, img_size=32, epochs=2, batch_size=32, proj_hidden_dim=64,
            proj_dim=32, num_negatives=32, threads=2, lr=0.05)


@pytest.fixture(scope="module")
def chunks(tmp_path_factory, cifar_root):
    root = tmp_path_factory.mktemp("chunks")
    a = _chunk(root / "a", ["airplane", "automobile"], 48, cifar_root)
    b = _chunk(root / "b", ["cat", "dog"], 48, cifar_root)
    return a, b


@pytest.fixture(scope="module")
def first_step(tmp_path_factory, chunks):
    run = tmp_path_factory.mktemp("step1") / "run"
    Trainer(build_config(data=str(chunks[0]), replay=40, **TINY), run, progress=False).fit()
    return run


def test_second_step_replays_regularises_and_records_lineage(tmp_path, chunks, first_step):
    assert len(Reservoir.load(first_step)) == 40
    inherited = inherited_config(str(first_step))
    assert inherited["model"] == "resnet18" and "data" not in inherited
    run = tmp_path / "step2"
    cfg = build_config(base=inherited, data=str(chunks[1]), resume_from=str(first_step), replay=40, reg="mas",
                       reg_weight=10.0, epochs=2)
    metrics = Trainer(cfg, run, progress=False).fit()
    assert metrics["num_images"] == 96 + 40  # chunk + replayed images in the bank
    replayed = Reservoir.load(run, name=REPLAY_IN)
    assert np.array_equal(replayed.images, Reservoir.load(first_step).images)
    carried = Reservoir.load(run)
    assert len(carried) == 40 and carried.seen == 96 + 96
    lineage = json.loads((run / LINEAGE).read_text())
    assert [step["data"] for step in lineage] == [str(chunks[0]), str(chunks[1])]
    assert lineage[1]["reg"] == "mas" and lineage[1]["from"] == str(first_step)
    assert (first_step / "mas_importance.safetensors").exists()
    # The regulariser is in the loss: the same step without it ends farther from step 1 in MAS's own measure.
    free = tmp_path / "step2-free"
    Trainer(dataclasses.replace(cfg, reg=None, reg_weight=0.0), free, progress=False).fit()
    importance = load_file(str(first_step / "mas_importance.safetensors"))
    start = load_file(str(first_step / "backbone" / "model.safetensors"))

    def mas_distance(run_dir: Path) -> float:
        end = load_file(str(run_dir / "backbone" / "model.safetensors"))
        return sum(float((imp * (end[n] - start[n]) ** 2).sum()) for n, imp in importance.items())

    assert mas_distance(run) < 0.75 * mas_distance(free)  # 0.48 when written


def test_interrupted_continual_step_resumes_with_the_same_reservoir(tmp_path, chunks, first_step, monkeypatch):
    from pretrain.methods import EffSSL

    cfg = build_config(base=inherited_config(str(first_step)), data=str(chunks[1]), resume_from=str(first_step),
                       replay=40, reg="l2sp", reg_weight=0.1, epochs=2)
    ref = tmp_path / "ref"
    Trainer(cfg, ref, progress=False).fit()

    run = tmp_path / "interrupted"
    real = EffSSL.training_step
    calls = {"n": 0}

    def step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 2 (4 steps per epoch)
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(EffSSL, "training_step", step)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, run, progress=False).fit()
    monkeypatch.setattr(EffSSL, "training_step", real)
    assert load_checkpoint(run / CHECKPOINT)["epoch"] == 1
    saved = Reservoir.load(run)
    Trainer(cfg, run, resume=True, progress=False).fit()
    assert np.array_equal(Reservoir.load(run).images, saved.images)
    assert np.array_equal(Reservoir.load(run).images, Reservoir.load(ref).images)
    a, b = load_checkpoint(ref / CHECKPOINT)["model"], load_checkpoint(run / CHECKPOINT)["model"]
    assert torch.allclose(a["backbone.conv1.weight"], b["backbone.conv1.weight"], atol=1e-5)


def test_continual_step_starts_from_a_published_model(tmp_path, tmp_path_factory, chunks, cifar_root, monkeypatch):
    """`--resume-from org/name`: the published backbone is the start, its recipe is inherited, lineage says so."""
    from safetensors.torch import load_file

    from hubutil import tiny_exported_run
    from zoo.publish import publish

    published_run = tiny_exported_run(tmp_path_factory.getbasetemp() / "hub-tiny-run", cifar_root)
    hub_dir = tmp_path / "hub"
    publish(published_run, "edgezoo/tiny-start", hub_dir=hub_dir)
    monkeypatch.setenv("EDGEZOO_HUB", str(hub_dir))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)

    inherited = inherited_config("edgezoo/tiny-start")
    assert (inherited["model"], inherited["small_stem"]) == ("mobilenetv3_small_050", True)
    run = tmp_path / "step"
    # lr 0: the weights after the step are exactly the ones it started from.
    cfg = build_config(base=inherited, data=str(chunks[1]), resume_from="edgezoo/tiny-start", epochs=1, lr=0.0,
                       batch_size=32, proj_hidden_dim=64, proj_dim=32, num_negatives=32, threads=2)
    Trainer(cfg, run, progress=False).fit()
    start = load_file(str(published_run / "backbone" / "model.safetensors"))
    after = load_file(str(run / "backbone" / "model.safetensors"))
    weights = [k for k in start if k.endswith(".weight") and start[k].ndim == 4]
    assert weights and all(torch.equal(start[k], after[k]) for k in weights)
    lineage = json.loads((run / LINEAGE).read_text())
    assert lineage[0]["model"] == "edgezoo/tiny-start" and lineage[-1]["from"] == "edgezoo/tiny-start"
    assert lineage[-1]["data"] == str(chunks[1])
