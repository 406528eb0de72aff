"""Per-step time and peak memory of effssl, npid and simclr: same backbone, batch and device, one run.

    python benchmarks/pretrain_speed.py                         # cifar10-resnet18 config, batch 64, CPU
    python benchmarks/pretrain_speed.py --batch-size 512 --device cuda --steps 50
    python benchmarks/pretrain_speed.py --device cuda --batch-size 512 --compile off,default,reduce-overhead

Each method runs in its own subprocess so that peak memory is its own: on CUDA
torch.cuda.max_memory_allocated, on CPU the peak resident set size minus the
resident size before the model was built (model, bank, optimizer, activations).
`--compile` times each method eagerly ("off") and under each torch.compile mode
(pretrain/compile.py; reduce-overhead adds CUDA graphs): compilation and its probe
are timed apart, and a mode that fails to compile is reported with its error and
timed eagerly, as a training run would fall back.
Prints a markdown table, then one JSON line: {"config": {...}, "results": [...]}.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smoke import SMOKE_CONFIG  # noqa: E402 (benchmarks/ is the script's own folder)

log = logging.getLogger("pretrain_speed")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def worker(args: argparse.Namespace) -> dict:
    """Time `steps` training steps of one method after `warmup` steps."""
    import torch

    from pretrain.augment import AugmentParams, build_augment
    from pretrain.compile import compile_backbone, step_begin
    from pretrain.config import build_config
    from pretrain.data import load_train_split, preprocess_of
    from pretrain.methods import build_method
    from pretrain.modules.one_pixel_conv import use_one_pixel_convs
    from pretrain.distributed import select_device
    from zoo.backbones import embedding_dim

    if args.threads:
        torch.set_num_threads(args.threads)
    mode = args.worker_compile
    cfg = build_config(args.recipe, **(SMOKE_CONFIG if args.smoke else {}), method=args.worker,
                       compile=mode != "off", compile_mode=None if mode == "off" else mode,
                       **{k: v for k, v in (("batch_size", args.batch_size), ("device", args.device),
                                            ("max_images", args.max_images)) if v is not None})
    dev = select_device(cfg.device)
    pre = preprocess_of(cfg)
    train = load_train_split(cfg, pre)
    n = len(train.images)
    bs = cfg.batch_size
    images = torch.from_numpy(train.images[: bs * (args.steps + args.warmup)]).permute(0, 3, 1, 2)
    images = images.contiguous().to(dev)
    base_rss = _rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base_cuda = torch.cuda.memory_allocated(dev)
    torch.manual_seed(0)
    backbone = cfg.create_backbone()
    embed = embedding_dim(backbone, cfg.img_size)
    method = build_method(cfg.method, cfg=cfg, backbone=backbone, embed_dim=embed, num_samples=n).to(dev)
    if dev.type in ("cuda", "cpu") and cfg.channels_last:
        method.backbone.to(memory_format=torch.channels_last)
    if dev.type == "cpu":
        use_one_pixel_convs(method.backbone)  # as the trainer does
    opt = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4,
                          **({"fused": True} if dev.type == "cuda" else {}))
    augment = build_augment(AugmentParams.from_config(cfg, pre.mean, pre.std), cfg.augment)
    gen = torch.Generator(device=dev).manual_seed(0)
    amp = cfg.amp and dev.type == "cuda"
    compiled = None
    if cfg.compile:
        probe_views = [augment(images[:bs], gen) for _ in range(method.num_views)]
        if cfg.channels_last:
            probe_views = [v.contiguous(memory_format=torch.channels_last) for v in probe_views]
        compiled = compile_backbone(method.backbone, cfg.compile_mode, probe_views, amp=amp)
    times = []
    for step in range(args.warmup + args.steps):
        b = images[step * bs:(step + 1) * bs]
        idx = torch.randint(0, n, (b.shape[0],), device=dev, generator=gen)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        step_begin(compiled)
        views = [augment(b, gen) for _ in range(method.num_views)]
        if dev.type in ("cuda", "cpu") and cfg.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            out = method(views, idx, gen, gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    if dev.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(dev) - base_cuda) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - base_rss
    step_s = statistics.median(times)
    return {"method": args.worker, "compile": mode, "compiled": bool(compiled and compiled.compiled),
            "compile_s": compiled.seconds if compiled else 0.0, "compile_error": compiled.error if compiled else None,
            "step_s": round(step_s, 4), "peak_mem_mb": round(peak, 1),
            "images_per_s": round(bs / step_s, 1), "batch_size": bs, "steps": len(times),
            "device": str(dev), "threads": torch.get_num_threads()}


def _ratio(a: float, b: float | None) -> str:
    return f"{a / b:.2f}x" if b else "-"


def markdown_table(results: list[dict]) -> str:
    """One row per (compile mode, method); ratios against simclr in the same mode and against eager."""
    simclr = {r["compile"]: r for r in results if r["method"] == "simclr"}
    eager = {r["method"]: r for r in results if r["compile"] == "off"}
    lines = ["| method | compile | step (s) | images/s | peak memory (MB) | images/s vs simclr | memory vs simclr "
             "| vs eager | compile (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s, e = simclr.get(r["compile"], {}), eager.get(r["method"], {})
        mode = r["compile"] if r["compiled"] or r["compile"] == "off" else f"{r['compile']} (failed: eager)"
        lines.append(f"| {r['method']} | {mode} | {r['step_s']:.4f} | {r['images_per_s']:.0f} | {r['peak_mem_mb']:.0f} "
                     f"| {_ratio(r['images_per_s'], s.get('images_per_s'))} "
                     f"| {_ratio(r['peak_mem_mb'], s.get('peak_mem_mb'))} "
                     f"| {_ratio(r['images_per_s'], e.get('images_per_s'))} | {r['compile_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="cifar10-resnet18", help="recipe giving backbone, K, d, image size")
    p.add_argument("--methods", default="effssl,npid,simclr", help="comma-separated methods")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (each method; default 64)")
    p.add_argument("--steps", type=int, default=4, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--device", default=None, help="auto, cpu, cuda (default auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--max-images", type=int, default=None, help="load only a subset (the bank's size follows)")
    p.add_argument("--compile", default=None,
                   help="comma-separated: off (eager) and/or torch.compile modes (default, reduce-overhead, ...); "
                        "default off (smoke: off,aot_eager)")
    p.add_argument("--smoke", action="store_true",
                   help="CPU, tiny model and subset, 1 step (benchmarks/smoke.py): the code path in seconds")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-compile", default="off", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.warmup = 1, 1
    elif args.batch_size is None:
        args.batch_size = 64
    args.compile = args.compile or ("off,aot_eager" if args.smoke else "off")
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = []
    for mode in args.compile.split(","):
        for method in args.methods.split(","):
            cmd = [sys.executable, __file__, "--worker", method, "--worker-compile", mode,
                   *[a for a in (argv or sys.argv[1:])]]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                log.error("%s (compile %s) failed:\n%s", method, mode, proc.stderr[-2000:])
                return 1
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            log.info("%s (compile %s): %s", method, mode, results[-1])
    from pretrain.config import build_config

    cfg = build_config(args.recipe, **{**(SMOKE_CONFIG if args.smoke else {}), "batch_size": args.batch_size})
    config = {"recipe": args.recipe, "model": cfg.model, "model_args": cfg.model_args, "small_stem": cfg.small_stem,
              "img_size": cfg.img_size,
              "batch_size": cfg.batch_size, "num_negatives": cfg.num_negatives, "proj_dim": cfg.proj_dim,
              "device": results[0]["device"], "threads": results[0]["threads"], "steps": args.steps,
              "compile": args.compile}
    print(markdown_table(results))
    print(json.dumps({"config": config, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
