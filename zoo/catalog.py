"""The zoo's index: every published model of a hub with its key metrics (`edgezoo list`).

Each row is read from the repository's own files at its latest version
(config.json, training/metrics.json, training/eval.json, onnx/validation.json), on
the local hub or the Hugging Face Hub (models tagged ``edgezoo``), so the index and
the zoo table (app/zoo/table.py) cannot drift from what was published. torch-free.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from zoo.hub import VERSION_RE, latest_version, open_hub
from zoo.layout import BACKBONE_CONFIG, ONNX, ONNX_INT8, READOUT_KEY, REPO_EVAL, REPO_METRICS, REPO_VALIDATION
from zoo.records import CatalogRow, Evaluation, Metrics, Record, Validation

R = TypeVar("R", bound=Record)


def _json_object(data: bytes | str | None) -> dict[str, Any]:
    """A repo file's JSON object; missing, unreadable or not an object: empty (an older repo still lists)."""
    try:
        value = json.loads(data) if data else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _record(cls: type[R], data: bytes | str | None) -> R:
    """A repo file as its record (`_json_object`'s rules)."""
    return cls.from_json(_json_object(data))


def _mb(sizes: dict[str, Any], name: str) -> float | None:
    return sizes[name] / 1e6 if isinstance(sizes.get(name), (int, float)) else None


def _index_row(repo_id: str, tags: Sequence[str], read: Callable[[str], bytes | str | None]) -> CatalogRow:
    """One row of the zoo's index from a repo's own files (`read(path)` at its latest version).

    Missing files or fields give None; eval.json's numbers, made by `edgezoo eval` on the final weights, come
    before metrics.json's end-of-training ones.
    """
    config = _json_object(read(BACKBONE_CONFIG))
    validation_json = read(REPO_VALIDATION)
    metrics, evaluation, validation = (_record(Metrics, read(REPO_METRICS)), _record(Evaluation, read(REPO_EVAL)),
                                       _record(Validation, validation_json))
    complexity, sizes = validation.complexity, validation.sizes
    fp32_b32, int8_b32 = validation.latency_p50("ort_fp32", 32), validation.latency_p50("ort_int8", 32)
    return CatalogRow(
        repo_id=repo_id, version=latest_version(tags), versions=sum(bool(VERSION_RE.match(t)) for t in tags),
        architecture=config.get("architecture"), model_args=config.get("model_args") or {},
        method=metrics.method, data=(config.get("edgezoo") or {}).get("data"),
        img_size=metrics.img_size, embed_dim=config.get("embed_dim"),
        knn_top1=metrics.knn_top1 if evaluation.knn_top1 is None else evaluation.knn_top1,
        random_init_knn_top1=evaluation.random_init_knn_top1,
        init=evaluation.init, init_knn_top1=evaluation.init_knn_top1, init_rankme=evaluation.init_rankme,
        rankme=metrics.rankme if evaluation.rankme is None else evaluation.rankme,
        params_m=complexity["params"] / 1e6 if "params" in complexity else None, gmacs=complexity.get("gmacs"),
        fp32_b1_ms=validation.latency_p50("ort_fp32", 1), int8_b1_ms=validation.latency_p50("ort_int8", 1),
        fp32_b32_ips=32e3 / fp32_b32 if fp32_b32 else None, int8_b32_ips=32e3 / int8_b32 if int8_b32 else None,
        fp32_mb=_mb(sizes, ONNX), int8_mb=_mb(sizes, ONNX_INT8),
        int8_scheme=validation.quantization.get("scheme"), int8_knn_drop=validation.int8_knn_drop,
        onnx_passed=validation.passed if validation_json else None,
        latency_cpu=validation.machine(), num_images=metrics.num_images, epochs=metrics.epochs,
        train_s=metrics.train_seconds, device=metrics.device_name,
        readout=READOUT_KEY in (config.get("edgezoo") or {}),
    )


def list_models(hub: str | None = None, hub_dir: str | Path | None = None) -> list[CatalogRow]:
    """The zoo's index: every published model of the hub publishing would use (the local one unless `hub` is 'hf')."""
    target = open_hub(hub, hub_dir)
    rows = []
    for repo_id in target.list_repos():
        tags = target.tags(repo_id)
        latest = latest_version(tags)
        if latest is not None:  # else created but never published
            rows.append(_index_row(repo_id, list(tags), partial(target.read, repo_id, tags[latest])))
    return rows
