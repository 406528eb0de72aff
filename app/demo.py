"""`edgezoo demo`: a Gradio app for embedding and retrieval over a folder of your own images.

Serving uses onnxruntime by default (a RUN_DIR's validated ``export/model.onnx``
through ``zoo.edge.EdgeEmbedder``, or ``zoo.from_pretrained(..., backend="onnx")``),
so a serving machine needs no torch. The gallery's embeddings live in a
``zoo.index`` file beside a record of the model and the image list, rebuilt only
when either changed.

What the server exposes is deliberately small: ``allowed_paths`` is the gallery
folder alone (results are gallery images), uploads are capped in bytes and
pixels, and a non-image, corrupt, empty or huge upload is answered with a
readable ``gr.Error`` while the server goes on serving. Requests are queued with
a concurrency limit so a burst of clients cannot exhaust the CPU.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from app.gallery import GalleryQuality, score
from zoo.errors import EdgezooError
from zoo.fsutil import printable_name, utf8_path
from zoo.index import GalleryIndex, ProgressFn, build_gallery_index, index_stem

if TYPE_CHECKING:  # pragma: no cover
    import gradio as gr
    from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
BACKENDS = ("onnx", "torch")
VARIANTS = ("fp32", "int8")
MAX_UPLOAD_MB = 20
MAX_PIXELS = 40_000_000  # a 40-megapixel photo decodes to ~120 MB of RGB; beyond that is refused
PICKER_IMAGES = 48  # gallery thumbnails offered as queries
PLOT_POINTS = 2000  # gallery points drawn in the PCA plot
LOADED_MODELS = 3  # (model, index) pairs kept in memory for the picker


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
    from zoo.edge import sha256_of

    return {"name": name, "backend": backend, "file": model_file.name, "sha256": sha256_of(model_file),
            "preprocess": preprocess.as_dict(), **extra}


def _onnx_file(export_dir: Path, variant: str) -> Path:
    from zoo.edge import FP32_MODEL, INT8_MODEL, read_validation

    read_validation(export_dir)  # refuses an export that failed validation or changed since
    return export_dir / (FP32_MODEL if variant == "fp32" else INT8_MODEL)


def _load_local(path: Path, backend: str, variant: str) -> DemoModel:
    """A RUN_DIR, an export folder or one .onnx/.ort file."""
    from zoo.edge import EdgeEmbedder

    from zoo.timm_files import CONFIG_NAME, read_config

    run_dir = path if (path / "backbone").is_dir() or (path / "export").is_dir() else None
    config = read_config(run_dir / "backbone") if run_dir and (run_dir / "backbone" / CONFIG_NAME).is_file() else None
    name = str(path)
    if backend == "torch":
        if run_dir is None:
            raise DemoError(f"{path}: the torch backend needs a RUN_DIR (with backbone/)")
        if variant != "fp32":
            raise DemoError(f"variant {variant!r} is an ONNX model: use --backend onnx (torch has the fp32 weights)")
        from zoo.pretrained import TorchEmbedder

        runner = TorchEmbedder(run_dir / "backbone")
        key = _identity(str(path.resolve()), "torch", run_dir / "backbone" / "model.safetensors", runner.preprocess)
        return DemoModel(name, runner.embed, runner.dim, key, f"torch, {runner.dim}-d", run_dir, config)
    if path.is_file():
        model_file = path
    elif run_dir is not None:
        model_file = _onnx_file(run_dir / "export", variant)
    elif (path / "model.onnx").is_file():
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
    from zoo.pretrained import ONNX_VARIANTS, from_pretrained

    hub = hub or ("local" if hub_dir else None)  # as everywhere: a --hub-dir means the local hub
    model = from_pretrained(repo_id, revision, backend=backend, variant=variant, hub=hub, hub_dir=hub_dir)
    model_file = model.path / (ONNX_VARIANTS[variant] if backend == "onnx" else "model.safetensors")
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
        for validation in sorted(runs_dir.glob("*/export/validation.json")):
            run = str(validation.parent.parent)
            choices.setdefault(run, f"{run} (local run)")
    try:
        from zoo.hub import list_models

        rows = list_models(hub=hub, hub_dir=hub_dir)
    except EdgezooError as exc:  # an unreachable hub only shortens the list
        log.warning("the zoo's index is unavailable: %s", exc)
        rows = []
    for row in rows:
        if row.get("version"):
            knn = f", kNN {100 * row['knn_top1']:.1f}%" if row.get("knn_top1") is not None else ""
            choices.setdefault(f"{row['repo_id']}@{row['version']}",
                               f"{row['repo_id']} {row['version']} ({row.get('architecture')}{knn})")
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

    record = json.loads((run_dir / "data.json").read_text()) if run_dir and (run_dir / "data.json").is_file() else {}
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

    try:
        if data.lower() == "cifar10":
            return datasets.find_cifar10(download=False) / "test"
        spec = datasets.eval_spec(data) if Path(data).expanduser().is_dir() else None
        return datasets.resolve(spec).root if spec else None
    except OSError as exc:  # not on this machine: NoImagesError is one
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


class Pca2D:
    """A 2-D PCA of the gallery's embeddings (numpy SVD on at most 5000 rows)."""

    def __init__(self, embeddings: np.ndarray, max_rows: int = 5000, seed: int = 0) -> None:
        x = np.asarray(embeddings, np.float32)
        if len(x) > max_rows:
            x = x[np.random.default_rng(seed).choice(len(x), max_rows, replace=False)]
        self.mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.components = np.zeros((2, x.shape[1]), np.float32)
        self.components[:min(2, len(vt))] = vt[:2]

    def project(self, x: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(np.asarray(x, np.float32)) - self.mean) @ self.components.T


@dataclass
class Served:
    """A loaded model with its gallery index and the gallery's PCA."""

    model: DemoModel
    gallery: GalleryIndex
    pca: Pca2D
    plot_rows: np.ndarray  # gallery rows drawn in the plot
    names: list[str]  # the gallery's ids as shown (a file name that is not UTF-8 would break gradio's JSON)
    quality: GalleryQuality | None = None  # precision@k on the gallery's labels, when it has labels


# --- queries --------------------------------------------------------------------------------------------

def _display_name(payload: dict[str, Any]) -> str:
    name = str(payload.get("orig_name") or Path(str(payload.get("path") or "upload")).name)
    return name if len(name) <= 60 else name[:57] + "..."


def _user_error(message: str, title: str) -> Exception:
    """A gr.Error for a bad request: shown to the user, logged in one line, no traceback."""
    import gradio as gr

    log.info("refused a query: %s", message)
    return gr.Error(message, title=title, print_exception=False)


def read_query(payload: Any) -> "Image.Image":
    """The uploaded file (gradio FileData, already confined to gradio's upload cache) as RGB, or gr.Error."""
    from PIL import Image

    from zoo.images import ImageError, load_image

    if not payload or not isinstance(payload, dict) or not payload.get("path"):
        raise _user_error("Upload an image or pick one from the gallery first.", title="No image")
    path, name = Path(payload["path"]), _display_name(payload)
    if not path.is_file() or path.stat().st_size == 0:
        raise _user_error(f"{name} is empty.", title="Empty file")
    try:
        with Image.open(path) as header:  # reads the header only: size before any decoding
            width, height = header.size
    except Image.DecompressionBombError:
        raise _user_error(f"{name} is too large to decode safely.", title="Image too large") from None
    except Exception:  # noqa: BLE001 - whatever Pillow raises, the answer is the same
        raise _user_error(f"{name} is not an image this demo can read (jpg, png, webp, bmp, ...).",
                          title="Not an image") from None
    if width * height > MAX_PIXELS:
        raise _user_error(f"{name} is {width}x{height} pixels; the demo accepts up to {MAX_PIXELS // 10**6} "
                          "megapixels. Resize it and try again.", title="Image too large")
    try:
        return load_image(path)
    except ImageError:
        raise _user_error(f"{name} is corrupt or truncated and could not be decoded.",
                          title="Unreadable image") from None


def _plot_frame(served: Served, query_xy: np.ndarray, hits: Sequence[int]) -> Any:
    import pandas as pd

    g = served.gallery
    rows = [int(i) for i in served.plot_rows if int(i) not in set(hits)]
    xy = served.pca.project(g.index.embeddings[rows]) if rows else np.zeros((0, 2), np.float32)
    hit_xy = served.pca.project(g.index.embeddings[list(hits)]) if hits else np.zeros((0, 2), np.float32)
    frames = [pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "kind": "gallery",
                            "image": [served.names[i] for i in rows]}),
              pd.DataFrame({"x": hit_xy[:, 0], "y": hit_xy[:, 1], "kind": "top-k",
                            "image": [served.names[i] for i in hits]}),
              pd.DataFrame({"x": query_xy[:, 0], "y": query_xy[:, 1], "kind": "query", "image": ["query"]})]
    return pd.concat(frames, ignore_index=True)


# --- the app --------------------------------------------------------------------------------------------

class DemoApp:
    """Server-side state: the gallery and up to LOADED_MODELS (model, index) pairs; each session picks one."""

    def __init__(self, gallery_root: Path, gallery_paths: list[Path], first: DemoModel, *,
                 loader: Callable[[str], DemoModel], choices: list[tuple[str, str]], index_dir: Path,
                 top_k: int = 8, batch_size: int = 32) -> None:
        self.gallery_root = Path(gallery_root).resolve()
        self.gallery_paths = gallery_paths
        self.loader = loader
        self.choices = choices
        self.index_dir = Path(index_dir)
        self.top_k = top_k
        self.batch_size = batch_size
        self.default = first.name
        self._served: OrderedDict[str, Served] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._prepare(first, _log_progress)

    # -- models and their indexes
    def _prepare(self, model: DemoModel, progress: ProgressFn | None) -> Served:
        stem = index_stem(self.index_dir, self.gallery_root, model.name)
        gallery = build_gallery_index(self.gallery_root, self.gallery_paths, model.embed, model.key, stem,
                                      batch_size=self.batch_size, progress=progress)
        rng = np.random.default_rng(0)
        plot_rows = np.sort(rng.choice(len(gallery), min(PLOT_POINTS, len(gallery)), replace=False))
        quality = score(gallery, model.config, self.index_dir, self.top_k, progress)
        if quality is not None:
            log.info("%s: %s", model.name, quality.line().replace("**", ""))
        served = Served(model, gallery, Pca2D(gallery.index.embeddings), plot_rows,
                        [printable_name(i) for i in gallery.ids], quality)
        with self._lock:
            self._served[model.name] = served
            self._served.move_to_end(model.name)
            while len(self._served) > LOADED_MODELS:
                self._served.popitem(last=False)
        return served

    def served(self, name: str, progress: ProgressFn | None = None) -> Served:
        """The (model, index) pair for a picker entry, loading and indexing it once (one loader at a time)."""
        with self._lock:
            if name in self._served:
                self._served.move_to_end(name)
                return self._served[name]
            if name not in {spec for _, spec in self.choices}:
                raise DemoError(f"{name!r} is not one of the demo's models")
            lock = self._loading.setdefault(name, threading.Lock())
        with lock:
            with self._lock:
                if name in self._served:
                    return self._served[name]
            return self._prepare(self.loader(name), progress)

    def status(self, served: Served) -> str:
        g = served.gallery
        how = "built now" if g.rebuilt else "loaded from disk"
        skipped = f", {len(g.record.get('skipped', []))} unreadable skipped" if g.record.get("skipped") else ""
        quality = f"  \n{served.quality.line()}" if served.quality is not None else ""
        return (f"**{served.model.name}**: {served.model.description}  \n"
                f"gallery `{printable_name(g.root)}`: {len(g)} images{skipped}; index {how}{quality}")

    # -- event handlers
    def switch(self, name: str, progress: "gr.Progress | None" = None) -> tuple[str, str]:
        def report(done: int, total: int) -> None:
            if progress is not None:
                progress((done, total), desc="embedding the gallery", unit="images")

        try:
            served = self.served(name, report)
        except EdgezooError as exc:
            raise _user_error(f"cannot load {name}: {exc}", title="Model not loaded") from None
        return name, self.status(served)

    def search(self, payload: Any, k: Any, name: str) -> tuple[Any, ...]:
        """Top-k gallery images, the score table, the embedding's size and norm, and the PCA plot."""
        image = read_query(payload)
        try:
            k = max(1, min(64, int(k)))
        except (TypeError, ValueError):
            k = self.top_k
        served = self.served(name or self.default)
        query = served.model.embed([image])[0]
        scores, idx = served.gallery.index.search(query, k)
        rows, sims = [int(i) for i in idx[0]], [float(v) for v in scores[0]]
        ids = served.names
        results = [(str(self.servable(served.gallery.path(i))), f"{s:.3f}  {ids[i]}") for i, s in zip(rows, sims)]
        table = [[rank + 1, ids[i], round(s, 4)] for rank, (i, s) in enumerate(zip(rows, sims))]
        info = (f"**{query.shape[0]}-d** embedding, L2 norm **{np.linalg.norm(query):.4f}** "
                f"(`{served.model.name}`)  \n"
                f"first values: `{np.array2string(query[:8], precision=3, separator=', ')}`  \n"
                f"best match: `{ids[rows[0]]}` at cosine similarity **{sims[0]:.4f}**")
        plot = _plot_frame(served, served.pca.project(query), rows)
        return results, table, info, plot

    def embed(self, payload: Any, name: str) -> dict[str, Any]:
        """The query's embedding itself (for API clients)."""
        served = self.served(name or self.default)
        vector = served.model.embed([read_query(payload)])[0]
        return {"model": served.model.name, "dim": int(vector.shape[0]), "norm": float(np.linalg.norm(vector)),
                "embedding": [round(float(v), 6) for v in vector]}

    def picker_items(self) -> list[tuple[str, str]]:
        step = max(1, len(self.gallery_paths) // PICKER_IMAGES)
        picks = self.gallery_paths[::step][:PICKER_IMAGES]
        return [(str(self.servable(p)), printable_name(p.relative_to(self.gallery_root).as_posix())) for p in picks]

    def servable(self, path: Path) -> Path:
        """A gallery file as gradio can take it: gradio encodes paths as UTF-8, so other names get an alias."""
        return utf8_path(path, self.index_dir / "utf8-names")

    def build(self) -> "gr.Blocks":
        """The Blocks UI (see the module docstring)."""
        import gradio as gr

        first = self.served(self.default)
        picks = self.picker_items()
        with gr.Blocks(title="edgezoo demo", analytics_enabled=False) as blocks:
            gr.Markdown("## edgezoo: search your images with an edge-sized backbone\n"
                        "Upload an image (or pick one from the gallery below) to find the most similar gallery "
                        "images by cosine similarity of their embeddings.")
            model_state = gr.State(self.default)
            with gr.Row():
                model_dd = gr.Dropdown(self.choices, value=self.default, label="model", scale=2,
                                       elem_id="model")
                status = gr.Markdown(self.status(first), elem_id="status")
            with gr.Row():
                with gr.Column(scale=1, min_width=260):
                    query = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                     label="query image", height=280, elem_id="query")
                    top_k = gr.Slider(1, 32, value=self.top_k, step=1, label="top-k", elem_id="topk")
                    button = gr.Button("Search", variant="primary")
                with gr.Column(scale=2):
                    results = gr.Gallery(label="most similar gallery images (cosine similarity)", columns=4,
                                         height=420, object_fit="cover", elem_id="results")
            with gr.Tabs():
                with gr.Tab("Pick a query from the gallery"):
                    picker = gr.Gallery(picks, columns=8, height=260, allow_preview=False, object_fit="cover",
                                        show_label=False, elem_id="picker")
                with gr.Tab("Matches"):
                    table = gr.Dataframe(headers=["rank", "image", "similarity"], datatype=["number", "str", "number"],
                                         interactive=False, elem_id="matches")
                with gr.Tab("Embedding"):
                    info = gr.Markdown("Search to see the query's embedding.", elem_id="embedding")
                    plot = gr.ScatterPlot(x="x", y="y", color="kind", tooltip=["image", "kind"], height=360,
                                          color_map={"gallery": "#94a3b8", "top-k": "#f59e0b", "query": "#dc2626"},
                                          title="PCA of the gallery embeddings (2-D)", elem_id="pca")
            outputs = [results, table, info, plot]
            inputs = [query, top_k, model_state]
            # preprocess=False: the handler decodes the upload itself and answers bad files with a readable
            # gr.Error; gradio still confines the path to its upload cache before the handler sees it.
            query.upload(self.search, inputs, outputs, preprocess=False, api_name="search")
            button.click(self.search, inputs, outputs, preprocess=False, api_visibility="private")
            picker.select(self._pick(picks), None, query, api_visibility="private").then(
                self.search, inputs, outputs, preprocess=False, api_visibility="private")

            def switch(name: str, progress: gr.Progress = gr.Progress()) -> tuple[str, str]:  # noqa: B008
                return self.switch(name, progress)

            model_dd.change(switch, model_dd, [model_state, status], api_name="switch_model")
            embed_json = gr.JSON(visible=False)
            gr.Button(visible=False).click(self.embed, [query, model_state], embed_json, preprocess=False,
                                           api_name="embed")
        return blocks

    @staticmethod
    def _pick(picks: list[tuple[str, str]]) -> Callable[..., str]:
        import gradio as gr

        def pick(evt: gr.SelectData) -> str:
            return picks[int(evt.index)][0]

        pick.__annotations__["evt"] = gr.SelectData  # a real class, not the postponed string: gradio injects by type
        return pick


def _log_progress(done: int, total: int) -> None:
    if done == total or done % 256 < 32:
        log.info("embedding the gallery: %d/%d images", done, total)


# --- launching ------------------------------------------------------------------------------------------

def served_paths(root: Path, paths: Sequence[Path]) -> list[str]:
    """gradio's allowed_paths: the gallery folder, plus each gallery file that is a symlink out of it.

    gradio resolves symlinks before checking, so a linked photo is allowed by its own
    target file, never by the target's folder (which may hold anything).
    """
    root = root.resolve()
    outside = sorted({str(p.resolve()) for p in paths if not p.resolve().is_relative_to(root)})
    return [str(root), *outside]


def start(app: DemoApp, host: str = DEFAULT_HOST, port: int | None = DEFAULT_PORT, *, concurrency: int = 2,
          quiet: bool = True) -> tuple["gr.Blocks", str]:
    """Build and launch the app without blocking; returns (blocks, local URL). Stop it with blocks.close()."""
    import gradio as gr

    blocks = app.build()
    blocks.queue(default_concurrency_limit=concurrency, max_size=64)
    blocks.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=quiet, show_error=False,
                  allowed_paths=served_paths(app.gallery_root, app.gallery_paths),
                  max_file_size=f"{MAX_UPLOAD_MB}mb", ssr_mode=False, footer_links=["api", "gradio"],
                  theme=gr.themes.Soft())
    return blocks, blocks.local_url


def create_app(model: str, gallery: str | Path | None = None, *, backend: str = "onnx", variant: str = "fp32",
               hub: str | None = None, hub_dir: str | Path | None = None, runs_dir: str | Path | None = "runs",
               index_dir: str | Path | None = None, max_gallery: int | None = None, top_k: int = 8) -> DemoApp:
    """Load the model, list the picker's models and build (or load) the gallery's index."""
    from zoo.datasets import cache_dir

    first = load_model(model, backend=backend, variant=variant, hub=hub, hub_dir=hub_dir)
    # Resolved before listing, so the photos' names are relative to the same root DemoApp keeps
    # (a gallery reached through a symlinked folder, e.g. ../shared, otherwise has no names).
    root = (Path(gallery).expanduser() if gallery else default_gallery(first.run_dir, first.config)).resolve()
    paths = gallery_images(root, max_gallery)
    choices = model_choices(first.name, Path(runs_dir) if runs_dir else None, hub, hub_dir)

    def loader(spec: str) -> DemoModel:
        return load_model(spec, backend=backend, variant=variant, hub=hub, hub_dir=hub_dir)

    return DemoApp(root, paths, first, loader=loader, choices=choices,
                   index_dir=Path(index_dir) if index_dir else cache_dir() / "index", top_k=top_k)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a RUN_DIR (its validated export/model.onnx), an export folder, an .onnx file, or a "
                             "published org/name[@version]")
    parser.add_argument("--gallery", type=Path, default=None,
                        help="folder of images to search (recursive; default: the held-out split of the model's "
                             "training data, e.g. CIFAR-10's test images, else the RUN_DIR's training folder, else "
                             "the hymenoptera photos of ../shared/datasets)")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"interface to bind (default: {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default: {DEFAULT_PORT})")
    parser.add_argument("--backend", choices=BACKENDS, default="onnx",
                        help="onnx (onnxruntime, no torch needed; default) or torch")
    parser.add_argument("--variant", choices=VARIANTS, default="fp32", help="ONNX model: fp32 (default) or int8")
    parser.add_argument("--hub", choices=("hf", "local"), default=None,
                        help="hub of published models and of the picker's list (default: as `edgezoo list`)")
    parser.add_argument("--hub-dir", type=Path, default=None, help="local hub directory (implies --hub local)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"),
                        help="folder whose exported runs the model picker offers (default: runs)")
    parser.add_argument("--index-dir", type=Path, default=None,
                        help="where gallery indexes are kept (default: <edgezoo cache>/index)")
    parser.add_argument("--max-gallery", type=int, default=None,
                        help="index at most this many gallery images (a fixed random subset; default: all)")
    parser.add_argument("--top-k", type=int, default=8, help="results shown per query at first (default: 8)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="queries processed at once; more wait in the queue (default: 2)")


def run_demo(args: argparse.Namespace) -> str:
    app = create_app(args.model, args.gallery, backend=args.backend, variant=args.variant, hub=args.hub,
                     hub_dir=args.hub_dir, runs_dir=args.runs_dir, index_dir=args.index_dir,
                     max_gallery=args.max_gallery, top_k=args.top_k)
    blocks, url = start(app, args.host, args.port, concurrency=args.concurrency)
    print(f"edgezoo demo: {url}  (model {app.default}, {len(app.gallery_paths)} gallery images; Ctrl-C stops)")
    blocks.block_thread()
    return url
