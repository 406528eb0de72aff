"""Continual pretraining on CIFAR-10 in two chunks: joint vs sequential vs +replay vs +MAS.

    python benchmarks/continual.py --recipe cpu-quick --images 4000 --out runs/bench-continual

Two sequences over one fixed random subset of the CIFAR-10 training set:
- instance-incremental: two random halves;
- class-incremental: classes 0-4, then classes 5-9.
For each: plain sequential (step 2 starts from step 1), sequential + replay
(a reservoir of --replay step-1 images mixed into step 2) and sequential + MAS
(--reg mas). Joint training on both chunks at once is the reference (the same
run for both sequences). Every image gets the same number of epochs in every
setting (--epochs per step, and for joint).

Scored with the project's kNN protocol (k=200, t=0.1) on a fixed labelled bank
of CIFAR-10 training images (--bank) against the full test set, and again with
bank and queries restricted to the first chunk's classes (forgetting; for the
instance-incremental sequence that is every class). Cost: images processed and
wall time of the whole step (data loading, calibration, MAS importance, training
and the trainer's closing RankMe pass; the benchmark's kNN scoring excluded),
against training jointly on both chunks. Prints a markdown table, the
acceptance checks of issue 7 and a final JSON line. Runs found complete in --out
are reused, so an interrupted benchmark picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.layout import RunDir  # noqa: E402

log = logging.getLogger("continual")

FIRST_CLASSES = range(5)  # the class-incremental sequence's first chunk


def link_folder(dest: Path, files: Any, keep: list[int]) -> Path:
    """An ImageFolder tree of symlinks (dest/train/<class>/file) to `keep` of an ImageList; written once."""
    done = dest / ".complete"
    if not done.exists():
        for i in keep:
            path = files.paths[i]
            link = dest / "train" / files.classes[files.labels[i]] / path.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(path.resolve())
        done.touch()
    return dest


def make_chunks(out: Path, num_images: int, seed: int) -> dict[str, Path]:
    """Folders of the joint set and of the two sequences' chunks."""
    from zoo import datasets

    train = datasets.resolve("cifar10")
    rng = np.random.default_rng(seed)
    subset = sorted(rng.choice(len(train), size=num_images, replace=False).tolist())
    halves = rng.permutation(subset)
    labels = np.asarray(train.labels)
    first = [i for i in subset if labels[i] in FIRST_CLASSES]
    second = [i for i in subset if labels[i] not in FIRST_CLASSES]
    return {
        "joint": link_folder(out / "joint", train, subset),
        "instance/1": link_folder(out / "instance-1", train, sorted(halves[: num_images // 2].tolist())),
        "instance/2": link_folder(out / "instance-2", train, sorted(halves[num_images // 2:].tolist())),
        "class/1": link_folder(out / "class-1", train, first),
        "class/2": link_folder(out / "class-2", train, second),
    }


def eval_sets(bank_size: int, seed: int, pre: Any) -> dict[str, tuple[Any, Any]]:
    """(bank, queries) splits: all classes, and the first chunk's classes only."""
    import torch

    from pretrain.data import load_split

    bank = load_split("cifar10", pre, bank_size, seed + 1)
    test = load_split("cifar10:test", pre)

    def first_classes(split):
        keep = np.isin(split.labels.numpy(), list(FIRST_CLASSES))
        return split.images[keep], split.labels[torch.from_numpy(keep)]

    return {"all": ((bank.images, bank.labels), (test.images, test.labels)),
            "first": (first_classes(bank), first_classes(test))}


def score(backbone_dir: Path | None, sets: dict, cfg) -> dict[str, float]:
    """kNN top-1 of a backbone (None: the random-init network) on every evaluation set."""
    import torch

    from pretrain.data import preprocess_of
    from pretrain.evaluate import knn_protocol
    from pretrain.distributed import select_device
    from zoo.timm_files import load_backbone

    pre = preprocess_of(cfg)
    if backbone_dir is None:
        torch.manual_seed(cfg.seed)
        backbone = cfg.create_backbone()
    else:
        backbone = load_backbone(backbone_dir)
    dev = select_device(cfg.device)
    backbone.to(dev)
    out = {}
    for name, ((bank_x, bank_y), (test_x, test_y)) in sets.items():
        out[f"knn_{name}"] = knn_protocol(backbone, bank_x, bank_y, test_x, test_y, pre, cfg.knn_k, cfg.knn_t,
                                          dev)["knn_top1"]
    return out


def train(run_dir: Path, cfg) -> dict[str, Any]:
    """One run (reused when complete, resumed when interrupted); adds the step's full wall time."""
    from pretrain.trainer import Trainer

    record = run_dir / "bench.json"
    if record.is_file():
        return json.loads(record.read_text())
    t0 = time.perf_counter()
    metrics = Trainer(cfg, run_dir, resume=RunDir(run_dir).config.exists(), progress=False).fit()
    metrics["step_wall_s"] = round(time.perf_counter() - t0, 1)
    record.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="cpu-quick", help="recipe of every run")
    p.add_argument("--images", type=int, default=4000, help="CIFAR-10 training images over both chunks")
    p.add_argument("--epochs", type=int, default=None, help="epochs per step (and of joint); default: the recipe's")
    p.add_argument("--replay", type=int, default=None,
                   help="replay reservoir size (default: 5%% of --images, so step 2 sees 0.55x joint's images)")
    p.add_argument("--reg-weight", type=float, default=1.0, help="weight of the MAS penalty")
    p.add_argument("--bank", type=int, default=10000, help="labelled CIFAR-10 training images in the kNN bank")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/bench-continual"), help="runs go here (reused if present)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from pretrain.config import build_config
    from pretrain.continual import inherited_config
    from pretrain.data import preprocess_of
    from zoo.preprocess import CIFAR10_MEAN, CIFAR10_STD

    replay = args.replay if args.replay is not None else args.images // 20
    chunks = make_chunks(args.out / "data", args.images, args.seed)
    common = dict(epochs=args.epochs, threads=args.threads, seed=args.seed, max_images=args.images,
                  mean=list(CIFAR10_MEAN), std=list(CIFAR10_STD))
    base_cfg = build_config(args.recipe, data=str(chunks["joint"]), **common)
    sets = eval_sets(args.bank, args.seed, preprocess_of(base_cfg))

    rows: list[dict[str, Any]] = [{"sequence": "-", "setting": "random init", "images_seen": 0, "step_wall_s": 0.0,
                                   **score(None, sets, base_cfg)}]
    joint = train(args.out / "joint", base_cfg)
    joint_row = {"sequence": "both", "setting": "joint", "images_seen": joint["images_seen"],
                 "step_wall_s": joint["step_wall_s"], **score(RunDir(args.out / "joint").backbone, sets, base_cfg)}
    rows.append(joint_row)
    for seq in ("instance", "class"):
        step1_dir = args.out / f"{seq}-step1"
        step1 = train(step1_dir, build_config(args.recipe, data=str(chunks[f"{seq}/1"]), replay=replay, **common))
        rows.append({"sequence": seq, "setting": "step 1 (chunk 1 only)", "images_seen": step1["images_seen"],
                     "step_wall_s": step1["step_wall_s"], **score(RunDir(step1_dir).backbone, sets, base_cfg)})
        inherited = inherited_config(str(step1_dir))
        for setting, extra in (("sequential", {}), ("sequential + replay", {"replay": replay}),
                               ("sequential + MAS", {"reg": "mas", "reg_weight": args.reg_weight})):
            run_dir = args.out / f"{seq}-{setting.replace(' + ', '-').replace(' ', '-')}"
            cfg = build_config(args.recipe, base=inherited, data=str(chunks[f"{seq}/2"]),
                               resume_from=str(step1_dir), **common, **extra)
            m = train(run_dir, cfg)
            rows.append({"sequence": seq, "setting": setting, "images_seen": m["images_seen"],
                         "step_wall_s": m["step_wall_s"], **score(RunDir(run_dir).backbone, sets, base_cfg)})

    for r in rows:
        r["cost_vs_joint"] = round(r["step_wall_s"] / joint_row["step_wall_s"], 3) if r["step_wall_s"] else 0.0
        r["images_vs_joint"] = round(r["images_seen"] / joint_row["images_seen"], 3)
    print("| sequence | setting | kNN top-1, all classes | kNN top-1, first chunk's classes | images processed "
          "| step wall time (s) | cost vs joint (time / images) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sequence']} | {r['setting']} | {r['knn_all']:.2%} | {r['knn_first']:.2%} | {r['images_seen']:,} "
              f"| {r['step_wall_s']:.0f} | {r['cost_vs_joint']:.2f} / {r['images_vs_joint']:.2f} |")

    def get(seq: str, setting: str) -> dict[str, Any]:
        return next(r for r in rows if r["sequence"] == seq and r["setting"] == setting)

    j = joint_row["knn_all"]
    inst_gap = j - get("instance", "sequential + replay")["knn_all"]
    cls = {s: get("class", s)["knn_all"] for s in ("sequential", "sequential + replay", "sequential + MAS")}
    best = max(cls["sequential + replay"], cls["sequential + MAS"])
    costs = [get(s, t)["cost_vs_joint"] for s in ("instance", "class")
             for t in ("sequential", "sequential + replay", "sequential + MAS")]
    checks = {
        "instance: replay within 1.0 pt of joint": inst_gap <= 0.010,
        "class: replay or MAS within 3.0 pts of joint": j - best <= 0.030,
        "class: replay or MAS better than plain sequential": best > cls["sequential"],
        "second step costs <= 0.6x joint (wall time)": max(costs) <= 0.6,
    }
    print()
    for name, ok in checks.items():
        print(f"- {'PASS' if ok else 'FAIL'}: {name}")
    print(json.dumps({"config": {"recipe": args.recipe, "images": args.images, "epochs": base_cfg.epochs,
                                 "replay": replay, "reg_weight": args.reg_weight, "bank": args.bank},
                      "results": rows, "checks": checks}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
