"""The training loop: data on the device, batched augmentation, checkpoints, logs, outputs.

What it writes into RUN_DIR, and when (config.yaml first, metrics.json last): zoo/layout.py.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from pretrain import continual
from pretrain.augment import AugmentParams, build_augment
from pretrain.budget import (DEADLINE_EVERY, FINISH_S, TIMED_STEPS, WARMUP_STEPS, BudgetPlan, BudgetState,
                             CosineSchedule, fit_last_epoch, plan_epochs, planned_steps)
from pretrain.checkpoint import (LOG_COLUMNS, append_log_row, cpu_snapshot, load_checkpoint, save_checkpoint,
                                 trim_log)
from pretrain.compile import CompileResult, compile_backbone, eager, step_begin
from pretrain.config import PretrainConfig
from pretrain.data import Split, load_knn_bank, load_split, load_train_split, preprocess_of, write_data_record
from pretrain.distributed import Gather, end_distributed, init_distributed, select_device, sync_batchnorm
from pretrain.evaluate import knn_protocol, starting_backbone
from pretrain.init import load_init
from pretrain.methods import Method, build_method, describe_method, method_class
from pretrain.modules.one_pixel_conv import use_one_pixel_convs
from pretrain.modules.regularizers import AnchorPenalty
from pretrain.preprocess import center_crop_normalize
from pretrain.stages import first_stages, freeze
from zoo import datasets
from zoo.backbones import embedding_dim
from zoo.errors import ConfigError, EdgezooError, RunDirError
from zoo.fsutil import atomic_write_json, atomic_write_text
from zoo.layout import CONFIG, REPLAY_IN, RunDir
from zoo.records import Metrics
from zoo.timm_files import backbone_config, save_backbone

log = logging.getLogger(__name__)



class NonFiniteLossError(EdgezooError):
    """Training diverged; the last good checkpoint is left untouched."""


class CheckpointWriter:
    """Writes each epoch's checkpoint, then its log row, in a background thread.

    The cifar10-resnet18 state is 548 MiB (the 50,000 x 2048 fp32 bank alone is 391 MiB).
    Written in the loop it took 0.7-2.5 s a save on the 2-core machine; on the H200, where
    an epoch trains in 2 s, the 177 epochs of BENCHMARKS.md spent about 190 s of 540
    outside training (data, 7 evaluations and 177 such writes, not timed apart). The state
    is copied to the CPU first (a memcpy, or one device-to-host copy), so training goes on
    while the file is written. One write is in flight at a time; `wait()` re-raises a
    failed write. A log row appears only after its checkpoint is in place, so the log never
    runs ahead of what `--resume` can load. As a context manager it waits on exit, also
    when training failed (then a failed write is logged, not raised over that error).
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, ckpt_path: Path, state: dict[str, Any], log_path: Path, row: dict[str, Any]) -> None:
        self.wait()
        snapshot = cpu_snapshot(state)
        self._thread = threading.Thread(target=self._write, args=(ckpt_path, snapshot, log_path, row),
                                        name="checkpoint-writer", daemon=True)
        self._thread.start()

    def _write(self, ckpt_path: Path, state: dict[str, Any], log_path: Path, row: dict[str, Any]) -> None:
        try:
            save_checkpoint(ckpt_path, state)
            append_log_row(log_path, row)
        except BaseException as err:  # re-raised in the training thread by wait()
            self._error = err

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def __enter__(self) -> "CheckpointWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.wait()
            return
        try:
            self.wait()  # the last good checkpoint is complete before the error leaves fit()
        except BaseException as err:  # noqa: BLE001 - the training error is the one to report
            log.error("the last checkpoint write also failed: %s", err)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- the trainer ----------------------------------------------------------------------------------------

@dataclass
class FitData:
    """What a run trains on and is evaluated with (`Trainer._load_data`)."""

    train: Split
    test: Split | None  # the labelled eval split, when there is one
    bank: Split | None  # the kNN bank, on rank 0 only
    source: continual.Source | None  # --resume-from
    replayed: np.ndarray | None  # the source's replayed images
    pixels: np.ndarray  # the training images: train, then replayed; (N, R, R, 3) uint8


@dataclass
class FitState:
    """What fit()'s steps share: built by `_prepare`, advanced by `_train_epoch` and `_end_epoch`."""

    method: Method
    model: nn.Module  # the method, or its DistributedDataParallel wrapper
    penalty: nn.Module | None
    images: torch.Tensor  # `FitData.pixels` on the device, (N, 3, R, R) uint8
    augment: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]
    optimizer: torch.optim.Optimizer
    shared: torch.Generator
    local: torch.Generator
    calibrate: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]
    per_rank: int
    steps_per_epoch: int
    epochs: int
    t_budget: float  # when the time budget started (moved back by the seconds spent before a resume)
    schedule: CosineSchedule
    scheduler: torch.optim.lr_scheduler.LambdaLR = field(init=False)
    budget: BudgetState = field(default_factory=BudgetState)
    epoch: int = 0  # epochs completed
    images_seen: int = 0
    wall: float = 0.0
    steps_run: int = 0  # by this process
    t_timed: float = 0.0  # when the time budget's timed steps began
    last_row: dict[str, Any] = field(default_factory=dict)
    frozen: list[nn.Module] = field(default_factory=list)  # --freeze-stages: the modules that never train


class Trainer:
    """Runs one pretraining job into RUN_DIR; `fit()` returns metrics.json's content."""

    def __init__(self, cfg: PretrainConfig, run_dir: str | Path, resume: bool = False,
                 progress: bool = True) -> None:
        self.run = RunDir(run_dir)
        self.run_dir = self.run.path
        self.resume = resume
        self.progress = progress
        if resume:
            if not self.run.config.is_file():
                raise RunDirError(f"{self.run_dir}: nothing to resume (no {CONFIG})")
            cfg = PretrainConfig.load(self.run.config)
        elif self.run.pretrain_state() != "fresh":
            raise RunDirError(f"{self.run_dir} already holds a run: pass --resume to continue it or choose another --out")
        self.cfg = cfg
        self.device = select_device(cfg.device)
        self.dist = init_distributed(self.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.preprocess = preprocess_of(cfg)
        self.compile_result: CompileResult | None = None  # set by fit() under --compile
        self.init_record: dict[str, Any] | None = None  # what --init loaded (config.json's edgezoo block)

    # -- building blocks
    def _build(self, num_samples: int) -> Method:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        backbone = cfg.create_backbone()
        if cfg.init:  # before any checkpoint: a resumed run's own weights replace these
            self.init_record = load_init(backbone, cfg.init, cfg.architecture)
        embed = embedding_dim(backbone, cfg.img_size)
        method = build_method(cfg.method, cfg=cfg, backbone=backbone, embed_dim=embed, num_samples=num_samples,
                              gather=Gather(self.dist.world_size, self.dist.rank))
        if self.dist.world_size > 1:
            method = sync_batchnorm(method, self.device)
        method.to(self.device)
        if self.channels_last:
            method.backbone.to(memory_format=torch.channels_last)
        if self.device.type == "cpu":
            use_one_pixel_convs(method.backbone)  # oneDNN is slow on 1x1 maps; cuDNN is not
        return method

    @property
    def channels_last(self) -> bool:
        """channels_last pays on CUDA and on the CPU (oneDNN convolutions: 1.2x faster steps on 2 cores)."""
        return self.cfg.channels_last and self.device.type in ("cuda", "cpu")

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """An input batch in the backbone's memory format."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _optimizer(self, method: Method) -> torch.optim.Optimizer:
        cfg = self.cfg
        params = [p for n, p in method.named_parameters() if p.requires_grad]
        kwargs: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
        if self.device.type == "cuda":
            kwargs["fused"] = True
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(params, **kwargs)
        return torch.optim.SGD(params, momentum=cfg.momentum, **kwargs)

    def _calibration_batches(self, images: torch.Tensor, batch: int,
                      augment: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None,
                      generator: torch.Generator | None = None,
                      ) -> Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
        """Calibration batches over every row (the last partial batch too).

        Centre crop and normalise, or one augmented view per image when `augment` is given.
        """
        world, rank = self.dist.world_size, self.dist.rank

        def gen() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            n = images.shape[0]
            for i in range(0, n, batch):
                i = min(i, max(0, n - 2 * world))  # never a shard of one: BatchNorm runs in train mode here
                rows = torch.arange(i, min(i + batch, n), device=self.device)
                if world > 1:  # this rank's equal-sized shard (the last one padded by repeating rows)
                    per = -(-rows.numel() // world)
                    rows = torch.cat([rows, rows[-1:].expand(per * world - rows.numel())])[rank * per:(rank + 1) * per]
                x = augment(images[rows], generator) if augment is not None else \
                    center_crop_normalize(images[rows], self.preprocess)
                x = self._layout(x)
                with self._autocast():
                    yield x, rows

        return gen

    def _autocast(self):
        enabled = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    # -- evaluation
    def evaluate(self, backbone: nn.Module, bank: Split, test: Split | None) -> dict[str, float | None]:
        cfg = self.cfg
        with eager(backbone):
            return knn_protocol(backbone, bank.images, bank.labels, test.images if test else None,
                                test.labels if test else None, self.preprocess, cfg.knn_k, cfg.knn_t, self.device,
                                amp=cfg.amp and self.device.type == "cuda")

    def _compile(self, method: Method, images: torch.Tensor, augment: Callable, per_rank: int) -> None:
        """torch.compile the backbone, probed with views of a training batch (eager if that fails)."""
        gen = torch.Generator(device=self.device).manual_seed(0)  # the run's own generators stay untouched
        views = [self._layout(augment(images[:per_rank], gen)) for _ in range(method.num_views)]
        self.compile_result = compile_backbone(method.backbone, self.cfg.compile_mode, views,
                                               amp=self.cfg.amp and self.device.type == "cuda")

    # -- the loop: fit() in named steps
    def fit(self) -> dict[str, Any]:
        if method_class(self.cfg.method).cached:
            from pretrain.readout import fit_cached

            return fit_cached(self)
        t_fit = time.perf_counter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main and not self.resume:
            self.cfg.save(self.run.config)
        data = self._load_data()
        st = self._prepare(data)
        with CheckpointWriter() as writer:
            while st.epoch < st.epochs:
                row = self._train_epoch(st, data)
                self._end_epoch(st, data, row, writer)
        metrics: dict[str, Any] = {}
        if self.dist.is_main:
            if data.source is not None:
                continual.write_lineage(self.run_dir, data.source, self.cfg.to_dict(), len(data.train.images),
                                        0 if data.replayed is None else len(data.replayed))
            metrics = self._finish(st.method, st.last_row, st.epochs, st.budget.summary(self._now() - st.t_budget),
                                   st.images_seen, st.wall, len(data.bank.images) if data.bank is not None else None,
                                   time.perf_counter() - t_fit)
        end_distributed(self.dist)
        return metrics

    def _load_data(self) -> FitData:
        """Decode the training split (with the continual source's replayed images), the test split and the kNN
        bank; record them in data.json and carry the replay reservoir forward."""
        cfg, run_dir, main = self.cfg, self.run_dir, self.dist.is_main
        train = load_train_split(cfg, self.preprocess)
        eval_spec = cfg.eval_data or datasets.eval_spec(cfg.data)
        test = load_split(eval_spec, self.preprocess) if eval_spec and train.files.labels is not None else None
        if main:
            write_data_record(run_dir, cfg, train, eval_spec if test is not None else None)
        source = continual.resolve_source(cfg.resume_from) if cfg.resume_from else None
        replayed = continual.replay_images(run_dir, source, self.resume) if source and cfg.replay > 0 else None
        if main and cfg.replay > 0:
            continual.carry_reservoir(run_dir, source, cfg.replay, train.images, cfg.seed, self.resume)
        pixels = train.images if replayed is None else np.concatenate([train.images, replayed])
        log.info("training on %d images from %s (%s)%s, eval: %s", len(pixels), train.files.root, cfg.data,
                 f" + {len(replayed)} replayed" if replayed is not None else "", eval_spec or "none")
        bank = load_knn_bank(cfg, self.preprocess) if main else None
        return FitData(train, test, bank, source, replayed, pixels)

    def _prepare(self, data: FitData) -> FitState:
        """Build the method (and penalty), optimizer and schedule; resume the checkpoint or calibrate; compile;
        wrap in DDP; start (or trim) log.csv."""
        cfg, dev, world = self.cfg, self.device, self.dist.world_size
        # The time budget starts here: unpacking and decoding the data (a fresh clone's one-time cost,
        # seconds once cached) would otherwise make the same recipe train fewer epochs the first time.
        t_budget = time.perf_counter()
        n = len(data.pixels)
        method = self._build(n)
        penalty = None
        if data.source is not None:
            continual.load_start_weights(method, data.source)
            penalty = self._penalty(method, data.source, data.train)
        images = torch.from_numpy(data.pixels).permute(0, 3, 1, 2).contiguous().to(dev)
        augment = build_augment(AugmentParams.from_config(cfg, self.preprocess.mean, self.preprocess.std), cfg.augment)
        per_rank = max(2, min(cfg.batch_size, n) // world)
        steps_per_epoch = max(1, n // (per_rank * world))
        # shared: identical on every rank (data order, bank negatives); local: per rank (augmentation, CutMix).
        shared = torch.Generator(device=dev).manual_seed(cfg.seed)
        local = torch.Generator(device=dev).manual_seed(cfg.seed * 1000 + 1 + self.dist.rank)
        try:
            frozen = first_stages(method.backbone, cfg.freeze_stages)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        freeze(frozen)  # before the optimizer: it holds only what trains
        st = FitState(method=method, model=method, penalty=penalty, images=images, augment=augment,
                      optimizer=self._optimizer(method), shared=shared, local=local, frozen=frozen,
                      calibrate=self._calibration_batches(images, 2 * cfg.batch_size,
                                                          augment if cfg.calibrate_view == "augmented" else None,
                                                          local),
                      per_rank=per_rank, steps_per_epoch=steps_per_epoch,
                      epochs=cfg.epochs,  # a time budget re-plans it (pretrain/budget.py)
                      t_budget=t_budget,
                      schedule=CosineSchedule(steps_per_epoch * cfg.epochs, cfg.warmup_epochs * steps_per_epoch))
        # A function, not the schedule itself: LambdaLR would pickle a callable object's state into its own.
        st.scheduler = torch.optim.lr_scheduler.LambdaLR(st.optimizer, lambda step: st.schedule(step))
        self._resume_or_calibrate(st)
        if cfg.compile:
            self._compile(method, images, augment, per_rank)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # The bank is kept identical by all-gathers, not by DDP's buffer broadcast; a frozen backbone
            # (--head-warmup-steps) gets no gradients for a while; frozen stages (--freeze-stages) need nothing:
            # they are frozen before this wrap, which registers only what requires gradients.
            st.model = DDP(method, broadcast_buffers=False, device_ids=[dev.index] if dev.type == "cuda" else None,
                           find_unused_parameters=cfg.head_warmup_steps > 0)
        if self.dist.is_main and st.epoch == 0:
            atomic_write_text(self.run.log, ",".join(LOG_COLUMNS) + "\n")
        elif self.dist.is_main:
            trim_log(self.run.log, st.epoch)
        return st

    def _resume_or_calibrate(self, st: FitState) -> None:
        """Under --resume, the state of the last checkpoint; else the method's setup (calibration), timed."""
        path = self.run.checkpoint
        if self.resume and path.exists():
            state = load_checkpoint(path)
            st.method.load_state_dict(state["model"])
            st.optimizer.load_state_dict(state["optimizer"])
            st.scheduler.load_state_dict(state["scheduler"])
            st.shared.set_state(state["shared_rng"])
            st.local.set_state(state["local_rng"][self.dist.rank] if isinstance(state["local_rng"], list)
                               else state["local_rng"])
            st.epoch, st.images_seen, st.wall = state["epoch"], state["images_seen"], state["wall_time_s"]
            st.budget, schedule = BudgetState.from_checkpoint(state)
            if st.budget.plan is not None:
                st.epochs = st.budget.plan.epochs
                st.t_budget -= st.budget.spent_before_s
                st.schedule = schedule or CosineSchedule(st.steps_per_epoch * st.epochs, st.schedule.warmup)
            log.info("resumed %s at epoch %d", self.run_dir, st.epoch)
        else:
            t0 = time.perf_counter()
            self._calibrate(st)
            st.wall += time.perf_counter() - t0

    def _checkpoint_state(self, st: FitState) -> dict[str, Any]:
        """What `_resume_or_calibrate` restores (every rank's augmentation RNG: a collective call)."""
        return {"epoch": st.epoch + 1, "model": st.method.state_dict(), "optimizer": st.optimizer.state_dict(),
                "scheduler": st.scheduler.state_dict(), "shared_rng": st.shared.get_state(),
                "local_rng": self._gather_rng(st.local), "images_seen": st.images_seen, "wall_time_s": st.wall,
                "budget": st.budget.to_checkpoint(self._now() - st.t_budget, st.schedule) if st.budget.plan else None}

    def _train_epoch(self, st: FitState, data: FitData) -> dict[str, Any]:
        """One epoch's steps (a time budget is planned after its first timed steps); the epoch's log row."""
        cfg, dev, epoch = self.cfg, self.device, st.epoch
        images_per_step = st.per_rank * self.dist.world_size
        self._set_modes(st, epoch * st.steps_per_epoch)
        t_epoch = self._now()  # the budget's clock (a test's virtual one)
        if epoch > 0 and cfg.recalibrate_every and epoch % cfg.recalibrate_every == 0:
            self._calibrate(st)  # rows refreshed once per epoch lag a fast-moving network
        perm = torch.randperm(len(data.pixels), device=dev, generator=st.shared)
        loss_sum = torch.zeros((), device=dev)
        bar = self._bar(epoch, st.epochs, st.steps_per_epoch)
        steps = self._epoch_steps(st)
        for step in range(st.steps_per_epoch):
            if step == steps:
                break
            if cfg.time_budget and st.budget.plan is None and st.steps_run == WARMUP_STEPS:
                st.t_timed = self._now()
            if epoch * st.steps_per_epoch + step == cfg.head_warmup_steps > 0:
                self._set_modes(st, cfg.head_warmup_steps)
            start = step * images_per_step + self.dist.rank * st.per_rank
            loss_sum += self._train_step(st, perm[start:start + st.per_rank])
            if dev.type == "cpu" or (step + 1) % 50 == 0:
                self._check_finite(loss_sum, epoch, step)
            st.steps_run += 1
            if cfg.time_budget and st.budget.plan is None and st.steps_run == WARMUP_STEPS + TIMED_STEPS:
                self._replan(st, data, (self._now() - st.t_timed) / TIMED_STEPS, epoch * st.steps_per_epoch + step + 1,
                             "timed steps")
                steps = max(step + 1, self._epoch_steps(st))
            if st.budget.plan is not None and (step + 1) % DEADLINE_EVERY == 0 and self._deadline_due(st):
                steps = self._deadline(st, data, t_epoch, step + 1, steps)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{(step + 1) * images_per_step / (time.perf_counter() - t_epoch):.0f} img/s")
        if bar is not None:
            bar.close()
        self._check_finite(loss_sum, epoch, steps - 1)
        epoch_time = self._now() - t_epoch
        st.wall += epoch_time
        st.images_seen += steps * images_per_step
        if st.budget.plan is not None and steps == st.steps_per_epoch:  # (a cut epoch is the last)
            # before _end_epoch, which evaluates the epoch the plan makes the last
            self._replan(st, data, epoch_time / steps, (epoch + 1) * steps, "last epoch")
        return {"epoch": epoch + 1, "loss": float(loss_sum) / steps, "lr": st.optimizer.param_groups[0]["lr"],
                "images_per_s": steps * images_per_step / epoch_time, "knn_top1": None, "rankme": None,
                "wall_time_s": st.wall}

    def _calibrate(self, st: FitState) -> None:
        """The method's setup (effssl's feature calibration runs BatchNorm in train mode); --freeze-bn keeps the
        backbone's running statistics as they were, --freeze-stages those of its frozen stages."""
        kept_in = [st.method.backbone] if self.cfg.freeze_bn else st.frozen
        stats = [b for module in kept_in for b in module.buffers()]  # BatchNorm's, its batch count included
        kept = [b.clone() for b in stats]
        st.method.setup(st.calibrate)
        with torch.no_grad():
            for buffer, before in zip(stats, kept):
                buffer.copy_(before)

    def _set_modes(self, st: FitState, step: int) -> None:
        """Train mode, except what --head-warmup-steps (before `step` reaches it: the whole backbone, frozen),
        --freeze-bn (its BatchNorm layers) and --freeze-stages (its first stages) keep as they were."""
        st.method.train()
        frozen = step < self.cfg.head_warmup_steps
        backbone = st.method.backbone
        backbone.requires_grad_(not frozen)
        if frozen:
            backbone.eval()
        elif self.cfg.freeze_bn:
            for module in backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        freeze(st.frozen)

    def _train_step(self, st: FitState, idx: torch.Tensor) -> torch.Tensor:
        """One optimisation step on the images `idx`; the method's loss (without the penalty), detached."""
        batch = st.images[idx]
        step_begin(self.compile_result)
        views = [self._layout(st.augment(batch, st.local)) for _ in range(st.method.num_views)]
        with self._autocast():
            out = st.model(views, idx, st.shared, st.local)
        loss = out.loss if st.penalty is None else out.loss + st.penalty(st.method.backbone)
        st.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        st.optimizer.step()
        st.scheduler.step()
        return out.loss.detach()

    def _end_epoch(self, st: FitState, data: FitData, row: dict[str, Any], writer: CheckpointWriter) -> None:
        """Evaluate when due (rank 0), log, and hand the checkpoint and log row to the writer."""
        cfg, main = self.cfg, self.dist.is_main
        last = st.epoch + 1 == st.epochs
        if last and cfg.wise_alpha < 1.0:  # the final evaluation, the checkpoint and the saved weights: averaged
            self._average_with_init(st.method.backbone)
        if main and (last or (cfg.eval_every and (st.epoch + 1) % cfg.eval_every == 0)):
            row.update(self.evaluate(st.method.backbone, data.bank, data.test))
        st.last_row = row
        log.info("epoch %d/%d loss %.4f lr %.4f %.0f img/s%s", st.epoch + 1, st.epochs, row["loss"], row["lr"],
                 row["images_per_s"], f" knn {row['knn_top1']:.4f}" if row["knn_top1"] is not None else "")
        if main:
            writer.submit(self.run.checkpoint, self._checkpoint_state(st), self.run.log, row)
        elif self.dist.world_size > 1:
            self._gather_rng(st.local)
        st.epoch += 1

    def _average_with_init(self, backbone: nn.Module) -> None:
        """WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022): the trained weights
        averaged in place with the --init weights, loaded again (a resumed run holds no copy). Once, after the
        last step: the last checkpoint holds the average, so a resume after it does not average twice."""
        cfg, alpha = self.cfg, self.cfg.wise_alpha
        init = starting_backbone(cfg)[0].state_dict()
        with torch.no_grad():
            for name, value in backbone.state_dict().items():
                if value.is_floating_point():
                    value.mul_(alpha).add_(init[name].to(value.device, value.dtype), alpha=1.0 - alpha)
        log.info("WiSE-FT: saved weights = %.2f x trained + %.2f x %s", alpha, 1.0 - alpha, cfg.init)

    def _penalty(self, method: Method, source: "continual.Source", train: Split) -> nn.Module | None:
        """L2-SP or MAS toward the starting backbone (built before any checkpoint is loaded)."""
        cfg = self.cfg
        if not cfg.reg or cfg.reg_weight <= 0:
            return None
        importance = None
        if cfg.reg == "mas":
            prev = self._previous_chunk(source, train)
            importance = continual.mas_importance_of(source, method.backbone, prev, self.preprocess, self.device)
        return AnchorPenalty(method.backbone, cfg.reg_weight, importance).to(self.device)

    def _previous_chunk(self, source: "continual.Source", train: Split) -> np.ndarray:
        """The source's own training images (MAS importance is measured on them), else its replay."""
        last = source.lineage[-1] if source.lineage else {}
        if source.run_dir is not None and last.get("data"):
            return load_split(last["data"], self.preprocess, last.get("max_images"),
                              int(source.config.get("seed", 0))).images
        replay = continual.Reservoir.load(self.run_dir, name=REPLAY_IN)
        if len(replay):
            return replay.images
        raise ConfigError(f"{source.spec}: no earlier images to estimate MAS importance on; use --reg l2sp")

    def _now(self) -> float:
        """A wall-clock reading after the device has finished the work queued so far."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _eval_s(self, st: FitState, data: FitData, step_s: float) -> float:
        """Estimated seconds of one kNN evaluation, which embeds the bank and the test split: a forward per image,
        half a training step's share of it. A forward is about a third of a step (no backward, no augmentation);
        the rest is margin for a machine whose load rises during the evaluation (a zoo entry's took 53 s where a
        third of a step said 33). It follows the steps' speed, so a machine busy at the start does not keep it
        expensive. (The setup's calibration pass is no measure of it: it ran once, cold, often while the machine
        was busiest; on idle cores it put the evaluation at 31 s where it took 5.)"""
        per_image = step_s / (2 * st.per_rank)
        return per_image * sum(len(s.images) for s in (data.bank, data.test) if s is not None)

    def _agreed(self, value: int) -> int:
        """Rank 0's `value` on every rank (each measures its own speed; all must train the same steps)."""
        if self.dist.world_size == 1:
            return value
        import torch.distributed as dist

        agreed = torch.tensor([value], device=self.device)
        dist.broadcast(agreed, src=0)
        return int(agreed.item())

    def _replan(self, st: FitState, data: FitData, step_s: float, steps_done: int, basis: str) -> None:
        """Plan the epoch count from `step_s` and lay the schedule's rest over it."""
        cfg = self.cfg
        plan = plan_epochs(cfg.time_budget, elapsed_s=self._now() - st.t_budget, steps_done=steps_done,
                           steps_per_epoch=st.steps_per_epoch, step_s=step_s,
                           eval_s=self._eval_s(st, data, step_s), max_epochs=cfg.epochs, eval_every=cfg.eval_every,
                           basis=basis)
        last = self._agreed(-1 if plan.last_epoch_steps is None else plan.last_epoch_steps)
        plan = dataclasses.replace(plan, epochs=self._agreed(plan.epochs), last_epoch_steps=None if last < 0 else last)
        st.budget.add(plan, st.per_rank * self.dist.world_size / step_s)
        st.epochs = plan.epochs
        self._relay_schedule(st, steps_done, planned_steps(plan.epochs, st.steps_per_epoch, plan.last_epoch_steps))

    @staticmethod
    def _epoch_steps(st: FitState) -> int:
        """The steps of the epoch in progress: fewer when the budget's plan cuts it, as the last."""
        plan = st.budget.plan
        if plan is not None and plan.last_epoch_steps is not None and st.epoch + 1 == st.epochs:
            return plan.last_epoch_steps
        return st.steps_per_epoch

    @staticmethod
    def _relay_schedule(st: FitState, step: int, total: int) -> None:
        """Re-lay the cosine to end at `total`, and give the optimizer the new rate for `step` at once (LambdaLR
        set it from the old plan when it last stepped; the optimizer's state keeps it for --resume)."""
        st.schedule.replan(step, total)
        for group, base in zip(st.optimizer.param_groups, st.scheduler.base_lrs):
            group["lr"] = base * st.schedule(step)

    def _deadline_due(self, st: FitState) -> bool:
        """Whether this epoch checks its deadline. On the CPU a check costs nothing: every epoch does, so a slowdown
        in an earlier epoch is cut there too. On a GPU a check synchronises the device (and, under DDP, the ranks),
        so only the last two planned epochs check; earlier ones are left to the epoch-end re-plan. The device type
        and the planned epochs are the same on every rank, so all ranks agree."""
        return self.device.type != "cuda" or st.epoch + 2 >= st.epochs

    def _deadline(self, st: FitState, data: FitData, t_epoch: float, step: int, steps: int) -> int:
        """After `step` of this epoch's `steps`: the steps that end inside the budget at this epoch's speed so far.

        In the last planned epoch: fewer when it slowed down, more (up to a whole epoch) when it sped up. In an
        earlier one: a slowdown so deep that this epoch cannot end with the evaluation inside the budget makes it
        the last, cut (otherwise nothing changes here: the epoch-end re-plan adjusts the epochs to come). The
        plan and the schedule follow a change."""
        now = self._now()
        step_s, elapsed = (now - t_epoch) / step, now - st.t_budget
        eval_s = self._eval_s(st, data, step_s)
        fit = self._agreed(fit_last_epoch(self.cfg.time_budget, elapsed_s=elapsed, step=step,
                                          steps_per_epoch=st.steps_per_epoch, step_s=step_s, eval_s=eval_s))
        last = st.epoch + 1 == st.epochs
        if fit == steps or (not last and fit == st.steps_per_epoch):
            return steps
        st.epochs = st.epoch + 1
        done = st.epoch * st.steps_per_epoch
        st.budget.add(BudgetPlan(self.cfg.time_budget, st.epochs, step_s, eval_s,
                                 elapsed + (fit - step) * step_s + eval_s + FINISH_S, at_epoch=st.epoch,
                                 elapsed_s=elapsed, basis="this epoch",
                                 last_epoch_steps=None if fit == st.steps_per_epoch else fit),
                      st.per_rank * self.dist.world_size / step_s)
        self._relay_schedule(st, done + step, done + fit)
        return fit

    def _gather_rng(self, local: torch.Generator) -> torch.Tensor | list[torch.Tensor]:
        """Every rank's augmentation RNG state, so a resumed DDP run draws the same crops."""
        state = local.get_state()
        if self.dist.world_size == 1:
            return state
        import torch.distributed as dist

        out: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(out, state)
        return out

    def _check_finite(self, loss_sum: torch.Tensor, epoch: int, step: int) -> None:
        if not bool(torch.isfinite(loss_sum)):
            raise NonFiniteLossError(
                f"loss became non-finite at epoch {epoch + 1}, step {step + 1}: training stopped. "
                f"The last good checkpoint ({self.run.checkpoint}, if any) is intact; "
                "lower --lr or check the data, then --resume.")

    def _bar(self, epoch: int, epochs: int, total: int):
        if not self.progress or not self.dist.is_main:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", leave=False, unit="step")

    def _init_provenance(self) -> dict[str, Any]:
        """config.json's ``edgezoo.init``: what --init loaded, and the WiSE-FT weight when the saved weights are an
        average with it."""
        alpha = self.cfg.wise_alpha
        return {**(self.init_record or {}), **({"wise_ft_alpha": alpha} if alpha < 1.0 else {})}

    def _finish(self, method: Method, last_row: dict[str, Any], epochs: int, budget: dict[str, Any] | None,
                images_seen: int, wall: float, knn_bank: int | None, elapsed: float) -> dict[str, Any]:
        cfg = self.cfg
        arch = cfg.architecture
        backbone = method.backbone
        config = backbone_config(backbone, arch, method.embed_dim, self.preprocess, model_args=cfg.model_args,
                                 extra={"method": cfg.method, "epochs": epochs, "data": cfg.data,
                                        **({"init": self._init_provenance()} if self.init_record else {}),
                                        **method.provenance()})
        save_backbone(backbone, self.run.backbone, config)
        metrics = Metrics(
            method=cfg.method, method_info=describe_method(cfg), model=cfg.model, architecture=arch,
            model_args=cfg.model_args, small_stem=cfg.small_stem,
            img_size=cfg.img_size, epochs=epochs, batch_size=cfg.batch_size,
            time_budget=budget,
            num_images=method.num_samples, images_seen=images_seen, wall_time_s=round(wall, 3),
            elapsed_s=round(elapsed, 3),
            images_per_sec=round(images_seen / wall, 2) if wall > 0 else None,
            peak_mem_mb=round(peak_memory_mb(self.device), 1), device=str(self.device),
            device_name=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else
            f"cpu ({torch.get_num_threads()} threads)",
            knn_top1=last_row.get("knn_top1"), knn_bank=knn_bank, rankme=last_row.get("rankme"),
            embed_dim=method.embed_dim, final_loss=last_row.get("loss"),
            torch_version=torch.__version__,
            compile=self.compile_result.as_dict() if self.compile_result else None,
        )
        record = metrics.to_json()
        atomic_write_json(self.run.metrics, record)
        return record
