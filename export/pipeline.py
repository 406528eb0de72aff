"""RUN_DIR -> export folder: ONNX fp32, static int8, ORT format, preprocess.json, then validation.

Layout of the export folder (the contract with publish, the demo and ``zoo.edge``):
    model.onnx                 fp32, one file, input ``input`` (N,3,S,S) -> ``embedding`` (N,D)
    model.int8.onnx            static int8 (QDQ, per-channel weights), calibrated on the run's images
    model.ort, model.int8.ort  the same in ORT format, for minimal/mobile onnxruntime builds
    required_operators.config  the operators those builds must include
    preprocess.json            zoo.preprocess.Preprocess of the run
    validation.json            written last: checks against torch and the verdict
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from export.onnx_export import OPSET, export_onnx
from export.quantize import MIN_CALIB_IMAGES, convert_to_ort, quantize_int8
from export.rundata import RunData, decode_normalized, disjoint_samples, plan_validation, read_run
from export.validate import Thresholds, raise_if_failed, validate_export
from zoo.card import module_stats
from zoo.edge import ModelFileError, write_preprocess
from zoo.layout import EXPORT, ONNX, ONNX_INT8, ORT, ORT_INT8, ORT_OPS, VALIDATION

log = logging.getLogger(__name__)

# Third-party loggers that narrate every graph pass at INFO.
_CHATTY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._export")


@dataclass
class ExportOptions:
    """Everything `edgezoo export` can be told (defaults here; the CLI mirrors them)."""

    exporter: str = "auto"
    opset: int = OPSET
    calib_images: int = 512
    check_images: int = 128  # held-out training images that decide W8A8 vs W8A16 (see export.quantize)
    int8_activations: str = "auto"
    val_images: int = 2000  # a 1-point kNN drop must stand out of the noise (see validate.py)
    bank_images: int = 2000
    seed: int = 0
    threads: int | None = None
    measure_latency: bool = True
    thresholds: Thresholds = field(default_factory=Thresholds)


@contextmanager
def _quiet_loggers() -> Iterator[None]:
    """Raise chatty third-party loggers to WARNING for the duration, then restore them."""
    saved = {name: logging.getLogger(name).level for name in _CHATTY_LOGGERS}
    try:
        for name in _CHATTY_LOGGERS:
            if logging.getLogger(name).getEffectiveLevel() < logging.WARNING:
                logging.getLogger(name).setLevel(logging.WARNING)
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def build_models(run: RunData, out_dir: Path, opts: ExportOptions) -> dict[str, Any]:
    """Write every model file and preprocess.json; describe how they were made."""
    from zoo.timm_files import load_backbone

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / VALIDATION).unlink(missing_ok=True)  # stale verdicts must not outlive their models
    model = load_backbone(run.backbone_dir)
    with _quiet_loggers():
        exporter = export_onnx(model, out_dir / ONNX, run.preprocess.img_size, exporter=opts.exporter,
                               opset=opts.opset)
    write_preprocess(run.preprocess, out_dir)
    calib_list, check_list = disjoint_samples(run.train, (opts.calib_images, opts.check_images), opts.seed)
    calib, calib_list = decode_normalized(run.preprocess, calib_list)
    check = decode_normalized(run.preprocess, check_list)[0] if len(check_list) else None
    if len(calib) < MIN_CALIB_IMAGES:
        log.warning("calibrating on only %d images (the run has no more)", len(calib))
    quant = quantize_int8(out_dir / ONNX, out_dir / ONNX_INT8, calib, check, activations=opts.int8_activations,
                          target_median_cosine=opts.thresholds.int8_median_cosine)
    quant["calibration_source"] = str(calib_list.root)
    ort_info = convert_to_ort([out_dir / ONNX, out_dir / ONNX_INT8], out_dir)
    expected = {ORT, ORT_INT8, ORT_OPS}
    if not expected <= set(ort_info["files"]):
        log.warning("ORT-format conversion wrote %s, expected %s", ort_info["files"], sorted(expected))
    return {"export": {"exporter": exporter, "opset": opts.opset}, "quantization": quant, "ort_format_files": ort_info,
            "complexity": module_stats(model, run.preprocess.img_size)}  # the card's count, for the zoo table


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, opts: ExportOptions | None = None, *,
               validate_only: bool = False) -> dict[str, Any]:
    """Export and validate a completed run; raises ExportValidationError (files kept) when a check fails."""
    opts = opts or ExportOptions()
    run = read_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.run_dir / EXPORT
    split = plan_validation(run, opts.val_images, opts.bank_images, opts.seed)  # too few images: refused before work
    extra = _previous_build_info(out) if validate_only else build_models(run, out, opts)
    report = validate_export(run, out, thresholds=opts.thresholds, seed=opts.seed, threads=opts.threads,
                             measure_latency=opts.measure_latency, extra=extra, split=split)
    raise_if_failed(report, out)
    return report


def _previous_build_info(out: Path) -> dict[str, Any]:
    """How the existing models were made, carried over from their last validation.json."""
    path = out / VALIDATION
    if not (out / ONNX).is_file():
        raise ModelFileError(f"{out / ONNX}: missing; run `edgezoo export` without --validate-only first")
    try:
        old = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        old = {}
    return {k: old[k] for k in ("export", "quantization", "ort_format_files", "complexity") if k in old}

