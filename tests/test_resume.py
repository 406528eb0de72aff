"""Interrupted training resumes to the same weights and bank; divergence keeps the last good checkpoint."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pretrain.config import build_config
from pretrain.trainer import (LOG_COLUMNS, CheckpointWriter, NonFiniteLossError, Trainer, load_checkpoint,
                              save_checkpoint, trim_log)
from zoo.layout import CHECKPOINT

TINY = dict(data="cifar10", model="resnet18", small_stem=False, img_size=32, max_images=384, epochs=3,
            batch_size=64, proj_hidden_dim=128, proj_dim=64, num_negatives=128, threads=1, eval_max_train=384,
            proj_out_bn=True, recalibrate_every=1)


def _flags(values: dict) -> list[str]:
    out = []
    for k, v in values.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            out.append(flag if v else "--no-" + k.replace("_", "-"))
        else:
            out += [flag, str(v)]
    return out


def _pretrain_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pretrain", "--out", str(out), "--no-progress", *_flags(TINY), *extra]


def _rows(run: Path) -> int:
    log = run / "log.csv"
    return max(0, len(log.read_text().splitlines()) - 1) if log.exists() else 0


@pytest.mark.parametrize("method", ["effssl"])
def test_kill_mid_epoch_then_resume_matches_uninterrupted(tmp_path, method, cifar_root):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_pretrain_cmd(ref, "--method", method), check=True, env=env, capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(_pretrain_cmd(run, "--method", method), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _rows(run) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists(), "the run finished before it could be interrupted"
    epoch_at_kill = load_checkpoint(run / CHECKPOINT)["epoch"]
    assert 1 <= epoch_at_kill < TINY["epochs"]

    subprocess.run(_pretrain_cmd(run, "--resume"), check=True, env=env, capture_output=True)
    a, b = load_checkpoint(ref / CHECKPOINT), load_checkpoint(run / CHECKPOINT)
    assert a["epoch"] == b["epoch"] == TINY["epochs"]
    for key in a["model"]:
        assert torch.allclose(a["model"][key].float(), b["model"][key].float(), atol=1e-5, rtol=1e-4), key
    assert torch.allclose(a["model"]["bank.weight"], b["model"]["bank.weight"], atol=1e-5)
    assert _rows(run) == TINY["epochs"]  # no duplicated log rows


def test_recalibrate_every_refills_the_bank_at_those_epochs(tmp_path, cifar_root, monkeypatch):
    """Calibration runs before training and again at the start of every N-th epoch, nowhere else."""
    from pretrain.methods import EffSSL

    epochs_at_setup: list[int] = []
    real_setup, real_step = EffSSL.setup, EffSSL.training_step
    steps = {"n": 0}

    def step(self, *args, **kwargs):
        steps["n"] += 1
        return real_step(self, *args, **kwargs)

    def setup(self, batches):
        epochs_at_setup.append(steps["n"] // 2)  # 2 steps per epoch
        real_setup(self, batches)

    monkeypatch.setattr(EffSSL, "setup", setup)
    monkeypatch.setattr(EffSSL, "training_step", step)
    cfg = build_config(**{**TINY, "epochs": 5, "max_images": 128, "recalibrate_every": 2})
    Trainer(cfg, tmp_path / "run", progress=False).fit()
    assert epochs_at_setup == [0, 2, 4]


@pytest.mark.parametrize("view", ["clean", "augmented"])
def test_calibrate_view_clean_is_fixed_augmented_is_redrawn(tmp_path, cifar_root, monkeypatch, view):
    """clean: every calibration pass sees the same centre crops; augmented: a new training view each pass."""
    from pretrain.methods import EffSSL

    firsts: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_setup = EffSSL.setup

    def setup(self, batches):
        firsts.append(next(iter(batches())))
        real_setup(self, batches)

    monkeypatch.setattr(EffSSL, "setup", setup)
    cfg = build_config(**{**TINY, "epochs": 2, "max_images": 128, "calibrate_view": view})
    Trainer(cfg, tmp_path / "run", progress=False).fit()
    (x0, rows0), (x1, rows1) = firsts
    assert torch.equal(rows0, rows1)
    assert torch.equal(x0, x1) == (view == "clean")


def test_existing_run_is_not_overwritten(tmp_path, cifar_root):
    cfg = build_config(**{**TINY, "epochs": 1, "max_images": 128})
    Trainer(cfg, tmp_path / "run", progress=False).fit()
    from pretrain.trainer import RunDirError

    with pytest.raises(RunDirError, match="--resume"):
        Trainer(cfg, tmp_path / "run", progress=False)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, cifar_root, monkeypatch):
    """Epoch 1 trains normally; in epoch 2 the loss turns NaN: training stops, epoch 1's checkpoint stays."""
    from pretrain.methods import EffSSL

    run = tmp_path / "run"
    cfg = build_config(**{**TINY, "epochs": 2, "max_images": 128})  # 2 steps per epoch
    real_step = EffSSL.training_step
    calls = {"n": 0}
    snapshot = {}

    def step(self, *args, **kwargs):
        calls["n"] += 1
        out = real_step(self, *args, **kwargs)
        if calls["n"] > 2:
            deadline = time.monotonic() + 120
            while _rows(run) < 1:  # epoch 1's row is logged once its checkpoint (written in the background) is in place
                assert time.monotonic() < deadline, "epoch 1's checkpoint was never written"
                time.sleep(0.01)
            snapshot.setdefault("ckpt", (run / CHECKPOINT).read_bytes())
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(EffSSL, "training_step", step)
    with pytest.raises(NonFiniteLossError, match="non-finite.*epoch 2"):
        Trainer(cfg, run, progress=False).fit()
    assert (run / CHECKPOINT).read_bytes() == snapshot["ckpt"]
    assert load_checkpoint(run / CHECKPOINT)["epoch"] == 1
    assert not (run / "metrics.json").exists() and not (run / "backbone").exists()


def _row(epoch: int) -> dict:
    return {"epoch": epoch, "loss": 1.0, "lr": 0.1, "images_per_s": 10.0, "knn_top1": None, "rankme": None,
            "wall_time_s": float(epoch)}


def test_checkpoint_writer_saves_the_state_as_submitted_then_logs(tmp_path):
    """Training changes the weights while the background write runs: the file must hold the submitted values."""
    weights = torch.zeros(1000)
    ckpt, log_path = tmp_path / CHECKPOINT, tmp_path / "log.csv"
    log_path.write_text(",".join(LOG_COLUMNS) + "\n")
    writer = CheckpointWriter()
    writer.submit(ckpt, {"epoch": 1, "model": {"w": weights}, "rng": [torch.ones(2)]}, log_path, _row(1))
    weights += 1.0
    writer.wait()
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 1 and float(state["model"]["w"].abs().sum()) == 0.0
    assert _rows(tmp_path) == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_writer_reraises_a_failed_write_and_logs_nothing(tmp_path):
    log_path = tmp_path / "log.csv"
    log_path.write_text(",".join(LOG_COLUMNS) + "\n")
    writer = CheckpointWriter()
    writer.submit(tmp_path / "no-such-dir" / CHECKPOINT, {"epoch": 1}, log_path, _row(1))
    with pytest.raises((OSError, RuntimeError), match="no-such-dir"):
        writer.wait()
    assert _rows(tmp_path) == 0
    writer.wait()  # the error is reported once


def test_a_full_disk_is_named_and_the_last_checkpoint_kept(tmp_path, monkeypatch):
    """torch.save says only "unexpected pos" when the disk fills; the error must say what is wrong."""
    import errno
    import shutil

    import pretrain.trainer

    ckpt = tmp_path / CHECKPOINT
    save_checkpoint(ckpt, {"epoch": 1})
    kept = ckpt.read_bytes()

    def full_save(state, path):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 11184128 vs 11184024")

    monkeypatch.setattr(pretrain.trainer.torch, "save", full_save)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(OSError, match="no space left on the device to write checkpoint.pt") as info:
        save_checkpoint(ckpt, {"epoch": 2, "bank": torch.zeros(1000)})
    assert info.value.errno == errno.ENOSPC
    assert ckpt.read_bytes() == kept and not list(tmp_path.glob("*.tmp"))


def test_trim_log_drops_rows_past_the_checkpoint_epoch(tmp_path):
    log_path = tmp_path / "log.csv"
    log_path.write_text(",".join(LOG_COLUMNS) + "\n" + "".join(f"{e},1,0.1,10,,,{e}\n" for e in (1, 2, 3)))
    trim_log(log_path, 2)
    assert [ln.split(",")[0] for ln in log_path.read_text().splitlines()[1:]] == ["1", "2"]
