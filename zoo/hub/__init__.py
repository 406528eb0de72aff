"""The hubs published models live on, behind one interface (`Hub`).

Two hubs: the local hub (`zoo.hub.local.LocalHub`: bare git repositories in a folder, which olah can
serve read-only to an offline fleet) and the Hugging Face Hub (`zoo.hub.hf.HfHub`: huggingface_hub's
client, or any server HF_ENDPOINT points at). The jobs on them are written once, over `Hub`:

- `zoo.publish`: staging a repository from a RUN_DIR, publishing it as a version, and finding the
  version that already holds a run (what `edgezoo run` skips on);
- `fetch` (below, also `zoo.pretrained.fetch`): a revision's files, verified against its manifest;
- `zoo.catalog`: the zoo's index of published models;
- `zoo.hub.server`: the receiver a publish to a self-hosted hub uploads to.

Names, errors and the rules for which hub a job uses are in `zoo.hub.core`. torch-free.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Protocol, Sequence

from zoo.hub.core import (DEFAULT_BRANCH, HUBS, REPO_ID_RE, VERSION_RE, HubError, OfflineError, PublishRefused,
                          RefExistsError, Snapshot, UnknownRepoError, UnknownRevisionError, check_ref_name,
                          check_repo_id, check_repo_path, choose_hub, default_hub_note, hf_configured,
                          hf_errors_to_hub_errors, hf_token, latest_version, named_hub, next_version)
from zoo.hub.hf import HfHub
from zoo.hub.local import LocalHub, local_hub_dir

__all__ = ["DEFAULT_BRANCH", "HUBS", "REPO_ID_RE", "VERSION_RE", "Hub", "HubError", "HfHub", "LocalHub",
           "OfflineError", "PublishRefused", "RefExistsError", "Snapshot", "UnknownRepoError", "UnknownRevisionError",
           "check_ref_name", "check_repo_id", "check_repo_path", "choose_hub", "default_hub_note", "fetch",
           "hf_configured", "hf_errors_to_hub_errors", "hf_token", "hub_named", "latest_version", "local_hub_dir",
           "named_hub", "next_version", "open_hub"]


class Hub(Protocol):
    """What publishing, fetching, listing and the pipeline ask of a hub.

    Every method raises `HubError` (or a subclass) with one clear line, never a client's own exception.
    """

    kind: str  # one of HUBS

    @property
    def staging(self) -> Path:
        """Where a publish stages the repository it uploads (a scratch folder per process)."""

    def describe(self, repo_id: str | None = None) -> str:
        """Where this hub (or one repository) is, for people: 'the local hub in DIR', 'the Hugging Face Hub at
        URL'."""

    def location(self, repo_id: str) -> str:
        """Where one repository is (a folder or a URL)."""

    def list_repos(self) -> list[str]:
        """The edgezoo repositories this hub holds."""

    def tags(self, repo_id: str) -> dict[str, str]:
        """Tag name -> commit; empty for a repository that does not exist (yet)."""

    def read(self, repo_id: str, revision: str, path: str) -> bytes | None:
        """One file at a revision; None when the revision has no such file."""

    def snapshot(self, repo_id: str, revision: str | None, files: Sequence[str],
                 optional: Sequence[str] = ()) -> Snapshot:
        """`files` (and those of `optional` the revision has) on local disk, verified against manifest.json."""

    def publish_folder(self, repo_id: str, folder: Path, version: str, message: str) -> str:
        """`folder` as the repository's next commit, tagged `version` (created if new); returns the commit.
        Raises RefExistsError when `version` exists."""


def hub_named(kind: str, hub_dir: str | Path | None = None) -> Hub:
    """The hub of one kind ('local' in `hub_dir`, EDGEZOO_HUB or the cache; 'hf')."""
    if kind not in HUBS:
        raise HubError(f"unknown hub {kind!r}: expected one of {', '.join(HUBS)}")
    return LocalHub(local_hub_dir(hub_dir)) if kind == "local" else HfHub()


def open_hub(hub: str | None = None, hub_dir: str | Path | None = None) -> Hub:
    """The hub publishing and listing use: what the flags name, else the local hub (`choose_hub`)."""
    return hub_named(choose_hub(hub, hub_dir), hub_dir)


def fetch(repo_id: str, files: Sequence[str], revision: str | None = None, *, optional: Sequence[str] = (),
          hub: str | None = None, hub_dir: str | Path | None = None) -> Snapshot:
    """`files` (and `optional` ones the repo has) of `repo_id` at `revision`, verified against manifest.json.

    Reads only. The hub `hub` names; else the local hub when it holds the repository, else the Hugging Face
    Hub through its cache (so HF_HUB_OFFLINE=1 works once cached). A `hub_dir` alone only says where the
    local hub is: the Hub stays the fallback.
    """
    check_repo_id(repo_id)
    kind = named_hub(hub)
    local = LocalHub(local_hub_dir(hub_dir))
    if kind is not None:
        return hub_named(kind, hub_dir).snapshot(repo_id, revision, files, optional)
    if local.exists(repo_id):
        return local.snapshot(repo_id, revision, files, optional)
    try:
        return HfHub().snapshot(repo_id, revision, files, optional)
    except OfflineError as exc:
        if not hf_configured():
            # No Hub is configured: the local hub is this machine's hub and lacks the repo; the Hub was only a
            # fallback, and "download it once while online" would send a typo looking for a network.
            raise _not_in_local_hub(local, repo_id) from exc
        raise


def _not_in_local_hub(local: LocalHub, repo_id: str) -> UnknownRepoError:
    """A repo that neither the local hub nor the Hugging Face cache has (and the Hub cannot be asked)."""
    close = difflib.get_close_matches(repo_id, local.list_repos(), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return UnknownRepoError(f"{repo_id}: no such repository in the local hub {local.root}{hint}; not in the "
                            "Hugging Face cache either, and the Hub cannot be reached to look there")
