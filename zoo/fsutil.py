"""Atomic file writes: a temp file beside the target, then a rename (an interrupt never leaves half a file)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any


def sibling_tmp(path: Path, suffix: str = ".tmp") -> Path:
    """A temp name beside `path`, unique per call: concurrent writers of one shared file never collide."""
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    tmp = sibling_tmp(path)
    tmp.write_text(text)
    tmp.replace(path)
    return path


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")
