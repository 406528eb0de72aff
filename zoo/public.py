"""What may leave this machine: local paths reduced to their last component, tokens removed.

A published repository (configs, reports, the model card) and the messages of hub
errors go through these helpers, so that neither a home directory nor a Hub token
is ever published, logged or raised. torch-free; imports nothing of zoo at load time.
"""

from __future__ import annotations

import re
from typing import Any

# A local path in a published config or report: only its last component is published.
_LOCAL_PATH = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")


def scrub(text: str, secret: str | None) -> str:
    """Remove a token from a message that is about to be logged or raised."""
    return text.replace(secret, "***") if secret else text


def public_path(value: str) -> str:
    """A local path (absolute or ~) reduced to its last component, a ``:split`` suffix kept; else unchanged."""
    from zoo.datasets import split_spec  # numpy and PIL: loaded only when a card or repo is written

    base, split = split_spec(value)
    if not _LOCAL_PATH.match(base):
        return value
    name = re.split(r"[\\/]", base.rstrip("/\\"))[-1] or base
    return f"{name}:{split}" if split else name


def public_json(value: Any) -> Any:
    """`value` with every local path in it reduced by `public_path`: what configs and reports publish."""
    if isinstance(value, dict):
        return {k: public_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [public_json(v) for v in value]
    return public_path(value) if isinstance(value, str) else value
