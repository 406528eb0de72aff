"""`--method distill --teacher SOURCE`: SEED distillation from a frozen teacher (pretrain/methods/distill.py).

The teacher here is a small random-init timm backbone folder made by the test (64 px; the students train at
32 px, so every run also crosses the teacher-size mismatch), and its ONNX export.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pretrain.config import build_config
from pretrain.modules import EmbeddingQueue, SEEDLoss
from pretrain.modules.teacher import build_teacher
from pretrain.trainer import Trainer, load_checkpoint
from zoo.errors import ConfigError
from zoo.layout import RunDir
from zoo.preprocess import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, Preprocess

TEACHER_ARCH = "mobilenetv3_small_050"
TEACHER_SIZE = 64
STUDENT = Preprocess(32, CIFAR10_MEAN, CIFAR10_STD)


def _save_teacher(folder: Path, seed: int) -> Path:
    """A timm backbone folder (config.json + model.safetensors) at 64 px with ImageNet normalisation."""
    from zoo.backbones import create_backbone, embedding_dim
    from zoo.timm_files import make_config, save_backbone

    torch.manual_seed(seed)
    model = create_backbone(TEACHER_ARCH).eval()
    pre = Preprocess(TEACHER_SIZE, IMAGENET_MEAN, IMAGENET_STD)
    return save_backbone(model, folder, make_config(TEACHER_ARCH, embedding_dim(model, TEACHER_SIZE), pre))


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    return _save_teacher(tmp_path_factory.mktemp("teacher") / "backbone", seed=1)


def _config(gallery: Path, teacher: Path | str, **overrides):
    values = dict(data=str(gallery), eval_data=str(gallery), method="distill", teacher=str(teacher),
                  model="mobilenetv3_small_050", img_size=32, epochs=2, batch_size=16, max_images=32,
                  proj_hidden_dim=32, distill_queue=40, eval_every=1, eval_max_train=32, threads=1, device="cpu")
    return build_config(None, **{**values, **overrides})


@pytest.fixture(scope="module")
def distill_run(tmp_path_factory, gallery, teacher_dir) -> Path:
    """2 epochs of 2 steps, kNN and RankMe every epoch: the 64 px teacher on the 32 px student's views."""
    out = tmp_path_factory.mktemp("distill") / "run"
    Trainer(_config(gallery, teacher_dir), out, progress=False).fit()
    return out


# --- the loss and the queue -------------------------------------------------------------------------------

def _unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_a_student_equal_to_the_teacher_has_a_lower_loss_than_a_random_one():
    teacher, queue = _unit(8, 16, seed=0), _unit(32, 16, seed=1)
    loss = SEEDLoss(0.2, 0.07)
    assert loss(teacher, teacher, queue) < loss(_unit(8, 16, seed=2), teacher, queue)
    assert float(SEEDLoss(0.1, 0.1)(teacher, teacher, queue)) == pytest.approx(0.0, abs=1e-6)  # the same p: KL 0
    assert float(loss(_unit(8, 16, seed=2), teacher, queue)) > 0


def test_the_gradient_flows_into_the_student_only():
    student = _unit(8, 16, seed=2).requires_grad_()
    teacher, queue = _unit(8, 16, seed=0).requires_grad_(), _unit(32, 16, seed=1).requires_grad_()
    SEEDLoss()(student, teacher, queue).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None and queue.grad is None


def test_the_queue_is_first_in_first_out():
    q = EmbeddingQueue(5, 2)
    rows = lambda *v: torch.tensor([[float(x), 0.0] for x in v])  # noqa: E731
    q.push(rows(1, 2, 3))
    assert q.embeddings[:3, 0].tolist() == [1, 2, 3] and int(q.ptr) == 3
    q.push(rows(4, 5, 6))  # wraps: 6 overwrites the oldest, 1
    assert q.embeddings[:, 0].tolist() == [6, 2, 3, 4, 5] and int(q.ptr) == 1
    q.push(rows(*range(10, 17)))  # more keys than rows: the last 5 stay, the oldest of them next to go
    assert q.embeddings[:, 0].tolist() == [16, 12, 13, 14, 15] and int(q.ptr) == 1


# --- the teacher --------------------------------------------------------------------------------------------

def test_the_teacher_sees_the_students_view_in_its_own_size_and_normalisation(teacher_dir):
    """A flat grey view normalised for the 32 px student arrives as the same grey at 64 px, normalised for the
    teacher: de-normalise, resize and re-normalise are one affine map."""
    teacher = build_teacher(str(teacher_dir), STUDENT)
    assert (teacher.img_size, teacher.dim) == (TEACHER_SIZE, 1024)
    grey = torch.full((2, 3, 32, 32), 0.3)
    view = (grey - torch.tensor(STUDENT.mean).view(1, 3, 1, 1)) / torch.tensor(STUDENT.std).view(1, 3, 1, 1)
    x = teacher.teacher_input(view)
    expected = (0.3 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert x.shape == (2, 3, 64, 64)
    assert torch.allclose(x, expected.view(1, 3, 1, 1).expand_as(x), atol=1e-5)
    z = teacher.embed(view)
    assert z.shape == (2, 1024) and not z.requires_grad and not z.is_inference()
    assert torch.allclose(z.norm(dim=1), torch.ones(2), atol=1e-5)
    assert build_teacher(str(teacher_dir), STUDENT, img_size=48).teacher_input(view).shape[-1] == 48


def test_an_onnx_teacher_gives_the_targets_of_its_torch_original(teacher_dir, tmp_path):
    from export.onnx_export import export_onnx
    from zoo.edge import write_preprocess
    from zoo.timm_files import load_backbone, preprocess_of

    path = tmp_path / "teacher.onnx"
    export_onnx(load_backbone(teacher_dir), path, TEACHER_SIZE, exporter="torchscript")
    write_preprocess(preprocess_of(teacher_dir), tmp_path)
    torch_teacher, onnx_teacher = build_teacher(str(teacher_dir), STUDENT), build_teacher(str(path), STUDENT)
    assert onnx_teacher.record["kind"] == "onnx" and onnx_teacher.dim == torch_teacher.dim
    assert (onnx_teacher.preprocess.mean, onnx_teacher.img_size) == (IMAGENET_MEAN, TEACHER_SIZE)
    views = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a, b = torch_teacher.embed(views), onnx_teacher.embed(views)
    assert torch.allclose(a, b, atol=1e-4)
    queue = torch_teacher.embed(torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    for tau in (1e-4, 0.05):
        loss = SEEDLoss(0.2, tau)
        assert torch.allclose(loss.log_targets(a, queue).exp(), loss.log_targets(b, queue).exp(), atol=1e-3), tau


# --- a run ---------------------------------------------------------------------------------------------------

def test_a_run_trains_with_a_larger_teacher_and_evaluates_every_epoch(distill_run):
    rows = (distill_run / "log.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and all(r.split(",")[4] and r.split(",")[5] for r in rows)  # kNN and RankMe each epoch
    metrics = json.loads((distill_run / "metrics.json").read_text())
    assert metrics["method"] == "distill" and metrics["method_info"]["citation"]["key"] == "fang2021seed"
    assert metrics["method_info"]["name"].startswith("SEED distillation from ")
    assert metrics["method_info"]["options"]["teacher_img_size"] is None


def test_the_teacher_is_frozen_and_not_in_the_checkpoint_but_named_by_it(distill_run, teacher_dir):
    state = load_checkpoint(RunDir(distill_run).checkpoint)
    assert {k.split(".")[0] for k in state["model"]} == {"backbone", "projector", "queue", "_extra_state"}
    assert state["model"]["_extra_state"]["teacher"]["source"] == str(teacher_dir)
    assert state["model"]["projector.6.weight"].shape[0] == 1024  # the student's projector ends in the teacher's dim
    trainer = Trainer(_config(distill_run.parent / "nowhere", teacher_dir), distill_run.parent / "other")
    method = trainer._build(num_samples=32)
    method.train()
    assert not method.teacher.model.training and not any(p.requires_grad for p in method.teacher.model.parameters())
    trained = {id(p) for group in trainer._optimizer(method).param_groups for p in group["params"]}
    assert not trained & {id(p) for p in method.teacher.model.parameters()}
    # the backbone export takes (and config.json, the card's source) names the teacher
    config = json.loads(RunDir(distill_run).backbone_config.read_text())
    from zoo.card import teacher_info

    info = teacher_info(config)
    assert info["source"] == teacher_dir.name and info["img_size"] == TEACHER_SIZE and info["dim"] == 1024
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]  # the student's, not the teacher's


class _Killed(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_same_weights_and_refuses_another_teacher(gallery, teacher_dir, tmp_path,
                                                                                   distill_run, monkeypatch):
    """Killed in epoch 2 (epoch 1's checkpoint written), resumed: the same weights and queue as the uninterrupted
    run. A teacher whose weights changed in between is refused, in one line."""
    from pretrain.methods import Distill

    teacher = tmp_path / "teacher"
    shutil.copytree(teacher_dir, teacher)
    run = tmp_path / "run"
    real_step, calls = Distill.training_step, {"n": 0}

    def step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the first step of epoch 2
            raise _Killed
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Distill, "training_step", step)
    with pytest.raises(_Killed):
        Trainer(_config(gallery, teacher), run, progress=False).fit()
    monkeypatch.setattr(Distill, "training_step", real_step)
    assert load_checkpoint(RunDir(run).checkpoint)["epoch"] == 1

    _save_teacher(tmp_path / "other", seed=2)
    shutil.copyfile(tmp_path / "other" / "model.safetensors", teacher / "model.safetensors")
    with pytest.raises(ConfigError, match=r"--teacher .*: its weights \(sha256 .*\) are not the teacher this "
                                          r"checkpoint was trained against"):
        Trainer(None, run, resume=True, progress=False).fit()  # type: ignore[arg-type] - read from config.yaml

    shutil.copyfile(teacher_dir / "model.safetensors", teacher / "model.safetensors")
    Trainer(None, run, resume=True, progress=False).fit()  # type: ignore[arg-type]
    a, b = load_checkpoint(RunDir(distill_run).checkpoint), load_checkpoint(RunDir(run).checkpoint)
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        if isinstance(value, torch.Tensor):
            assert torch.allclose(value.float(), b["model"][key].float(), atol=1e-5, rtol=1e-4), key
    assert len((run / "log.csv").read_text().splitlines()) == 3


# --- what the user is told --------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    (["--teacher", "{tmp}/no-such-teacher.onnx"], "--teacher {tmp}/no-such-teacher.onnx: no such .onnx file"),
    (["--teacher", "{tmp}/no-such-folder/"], "--teacher {tmp}/no-such-folder/: no such file or folder"),
    (["--teacher", "resnet_nonexistent_99"], "--teacher resnet_nonexistent_99: not a timm model"),
    ([], "method (--method) distill needs teacher (--teacher)"),
])
def test_a_bad_teacher_is_one_line_and_exit_2_before_anything_is_written(tmp_path, gallery, caplog, argv, message):
    from app.cli import main

    argv = [a.format(tmp=tmp_path) for a in argv]
    out = tmp_path / "run"
    code = main(["pretrain", "--data", str(gallery), "--out", str(out), "--method", "distill", "--no-progress", *argv])
    assert code == ConfigError.exit_code == 2
    failures = [r.getMessage() for r in caplog.records if "pretrain failed" in r.getMessage()]
    assert len(failures) == 1 and message.format(tmp=tmp_path) in failures[0], caplog.text
    assert "\n" not in failures[0] and "Traceback" not in caplog.text and not out.exists()


def test_a_teacher_without_distill_is_refused_and_distill_has_its_own_lr(teacher_dir):
    with pytest.raises(ConfigError, match=r"teacher \(--teacher\) is the teacher of --method distill"):
        build_config(None, teacher=str(teacher_dir))
    assert build_config(None, method="distill", teacher=str(teacher_dir)).lr == 0.3  # METHOD_DEFAULTS
    assert build_config(None, method="distill", teacher=str(teacher_dir), lr=0.05).lr == 0.05
    assert build_config(None, base={"method": "distill", "teacher": str(teacher_dir), "lr": 0.2}).lr == 0.2
    assert build_config(None).lr == 1.0


def test_gloo_two_ranks_match_one_process(tmp_path, teacher_dir, cifar_root, cifar_test_200):
    """DDP on CPU (gloo, 2 ranks of 32) equals one process with the batch of 64: the student and the queue, which
    every rank fills with all ranks' teacher embeddings. Deterministic views and NCHW, as test_distributed.py
    explains; a resnet18 student, whose plain BatchNorms the CPU DDP synchronises."""
    import os
    import subprocess
    import sys

    flags = ["--data", "cifar10", "--model", "resnet18", "--no-small-stem", "--max-images", "128", "--epochs", "1",
             "--batch-size", "64", "--method", "distill", "--teacher", str(teacher_dir), "--proj-hidden-dim", "64",
             "--distill-queue", "96", "--crop-scale", "1", "1", "--jitter-p", "0", "--gray-p", "0", "--flip-p", "0",
             "--lr", "0.05", "--threads", "1", "--eval-max-train", "64", "--eval-data", str(cifar_test_200),
             "--no-progress", "--no-channels-last"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    launchers = {"single": [], "ddp": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]}
    for name, launcher in launchers.items():
        proc = subprocess.run([sys.executable, *launcher, "-m", "pretrain", "--out", str(tmp_path / name), *flags],
                              env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
    single, multi = tmp_path / "single", tmp_path / "ddp"
    a, b = load_checkpoint(RunDir(single).checkpoint)["model"], load_checkpoint(RunDir(multi).checkpoint)["model"]
    assert a.keys() == b.keys() and a["_extra_state"] == b["_extra_state"]
    assert int(a["queue.ptr"]) == int(b["queue.ptr"]) == 128 % 96  # both steps pushed 64 embeddings
    for key, value in a.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert torch.allclose(value, b[key], atol=1e-4, rtol=1e-4), (key, (value - b[key]).abs().max())
