"""Fitting a cached method (`Method.cached`, pretrain/methods/readout.py): the trunk once per view, the head on cache.

The trunk is frozen, so what it makes of an image's view never changes: each of ``--readout-views`` augmented
views of every training image goes through it once, and its pooled stages are kept (float16). The linear head
then trains for ``--epochs`` epochs over random pairs of an image's cached views, each epoch a fraction of a
second where a trunk pass over the photos takes tens. Under ``--time-budget`` the views stop early enough to
leave the head its epochs and the final kNN evaluation, and the head's epochs are cut to what is left.

The RUN_DIR contract is the trainer's (zoo/layout.py): config.yaml first, log.csv (one row per head epoch),
checkpoint.pt (the cached views so far: a run killed while caching resumes at the next view; the head, seconds
of work, starts again), backbone/ (the trunk's timm weights and the readout's), metrics.json last.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any, Callable

import torch

from pretrain.augment import AugmentParams, build_augment
from pretrain.budget import CosineSchedule
from pretrain.checkpoint import LOG_COLUMNS, append_log_row, load_checkpoint, save_checkpoint
from pretrain.preprocess import center_crop_normalize
from zoo.errors import ConfigError
from zoo.fsutil import atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from zoo.readout import StageReadout

# `tr` below is the pretrain.trainer.Trainer that dispatched here (`Trainer.fit`): its data loading, model
# building, optimizer, evaluation and metrics.json are the trainer's own (not imported: the trainer imports this).

log = logging.getLogger(__name__)

PASS_BATCH = 128  # images per trunk pass while caching (inference only)
HEAD_SHARE = 0.15  # of a time budget kept for the head's epochs when deciding whether another view fits
AUGMENTED_PASS = 1.2  # an augmented view's pass against a clean one (the batched augmentation on top)


def pooled_pass(readout: "StageReadout", images: torch.Tensor, view: Callable[[torch.Tensor], torch.Tensor],
                layout: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """(N, sum(part_dims)) float16 pooled parts of `view(images)`, batch by batch."""
    out = []
    for i in range(0, images.shape[0], PASS_BATCH):
        with torch.inference_mode():
            out.append(readout.pooled(layout(view(images[i:i + PASS_BATCH]))).half().cpu())
    return torch.cat(out)


def fit_cached(tr: Any) -> dict[str, Any]:
    """Train `tr.cfg`'s cached method into `tr.run`; returns metrics.json's content (as `Trainer.fit`)."""
    cfg, run, dev = tr.cfg, tr.run, tr.device
    if tr.dist.world_size > 1:
        raise ConfigError(f"--method {cfg.method} fits on one device (its trunk runs once per view): start it "
                          "without torchrun")
    t_fit = time.perf_counter()
    run.path.mkdir(parents=True, exist_ok=True)
    if not tr.resume:
        cfg.save(run.config)
    data = tr._load_data()
    t_budget = time.perf_counter()
    method = tr._build(len(data.pixels))
    readout = method.backbone
    images = torch.from_numpy(data.pixels).permute(0, 3, 1, 2).contiguous().to(dev)
    augment = build_augment(AugmentParams.from_config(cfg, tr.preprocess.mean, tr.preprocess.std), cfg.augment)
    generator = torch.Generator(device=dev).manual_seed(cfg.seed)
    state = load_checkpoint(run.checkpoint) if tr.resume and run.checkpoint.is_file() else {}
    spent_before = float(state.get("spent_s", 0.0))

    def elapsed() -> float:
        """The budget's clock, across a resume."""
        return spent_before + tr._now() - t_budget

    t0 = tr._now()
    clean = state["clean"] if state else pooled_pass(readout, images,
                                                     lambda x: center_crop_normalize(x, tr.preprocess), tr._layout)
    pass_s = float(state["pass_s"]) if state else tr._now() - t0
    views: list[torch.Tensor] = list(state.get("views", []))
    if state:
        generator.set_state(state["rng"])
        log.info("resumed %s with %d cached views", run.path, len(views))
    n = len(data.pixels)
    evaluated = sum(len(s.images) for s in (data.bank, data.test) if s is not None)
    eval_s = pass_s * evaluated / max(1, n)
    budget = cfg.time_budget
    view_s = float(state.get("view_s", AUGMENTED_PASS * pass_s))  # the next view's cost: the last one's
    while len(views) < cfg.readout_views:
        if budget and len(views) >= 2 and elapsed() + view_s + eval_s + HEAD_SHARE * budget > budget:
            log.info("time budget: %d of %d views cached", len(views), cfg.readout_views)
            break
        t0 = tr._now()
        views.append(pooled_pass(readout, images, lambda x: augment(x, generator), tr._layout))
        view_s = tr._now() - t0
        save_checkpoint(run.checkpoint, {"clean": clean, "views": views, "pass_s": pass_s, "view_s": view_s,
                                         "rng": generator.get_state(), "spent_s": elapsed()})
        log.info("view %d/%d cached (%.1f s)", len(views), cfg.readout_views, view_s)
    readout.set_means(clean.float().to(dev))
    metrics_row, epochs = _fit_head(tr, method, torch.stack(views), elapsed, eval_s)
    wall = elapsed()
    metrics_row.update(tr.evaluate(readout, data.bank, data.test))
    append_log_row(run.log, metrics_row)
    summary = ({"budget_s": budget, "spent_s": round(elapsed(), 3), "views": len(views), "epochs": epochs,
                "replans": 0, "plans": [{"epochs": epochs}]} if budget else None)  # one plan: after head epoch 1
    return tr._finish(method, metrics_row, epochs, summary, len(views) * n, wall,
                      len(data.bank.images) if data.bank is not None else None, time.perf_counter() - t_fit)


def _fit_head(tr: Any, method: Any, cache: torch.Tensor, elapsed: Callable[[], float], eval_s: float,
              ) -> tuple[dict[str, Any], int]:
    """Train the head on (views, N, D) cached parts: (the last epoch's log row, not yet written: the evaluation
    joins it; epochs run)."""
    cfg, run = tr.cfg, tr.run
    nv, n = cache.shape[:2]
    batch = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // batch)
    optimizer = tr._optimizer(method)
    epochs = cfg.epochs
    schedule = CosineSchedule(steps_per_epoch * epochs, cfg.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(step))
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    atomic_write_text(run.log, ",".join(LOG_COLUMNS) + "\n")
    method.train()
    row: dict[str, Any] = {}
    epoch = 0
    t_head = tr._now()
    while epoch < epochs:
        t0 = tr._now()
        perm = torch.randperm(n, generator=generator)
        loss_sum = 0.0
        for step in range(steps_per_epoch):
            idx = perm[step * batch:(step + 1) * batch]
            a = torch.randint(nv, (len(idx),), generator=generator)
            b = (a + torch.randint(1, nv, (len(idx),), generator=generator)) % nv  # another view of each image
            views = [cache[a, idx].float().to(tr.device), cache[b, idx].float().to(tr.device)]
            loss = method.training_step(views, idx).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach())
        if not math.isfinite(loss_sum):
            raise ConfigError(f"the readout's loss is {loss_sum} at epoch {epoch + 1}: lower --lr")
        epoch += 1
        epoch_s = tr._now() - t0
        if epoch == 1 and cfg.time_budget:  # the plan: the epochs that still fit, the evaluation after them
            left = cfg.time_budget - elapsed() - eval_s
            epochs = max(1, min(cfg.epochs, 1 + int(left / max(epoch_s, 1e-6))))
            schedule = CosineSchedule(steps_per_epoch * epochs, cfg.warmup_epochs * steps_per_epoch)
            log.info("time budget: %d head epochs of %.2f s", epochs, epoch_s)
        row = {"epoch": epoch, "loss": loss_sum / steps_per_epoch, "lr": optimizer.param_groups[0]["lr"],
               "images_per_s": steps_per_epoch * batch / epoch_s, "knn_top1": None, "rankme": None,
               "wall_time_s": round(elapsed(), 3)}
        if epoch < epochs:
            append_log_row(run.log, row)
    log.info("head: %d epochs in %.1f s, loss %.4f", epochs, tr._now() - t_head, row["loss"])
    return row, epochs
