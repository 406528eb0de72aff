"""edgezoo's core: backbone registry, timm-native files, hub I/O, model cards,
`from_pretrained`, the edge runtime and the retrieval index.

Imports without torch (edge installs). If timm is already imported, the
project's architectures (``*_smallstem``) are registered with it so plain
``timm.create_model("hf-hub:org/name", pretrained=True)`` works after
``import timm, zoo``.
"""

from __future__ import annotations

import sys
from typing import Any

__version__ = "0.1.0"

# Public API loaded on first use, so `import zoo` stays cheap and torch-free.
_LAZY = {"from_pretrained": "zoo.pretrained", "list_models": "zoo.hub", "publish": "zoo.hub"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


if "timm" in sys.modules:  # registering needs timm (and torch): only when the caller already has them
    from zoo.backbones import register_timm_archs

    register_timm_archs()
