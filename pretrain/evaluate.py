"""Evaluation shared by training, benchmarks and ``edgezoo eval``: features, kNN, RankMe.

kNN follows the protocol of lightly's CIFAR-10 benchmark (Wu et al. 2018's
weighted vote): L2-normalised backbone features, k = 200, temperature 0.1, the
training set as the bank, top-1 on the test set. RankMe: Garrido et al.,
"RankMe: Assessing the Downstream Performance of Pretrained Self-Supervised
Representations by Their Rank", ICML 2023.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pretrain.config import PretrainConfig
from pretrain.data import load_knn_bank, load_split
from pretrain.distributed import select_device
from pretrain.modules.one_pixel_conv import use_one_pixel_convs
from pretrain.preprocess import center_crop_normalize
from zoo import datasets
from zoo.backbones import in_mode
from zoo.errors import RunDirError
from zoo.fsutil import atomic_write_json
from zoo.knn import KNN_K, KNN_T
from zoo.layout import CONFIG, RunDir
from zoo.preprocess import Preprocess
from zoo.records import Evaluation, Metrics
from zoo.timm_files import backbone_from_config, load_backbone, preprocess_of, read_config

log = logging.getLogger(__name__)


@torch.no_grad()
def extract_features(backbone: nn.Module, images: np.ndarray | torch.Tensor, preprocess: Preprocess,
                     device: torch.device | str = "cpu", batch_size: int | None = None, amp: bool = False,
                     ) -> torch.Tensor:
    """L2-normalised pooled features of stored (N, R, R, 3) uint8 images (centre crop + normalise).

    Batches of 512 on a GPU; of 32 on a CPU, where larger batches fall out of the caches (EfficientNet-Lite0 at
    128 px on 2 cores: 183 images/s at 32, 81 at 512).
    """
    batch_size = batch_size or (512 if torch.device(device).type == "cuda" else 32)
    feats = []
    layout = torch.channels_last if _channels_last(backbone) else torch.contiguous_format
    with in_mode(backbone):
        for i in range(0, len(images), batch_size):
            chunk = images[i:i + batch_size]
            x = torch.as_tensor(np.ascontiguousarray(chunk)) if isinstance(chunk, np.ndarray) else chunk
            x = center_crop_normalize(x.permute(0, 3, 1, 2), preprocess, device).contiguous(memory_format=layout)
            with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=amp):
                f = backbone(x)
            feats.append(F.normalize(f.float(), dim=1))
    return torch.cat(feats)


def _channels_last(model: nn.Module) -> bool:
    """The model's convolutions are stored channels_last (the trainer's, or `evaluate_run`'s): feed it so, or
    every convolution converts its input (half the speed of a CNN on the CPU)."""
    kernel = next((p for p in model.parameters() if p.dim() == 4 and p.shape[-1] > 1), None)
    return kernel is not None and kernel.is_contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def knn_top1(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
             test_labels: torch.Tensor, k: int = KNN_K, t: float = KNN_T, num_classes: int | None = None,
             chunk: int = 1024) -> float:
    """Weighted kNN top-1 accuracy on normalised features (weights exp(sim / t))."""
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, train_feats.shape[0])
    train_labels = train_labels.to(train_feats.device)
    correct = 0
    for i in range(0, test_feats.shape[0], chunk):
        q = test_feats[i:i + chunk].to(train_feats.device)
        sim, nn_idx = (q @ train_feats.T).topk(k, dim=1)
        weights = (sim / t).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        votes.scatter_add_(1, train_labels[nn_idx], weights)
        correct += (votes.argmax(dim=1).cpu() == test_labels[i:i + chunk].cpu()).sum().item()
    return correct / test_feats.shape[0]


@torch.no_grad()
def rankme(feats: torch.Tensor, max_samples: int = 25600, eps: float = 1e-7) -> float:
    """exp(entropy) of the normalised singular values of the (N, D) embedding matrix."""
    x = feats[:max_samples].double().cpu()
    s = torch.linalg.svdvals(x)
    p = s / s.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))


def knn_protocol(backbone: nn.Module, train_images: np.ndarray, train_labels: torch.Tensor | None,
                 test_images: np.ndarray | None, test_labels: torch.Tensor | None, preprocess: Preprocess,
                 k: int = KNN_K, t: float = KNN_T, device: torch.device | str = "cpu", amp: bool = False,
                 ) -> dict[str, float | None]:
    """The project's evaluation: kNN top-1 (training images as the bank) and RankMe.

    RankMe is computed on the test embeddings when there are labels to evaluate,
    else on the training embeddings (label-free runs still get a score).
    """
    train_feats = extract_features(backbone, train_images, preprocess, device, amp=amp)
    if test_images is None or train_labels is None or test_labels is None:
        return {"knn_top1": None, "rankme": rankme(train_feats)}
    test_feats = extract_features(backbone, test_images, preprocess, device, amp=amp)
    return {"knn_top1": knn_top1(train_feats, train_labels, test_feats, test_labels, k, t),
            "rankme": rankme(test_feats)}


def evaluate_run(run_dir, data: str | None = None, eval_data: str | None = None, max_train: int | None = None,
                 device: str = "auto") -> dict:
    """kNN top-1 and RankMe of a finished run's backbone, of its architecture at random init, and (for an
    ``--init`` run) of its starting weights untrained, all under one protocol; RUN_DIR/eval.json."""
    run = RunDir(run_dir)
    start = time.perf_counter()
    if not run.config.is_file():
        raise RunDirError(f"{run.path}: not a RUN_DIR (no {CONFIG}); pass the --out of `edgezoo pretrain`")
    cfg = PretrainConfig.load(run.config)
    if max_train is not None:
        cfg = dataclasses.replace(cfg, eval_max_train=max_train)
    pre = preprocess_of(run.backbone)
    dev = select_device(device)
    train_spec = data or cfg.data
    # Decoding and embedding a large bank takes minutes on a CPU: every step says what it is doing.
    log.info("evaluating %s on %s: loading the kNN bank from %s (at most %s images)", run.path, dev, train_spec,
             cfg.eval_max_train or "all")
    bank = load_knn_bank(cfg, pre, train_spec)
    test_spec = eval_data or cfg.eval_data or datasets.eval_spec(train_spec)
    if test_spec and bank.labels is not None:
        log.info("loading the labelled test split %s", test_spec)
        test = load_split(test_spec, pre)
    else:
        test = None
        log.info("no labelled test split: RankMe only")
    result: dict = {"train": train_spec, "test": test_spec if test is not None else None, "k": cfg.knn_k,
                    "t": cfg.knn_t, "num_train": len(bank.images), "num_test": len(test.images) if test else 0}

    def protocol(model: nn.Module) -> dict[str, float | None]:
        if dev.type == "cpu":
            use_one_pixel_convs(model)
        if cfg.channels_last and dev.type in ("cpu", "cuda"):  # as the trainer runs it
            model.to(memory_format=torch.channels_last)
        return knn_protocol(model, bank.images, bank.labels, test.images if test else None,
                            test.labels if test else None, pre, cfg.knn_k, cfg.knn_t, dev)

    own_protocol = data is None and eval_data is None and max_train is None
    measured = _measured_at_the_end(run, len(bank.images)) if own_protocol else None
    if measured is not None:
        log.info("kNN and RankMe of the trained backbone: measured at the end of training under this protocol "
                 "(%s), not embedded again", run.metrics.name)
        result.update(measured)
    else:
        log.info("embedding %d bank and %d test images, then kNN (k=%d, t=%g) and RankMe", result["num_train"],
                 result["num_test"], cfg.knn_k, cfg.knn_t)
        result.update(protocol(load_backbone(run.backbone).to(dev)))
    # The same architecture before training, under the same protocol: what the number above is worth.
    backbone_cfg = read_config(run.backbone)
    log.info("the same protocol for %s%s at random initialisation (seed %d)", backbone_cfg["architecture"],
             f" {backbone_cfg['model_args']}" if backbone_cfg.get("model_args") else "", cfg.seed)
    torch.manual_seed(cfg.seed)
    baseline = protocol(backbone_from_config(backbone_cfg).to(dev))
    result.update({"random_init_knn_top1": baseline["knn_top1"], "random_init_rankme": baseline["rankme"]})
    if cfg.init:  # a run that started from pretrained weights is worth what it adds to them
        log.info("the same protocol for the starting weights %s, untrained", cfg.init)
        started = protocol(starting_backbone(cfg)[0].to(dev))
        result.update({"init": cfg.init, "init_knn_top1": started["knn_top1"], "init_rankme": started["rankme"]})
    atomic_write_json(run.eval, Evaluation.from_json(result).to_json())
    init = f", {cfg.init} untrained {_pct(result['init_knn_top1'])}" if cfg.init else ""
    log.info("evaluated in %.0f s: kNN top-1 %s (random init %s%s), RankMe %.1f (written to %s)",
             time.perf_counter() - start, _pct(result["knn_top1"]), _pct(result["random_init_knn_top1"]), init,
             result["rankme"], run.eval)
    return result


def _measured_at_the_end(run: RunDir, bank_size: int) -> dict[str, float | None] | None:
    """The final kNN and RankMe that training wrote with these weights and this bank, if it did."""
    metrics = Metrics.read(run.metrics) if run.metrics.is_file() else Metrics()
    if metrics.rankme is None or metrics.knn_bank != bank_size:
        return None
    return {"knn_top1": metrics.knn_top1, "rankme": metrics.rankme}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def starting_backbone(cfg: PretrainConfig) -> tuple["torch.nn.Module", dict[str, Any]]:
    """The run's backbone before any training, in eval mode, and its timm config.json: the --init weights, else
    random init seeded with cfg.seed. What a trained model is measured against (the photo benchmarks)."""
    from pretrain.data import preprocess_of
    from pretrain.init import load_init
    from zoo.backbones import embedding_dim
    from zoo.timm_files import backbone_config

    torch.manual_seed(cfg.seed)
    backbone = cfg.create_backbone()
    if cfg.init:
        load_init(backbone, cfg.init, cfg.architecture)
    config = backbone_config(backbone, cfg.architecture, embedding_dim(backbone, cfg.img_size), preprocess_of(cfg),
                             model_args=cfg.model_args)
    return backbone.eval(), config
