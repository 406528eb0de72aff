"""`--time-budget`: fix the epoch count from measured throughput, so a run ends in time on any machine.

The same recipe trains at ~450 images/s on one 2-core machine with one torch and at
~120 on the next with another (BENCHMARKS.md); a recipe that promises minutes cannot
promise epochs. Under a budget the trainer times its first steps, then calls
`plan_epochs` once: the most epochs (at most ``--epochs``) whose training, plus the
final evaluation it estimates from the calibration pass, ends inside the budget,
counted from the moment the data is loaded (unpacking and decoding it is a one-time
cost on a fresh clone: counted in, the same recipe would train fewer epochs the first
time). The cosine schedule is then laid over those epochs; the plan is stored in the
checkpoint, so a resumed run keeps it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

WARMUP_STEPS = 2  # not timed: first-call allocations and kernel selection
TIMED_STEPS = 8  # steps timed before the plan is fixed
FINISH_S = 5.0  # saving the backbone and metrics.json, and slack for timing noise


@dataclass(frozen=True)
class BudgetPlan:
    """What the budget gave, recorded in the log and metrics.json."""

    budget_s: float
    epochs: int
    step_s: float  # measured seconds per training step
    eval_s: float  # estimated seconds of each kNN evaluation
    estimated_fit_s: float  # predicted fit() time with this many epochs

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def fit_seconds(epochs: int, *, elapsed_s: float, steps_done: int, steps_per_epoch: int, step_s: float,
                eval_s: float, eval_every: int) -> float:
    """Predicted fit() time when training stops after `epochs` (evaluation every `eval_every` and at the end)."""
    evals = 1 + ((epochs - 1) // eval_every if eval_every else 0)
    return elapsed_s + (epochs * steps_per_epoch - steps_done) * step_s + evals * eval_s + FINISH_S


def plan_epochs(budget_s: float, *, elapsed_s: float, steps_done: int, steps_per_epoch: int, step_s: float,
                eval_s: float, max_epochs: int, eval_every: int = 0) -> BudgetPlan:
    """The most epochs that end inside `budget_s`: at least the epoch already begun, at most `max_epochs`."""
    timing = dict(elapsed_s=elapsed_s, steps_done=steps_done, steps_per_epoch=steps_per_epoch, step_s=step_s,
                  eval_s=eval_s, eval_every=eval_every)
    started = max(1, math.ceil(steps_done / steps_per_epoch))
    epochs = started
    for candidate in range(max_epochs, started - 1, -1):
        if fit_seconds(candidate, **timing) <= budget_s:
            epochs = candidate
            break
    plan = BudgetPlan(budget_s, epochs, step_s, eval_s, fit_seconds(epochs, **timing))
    if plan.estimated_fit_s > budget_s:
        log.warning("time budget %.0f s: even %d epoch(s) need about %.0f s on this machine", budget_s, epochs,
                    plan.estimated_fit_s)
    return plan
