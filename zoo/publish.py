"""Publishing a RUN_DIR: the repository staged from the run (the card rendered from its files), then pushed.

One commit and a new version tag (default: the next ``vN``; versions are
immutable) on the hub `zoo.hub.open_hub` picks: the local hub (`zoo.hub.local`)
unless ``hub="hf"`` asks for the Hugging Face Hub (`zoo.hub.hf`); a configured
token alone never sends anything there. `published_version` finds the version
that already holds a run (what `edgezoo run` skips on).
Published configs and reports go through `zoo.public`, so no local path is
published. torch-free.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from zoo import card
from zoo.hub import (VERSION_RE, PublishRefused, RefExistsError, check_ref_name, check_repo_id, default_hub_note,
                     next_version, open_hub)
from zoo.hub.local import scratch_dir
from zoo.layout import (BACKBONE_CONFIG, CARD, LINEAGE, MANIFEST, OPTIONAL_REPO_FILES, REPO_CONFIG, REPO_EVAL,
                        REPO_FILES, REPO_VALIDATION)
from zoo.manifest import sha256_file, write_manifest
from zoo.public import public_json
from zoo.runfiles import RunFiles, check_run

log = logging.getLogger(__name__)

# A published version holds a run when its manifest lists these files with the run's sha256 (JSON files are
# rewritten for the public, so they do not count).
_WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".ort")


@dataclass(frozen=True)
class PublishResult:
    repo_id: str
    version: str
    commit: str
    hub: str
    location: str
    files: int
    bytes: int


def stage_repo(run: RunFiles, repo_id: str, version: str, dest: str | Path, *, hub: str) -> Path:
    """Write the complete repository for `version` into `dest` (the card from the staged files, manifest.json last).

    `hub` ("local" or "hf") is where it is published: the card's plain-timm snippet depends on it.
    """
    import yaml

    dest = Path(dest)
    sources = {**REPO_FILES, **{k: v for k, v in OPTIONAL_REPO_FILES.items() if (run.run_dir / v).is_file()}}
    for rel, src in sources.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.run_dir / src, dest / rel)
    for rel, value in ((BACKBONE_CONFIG, run.backbone_config), (REPO_VALIDATION, run.validation.to_json()),
                       (LINEAGE, run.lineage)):
        if value is not None and public_json(value) != value:  # same layout as the stages write
            (dest / rel).write_text(json.dumps(public_json(value), indent=2) + "\n")
    if run.evaluation is not None:
        (dest / REPO_EVAL).write_text(json.dumps(public_json(run.evaluation.to_json()), indent=2) + "\n")
    (dest / REPO_CONFIG).write_text(yaml.safe_dump(public_json(run.config), sort_keys=False))
    card.plot_training_curve(run.log_rows, dest / card.CURVE_NAME, title=f"{repo_id} {version}")
    published = {rel: p.stat().st_size for rel, p in _repo_size(dest)[0].items()}  # what the card lists
    context = card.card_context(run, repo_id, version, hub=hub, files=published)
    (dest / CARD).write_text(card.render_card(context))
    write_manifest(dest, repo_id=repo_id, version=version)
    return dest


def _pick_version(version: str | None, tags: Iterable[str], repo_id: str) -> str:
    tags = set(tags)
    if version is None:
        return next_version(tags)
    check_ref_name(version, "version")
    if version in tags:
        raise PublishRefused(f"{repo_id}: version {version} already exists (versions are immutable; the next free "
                             f"one is {next_version(tags)})")
    return version


def _repo_size(folder: Path) -> tuple[dict[str, Path], int]:
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    return files, sum(p.stat().st_size for p in files.values())


def publish(run_dir: str | Path, repo_id: str, *, version: str | None = None, hub: str | None = None,
            hub_dir: str | Path | None = None) -> PublishResult:
    """Publish a finished, exported RUN_DIR as one commit + a version tag (default: the next vN)."""
    check_repo_id(repo_id)
    run = check_run(run_dir)
    target = open_hub(hub, hub_dir)
    note = default_hub_note(hub, hub_dir, "publishes to")  # a logged-in user may expect the Hub
    if note:
        log.info("publishing %s to %s: %s", repo_id, target.describe(), note)
    message = f"edgezoo: {run.metrics.architecture} {run.metrics.method}"
    version = _pick_version(version, target.tags(repo_id), repo_id)
    with scratch_dir(target.staging) as tmp:
        staged = stage_repo(run, repo_id, version, tmp / "repo", hub=target.kind)
        files, size = _repo_size(staged)
        try:
            sha = target.publish_folder(repo_id, staged, version, f"{message} {version}")
        except RefExistsError as exc:
            raise PublishRefused(f"{repo_id}: version {version} was published meanwhile ({exc})") from exc
    result = PublishResult(repo_id, version, sha, target.kind, target.location(repo_id), len(files), size)
    log.info("published %s %s (%d files, %.1f MB) to %s", result.repo_id, result.version, result.files,
             result.bytes / 1e6, target.describe(repo_id))
    return result


def published_version(run_dir: str | Path, repo_id: str, *, version: str | None = None, hub: str | None = None,
                      hub_dir: str | Path | None = None) -> tuple[str, str] | None:
    """(version, commit) of a published version holding exactly this run's weights and ONNX models (same
    sha256 in its manifest), newest first; None when there is none (or no such repository yet)."""
    run_dir = Path(run_dir)
    target = open_hub(hub, hub_dir)
    hashes = {repo: sha256_file(run_dir / rel) for repo, rel in REPO_FILES.items() if repo.endswith(_WEIGHT_SUFFIXES)}
    tags = target.tags(repo_id)
    candidates = [version] if version else sorted((t for t in tags if VERSION_RE.match(t)), key=lambda t: -int(t[1:]))
    for tag in candidates:
        if tag not in tags:
            continue
        try:
            listed = (json.loads(target.read(repo_id, tags[tag], MANIFEST) or b"{}").get("files")) or {}
        except ValueError:  # an unreadable manifest is not a match
            continue
        if all(listed.get(repo, {}).get("sha256") == sha for repo, sha in hashes.items()):
            return tag, tags[tag]
    return None
