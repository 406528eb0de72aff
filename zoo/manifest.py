"""``manifest.json``: the sha256 and size of every other file of a published repo; and the project's one
file hash (`sha256_file`) and file record (`file_record`, ``{"sha256", "size"}``), which an export's
validation.json lists too.

Written last when a repo is staged and checked first when it is downloaded, so
a truncated download, a corrupted cache or a tampered mirror is caught before
any weights are loaded, and the error names the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from zoo.errors import EdgezooError
from zoo.fsutil import atomic_write_text
from zoo.layout import MANIFEST

_CHUNK = 1 << 20


class ChecksumError(EdgezooError):
    """A file does not match manifest.json (or is missing)."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: str | Path) -> dict[str, Any]:
    """What a manifest or validation.json records of a file: its sha256 and size in bytes."""
    return {"sha256": sha256_file(path), "size": Path(path).stat().st_size}


def record_mismatch(path: str | Path, record: Mapping[str, Any], listed_in: str) -> str | None:
    """How the file at `path` differs from its `record` (size first: it is free), or None if it matches.

    Also reads the ``{"bytes", "sha256"}`` records of validation.json files written before the one shape.
    """
    expected = record["size"] if "size" in record else record["bytes"]
    size = Path(path).stat().st_size
    if size != expected:
        return f"size {size} bytes, {listed_in} says {expected}"
    actual = sha256_file(path)
    if actual != record["sha256"]:
        return f"sha256 {actual[:12]}..., {listed_in} says {record['sha256'][:12]}..."
    return None


def repo_files(folder: str | Path) -> list[str]:
    """POSIX paths of the files under `folder`, sorted, without the manifest and hidden files."""
    root = Path(folder)
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and rel.as_posix() != MANIFEST and not any(p.startswith(".") for p in rel.parts):
            out.append(rel.as_posix())
    return sorted(out)


def build_manifest(folder: str | Path, **meta: Any) -> dict[str, Any]:
    """`meta` (e.g. repo_id, version) is recorded beside the file table."""
    root = Path(folder)
    files = {rel: file_record(root / rel) for rel in repo_files(root)}
    return {"format": 1, **meta, "files": files}


def write_manifest(folder: str | Path, **meta: Any) -> dict[str, Any]:
    manifest = build_manifest(folder, **meta)
    atomic_write_text(Path(folder) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ChecksumError(f"{MANIFEST}: unreadable ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ChecksumError(f"{MANIFEST}: not an edgezoo manifest (no 'files' table)")
    return manifest


def verify_file(path: str | Path, rel: str, manifest: dict[str, Any]) -> None:
    """Raise ChecksumError naming `rel` unless `path` has the size and sha256 listed for it."""
    entry = manifest["files"].get(rel)
    if entry is None:
        raise ChecksumError(f"{rel}: not listed in {MANIFEST}; refusing an unverified file")
    path = Path(path)
    if not path.is_file():
        raise ChecksumError(f"{rel}: missing (listed in {MANIFEST})")
    problem = record_mismatch(path, entry, "manifest")
    if problem is not None:
        raise ChecksumError(f"{rel}: checksum mismatch ({problem}); the download or cache is corrupt or was "
                            "tampered with")


def verify_folder(folder: str | Path, manifest: dict[str, Any], only: Iterable[str] | None = None) -> None:
    """Check `only` (default: every file the manifest lists) under `folder`."""
    root = Path(folder)
    for rel in (sorted(manifest["files"]) if only is None else only):
        verify_file(root / rel, rel, manifest)
