"""The reports one stage writes and others read, as typed records: every key in one place.

- `Metrics`: RUN_DIR/metrics.json, written last by pretrain (published as training/metrics.json);
- `Evaluation`: RUN_DIR/eval.json, written by `edgezoo eval` (training/eval.json);
- `Validation`: RUN_DIR/export/validation.json, written last by export (onnx/validation.json);
- `CatalogRow`: one published model in the zoo's index (`zoo.catalog.list_models`, the zoo table, the demo's
  picker), made from the three above and config.json at the repo's latest version.

`from_json` reads every shape that was ever written: no key was ever renamed, keys were only added, so an
older report reads its missing fields as their defaults (`Metrics.train_seconds` falls back to `wall_time_s`
where `elapsed_s` is missing). `to_json` writes the current shape. Keys a record does not know are kept in
`extra` and written back, so a report from a newer edgezoo passes through an older one unharmed. Readers use
attributes; a misspelt key is an AttributeError, not a silent None. torch-free.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar

R = TypeVar("R", bound="Record")


@dataclass(frozen=True)
class Record:
    """Base of the records: JSON in (any shape ever written), JSON out (the current shape)."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # fields that only some writers fill: to_json leaves them out while None
    _OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    @classmethod
    def from_json(cls: type[R], data: Mapping[str, Any] | None) -> R:
        if data is not None and not isinstance(data, Mapping):
            raise ValueError(f"{cls.__name__}: a JSON object was expected, not {type(data).__name__}")
        data = dict(data or {})
        known = {name: data.pop(name) for name in cls.fields() if name in data}
        return cls(**known, extra=data)

    @classmethod
    def read(cls: type[R], path: str | Path) -> R:
        """The record in a JSON file; ValueError/OSError as json and open raise them."""
        return cls.from_json(json.loads(Path(path).read_text()))

    def to_json(self) -> dict[str, Any]:
        own = {name: getattr(self, name) for name in self.fields()
               if not (name in self._OMITTED_WHEN_NONE and getattr(self, name) is None)}
        return {**own, **self.extra}


@dataclass(frozen=True)
class Metrics(Record):
    """metrics.json: what training did and measured at its end; its presence means training completed."""

    method: str | None = None
    method_info: dict[str, Any] | None = None  # the method's own description (name, citations, options)
    model: str | None = None
    architecture: str | None = None
    model_args: dict[str, Any] | None = None
    small_stem: bool | None = None
    img_size: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    time_budget: dict[str, Any] | None = None  # the budget's plan and every re-plan (pretrain/budget.py)
    num_images: int | None = None
    images_seen: int | None = None
    wall_time_s: float | None = None  # training steps only
    elapsed_s: float | None = None  # the whole run, start to end (what a budget is measured against)
    images_per_sec: float | None = None
    peak_mem_mb: float | None = None
    device: str | None = None
    device_name: str | None = None
    knn_top1: float | None = None
    knn_bank: int | None = None
    rankme: float | None = None
    embed_dim: int | None = None
    final_loss: float | None = None
    torch_version: str | None = None
    compile: dict[str, Any] | None = None

    @property
    def train_seconds(self) -> float | None:
        """The run's wall time (runs written before `elapsed_s` existed: their training time)."""
        return self.elapsed_s if self.elapsed_s is not None else self.wall_time_s


@dataclass(frozen=True)
class Evaluation(Record):
    """eval.json: `edgezoo eval`'s kNN and RankMe of the final weights, of the same architecture at random init,
    and of an ``--init`` run's starting weights untrained, all under one protocol (bank, test set, k, t)."""

    _OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ("init", "init_knn_top1", "init_rankme")

    train: str | None = None  # the kNN bank's source
    test: str | None = None  # the labelled test split (None: RankMe only)
    k: int | None = None
    t: float | None = None
    num_train: int | None = None
    num_test: int | None = None
    knn_top1: float | None = None
    rankme: float | None = None
    random_init_knn_top1: float | None = None
    random_init_rankme: float | None = None
    init: str | None = None
    init_knn_top1: float | None = None
    init_rankme: float | None = None


@dataclass(frozen=True)
class Validation(Record):
    """export/validation.json: the export's checks against torch on real images, its latency, and the size and
    sha256 of every file it vouches for (`zoo.edge.read_validation` refuses one that failed or no longer matches).
    """

    passed: bool = False
    checks: list[dict[str, Any]] = field(default_factory=list)  # {name, value, op, threshold, passed}
    run_dir: str | None = None
    architecture: str | None = None
    embed_dim: int | None = None
    preprocess: dict[str, Any] | None = None
    onnx: dict[str, Any] = field(default_factory=dict)  # opset, producer, inputs, outputs
    runtime: dict[str, Any] = field(default_factory=dict)  # onnxruntime version, cpu, cores, threads, machine
    data: dict[str, Any] = field(default_factory=dict)  # the validation images and the kNN bank
    fp32_vs_torch: dict[str, Any] = field(default_factory=dict)
    int8_vs_torch: dict[str, Any] = field(default_factory=dict)
    ort_format: dict[str, Any] | None = None
    knn: dict[str, Any] = field(default_factory=dict)  # kNN top-1 of torch, fp32 and int8; the int8 drop
    thresholds: dict[str, Any] | None = None
    export: dict[str, Any] = field(default_factory=dict)  # exporter, opset asked for
    quantization: dict[str, Any] = field(default_factory=dict)  # the int8 scheme and how it was chosen
    ort_format_files: dict[str, Any] | None = None
    complexity: dict[str, Any] = field(default_factory=dict)  # params, GMACs
    latency_ms: dict[str, Any] = field(default_factory=dict)  # {variant: {"batchN": {p50_ms, p90_ms, ...}}}
    files: dict[str, Any] = field(default_factory=dict)  # {name: {sha256, size}} of every file vouched for
    sizes: dict[str, int] = field(default_factory=dict)
    validation_seconds: float | None = None
    created: str | None = None

    @property
    def opset(self) -> int | None:
        return self.onnx.get("opset")

    @property
    def onnxruntime(self) -> str | None:
        return self.runtime.get("onnxruntime")

    @property
    def failed_checks(self) -> list[str]:
        return [str(c.get("name")) for c in self.checks if not c.get("passed")]

    @property
    def int8_knn_drop(self) -> float | None:
        """kNN top-1 points int8 loses against torch on the validation bank; None when not measured."""
        return self.knn.get("int8_drop_points")

    @property
    def knn_bank_images(self) -> int | None:
        return (self.data.get("knn_bank") or {}).get("num_images")

    def latency_p50(self, variant: str, batch: int) -> float | None:
        """Median ms of one ONNX variant (``ort_fp32``, ``ort_int8``) at one batch size, as export measured it."""
        cell = (self.latency_ms.get(variant) or {}).get(f"batch{batch}") or {}
        return cell.get("p50_ms")

    def machine(self) -> str | None:
        """The CPU export measured latency on, with its core count and onnxruntime's thread setting."""
        rt = self.runtime
        if not rt.get("cpu"):
            return None
        return (f"{rt['cpu']}, {rt.get('cores', '?')} cores, onnxruntime {rt.get('onnxruntime', '?')} "
                f"with {rt.get('threads') or 'its default'} threads")


@dataclass(frozen=True)
class CatalogRow(Record):
    """One published model as the zoo's index lists it: its latest version's numbers, from its own files.

    A reference row (`reference` True, made by the zoo table) is an untrained starting point shown beside the
    models that began from it; its `repo_id` is the init's name.
    """

    repo_id: str = "?"
    version: str | None = None
    versions: int = 0
    architecture: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    method: str | None = None
    data: str | None = None
    img_size: int | None = None
    embed_dim: int | None = None
    knn_top1: float | None = None
    random_init_knn_top1: float | None = None
    init: str | None = None
    init_knn_top1: float | None = None
    init_rankme: float | None = None
    rankme: float | None = None
    params_m: float | None = None
    gmacs: float | None = None
    fp32_b1_ms: float | None = None
    int8_b1_ms: float | None = None
    fp32_b32_ips: float | None = None
    int8_b32_ips: float | None = None
    fp32_mb: float | None = None
    int8_mb: float | None = None
    int8_scheme: str | None = None
    int8_knn_drop: float | None = None
    onnx_passed: bool | None = None
    latency_cpu: str | None = None
    num_images: int | None = None
    epochs: int | None = None
    train_s: float | None = None
    device: str | None = None
    readout: bool = False  # a stage readout (zoo/readout.py) over its architecture: not the plain network
    reference: bool = False

    @property
    def name(self) -> str:
        """The repo's name without its org: what the table and the picker show."""
        return self.repo_id.split("/")[-1]
