"""Photos: random init, the free ImageNet init, adapting it, and distilling a larger teacher, at equal CPU wall time.

    python benchmarks/photo_bench.py --data ../shared/datasets/flowers --budget 300 --out runs/photo-bench/flowers
    python benchmarks/photo_bench.py --data ../shared/datasets/hymenoptera --budget 120 --img-size 160 \\
        --out runs/photo-bench/hymenoptera

The question a person asks of edgezoo with a folder of their own photos: is anything here better than the
ImageNet EfficientNet-Lite0 they can get for free? Every image under --data is linked into OUT/data/<label>/
(train/val splits merged, as in benchmarks/folder_knn.py), then each row of `ROWS`:

- untrained references: the student architecture at random init, the ImageNet Lite0 init, and the ImageNet Lite2
  teacher (bigger: the ceiling a distilled student aims at);
- trained rows, each with the same ``--budget`` of wall time from loaded data (the trainer fixes its epochs from
  its own measured speed): effssl from random init, effssl from the ImageNet init (with and without L2-SP toward
  it, and LP-FT: the head trained alone first, the init's BatchNorm statistics kept), SimCLR from the init (and
  with LP-FT), SEED distillation of Lite2 into smaller students, and the stage readout (the init frozen, a linear
  embedding over its last stages fitted on cached views).

Every backbone embeds every photo through its deployment preprocessing and is scored without a split:
leave-one-out 1-NN and weighted kNN top-1 (k=20, t=0.1) and retrieval precision@8 (what the demo shows). Each
architecture is exported once (`edgezoo export`: ONNX, int8, validated against torch) and its int8 batch-1 latency
(onnxruntime, the export's measurement) and parameter count join its rows. Prints a markdown table and one JSON
line (also OUT/photo_bench.json); finished runs and exports in OUT are reused, so an interrupted bench resumes.
``--smoke`` runs every row for a few seconds on 40 photos: a check of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.layout import RunDir  # noqa: E402
from benchmarks.folder_knn import TOP_K, link_class_folders, train  # noqa: E402
from zoo.knn import LOO_K  # noqa: E402

log = logging.getLogger("photo_bench")

LATENCY_KEYS = ("int8_b1_ms", "fp32_b1_ms", "params_m", "int8_scheme", "export_passed")  # `export_latency`

INIT = "tf_efficientnet_lite0.in1k"
TEACHER = "tf_efficientnet_lite2.in1k"
STUDENT = "tf_efficientnet_lite0"


@dataclass(frozen=True)
class Row:
    """One line of the table: PretrainConfig values over the bench's common ones; `method` None = not trained."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def trained(self) -> bool:
        return "method" in self.values

    @property
    def slug(self) -> str:
        """The row's RUN_DIR name and --only key: ``effssl-init-l2-sp``."""
        return "-".join("".join(c if c.isalnum() else " " for c in self.name.lower()).split())


CROPS_ONLY = {"jitter_p": 0.0, "gray_p": 0.0, "blur_p": 0.0}  # views without colour jitter, grayscale or blur


def rows(adapt_lr: float, l2sp_weight: float, teacher_px: int, vit_px: int, head_warmup_steps: int = 40,
         small_px: int = 80, frozen_stages: int = 4, neighbours: int = 5) -> list[Row]:
    """The bench's rows, in table order."""
    # (--init's defaults: LP-FT and WiSE-FT 0.5; each row says which it uses)
    adapt = {"init": INIT, "lr": adapt_lr, "head_warmup_steps": 0, "freeze_bn": False, "wise_alpha": 1.0}
    lpft = {"head_warmup_steps": head_warmup_steps, "freeze_bn": True}  # the head first, the init's BN statistics
    distill = {"method": "distill", "teacher": TEACHER, "teacher_img_size": teacher_px}
    readout = {"method": "readout", "init": INIT, "batch_size": 512, "epochs": 300}  # its defaults, over `common`
    vit = {"model": "vit_tiny_patch16_224", "model_args": {"img_size": vit_px, "patch_size": 8}, "img_size": vit_px,
           "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05}
    return [
        Row("random init (Lite0)", {"model": STUDENT}),
        Row("ImageNet init (Lite0)", {"init": INIT}),
        Row("ImageNet Lite2 (the teacher)", {"init": TEACHER, "img_size": teacher_px}),
        Row("effssl, random init", {"method": "effssl", "model": STUDENT, "lr": 0.3}),
        Row("effssl, --init", {"method": "effssl", **adapt}),
        Row("effssl, --init, L2-SP", {"method": "effssl", **adapt, "reg": "l2sp", "reg_weight": l2sp_weight}),
        Row("effssl, --init, LP-FT", {"method": "effssl", **adapt, **lpft}),
        Row("effssl, --init, LP-FT, WiSE-FT 0.5", {"method": "effssl", **adapt, **lpft, "wise_alpha": 0.5}),
        Row("SimCLR, --init, LP-FT, WiSE-FT 0.5", {"method": "simclr", **adapt, **lpft, "wise_alpha": 0.5}),
        # colour is what tells these flowers apart: views that differ only by crop and flip keep it
        Row("effssl, --init, LP-FT, crops and flips only", {"method": "effssl", **adapt, **lpft, **CROPS_ONLY}),
        # AND: an image's nearest neighbours (mostly of its class, from the init) become positives, not negatives
        Row(f"effssl, --init, LP-FT, {neighbours} neighbours", {"method": "effssl", **adapt, **lpft,
                                                                 "neighbours": neighbours}),
        Row(f"effssl, --init, LP-FT, {frozen_stages} stages frozen",
            {"method": "effssl", **adapt, **lpft, "freeze_stages": frozen_stages}),
        Row("SimCLR, --init", {"method": "simclr", **adapt}),
        Row("SimCLR, --init, LP-FT", {"method": "simclr", **adapt, **lpft}),
        Row("distill Lite2 -> mobilenetv3_small_100", {**distill, "model": "mobilenetv3_small_100"}),
        Row("distill Lite2 -> resnet18", {**distill, "model": "resnet18"}),
        Row(f"distill Lite2 -> vit_tiny (patch 8, {vit_px} px)", {**distill, **vit}),
        Row("distill Lite2 -> Lite0, --init", {**distill, **adapt}),
        # the same network at a smaller input: a student at about half Lite0's latency that keeps ImageNet's features
        Row(f"ImageNet init (Lite0, {small_px} px)", {"init": INIT, "img_size": small_px}),
        Row(f"distill Lite2 -> Lite0 at {small_px} px, --init, LP-FT", {**distill, **adapt, **lpft, "img_size": small_px}),
        # the init frozen, a linear embedding over its last 4 stages fitted on cached views (its own defaults)
        Row("stage readout, --init", {**readout}),
        Row(f"stage readout, --init, {small_px} px", {**readout, "img_size": small_px}),
    ]


def scores(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from zoo.knn import loo_knn_top1, precision_at_k

    return {"loo_1nn": loo_knn_top1(embeddings, labels, 1), "loo_knn": loo_knn_top1(embeddings, labels, LOO_K),
            f"precision@{TOP_K}": precision_at_k(embeddings, labels, TOP_K)}


def score_cells(result: dict[str, Any], k: int = TOP_K) -> str:
    """A table's score columns of one `scores` result, in percent: 1-NN | kNN | precision@k."""
    return f"{100 * result['loo_1nn']:.1f} | {100 * result['loo_knn']:.1f} | {100 * result[f'precision@{k}']:.1f}"


def export_latency(run: Path) -> dict[str, Any]:
    """int8 batch-1 p50 latency (ms) and parameters from the run's export (made now unless already fresh)."""
    from export.pipeline import export_run
    from zoo.layout import EXPORT, VALIDATION

    path = run / EXPORT / VALIDATION
    if not path.is_file():
        export_run(run)
    report = json.loads(path.read_text())
    return {"int8_b1_ms": report["latency_ms"]["ort_int8"]["batch1"]["p50_ms"],  # LATENCY_KEYS
            "fp32_b1_ms": report["latency_ms"]["ort_fp32"]["batch1"]["p50_ms"],
            "params_m": report["complexity"]["params"] / 1e6, "int8_scheme": report["quantization"]["scheme"],
            "export_passed": report["passed"]}


def smoke_folder(src: Path, dest: Path, per_class: int = 20) -> Path:
    """The first `per_class` images of the first two label folders under `src` (for --smoke)."""
    from zoo.images import find_images

    by_label: dict[str, list[Path]] = {}
    for p in find_images(src):
        by_label.setdefault(p.parent.name, []).append(p)
    for label in sorted(by_label)[:2]:
        (dest / label).mkdir(parents=True, exist_ok=True)
        for p in by_label[label][:per_class]:
            shutil.copy2(p, dest / label / p.name)
    return dest


# The bench's numeric options: (flag, default, help).
NUMBERS: tuple[tuple[str, float | int, str], ...] = (
    ("--budget", 300.0, "seconds of wall time per trained row"),
    ("--img-size", 128, "input size of every row but the teacher and the ViT"),
    ("--teacher-img-size", 160, "the Lite2 teacher's input size"),
    ("--vit-img-size", 64, "the ViT student's input size"),
    ("--small-img-size", 80, "input size of the small-input Lite0 rows (the init, and the student distilled at it)"),
    ("--adapt-lr", 0.003, "SGD rate of the rows that start from the init"),
    ("--l2sp-weight", 0.01, "L2-SP weight toward the init"),
    ("--head-warmup-steps", 40, "steps of the LP-FT rows' head alone"),
    ("--frozen-stages", 4, "stages the partly frozen row keeps frozen (Lite0: the stem and 3 of its 7 block stages)"),
    ("--neighbours", 5, "nearest neighbours each image's positives include in the AND rows"),
    ("--batch-size", 64, "batch size of every trained row"),
    ("--seed", 0, "random seed of every trained row (order, augmentation, head)"),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a labelled photo folder (label = parent folder)")
    for flag, default, help_text in NUMBERS:  # the type is the default's
        p.add_argument(flag, type=type(default), default=default, help=f"{help_text} (default: {default})")
    p.add_argument("--only", default=None, help="comma-separated row slugs to run (default: all)")
    p.add_argument("--no-export", action="store_true", help="skip the exports (no latency column)")
    p.add_argument("--smoke", action="store_true", help="40 photos, a few seconds a row: checks the script")
    p.add_argument("--out", type=Path, default=Path("runs/photo-bench"), help="data links, runs and exports")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pretrain.config import build_config
    from pretrain.evaluate import starting_backbone
    from zoo.knn import chance_precision
    from zoo.pretrained import TorchEmbedder

    src = args.data.resolve()
    if args.smoke:
        src = smoke_folder(src, args.out / "smoke-src")
        args.budget, args.img_size, args.teacher_img_size, args.vit_img_size, args.small_img_size = 8.0, 32, 32, 32, 32
    paths, labels, classes = link_class_folders(src, args.out / "data")
    common = {"data": str(args.out / "data"), "time_budget": args.budget, "epochs": 100, "img_size": args.img_size,
              "small_stem": False,
              "batch_size": args.batch_size, "seed": args.seed, "proj_hidden_dim": 1024, "proj_dim": 256,
              "num_negatives": 0}
    table = rows(args.adapt_lr, args.l2sp_weight, args.teacher_img_size, args.vit_img_size, args.head_warmup_steps,
                 args.small_img_size, args.frozen_stages, args.neighbours)
    only = set(args.only.split(",")) if args.only else None
    saved = args.out / "photo_bench.json"  # rows --only leaves out keep their earlier results
    earlier = {r["slug"]: r for r in json.loads(saved.read_text())["rows"]} if only and saved.is_file() else {}
    results: list[dict[str, Any]] = []
    latency = {(r["architecture"], r["img_size"], r.get("readout", False)): {k: r[k] for k in LATENCY_KEYS}
               for r in earlier.values() if all(k in r for k in LATENCY_KEYS)}
    for row in table:
        if only and row.slug not in only:
            if row.slug in earlier:
                results.append(earlier[row.slug])
            continue
        cfg = build_config(None, **{**common, **row.values})
        run = args.out / row.slug
        if row.trained:
            metrics = train(cfg, run)
            embedder = TorchEmbedder(RunDir(run).backbone)
            fit = {"epochs": metrics["epochs"], "fit_s": metrics["elapsed_s"]}
        else:
            embedder, fit = TorchEmbedder.of(*starting_backbone(cfg)), {"epochs": 0, "fit_s": 0.0}
        readout = cfg.method == "readout" and row.trained  # its own graph: the trunk and the readout
        arch = (cfg.architecture, cfg.img_size, readout)
        result = {"row": row.name, "slug": row.slug, "architecture": cfg.architecture, "img_size": cfg.img_size,
                  "readout": readout, **fit, **scores(embedder.embed(paths), labels)}
        if row.trained and not args.no_export and arch not in latency:
            latency[arch] = export_latency(run)
        results.append(result)
        log.info("%s", result)
    for r in results:  # untrained rows share their architecture's export
        r.update(latency.get((r["architecture"], r["img_size"], r.get("readout", False)), {}))
    report = {"data": str(args.data), "images": len(paths), "classes": classes, "budget_s": args.budget,
              "chance_precision": chance_precision(labels), "knn_k": LOO_K, "top_k": TOP_K, "rows": results}
    saved.write_text(json.dumps(report, indent=1))
    print(markdown(report))
    print(json.dumps(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    """The table BENCHMARKS.md shows."""
    k = report["top_k"]
    lines = [f"{report['data']}: {report['images']} photos, {len(report['classes'])} classes; "
             f"{report['budget_s']:.0f} s of wall time per trained row; chance precision@{k} "
             f"{100 * report['chance_precision']:.1f}%", "",
             f"| row | px | epochs | fit s | LOO 1-NN % | LOO kNN-{report['knn_k']} % | precision@{k} % | params M | "
             "int8 b1 ms |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        ms = f"{r['int8_b1_ms']:.2f}" if "int8_b1_ms" in r else "-"
        params = f"{r['params_m']:.2f}" if "params_m" in r else "-"
        lines.append(f"| {r['row']} | {r['img_size']} | {r['epochs']} | {r['fit_s']:.0f} | {score_cells(r, k)} | "
                     f"{params} | {ms} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
