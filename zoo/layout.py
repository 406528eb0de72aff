"""Where every file lives: the RUN_DIR the stages share, and the repository publishing makes of it.

The stages (pretrain -> evaluate -> export -> publish, and the demo) talk only
through a RUN_DIR. This module is its contract: the names, who writes each file,
and when a stage's output is complete or stale. Every stage, the pipeline, the hub
and the demo take names and predicates from here; torch-free.

RUN_DIR/                        written by              holds
  config.yaml                   pretrain, first         the resolved PretrainConfig; --resume reads it back
  data.json                     pretrain                training source, root, files, classes; the eval split
  log.csv                       pretrain, every epoch   epoch, loss, lr, images_per_s, knn_top1, rankme, wall_time_s
  checkpoint.pt                 pretrain, every epoch   resumable state (model, optimizer, RNGs, time-budget plan)
  backbone/config.json          pretrain, at the end    timm-native config, with the `edgezoo` block (method, data)
  backbone/model.safetensors    pretrain, at the end    the weights: files older than these describe other weights
  backbone/readout.safetensors  pretrain (readout)      a stage readout's tensors (zoo/readout.py), written just
                                                        before model.safetensors; config.json's edgezoo.readout
  metrics.json                  pretrain, last          final numbers; its presence means training completed
  lineage.json                  pretrain (continual)    which chunks, in which order, with which settings
  replay.npz, replay_in.npz     pretrain (continual)    the reservoir carried forward / replayed from the source
  mas_importance.safetensors    pretrain (continual)    MAS parameter importance of the source
  eval.json                     evaluate                kNN top-1, RankMe, the random-init baseline (and an --init
                                                        run's untrained starting weights), the protocol
  export/model.onnx             export                  fp32 ONNX (one file, weights inline)
  export/model.int8.onnx        export                  int8 ONNX
  export/model.ort              export                  fp32 in ORT format, for minimal onnxruntime builds
  export/model.int8.ort         export                  int8 in ORT format
  export/required_operators.config  export              the operators those builds must include
  export/preprocess.json        export                  resize, crop and normalisation the ONNX files expect
  export/validation.json        export, last            the checks against torch on real images, and the size and
                                                        sha256 of every file it vouches for
  *.tmp                         any stage               a write in progress (atomic rename); left only by a crash

metrics.json, eval.json and validation.json are read and written through their records in zoo/records.py
(`Metrics`, `Evaluation`, `Validation`): the keys each holds are listed there, once.

Complete / stale, per stage (`RunDir`):
  pretrain  complete: metrics.json; resumable: checkpoint.pt without it; anything else: start afresh
  evaluate  fresh: eval.json not older than the weights
  export    current: validation.json passed, still matches the files (`zoo.edge.read_validation`), and both
            ONNX models are there and not older than the weights (`zoo.edge.current_export`, beside the
            validation.json reader); the export stage redoes, and publishing refuses, an export that is not
  publish   done when a hub version's manifest.json lists these weights' sha256 (`zoo.publish.published_version`)

The published repository (org/name, one git tag per version), made from a RUN_DIR by
zoo/publish.py: `REPO_FILES` (always) and `OPTIONAL_REPO_FILES` (when the run has
them) map each repo path to its RUN_DIR source; `REPO_EVAL` (eval.json, when it describes
these weights) and `REPO_CONFIG` (config.yaml) are rewritten without local paths; README.md
(the card) and manifest.json (size and sha256 of every other file, written last) are made by publish.
"""

from __future__ import annotations

from pathlib import Path

# --- RUN_DIR ------------------------------------------------------------------------------------------
CONFIG = "config.yaml"
DATA = "data.json"
LOG = "log.csv"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
BACKBONE = "backbone"
BACKBONE_CONFIG = "config.json"  # inside backbone/, and at a published repo's root
WEIGHTS = "model.safetensors"  # idem
READOUT = "readout.safetensors"  # idem, only for a model with a stage readout (zoo/readout.py)
READOUT_KEY = "readout"  # config.json's edgezoo block describing it: stages, part_dims, dim, with_embedding
LINEAGE = "lineage.json"
REPLAY = "replay.npz"
REPLAY_IN = "replay_in.npz"
IMPORTANCE = "mas_importance.safetensors"
EVAL = "eval.json"
EXPORT = "export"
ONNX = "model.onnx"  # inside export/, and under onnx/ in a published repo
ONNX_INT8 = "model.int8.onnx"
ORT = "model.ort"
ORT_INT8 = "model.int8.ort"
ORT_OPS = "required_operators.config"
PREPROCESS = "preprocess.json"
VALIDATION = "validation.json"
TMP_SUFFIX = ".tmp"

# --- the published repository -------------------------------------------------------------------------
MANIFEST = "manifest.json"
CARD = "README.md"
ONNX_VARIANTS = {"fp32": f"onnx/{ONNX}", "int8": f"onnx/{ONNX_INT8}"}
TORCH_FILES = (BACKBONE_CONFIG, WEIGHTS)
REPO_EVAL = f"training/{EVAL}"  # the run's eval.json, published when it describes these weights
REPO_CONFIG = f"training/{CONFIG}"  # the run's config.yaml, scrubbed of local paths by publish
REPO_METRICS = f"training/{METRICS}"
REPO_VALIDATION = f"onnx/{VALIDATION}"
REPO_PREPROCESS = f"onnx/{PREPROCESS}"
REPO_FILES = {  # repo path -> RUN_DIR path
    BACKBONE_CONFIG: f"{BACKBONE}/{BACKBONE_CONFIG}",
    WEIGHTS: f"{BACKBONE}/{WEIGHTS}",
    ONNX_VARIANTS["fp32"]: f"{EXPORT}/{ONNX}",
    ONNX_VARIANTS["int8"]: f"{EXPORT}/{ONNX_INT8}",
    REPO_VALIDATION: f"{EXPORT}/{VALIDATION}",
    f"training/{LOG}": LOG,
    REPO_METRICS: METRICS,
}
OPTIONAL_REPO_FILES = {READOUT: f"{BACKBONE}/{READOUT}", REPO_PREPROCESS: f"{EXPORT}/{PREPROCESS}",
                       LINEAGE: LINEAGE}


class _File:
    """A RunDir attribute that is the path of one RUN_DIR file."""

    def __init__(self, rel: str) -> None:
        self.rel = rel

    def __get__(self, run: "RunDir | None", owner: type) -> "Path | _File":
        return self if run is None else run.path / self.rel


class RunDir:
    """A RUN_DIR's paths and each stage's complete/stale predicate (files are read by their stage's module)."""

    config = _File(CONFIG)
    data = _File(DATA)
    log = _File(LOG)
    checkpoint = _File(CHECKPOINT)
    metrics = _File(METRICS)
    backbone = _File(BACKBONE)
    backbone_config = _File(f"{BACKBONE}/{BACKBONE_CONFIG}")
    weights = _File(f"{BACKBONE}/{WEIGHTS}")
    readout = _File(f"{BACKBONE}/{READOUT}")
    lineage = _File(LINEAGE)
    eval = _File(EVAL)
    export = _File(EXPORT)
    onnx = _File(f"{EXPORT}/{ONNX}")
    onnx_int8 = _File(f"{EXPORT}/{ONNX_INT8}")
    validation = _File(f"{EXPORT}/{VALIDATION}")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def rel(self, path: Path) -> str:
        """`path` relative to the RUN_DIR, as messages name it."""
        return path.relative_to(self.path).as_posix()

    # predicates
    def pretrain_state(self) -> str:
        """'complete' (metrics.json), 'resumable' (a checkpoint without it) or 'fresh'."""
        if self.metrics.is_file():
            return "complete"
        return "resumable" if self.checkpoint.is_file() else "fresh"

    def newer_than_weights(self, path: Path) -> bool:
        """True when `path` exists and was written after (or with) the weights it describes."""
        return (path.is_file() and self.weights.is_file()
                and path.stat().st_mtime_ns >= self.weights.stat().st_mtime_ns)

    def evaluation_fresh(self) -> bool:
        return self.newer_than_weights(self.eval)

    def leftovers(self) -> list[str]:
        """Half-written files (a stage interrupted mid-write), relative to the RUN_DIR."""
        return sorted(p.relative_to(self.path).as_posix() for pattern in (f"*{TMP_SUFFIX}", f"*/*{TMP_SUFFIX}", f"*{TMP_SUFFIX}.*", f"*/*{TMP_SUFFIX}.*")
                      for p in self.path.glob(pattern))
