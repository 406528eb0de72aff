"""Model cards: README.md of a published repo, rendered from the run's own files.

Every number on the card is read from RUN_DIR (metrics.json, eval.json, log.csv,
config.yaml, backbone/config.json, export/validation.json), measured from the
weights at publish time (parameters; GMACs when torch is installed) or from the
staged repository (the files and their sizes: exactly what is published), never
typed by hand. The YAML metadata is produced with a YAML dumper, not templated, so
quoting is always valid; the prose lives in ``model_cards/template.md.j2``.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from zoo.errors import EdgezooError
from zoo.timm_files import readout_spec
from zoo.layout import WEIGHTS
from zoo.public import public_json, public_path
from zoo.records import Evaluation, Metrics, Validation

if TYPE_CHECKING:  # pragma: no cover
    from zoo.runfiles import RunFiles

log = logging.getLogger(__name__)

CURVE_NAME = "training_curve.png"
# A link to model_cards/template.md.j2 (the copy reviewers edit), so installed wheels carry the template too.
TEMPLATE = Path(__file__).parent / "templates" / "model_card.md.j2"
# Named sources that are Hub datasets: (Hub dataset id, display name). A user's folder has no id.
HUB_DATASETS = {"cifar10": ("uoft-cs/cifar10", "CIFAR-10")}
# Training options every card shows; each method adds its own (metrics.json ``method_info.options``, written by
# pretrain/methods/). The complete set is published as training/config.yaml.
KEY_OPTIONS = ("data", "max_images", "img_size", "model", "small_stem", "method", "epochs", "time_budget",
               "batch_size", "lr", "seed")


def method_context(metrics: Metrics, config: dict[str, Any]) -> dict[str, Any]:
    """The card's method name, citations and options from the run's own description of its method
    (``method_info``; a run trained before methods described themselves shows its method's key only)."""
    info = metrics.method_info or {}
    options = {k: config[k] for k in KEY_OPTIONS if k in config}
    options.update({k: config.get(k, v) for k, v in (info.get("options") or {}).items()})
    return {"method_name": info.get("name", metrics.method), "citation": info.get("citation"),
            "method_citation": info.get("engine_citation"), "key_options": options}


_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def _require(module: str) -> Any:
    """Import a publishing-only dependency, or say how to install it (one line, no traceback)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EdgezooError(f"publishing needs {module} (model card): pip install 'edgezoo[train]'") from exc


# How the embedding is pooled, in words (config.json global_pool; a ViT's is its class token).
_POOLING = {"avg": "global average pooling", "token": "the class token", "max": "global max pooling"}


# --- measurements ---------------------------------------------------------------------------------------

def _params_from_safetensors(path: Path) -> int:
    """Parameter count from the safetensors header alone (no torch): BatchNorm statistics excluded."""
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    return sum(math.prod(v["shape"]) for k, v in header.items()
               if k != "__metadata__" and not k.endswith(_BUFFER_SUFFIXES))


def model_stats(backbone_dir: str | Path, img_size: int) -> dict[str, Any]:
    """Parameters, and GMACs at `img_size` counted with torch's FlopCounterMode where torch is installed."""
    backbone_dir = Path(backbone_dir)
    try:
        import torch  # noqa: F401 - only asks whether torch is installed

        from zoo.timm_files import load_backbone
    except ImportError:
        log.info("torch not installed: parameters from the safetensors header, GMACs not counted")
        return {"params": _params_from_safetensors(backbone_dir / WEIGHTS), "gmacs": None,
                "counted_with": None}
    return module_stats(load_backbone(backbone_dir), img_size)


def module_stats(model: "torch.nn.Module", img_size: int) -> dict[str, Any]:
    """Parameters and GMACs of a loaded backbone at `img_size` (export counts the model it already holds)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from zoo.backbones import count_params, in_mode

    counter = FlopCounterMode(display=False)
    # one image: BatchNorm must use its running statistics, and must not update them
    with in_mode(model), counter, torch.no_grad():
        model(torch.zeros(1, 3, img_size, img_size))
    return {"params": count_params(model), "gmacs": counter.get_total_flops() / 2 / 1e9,
            "counted_with": f"torch {torch.__version__} FlopCounterMode"}


# --- the training curve ---------------------------------------------------------------------------------

def _floats(rows: Sequence[dict[str, str]], key: str) -> list[float | None]:
    out: list[float | None] = []
    for row in rows:
        try:
            out.append(float(row[key]) if row.get(key) not in (None, "") else None)
        except ValueError:
            out.append(None)
    return out


def plot_training_curve(rows: Sequence[dict[str, str]], out: str | Path, title: str = "") -> Path:
    """Loss per epoch (and kNN top-1 where evaluated) from log.csv's rows, as a PNG."""
    _require("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [int(float(r["epoch"])) for r in rows]
    loss, knn = _floats(rows, "loss"), _floats(rows, "knn_top1")
    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)  # drawn with Agg whatever backend the caller uses; no pyplot state, nothing switched
    ax = fig.add_subplot()
    ax.plot(epochs, loss, marker="o", color="tab:blue", label="training loss")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss", color="tab:blue")
    ax.grid(alpha=0.3)
    points = [(e, k * 100) for e, k in zip(epochs, knn) if k is not None]
    if points:
        ax2 = ax.twinx()
        ax2.plot(*zip(*points), marker="s", color="tab:orange", label="kNN top-1 (%)")
        ax2.set_ylabel("kNN top-1 (%)", color="tab:orange")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, format="png", metadata={"Software": None})
    return out


# --- the card -------------------------------------------------------------------------------------------

def _named_source(spec: str | None) -> tuple[str | None, str | None, str | None]:
    """(Hub dataset id or None, display name, split) of a source spec; local paths reduced to their name."""
    from zoo.datasets import split_spec

    if not spec:
        return None, None, None
    base, split = split_spec(str(spec))
    hub_id, name = HUB_DATASETS.get(base.lower(), (None, public_path(base)))
    return hub_id, name, split


def dataset_info(config: dict[str, Any], data_record: dict[str, Any]) -> dict[str, Any]:
    """Training and kNN-evaluation data as the card names them: Hub dataset ids only for known named sources."""
    hub_id, name, _ = _named_source(config.get("data"))
    eval_spec = (data_record.get("eval") or {}).get("spec") or config.get("eval_data")
    eval_hub_id, eval_name, eval_split = _named_source(eval_spec)
    train = data_record.get("train") or {}
    return {"hub_id": hub_id, "name": name, "eval_hub_id": eval_hub_id, "eval_name": eval_name,
            "eval_split": eval_split or ("test" if eval_hub_id else None),
            "classes": train.get("classes"), "max_images": train.get("max_images")}


def _latency_rows(latency: dict[str, Any]) -> list[dict[str, Any]]:
    """``{runtime: {"batchN": {p50_ms, p90_ms, ...}}}`` as table rows."""
    rows = []
    for runtime, per_batch in latency.items():
        for batch, stats in (per_batch.items() if isinstance(per_batch, dict) else ()):
            if isinstance(stats, dict) and "p50_ms" in stats:
                rows.append({"runtime": runtime, "batch": str(batch).removeprefix("batch"), **stats})
    return rows


def onnx_summary(validation: Validation) -> dict[str, Any]:
    """export/validation.json in the card's terms, local paths reduced to their last component."""
    v = Validation.from_json(public_json(validation.to_json()))
    fp32, int8 = v.fp32_vs_torch, v.int8_vs_torch
    return {
        "passed": v.passed, "checks": v.checks, "opset": v.opset, "onnxruntime": v.onnxruntime,
        "machine": v.runtime.get("machine"), "exporter": v.export.get("exporter"),
        "quantization": v.quantization, "validated_on": v.data.get("validation") or {},
        "agreement": [(key, fp32.get(key), int8.get(key)) for key in dict.fromkeys([*fp32, *int8])
                      if not key.endswith("_raw")],
        "knn": v.knn, "knn_bank": v.knn_bank_images, "latency": _latency_rows(v.latency_ms),
    }


def lineage_table(lineage: Any) -> dict[str, Any] | None:
    """lineage.json (one record per continual step) as table columns and rows; None without one."""
    if lineage is None:
        return None
    steps = public_json(lineage if isinstance(lineage, list) else [lineage])
    steps = [s if isinstance(s, dict) else {"step": s} for s in steps]
    columns = list(dict.fromkeys(k for step in steps for k in step))
    return {"columns": columns, "rows": [[step.get(c) for c in columns] for step in steps]}


def _provenance(backbone_config: dict[str, Any], key: str) -> dict[str, Any] | None:
    """config.json's ``edgezoo.<key>`` record (where the weights come from), local paths reduced; None if absent."""
    record = (backbone_config.get("edgezoo") or {}).get(key)
    return public_json(record) if record else None


def init_info(backbone_config: dict[str, Any]) -> dict[str, Any] | None:
    """The weights the run started from (``--init``: config.json's ``edgezoo.init``) as the card names them, with
    their license; None for a run from random init. Local paths are reduced to their last component."""
    record = _provenance(backbone_config, "init")
    if record is None:
        return None
    return {"source": record.get("source"), "origin": record.get("origin") or record.get("source"),
            "license": record.get("license"), "sha256": record.get("sha256"), "kind": record.get("kind"),
            "wise_ft_alpha": record.get("wise_ft_alpha")}


def teacher_info(backbone_config: dict[str, Any]) -> dict[str, Any] | None:
    """The frozen teacher the weights were distilled from (``--teacher``: config.json's ``edgezoo.teacher``: source,
    origin, license, sha256, input size, embedding size); None for a run without one."""
    record = _provenance(backbone_config, "teacher")
    if record is None:
        return None
    return {"license": None, "img_size": None, "dim": None, **record,
            "origin": record.get("origin") or record.get("source")}


def knn_headline(run: "RunFiles") -> dict[str, Any]:
    """The card's one kNN figure and its protocol: `edgezoo eval`'s (eval.json) when the run has a current
    one, else training's last evaluation (metrics.json, whose test-set size is not recorded).

    The random-init baseline (and an ``--init`` run's untrained starting weights) are shown only from eval.json,
    where they are measured under the same protocol.
    """
    ev, m, cfg = run.evaluation or Evaluation(), run.metrics, run.config
    if ev.knn_top1 is not None:
        hub_id, name, split = _named_source(ev.test)
        return {"top1": ev.knn_top1, "k": ev.k, "t": ev.t, "bank": ev.num_train, "test": ev.num_test,
                "rankme": m.rankme if ev.rankme is None else ev.rankme, "source": "training/eval.json",
                "random_init": ev.random_init_knn_top1, "init": ev.init, "init_top1": ev.init_knn_top1,
                "dataset": {"hub_id": hub_id, "name": name, "split": split}}
    data = dataset_info(cfg, run.data)
    return {"top1": m.knn_top1, "k": cfg.get("knn_k"), "t": cfg.get("knn_t"),
            "bank": m.knn_bank or cfg.get("eval_max_train"), "test": None, "rankme": m.rankme,
            "source": "training/metrics.json", "random_init": None, "init": None, "init_top1": None,
            "dataset": {"hub_id": data["eval_hub_id"], "name": data["eval_name"], "split": data["eval_split"]}}


def _metadata(ctx: dict[str, Any]) -> dict[str, Any]:
    m, data, knn = ctx["metrics"], ctx["data"], ctx["knn"]
    meta: dict[str, Any] = {
        "library_name": "timm",
        "pipeline_tag": "image-feature-extraction",
        "license": ctx["license"],
        "tags": sorted({"edgezoo", "timm", "image-feature-extraction", "self-supervised", "onnx",
                        str(m.method), str(m.architecture)}),
    }
    if data["hub_id"]:
        meta["datasets"] = [data["hub_id"]]
    evaluated_on = knn["dataset"]
    if knn["top1"] is not None and evaluated_on["name"]:
        dataset: dict[str, Any] = {"name": evaluated_on["name"], "type": evaluated_on["hub_id"] or "imagefolder"}
        if evaluated_on["split"]:
            dataset["split"] = evaluated_on["split"]
        meta["model-index"] = [{
            "name": ctx["repo_id"],
            "results": [{
                "task": {"type": "image-feature-extraction", "name": f"kNN classification (k={knn['k']})"},
                "dataset": dataset,
                "metrics": [{"type": "accuracy", "name": "kNN top-1", "value": round(100 * knn["top1"], 2)}],
            }],
        }]
    return meta


def card_context(run: "RunFiles", repo_id: str, version: str, *, hub: str, files: Mapping[str, int],
                 stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the template shows, from the run's files (and `stats`, measured when not given).

    `files` maps every published path (as staged, the card and manifest aside) to its size: the card lists
    exactly these, not what the export folder holds. `hub` ("local" or "hf") picks the plain-timm recipe.
    """
    import yaml

    m, cfg = run.metrics, run.backbone_config
    pcfg = cfg.get("pretrained_cfg", {})
    stats = stats or model_stats(run.backbone, int(m.img_size))
    config = public_json(run.config)
    ctx: dict[str, Any] = {
        "repo_id": repo_id, "name": repo_id.split("/")[-1], "version": version,
        "metrics": m, "config": config, **method_context(m, config),
        "recipe": (config.get("extra") or {}).get("recipe"),
        "architecture": cfg["architecture"], "embed_dim": cfg["embed_dim"], "pretrained_cfg": pcfg,
        "model_args": cfg.get("model_args") or {},
        "pooling": _POOLING.get(cfg.get("global_pool", "avg"), f"{cfg.get('global_pool')} pooling"),
        "license": pcfg.get("license", "apache-2.0"), "stats": stats,
        "data": dataset_info(run.config, run.data), "knn": knn_headline(run), "hub": hub,
        "epochs_logged": len(run.log_rows), "last_row": run.log_rows[-1],
        "onnx": onnx_summary(run.validation), "lineage": lineage_table(run.lineage),
        "init": init_info(cfg), "teacher": teacher_info(cfg), "readout": readout_spec(cfg),
        "files": dict(sorted(files.items())),
        "onnx_files": {f: n for f, n in sorted(files.items()) if f.startswith("onnx/") and f.endswith(".onnx")},
        "curve": CURVE_NAME,
    }
    ctx["metadata_yaml"] = yaml.safe_dump(_metadata(ctx), sort_keys=False, allow_unicode=True).strip()
    return ctx


def _fmt(value: Any, digits: int = 4) -> str:
    """Numbers at a sensible precision for prose and tables (4 significant digits by default)."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "–"}[value]
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0 or not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v, digits) for v in value)
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.2f} h"


def render_card(context: dict[str, Any], template: str | Path | None = None) -> str:
    """README.md text: YAML front matter + the jinja2 template (StrictUndefined: a missing fact fails loudly)."""
    jinja2 = _require("jinja2")
    path = Path(template) if template else TEMPLATE
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(path.parent)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters.update(fmt=_fmt, duration=_duration,
                       pct=lambda x, d=2: "–" if x is None else f"{100 * x:.{d}f}%",
                       size=lambda n: "–" if n is None else f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB",
                       tojson_compact=lambda v: json.dumps(v, sort_keys=True))
    return env.get_template(path.name).render(**context)
