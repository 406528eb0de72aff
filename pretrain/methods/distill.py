"""SEED self-supervised distillation: a student learns a frozen teacher's embedding space from unlabeled images.

Fang et al., "SEED: Self-supervised Distillation For Visual Representation", ICLR 2021, arXiv:2101.04731. One
augmented view per image: the teacher embeds it (pretrain/modules/teacher.py: resized and re-normalised to the
teacher's own input), the student backbone + projector maps it to the teacher's dimension, and the student
matches the teacher's softmax over [own teacher embedding; a FIFO queue of earlier teacher embeddings]
(pretrain/modules/seed.py). The queue is then pushed with every rank's teacher embeddings, so it stays the same
on all ranks. Only the student's backbone is saved and exported; the teacher is rebuilt from --teacher.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from pretrain.budget import TIMED_STEPS, WARMUP_STEPS
from pretrain.config import PretrainConfig
from pretrain.data import preprocess_of
from pretrain.methods.base import Gather, Method, StepOutput
from pretrain.methods.info import Citation, MethodInfo
from pretrain.modules import EmbeddingQueue, ProjectionHead, SEEDLoss
from pretrain.modules.teacher import FLAG, Teacher, build_teacher
from zoo.errors import ConfigError
from zoo.public import public_json, public_path

log = logging.getLogger(__name__)

FANG_2021 = Citation(
    key="fang2021seed",
    text='Zhiyuan Fang, Jianfeng Wang, Lijuan Wang, Lei Zhang, Yezhou Yang and Zicheng Liu. "SEED: '
         'Self-supervised Distillation For Visual Representation." ICLR 2021, arXiv:2101.04731.',
    bibtex="@inproceedings{fang2021seed,\n"
           "  title     = {SEED: Self-supervised Distillation For Visual Representation},\n"
           "  author    = {Fang, Zhiyuan and Wang, Jianfeng and Wang, Lijuan and Zhang, Lei and Yang, Yezhou "
           "and Liu, Zicheng},\n"
           "  booktitle = {ICLR},\n"
           "  year      = {2021}\n}",
    arxiv="2101.04731")

# Steps (of this process) whose teacher share is measured: inside the time budget's timed steps (after its
# warm-up steps, which set up kernels), so a run long enough to be planned also reports the share.
PROBE_STEPS = range(WARMUP_STEPS, WARMUP_STEPS + TIMED_STEPS - 1)


class StepProbe:
    """The teacher's share of a training step, measured over PROBE_STEPS and logged once.

    A step is the time from one call of the method to the next (augmentation, both forwards, backward,
    optimizer); the median share is kept, so an epoch end (evaluation, checkpoint) in the window does not skew it.
    """

    def __init__(self) -> None:
        self.step = -1  # the step in progress
        self.last: float | None = None
        self.teacher_s = 0.0
        self.samples: list[tuple[float, float]] = []  # (teacher s, step s)

    @staticmethod
    def now(device: torch.device) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def begin(self, device: torch.device) -> None:
        """At the start of a step: closes the previous one's timing."""
        self.step += 1
        if self.step in PROBE_STEPS or self.step == PROBE_STEPS.stop:
            t = self.now(device)
            if self.last is not None:
                self.samples.append((self.teacher_s, t - self.last))
            self.last = t
        if self.step == PROBE_STEPS.stop:
            self.report()

    def embed(self, teacher: Teacher, x: torch.Tensor) -> torch.Tensor:
        if self.step not in PROBE_STEPS:
            return teacher.embed(x)
        t0 = self.now(x.device)
        out = teacher.embed(x)
        self.teacher_s = self.now(x.device) - t0
        return out

    def report(self) -> None:
        share = statistics.median(t / s for t, s in self.samples)
        log.info("the teacher takes %.0f%% of a training step (%.3f s of %.3f s, median of %d steps)%s", 100 * share,
                 statistics.median(t for t, _ in self.samples), statistics.median(s for _, s in self.samples),
                 len(self.samples), "; --teacher-img-size or an .onnx teacher cut it" if share > 0.5 else "")


class Distill(Method):
    name: ClassVar[str] = "distill"
    num_views: ClassVar[int] = 1
    info: ClassVar[MethodInfo] = MethodInfo(
        "SEED distillation", FANG_2021,
        ("teacher", "teacher_img_size", "distill_queue", "distill_temperature", "teacher_temperature",
         "proj_hidden_dim"))

    @classmethod
    def title(cls, cfg: PretrainConfig) -> str:
        return f"{cls.info.title} from {public_path(str(cfg.teacher))} (Fang et al. 2021)"

    def __init__(self, cfg: PretrainConfig, backbone: torch.nn.Module, embed_dim: int, num_samples: int,
                 gather: Gather | None = None) -> None:
        teacher = build_teacher(cfg.required_teacher, preprocess_of(cfg), cfg.teacher_img_size, cfg.threads)
        super().__init__(cfg, backbone, embed_dim, num_samples, gather)
        # The student's projector ends in the teacher's space (the base's, of --proj-dim, is replaced).
        self.projector = ProjectionHead(embed_dim, cfg.proj_hidden_dim, teacher.dim)
        self.queue = EmbeddingQueue(cfg.distill_queue, teacher.dim)
        self.loss_fn = SEEDLoss(cfg.distill_temperature, cfg.teacher_temperature)
        # Not an attribute nn.Module sees: not in state_dict, the optimizer, DDP, SyncBatchNorm or .to().
        self.__dict__["teacher"] = teacher
        self.__dict__["probe"] = StepProbe() if self.gather.rank == 0 else None
        log.info("%s %s: %d-d embeddings at %d px (the student's views are %d px)", FLAG, cfg.teacher, teacher.dim,
                 teacher.img_size, cfg.img_size)

    def provenance(self) -> dict[str, Any]:
        return {"teacher": public_json(self.teacher.record)}

    def get_extra_state(self) -> dict[str, Any]:
        """The teacher the checkpoint was trained against (source and sha256): a resume must use the same."""
        return {"teacher": {"source": self.teacher.record["source"], "sha256": self.teacher.record["sha256"]}}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        saved = (state or {}).get("teacher") or {}
        own = self.teacher.record
        if saved.get("sha256") != own["sha256"]:
            raise ConfigError(f"{FLAG} {own['source']}: its weights (sha256 {own['sha256'][:12]}...) are not the "
                              f"teacher this checkpoint was trained against ({saved.get('source')}, sha256 "
                              f"{str(saved.get('sha256'))[:12]}...): resume with that teacher, or start a new run")

    def training_step(self, views: list[torch.Tensor], idx: torch.Tensor,
                      shared: torch.Generator | None = None, local: torch.Generator | None = None) -> StepOutput:
        x = views[0]
        probe: StepProbe | None = self.probe
        if probe is not None:
            probe.begin(x.device)
        t = probe.embed(self.teacher, x) if probe is not None else self.teacher.embed(x)
        s = F.normalize(self.project(x).float(), dim=1)
        # A copy: the loss's backward needs the rows this step's push overwrites (SEED clones it too).
        loss = self.loss_fn(s, t, self.queue.embeddings.clone())
        self.queue.push(self.gather(t))  # after the loss: SEED scores the queue before this batch joins it
        return StepOutput(loss)
