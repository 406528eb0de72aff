"""File-system helpers: atomic writes (a temp file beside the target, then a rename: an interrupt never
leaves half a file), and file names that are not valid UTF-8 made safe for libraries that need text.

Every file the project writes in place goes through `atomic_path` (a writer that wants a file name:
np.savez, safetensors, an ONNX exporter) or `atomic_write_text` / `atomic_write_json`; nothing else
renames a temp file. File hashes and records are `zoo.manifest`'s."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from zoo.layout import TMP_SUFFIX


def sibling_tmp(path: Path, suffix: str = TMP_SUFFIX) -> Path:
    """A temp name beside `path`, unique per call: concurrent writers of one shared file never collide."""
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}")


@contextmanager
def atomic_path(path: str | Path, suffix: str = TMP_SUFFIX) -> Iterator[Path]:
    """A temp name beside `path` to write to; renamed onto `path` when the block ends, removed if it raises.

    `suffix` ends the temp name, for writers that add or want an extension (np.savez: ".tmp.npz").
    """
    path = Path(path)
    tmp = sibling_tmp(path, suffix)
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # after the rename there is nothing left to remove


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


# --- file names that are not valid UTF-8 ------------------------------------------------------------------
# On POSIX a file name is bytes; Python decodes the bytes that are not UTF-8 (e.g. Latin-1 b'caf\xe9.jpg')
# as lone surrogates ('caf\udce9.jpg'), which str.encode() and UTF-8-only libraries (gradio, orjson) refuse.
# Hash a path with os.fsencode(path), show it with printable_name, hand it to such a library as utf8_path.

def is_utf8(text: str | os.PathLike[str]) -> bool:
    """Whether a path or name is valid UTF-8 text (no undecodable file-name bytes)."""
    try:
        os.fspath(text).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_name(name: str | os.PathLike[str]) -> str:
    """A path or name as text any UTF-8 consumer accepts (JSON, HTML, captions): undecodable bytes as \\xNN.

    Valid names are returned unchanged.
    """
    text = os.fspath(name)
    return text if is_utf8(text) else os.fsencode(text).decode("utf-8", "backslashreplace")


def utf8_path(path: Path, alias_dir: Path) -> Path:
    """`path`, or where it is not valid UTF-8, a symlink to it in `alias_dir` whose name is.

    For libraries that encode file paths as UTF-8 (gradio copies a gallery image under its own name): they
    get a path they can handle and read the same file, which stays where it is. The alias is named by a hash
    of the path, so every process and call reuses the same one.
    """
    if is_utf8(path):
        return path
    suffix = path.suffix if is_utf8(path.suffix) else ""
    alias = alias_dir / f"{hashlib.sha256(os.fsencode(path)).hexdigest()[:24]}{suffix}"
    if not alias.is_symlink():
        alias_dir.mkdir(parents=True, exist_ok=True)
        try:
            alias.symlink_to(path.absolute())
        except FileExistsError:  # another process made the same alias
            pass
    return alias
