"""``manifest.json``: the sha256 and size of every other file of a published repo.

Written last when a repo is staged and checked first when it is downloaded, so
a truncated download, a corrupted cache or a tampered mirror is caught before
any weights are loaded, and the error names the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from zoo.errors import EdgezooError

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


class ChecksumError(EdgezooError):
    """A file does not match manifest.json (or is missing)."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def repo_files(folder: str | Path) -> list[str]:
    """POSIX paths of the files under `folder`, sorted, without the manifest and hidden files."""
    root = Path(folder)
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and rel.as_posix() != MANIFEST_NAME and not any(p.startswith(".") for p in rel.parts):
            out.append(rel.as_posix())
    return sorted(out)


def build_manifest(folder: str | Path, **meta: Any) -> dict[str, Any]:
    """`meta` (e.g. repo_id, version) is recorded beside the file table."""
    root = Path(folder)
    files = {rel: {"sha256": sha256_file(root / rel), "size": (root / rel).stat().st_size}
             for rel in repo_files(root)}
    return {"format": 1, **meta, "files": files}


def write_manifest(folder: str | Path, **meta: Any) -> dict[str, Any]:
    manifest = build_manifest(folder, **meta)
    (Path(folder) / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ChecksumError(f"{MANIFEST_NAME}: unreadable ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ChecksumError(f"{MANIFEST_NAME}: not an edgezoo manifest (no 'files' table)")
    return manifest


def verify_file(path: str | Path, rel: str, manifest: dict[str, Any]) -> None:
    """Raise ChecksumError naming `rel` unless `path` has the size and sha256 listed for it."""
    entry = manifest["files"].get(rel)
    if entry is None:
        raise ChecksumError(f"{rel}: not listed in {MANIFEST_NAME}; refusing an unverified file")
    path = Path(path)
    if not path.is_file():
        raise ChecksumError(f"{rel}: missing (listed in {MANIFEST_NAME})")
    size = path.stat().st_size
    if size != entry["size"]:
        raise ChecksumError(f"{rel}: checksum mismatch (size {size} bytes, manifest says {entry['size']})")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ChecksumError(f"{rel}: checksum mismatch (sha256 {actual[:12]}..., manifest says "
                            f"{entry['sha256'][:12]}...); the download or cache is corrupt or was tampered with")


def verify_folder(folder: str | Path, manifest: dict[str, Any], only: Iterable[str] | None = None) -> None:
    """Check `only` (default: every file the manifest lists) under `folder`."""
    root = Path(folder)
    for rel in (sorted(manifest["files"]) if only is None else only):
        verify_file(root / rel, rel, manifest)
