"""kNN top-1 per method on CIFAR-10 at equal epochs and at equal wall time, plus random init.

    python benchmarks/cifar10_knn.py --recipe cpu-quick --out runs/bench-knn

1. random init: the recipe's backbone before training, same kNN protocol;
2. equal epochs: every method trains the recipe's epochs;
3. equal wall time: the other methods train for as many epochs as fit in
   effssl's training time (their own cosine schedule), from the per-epoch time
   measured in step 2.
Training time excludes evaluation. Prints a markdown table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.layout import RunDir  # noqa: E402

log = logging.getLogger("cifar10_knn")


def random_init(cfg) -> dict:
    import torch

    from pretrain.data import load_knn_bank, load_split, preprocess_of
    from pretrain.evaluate import knn_protocol
    from pretrain.distributed import select_device
    from zoo import datasets

    pre = preprocess_of(cfg)
    bank = load_knn_bank(cfg, pre)
    test = load_split(cfg.eval_data or datasets.eval_spec(cfg.data), pre)
    torch.manual_seed(cfg.seed)
    dev = select_device(cfg.device)
    backbone = cfg.create_backbone().to(dev)
    return knn_protocol(backbone, bank.images, bank.labels, test.images, test.labels, pre,
                        cfg.knn_k, cfg.knn_t, dev)


def train(recipe: str, out: Path, **overrides) -> dict:
    from pretrain.config import build_config
    from pretrain.trainer import Trainer

    if RunDir(out).metrics.exists():
        return json.loads(RunDir(out).metrics.read_text())
    return Trainer(build_config(recipe, **overrides), out, resume=RunDir(out).config.exists(),
                   progress=False).fit()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="cpu-quick", help="recipe of every run")
    p.add_argument("--methods", default="effssl,npid,simclr", help="comma-separated; effssl sets the wall time")
    p.add_argument("--out", type=Path, default=Path("runs/bench-knn"), help="where the runs go (reused if present)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--max-images", type=int, default=None, help="override the recipe's subset size")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from pretrain.config import build_config

    common = {"epochs": args.epochs, "max_images": args.max_images, "threads": args.threads}
    cfg = build_config(args.recipe, **common)
    rows = [{"method": "random-init", "setting": "-", "epochs": 0, "wall_time_s": 0.0, **random_init(cfg)}]
    methods = args.methods.split(",")
    equal_epochs = {}
    for m in methods:
        r = train(args.recipe, args.out / f"{m}-e{cfg.epochs}", method=m, **common)
        equal_epochs[m] = r
        rows.append({"method": m, "setting": "equal epochs", "epochs": cfg.epochs, "wall_time_s": r["wall_time_s"],
                     "knn_top1": r["knn_top1"], "rankme": r["rankme"]})
    budget = equal_epochs[methods[0]]["wall_time_s"]
    for m in methods[1:]:
        per_epoch = equal_epochs[m]["wall_time_s"] / cfg.epochs
        epochs = max(1, round(budget / per_epoch))
        r = equal_epochs[m] if epochs == cfg.epochs else train(
            args.recipe, args.out / f"{m}-e{epochs}", method=m, **{**common, "epochs": epochs})
        rows.append({"method": m, "setting": f"equal wall time ({methods[0]})", "epochs": epochs,
                     "wall_time_s": r["wall_time_s"], "knn_top1": r["knn_top1"], "rankme": r["rankme"]})
    print(f"\n{args.recipe}: {cfg.model}{f' {cfg.model_args}' if cfg.model_args else ''} small_stem={cfg.small_stem} "
          f"{cfg.max_images or 'all'} images, "
          f"batch {cfg.batch_size}, kNN k={cfg.knn_k} t={cfg.knn_t}\n")
    print("| method | setting | epochs | train time (s) | kNN top-1 | RankMe |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        knn = f"{100 * r['knn_top1']:.2f}" if r.get("knn_top1") is not None else "-"
        print(f"| {r['method']} | {r['setting']} | {r['epochs']} | {r['wall_time_s']:.0f} | {knn} | {r['rankme']:.1f} |")
    print(json.dumps({"recipe": args.recipe, "overrides": common, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
