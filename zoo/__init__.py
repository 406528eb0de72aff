"""edgezoo's core: backbone registry, timm-native files, hub I/O, model cards,
`from_pretrained`, the edge runtime and the retrieval index.

Imports without torch (edge installs). The project's architectures
(``*_smallstem``) are registered with timm (at once if timm is imported, else
when it gets imported), so plain ``timm.create_model("hf-hub:org/name",
pretrained=True)`` works after ``import zoo`` and ``import timm`` in either order.
"""

from __future__ import annotations

from typing import Any

from zoo.backbones import register_with_timm

__version__ = "0.1.0"

# Public API loaded on first use, so `import zoo` stays cheap and torch-free.
_LAZY = {"from_pretrained": "zoo.pretrained", "list_models": "zoo.catalog", "publish": "zoo.publish"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


register_with_timm()  # the *_smallstem architectures: now if timm is imported, else when it is
