"""SSL methods in one engine: effssl (the project's method), two baselines, and SEED distillation.

Every module of this package that defines a `Method` subclass with its own ``name`` adds that method:
`registry()` finds it, ``--method NAME`` trains it, and the card describes it from its ``info``. So a new
method is one new file here (and its test); its option defaults, if it needs any, are one entry of
`pretrain.config.METHOD_DEFAULTS`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from pretrain.config import PretrainConfig
from pretrain.methods.base import Method, StepOutput
from pretrain.methods.distill import Distill
from pretrain.methods.effssl import NPID, EffSSL
from pretrain.methods.info import describe
from pretrain.methods.simclr import SimCLR
from zoo.errors import ConfigError


def registry() -> dict[str, type[Method]]:
    """{name: class} of every method defined in this package's modules (read each call: a new file counts)."""
    found: dict[str, type[Method]] = {}
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, Method) and obj is not Method
                    and obj.__module__ == module.__name__):
                if obj.name in found and found[obj.name] is not obj:
                    raise ConfigError(f"two methods are named {obj.name!r}: {found[obj.name].__module__} and "
                                      f"{obj.__module__}")
                found[obj.name] = obj
    return dict(sorted(found.items()))


def method_class(name: str) -> type[Method]:
    """The class of ``--method NAME``; an unknown name is one line listing the methods."""
    methods = registry()
    if name not in methods:
        raise ConfigError(f"method (--method) must be one of {', '.join(methods)}; got {name!r}")
    return methods[name]


def build_method(name: str, **kwargs: Any) -> Method:
    return method_class(name)(**kwargs)


def describe_method(cfg: PretrainConfig) -> dict[str, Any]:
    """metrics.json's ``method_info``: the run's method in its own words, cited, with the options that shape it
    (and this project's method's citation, which the card gives too when a baseline was trained)."""
    cls = method_class(cfg.method)
    record = describe(cls.info, cls.name, cfg, engine=EffSSL.info.citation)
    record["name"] = cls.title(cfg)
    return record


__all__ = ["Method", "StepOutput", "EffSSL", "NPID", "SimCLR", "Distill", "build_method", "describe_method",
           "method_class", "registry"]
