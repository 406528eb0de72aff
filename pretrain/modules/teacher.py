"""The frozen teacher of ``--method distill``: any ``--init`` source as a timm model, or an ONNX file.

It embeds the student's own augmented view, as consistent teaching asks (Beyer et al., "Knowledge distillation:
A good teacher is patient and consistent", CVPR 2022: a teacher that sees another crop than the student, or
targets precomputed on the clean image, distil worse), in the teacher's own preprocessing: the student's
normalised view is resized to the teacher's input size and normalised with the teacher's mean/std. Both
normalisations are per-channel affine maps and bilinear resizing commutes with them (its weights sum to 1), so
``x_t = resize(x_s) * std_s / std_t + (mean_s - mean_t) / std_t``: one resize, one multiply-add. The view holds
no more detail than the student's input (the trainer stores images at the student's size): a larger teacher
input only restores the object scale the teacher was trained at.

Nothing of it is trained or saved: it is not a submodule of the method (so not in its state_dict, the optimizer,
DistributedDataParallel, SyncBatchNorm conversion or ``.to()``), its parameters do not require grad, it stays in
eval mode and runs under inference_mode. A resumed run rebuilds it from --teacher; `record` (source, sha256, ...)
is what the checkpoint compares, so a different teacher is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from zoo.errors import ConfigError
from zoo.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

if TYPE_CHECKING:  # pragma: no cover
    from pretrain.init import InitSource

log = logging.getLogger(__name__)

FLAG = "--teacher"
ONNX_SUFFIX = ".onnx"


class Teacher:
    """Embeds a batch of the student's normalised views: (B, 3, s, s) -> (B, D) unit vectors, no gradient."""

    def __init__(self, record: dict[str, Any], preprocess: Preprocess, student: Preprocess) -> None:
        self.record = record
        self.img_size = preprocess.img_size
        self.preprocess = preprocess
        self.dim = int(record["dim"])
        s_mean, s_std = torch.tensor(student.mean), torch.tensor(student.std)
        t_mean, t_std = torch.tensor(preprocess.mean), torch.tensor(preprocess.std)
        self._scale = (s_std / t_std).view(1, 3, 1, 1)
        self._shift = ((s_mean - t_mean) / t_std).view(1, 3, 1, 1)

    def teacher_input(self, views: torch.Tensor) -> torch.Tensor:
        """The student's normalised views as the teacher's input: resized, then re-normalised (float32)."""
        x = views.detach().float()
        if x.shape[-2:] != (self.img_size, self.img_size):
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.img_size)
        if self._scale.device != x.device:  # once: the views' device is known only now
            self._scale, self._shift = self._scale.to(x.device), self._shift.to(x.device)
        return x * self._scale + self._shift

    def embed(self, views: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 embeddings on the views' device; an ordinary tensor (it may be saved for backward)."""
        with torch.inference_mode():
            z = F.normalize(self._forward(self.teacher_input(views)).float(), dim=1)
        return z.clone()  # out of inference mode: the student's loss keeps it for its backward

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TorchTeacher(Teacher):
    """A timm backbone (num_classes=0), frozen, in eval mode and channels_last."""

    def __init__(self, model: torch.nn.Module, record: dict[str, Any], preprocess: Preprocess,
                 student: Preprocess) -> None:
        super().__init__(record, preprocess, student)
        self.model = model.eval().requires_grad_(False).to(memory_format=torch.channels_last)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if next(self.model.parameters()).device != x.device:
            self.model.to(x.device)
        return self.model(x.contiguous(memory_format=torch.channels_last))


class OnnxTeacher(Teacher):
    """An ONNX embedding model run with onnxruntime on the CPU (its output moved to the views' device)."""

    def __init__(self, session: Any, record: dict[str, Any], preprocess: Preprocess, student: Preprocess) -> None:
        super().__init__(record, preprocess, student)
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.run(np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32))
        return torch.from_numpy(out).to(x.device)


def describe_teacher(spec: str) -> "InitSource | Path":
    """What --teacher names, checked before any data is read or anything written: the ``.onnx`` file, or the
    ``--init`` source (which must name its architecture: the teacher is built from it). No weights are fetched."""
    if Path(spec).suffix == ONNX_SUFFIX:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(f"{FLAG} {spec}: no such {ONNX_SUFFIX} file")
        return path
    from pretrain.init import describe_init

    source = describe_init(spec, FLAG)
    if not source.architecture:
        raise ConfigError(f"{FLAG} {spec}: nothing names its architecture (a weights file needs a config.json "
                          "beside it); pass a RUN_DIR, a timm backbone folder, a timm tag, hf-hub:ORG/NAME, a "
                          f"published org/name or an {ONNX_SUFFIX} file")
    return source


def build_teacher(spec: str, student: Preprocess, img_size: int | None = None, threads: int | None = None) -> Teacher:
    """The teacher `spec` names (an ``--init`` source, or an ``.onnx`` file), at `img_size` (None: its own size)."""
    source = describe_teacher(spec)
    if isinstance(source, Path):
        return _onnx_teacher(spec, source, student, img_size, threads)
    from pretrain.init import load_source
    from zoo.backbones import create_backbone, embedding_dim, required_input_size

    assert source.architecture is not None  # describe_teacher refuses a source without one
    model = create_backbone(source.architecture, **source.model_args)
    record = load_source(model, source, source.architecture)
    own = Preprocess.from_pretrained_cfg(source.pretrained_cfg or model.pretrained_cfg)
    pre = _at_size(own, img_size)
    fixed = required_input_size(model)
    if fixed is not None and fixed != (pre.img_size, pre.img_size):
        raise ConfigError(f"{FLAG} {spec} takes a fixed {fixed[0]}x{fixed[1]} input: set --teacher-img-size "
                          f"{fixed[0]} (or leave it unset)")
    record.update(dim=embedding_dim(model, pre.img_size), **_preprocess_record(pre))
    return TorchTeacher(model, record, pre, student)


def _at_size(pre: Preprocess, img_size: int | None) -> Preprocess:
    return pre if img_size is None else Preprocess(img_size, pre.mean, pre.std, pre.crop_pct, pre.interpolation)


def _preprocess_record(pre: Preprocess) -> dict[str, Any]:
    return {"img_size": pre.img_size, "mean": list(pre.mean), "std": list(pre.std)}


def _onnx_teacher(spec: str, path: Path, student: Preprocess, img_size: int | None, threads: int | None,
                  ) -> OnnxTeacher:
    """An ONNX teacher: preprocessing from preprocess.json (an edgezoo export) or ../config.json (a published
    repo) beside it, else ImageNet's mean/std; input size from --teacher-img-size, that file, or the model."""
    from zoo.edge import open_session, preprocess_beside
    from zoo.manifest import sha256_file

    session = open_session(path, threads=threads)
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ConfigError(f"{FLAG} {spec}: expected one (N, 3, S, S) image input, got "
                          f"{[(i.name, i.shape) for i in inputs]}")
    height, width = inputs[0].shape[2:]
    fixed = height if isinstance(height, int) and height == width else None
    stored = preprocess_beside(path)
    if stored is None:
        size = img_size or fixed
        if size is None:
            raise ConfigError(f"{FLAG} {spec}: its input size is not fixed and no preprocess.json is beside it: "
                              "set --teacher-img-size")
        log.warning("%s %s: no preprocess.json or ../config.json beside it: assuming ImageNet's mean/std", FLAG, spec)
        stored = Preprocess(size, IMAGENET_MEAN, IMAGENET_STD)
    pre = _at_size(stored, img_size)
    if any(isinstance(d, int) and d != pre.img_size for d in (height, width)):
        raise ConfigError(f"{FLAG} {spec} takes a fixed {height}x{width} input, not {pre.img_size}: set "
                          f"--teacher-img-size {height}")
    import onnxruntime

    record = {"source": spec, "kind": "onnx", "architecture": None, "file": path.name, "sha256": sha256_file(path),
              "license": None, "origin": f"the ONNX model {path.name} (onnxruntime {onnxruntime.__version__})",
              **_preprocess_record(pre)}
    teacher = OnnxTeacher(session, {**record, "dim": 0}, pre, student)
    zeros = np.zeros((1, 3, pre.img_size, pre.img_size), np.float32)
    teacher.dim = teacher.record["dim"] = int(teacher.run(zeros).shape[-1])
    log.info("%s %s: %s, %d-d embeddings at %d px", FLAG, spec, record["origin"], teacher.dim, pre.img_size)
    return teacher
