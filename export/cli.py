"""Command-line front of the export stage: `edgezoo export RUN_DIR [--out DIR]`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from export.onnx_export import EXPORTERS, OPSET
from export.pipeline import ExportOptions
from export.quantize import ACTIVATIONS, MIN_CALIB_IMAGES
from export.validate import MIN_BANK_IMAGES, MIN_VAL_IMAGES, Thresholds
from zoo.layout import EXPORT

log = logging.getLogger(__name__)


def _at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum} for a meaningful check, got {value}")
        return value

    return parse


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    d, th = ExportOptions(), Thresholds()
    parser.add_argument("run_dir", type=Path, help="a completed RUN_DIR (with backbone/ and metrics.json)")
    parser.add_argument("--out", type=Path, default=None, help="export folder (default: RUN_DIR/export)")
    parser.add_argument("--validate-only", action="store_true",
                        help="re-validate the models already in the export folder instead of exporting again")
    parser.add_argument("--exporter", choices=EXPORTERS, default=d.exporter,
                        help=f"torch ONNX exporter; auto tries dynamo, then torchscript (default: {d.exporter})")
    parser.add_argument("--opset", type=int, default=d.opset, help=f"ONNX opset (default: {OPSET})")
    parser.add_argument("--calib-images", type=_at_least(MIN_CALIB_IMAGES), default=d.calib_images,
                        help=f"training images that calibrate int8 (default: {d.calib_images})")
    parser.add_argument("--int8-activations", choices=ACTIVATIONS, default=d.int8_activations,
                        help="activation bits of the int8-weight model: 8, 16, or auto (8 unless that loses too much "
                             f"on held-out training images, then 16) (default: {d.int8_activations})")
    parser.add_argument("--val-images", type=_at_least(MIN_VAL_IMAGES), default=d.val_images,
                        help=f"validation images, from the eval split when the run has one (default: {d.val_images})")
    parser.add_argument("--bank-images", type=_at_least(MIN_BANK_IMAGES), default=d.bank_images,
                        help=f"labelled training images in the kNN bank (default: {d.bank_images})")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the image subsets (default: 0)")
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime intra-op threads for validation and latency (default: all cores)")
    parser.add_argument("--no-latency", dest="measure_latency", action="store_false",
                        help="skip the latency measurement in validation.json")
    parser.add_argument("--max-abs-diff", type=float, default=th.fp32_max_abs_diff,
                        help=f"fp32 vs torch: max abs diff of L2-normalised embeddings (default: {th.fp32_max_abs_diff})")
    parser.add_argument("--min-cosine", type=float, default=th.fp32_min_cosine,
                        help=f"fp32 vs torch: minimum cosine (default: {th.fp32_min_cosine})")
    parser.add_argument("--int8-median-cosine", type=float, default=th.int8_median_cosine,
                        help=f"int8 vs torch: minimum median cosine (default: {th.int8_median_cosine})")
    parser.add_argument("--max-knn-drop", type=float, default=th.int8_max_knn_drop,
                        help=f"int8 vs torch: most kNN top-1 points lost (default: {th.int8_max_knn_drop})")


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    th = Thresholds(fp32_max_abs_diff=args.max_abs_diff, fp32_min_cosine=args.min_cosine,
                    int8_median_cosine=args.int8_median_cosine, int8_max_knn_drop=args.max_knn_drop)
    return ExportOptions(exporter=args.exporter, opset=args.opset, calib_images=args.calib_images,
                         int8_activations=args.int8_activations,
                         val_images=args.val_images, bank_images=args.bank_images, seed=args.seed,
                         threads=args.threads, measure_latency=args.measure_latency, thresholds=th)


def run_export(args: argparse.Namespace) -> dict[str, Any]:
    """Export, validate, print the summary; a failed check raises (after printing it)."""
    from export.pipeline import export_run
    from export.validate import ExportValidationError, summary

    try:
        report = export_run(args.run_dir, args.out, options_from_args(args), validate_only=args.validate_only)
    except ExportValidationError as exc:
        if exc.report is not None:
            print(summary(exc.report))
        raise
    print(summary(report))
    out = args.out or args.run_dir / EXPORT
    print(f"EXPORT_DIR: {out}")
    return report
