"""The demo's Gradio app: the server's state (`DemoApp`: the gallery, and the loaded models with their
gallery indexes and PCA), the query handlers, the page, and launching it (`start`).

The gallery's embeddings live in a ``zoo.index`` file beside a record of the
model and the image list, rebuilt only when either changed.

What the server exposes is deliberately small: ``allowed_paths`` is the gallery
folder alone (results are gallery images), uploads are capped in bytes and
pixels, and a non-image, corrupt, empty or huge upload is answered with a
readable ``gr.Error`` while the server goes on serving. Requests are queued with
a concurrency limit so a burst of clients cannot exhaust the CPU.

Ten people searching at once on 2 cores (benchmarks/demo_load.py): the embedding
and the search take a few milliseconds; what a search costs is gradio's work
around the handler, in one event loop, proportional to the size of the answer.
So the answer is built lean: the PCA plot's gallery points are projected once per
model and sent as plot data (`PcaPlot`), and the result images are static files
that gradio links where they are rather than hashing and copying each into its
cache per answer. The model is one onnxruntime session shared by all requests
(`run` is thread-safe).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from app.demo.model import DemoError, DemoModel
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
MAX_UPLOAD_MB = 20
MAX_PIXELS = 40_000_000  # a 40-megapixel photo decodes to ~120 MB of RGB; beyond that is refused
PICKER_IMAGES = 48  # gallery thumbnails offered as queries
PLOT_POINTS = 2000  # gallery points drawn in the PCA plot
LOADED_MODELS = 3  # (model, index) pairs kept in memory for the picker


# --- served models --------------------------------------------------------------------------------------

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


class PcaPlot:
    """The PCA scatter's data: the gallery's points projected once per model, a query's marks added per search.

    A search answers with the plot in gradio's own PlotData layout (a dict, which
    ``gr.ScatterPlot`` passes through as it is): no DataFrame, JSON round trip and
    pydantic validation of PLOT_POINTS rows per query, which cost more server CPU
    than the embedding and the search together.
    """

    COLUMNS = ["x", "y", "kind", "image"]
    DATATYPES = {"x": "quantitative", "y": "quantitative", "kind": "nominal", "image": "nominal"}

    def __init__(self, embeddings: np.ndarray, names: Sequence[str], max_points: int = PLOT_POINTS,
                 seed: int = 0) -> None:
        self.pca = Pca2D(embeddings)
        self.embeddings = embeddings
        self.names = names
        rows = np.sort(np.random.default_rng(seed).choice(len(embeddings), min(max_points, len(embeddings)),
                                                          replace=False))
        self.rows: list[int] = rows.tolist()
        self.points = self._points(self.pca.project(embeddings[rows]), "gallery", [names[i] for i in self.rows])

    @staticmethod
    def _points(xy: np.ndarray, kind: str, labels: Sequence[str]) -> list[list[Any]]:
        return [[x, y, kind, label] for (x, y), label in zip(np.round(xy.astype(np.float64), 4).tolist(), labels)]

    def value(self, query: np.ndarray, hits: Sequence[int]) -> dict[str, Any]:
        """The gallery's points, the hits marked "top-k" (instead of "gallery") and the query."""
        taken = set(hits)
        gallery = [p for row, p in zip(self.rows, self.points) if row not in taken]
        marks = self._points(self.pca.project(self.embeddings[list(hits)]), "top-k", [self.names[i] for i in hits])
        data = [*gallery, *marks, *self._points(self.pca.project(query), "query", ["query"])]
        return {"columns": self.COLUMNS, "data": data, "datatypes": self.DATATYPES, "mark": "point"}


@dataclass
class Served:
    """A loaded model with its gallery index and the gallery's PCA plot."""

    model: DemoModel
    gallery: GalleryIndex
    plot: PcaPlot
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
        quality = score(gallery, model.config, self.index_dir, self.top_k, progress)
        if quality is not None:
            log.info("%s: %s", model.name, quality.line().replace("**", ""))
        names = [printable_name(i) for i in gallery.ids]
        served = Served(model, gallery, PcaPlot(gallery.index.embeddings, names), names, quality)
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
        plot = served.plot.value(query, rows)
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

    # Every result is a gallery file: as static files gradio links them where they are, instead of hashing each
    # one and copying it into its cache on every answer. gradio keeps static paths per process (the gallery
    # folder alone: a symlinked photo takes the allowed_paths route, which allows its own file only).
    gr.set_static_paths([app.gallery_root])
    blocks = app.build()
    blocks.queue(default_concurrency_limit=concurrency, max_size=64)
    blocks.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=quiet, show_error=False,
                  allowed_paths=served_paths(app.gallery_root, app.gallery_paths),
                  max_file_size=f"{MAX_UPLOAD_MB}mb", ssr_mode=False, footer_links=["api", "gradio"],
                  theme=gr.themes.Soft())
    return blocks, blocks.local_url
