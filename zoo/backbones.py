"""Backbone registry and factory over timm: one interface for every backbone.

Any timm model name works (created with ``num_classes=0`` so the output is the
pooled embedding). For small inputs (32 px CIFAR) the ``*_smallstem`` variants
replace the stride-2 stem with a 3x3 stride-1 conv and drop the max-pool; they
are registered with timm's own ``register_model`` so that plain
``timm.create_model("resnet18_smallstem")`` and ``hf-hub:`` loading re-create the
architecture by name: ``import zoo`` registers them with timm, right away when
timm is already imported, else the moment timm is imported (either order works).

torch and timm are imported lazily: ``zoo`` itself must import without them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from zoo.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

SMALL_STEM_SUFFIX = "_smallstem"
# Families whose stem this module knows how to shrink (resnet: conv1 + maxpool;
# mobilenet / efficientnet: conv_stem stride).
SMALL_STEM_BASES: tuple[str, ...] = (
    "resnet18", "resnet34", "resnet50",
    "mobilenetv3_large_100", "mobilenetv3_small_100", "mobilenetv3_small_050",
    "efficientnet_b0", "efficientnet_lite0",
)


def small_stem_name(base: str) -> str:
    """The registered name of `base` with the small-input stem."""
    return base if base.endswith(SMALL_STEM_SUFFIX) else base + SMALL_STEM_SUFFIX


def apply_small_stem(model: "torch.nn.Module") -> "torch.nn.Module":
    """3x3 stride-1 first conv and no max-pool, in place (resnet, mobilenet, efficientnet)."""
    import torch.nn as nn

    if isinstance(getattr(model, "conv1", None), nn.Conv2d) and hasattr(model, "maxpool"):
        old = model.conv1
        model.conv1 = nn.Conv2d(old.in_channels, old.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif isinstance(getattr(model, "conv_stem", None), nn.Conv2d):
        conv = model.conv_stem
        if conv.kernel_size != (3, 3):
            model.conv_stem = nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=conv.bias is not None)
        else:
            conv.stride = (1, 1)
            conv.padding = (1, 1)
    else:
        raise ConfigError(f"{type(model).__name__}: no known stem to shrink (resnet, mobilenet, efficientnet only)")
    return model


# Fields of a registry entry that describe the base model's published weights, not ours.
_FOREIGN_CFG_KEYS = frozenset({"url", "hf_hub_id", "hf_hub_filename", "tag", "paper_ids", "paper_name", "notes",
                               "origin_url", "license", "source", "file", "state_dict"})


def _small_stem_entrypoint(base: str) -> Callable[..., Any]:
    def entry(pretrained: bool = False, **kwargs: Any) -> "torch.nn.Module":
        import timm
        from timm.models import load_pretrained

        given = kwargs.pop("pretrained_cfg", None)
        overlay = kwargs.pop("pretrained_cfg_overlay", None) or {}
        kwargs.pop("cache_dir", None)
        given_cfg = (given.to_dict() if hasattr(given, "to_dict") else dict(given)) if given is not None else None
        if given_cfg is not None and given_cfg.get("num_classes") is not None:
            # hf-hub loading passes the repo's config, not num_classes: build the head it describes
            kwargs.setdefault("num_classes", given_cfg["num_classes"])
        model = apply_small_stem(timm.create_model(base, pretrained=False, **kwargs))
        if given_cfg is not None:
            cfg = given_cfg
        else:  # the base's preprocessing defaults, never its weight sources or paper tags
            cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in _FOREIGN_CFG_KEYS}
        cfg.update(overlay)
        cfg["architecture"] = small_stem_name(base)
        model.pretrained_cfg = model.default_cfg = cfg
        if pretrained:
            load_pretrained(model, pretrained_cfg=cfg, num_classes=model.num_classes, strict=True)
        return model

    entry.__name__ = entry.__qualname__ = small_stem_name(base)
    entry.__module__ = __name__
    entry.__doc__ = f"{base} with a 3x3 stride-1 stem and no max-pool, for 32-64 px inputs (edgezoo)."
    return entry


def register_timm_archs() -> list[str]:
    """Register the small-stem variants with timm (idempotent); return their names."""
    from timm.models import is_model, register_model

    names = []
    for base in SMALL_STEM_BASES:
        name = small_stem_name(base)
        if not is_model(name):
            register_model(_small_stem_entrypoint(base))
        names.append(name)
    return names


class _RegisterAfterExec:
    """timm's own loader, which registers the small-stem variants once timm's import has finished."""

    def __init__(self, loader: Any, hook: "_RegisterOnTimmImport") -> None:
        self._loader, self._hook = loader, hook

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self._hook)  # one shot: timm is in sys.modules from now on
        try:
            register_timm_archs()
        except Exception as exc:  # noqa: BLE001 - never break the caller's `import timm`
            log.warning("could not register edgezoo's *%s architectures with timm: %s", SMALL_STEM_SUFFIX, exc)

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, ...: timm's loader answers
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._loader, name)


class _RegisterOnTimmImport:
    """A sys.meta_path entry that finds nothing itself: it wraps the loader that imports timm (see above)."""

    def __init__(self) -> None:
        self._searching = False

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: Any = None) -> Any:
        if fullname != "timm" or self._searching:
            return None
        self._searching = True  # the search below asks sys.meta_path again, this finder included
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._searching = False
        if spec is None or spec.loader is None:
            return None  # timm is not installed: the import fails as it would without edgezoo
        spec.loader = _RegisterAfterExec(spec.loader, self)
        return spec


def register_with_timm() -> None:
    """Register the small-stem variants with timm now if it is imported, else when it gets imported.

    ``import zoo`` calls this, so plain ``timm.create_model("hf-hub:org/name")`` finds
    ``*_smallstem`` whether timm or zoo was imported first, while zoo itself never imports
    timm (edge installs have no torch).

    Why a sys.meta_path entry: timm 1.0 has no plugin mechanism for architectures (no entry
    points; `register_model` needs timm imported), and ResNet's constructor has no argument for
    a stride-1 3x3 stem without the max-pool (its ``stem_type`` only deepens the stem), so a
    published ``*_smallstem`` repo can only load after this registration. The entry is
    one-shot: it removes itself once timm's import has run, and never imports timm itself.
    """
    if "timm" in sys.modules:
        if sys.modules["timm"] is not None:  # None: the caller has blocked timm on purpose
            register_timm_archs()
    elif not any(isinstance(f, _RegisterOnTimmImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnTimmImport())


def create_backbone(name: str, *, small_stem: bool = False, **model_args: Any) -> "torch.nn.Module":
    """A timm backbone whose forward returns pooled features (``num_classes=0``).

    `model_args` go to the timm constructor (e.g. ``img_size=32, patch_size=4`` for a ViT at 32 px).
    Weights are random: nothing is downloaded at run time.
    """
    import timm

    register_timm_archs()
    arch = small_stem_name(name) if small_stem else name
    if not timm.is_model(arch):
        hint = f" (small stem supports: {', '.join(SMALL_STEM_BASES)})" if small_stem else ""
        raise ConfigError(f"unknown timm model {arch!r}{hint}")
    try:
        return timm.create_model(arch, pretrained=False, num_classes=0, **model_args)
    except (TypeError, ValueError, AssertionError) as exc:
        if not model_args:
            raise
        raise ConfigError(f"timm could not build {arch} with model_args {model_args}: {type(exc).__name__}: "
                          f"{exc}") from exc


def required_input_size(model: "torch.nn.Module") -> tuple[int, int] | None:
    """The (H, W) input a model accepts only, or None when it takes any size (a CNN, a ViT with dynamic_img_size).

    timm's own reading (``timm.models.get_model_input_config``) where this timm has it, else the
    patch embedding's ``strict_img_size`` as older timm versions record it.
    """
    try:
        from timm.models import get_model_input_config
    except ImportError:  # timm < 1.0.31
        get_model_input_config = None
    if get_model_input_config is not None:
        current = get_model_input_config(model)
        return tuple(int(s) for s in current["input_size"][-2:]) if current["fixed_input_size"] else None
    patch_embed = getattr(model, "patch_embed", None)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    fixed = getattr(patch_embed, "strict_img_size", cfg.get("fixed_input_size", False))
    if not fixed or getattr(model, "dynamic_img_size", False):
        return None
    size = getattr(patch_embed, "img_size", None) or cfg.get("input_size", (3, 224, 224))[-2:]
    return tuple(int(s) for s in size)


def check_input_size(model: "torch.nn.Module", img_size: int, name: str) -> None:
    """A clear ConfigError when `model` (timm name `name`) cannot take img_size x img_size inputs."""
    size = required_input_size(model)
    if size is not None and size != (img_size, img_size):
        raise ConfigError(
            f"{name} takes a fixed {size[0]}x{size[1]} input but img_size is {img_size}: build it for "
            f"{img_size} px with --model-args '{{\"img_size\": {img_size}}}' (model_args in a recipe; a ViT at "
            f"32 px also wants a small patch, e.g. {{\"img_size\": 32, \"patch_size\": 4}}), or set --img-size "
            f"{size[0]}")


def global_pool_of(model: "torch.nn.Module") -> str | None:
    """The pooling that makes the model's embedding ('avg', 'token' for a ViT's class token, ...), None if unknown.

    Read from the module that pools, as timm does when it writes a config.json.
    """
    head = getattr(model, "head", None)
    for pool in (getattr(head, "global_pool", None), getattr(head, "pool_type", None),
                 getattr(model, "global_pool", None)):
        pool = getattr(pool, "pool_type", pool)
        if isinstance(pool, str):
            return pool
    return None


@contextlib.contextmanager
def in_mode(module: "torch.nn.Module", training: bool = False) -> Iterator["torch.nn.Module"]:
    """`module` in train (or eval) mode for the block, its own mode back after it, exception or not: a forward
    for measuring must not leave a training network in eval mode, nor update BatchNorm statistics by accident."""
    was_training = module.training
    module.train(training)
    try:
        yield module
    finally:
        module.train(was_training)


def embedding_dim(model: "torch.nn.Module", img_size: int) -> int:
    """Measure the embedding size with a forward pass (num_features can differ, e.g. mobilenetv3)."""
    import torch

    param = next(model.parameters())
    with in_mode(model), torch.no_grad():
        out = model(torch.zeros(1, 3, img_size, img_size, device=param.device, dtype=param.dtype))
    if out.ndim != 2:
        raise ConfigError(f"backbone output must be (N, D) pooled features, got shape {tuple(out.shape)}")
    return int(out.shape[1])


def count_params(model: "torch.nn.Module") -> int:
    return sum(p.numel() for p in model.parameters())
