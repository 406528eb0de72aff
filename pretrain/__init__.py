"""Stage 1: self-supervised pretraining of timm backbones (effssl, npid, simclr).

Reads images, writes a RUN_DIR (see pretrain.trainer). Builds on zoo/; talks to
export/ only through RUN_DIR.
"""

from pretrain.config import PretrainConfig, build_config

__all__ = ["PretrainConfig", "build_config"]
