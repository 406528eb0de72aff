"""`edgezoo`: one command, a subcommand per stage.

Each stage module owns its flags (add_*_arguments) and its runner; this file
only wires them together and turns expected failures into one clear line and a
non-zero exit code.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from typing import Callable

log = logging.getLogger("edgezoo")


class _Stage:
    """A subcommand: its flags, its runner, imported lazily so `edgezoo --help` is instant.

    `needs`: optional packages it cannot start without, imported before it runs, so that an edge
    install (onnxruntime, numpy, Pillow) is told what to install at once, not after minutes of work.
    """

    def __init__(self, name: str, help_text: str, module: str, add: str, run: str,
                 needs: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.module, self.add, self.run = name, help_text, module, add, run
        self.needs = needs

    def load(self, attr: str) -> Callable:
        import importlib

        return getattr(importlib.import_module(self.module), attr)


STAGES = [
    _Stage("pretrain", "self-supervised pretraining of a timm backbone into RUN_DIR", "pretrain.cli",
           "add_pretrain_arguments", "run_pretrain", needs=("torch", "timm")),
    _Stage("eval", "kNN top-1 and RankMe of a RUN_DIR's backbone", "pretrain.cli", "add_eval_arguments", "run_eval",
           needs=("torch", "timm")),
    _Stage("export", "RUN_DIR's backbone to validated ONNX fp32 + int8 and ORT format", "export.cli",
           "add_export_arguments", "run_export", needs=("torch", "timm", "onnx", "onnxruntime")),
    _Stage("publish", "publish a finished, exported RUN_DIR (model card, weights, ONNX) to a hub as a new version",
           "zoo.cli", "add_publish_arguments", "run_publish"),
    _Stage("list", "list the published models of the hub with their key metrics", "app.zoo.cli",
           "add_list_arguments", "run_list"),
    _Stage("run", "the whole pipeline: pretrain, evaluate, export + validate, publish, then serve the demo "
           "(finished stages are skipped)", "app.pipeline", "add_run_arguments", "run_pipeline"),
    _Stage("zoo", "build a family of backbones from one spec (app/zoo/specs/*.yaml) and its table ZOO.md",
           "app.zoo.cli", "add_zoo_arguments", "run_zoo"),
    _Stage("demo", "serve the Gradio retrieval demo of a model over a folder of images", "app.demo.cli",
           "add_demo_arguments", "run_demo", needs=("gradio",)),
    _Stage("embed", "embed every image of a folder with a model into an .npz, .csv or .parquet file", "app.embed",
           "add_embed_arguments", "run_embed"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgezoo", description="Pretrain, export, publish and serve edge-sized image backbones.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in STAGES:
        p = sub.add_parser(stage.name, help=stage.help, description=stage.help)
        stage.load(stage.add)(p)
        p.set_defaults(_stage=stage)
    return parser


def run_stage(stage: _Stage, args: argparse.Namespace) -> None:
    """Run a subcommand; an optional package that is not installed becomes one MissingDependencyError line."""
    import importlib

    from zoo.errors import missing_dependency

    try:
        for package in stage.needs:
            importlib.import_module(package)
        stage.load(stage.run)(args)
    except ModuleNotFoundError as exc:
        error = missing_dependency(exc)
        if error is None:  # not one of edgezoo's optional packages: a broken install, keep the traceback
            raise
        raise error from exc


def main(argv: list[str] | None = None) -> int:
    """Expected failures (zoo.errors.EdgezooError and its subclasses, and a full disk) print one line and return
    their exit code; anything else is a bug and keeps its traceback."""
    from zoo.errors import EdgezooError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stage: _Stage = args._stage
    try:
        run_stage(stage, args)
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except EdgezooError as exc:
        if args.verbose:
            log.exception("%s failed", stage.name)
        log.error("%s failed: %s", stage.name, exc)
        return exc.exit_code
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        log.error("%s failed: %s; free some space and run the same command again (a run resumes from its last "
                  "checkpoint)", stage.name, exc.strerror + (f": {exc.filename}" if exc.filename else ""))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
