"""kNN top-1 of a recipe under a grid of overrides: the tool used to tune `cpu-quick`.

    python benchmarks/recipe_sweep.py --recipe cpu-quick --device cuda --out runs/sweep \
        --grid '[{}, {"lr": 0.3}, {"temperature": 0.1, "seed": 1}]'

Each grid entry is a dict of PretrainConfig fields that override the recipe; every
run goes to its own RUN_DIR under --out through the same Trainer as
`edgezoo pretrain`, so a number here is what the recipe would give. A GPU runs a
cpu-quick-sized job in seconds, which makes a search possible that would take
hours on 2 CPU cores; `--fp32` turns off bf16 autocast and channels_last so the
arithmetic matches a CPU run's. Finished RUN_DIRs are reused and interrupted ones
resumed, so a stopped sweep continues. Prints a markdown table sorted by kNN, then one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("recipe_sweep")


def run_name(overrides: dict) -> str:
    """A stable, readable RUN_DIR name for one grid entry."""
    text = json.dumps(overrides, sort_keys=True)
    slug = "_".join(f"{k}-{v}" for k, v in sorted(overrides.items()))[:60] or "recipe"
    slug = "".join(c if c.isalnum() or c in "-_." else "" for c in slug)
    return f"{slug}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def run_one(recipe: str, overrides: dict, out: Path, device: str, fp32: bool, threads: int | None) -> dict:
    from cifar10_knn import train  # reuses a finished RUN_DIR, resumes an interrupted one

    run_dir = out / run_name(overrides)
    extra = {"amp": False, "channels_last": False} if fp32 else {}
    metrics = train(recipe, run_dir, **{"device": device, "threads": threads, **extra, **overrides})
    return {"overrides": overrides, "knn_top1": metrics["knn_top1"], "wall_time_s": metrics["wall_time_s"],
            "rankme": metrics.get("rankme"), "run_dir": str(run_dir)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="cpu-quick", help="recipe the overrides apply to")
    parser.add_argument("--grid", required=True, help="JSON list of override dicts, or @FILE holding one")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"), help="parent folder of the RUN_DIRs")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast or channels_last (CPU arithmetic)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no new run after this many seconds (the table covers what finished)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    text = Path(args.grid[1:]).read_text() if args.grid.startswith("@") else args.grid
    grid = json.loads(text)
    results = []
    start = time.monotonic()
    for overrides in grid:
        if args.budget_s is not None and time.monotonic() - start > args.budget_s:
            log.warning("budget of %.0f s spent: %d of %d runs not started", args.budget_s,
                        len(grid) - len(results), len(grid))
            break
        try:
            res = run_one(args.recipe, overrides, args.out, args.device, args.fp32, args.threads)
        except Exception as err:  # one bad entry must not lose the rest of the sweep
            log.error("%s failed: %s", overrides, err)
            res = {"overrides": overrides, "knn_top1": None, "error": str(err)}
        log.info("%s -> kNN %s", overrides, res["knn_top1"])
        results.append(res)
    ranked = sorted(results, key=lambda r: -(r["knn_top1"] or -1))
    print("| overrides | kNN top-1 | wall s |\n|---|---|---|")
    for r in ranked:
        knn = f"{100 * r['knn_top1']:.2f}" if r["knn_top1"] is not None else "failed"
        print(f"| `{json.dumps(r['overrides'], sort_keys=True)}` | {knn} | {r.get('wall_time_s', '')} |")
    print(json.dumps({"recipe": args.recipe, "device": args.device, "fp32": args.fp32, "results": results}))


if __name__ == "__main__":
    main()
