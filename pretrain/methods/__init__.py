"""SSL methods in one engine: effssl (the project's method) and two baselines."""

from __future__ import annotations

from pretrain.methods.base import Method, StepOutput
from pretrain.methods.effssl import EffSSL, NPID
from pretrain.methods.simclr import SimCLR

METHOD_CLASSES: dict[str, type[Method]] = {"effssl": EffSSL, "npid": NPID, "simclr": SimCLR}


def build_method(name: str, **kwargs) -> Method:
    try:
        cls = METHOD_CLASSES[name]
    except KeyError as exc:
        raise ValueError(f"unknown method {name!r}; one of {sorted(METHOD_CLASSES)}") from exc
    return cls(**kwargs)


__all__ = ["Method", "StepOutput", "EffSSL", "NPID", "SimCLR", "METHOD_CLASSES", "build_method"]
