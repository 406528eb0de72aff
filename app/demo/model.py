"""The demo's models and galleries: what `edgezoo demo` serves and searches.

A RUN_DIR, an export folder, a model file or a published ``org/name[@version]``
becomes a `DemoModel` (onnxruntime by default, so a serving machine needs no
torch); `model_choices` lists what the model picker offers; `default_gallery`
picks a folder of images from the model's own domain.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from zoo.errors import EdgezooError
from zoo.layout import EXPORT, ONNX, ONNX_INT8, ONNX_VARIANTS, VALIDATION, WEIGHTS, RunDir

log = logging.getLogger(__name__)

BACKENDS = ("onnx", "torch")
VARIANTS = ("fp32", "int8")


class DemoError(EdgezooError):
    """The demo cannot start (no model, no gallery)."""


# --- models ---------------------------------------------------------------------------------------------

@dataclass
class DemoModel:
    """An embedder and what identifies it in a gallery index record."""

    name: str
    embed: Callable[[Sequence[Any]], np.ndarray]
    dim: int
    key: dict[str, Any]  # name, backend, model file sha256, preprocessing: any change rebuilds the index
    description: str
    run_dir: Path | None = None
    config: dict[str, Any] | None = None  # timm config.json: architecture for the random-init reference



def _identity(name: str, backend: str, model_file: Path, preprocess: Any, **extra: Any) -> dict[str, Any]:
    from zoo.manifest import sha256_file

    return {"name": name, "backend": backend, "file": model_file.name, "sha256": sha256_file(model_file),
            "preprocess": preprocess.as_dict(), **extra}


def _onnx_file(export_dir: Path, variant: str) -> Path:
    from zoo.edge import read_validation

    read_validation(export_dir)  # refuses an export that failed validation or changed since
    return export_dir / (ONNX if variant == "fp32" else ONNX_INT8)


def _load_local(path: Path, backend: str, variant: str) -> DemoModel:
    """A RUN_DIR, an export folder or one .onnx/.ort file."""
    from zoo.edge import EdgeEmbedder

    from zoo.timm_files import read_config

    run = RunDir(path)
    run_dir = path if run.backbone.is_dir() or run.export.is_dir() else None
    config = read_config(run.backbone) if run_dir and run.backbone_config.is_file() else None
    name = str(path)
    if backend == "torch":
        if run_dir is None:
            raise DemoError(f"{path}: the torch backend needs a RUN_DIR (with backbone/)")
        if variant != "fp32":
            raise DemoError(f"variant {variant!r} is an ONNX model: use --backend onnx (torch has the fp32 weights)")
        from zoo.pretrained import TorchEmbedder

        runner = TorchEmbedder(run.backbone)
        key = _identity(str(path.resolve()), "torch", run.weights, runner.preprocess)
        return DemoModel(name, runner.embed, runner.dim, key, f"torch, {runner.dim}-d", run_dir, config)
    if path.is_file():
        model_file = path
    elif run_dir is not None:
        model_file = _onnx_file(run.export, variant)
    elif (path / ONNX).is_file():
        model_file = _onnx_file(path, variant)
    else:
        raise DemoError(f"{path}: not a RUN_DIR, an export folder or an .onnx/.ort file")
    embedder = EdgeEmbedder(model_file)
    key = _identity(str(path.resolve()), "onnx", model_file, embedder.preprocess)
    return DemoModel(name, embedder.embed, embedder.dim, key,
                     f"onnxruntime {model_file.name}, {embedder.dim}-d, {embedder.preprocess.img_size} px", run_dir,
                     config)


def _load_published(repo_id: str, revision: str | None, backend: str, variant: str, hub: str | None,
                    hub_dir: str | Path | None) -> DemoModel:
    from zoo.hub import named_hub
    from zoo.pretrained import from_pretrained

    hub = named_hub(hub, hub_dir)  # as everywhere: a --hub-dir means the local hub
    model = from_pretrained(repo_id, revision, backend=backend, variant=variant, hub=hub, hub_dir=hub_dir)
    model_file = model.path / (ONNX_VARIANTS[variant] if backend == "onnx" else WEIGHTS)
    name = f"{repo_id}@{model.revision}"
    key = _identity(name, backend, model_file, model.preprocess, commit=model.commit)
    what = f"onnxruntime {model_file.name}" if backend == "onnx" else "torch"
    return DemoModel(name, model.embed, model.dim, key,
                     f"{what}, {model.dim}-d, {model.preprocess.img_size} px, commit {model.commit[:10]}",
                     config=model.config)


def load_model(spec: str, *, backend: str = "onnx", variant: str = "fp32", hub: str | None = None,
               hub_dir: str | Path | None = None) -> DemoModel:
    """A RUN_DIR / export folder / model file if `spec` is a path, else a published ``org/name[@revision]``."""
    if backend not in BACKENDS or variant not in VARIANTS:
        raise DemoError(f"backend must be one of {BACKENDS} and variant one of {VARIANTS}")
    path = Path(spec).expanduser()
    if path.exists():
        return _load_local(path, backend, variant)
    repo_id, _, revision = spec.partition("@")
    try:
        return _load_published(repo_id, revision or None, backend, variant, hub, hub_dir)
    except EdgezooError as exc:
        raise DemoError(f"{spec} is no local RUN_DIR or model file, and as a published model: {exc}") from exc


def model_choices(current: str, runs_dir: Path | None = None, hub: str | None = None,
                  hub_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """(label, spec) for the picker: the served model, local validated runs, then the zoo's index."""
    choices: dict[str, str] = {current: f"{current} (started with)"}
    if runs_dir is not None and runs_dir.is_dir():
        for validation in sorted(runs_dir.glob(f"*/{EXPORT}/{VALIDATION}")):
            run = str(validation.parent.parent)
            choices.setdefault(run, f"{run} (local run)")
    try:
        from zoo.catalog import list_models

        rows = list_models(hub=hub, hub_dir=hub_dir)
    except EdgezooError as exc:  # an unreachable hub only shortens the list
        log.warning("the zoo's index is unavailable: %s", exc)
        rows = []
    from app.zoo.table import row_summary, sort_rows

    for row in sort_rows(rows):  # the zoo table's order and numbers: best kNN first
        if row.version:
            choices.setdefault(f"{row.repo_id}@{row.version}", f"{row.repo_id} {row.version} ({row_summary(row)})")
    return [(label, spec) for spec, label in choices.items()]


# --- gallery --------------------------------------------------------------------------------------------

def default_gallery(run_dir: Path | None = None, config: dict[str, Any] | None = None) -> Path:
    """Images from the model's own domain, so that its answers can be judged.

    In order: the held-out labelled split of the data it was trained on (CIFAR-10's
    test images for a CIFAR-10 model: the model never saw them, and their labels
    score the page), the RUN_DIR's training folder, the hymenoptera photos of
    ../shared/datasets. A model trained on 32 px CIFAR-10 searching 256 px ant and
    bee photos answers near chance (56% against 51% precision@8), which is why the
    photos come last.
    """
    import json

    from zoo import datasets

    data_json = RunDir(run_dir).data if run_dir else None
    record = json.loads(data_json.read_text()) if data_json is not None and data_json.is_file() else {}
    data = (record.get("train") or {}).get("spec") or ((config or {}).get("edgezoo") or {}).get("data")
    held_out = _local_eval_split(data) if data else None
    if held_out is not None:
        return held_out
    root = Path((record.get("train") or {}).get("root", ""))
    if record and root.is_dir():
        return root
    shared = datasets.shared_datasets()
    if shared is not None and (shared / "hymenoptera").is_dir():
        return shared / "hymenoptera"
    raise DemoError("no gallery: pass --gallery FOLDER (a folder of images, searched recursively)")


def _local_eval_split(data: str) -> Path | None:
    """The held-out labelled split of a training source, if this machine has it (never downloads)."""
    from zoo import datasets
    from zoo.images import NoImagesError

    try:
        if datasets.is_named(data):
            datasets.dataset_root(data, download=False)  # unpacked from ../shared when not here yet, never downloaded
        spec = datasets.eval_spec(data) if datasets.is_named(data) or Path(data).expanduser().is_dir() else None
        return datasets.resolve(spec).root if spec else None
    except (NoImagesError, OSError) as exc:  # not on this machine, or unreadable
        log.info("default gallery: the held-out split of %s is not here (%s)", data, exc)
        return None


def gallery_images(root: Path, max_images: int | None = None, seed: int = 0) -> list[Path]:
    """The gallery's image files (a fixed random subset when capped), sorted."""
    from zoo.images import NoImagesError, find_images

    paths = find_images(root)
    if not paths:
        raise NoImagesError(f"{root}: no image files for the gallery (jpg, jpeg, png, webp, bmp)")
    if max_images is not None and len(paths) > max_images:
        keep = np.random.default_rng(seed).choice(len(paths), max_images, replace=False)
        paths = [paths[i] for i in sorted(keep.tolist())]
        log.info("gallery capped at %d of the images under %s", max_images, root)
    return paths
