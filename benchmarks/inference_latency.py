"""CPU inference latency: torch eager fp32 vs ORT fp32 vs ORT int8, batch 1 and 32, on real images.

    python benchmarks/inference_latency.py RUN_DIR [RUN_DIR ...]        # exported (or exported now)
    python benchmarks/inference_latency.py --work runs/bench-latency      # makes its own tiny runs

One process, the same preprocessed images (the run's eval split through the
deployment preprocessing) for every backend, the same thread count for torch
and onnxruntime (``--threads``, default 1). Measurements are interleaved (round-robin over backend x batch)
and repeated ``--rounds`` times; each cell is the median over rounds of that
round's p50/p90, so a burst of load from other jobs moves one round, not a cell.
When a run's shipped int8 model is not W8A8 (see export/quantize.py), a W8A8
model is also quantized and timed, labelled as not shipped, to show what 8-bit
activations would buy. Prints a markdown table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.layout import ONNX, ONNX_INT8, RunDir  # noqa: E402
from zoo.records import Validation  # noqa: E402

log = logging.getLogger("inference_latency")

MODELS = ("resnet18", "mobilenetv3_large_100")
TINY_RUN = ["--recipe", "cpu-quick", "--max-images", "1024", "--epochs", "1", "--batch-size", "128", "--no-progress"]
BATCHES = (1, 32)


def ensure_runs(run_dirs: list[Path], work: Path) -> list[Path]:
    """The given RUN_DIRs, or tiny CIFAR-10 runs of resnet18 and mobilenetv3 made under `work`."""
    if run_dirs:
        return run_dirs
    runs = []
    for model in MODELS:
        out = work / model
        if not RunDir(out).metrics.is_file():
            log.info("training a tiny %s run into %s", model, out)
            subprocess.run([sys.executable, "-m", "app.cli", "pretrain", *TINY_RUN, "--model", model, "--out", str(out)],
                           check=True, cwd=ROOT)
        runs.append(out)
    return runs


def ensure_export(run_dir: Path) -> tuple[Path, Validation]:
    """RUN_DIR/export with a passing validation.json, exporting first when there is none."""
    from export.pipeline import export_run
    from zoo.edge import ExportNotValidatedError, read_validation

    out = RunDir(run_dir).export
    try:
        return out, read_validation(out)
    except ExportNotValidatedError:
        log.info("exporting %s", run_dir)
        export_run(run_dir, out)
        return out, read_validation(out)


def w8a8_variant(run_dir: Path, export_dir: Path, tmp: Path) -> Path:
    """A W8A8 model of the run (calibrated like export does), for timing only."""
    from export.pipeline import ExportOptions
    from export.quantize import quantize_int8
    from export.rundata import decode_normalized, disjoint_samples, read_run

    run, opts = read_run(run_dir), ExportOptions()
    calib_list, _ = disjoint_samples(run.train, (opts.calib_images, 0), opts.seed)
    calib, _ = decode_normalized(run.preprocess, calib_list)
    out = tmp / f"{run_dir.name}.w8a8.onnx"
    quantize_int8(export_dir / ONNX, out, calib, activations="8")
    return out


def real_inputs(run_dir: Path, n: int) -> np.ndarray:
    """n real images, preprocessed as deployed: (n, 3, S, S) float32."""
    from export.rundata import decode_normalized, read_run, validation_split

    run = read_run(run_dir)
    queries, _ = validation_split(run, n, 0, seed=0)
    return decode_normalized(run.preprocess, queries)[0]


def backends(run_dir: Path, export_dir: Path, extra_int8: Path | None, threads: int,
             ) -> dict[str, tuple[Callable[[np.ndarray], Any], Path | None]]:
    """name -> (run one batch, file whose size counts)."""
    import torch

    from zoo.edge import EdgeEmbedder
    from zoo.timm_files import load_backbone

    torch.set_num_threads(threads)
    model = load_backbone(RunDir(run_dir).backbone).eval()

    def torch_run(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    out: dict[str, tuple[Callable[[np.ndarray], Any], Path | None]] = {
        "torch eager fp32": (torch_run, RunDir(run_dir).weights)}
    files = [("ORT fp32", export_dir / ONNX), ("ORT int8", export_dir / ONNX_INT8)]
    if extra_int8 is not None:
        files.append(("ORT int8 W8A8 (not shipped)", extra_int8))
    pre = EdgeEmbedder(export_dir / ONNX).preprocess  # the W8A8 variant has no preprocess.json beside it
    for name, path in files:
        out[name] = (EdgeEmbedder(path, preprocess=pre, threads=threads).run, path)
    return out


def measure(fns: dict[str, tuple[Callable[[np.ndarray], Any], Path | None]], x: np.ndarray, rounds: int,
            iters: dict[int, int]) -> dict[str, dict[int, dict[str, float]]]:
    """Median over rounds of each round's p50/p90 (ms), interleaving backends and batches."""
    from export.timing import latency_ms, tile_batch

    inputs = {b: tile_batch(x, b) for b in BATCHES}
    per_round: dict[str, dict[int, list[dict[str, float]]]] = {n: {b: [] for b in BATCHES} for n in fns}
    for r in range(rounds):
        for name, (fn, _) in fns.items():
            for b in BATCHES:
                per_round[name][b].append(latency_ms(lambda: fn(inputs[b]), repeats=iters[b], warmup=2))
        log.info("round %d/%d done", r + 1, rounds)
    return {name: {b: {"p50_ms": float(np.median([m["p50_ms"] for m in ms])),
                       "p90_ms": float(np.median([m["p90_ms"] for m in ms])),
                       "images_per_s": float(b * 1000.0 / np.median([m["p50_ms"] for m in ms]))}
                   for b, ms in by_batch.items()} for name, by_batch in per_round.items()}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| model | backend | file MB | b1 p50 ms | b1 p90 ms | b1 img/s | b32 p50 ms | b32 p90 ms | b32 img/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for name, cells in r["latency"].items():
            b1, b32 = cells[1], cells[32]
            lines.append(f"| {r['model']} | {name} | {r['sizes_mb'][name]:.1f} | {b1['p50_ms']:.2f} | "
                         f"{b1['p90_ms']:.2f} | {b1['images_per_s']:.0f} | {b32['p50_ms']:.2f} | {b32['p90_ms']:.2f} | "
                         f"{b32['images_per_s']:.0f} |")
    return "\n".join(lines)


def ratios(r: dict[str, Any]) -> dict[str, float]:
    lat = r["latency"]
    return {"ort_fp32_vs_torch_b1": lat["ORT fp32"][1]["images_per_s"] / lat["torch eager fp32"][1]["images_per_s"],
            "ort_int8_vs_fp32_b32": lat["ORT int8"][32]["images_per_s"] / lat["ORT fp32"][32]["images_per_s"],
            "int8_size_vs_fp32": r["sizes_mb"]["ORT int8"] / r["sizes_mb"]["ORT fp32"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="*", type=Path, help="RUN_DIRs to benchmark (default: make tiny ones)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-latency",
                   help="where the tiny runs go when no RUN_DIR is given")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for torch and onnxruntime alike (default 1: on a shared small machine a preempted "
                        "worker stalls every multi-threaded op, which measures the neighbours, not the model)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds; cells are medians over rounds")
    p.add_argument("--iters-b1", type=int, default=30, help="timed calls per round at batch 1")
    p.add_argument("--iters-b32", type=int, default=5, help="timed calls per round at batch 32")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import onnxruntime as ort
    import torch

    from export.timing import cpu_info

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for run_dir in ensure_runs(args.run_dirs, args.work):
            export_dir, report = ensure_export(run_dir)
            scheme = report.quantization.get("scheme", "W8A8")
            extra = w8a8_variant(run_dir, export_dir, Path(tmp)) if scheme != "W8A8" else None
            fns = backends(run_dir, export_dir, extra, args.threads)
            lat = measure(fns, real_inputs(run_dir, 64), args.rounds, {1: args.iters_b1, 32: args.iters_b32})
            r = {"model": report.architecture, "run_dir": str(run_dir), "int8_scheme": scheme,
                 "img_size": (report.preprocess or {})["img_size"], "latency": lat,
                 "sizes_mb": {n: (path.stat().st_size / 1e6 if path else float("nan")) for n, (_, path) in fns.items()}}
            r["ratios"] = ratios(r)
            results.append(r)
    env = {"threads": args.threads, "rounds": args.rounds, "torch": torch.__version__, "onnxruntime": ort.__version__,
           "load_avg_1m": os.getloadavg()[0], **cpu_info()}
    print(table(results))
    print()
    for r in results:
        ra = r["ratios"]
        print(f"{r['model']} (int8 = {r['int8_scheme']}): ORT fp32 / torch @ b1 = {ra['ort_fp32_vs_torch_b1']:.2f}x, "
              f"ORT int8 / ORT fp32 @ b32 = {ra['ort_int8_vs_fp32_b32']:.2f}x, int8 size = "
              f"{ra['int8_size_vs_fp32']:.2f}x fp32")
    print(json.dumps({"env": env, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
