"""timm-native backbone folders: ``config.json`` + ``model.safetensors`` (+ ``readout.safetensors``).

The same layout is a run's ``backbone/`` and the root of a published repo, so
``timm.create_model("hf-hub:org/name", pretrained=True)`` loads it directly.
The config is written from scratch (not inherited from timm's registry entry)
so every field describes this model: its true embedding size and the
preprocessing it was trained with. A model with a stage readout (zoo/readout.py) keeps
its trunk in ``model.safetensors``, which plain timm still loads (giving the trunk's
own embedding), and its readout in ``readout.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.edge import ModelFileError
from zoo.fsutil import atomic_path, atomic_write_json
from zoo.layout import BACKBONE_CONFIG, READOUT, READOUT_KEY, WEIGHTS
from zoo.preprocess import Preprocess

if TYPE_CHECKING:  # pragma: no cover
    import torch

def make_config(architecture: str, embed_dim: int, preprocess: Preprocess, *,
                model_args: dict[str, Any] | None = None, global_pool: str | None = None,
                fixed_input_size: bool = False, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A timm hub config for a headless backbone (num_classes 0).

    model_args: the timm constructor arguments the architecture was built with (e.g. a ViT's
    ``img_size`` and ``patch_size``); timm's hub loader passes them to ``create_model``, so they
    are part of the architecture. global_pool: the model's own pooling ('avg', a ViT's 'token'),
    informational as in timm's own config.json; omitted when None. fixed_input_size: the model
    accepts only ``input_size`` (a ViT without dynamic_img_size).
    """
    pretrained_cfg = {
        **preprocess.to_pretrained_cfg(),
        "num_classes": 0,
        "fixed_input_size": fixed_input_size,
        "license": "apache-2.0",
    }
    cfg: dict[str, Any] = {
        "architecture": architecture,
        "num_classes": 0,
        # The pooled embedding size, measured (timm's num_features can differ, e.g. mobilenetv3).
        "num_features": embed_dim,
        "embed_dim": embed_dim,
    }
    if global_pool:
        cfg["global_pool"] = global_pool
    if model_args:
        cfg["model_args"] = dict(model_args)
    cfg["pretrained_cfg"] = pretrained_cfg
    if extra:
        cfg["edgezoo"] = extra
    return cfg


def backbone_config(backbone: "torch.nn.Module", architecture: str, embed_dim: int, preprocess: Preprocess, *,
                    model_args: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                    ) -> dict[str, Any]:
    """`make_config` for a built backbone: its pooling and input-size constraint read from the model itself."""
    from zoo.backbones import global_pool_of, required_input_size

    return make_config(architecture, embed_dim, preprocess, model_args=model_args,
                       global_pool=global_pool_of(backbone),
                       fixed_input_size=required_input_size(backbone) is not None, extra=extra)


def backbone_from_config(config: dict[str, Any]) -> "torch.nn.Module":
    """The architecture a backbone config.json describes (``architecture`` + ``model_args``), randomly initialised.

    The one place a config.json becomes a model; timm's hub loader builds the same one.
    """
    from zoo.backbones import create_backbone

    return create_backbone(config["architecture"], **(config.get("model_args") or {}))


def read_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / BACKBONE_CONFIG
    if not path.is_file():
        raise ModelFileError(f"{path}: missing (not a timm backbone folder)")
    return json.loads(path.read_text())


def preprocess_of(folder_or_config: str | Path | dict[str, Any]) -> Preprocess:
    cfg = folder_or_config if isinstance(folder_or_config, dict) else read_config(folder_or_config)
    return Preprocess.from_pretrained_cfg(cfg["pretrained_cfg"])


def _save_tensors(state: dict[str, "torch.Tensor"], path: Path) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
        tmp.chmod(0o644)


def save_backbone(model: "torch.nn.Module", folder: str | Path, config: dict[str, Any]) -> Path:
    """Write weights (safetensors, never pickle) and config; atomic per file.

    A `StageReadout` is written as its trunk (model.safetensors) and its readout (readout.safetensors, first:
    model.safetensors is the newest file, the one later stages compare their outputs' age with).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    readout_state = getattr(model, "readout_state", None)
    if readout_state is not None:
        _save_tensors(readout_state(), folder / READOUT)
        model = model.trunk
    else:
        (folder / READOUT).unlink(missing_ok=True)  # another model's readout must not outlive it
    _save_tensors(model.state_dict(), folder / WEIGHTS)
    atomic_write_json(folder / BACKBONE_CONFIG, config)
    return folder


def readout_spec(config: dict[str, Any]) -> dict[str, Any] | None:
    """config.json's stage readout block (zoo/readout.py), None for a plain timm backbone."""
    return (config.get("edgezoo") or {}).get(READOUT_KEY)


def load_backbone(folder: str | Path, map_location: str = "cpu") -> "torch.nn.Module":
    """Re-create the architecture (name and model_args) and load the safetensors weights (strict)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg = read_config(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ModelFileError(f"{weights}: missing")
    model = backbone_from_config(cfg)
    model.load_state_dict(load_file(str(weights), device=map_location), strict=True)
    model.pretrained_cfg = {**model.pretrained_cfg, **cfg["pretrained_cfg"], "architecture": cfg["architecture"]}
    spec = readout_spec(cfg)
    if spec is not None:
        from zoo.readout import StageReadout

        if not (folder / READOUT).is_file():
            raise ModelFileError(f"{folder / READOUT}: missing (config.json describes a stage readout)")
        trunk = model
        model = StageReadout.from_spec(trunk, spec)
        try:
            model.load_readout_state(load_file(str(folder / READOUT), device=map_location))
        except ValueError as exc:
            raise ModelFileError(f"{folder / READOUT}: {exc}") from None
        model.pretrained_cfg = trunk.pretrained_cfg
    return model.eval()
