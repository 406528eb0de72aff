"""What every hub shares: repository and version names, the hub errors, which hub to use, a snapshot.

Which hub. Nothing leaves the machine unless asked: a Hub token or HF_ENDPOINT alone changes nothing.

- publishing (`edgezoo publish`, `edgezoo run`'s publish stage, `edgezoo zoo build`), listing (`edgezoo list`,
  the zoo table) and the pipeline's "is this run published already" (`choose_hub`): ``--hub`` if given, else
  the local hub (EDGEZOO_HUB or the per-user cache; a ``--hub-dir`` names its folder). ``--hub hf``, or a
  zoo spec's ``hub: hf``, is the only way to the Hugging Face Hub (or the server in HF_ENDPOINT), so a
  logged-in machine publishes locally like any other; `publish` says where it published, and that
  ``--hub hf`` would go to the Hub when the Hub is configured (`default_hub_note`).
- downloading (`zoo.pretrained.fetch`, reads only: no upload is reachable from it): the local hub when it
  holds the repository, else the Hugging Face Hub through its cache, unless ``hub`` names one (`named_hub`:
  what the flags name, which the demo asks too). torch-free.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from zoo.errors import EdgezooError
from zoo.public import scrub

HUBS = ("hf", "local")
DEFAULT_BRANCH = "main"
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
REPO_ID_RE = re.compile(rf"^{_NAME}/{_NAME}$")
REF_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
VERSION_RE = re.compile(r"^v(\d+)$")


class HubError(EdgezooError):
    """A hub operation failed (the message says which and why)."""


class UnknownRepoError(HubError):
    """No such repository on the hub that was asked."""


class UnknownRevisionError(HubError):
    """The repository exists but not the branch, tag or commit."""


class OfflineError(HubError):
    """The files are not cached and the hub cannot be reached (or HF_HUB_OFFLINE=1)."""


class RefExistsError(HubError):
    """A tag (version) or branch that must be new already exists, or the branch moved meanwhile."""


class PublishRefused(HubError):
    """The RUN_DIR or its export is not fit to publish, or the version exists."""


@dataclass(frozen=True)
class Snapshot:
    """Verified files of one published revision on local disk."""

    folder: Path
    repo_id: str
    revision: str
    commit: str
    source: str
    manifest: dict[str, Any] = field(repr=False)


# --- names ----------------------------------------------------------------------------------------------

def check_repo_id(repo_id: str) -> str:
    """``org/name`` with Hub-safe characters (no paths, no '..')."""
    if not isinstance(repo_id, str) or not REPO_ID_RE.match(repo_id) or ".." in repo_id:
        raise HubError(f"invalid repository id {repo_id!r}: expected 'org/name' (letters, digits, '-', '_', '.')")
    return repo_id


def check_ref_name(name: str, what: str = "revision") -> str:
    if not isinstance(name, str) or not REF_NAME_RE.match(name) or ".." in name or name.endswith(".lock"):
        raise HubError(f"invalid {what} name {name!r}: letters, digits, '-', '_', '.' only")
    return name


def check_repo_path(path: str) -> str:
    """A file path inside a repo: relative, POSIX, no '..', no '.git', no control characters."""
    parts = path.split("/") if isinstance(path, str) else []
    if (not parts or path.startswith("/") or "\\" in path or any(p in ("", ".", "..", ".git") for p in parts)
            or any(ord(c) < 32 for c in path)):
        raise HubError(f"invalid path in repository: {path!r}")
    return path


def next_version(tags: Iterable[str]) -> str:
    """``v(N+1)`` after the highest ``vN`` tag (``v1`` for a new repo)."""
    numbers = [int(m.group(1)) for t in tags if (m := VERSION_RE.match(t))]
    return f"v{max(numbers, default=0) + 1}"


def latest_version(tags: Iterable[str]) -> str | None:
    """The highest ``vN`` tag; None without one."""
    numbered = sorted((int(m.group(1)), t) for t in tags if (m := VERSION_RE.match(t)))
    return numbered[-1][1] if numbered else None


# --- which hub ------------------------------------------------------------------------------------------

def hf_token() -> str | None:
    """The configured Hugging Face token (HF_TOKEN or `hf auth login`); never logged."""
    from huggingface_hub import get_token

    return get_token()


def hf_configured() -> bool:
    """HF_ENDPOINT or a token is set: downloads may find a repo there, and `publish` reminds of ``--hub hf``."""
    return bool(os.environ.get("HF_ENDPOINT") or hf_token())


def named_hub(hub: str | None = None, hub_dir: str | Path | None = None) -> str | None:
    """The hub the flags name: `hub` (one of HUBS), else 'local' for a `hub_dir`; None when neither is given."""
    if hub is not None:
        if hub not in HUBS:
            raise HubError(f"unknown hub {hub!r}: expected one of {', '.join(HUBS)}")
        return hub
    return "local" if hub_dir else None


def choose_hub(hub: str | None = None, hub_dir: str | Path | None = None) -> str:
    """Where to publish and list: what the flags name, else 'local' (never the Hub by a token or HF_ENDPOINT)."""
    return named_hub(hub, hub_dir) or "local"


def default_hub_note(hub: str | None, hub_dir: str | Path | None, verb: str) -> str | None:
    """What to tell a logged-in user whose job went to the local hub by default (None when nothing to say)."""
    if named_hub(hub, hub_dir) is None and hf_configured():
        return f"a Hugging Face token or HF_ENDPOINT is configured, but only --hub hf {verb} the Hugging Face Hub"
    return None


# --- errors of the Hugging Face client ------------------------------------------------------------------

def hf_errors_to_hub_errors(exc: BaseException, repo_id: str, revision: str | None) -> HubError:
    """Map huggingface_hub's exceptions to ours (order matters: subclasses first)."""
    from huggingface_hub import errors as hf

    token = hf_token()
    if isinstance(exc, hf.RevisionNotFoundError):
        return UnknownRevisionError(f"{repo_id}: no revision {revision or DEFAULT_BRANCH!r} on the hub")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return UnknownRepoError(f"{repo_id}: no such repository on the hub (or no access to it)")
    if isinstance(exc, hf.LocalEntryNotFoundError):
        return OfflineError(f"{repo_id}@{revision or DEFAULT_BRANCH}: not in the local cache and the hub cannot be "
                            "reached (HF_HUB_OFFLINE=1 or no network); download it once while online")
    if isinstance(exc, hf.EntryNotFoundError):
        return HubError(f"{repo_id}@{revision or DEFAULT_BRANCH}: a file is missing: {scrub(str(exc), token)}")
    if isinstance(exc, _transport_errors()):
        from huggingface_hub import constants

        return OfflineError(f"{repo_id}: the hub at {constants.ENDPOINT} cannot be reached "
                            f"({type(exc).__name__}: {scrub(str(exc), token)})")
    return HubError(f"{repo_id}: hub request failed: {scrub(str(exc), token)}")


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's 'no answer' errors (connect, timeout, network): httpx2 in huggingface_hub 2, httpx in 1."""
    found = []
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)
