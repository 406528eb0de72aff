"""`edgezoo run`: pretrain -> evaluate -> export + validate -> publish -> demo, in one command.

Each stage is called through its module's Python API and is resumable: running
the command again skips what is complete and still valid, so an interrupted
pipeline (or a second ``make demo``) only does what is missing. The file names and
the complete/stale rules are `zoo.layout`'s (`RunDir`; the export's: `zoo.edge.export_fresh`):

- pretrain: skipped when RUN_DIR/metrics.json exists (the run completed); continued
  with ``--resume`` semantics when only checkpoint.pt exists; started otherwise.
  A RUN_DIR holding a run with other options is refused rather than mixed up.
- evaluate: skipped when eval.json is newer than the backbone's weights.
- export: skipped when export/validation.json passed and still vouches for the
  files (sizes and sha256), and the ONNX model is newer than the weights.
- publish: skipped when the hub it would publish to (the local hub unless ``--hub hf``;
  `zoo.hub.open_hub`) already has a version whose manifest lists exactly this run's
  weights and ONNX models (same sha256; `zoo.publish.published_version`).
- demo: served unless ``--no-serve``, from the published version (ONNX backend).

One summary at the end: paths, kNN, export parity and latency, where it was
published, the demo URL, and what each stage did and how long it took.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from zoo.errors import EdgezooError
from zoo.layout import CHECKPOINT, EVAL, EXPORT, METRICS, VALIDATION, RunDir
from zoo.records import Evaluation, Metrics, Validation

log = logging.getLogger(__name__)

STAGE_NAMES = ("pretrain", "evaluate", "export", "publish", "demo")
# config.yaml options that do not change what a run computes: a difference is not a different run.
_RUNTIME_OPTIONS = ("device", "threads")


class PipelineError(EdgezooError):
    """A stage cannot run or its output is not usable by the next one."""


@dataclass
class StageResult:
    name: str
    status: str  # ran | resumed | skipped | served
    seconds: float
    detail: str = ""


@dataclass
class PipelineResult:
    """What `edgezoo run` did and produced (also what the summary prints)."""

    run_dir: Path
    repo_id: str
    stages: list[StageResult] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)
    evaluation: Evaluation = field(default_factory=Evaluation)
    validation: Validation | None = None
    version: str | None = None
    commit: str | None = None
    location: str | None = None
    url: str | None = None

    def stage(self, name: str) -> StageResult | None:
        return next((s for s in self.stages if s.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON, the reports in the shapes their files have."""
        return {"run_dir": str(self.run_dir), "repo_id": self.repo_id, "stages": [asdict(s) for s in self.stages],
                "metrics": self.metrics.to_json(), "evaluation": self.evaluation.to_json(),
                "validation": None if self.validation is None else self.validation.to_json(),
                "version": self.version, "commit": self.commit, "location": self.location, "url": self.url}


# --- pretrain -------------------------------------------------------------------------------------------

# RunDir.pretrain_state -> what the pretrain stage does
_PRETRAIN_PLANS = {"complete": "skip", "resumable": "resume", "fresh": "fresh"}


def pretrain_plan(run_dir: Path) -> str:
    """'skip' (the run completed), 'resume' (a checkpoint without metrics.json) or 'fresh' (zoo.layout's rule)."""
    return _PRETRAIN_PLANS[RunDir(run_dir).pretrain_state()]


def check_same_run(run_dir: Path, cfg: Any) -> None:
    """Refuse to skip or resume a RUN_DIR whose config.yaml differs from the requested options."""
    from pretrain.config import PretrainConfig

    saved = PretrainConfig.load(RunDir(run_dir).config).to_dict()
    wanted = cfg.to_dict()
    diff = [f"{k}: {saved.get(k)!r} there, {wanted.get(k)!r} asked" for k in sorted(set(saved) | set(wanted))
            if k not in _RUNTIME_OPTIONS and saved.get(k) != wanted.get(k)]
    if diff:
        raise PipelineError(f"{run_dir} holds a run with other options ({'; '.join(diff[:4])}"
                            f"{' ...' if len(diff) > 4 else ''}): pass the same options or another --out")


def stage_pretrain(args: argparse.Namespace, run_dir: Path) -> tuple[str, str]:
    from pretrain.cli import config_from_args

    cfg = config_from_args(args)
    plan = pretrain_plan(run_dir)
    if plan != "fresh":
        check_same_run(run_dir, cfg)
    if plan == "skip":
        return "skipped", f"{METRICS} present: the run is complete"
    from pretrain.trainer import Trainer  # torch: imported only when there is training to do

    Trainer(cfg, run_dir, resume=plan == "resume", progress=not args.no_progress).fit()
    if plan == "resume":
        return "resumed", f"continued from {CHECKPOINT}"
    epochs = Metrics.read(RunDir(run_dir).metrics).epochs
    return "ran", f"{cfg.model}, {epochs} epochs" + (f" (time budget {cfg.time_budget:.0f} s)" if cfg.time_budget else "")


# --- evaluate -------------------------------------------------------------------------------------------

def stage_evaluate(run_dir: Path) -> tuple[str, str]:
    if RunDir(run_dir).evaluation_fresh():
        return "skipped", f"{EVAL} is up to date"
    from pretrain.evaluate import evaluate_run

    result = evaluate_run(run_dir)
    knn = result.get("knn_top1")
    return "ran", f"kNN top-1 {100 * knn:.2f}%" if knn is not None else "no labelled split: RankMe only"


# --- export ---------------------------------------------------------------------------------------------

def export_options(extra: str | None) -> Any:
    """ExportOptions from `edgezoo export`'s own flags (defaults, plus --export-options), parsed by its parser."""
    from export.cli import add_export_arguments, options_from_args

    parser = argparse.ArgumentParser(prog="edgezoo run --export-options")
    add_export_arguments(parser)
    ns = parser.parse_args(["RUN_DIR", *shlex.split(extra or "")])
    if ns.out is not None or ns.validate_only:
        raise PipelineError("--export-options cannot move the export (--out) or skip it (--validate-only): "
                            "the pipeline exports into RUN_DIR/export")
    return options_from_args(ns)


def stage_export(run_dir: Path, extra: str | None = None) -> tuple[str, str]:
    from zoo.edge import export_fresh

    if export_fresh(RunDir(run_dir)):
        return "skipped", f"{EXPORT}/{VALIDATION} passed and matches the files"
    try:
        from export.pipeline import export_run
    except ImportError as exc:
        raise PipelineError(f"the export stage is not available ({exc}); install edgezoo[train]") from exc
    report = export_run(run_dir, None, export_options(extra))  # raises ExportValidationError if a check fails
    return "ran", f"{len(report.get('checks', []))} checks passed"


# --- publish --------------------------------------------------------------------------------------------

def stage_publish(args: argparse.Namespace, run_dir: Path, result: PipelineResult) -> tuple[str, str]:
    from zoo.publish import publish, published_version

    found = published_version(run_dir, args.repo, version=args.version, hub=args.hub, hub_dir=args.hub_dir)
    if found is not None:
        result.version, result.commit = found
        result.location = _location(args)
        return "skipped", f"{args.repo}@{found[0]} already holds this run"
    published = publish(run_dir, args.repo, version=args.version, hub=args.hub, hub_dir=args.hub_dir)
    result.version, result.commit, result.location = published.version, published.commit, published.location
    return "ran", f"{published.files} files, {published.bytes / 1e6:.1f} MB"


def _location(args: argparse.Namespace) -> str:
    from zoo.hub import open_hub

    return open_hub(args.hub, args.hub_dir).location(args.repo)


# --- the chain ------------------------------------------------------------------------------------------

def _timed(result: PipelineResult, name: str, fn: Callable[[], tuple[str, str]]) -> StageResult:
    log.info("stage %s ...", name)
    start = time.perf_counter()
    try:
        status, detail = fn()
    except BaseException:
        done = ", ".join(f"{s.name} {s.status} ({s.seconds:.1f} s)" for s in result.stages) or "nothing"
        log.error("stage %s failed after %.1f s (before it: %s); run the same command again to resume",
                  name, time.perf_counter() - start, done)
        raise
    stage = StageResult(name, status, round(time.perf_counter() - start, 2), detail)
    result.stages.append(stage)
    log.info("stage %s %s in %.1f s (%s)", name, status, stage.seconds, detail)
    return stage


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def default_out(repo_id: str) -> Path:
    return Path("runs") / repo_id.split("/")[-1]


def run_pipeline(args: argparse.Namespace) -> PipelineResult:
    """Every stage in order (see the module docstring); serves the demo until Ctrl-C unless --no-serve."""
    from zoo.hub import check_repo_id

    check_repo_id(args.repo)
    run_dir = Path(args.out) if args.out else default_out(args.repo)
    run = RunDir(run_dir)
    result = PipelineResult(run_dir=run_dir, repo_id=args.repo)
    _timed(result, "pretrain", lambda: stage_pretrain(args, run_dir))
    result.metrics = Metrics.from_json(_read_json(run.metrics))
    _timed(result, "evaluate", lambda: stage_evaluate(run_dir))
    result.evaluation = Evaluation.from_json(_read_json(run.eval))
    _timed(result, "export", lambda: stage_export(run_dir, args.export_options))
    result.validation = Validation.from_json(_read_json(run.validation)) if run.validation.is_file() else None
    _timed(result, "publish", lambda: stage_publish(args, run_dir, result))
    if args.no_serve:
        print(format_summary(result))
        return result
    blocks = None

    def serve() -> tuple[str, str]:
        nonlocal blocks
        from app.demo import create_app, default_gallery, start

        gallery = args.gallery or default_gallery(run_dir)  # the model's own domain: its held-out split
        app = create_app(f"{args.repo}@{result.version}", gallery, hub=args.hub, hub_dir=args.hub_dir,
                         runs_dir=run_dir.parent, max_gallery=args.max_gallery)
        blocks, result.url = start(app, args.host, args.port)
        quality = app.served(app.default).quality
        scored = f"; {quality.line().replace('**', '')}" if quality is not None else ""
        return "served", f"{len(app.gallery_paths)} gallery images from {app.gallery_root}{scored}"

    _timed(result, "demo", serve)
    print(format_summary(result))
    print("serving the demo until Ctrl-C")
    blocks.block_thread()
    return result


# --- the summary ----------------------------------------------------------------------------------------

def _pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "-"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _export_lines(validation: Validation | None) -> list[str]:
    """export's own digest of validation.json (parity, kNN, sizes, latency, checks), indented."""
    if validation is None:
        return ["-"]
    try:
        from export.validate import summary

        return summary(validation).splitlines()
    except (ImportError, KeyError, TypeError, ValueError):  # an older or foreign report: its checks only
        return [f"[{'PASS' if c.get('passed') else 'FAIL'}] {c.get('name')} = {_num(c.get('value'))}"
                for c in validation.checks if isinstance(c, dict)] or ["-"]


def format_summary(result: PipelineResult) -> str:
    """The end-of-run summary: stages with times, then where everything is and how good it is."""
    width = max(len(s) for s in STAGE_NAMES)
    lines = [f"edgezoo run {result.repo_id}", "", f"  {'stage':<{width}}  {'status':<8}  {'time':>8}  detail"]
    for s in result.stages:
        lines.append(f"  {s.name:<{width}}  {s.status:<8}  {s.seconds:>7.1f}s  {s.detail}")
    total = sum(s.seconds for s in result.stages)
    lines.append(f"  {'total':<{width}}  {'':<8}  {total:>7.1f}s")
    m, e, v = result.metrics, result.evaluation, result.validation
    lines += [
        "",
        f"  run dir     {result.run_dir}",
        f"  model       {m.architecture or '-'} ({m.method or '-'}, {_num(m.epochs)} epochs on "
        f"{_num(m.num_images)} images, {_num(m.embed_dim)}-d)",
        f"  kNN top-1   {_pct(m.knn_top1)} at the end of training, {_pct(e.knn_top1)} by edgezoo eval"
        f"; RankMe {_num(m.rankme if e.rankme is None else e.rankme)}",
        f"  export      {RunDir(result.run_dir).export} (validation "
        f"{'passed' if v is not None and v.passed else 'FAILED'})",
        *(f"              {line.strip()}" for line in _export_lines(v)),
        f"  published   {result.repo_id}@{result.version or '-'} commit {(result.commit or '-')[:12]} in "
        f"{result.location or '-'}",
        f'  load it     zoo.from_pretrained("{result.repo_id}", revision="{result.version}", backend="onnx")',
    ]
    if result.url:
        lines.append(f"  demo        {result.url}")
    return "\n".join(lines)


# --- CLI ------------------------------------------------------------------------------------------------

def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    from pretrain.cli import add_config_arguments
    from pretrain.config import list_recipes
    from zoo.cli import add_hub_arguments

    from app.demo import DEFAULT_HOST, DEFAULT_PORT

    parser.add_argument("--repo", required=True, help="repository id to publish to, org/name")
    parser.add_argument("--out", type=Path, default=None,
                        help="RUN_DIR (default: runs/<name of --repo>); reuse it to resume or skip finished stages")
    parser.add_argument("--recipe", default=None,
                        help=f"pretraining recipe name or YAML path, overridden by flags ({', '.join(list_recipes())})")
    parser.add_argument("--version", default=None,
                        help="version tag to publish (default: the next vN, or the version already holding this run)")
    add_hub_arguments(parser, "hub to publish to: hf or local (default: local, as `edgezoo publish`)")
    parser.add_argument("--no-serve", action="store_true", help="stop after publishing; do not start the demo")
    parser.add_argument("--gallery", type=Path, default=None,
                        help="demo gallery folder (default: the held-out split of the training data, e.g. CIFAR-10's "
                             "test images, else the training folder)")
    parser.add_argument("--max-gallery", type=int, default=None,
                        help="index at most this many gallery images (default: all)")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"demo interface to bind (default: {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"demo port (default: {DEFAULT_PORT})")
    parser.add_argument("--export-options", default=None, metavar="FLAGS",
                        help="more `edgezoo export` flags as one string, given with '=', e.g. "
                             "--export-options='--val-images 500 --max-knn-drop 2' (default: export's defaults)")
    parser.add_argument("--no-progress", action="store_true", help="no pretraining progress bar")
    add_config_arguments(parser)
