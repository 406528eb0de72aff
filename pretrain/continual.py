"""Continual pretraining on streaming data: start from a previous run or a published model.

Hu et al., "How Well Does Self-Supervised Pre-Training Perform with Streaming
Data?", ICLR 2022: sequential pretraining chunk after chunk comes close to joint
training under mild shift; replay or parameter regularisation closes most of
the gap under strong shift.

A continual step (``edgezoo pretrain --data CHUNK --resume-from SRC``):
- starts from SRC's backbone (and projector, when SRC is a RUN_DIR) and recipe;
- with ``--replay N``, trains on the chunk plus SRC's replay reservoir (``replay_in.npz``,
  copied into this run so an interrupted step resumes with the same images);
- carries forward a reservoir of at most ``--replay`` images (``replay.npz``);
- optionally pulls toward SRC's weights (``--reg l2sp|mas``; MAS importance is
  estimated on SRC's training images and stored as ``mas_importance.safetensors``);
- records its lineage (``lineage.json``): which chunks, in which order, with which settings.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrain.preprocess import center_crop_normalize
from pretrain.replay import Reservoir
from zoo.errors import RunDirError
from zoo.fsutil import atomic_path, atomic_write_json
from zoo.layout import BACKBONE_CONFIG, IMPORTANCE, LINEAGE, METRICS, REPLAY, REPLAY_IN, TORCH_FILES, WEIGHTS, RunDir

__all__ = ["Source", "Reservoir", "resolve_source", "inherited_config"]

log = logging.getLogger(__name__)

# Options that describe a step's data or continual settings, not the recipe to inherit.
_NOT_INHERITED = {"data", "eval_data", "max_images", "resume_from", "replay", "reg", "reg_weight", "extra"}


@dataclass
class Source:
    """What a continual step starts from."""

    spec: str
    backbone_dir: Path
    run_dir: Path | None = None  # a RUN_DIR (has checkpoint, config.yaml, replay) or None for a hub model
    config: dict[str, Any] = field(default_factory=dict)  # recipe values to inherit
    lineage: list[dict[str, Any]] = field(default_factory=list)


def resolve_source(spec: str) -> Source:
    """A RUN_DIR path, or a published ``org/name[@revision]`` resolved through the zoo."""
    import yaml

    path = Path(spec).expanduser()
    run = RunDir(path)
    if run.backbone_config.is_file():
        if run.pretrain_state() != "complete":
            raise RunDirError(f"{path}: the run did not complete (no {METRICS}); finish it with --resume first")
        config = yaml.safe_load(run.config.read_text()) or {}
        lineage = json.loads(run.lineage.read_text()) if run.lineage.is_file() else [_step_record(config, path, None)]
        return Source(spec, run.backbone, path, {k: v for k, v in config.items() if k not in _NOT_INHERITED},
                      lineage)
    from zoo.pretrained import fetch  # a published model: download (or check out) its verified files

    repo_id, _, revision = spec.partition("@")
    folder = fetch(repo_id, list(TORCH_FILES), revision or None, optional=[LINEAGE]).folder
    cfg = json.loads((folder / BACKBONE_CONFIG).read_text())
    pre = cfg["pretrained_cfg"]
    extra = cfg.get("edgezoo", {})
    arch = cfg["architecture"]
    inherited = {"model": arch.removesuffix("_smallstem"), "small_stem": arch.endswith("_smallstem"),
                 "img_size": int(pre["input_size"][-1]), "crop_pct": float(pre.get("crop_pct", 1.0)),
                 "mean": list(pre["mean"]), "std": list(pre["std"]), "model_args": cfg.get("model_args") or {}}
    if extra.get("method"):
        inherited["method"] = extra["method"]
    lineage = json.loads((folder / LINEAGE).read_text()) if (folder / LINEAGE).is_file() else \
        [{"data": extra.get("data"), "from": None, "model": spec}]
    return Source(spec, folder, None, inherited, lineage)


def inherited_config(spec: str) -> dict[str, Any]:
    """The recipe values a continual step inherits from its source (flags and recipes override them)."""
    return resolve_source(spec).config


def load_start_weights(method: torch.nn.Module, source: Source) -> None:
    """Backbone from the source (strict); projector too when the source is a RUN_DIR with matching shapes."""
    from safetensors.torch import load_file

    state = load_file(str(source.backbone_dir / WEIGHTS))
    method.backbone.load_state_dict(state, strict=True)
    ckpt = RunDir(source.run_dir).checkpoint if source.run_dir else None
    if ckpt is not None and ckpt.is_file():
        model_state = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
        proj = {k.removeprefix("projector."): v for k, v in model_state.items() if k.startswith("projector.")}
        own = method.projector.state_dict()
        if proj.keys() == own.keys() and all(proj[k].shape == own[k].shape for k in own):
            method.projector.load_state_dict(proj)
        else:
            log.warning("projector of %s does not fit this run's (--proj-dim?): starting it fresh", source.spec)


def replay_images(run_dir: Path, source: Source, resume: bool) -> np.ndarray | None:
    """The earlier images this step replays: the source's reservoir, copied into this run once."""
    if not resume:
        if source.run_dir is not None and (source.run_dir / REPLAY).is_file():
            src = Reservoir.load(source.run_dir)
            src.save(run_dir, REPLAY_IN)
    res = Reservoir.load(run_dir, name=REPLAY_IN)
    return res.images if len(res) else None


def carry_reservoir(run_dir: Path, source: Source | None, capacity: int, chunk: np.ndarray, seed: int,
                    resume: bool) -> Reservoir:
    """The reservoir handed to the next step: the source's, offered this chunk. Saved before training."""
    if resume and (run_dir / REPLAY).is_file():
        return Reservoir.load(run_dir)
    if source is not None and source.run_dir is not None and (source.run_dir / REPLAY).is_file():
        res = Reservoir.load(source.run_dir, capacity=capacity, seed=seed)
    else:
        res = Reservoir(capacity, rng=np.random.default_rng(seed))
    res.rng = np.random.default_rng(seed + res.seen)
    res.offer(chunk)
    res.save(run_dir)
    return res


def mas_importance_of(source: Source, backbone: torch.nn.Module, images: np.ndarray, preprocess,
                      device: torch.device, max_images: int = 1024) -> dict[str, torch.Tensor]:
    """MAS importance of the source's weights on its own chunk, scaled to a largest value of 1.

    The raw importances are stored with the source run when possible.
    """
    from safetensors.torch import load_file, save_file

    from pretrain.modules.regularizers import mas_importance, scale_to_unit_max

    stored = source.run_dir / IMPORTANCE if source.run_dir else None
    if stored is not None and stored.is_file():
        return scale_to_unit_max(load_file(str(stored)))
    sel = images[: max_images]

    def batches():
        for i in range(0, len(sel), 128):
            x = torch.from_numpy(np.ascontiguousarray(sel[i:i + 128])).permute(0, 3, 1, 2)
            yield center_crop_normalize(x, preprocess).to(device)  # normalised on the CPU, as it always was

    importance = mas_importance(backbone, batches())
    if stored is not None:
        try:
            with atomic_path(stored) as tmp:
                save_file({k: v.cpu().contiguous() for k, v in importance.items()}, str(tmp))
        except OSError:
            log.warning("could not store MAS importance with %s", source.run_dir)
    return scale_to_unit_max(importance)


def _step_record(config: dict[str, Any], run_dir: Path, num_images: int | None) -> dict[str, Any]:
    return {"run": run_dir.name, "data": config.get("data"), "num_images": num_images,
            "max_images": config.get("max_images"), "epochs": config.get("epochs"), "method": config.get("method"),
            "from": config.get("resume_from"), "replay": config.get("replay"), "reg": config.get("reg"),
            "reg_weight": config.get("reg_weight")}


def write_lineage(run_dir: Path, source: Source, config: dict[str, Any], num_chunk: int, num_replay: int) -> None:
    record = _step_record(config, run_dir, num_chunk)
    record.update(replayed_images=num_replay, finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    atomic_write_json(RunDir(run_dir).lineage, [*source.lineage, record])
