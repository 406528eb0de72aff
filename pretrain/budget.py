"""`--time-budget`: the epoch count follows measured speed, so a run ends in time on any machine.

The same recipe trains at ~450 images/s on one 2-core machine with one torch and at
~120 on the next with another (BENCHMARKS.md), and on one machine its speed changes while
it runs: a program that is busy for the first 20 s made a plan from the first steps alone
train 63 s of a 300 s budget; a model whose speed fell after its first epochs overran.
So the plan is made twice over:

1. after the first timed steps (`WARMUP_STEPS` untimed, then `TIMED_STEPS`), so that the
   first epoch already knows roughly how long the run is;
2. again at every epoch end after that, from the time the last epoch took, in both
   directions: a slow start gives epochs back, a slowdown takes them away;
3. within an epoch, every `DEADLINE_EVERY` steps (`fit_last_epoch`), from that epoch's
   speed so far: when the machine slows down there, the epoch ends early (an earlier
   epoch that cannot end with the evaluation inside the budget becomes the last, cut)
   instead of overrunning the budget; when it speeds up, a cut last epoch grows back (up
   to a whole one, after which the epoch-end plan may add more). On the CPU every epoch
   checks; on a GPU, where a check synchronises the device (and the ranks), only the
   last two planned epochs do (`Trainer._deadline_due`).

An epoch can be a large share of a short budget, so a plan's last epoch may be partial:
the steps that still fit after the whole epochs (`BudgetPlan.last_epoch_steps`).

Each plan (`plan_epochs`) is the most epochs (at most ``--epochs``) whose training, plus
the evaluations still to come, end inside the budget, counted from the moment the data is
loaded (a fresh clone's one-time unpacking does not cost it epochs). Every plan is logged
and kept (`BudgetState.plans`, metrics.json's ``time_budget.plans``).

The learning rate stays one cosine that ends at zero on the last planned step when the
plan changes (`CosineSchedule.replan`). A shorter plan keeps the phase the cosine has
reached and squeezes the rest into the steps left: the rate does not jump. A longer plan
takes the phase the longer plan has at this step, when that is earlier: the rate rises to
where the longer plan would have it (a slow start that planned one epoch has decayed to
zero by its end; kept continuous, every epoch given back would train at a rate of zero). (A re-plan that stops at the epoch just finished, because that epoch
ran slower than planned, ends the run before the rate reaches zero: overrunning the
budget would be the other choice.) The plans, the schedule and the seconds spent are stored in the
checkpoint: a resumed run goes on re-planning from the budget it had left.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

log = logging.getLogger(__name__)

WARMUP_STEPS = 2  # not timed: first-call allocations and kernel selection
TIMED_STEPS = 8  # steps timed before the first plan
FINISH_S = 5.0  # saving the backbone and metrics.json, and slack for timing noise
DEADLINE_EVERY = 10  # steps between an epoch's checks against the budget


def _rounded(obj: Any) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(obj).items()}


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    """A record from its dict, ignoring keys it does not know (a checkpoint written by another version)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class BudgetPlan:
    """One plan: what the budget gave, from which measurement, recorded in the log and metrics.json."""

    budget_s: float
    epochs: int
    step_s: float  # measured seconds per training step (the timed steps, or the last epoch's)
    eval_s: float  # estimated seconds of each kNN evaluation
    estimated_fit_s: float  # predicted time from loaded data to metrics.json with this many epochs
    at_epoch: int = 0  # epochs finished when the plan was made
    elapsed_s: float = 0.0  # budget seconds spent when the plan was made
    basis: str = "timed steps"  # what step_s was measured on: "timed steps", "last epoch" or "this epoch"
    last_epoch_steps: int | None = None  # the last epoch cut to this many steps (None: a whole epoch)

    def as_dict(self) -> dict[str, Any]:
        return _rounded(self)


def evaluations_left(epochs: int, *, steps_done: int, steps_per_epoch: int, eval_every: int) -> int:
    """kNN evaluations still to run: at every `eval_every`-th epoch and at the last one, from the epoch in
    progress (or the one just finished, whose evaluation comes after the plan) to `epochs`."""
    first = max(1, math.ceil(steps_done / steps_per_epoch))
    return sum(1 for e in range(first, epochs + 1) if e == epochs or (eval_every and e % eval_every == 0))


def planned_steps(epochs: int, steps_per_epoch: int, last_epoch_steps: int | None = None) -> int:
    """The training steps of `epochs` epochs, the last of `last_epoch_steps` steps when it is cut short."""
    return (epochs - 1) * steps_per_epoch + (steps_per_epoch if last_epoch_steps is None else last_epoch_steps)


def fit_seconds(epochs: int, *, elapsed_s: float, steps_done: int, steps_per_epoch: int, step_s: float,
                eval_s: float, eval_every: int, last_epoch_steps: int | None = None) -> float:
    """Predicted time from loaded data to metrics.json when training stops after `epochs`."""
    evals = evaluations_left(epochs, steps_done=steps_done, steps_per_epoch=steps_per_epoch, eval_every=eval_every)
    steps = planned_steps(epochs, steps_per_epoch, last_epoch_steps) - steps_done
    return elapsed_s + steps * step_s + evals * eval_s + FINISH_S


def plan_epochs(budget_s: float, *, elapsed_s: float, steps_done: int, steps_per_epoch: int, step_s: float,
                eval_s: float, max_epochs: int, eval_every: int = 0, basis: str = "timed steps") -> BudgetPlan:
    """The most epochs that end inside `budget_s`: at least the epoch begun (or just finished), at most
    `max_epochs`; then one more, cut to the steps that still fit, when at least `DEADLINE_EVERY` do (an
    epoch can be a large share of a short budget: whole epochs alone would leave up to one unused)."""
    timing = dict(elapsed_s=elapsed_s, steps_done=steps_done, steps_per_epoch=steps_per_epoch, step_s=step_s,
                  eval_s=eval_s, eval_every=eval_every)
    started = max(1, math.ceil(steps_done / steps_per_epoch))
    epochs, last = started, None
    for candidate in range(max(max_epochs, started), started - 1, -1):
        if fit_seconds(candidate, **timing) <= budget_s:
            epochs = candidate
            break
    if epochs < max_epochs and fit_seconds(epochs, **timing) <= budget_s:
        spare = budget_s - fit_seconds(epochs + 1, last_epoch_steps=0, **timing)
        steps = min(steps_per_epoch - 1, math.floor(spare / step_s)) if step_s > 0 else 0
        if steps >= DEADLINE_EVERY:
            epochs, last = epochs + 1, steps
    return BudgetPlan(budget_s, epochs, step_s, eval_s, fit_seconds(epochs, last_epoch_steps=last, **timing),
                      at_epoch=steps_done // steps_per_epoch, elapsed_s=elapsed_s, basis=basis,
                      last_epoch_steps=last)


def fit_last_epoch(budget_s: float, *, elapsed_s: float, step: int, steps_per_epoch: int, step_s: float,
                   eval_s: float) -> int:
    """The steps the last epoch can have, `step` of them done at `step_s` each and the final evaluation to
    follow: from `step` (stop now) to a whole epoch."""
    fit = math.floor((budget_s - elapsed_s - eval_s - FINISH_S) / step_s) if step_s > 0 else steps_per_epoch
    return min(steps_per_epoch, step + max(0, fit))


@dataclass
class CosineSchedule:
    """Linear warm-up, then a cosine from 1 to 0 that can be re-laid over a new step count.

    Called with a step (LambdaLR's lr factor). With no re-plan it is the plain cosine
    ``0.5 * (1 + cos(pi * (step - warmup) / (total - warmup)))``. `replan(step, total)` starts a new
    stretch at `step` from the earlier of two phases, the one reached so far and the plain cosine's of
    the new `total` at `step`, and spreads the rest over the steps up to `total`: shortened, the factor
    is continuous; lengthened, it is the longer plan's; it then decreases to 0 at `total` either way.
    """

    total: int  # the step at which the factor reaches 0
    warmup: int = 0
    start_step: int = 0  # where the current stretch of the cosine begins (the warm-up's end before any re-plan)
    start_phase: float = 0.0  # the cosine's phase (0..1) at start_step

    def __post_init__(self) -> None:
        self.start_step = max(self.start_step, self.warmup)

    def phase(self, step: int) -> float:
        span = max(1, self.total - self.start_step)
        return min(1.0, self.start_phase + (1.0 - self.start_phase) * max(0, step - self.start_step) / span)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        return 0.5 * (1.0 + math.cos(math.pi * self.phase(step)))

    def replan(self, step: int, total: int) -> None:
        """From `step` on, end at `total` instead (the warm-up, if not over, is kept as it was)."""
        if step > self.start_step:
            planned = (step - self.warmup) / max(1, total - self.warmup)  # the plain cosine's phase of `total`
            self.start_phase, self.start_step = min(self.phase(step), planned), step
        self.total = total

    def as_dict(self) -> dict[str, Any]:
        return _rounded(self) | {"start_phase": self.start_phase}  # the phase unrounded: the rate stays exact

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CosineSchedule":
        return _from_dict(cls, d)


@dataclass
class BudgetState:
    """A budgeted run's plans so far and the budget seconds it spent before this process (after a resume)."""

    plans: list[BudgetPlan] = field(default_factory=list)
    spent_before_s: float = 0.0

    @property
    def plan(self) -> BudgetPlan | None:
        return self.plans[-1] if self.plans else None

    def add(self, plan: BudgetPlan, images_per_s: float) -> None:
        """Keep `plan` and log it, saying what changed."""
        before = self.plan
        self.plans.append(plan)
        when = {"last epoch": f"after epoch {plan.at_epoch}", "this epoch": f"in epoch {plan.at_epoch + 1}"}.get(
            plan.basis, "after the first timed steps")
        change = "" if before is None else \
            f" (was {before.epochs})" if before.epochs != plan.epochs else " (unchanged)"
        if plan.last_epoch_steps is not None:
            change += f", the last of {plan.last_epoch_steps} steps"
        log.info("time budget %.0f s, %s: %.0f s spent, %.3f s a step (%.0f img/s) -> %d epoch(s)%s, fit about %.0f s",
                 plan.budget_s, when, plan.elapsed_s, plan.step_s, images_per_s, plan.epochs, change,
                 plan.estimated_fit_s)
        if plan.estimated_fit_s > plan.budget_s:
            log.warning("time budget %.0f s: even %d epoch(s) need about %.0f s on this machine", plan.budget_s,
                        plan.epochs, plan.estimated_fit_s)

    def to_checkpoint(self, spent_s: float, schedule: CosineSchedule) -> dict[str, Any]:
        return {"plans": [p.as_dict() for p in self.plans], "spent_s": round(spent_s, 3),
                "schedule": schedule.as_dict()}

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> tuple["BudgetState", CosineSchedule | None]:
        """The checkpoint's budget (also the one-plan ``budget_plan`` of earlier checkpoints) and its schedule."""
        if state.get("budget"):
            saved = state["budget"]
            return (cls([_from_dict(BudgetPlan, p) for p in saved["plans"]], float(saved["spent_s"])),
                    CosineSchedule.from_dict(saved["schedule"]))
        if state.get("budget_plan"):
            return cls([_from_dict(BudgetPlan, state["budget_plan"])], float(state.get("wall_time_s", 0.0))), None
        return cls(), None

    def summary(self, spent_s: float) -> dict[str, Any] | None:
        """metrics.json's ``time_budget``: the last plan's fields, the seconds spent, and every plan."""
        if self.plan is None:
            return None
        return self.plan.as_dict() | {"spent_s": round(spent_s, 3), "replans": len(self.plans) - 1,
                                      "plans": [p.as_dict() for p in self.plans]}
