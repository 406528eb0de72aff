"""What a method says about itself: its name, paper and the options that shape it.

Training writes `describe(method_class, cfg)` into metrics.json (``method_info``),
and the model card only renders it, so adding a method is a change inside
pretrain/methods/ alone: the core (zoo/) knows no method by name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pretrain.config import PretrainConfig


@dataclass(frozen=True)
class Citation:
    key: str
    text: str
    bibtex: str
    arxiv: str


@dataclass(frozen=True)
class MethodInfo:
    """A method's self-description; `options` are the PretrainConfig fields the card shows for it."""

    title: str
    citation: Citation
    options: tuple[str, ...] = ()


def describe(info: MethodInfo, name: str, cfg: PretrainConfig, engine: Citation) -> dict[str, Any]:
    """The ``method_info`` record of a run: what the card renders."""
    return {"key": name, "name": info.title, "citation": asdict(info.citation),
            "engine_citation": asdict(engine), "options": {k: getattr(cfg, k) for k in info.options}}
