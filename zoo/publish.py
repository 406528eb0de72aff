"""Publishing a RUN_DIR: the repository staged from the run (the card rendered from its files), then pushed.

One commit and a new version tag (default: the next ``vN``; versions are
immutable) on the hub `zoo.hub.choose_hub` picks: the local hub (`zoo.hub_local`)
unless ``hub="hf"`` asks for the Hugging Face Hub (create_repo, one upload_folder
commit, create_tag); a configured token alone never sends anything there.
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
from zoo.hub import (HubError, PublishRefused, RefExistsError, check_ref_name, check_repo_id, choose_hub,
                     default_hub_note, hf_errors_to_hub_errors, next_version)
from zoo.hub_local import LocalHub, local_hub_dir, scratch_dir
from zoo.layout import (BACKBONE_CONFIG, CARD, LINEAGE, OPTIONAL_REPO_FILES, REPO_CONFIG, REPO_EVAL, REPO_FILES,
                        REPO_VALIDATION)
from zoo.manifest import write_manifest
from zoo.public import public_json
from zoo.runfiles import RunFiles, check_run

log = logging.getLogger(__name__)


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
    for rel, value in ((BACKBONE_CONFIG, run.backbone_config), (REPO_VALIDATION, run.validation),
                       (LINEAGE, run.lineage)):
        if value is not None and public_json(value) != value:  # same layout as the stages write
            (dest / rel).write_text(json.dumps(public_json(value), indent=2) + "\n")
    if run.evaluation is not None:
        (dest / REPO_EVAL).write_text(json.dumps(public_json(run.evaluation), indent=2) + "\n")
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


def _publish_local(run: RunFiles, repo_id: str, version: str | None, hub_dir: str | Path | None,
                   message: str) -> PublishResult:
    hub = LocalHub(local_hub_dir(hub_dir))
    if hub.create(repo_id):
        log.info("created %s in the local hub %s", repo_id, hub.root)
    version = _pick_version(version, hub.refs(repo_id)["tags"], repo_id)
    with scratch_dir(hub.staging) as tmp:
        staged = stage_repo(run, repo_id, version, tmp / "repo", hub="local")
        files, size = _repo_size(staged)
        try:
            sha = hub.commit(repo_id, files, message=f"{message} {version}", replace=True, tag=version)
        except RefExistsError as exc:
            raise PublishRefused(f"{repo_id}: version {version} was published meanwhile ({exc})") from exc
    return PublishResult(repo_id, version, sha, "local", str(hub.repo_dir(repo_id)), len(files), size)


def hf_staging_dir() -> Path:
    """Where publishes to the Hugging Face Hub stage the repository: ``<edgezoo cache>/staging``."""
    from zoo.datasets import cache_dir

    return cache_dir() / "staging"


def _publish_hf(run: RunFiles, repo_id: str, version: str | None, message: str) -> PublishResult:
    from huggingface_hub import HfApi, constants

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        version = _pick_version(version, [t.name for t in api.list_repo_refs(repo_id).tags], repo_id)
        with scratch_dir(hf_staging_dir()) as tmp:
            staged = stage_repo(run, repo_id, version, tmp / "repo", hub="hf")
            files, size = _repo_size(staged)
            info = api.upload_folder(repo_id=repo_id, folder_path=staged, repo_type="model",
                                     commit_message=f"{message} {version}")
        api.create_tag(repo_id, tag=version, revision=info.oid, repo_type="model")
    except HubError:
        raise
    except Exception as exc:  # noqa: BLE001 - client errors become one line, token scrubbed
        raise hf_errors_to_hub_errors(exc, repo_id, version) from exc
    return PublishResult(repo_id, version, info.oid, "hf", f"{constants.ENDPOINT}/{repo_id}", len(files), size)


def publish(run_dir: str | Path, repo_id: str, *, version: str | None = None, hub: str | None = None,
            hub_dir: str | Path | None = None) -> PublishResult:
    """Publish a finished, exported RUN_DIR as one commit + a version tag (default: the next vN)."""
    check_repo_id(repo_id)
    run = check_run(run_dir)
    target = choose_hub(hub, hub_dir)
    note = default_hub_note(hub, hub_dir, "publishes to")  # a logged-in user may expect the Hub
    if note:
        log.info("publishing %s to the local hub %s: %s", repo_id, local_hub_dir(hub_dir), note)
    message = f"edgezoo: {run.metrics.get('architecture')} {run.metrics.get('method')}"
    if target == "hf":
        result = _publish_hf(run, repo_id, version, message)
    else:
        result = _publish_local(run, repo_id, version, hub_dir, message)
    log.info("published %s %s (%d files, %.1f MB) to %s %s", result.repo_id, result.version, result.files,
             result.bytes / 1e6, "the Hugging Face Hub at" if result.hub == "hf" else "the local hub in",
             result.location)
    return result
