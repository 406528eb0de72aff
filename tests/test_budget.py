"""`--time-budget`: the epoch count follows measured speed at every epoch end, the schedule stays one cosine
that ends on the last planned step, and a resumed run keeps its plan, schedule and spent budget."""

import csv
import json
import math

import pytest
import torch

from pretrain.budget import (FINISH_S, TIMED_STEPS, WARMUP_STEPS, BudgetState, CosineSchedule, fit_last_epoch,
                             evaluations_left, fit_seconds, plan_epochs)
from pretrain.config import PretrainConfig, build_config
from pretrain.trainer import Trainer, load_checkpoint
from zoo.errors import ConfigError
from zoo.layout import CHECKPOINT

TINY = dict(data="cifar10", model="resnet18", small_stem=False, img_size=32, max_images=256, batch_size=32,
            proj_hidden_dim=64, proj_dim=32, num_negatives=64, threads=1, eval_max_train=256, proj_out_bn=True)


def test_plan_takes_the_most_epochs_that_fit():
    timing = dict(elapsed_s=10.0, steps_done=10, steps_per_epoch=100, step_s=0.5, eval_s=20.0)
    # 10 s spent + E * 50 s of epochs - 5 s already done + 20 s evaluation + finish
    assert fit_seconds(3, eval_every=0, **timing) == pytest.approx(10 + 150 - 5 + 20 + FINISH_S)
    assert fit_seconds(3, eval_every=0, **timing) <= 200.0 < fit_seconds(4, eval_every=0, **timing)
    # three whole epochs fit (180 s), and the 20 s left give a fourth of 40 steps
    plan = plan_epochs(200.0, max_epochs=50, **timing)
    assert (plan.epochs, plan.last_epoch_steps) == (4, 40)
    assert plan.estimated_fit_s == pytest.approx(200.0)
    assert fit_seconds(4, eval_every=0, last_epoch_steps=40, **timing) == pytest.approx(200.0)
    capped = plan_epochs(10_000.0, max_epochs=50, **timing)  # --epochs caps it, whole
    assert (capped.epochs, capped.last_epoch_steps) == (50, None)
    assert plan_epochs(1.0, max_epochs=50, **timing).epochs == 1  # never less than the epoch begun
    # fewer than DEADLINE_EVERY spare steps make no partial epoch
    assert plan_epochs(184.0, max_epochs=50, **timing).last_epoch_steps is None
    # evaluations every epoch cost their time too: two whole epochs (150 s), a third of 60 steps
    every = plan_epochs(200.0, max_epochs=50, eval_every=1, **timing)
    assert (every.epochs, every.last_epoch_steps) == (3, 60)


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
    assert load_checkpoint(run / CHECKPOINT)["budget"]["plans"][-1]["epochs"] == plan["epochs"]
    assert json.loads((run / "backbone" / "config.json").read_text())["edgezoo"]["epochs"] == plan["epochs"]

    capped = tmp_path / "capped"
    cfg = build_config(None, epochs=2, time_budget=10_000.0, eval_data=str(cifar_test_200), **TINY)
    metrics = Trainer(cfg, capped, progress=False).fit()
    assert metrics["epochs"] == 2 and metrics["time_budget"]["epochs"] == 2


def test_replan_counts_only_the_evaluations_to_come():
    # after epoch 4 of 100-step epochs, eval every 2: epoch 4's own (not yet run), 6, 8 and the last, 9
    assert evaluations_left(9, steps_done=400, steps_per_epoch=100, eval_every=2) == 4
    assert evaluations_left(9, steps_done=450, steps_per_epoch=100, eval_every=0) == 1
    # a re-plan at an epoch end may stop there: the epoch just finished is the smallest plan
    plan = plan_epochs(10.0, elapsed_s=9.0, steps_done=400, steps_per_epoch=100, step_s=1.0, eval_s=0.0,
                       max_epochs=9)
    assert plan.epochs == 4 and plan.at_epoch == 4 and plan.elapsed_s == 9.0


def test_schedule_without_replan_is_the_plain_cosine():
    sched = CosineSchedule(total=100, warmup=10)
    assert sched(0) == pytest.approx(0.1) and sched(9) == pytest.approx(1.0)
    for step in (10, 37, 99, 100):
        assert sched(step) == pytest.approx(0.5 * (1 + math.cos(math.pi * (step - 10) / 90)))


def test_shortened_schedule_is_continuous_and_ends_at_zero():
    """Shortened at step 50, the rate neither jumps nor rises, and is 0 on the new last step."""
    sched = CosineSchedule(total=100, warmup=5)
    before = [sched(s) for s in range(51)]
    sched.replan(50, 60)
    after = [sched(s) for s in range(50, 61)]
    assert after[0] == pytest.approx(before[-1])
    assert all(b <= a + 1e-12 for a, b in zip(after, after[1:]))
    assert after[-1] == pytest.approx(0.0, abs=1e-12)
    restored = CosineSchedule.from_dict(sched.as_dict())  # what a checkpoint keeps
    assert [restored(s) for s in range(50, 61)] == after


def test_lengthened_schedule_is_the_longer_plans():
    """A first plan of one short stretch has decayed to 0 at its end; lengthened there, the rate is the longer
    plan's from then on (not stuck at 0), and still ends at 0."""
    sched = CosineSchedule(total=10, warmup=0)
    assert sched(10) == pytest.approx(0.0, abs=1e-12)
    sched.replan(10, 100)
    plain = CosineSchedule(total=100, warmup=0)
    assert [sched(s) for s in range(10, 101)] == pytest.approx([plain(s) for s in range(10, 101)])
    assert sched(10) > 0.9
    # lengthened a little: the phase reached (0.6) is earlier than the plain phase of 40 steps at 25 (0.625)
    sched = CosineSchedule(total=100, warmup=0)
    sched.replan(20, 30)  # shortened: phase 0.2 at 20, 0.6 at 25
    reached = sched(25)
    sched.replan(25, 40)
    assert sched(25) == pytest.approx(reached) and sched(40) == pytest.approx(0.0, abs=1e-12)


def test_replan_during_warmup_keeps_the_warmup():
    sched = CosineSchedule(total=100, warmup=20)
    sched.replan(5, 200)
    assert sched(10) == pytest.approx(11 / 20) and sched(20) == pytest.approx(1.0)
    assert sched(200) == pytest.approx(0.0, abs=1e-12)


def test_budget_state_reads_old_and_new_checkpoints():
    old = {"budget_plan": {"budget_s": 300.0, "epochs": 7, "step_s": 0.2, "eval_s": 3.0, "estimated_fit_s": 290.0},
           "wall_time_s": 41.5}
    state, schedule = BudgetState.from_checkpoint(old)
    assert state.plan.epochs == 7 and state.spent_before_s == 41.5 and schedule is None
    sched = CosineSchedule(total=700, warmup=0)
    sched.replan(300, 900)
    saved = {"budget": state.to_checkpoint(99.0, sched)}
    again, sched2 = BudgetState.from_checkpoint(saved)
    assert again.plans == state.plans and again.spent_before_s == 99.0 and sched2 == sched
    assert BudgetState.from_checkpoint({"budget": None}) == (BudgetState(), None)


def virtual_clock(monkeypatch, step_s) -> None:
    """The trainer's clock advances by `step_s(state, steps so far)` virtual seconds a step (on top of the real
    time), and the evaluation is estimated at 1 s: the planner is tested, not the machine or the estimate."""
    real_now, real_step = Trainer._now, Trainer._train_step
    virtual = {"s": 0.0, "steps": 0}

    def step(self, st, idx):
        virtual["steps"] += 1
        virtual["s"] += step_s(st, virtual["steps"])
        return real_step(self, st, idx)

    monkeypatch.setattr(Trainer, "_now", lambda self: real_now(self) + virtual["s"])
    monkeypatch.setattr(Trainer, "_eval_s", lambda self, st, data, step_s: 1.0)
    monkeypatch.setattr(Trainer, "_train_step", step)


def test_slow_first_window_does_not_cut_training(monkeypatch, tmp_path, cifar_test_200):
    """The first timed steps are slow (a virtual 1 s a step on the trainer's clock, as when another program is
    busy at the start; 0.2 s after them, so the budget is spent in a few real seconds): the first plan is short,
    the epoch-end re-plans give the epochs back, and the run spends its budget."""
    slow_steps, slow_s, fast_s, budget = WARMUP_STEPS + TIMED_STEPS, 1.0, 0.2, 40.0
    virtual_clock(monkeypatch, lambda st, n: slow_s if n <= slow_steps else fast_s)
    cfg = build_config(None, epochs=60, time_budget=budget, eval_data=str(cifar_test_200), **(TINY | {"batch_size": 16}))
    run = tmp_path / "slow-start"
    metrics = Trainer(cfg, run, progress=False).fit()
    tb = metrics["time_budget"]
    first, plans = tb["plans"][0], tb["plans"]
    assert first["basis"] == "timed steps" and first["step_s"] >= slow_s  # planned from the slowed steps
    assert metrics["epochs"] > first["epochs"]  # the re-plans gave the epochs back
    # then one plan at the end of every whole epoch from the one in progress on (a partial last epoch is last)
    ends = [p["at_epoch"] for p in plans[1:] if p["basis"] == "last epoch"]
    assert ends == list(range(first["at_epoch"] + 1, first["at_epoch"] + 1 + len(ends)))
    assert ends[-1] in (metrics["epochs"], metrics["epochs"] - 1)
    last = plans[-1]["last_epoch_steps"]
    assert metrics["images_seen"] == ((metrics["epochs"] - 1) * 16 + (16 if last is None else last)) * 16
    assert tb["replans"] == len(plans) - 1 and tb["epochs"] == metrics["epochs"] == plans[-1]["epochs"]
    # the budget was used (or --epochs reached), and not overrun by more than the finish slack
    assert metrics["epochs"] == 60 or tb["spent_s"] >= budget - FINISH_S - 5.0  # the slack, and ~one epoch
    assert tb["spent_s"] <= budget + FINISH_S
    rows = list(csv.DictReader((run / "log.csv").open()))
    lrs = [float(r["lr"]) for r in rows]
    assert len(rows) == metrics["epochs"]
    # the short first plan's cosine ended within it; the epochs given back still train (the longer plan's rate)
    assert all(lr > 1e-3 for lr in lrs[:-1])
    # the cosine ran to its end (a last-epoch cut that stops at once keeps the nearly-zero rate it had)
    assert lrs[-1] < 0.01 * lrs[0] or plans[-1]["epochs"] < plans[-2]["epochs"]


def test_fit_last_epoch_keeps_what_fits():
    # 40 s spent, 10 of 100 steps done at 1 s each, a 10-s evaluation: 300 - 40 - 10 - FINISH_S more steps fit
    timing = dict(elapsed_s=40.0, step=10, steps_per_epoch=100, step_s=1.0, eval_s=10.0)
    assert fit_last_epoch(300.0, **timing) == 100  # all of it (no more: whole epochs are the plan's)
    assert fit_last_epoch(100.0, **timing) == 10 + 45
    assert fit_last_epoch(50.0, **timing) == 10  # stop now


def test_slowdown_in_the_last_epoch_cuts_it(monkeypatch, tmp_path, cifar_test_200):
    """The machine slows down in the last planned epoch (a virtual 3 s a step on the trainer's clock): the epoch
    ends early, inside the budget, with the schedule ending on its last step."""
    virtual_clock(monkeypatch, lambda st, n: 3.0 if st.epoch == 1 else 0.0)
    budget = 100.0
    cfg = build_config(None, epochs=2, time_budget=budget, eval_data=str(cifar_test_200), **(TINY | {"batch_size": 8}))
    run = tmp_path / "slow-end"
    metrics = Trainer(cfg, run, progress=False).fit()
    tb, steps_per_epoch = metrics["time_budget"], 256 // 8
    last = tb["plans"][-1]
    assert last["basis"] == "this epoch" and 10 <= last["last_epoch_steps"] < steps_per_epoch
    assert metrics["epochs"] == 2 and metrics["images_seen"] == (steps_per_epoch + last["last_epoch_steps"]) * 8
    assert tb["spent_s"] <= budget  # without the cut: about 10 + 32 * 3 s
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert len(rows) == 2 and float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-9)


def test_slowdown_in_an_earlier_epoch_makes_it_the_last(monkeypatch, tmp_path, cifar_test_200):
    """Three epochs planned at a virtual 0.5 s a step; the second slows to 4 s a step, so it cannot end inside the
    budget: it becomes the last, cut, instead of overrunning (whole, it would take 128 s of a 100 s budget)."""
    virtual_clock(monkeypatch, lambda st, n: 4.0 if st.epoch == 1 else 0.5)
    budget, steps_per_epoch = 100.0, 256 // 8
    cfg = build_config(None, epochs=3, time_budget=budget, eval_data=str(cifar_test_200), **(TINY | {"batch_size": 8}))
    run = tmp_path / "slow-middle"
    metrics = Trainer(cfg, run, progress=False).fit()
    tb = metrics["time_budget"]
    assert [p["epochs"] for p in tb["plans"] if p["basis"] != "this epoch"][-1] == 3  # planned 3 before the slowdown
    cut = tb["plans"][-1]
    assert cut["basis"] == "this epoch" and cut["at_epoch"] == 1 and 10 <= cut["last_epoch_steps"] < steps_per_epoch
    assert metrics["epochs"] == 2 and metrics["images_seen"] == (steps_per_epoch + cut["last_epoch_steps"]) * 8
    assert tb["spent_s"] <= budget
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert len(rows) == 2 and float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-9)


def test_on_a_gpu_only_the_last_two_planned_epochs_check_their_deadline(tmp_path):
    """A deadline check synchronises a GPU (and the DDP ranks): there it runs in the last two planned epochs only;
    on the CPU, where it is free, in every epoch."""
    from types import SimpleNamespace

    trainer = Trainer(build_config(None, epochs=3, **TINY), tmp_path / "run", progress=False)
    due = [trainer._deadline_due(SimpleNamespace(epoch=e, epochs=6)) for e in range(6)]
    assert due == [True] * 6  # the CPU
    trainer.device = torch.device("cuda")  # (only its type is read)
    due = [trainer._deadline_due(SimpleNamespace(epoch=e, epochs=6)) for e in range(6)]
    assert due == [False, False, False, False, True, True]


def test_the_budget_left_after_whole_epochs_trains_a_partial_one(monkeypatch, tmp_path, cifar_test_200):
    """Epochs of a virtual 32 s in a 100 s budget: two whole ones fit, and the last is cut to the steps left."""
    virtual_clock(monkeypatch, lambda st, n: 1.0)
    budget, steps_per_epoch = 100.0, 256 // 8
    cfg = build_config(None, epochs=5, time_budget=budget, eval_data=str(cifar_test_200), **(TINY | {"batch_size": 8}))
    run = tmp_path / "partial"
    metrics = Trainer(cfg, run, progress=False).fit()
    tb = metrics["time_budget"]
    last = tb["plans"][-1]["last_epoch_steps"]
    assert metrics["epochs"] == 3 and last is not None and 10 <= last < steps_per_epoch
    assert metrics["images_seen"] == (2 * steps_per_epoch + last) * 8
    assert budget - 2.0 * FINISH_S <= tb["spent_s"] <= budget
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert len(rows) == 3 and float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-9)


def test_resume_keeps_the_plan_and_the_spent_budget(tight, tmp_path):
    """A resumed budgeted run takes its checkpoint's plans and schedule, and the budget it had already spent."""
    import dataclasses
    import shutil

    import torch

    cfg, done, _ = tight
    run = tmp_path / "run"
    shutil.copytree(done, run)
    dataclasses.replace(cfg, time_budget=10_000.0).save(run / "config.yaml")  # a budget far from spent ...
    state = load_checkpoint(run / CHECKPOINT)
    saved_plans = len(state["budget"]["plans"])
    state["budget"]["plans"][-1]["epochs"] += 3  # as if the plan had been longer and the run stopped early
    state["budget"]["spent_s"] = 9_999.0  # ... but for what the run spent before it stopped
    torch.save(state, run / CHECKPOINT)
    (run / "metrics.json").unlink()
    metrics = Trainer(cfg, run, resume=True, progress=False).fit()
    epochs_before = state["epoch"]
    tb = metrics["time_budget"]
    # without the spent seconds the first re-plan would give --epochs (40); with them it stops there
    assert metrics["epochs"] == epochs_before + 1 < cfg.epochs
    assert tb["spent_s"] >= 9_999.0 and len(tb["plans"]) == saved_plans + 1
    assert tb["plans"][-1]["at_epoch"] == epochs_before + 1
    assert len((run / "log.csv").read_text().splitlines()) - 1 == epochs_before + 1
