"""The Hugging Face Hub as a `zoo.hub.Hub`: huggingface_hub's client, or any server HF_ENDPOINT points at.

Every client failure becomes one `HubError` line (token scrubbed, `hf_errors_to_hub_errors`). The client's
shared HTTP session has no timeout by default, so a server that accepts and never answers would hang a
publish or a listing for ever: before each call this hub bounds the session's connect and read/write
waits (`bound_requests`: REQUEST_TIMEOUT_S, or EDGEZOO_HUB_TIMEOUT seconds); huggingface_hub's
downloads pass their own timeouts. torch-free.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from zoo.hub.core import (DEFAULT_BRANCH, HubError, RefExistsError, Snapshot, UnknownRepoError, UnknownRevisionError,
                          hf_errors_to_hub_errors)
from zoo.layout import MANIFEST
from zoo.manifest import ChecksumError, read_manifest, verify_folder

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 60.0  # the edgezoo command's bound on one Hub request (EDGEZOO_HUB_TIMEOUT overrides it)
CONNECT_TIMEOUT_S = 10.0
T = TypeVar("T")


def request_timeout_s() -> float:
    """EDGEZOO_HUB_TIMEOUT (seconds), else REQUEST_TIMEOUT_S."""
    raw = os.environ.get("EDGEZOO_HUB_TIMEOUT")
    try:
        value = float(raw) if raw else REQUEST_TIMEOUT_S
    except ValueError as exc:
        raise HubError(f"EDGEZOO_HUB_TIMEOUT={raw!r}: expected a number of seconds") from exc
    if value <= 0:
        raise HubError(f"EDGEZOO_HUB_TIMEOUT={raw!r}: expected a positive number of seconds")
    return value


def bound_requests(timeout_s: float | None = None) -> None:
    """Give huggingface_hub's shared HTTP client a timeout (connect and each read/write), in place.

    Downloads pass their own timeouts; the API calls (refs, tags, uploads, listing) use the session's, which
    is none by default.
    """
    from huggingface_hub import get_session

    timeout_s = request_timeout_s() if timeout_s is None else timeout_s
    session = get_session()
    session.timeout = type(session.timeout)(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s))


class HfHub:
    """The Hugging Face Hub (or the server in HF_ENDPOINT), through huggingface_hub."""

    kind = "hf"

    def __repr__(self) -> str:
        return f"HfHub({self.endpoint!r})"

    @property
    def endpoint(self) -> str:
        from huggingface_hub import constants

        return constants.ENDPOINT

    @property
    def staging(self) -> Path:
        from zoo.datasets import cache_dir

        return cache_dir() / "staging"

    def describe(self, repo_id: str | None = None) -> str:
        return f"the Hugging Face Hub at {self.location(repo_id) if repo_id else self.endpoint}"

    def location(self, repo_id: str) -> str:
        return f"{self.endpoint}/{repo_id}"

    def _call(self, repo_id: str, revision: str | None, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except HubError:
            raise
        except Exception as exc:  # noqa: BLE001 - every client failure becomes one clear line
            raise hf_errors_to_hub_errors(exc, repo_id, revision) from exc

    @staticmethod
    def _api() -> Any:
        from huggingface_hub import HfApi

        bound_requests()
        return HfApi()

    def list_repos(self) -> list[str]:
        """Models tagged ``edgezoo``."""
        return self._call("edgezoo models", None, lambda: [m.id for m in self._api().list_models(filter="edgezoo")])

    def tags(self, repo_id: str) -> dict[str, str]:
        try:
            refs = self._call(repo_id, None, self._api().list_repo_refs, repo_id)
        except UnknownRepoError:
            return {}
        return {t.name: t.target_commit for t in refs.tags}

    def read(self, repo_id: str, revision: str, path: str) -> bytes | None:
        from huggingface_hub import errors, hf_hub_download

        try:
            return Path(hf_hub_download(repo_id, path, revision=revision)).read_bytes()
        except errors.EntryNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - every client failure becomes one clear line
            raise hf_errors_to_hub_errors(exc, repo_id, revision) from exc

    def snapshot(self, repo_id: str, revision: str | None, files: Sequence[str],
                 optional: Sequence[str] = ()) -> Snapshot:
        """snapshot_download of exactly these files (huggingface_hub's cache), then the manifest check."""
        from huggingface_hub import snapshot_download

        rev = revision or DEFAULT_BRANCH  # explicit: some mirrors (olah) answer model_info only with a revision
        try:
            folder = Path(snapshot_download(repo_id, revision=rev, repo_type="model",
                                            allow_patterns=[MANIFEST, *files, *optional]))
        except Exception as exc:  # noqa: BLE001 - every client failure becomes one clear line
            error = hf_errors_to_hub_errors(exc, repo_id, rev)
            if isinstance(error, UnknownRepoError) and revision is not None:
                error = self._unknown_revision_or(error, repo_id, rev)
            raise error from exc
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise ChecksumError(f"{repo_id}@{rev}: no {MANIFEST}; not an edgezoo repository, refusing unverified "
                                "weights")
        manifest = read_manifest(manifest_path)
        verify_folder(folder, manifest, [*files, *(p for p in optional if p in manifest["files"])])
        return Snapshot(folder, repo_id, manifest.get("version") or rev, folder.name, "hf", manifest)

    def _unknown_revision_or(self, error: HubError, repo_id: str, revision: str) -> HubError:
        """Some servers (olah) answer an unknown revision as an unknown repo: tell the two apart by the tags."""
        try:
            tags = self.tags(repo_id)
        except HubError:  # unreachable now: keep the first answer
            return error
        if not tags:
            return error
        return UnknownRevisionError(f"{repo_id}: no revision {revision!r} on the hub (versions: "
                                    f"{', '.join(sorted(tags))})")

    def publish_folder(self, repo_id: str, folder: Path, version: str, message: str) -> str:
        """create_repo (if new), upload_folder as one commit, then the version tag on that commit."""
        from huggingface_hub import errors

        api = self._api()
        self._call(repo_id, None, api.create_repo, repo_id, repo_type="model", exist_ok=True)
        info = self._call(repo_id, None, api.upload_folder, repo_id=repo_id, folder_path=folder, repo_type="model",
                          commit_message=message)
        try:
            api.create_tag(repo_id, tag=version, revision=info.oid, repo_type="model")
        except errors.HfHubHTTPError as exc:
            if getattr(exc.response, "status_code", None) == 409:
                raise RefExistsError(f"{repo_id}: tag {version} exists") from exc
            raise hf_errors_to_hub_errors(exc, repo_id, version) from exc
        except Exception as exc:  # noqa: BLE001 - every client failure becomes one clear line
            raise hf_errors_to_hub_errors(exc, repo_id, version) from exc
        return info.oid
