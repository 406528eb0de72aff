"""Export validation: the exported models against the torch backbone, on real images, as deployed.

Every model is fed the same arrays, produced by the deployment preprocessing
(``Preprocess.decode`` + ``normalize``, the code the edge runtime runs), so a
difference is the model's, not the pipeline's. Embeddings are compared after
L2 normalisation (what retrieval and kNN consume). The report goes to
``validation.json`` (written atomically) with one entry per check; later stages
refuse an export whose report failed (``zoo.edge.read_validation``).
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from export.onnx_export import describe
from export.rundata import RunData, ValidationSplit, decode_normalized, plan_validation, require_images
from export.timing import cpu_info, latency_ms, tile_batch
from zoo.fsutil import atomic_write_json
from zoo import knn
from zoo.knn import KNN_K, KNN_T
from zoo.edge import VALIDATED_FILES, EdgeEmbedder
from zoo.errors import EdgezooError
from zoo.layout import ONNX, ONNX_INT8, ORT, ORT_INT8, VALIDATION
from zoo.manifest import file_record
from zoo.preprocess import l2_normalize
from zoo.records import Validation

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from zoo import datasets

log = logging.getLogger(__name__)

MIN_VAL_IMAGES, MIN_BANK_IMAGES = 256, 1000


@dataclass(frozen=True)
class Thresholds:
    """Pass/fail limits of export validation (the one place their defaults live)."""

    fp32_max_abs_diff: float = 1e-4  # on L2-normalised embeddings, ONNX fp32 (and ORT format) vs torch
    fp32_min_cosine: float = 0.9999
    int8_median_cosine: float = 0.99
    int8_max_knn_drop: float = 1.0  # kNN top-1 percentage points lost by int8 vs torch


class ExportValidationError(EdgezooError):
    """The exported models disagree with the torch backbone beyond the thresholds."""

    exit_code = 3

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report


def agreement(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """How closely `got` reproduces `ref`, both (N, D) raw embeddings, compared L2-normalised.

    max_rel_diff is the largest per-image relative L2 error ||got - ref|| / ||ref|| (on the
    normalised embeddings, so element-wise noise near zero does not blow it up).
    """
    a, b = l2_normalize(ref), l2_normalize(got)
    cos = np.sum(a * b, axis=1)
    rel = np.linalg.norm(b - a, axis=1) / np.maximum(np.linalg.norm(a, axis=1), 1e-12)
    return {"max_abs_diff": float(np.abs(b - a).max()), "max_rel_diff": float(rel.max()),
            "min_cosine": float(cos.min()), "median_cosine": float(np.median(cos)),
            "max_abs_diff_raw": float(np.abs(got - ref).max())}


def torch_embed(model: "torch.nn.Module", x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Raw embeddings of the torch backbone (the reference), in float32."""
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch_size])).float().numpy()
                               for i in range(0, len(x), batch_size)])


def ort_embed(embedder: EdgeEmbedder, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.concatenate([embedder.run(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def _check(name: str, value: float | None, threshold: float, higher_is_better: bool) -> dict[str, Any]:
    passed = value is not None and (value >= threshold if higher_is_better else value <= threshold)
    return {"name": name, "value": value, "threshold": threshold,
            "op": ">=" if higher_is_better else "<=", "passed": bool(passed)}


def run_checks(report: dict[str, Any], th: Thresholds) -> list[dict[str, Any]]:
    """The pass/fail verdicts of a report (kNN only when the run has labels)."""
    fp32, int8 = report["fp32_vs_torch"], report["int8_vs_torch"]
    checks = [
        _check("fp32_max_abs_diff", fp32["max_abs_diff"], th.fp32_max_abs_diff, False),
        _check("fp32_min_cosine", fp32["min_cosine"], th.fp32_min_cosine, True),
        _check("ort_format_max_abs_diff", report["ort_format"]["max_abs_diff"], th.fp32_max_abs_diff, False),
        _check("int8_median_cosine", int8["median_cosine"], th.int8_median_cosine, True),
    ]
    if report["knn"].get("torch") is not None and report["knn"].get("checked", True):
        checks.append(_check("int8_knn_top1_drop_points", report["knn"]["int8_drop_points"], th.int8_max_knn_drop,
                             False))
    return checks


def _knn_report(bank: dict[str, np.ndarray], queries: dict[str, np.ndarray], bank_labels: np.ndarray,
                query_labels: np.ndarray, num_classes: int) -> dict[str, Any]:
    """kNN top-1 per model, the int8 drop, and how many predictions int8 changed (the drop's noise)."""
    preds = {name: knn.knn_predict(l2_normalize(bank[name]), bank_labels, l2_normalize(queries[name]), KNN_K, KNN_T,
                                   num_classes) for name in bank}
    top1 = {name: float(np.mean(p == query_labels)) for name, p in preds.items()}
    t_ok, i_ok = preds["torch"] == query_labels, preds["ort_int8"] == query_labels
    # Paired (McNemar) standard error of the drop, in points: sqrt(discordant pairs) / N.
    stderr = 100.0 * float(np.sqrt(np.sum(t_ok != i_ok))) / len(query_labels)
    return {"k": min(KNN_K, len(bank_labels)), "t": KNN_T, **top1,  # k as used: a small bank caps it
            "int8_drop_points": 100.0 * (top1["torch"] - top1["ort_int8"]),
            "fp32_drop_points": 100.0 * (top1["torch"] - top1["ort_fp32"]),
            "int8_prediction_changes": float(np.mean(preds["torch"] != preds["ort_int8"])),
            "int8_drop_stderr_points": stderr}


def _knn_section(model: "torch.nn.Module", embedders: dict[str, EdgeEmbedder], run: RunData, split: ValidationSplit,
                 q: dict[str, np.ndarray], queries: "datasets.ImageList") -> dict[str, Any]:
    """The kNN comparison on the split's bank (its description under "bank"), or why there is none.

    With fewer than MIN_VAL_IMAGES queries one changed prediction is worth 100 / N points (more than 0.39)
    and the drop's noise alone reaches the 1-point limit, so the drop is reported but not checked (a small
    folder would fail on noise alone).
    """
    xb, bank = decode_normalized(run.preprocess, split.bank)
    if not len(xb):
        return {"reason": f"no readable image in the kNN bank ({bank.root})"}
    out = _knn_report(_embed_all(model, embedders, xb), q, np.asarray(bank.labels), np.asarray(queries.labels),
                      len(bank.classes))
    out["bank"] = {"spec": bank.spec, "root": str(bank.root), "num_images": len(xb)}
    if len(queries) < MIN_VAL_IMAGES:
        out.update(checked=False, reason=f"only {len(queries)} queries (fewer than {MIN_VAL_IMAGES}): the int8 kNN "
                                         "drop is reported, not checked")
    return out


def _latency(embedders: dict[str, EdgeEmbedder], x: np.ndarray) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, emb in embedders.items():
        out[name] = {}
        for batch, repeats in ((1, 30), (32, 8)):
            xb = tile_batch(x, batch)
            out[name][f"batch{batch}"] = latency_ms(lambda: emb.run(xb), repeats=repeats)
    return out


def _versions() -> dict[str, Any]:
    import onnx
    import onnxruntime as ort
    import torch

    return {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(), **cpu_info()}


def _embed_all(model: "torch.nn.Module", embedders: dict[str, EdgeEmbedder], x: np.ndarray) -> dict[str, np.ndarray]:
    return {"torch": torch_embed(model, x), **{name: ort_embed(e, x) for name, e in embedders.items()}}


def _ort_format_report(export_dir: Path, q: dict[str, np.ndarray], xq: np.ndarray, threads: int | None,
                       ) -> dict[str, Any]:
    """ORT-format files against their .onnx: the same graphs in another container, so a few hundred images do.

    Each .onnx is run here at the optimisation level the conversion baked into its .ort ("extended"): at
    onnxruntime's default level the layout transforms it picks per machine also change float kernels, and a
    float value that moves by 1e-6 before an 8-bit quantizer can land in the next bin (an int8 model with float
    layers: up to 0.01 apart). That difference, against the default level's embeddings, is recorded as
    ``vs_default_optimization``; each model's agreement with torch is checked on its own.
    """
    n = min(len(xq), MIN_VAL_IMAGES)
    pairs = [(ORT, ONNX, "ort_fp32"), (ORT_INT8, ONNX_INT8, "ort_int8")]
    diffs, vs_default = {}, {}
    for name, source, ref in pairs:
        if name != ORT and not (export_dir / name).is_file():
            continue
        ort_q = ort_embed(EdgeEmbedder(export_dir / name, threads=threads), xq[:n])
        same_level = ort_embed(EdgeEmbedder(export_dir / source, threads=threads, optimization="extended"), xq[:n])
        diffs[name] = agreement(same_level, ort_q)["max_abs_diff"]
        vs_default[name] = agreement(q[ref][:n], ort_q)["max_abs_diff"]
    return {"max_abs_diff": max(diffs.values()), "per_file": diffs, "num_images": n,
            "reference_optimization": "extended", "vs_default_optimization": vs_default}


def _int8_report(q: dict[str, np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = agreement(q["torch"], q["ort_int8"])
    nn = knn.neighbour_agreement(l2_normalize(q["torch"]), l2_normalize(q["ort_int8"]), 10)
    out.update({f"nn_{k}_agreement": v for k, v in nn.items()})
    return out


def validate_export(run: RunData, export_dir: str | Path, *, thresholds: Thresholds = Thresholds(),
                    num_val: int = 2000, bank_size: int = 2000, seed: int = 0, threads: int | None = None,
                    measure_latency: bool = True, extra: dict[str, Any] | None = None,
                    split: ValidationSplit | None = None) -> dict[str, Any]:
    """Compare the export's models with the run's torch backbone; write and return validation.json's content.

    `split` (default: `plan_validation` with num_val, bank_size, seed) is the images to compare on.
    """
    from zoo.timm_files import load_backbone

    export_dir = Path(export_dir)
    start = time.time()
    split = split or plan_validation(run, num_val, bank_size, seed)
    xq, queries = decode_normalized(run.preprocess, split.queries)
    require_images(len(xq), queries.root)
    if len(xq) < MIN_VAL_IMAGES:
        log.warning("only %d validation images (fewer than %d): the numbers are noisy", len(xq), MIN_VAL_IMAGES)
    model = load_backbone(run.backbone_dir)
    embedders = {"ort_fp32": EdgeEmbedder(export_dir / ONNX, threads=threads),
                 "ort_int8": EdgeEmbedder(export_dir / ONNX_INT8, threads=threads)}
    q = _embed_all(model, embedders, xq)
    report: dict[str, Any] = {
        "passed": False,
        "checks": [],
        "run_dir": str(run.run_dir.resolve()),
        "architecture": run.config.get("architecture"),
        "embed_dim": int(q["torch"].shape[1]),
        "preprocess": run.preprocess.as_dict(),
        "onnx": describe(export_dir / ONNX),
        "runtime": {**_versions(), "providers": embedders["ort_fp32"].session.get_providers(), "threads": threads},
        "data": {"validation": {"spec": queries.spec, "root": str(queries.root), "num_images": len(xq)},
                 "knn_bank": None, "split": split.describe()},
        "fp32_vs_torch": agreement(q["torch"], q["ort_fp32"]),
        "int8_vs_torch": _int8_report(q),
        "ort_format": _ort_format_report(export_dir, q, xq, threads),
        "knn": {"reason": split.note},
        "thresholds": dataclasses.asdict(thresholds),
        **(extra or {}),
    }
    if split.bank is not None:
        report["knn"] = _knn_section(model, embedders, run, split, q, queries)
        report["data"]["knn_bank"] = report["knn"].pop("bank", None)
    if measure_latency:
        report["latency_ms"] = _latency(embedders, xq)
    report["files"] = {n: file_record(export_dir / n) for n in VALIDATED_FILES if (export_dir / n).is_file()}
    report["sizes"] = {n: r["size"] for n, r in report["files"].items()}
    report["checks"] = run_checks(report, thresholds)
    report["passed"] = all(c["passed"] for c in report["checks"])
    report["validation_seconds"] = round(time.time() - start, 1)
    report["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write_json(export_dir / VALIDATION, Validation.from_json(report).to_json())
    log.info("validation %s: %s", "passed" if report["passed"] else "FAILED", export_dir / VALIDATION)
    return report


def raise_if_failed(report: dict[str, Any], export_dir: Path) -> None:
    """ExportValidationError naming each failed check, value against threshold."""
    failed = [c for c in report["checks"] if not c["passed"]]
    if failed:
        why = "; ".join(f"{c['name']} = {_fmt(c['value'])} (needs {c['op']} {_fmt(c['threshold'])})" for c in failed)
        raise ExportValidationError(f"export validation failed: {why}; files kept in {export_dir}, "
                                    f"marked failed in {VALIDATION}", report)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.6g}"


def _quant_line(q: dict[str, Any]) -> str:
    if not q:
        return "  int8 model: (how it was made is not recorded)"
    line = f"  int8 model: {q.get('scheme', '?')} {q.get('mode', '')} {q.get('format', '')}".rstrip()
    if q.get("num_calibration_images"):
        line += f", per-channel weights, calibrated on {q['num_calibration_images']} training images"
    why = "; ".join(q[k] for k in ("reason", "note") if q.get(k))
    return line + (f" ({why})" if why else "")


def summary(report: Validation | dict[str, Any]) -> str:
    """The human-readable digest of a validation report (the CLI and `edgezoo run` print it)."""
    v = report if isinstance(report, Validation) else Validation.from_json(report)
    fp32, int8, knn_r, data = v.fp32_vs_torch, v.int8_vs_torch, v.knn, v.data
    lines = [f"export of {v.architecture} ({v.embed_dim}-d), input {v.onnx['input']['shape']}, "
             f"opset {v.opset}, onnxruntime {v.onnxruntime}",
             f"validated on {data['validation']['num_images']} images from {data['validation']['spec']}"
             + (f" ({data['split']['note']})" if data.get("split") else ""),
             _quant_line(v.quantization),
             f"  fp32 vs torch: max abs diff {fp32['max_abs_diff']:.2e}, max rel diff {fp32['max_rel_diff']:.2e}, "
             f"cosine min {fp32['min_cosine']:.6f} median {fp32['median_cosine']:.6f}",
             f"  int8 vs torch: cosine min {int8['min_cosine']:.4f} median {int8['median_cosine']:.4f}, "
             f"nearest-neighbour agreement top-1 {int8['nn_top1_agreement']:.3f} top-10 "
             f"{int8.get('nn_top10_agreement', float('nan')):.3f}"]
    if knn_r.get("torch") is not None:
        lines.append(f"  kNN top-1 (k={knn_r['k']}, bank {v.knn_bank_images}): torch "
                     f"{100 * knn_r['torch']:.2f}%, ORT fp32 {100 * knn_r['ort_fp32']:.2f}%, ORT int8 "
                     f"{100 * knn_r['ort_int8']:.2f}% (drop {knn_r['int8_drop_points']:+.2f} "
                     f"+- {knn_r['int8_drop_stderr_points']:.2f} points)"
                     + ("" if knn_r.get("checked", True) else f"; not checked: {knn_r.get('reason')}"))
    else:
        lines.append(f"  kNN: skipped ({knn_r.get('reason')})")
    lines.append("  sizes: " + ", ".join(f"{n} {size / 1e6:.2f} MB" for n, size in v.sizes.items()
                                        if n.startswith("model")))
    for name in v.latency_ms:
        lines.append(f"  latency {name}: p50 {v.latency_p50(name, 1):.2f} ms @ batch 1, "
                     f"{v.latency_p50(name, 32):.2f} ms @ batch 32")
    for c in v.checks:
        lines.append(f"  [{'PASS' if c['passed'] else 'FAIL'}] {c['name']} = {_fmt(c['value'])} "
                     f"(needs {c['op']} {_fmt(c['threshold'])})")
    lines.append(f"validation {'PASSED' if v.passed else 'FAILED'}")
    return "\n".join(lines)
