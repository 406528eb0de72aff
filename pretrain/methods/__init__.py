"""SSL methods in one engine: effssl (the project's method), two baselines, and SEED distillation."""

from __future__ import annotations

from typing import Any

from pretrain.config import PretrainConfig
from pretrain.methods.base import Method, StepOutput
from pretrain.methods.info import describe
from pretrain.methods.distill import Distill
from pretrain.methods.effssl import EffSSL, NPID
from pretrain.methods.simclr import SimCLR

METHOD_CLASSES: dict[str, type[Method]] = {"effssl": EffSSL, "npid": NPID, "simclr": SimCLR, "distill": Distill}


def build_method(name: str, **kwargs) -> Method:
    try:
        cls = METHOD_CLASSES[name]
    except KeyError as exc:
        raise ValueError(f"unknown method {name!r}; one of {sorted(METHOD_CLASSES)}") from exc
    return cls(**kwargs)


def describe_method(cfg: PretrainConfig) -> dict[str, Any]:
    """metrics.json's ``method_info``: the run's method in its own words, cited, with the options that shape it
    (and this project's method's citation, which the card gives too when a baseline was trained)."""
    cls = METHOD_CLASSES[cfg.method]
    record = describe(cls.info, cls.name, cfg, engine=EffSSL.info.citation)
    record["name"] = cls.title(cfg)
    return record


__all__ = ["Method", "StepOutput", "EffSSL", "NPID", "SimCLR", "Distill", "METHOD_CLASSES", "build_method",
           "describe_method"]
