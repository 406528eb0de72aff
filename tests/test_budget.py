"""`--time-budget`: the epoch count comes from measured speed, the schedule ends on it, and resume keeps it."""

import csv
import json

import pytest

from pretrain.budget import FINISH_S, TIMED_STEPS, WARMUP_STEPS, fit_seconds, plan_epochs
from pretrain.config import PretrainConfig, build_config
from pretrain.trainer import Trainer, load_checkpoint
from zoo.errors import ConfigError
from zoo.layout import CHECKPOINT

TINY = dict(data="cifar10", model="resnet18", small_stem=False, img_size=32, max_images=256, batch_size=32,
            proj_hidden_dim=64, proj_dim=32, num_negatives=64, threads=1, eval_max_train=256, proj_out_bn=True)


def test_plan_takes_the_most_epochs_that_fit():
    timing = dict(elapsed_s=10.0, steps_done=10, steps_per_epoch=100, step_s=0.5, eval_s=20.0)
    # 10 s spent + E * 50 s of epochs - 5 s already done + 20 s evaluation + finish
    plan = plan_epochs(200.0, max_epochs=50, **timing)
    assert plan.epochs == 3
    assert fit_seconds(3, eval_every=0, **timing) == pytest.approx(10 + 150 - 5 + 20 + FINISH_S)
    assert plan.estimated_fit_s <= 200.0 < fit_seconds(4, eval_every=0, **timing)
    assert plan_epochs(10_000.0, max_epochs=50, **timing).epochs == 50  # --epochs caps it
    assert plan_epochs(1.0, max_epochs=50, **timing).epochs == 1  # never less than the epoch begun
    # evaluations every epoch cost their time too
    assert plan_epochs(200.0, max_epochs=50, eval_every=1, **timing).epochs == 2


def test_plan_never_ends_before_the_epoch_in_progress():
    plan = plan_epochs(1.0, elapsed_s=0.0, steps_done=25, steps_per_epoch=10, step_s=1.0, eval_s=0.0,
                       max_epochs=9)
    assert plan.epochs == 3


def test_budget_must_be_positive():
    with pytest.raises(ConfigError, match="time_budget"):
        PretrainConfig(time_budget=0)


@pytest.fixture(scope="module")
def tight(tmp_path_factory, cifar_test_200):
    """A run whose 1-second budget is spent before the plan: it stops at the epoch in progress."""
    run = tmp_path_factory.mktemp("budget") / "tight"
    cfg = build_config(None, epochs=40, time_budget=1.0, eval_data=str(cifar_test_200), **TINY)
    return cfg, run, Trainer(cfg, run, progress=False).fit()


def test_budgeted_run_trains_the_planned_epochs(tight, tmp_path, cifar_test_200):
    """A tight budget lowers --epochs, a generous one is capped by it; both record the plan."""
    assert 256 // TINY["batch_size"] * 2 >= WARMUP_STEPS + TIMED_STEPS  # the plan is made inside the run
    _, run, metrics = tight
    plan = metrics["time_budget"]
    assert plan["budget_s"] == 1.0 and plan["step_s"] > 0
    assert metrics["epochs"] == plan["epochs"] < 40
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert len(rows) == metrics["epochs"]
    assert float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-9)  # the cosine schedule ends on the planned epoch
    assert load_checkpoint(run / CHECKPOINT)["budget_plan"]["epochs"] == plan["epochs"]
    assert json.loads((run / "backbone" / "config.json").read_text())["edgezoo"]["epochs"] == plan["epochs"]

    capped = tmp_path / "capped"
    cfg = build_config(None, epochs=2, time_budget=10_000.0, eval_data=str(cifar_test_200), **TINY)
    metrics = Trainer(cfg, capped, progress=False).fit()
    assert metrics["epochs"] == 2 and metrics["time_budget"]["epochs"] == 2


def test_resume_keeps_the_plan(tight, tmp_path):
    """A resumed budgeted run does not re-plan: it finishes the epochs its checkpoint recorded."""
    import shutil

    import torch

    cfg, done, _ = tight
    run = tmp_path / "run"
    shutil.copytree(done, run)
    state = load_checkpoint(run / CHECKPOINT)
    planned = state["budget_plan"]["epochs"]
    state["budget_plan"]["epochs"] = planned + 3  # as if the plan had been longer and the run stopped early
    torch.save(state, run / CHECKPOINT)
    (run / "metrics.json").unlink()
    metrics = Trainer(cfg, run, resume=True, progress=False).fit()
    assert metrics["epochs"] == planned + 3  # re-planning (1-s budget, 10 steps in) would stop at planned + 2
    assert len((run / "log.csv").read_text().splitlines()) - 1 == planned + 3
