"""edgezoo's core: backbone registry, timm-native files, hub I/O, model cards,
`from_pretrained`, the edge runtime and the retrieval index.

Imports without torch (edge installs). If timm is already imported, the
project's architectures (``*_smallstem``) are registered with it so plain
``timm.create_model("hf-hub:org/name", pretrained=True)`` works after
``import timm, zoo``.
"""

from __future__ import annotations

import sys

__version__ = "0.1.0"

if "timm" in sys.modules:  # registering needs timm (and torch): only when the caller already has them
    from zoo.backbones import register_timm_archs

    register_timm_archs()
