"""Your own labelled photos: effssl vs SimCLR vs random init at equal wall time, leave-one-out kNN.

    python benchmarks/folder_knn.py --data ../shared/datasets/hymenoptera --out runs/folder-knn

The person's regime: a few hundred to a few thousand photos, a CPU, minutes. Every
image under --data (label = its folder's name; train/val splits are merged, so
the run sees the folder a person has) is linked into OUT/data/<label>/, and each
method pretrains on it with the same ``--time-budget`` (equal wall time by
construction: the trainer fixes its epoch count from its own measured speed).
Each backbone then embeds every photo through the deployment preprocessing
(``zoo.pretrained.TorchEmbedder``) and is scored without a split: leave-one-out
weighted kNN top-1 (k=20, t=0.1) and retrieval precision@8 (what the demo's page
shows), against the same architecture at random initialisation. Prints a markdown
table and a final JSON line; runs already in OUT are reused.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.layout import RunDir  # noqa: E402
from zoo.knn import LOO_K  # noqa: E402

log = logging.getLogger("folder_knn")

TOP_K = 8


def link_class_folders(src: Path, dest: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Every image under `src` as dest/<label>/<split>_<name> (label = parent folder), with integer labels."""
    from zoo.images import find_images

    paths = find_images(src)
    if not paths:
        raise SystemExit(f"{src}: no images")
    classes = sorted({p.parent.name for p in paths})
    if len(classes) < 2:
        raise SystemExit(f"{src}: needs images in at least two label folders, found {classes}")
    linked = []
    for p in paths:
        rel = p.relative_to(src)
        name = "_".join(rel.parts[:-2] + (rel.name,))  # train/ants/x.jpg -> ants/train_x.jpg
        target = dest / p.parent.name / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(p.resolve())
        linked.append(target)
    labels = np.array([classes.index(p.parent.name) for p in linked])
    return linked, labels, classes


def scores(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from zoo.knn import loo_knn_top1, precision_at_k

    return {"loo_knn_top1": loo_knn_top1(embeddings, labels, LOO_K), f"precision@{TOP_K}":
            precision_at_k(embeddings, labels, TOP_K)}


def train(cfg: Any, out: Path) -> dict[str, Any]:
    from pretrain.trainer import Trainer

    if RunDir(out).metrics.exists():
        return json.loads(RunDir(out).metrics.read_text())
    return Trainer(cfg, out, resume=RunDir(out).config.exists(), progress=False).fit()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a labelled image folder (label = parent folder)")
    p.add_argument("--recipe", default="folder-small", help="recipe of every run")
    p.add_argument("--methods", default="effssl,simclr", help="comma-separated methods")
    p.add_argument("--budget", type=float, default=None, help="seconds per run (default: the recipe's time budget)")
    p.add_argument("--img-size", type=int, default=None, help="override the recipe's input size")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--out", type=Path, default=Path("runs/folder-knn"), help="where data links and runs go")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from pretrain.config import build_config
    from pretrain.evaluate import starting_backbone
    from zoo.knn import chance_precision
    from zoo.pretrained import TorchEmbedder

    data = args.out / "data"
    paths, labels, classes = link_class_folders(args.data.resolve(), data)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        common = {"data": str(data), "img_size": args.img_size, "time_budget": args.budget, "seed": seed,
                  "threads": args.threads}
        cfg = build_config(args.recipe, **common)
        rnd = TorchEmbedder.of(*starting_backbone(cfg))
        rows.append({"method": "random-init", "seed": seed, "epochs": 0, "wall_time_s": 0.0,
                     **scores(rnd.embed(paths), labels)})
        for method in args.methods.split(","):
            run = args.out / f"{method}-s{seed}"
            metrics = train(build_config(args.recipe, method=method, **common), run)
            rows.append({"method": method, "seed": seed, "epochs": metrics["epochs"],
                         "wall_time_s": metrics["elapsed_s"], **scores(TorchEmbedder(RunDir(run).backbone).embed(paths),
                                                                       labels)})
            log.info("%s", rows[-1])
    print(f"\n{args.data}: {len(paths)} images, {len(classes)} classes ({', '.join(classes)}); {cfg.model} at "
          f"{cfg.img_size} px, budget {cfg.time_budget} s a run; leave-one-out kNN k={LOO_K}, "
          f"chance precision@{TOP_K} {100 * chance_precision(labels):.1f}%\n")
    print(f"| method | seed | epochs | fit (s) | LOO kNN top-1 | precision@{TOP_K} |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['seed']} | {r['epochs']} | {r['wall_time_s']:.0f} | "
              f"{100 * r['loo_knn_top1']:.2f} | {100 * r[f'precision@{TOP_K}']:.2f} |")
    print(json.dumps({"data": str(args.data), "recipe": args.recipe, "budget_s": cfg.time_budget,
                      "img_size": cfg.img_size, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
