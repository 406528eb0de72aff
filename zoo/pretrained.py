"""``zoo.from_pretrained``: a published model as an embedder, from the local hub or a Hub.

Resolution: the local hub when the repo exists there (or ``hub="local"``), else
the Hugging Face Hub (or whatever HF_ENDPOINT points at, e.g. olah serving a
local hub to an offline fleet) through huggingface_hub's normal cache, so
HF_HUB_OFFLINE=1 works once the files are cached. Reading never leaves anything on a hub:
no upload call is reachable from here, whatever token is configured. Only the files the chosen
backend needs are fetched, each verified against manifest.json before use;
weights are read from safetensors or ONNX only, never unpickled.

Backends: "torch" (timm + zoo.timm_files.load_backbone, ``.model`` is the
module), "onnx" (zoo.edge.EdgeEmbedder, never imports torch) and "auto" (torch
when it is installed, else onnx). Both preprocess with zoo.preprocess.Preprocess
from the repo's config.json, so they embed the same pixels. ``variant="int8"`` is
an ONNX model: "auto" then loads it with onnx, and "torch" refuses it (VariantError).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from zoo.hub import HubError, fetch
from zoo.layout import BACKBONE_CONFIG, ONNX_VARIANTS, READOUT, REPO_PREPROCESS, TORCH_FILES
from zoo.preprocess import Preprocess, batched, l2_normalize

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")


# --- embedders ------------------------------------------------------------------------------------------

class TorchEmbedder:
    """The timm backbone in eval mode, fed by the shared numpy preprocessing."""

    def __init__(self, folder: str | Path, device: str = "cpu") -> None:
        from zoo.timm_files import load_backbone, read_config

        self._set(load_backbone(folder), read_config(folder), device)

    @classmethod
    def random_init(cls, config: dict[str, Any], seed: int = 0, device: str = "cpu") -> "TorchEmbedder":
        """The config's architecture (and model_args) at random initialisation: the baseline a trained model must
        beat."""
        import torch

        from zoo.timm_files import backbone_from_config

        torch.manual_seed(seed)
        return cls.of(backbone_from_config(config), config, device)

    @classmethod
    def of(cls, model: Any, config: dict[str, Any], device: str = "cpu") -> "TorchEmbedder":
        """A built backbone (e.g. a run's starting weights) with the config.json that describes it."""
        embedder = cls.__new__(cls)
        embedder._set(model.eval(), config, device)
        return embedder

    def _set(self, model: Any, config: dict[str, Any], device: str) -> None:
        from zoo.backbones import embedding_dim
        from zoo.timm_files import preprocess_of

        import torch

        self.device = device
        # channels_last: 2.7x the images/s of EfficientNet-Lite0 at 128 px on a 2-core CPU (depthwise convolutions)
        self.memory_format = torch.channels_last
        self.model = model.to(device, memory_format=self.memory_format)
        self.preprocess = preprocess_of(config)
        # measured: a stage readout's config describes the readout, and the baselines built from it (its
        # architecture at random init, its --init weights) are the plain trunk, of another width
        self.dim = embedding_dim(self.model, self.preprocess.img_size)

    def embed(self, items: Any, batch_size: int = 32) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings of images, paths or uint8 arrays (or one of them)."""
        import torch

        out = [np.zeros((0, self.dim), np.float32)]
        for chunk in batched(as_batch(items), batch_size):
            pixels, _ = self.preprocess.decode(chunk)
            x = torch.from_numpy(self.preprocess.normalize(pixels)).to(self.device, memory_format=self.memory_format)
            with torch.inference_mode():
                out.append(self.model(x).float().cpu().numpy())
        return l2_normalize(np.concatenate(out))


def as_batch(items: Any) -> list[Any]:
    """A list of images from one image (a path, a PIL image, an (H, W, 3) array) or an iterable of them."""
    if isinstance(items, (str, Path)) or (isinstance(items, np.ndarray) and items.ndim == 3):
        return [items]
    if hasattr(items, "convert") and hasattr(items, "size"):  # a PIL image, without importing PIL here
        return [items]
    return list(items)


@dataclass
class PretrainedModel:
    """A published model ready to embed: ``embed(images | paths | arrays) -> (N, D)`` L2-normalised float32."""

    repo_id: str
    revision: str
    commit: str
    backend: str
    variant: str | None
    path: Path
    config: dict[str, Any]
    runner: Any = field(repr=False)

    @property
    def model(self) -> Any:
        """The torch module (torch backend), else None."""
        return getattr(self.runner, "model", None) if self.backend == "torch" else None

    @property
    def preprocess(self) -> Preprocess:
        return self.runner.preprocess

    @property
    def dim(self) -> int:
        return int(self.config["embed_dim"])

    def embed(self, items: Any, batch_size: int = 32) -> np.ndarray:
        return np.asarray(self.runner.embed(as_batch(items), batch_size=batch_size), dtype=np.float32)

    __call__ = embed


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None and importlib.util.find_spec("timm") is not None


class VariantError(HubError, ValueError):
    """A variant the chosen backend does not have (int8 exists only as an ONNX model)."""


def resolve_backend(backend: str, variant: str = "fp32") -> str:
    """The backend to load with; an explicit one must have `variant` (it is never silently ignored)."""
    if backend not in BACKENDS:
        raise HubError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if variant not in ONNX_VARIANTS:
        raise VariantError(f"unknown variant {variant!r}: expected one of {', '.join(ONNX_VARIANTS)}")
    if backend == "auto":
        return "torch" if variant == "fp32" and _torch_available() else "onnx"  # int8 is ONNX only
    if backend == "torch" and variant != "fp32":
        raise VariantError(f"variant {variant!r} is an ONNX model: load it with backend=\"onnx\" (the torch "
                           "backend has the fp32 weights only)")
    return backend


def _needed_files(backend: str, variant: str) -> list[str]:
    if backend == "torch":
        return list(TORCH_FILES)
    return [BACKBONE_CONFIG, ONNX_VARIANTS[variant]]


def from_pretrained(repo_id: str, revision: str | None = None, backend: str = "auto", *, variant: str = "fp32",
                    hub: str | None = None, hub_dir: str | Path | None = None, device: str = "cpu",
                    providers: Iterable[str] | None = None) -> PretrainedModel:
    """Load a published edgezoo model (see the module docstring for where from and how)."""
    backend = resolve_backend(backend, variant)
    files = _needed_files(backend, variant)
    # The ONNX runtime may read preprocess.json beside the model, and a stage readout's torch model its
    # readout.safetensors (the ONNX files hold it inline): fetched and verified like the rest when there.
    optional = [REPO_PREPROCESS] if backend == "onnx" else [READOUT]
    snap = fetch(repo_id, files, revision, optional=optional, hub=hub, hub_dir=hub_dir)
    config = json.loads((snap.folder / BACKBONE_CONFIG).read_text())
    preprocess = Preprocess.from_pretrained_cfg(config["pretrained_cfg"])
    if backend == "torch":
        runner: Any = TorchEmbedder(snap.folder, device=device)
    else:
        from zoo.edge import EdgeEmbedder

        runner = EdgeEmbedder(snap.folder / ONNX_VARIANTS[variant], preprocess=preprocess,
                              providers=list(providers) if providers else None)
    log.info("loaded %s@%s (%s, %s) from the %s hub", repo_id, snap.revision, snap.commit[:12], backend, snap.source)
    return PretrainedModel(repo_id, snap.revision, snap.commit, backend, variant if backend == "onnx" else None,
                           snap.folder, config, runner)
