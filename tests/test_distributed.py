"""DDP on CPU (gloo, 2 processes) equals one process with the combined batch: weights and bank."""

import os
import subprocess
import sys

import pytest
import torch

from pretrain.trainer import load_checkpoint
from zoo.layout import CHECKPOINT

# Deterministic views (full-image crop, no jitter/gray/flip/CutMix) so that both runs see the same
# pixels; everything else is the real method: calibration, K negatives, SqrtKL, the grad bank update.
# Three steps: float summation order differs (one batch of 64 vs two of 32) and nearly-dead BatchNorm
# channels amplify it over longer runs, which says nothing about the logic being compared. NCHW: oneDNN's
# channels_last kernels differ by batch size, and after 3 steps that alone moves the bank by 1e-3.
FLAGS = ["--data", "cifar10", "--model", "resnet18", "--no-small-stem", "--max-images", "192", "--epochs", "1",
         "--batch-size", "64", "--proj-hidden-dim", "128", "--proj-dim", "64", "--num-negatives", "96",
         "--bank-update", "grad", "--crop-scale", "1", "1", "--jitter-p", "0", "--gray-p", "0", "--flip-p", "0",
         "--cutmix-alpha", "0", "--lr", "0.05", "--threads", "1", "--eval-max-train", "192", "--no-progress",
         "--no-channels-last"]


@pytest.mark.parametrize("extra", [[], ["--freeze-stages", "2"]], ids=["all-stages", "two-stages-frozen"])
def test_gloo_two_ranks_match_single_process(tmp_path, cifar_root, extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    single, multi = tmp_path / "single", tmp_path / "ddp"
    flags = [*FLAGS, *extra]
    subprocess.run([sys.executable, "-m", "pretrain", "--out", str(single), *flags], check=True, env=env,
                   capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "pretrain", "--out", str(multi), *flags], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_checkpoint(single / CHECKPOINT), load_checkpoint(multi / CHECKPOINT)
    assert a["epoch"] == b["epoch"] == 1
    assert isinstance(b["local_rng"], list) and len(b["local_rng"]) == 2  # every rank's RNG, for resume
    for key, value in a["model"].items():
        other = b["model"][key]
        if value.is_floating_point():
            assert torch.allclose(value, other, atol=1e-4, rtol=1e-4), (key, (value - other).abs().max())
        else:
            assert torch.equal(value, other), key
    assert torch.allclose(a["model"]["bank.weight"], b["model"]["bank.weight"], atol=1e-4)
    # only rank 0 wrote the run's files
    assert (multi / "metrics.json").exists() and len((multi / "log.csv").read_text().splitlines()) == 2


@pytest.mark.parametrize("owns", [True, False])
def test_the_end_of_a_run_takes_down_only_the_group_it_made(tmp_path, owns):
    """`end_distributed` waits for every rank and destroys the group the trainer created, and no other one
    (a one-rank gloo group on a file store: nothing listens on the network)."""
    import torch.distributed as dist

    from pretrain.distributed import DistInfo, end_distributed

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", world_size=1, rank=0)
    try:
        end_distributed(DistInfo(1, 0, owns_group=owns))
        assert dist.is_initialized() is not owns
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
