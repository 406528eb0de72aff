"""The edge runtime: embed images with onnxruntime, numpy and Pillow only (never torch).

An export folder (``edgezoo export``) holds ``model.onnx``, ``model.int8.onnx``,
``model.ort`` and ``preprocess.json``; a published repo holds ``config.json`` at its
root and the models under ``onnx/``. Either way the preprocessing travels with
the model, so ``EdgeEmbedder(path).embed(images)`` reproduces the embeddings
that export validation checked against torch (same ``zoo.preprocess`` code).

This module also reads an export's ``validation.json`` so later stages (publish,
demo) can refuse an export that failed or was changed after validation, and says
whether a RUN_DIR's export is still fresh (`export_fresh`). File names: `zoo.layout`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from zoo.fsutil import atomic_write_json
from zoo.errors import EdgezooError
from zoo.layout import BACKBONE_CONFIG, ONNX, ONNX_INT8, ORT, ORT_INT8, ORT_OPS, PREPROCESS, VALIDATION, RunDir
from zoo.manifest import record_mismatch
from zoo.preprocess import Preprocess, batched, l2_normalize
from zoo.records import Validation

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
# The files validation.json vouches for (by size and sha256: a `zoo.manifest.file_record` each).
VALIDATED_FILES = (ONNX, ONNX_INT8, ORT, ORT_INT8, ORT_OPS, PREPROCESS)


class ModelFileError(EdgezooError):
    """A model file that is missing, unreadable or not an embedding model."""


class InputSizeError(EdgezooError):
    """The model's fixed input size disagrees with the preprocessing."""


class ExportNotValidatedError(EdgezooError):
    """An export without a passing validation.json (or changed since it was validated)."""


def write_preprocess(preprocess: Preprocess, folder: str | Path) -> Path:
    """preprocess.json beside the models: all the edge runtime needs besides the model."""
    return atomic_write_json(Path(folder) / PREPROCESS, preprocess.as_dict())


def preprocess_beside(model_path: str | Path) -> Preprocess | None:
    """The preprocessing stored with a model: preprocess.json beside it, else ../config.json (published repo)."""
    model_path = Path(model_path)
    local = model_path.parent / PREPROCESS
    try:
        if local.is_file():
            d = json.loads(local.read_text())
            return Preprocess(img_size=int(d["img_size"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
                              crop_pct=float(d["crop_pct"]), interpolation=d["interpolation"])
        repo_cfg = model_path.parent.parent / BACKBONE_CONFIG
        if repo_cfg.is_file():
            return Preprocess.from_pretrained_cfg(json.loads(repo_cfg.read_text())["pretrained_cfg"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{model_path}: unreadable preprocessing beside the model ({exc})") from exc
    return None


def read_validation(export_dir: str | Path, *, require_passed: bool = True, verify_files: bool = True,
                    ) -> Validation:
    """An export's validation.json; raises ExportNotValidatedError if missing, failed or stale.

    With ``verify_files`` every file it lists that is present (a published copy may carry only some) must still
    have the validated size and sha256, so a model edited after validation is refused too.
    """
    export_dir = Path(export_dir)
    path = export_dir / VALIDATION
    if not path.is_file():
        raise ExportNotValidatedError(f"{path}: missing; run `edgezoo export RUN_DIR --out {export_dir}` first")
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("passed"), bool):
            raise ValueError("no pass/fail verdict")
        report = Validation.from_json(data)
        files = dict(report.files)
        failed = report.failed_checks
    except (ValueError, TypeError, AttributeError) as exc:
        raise ExportNotValidatedError(f"{path}: unreadable ({exc}); re-run `edgezoo export`") from exc
    if require_passed and not report.passed:
        raise ExportNotValidatedError(f"{export_dir}: export failed validation ({', '.join(failed) or 'see report'})")
    if verify_files:
        present = {name: rec for name, rec in files.items() if (export_dir / name).is_file()}
        if files and not present:
            raise ExportNotValidatedError(f"{export_dir}: none of the validated files is there")
        for name, rec in present.items():
            f = export_dir / name
            if record_mismatch(f, rec, VALIDATION) is not None:
                raise ExportNotValidatedError(f"{f}: changed since validation; re-run `edgezoo export`")
    return report


def current_export(run: RunDir) -> Validation:
    """The validation report of a RUN_DIR's export that is current; raises ExportNotValidatedError saying why not.

    The one rule of the export stage (redo unless current) and of publishing (refuse unless current): a
    validation.json that passed and still vouches for the files, and both ONNX models present and not older
    than the weights.
    """
    if not run.validation.is_file():
        raise ExportNotValidatedError(f"no validated export ({run.rel(run.validation)} missing): run `edgezoo "
                                      f"export {run.path}` first")
    report = read_validation(run.export)
    for path in (run.onnx, run.onnx_int8):
        if not path.is_file():
            raise ExportNotValidatedError(f"{run.rel(path)} is missing")
        if not run.newer_than_weights(path):
            raise ExportNotValidatedError(f"{run.rel(path)} is older than {run.rel(run.weights)}: re-run "
                                          "`edgezoo export`")
    return report


def export_fresh(run: RunDir) -> bool:
    """`current_export` as the export stage asks it: True when there is nothing to redo."""
    try:
        current_export(run)
    except ExportNotValidatedError as exc:
        log.info("export needs redoing: %s", exc)
        return False
    return True


# Graph optimisation levels a session can be opened at (None: onnxruntime's default, all of them). "extended" is
# what the ORT-format conversion bakes into a .ort file: all but the layout transforms (NCHWc), which
# onnxruntime chooses per machine when it loads a model.
OPTIMIZATIONS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def _session_options(threads: int | None, optimization: str | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if optimization is not None:
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATIONS[optimization])
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return opts


def open_session(model_path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None,
                 optimization: str | None = None) -> Any:
    """An onnxruntime session, with one clear error for a missing or corrupt file."""
    import onnxruntime as ort

    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelFileError(f"{model_path}: no such model file")
    try:
        return ort.InferenceSession(str(model_path), sess_options=_session_options(threads, optimization),
                                    providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        raise ModelFileError(f"{model_path}: not a loadable ONNX/ORT model ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc


def _is_single_image(items: Any) -> bool:
    return isinstance(items, (str, Path, Image.Image)) or (isinstance(items, np.ndarray) and items.ndim in (2, 3))


class EdgeEmbedder:
    """L2-normalised image embeddings from an exported model (fp32 or int8 ONNX, or ORT format)."""

    def __init__(self, model_path: str | Path, preprocess: Preprocess | None = None,
                 providers: Sequence[str] | None = None, threads: int | None = None,
                 optimization: str | None = None) -> None:
        self.model_path = Path(model_path)
        self.session = open_session(self.model_path, providers, threads, optimization)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelFileError(f"{self.model_path}: expected one (N, 3, S, S) image input, got "
                                 f"{[(i.name, i.shape) for i in inputs]}")
        self.input_name: str = inputs[0].name
        self.output_name: str = OUTPUT_NAME if OUTPUT_NAME in [o.name for o in outputs] else outputs[0].name
        self.preprocess = self._resolve_preprocess(preprocess)
        self._check_input_size(inputs[0].shape)
        self.dim = self._embedding_dim()

    def _resolve_preprocess(self, given: Preprocess | None) -> Preprocess:
        """The argument when given (warning if it differs from the model's files), else the files'."""
        stored = preprocess_beside(self.model_path)
        if given is not None:
            if stored is not None and stored != given:
                log.warning("%s: using the given preprocessing %s, not the stored %s", self.model_path, given, stored)
            return given
        if stored is None:
            raise ModelFileError(f"{self.model_path}: no {PREPROCESS} beside it and no ../config.json; "
                                 "pass preprocess=Preprocess(...)")
        return stored

    def _check_input_size(self, shape: Sequence[Any]) -> None:
        channels, height, width = shape[1:]
        if isinstance(channels, int) and channels != 3:
            raise ModelFileError(f"{self.model_path}: expects {channels} input channels, not RGB")
        size = self.preprocess.img_size
        fixed = [d for d in (height, width) if isinstance(d, int)]
        if any(d != size for d in fixed):
            raise InputSizeError(f"{self.model_path}: model input is {height}x{width} but the preprocessing "
                                 f"crops {size}x{size}")

    def _embedding_dim(self) -> int:
        shape = self.session.get_outputs()[[o.name for o in self.session.get_outputs()].index(self.output_name)].shape
        if len(shape) == 2 and isinstance(shape[1], int):
            return shape[1]
        zeros = np.zeros((1, 3, self.preprocess.img_size, self.preprocess.img_size), np.float32)
        return int(self.run(zeros).shape[1])

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw model output for an already-normalised (N, 3, S, S) float32 batch."""
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def embed(self, items: Iterable[Any], batch_size: int = 32) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings of PIL images, paths or uint8 HxWx3 arrays (mixed)."""
        items = [items] if _is_single_image(items) else list(items)
        out = [l2_normalize(self.run(self.preprocess.normalize(self.preprocess.decode(chunk)[0])))
               for chunk in batched(items, batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def __repr__(self) -> str:
        return f"EdgeEmbedder({str(self.model_path)!r}, dim={self.dim}, preprocess={self.preprocess})"
