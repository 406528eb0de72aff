"""`edgezoo demo`: its flags, `create_app` (the model, its gallery and the picker's list made into a
`DemoApp`) and the command itself (`run_demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.demo.model import BACKENDS, VARIANTS, DemoModel, default_gallery, gallery_images, load_model, model_choices
from app.demo.view import DEFAULT_HOST, DEFAULT_PORT, DemoApp, start


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
    from zoo.cli import add_hub_arguments

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
    add_hub_arguments(parser, "hub of published models and of the picker's list (default: as `edgezoo list`)")
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
