"""Where in the network the class information is: each stage's pooled features against the deployed embedding.

    python benchmarks/readouts.py --data ../shared/datasets/flowers --img-size 128 --out runs/readouts/flowers
    python benchmarks/readouts.py --data ../shared/datasets/flowers --run runs/photo-bench/flowers/effssl-init-lp-ft \\
        --out runs/readouts/flowers-lp-ft

A model's embedding is its last pooled layer; for a backbone trained on ImageNet that layer is shaped for
ImageNet's 1,000 classes, and a person's photos may be told apart better by what an earlier stage sees (colour,
texture, parts). For one backbone (`--init` SOURCE, default the ImageNet Lite0 the photo bench starts from, or a
trained `--run`), every labelled photo under --data goes through the deployment preprocessing once, and each
readout is scored without a split as in benchmarks/photo_bench.py (leave-one-out 1-NN, kNN-20, precision@8):

- the embedding as deployed, and the mean of it and its horizontal flip's (test-time augmentation);
- each stage's output, average-pooled (timm's ``forward_intermediates``);
- the last ``--concat`` stages concatenated, each L2-normalised and centred on the gallery mean first (no labels:
  what a gallery's own embeddings allow).

The deployed embedding and the concatenation also get a supervised linear probe (`zoo.probe`, 5-fold): an oracle
with the labels, the ceiling a label-free score of the same features is read against. Prints a markdown table and
one JSON line (also OUT/readouts.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from zoo.pretrained import TorchEmbedder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.folder_knn import TOP_K, link_class_folders  # noqa: E402
from benchmarks.photo_bench import INIT, score_cells, scores  # noqa: E402
from zoo.preprocess import batched, l2_normalize  # noqa: E402
from zoo.readout import stage_maps  # noqa: E402

log = logging.getLogger("readouts")

DEPLOYED = "embedding (as deployed)"
CONCAT_STAGES = 4


def readouts(embedder: "TorchEmbedder", paths: list[Path], batch_size: int = 64) -> dict[str, np.ndarray]:
    """The deployed embedding, its flip average and each stage average-pooled, for every image (N, D_i) each,
    through the embedder's own preprocessing, model and memory format."""
    import torch

    out: dict[str, list[np.ndarray]] = {}
    model, preprocess = embedder.model, embedder.preprocess
    for chunk in batched(paths, batch_size):
        pixels, _ = preprocess.decode(chunk)
        x = torch.from_numpy(preprocess.normalize(pixels)).to(memory_format=embedder.memory_format)
        with torch.inference_mode():
            embedding, maps = stage_maps(model, x)
            embedding, flipped = embedding.float(), model(x.flip(3)).float()
            stages = [f.float().mean((2, 3)) for f in maps]
        out.setdefault(DEPLOYED, []).append(embedding.numpy())
        out.setdefault("embedding, flip-averaged", []).append(
            (torch.nn.functional.normalize(embedding, dim=1) + torch.nn.functional.normalize(flipped, dim=1)).numpy())
        for i, f in enumerate(stages):
            out.setdefault(f"stage {i} pooled ({f.shape[1]})", []).append(f.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def centred(x: np.ndarray) -> np.ndarray:
    """L2-normalised, the gallery mean removed, normalised again: each part of a concatenation weighs the same."""
    x = l2_normalize(x)
    return l2_normalize(x - x.mean(axis=0, keepdims=True))


def backbone_of(args: argparse.Namespace, data: Path) -> tuple["TorchEmbedder", str]:
    """(embedder, name) of the --run's trained backbone or the --init source's starting weights."""
    from zoo.pretrained import TorchEmbedder

    if args.run:
        from zoo.layout import RunDir

        return TorchEmbedder(RunDir(args.run).backbone), str(args.run)
    from pretrain.config import build_config
    from pretrain.evaluate import starting_backbone

    cfg = build_config(None, data=str(data), init=args.init, small_stem=False,
                       **({"img_size": args.img_size} if args.img_size else {}))
    return TorchEmbedder.of(*starting_backbone(cfg)), f"{args.init} at {cfg.img_size} px"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a labelled photo folder (label = parent folder)")
    p.add_argument("--init", default=INIT, help=f"the backbone's source, as pretrain --init (default: {INIT})")
    p.add_argument("--run", type=Path, default=None, help="a trained RUN_DIR instead of --init")
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the source's own)")
    p.add_argument("--concat", type=int, default=CONCAT_STAGES, help="last stages concatenated (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("runs/readouts"), help="data links and readouts.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from zoo.probe import linear_probe_accuracy

    paths, labels, classes = link_class_folders(args.data.resolve(), args.out / "data")
    embedder, name = backbone_of(args, args.out / "data")
    feats = readouts(embedder, paths)
    stages = [k for k in feats if k.startswith("stage ")]
    concat = f"last {args.concat} stages, concatenated"
    feats[concat] = np.concatenate([centred(feats[k]) for k in stages[-args.concat:]], axis=1)
    probed = {DEPLOYED, concat}
    rows = []
    for key, x in feats.items():
        row: dict[str, Any] = {"readout": key, "dim": int(x.shape[1]), **scores(l2_normalize(x), labels)}
        if key in probed:
            row["linear_probe"] = linear_probe_accuracy(x, labels)
        rows.append(row)
        log.info("%s", row)
    report = {"data": str(args.data), "backbone": name, "images": len(paths), "classes": classes, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "readouts.json").write_text(json.dumps(report, indent=1))
    print(markdown(report))
    print(json.dumps(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    """The table BENCHMARKS.md shows."""
    lines = [f"{report['backbone']} on {report['data']}: {report['images']} photos, {len(report['classes'])} classes",
             "", f"| readout | dim | LOO 1-NN % | LOO kNN-20 % | precision@{TOP_K} % | linear probe % (labels) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        probe = f"{100 * r['linear_probe']:.1f}" if "linear_probe" in r else "-"
        lines.append(f"| {r['readout']} | {r['dim']} | {score_cells(r)} | {probe} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
