"""A finished, exported RUN_DIR as publishing reads it: checked (`check_run`), then loaded (`RunFiles`).

File names, the published-repo layout (`REPO_FILES`, ...) and the staleness rules
come from `zoo.layout`. `check_run` refuses a run that is incomplete, inconsistent,
stale (files older than the weights) or not validated, with a `PublishRefused` that
says why. torch-free.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.hub import PublishRefused
from zoo.layout import BACKBONE, CHECKPOINT, CONFIG, EXPORT, LOG, METRICS, REPO_FILES, RunDir
from zoo.records import Evaluation, Metrics, Validation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunFiles:
    """A RUN_DIR that passed `check_run`, with the files the repo and the card are made of."""

    run_dir: Path
    config: dict[str, Any]
    metrics: Metrics
    backbone_config: dict[str, Any]
    validation: Validation
    log_rows: list[dict[str, str]]
    data: dict[str, Any]
    lineage: Any = None
    evaluation: Evaluation | None = None  # eval.json (`edgezoo eval`), when not older than the weights

    @property
    def backbone(self) -> Path:
        return RunDir(self.run_dir).backbone

    @property
    def export(self) -> Path:
        return RunDir(self.run_dir).export


def _refuse(run_dir: Path, why: str) -> PublishRefused:
    return PublishRefused(f"refusing to publish {run_dir}: {why}")


def _read_json(path: Path, run_dir: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _refuse(run_dir, f"{path.relative_to(run_dir)} is unreadable ({exc})") from exc


def _check_export(run: RunDir) -> Validation:
    """The export's validation report, when the export is current (`zoo.edge.current_export`)."""
    from zoo.edge import ExportNotValidatedError, current_export

    try:
        return current_export(run)
    except ExportNotValidatedError as exc:
        raise _refuse(run.path, str(exc)) from exc


def check_run(run_dir: str | Path) -> RunFiles:
    """Refuse a RUN_DIR that is incomplete, inconsistent or not validated; else load what publishing needs."""
    import csv

    import yaml

    run = RunDir(run_dir)
    run_dir = run.path
    if not run_dir.is_dir():
        raise _refuse(run_dir, "no such directory")
    if not run.metrics.is_file():
        raise _refuse(run_dir, f"no {METRICS}: the run did not complete (finish it with `edgezoo pretrain "
                               f"--resume --out {run_dir}`)")
    for rel in (CONFIG, *REPO_FILES.values()):
        if not rel.startswith(f"{EXPORT}/") and not (run / rel).is_file():
            raise _refuse(run_dir, f"{rel} is missing (a partial or damaged run)")
    leftovers = run.leftovers()
    if leftovers:
        raise _refuse(run_dir, f"half-written files ({', '.join(leftovers)}): a stage was interrupted")
    if run.checkpoint.is_file() and run.checkpoint.stat().st_mtime_ns > run.weights.stat().st_mtime_ns:
        raise _refuse(run_dir, f"{CHECKPOINT} is newer than {BACKBONE}/: training continued after the backbone was "
                               "written (finish the run first)")
    if not run.newer_than_weights(run.metrics):
        raise _refuse(run_dir, f"{METRICS} is older than {BACKBONE}/: the metrics do not describe these weights")
    validation = _check_export(run)
    metrics = Metrics.from_json(_read_json(run.metrics, run_dir))
    backbone_config = _read_json(run.backbone_config, run_dir)
    if metrics.embed_dim != backbone_config.get("embed_dim"):
        raise _refuse(run_dir, f"{METRICS} embed_dim {metrics.embed_dim} != {run.rel(run.backbone_config)} "
                               f"{backbone_config.get('embed_dim')}")
    with open(run.log, newline="") as fh:
        log_rows = list(csv.DictReader(fh))
    if not log_rows:
        raise _refuse(run_dir, f"{LOG} has no epochs")
    return RunFiles(run_dir=run_dir, config=yaml.safe_load(run.config.read_text()) or {},
                    metrics=metrics, backbone_config=backbone_config, validation=validation, log_rows=log_rows,
                    data=_read_json(run.data, run_dir) if run.data.is_file() else {},
                    lineage=_read_json(run.lineage, run_dir) if run.lineage.is_file() else None,
                    evaluation=_fresh_evaluation(run))


def _fresh_evaluation(run: RunDir) -> Evaluation | None:
    """eval.json, unless it is missing or older than the weights (it would describe other weights)."""
    if not run.eval.is_file():
        return None
    if not run.evaluation_fresh():
        log.warning("%s is older than %s: not used (re-run `edgezoo eval %s`)", run.eval, run.rel(run.weights),
                    run.path)
        return None
    return Evaluation.from_json(_read_json(run.eval, run.path))
