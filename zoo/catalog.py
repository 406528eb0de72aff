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
from typing import Any, Callable, Sequence

from zoo.hub import VERSION_RE, latest_version, open_hub
from zoo.layout import BACKBONE_CONFIG, ONNX, ONNX_INT8, REPO_EVAL, REPO_METRICS, REPO_VALIDATION

_INDEX_FILES = (BACKBONE_CONFIG, REPO_METRICS, REPO_EVAL, REPO_VALIDATION)


def _json_or_none(data: bytes | str | None) -> dict[str, Any] | None:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


def _latency(validation: dict[str, Any], variant: str, batch: int) -> float | None:
    """p50 ms of one ONNX variant at one batch size, as export's validation measured it."""
    cell = ((validation.get("latency_ms") or {}).get(variant) or {}).get(f"batch{batch}") or {}
    return cell.get("p50_ms")


def _machine(runtime: dict[str, Any]) -> str | None:
    """The CPU export measured latency on, with its core count and onnxruntime's thread setting."""
    if not runtime.get("cpu"):
        return None
    threads = runtime.get("threads")
    return (f"{runtime['cpu']}, {runtime.get('cores', '?')} cores, onnxruntime {runtime.get('onnxruntime', '?')} "
            f"with {threads or 'its default'} threads")


def _mb(sizes: dict[str, Any], name: str) -> float | None:
    return sizes[name] / 1e6 if isinstance(sizes.get(name), (int, float)) else None


def _index_row(repo_id: str, tags: Sequence[str], read: Callable[[str], bytes | str | None]) -> dict[str, Any]:
    """One row of the zoo's index from a repo's own files (`read(path)` at its latest version).

    Missing files or fields give None (an older repo still lists); eval.json's numbers, made by
    `edgezoo eval` on the final weights, come before metrics.json's end-of-training ones.
    """
    config, metrics, evaluation, validation = (_json_or_none(read(p)) or {} for p in _INDEX_FILES)
    complexity, sizes = validation.get("complexity") or {}, validation.get("sizes") or {}
    int8_b32 = _latency(validation, "ort_int8", 32)
    return {
        "repo_id": repo_id, "version": latest_version(tags), "versions": sum(bool(VERSION_RE.match(t)) for t in tags),
        "architecture": config.get("architecture"), "model_args": config.get("model_args") or {},
        "method": metrics.get("method"), "data": (config.get("edgezoo") or {}).get("data"),
        "img_size": metrics.get("img_size"), "embed_dim": config.get("embed_dim"),
        "knn_top1": evaluation.get("knn_top1", metrics.get("knn_top1")),
        "random_init_knn_top1": evaluation.get("random_init_knn_top1"),
        "init": evaluation.get("init"), "init_knn_top1": evaluation.get("init_knn_top1"),
        "init_rankme": evaluation.get("init_rankme"),
        "rankme": evaluation.get("rankme", metrics.get("rankme")),
        "params_m": complexity["params"] / 1e6 if "params" in complexity else None, "gmacs": complexity.get("gmacs"),
        "fp32_b1_ms": _latency(validation, "ort_fp32", 1), "int8_b1_ms": _latency(validation, "ort_int8", 1),
        "fp32_b32_ips": 32e3 / v if (v := _latency(validation, "ort_fp32", 32)) else None,
        "int8_b32_ips": 32e3 / int8_b32 if int8_b32 else None,
        "fp32_mb": _mb(sizes, ONNX), "int8_mb": _mb(sizes, ONNX_INT8),
        "int8_scheme": (validation.get("quantization") or {}).get("scheme"),
        "int8_knn_drop": (validation.get("knn") or {}).get("int8_drop_points"),
        "onnx_passed": validation.get("passed"), "latency_cpu": _machine(validation.get("runtime") or {}),
        "num_images": metrics.get("num_images"), "epochs": metrics.get("epochs"),
        "train_s": metrics.get("elapsed_s", metrics.get("wall_time_s")), "device": metrics.get("device_name"),
    }


def list_models(hub: str | None = None, hub_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The zoo's index: every published model of the hub publishing would use (the local one unless `hub` is 'hf')."""
    target = open_hub(hub, hub_dir)
    rows = []
    for repo_id in target.list_repos():
        tags = target.tags(repo_id)
        latest = latest_version(tags)
        if latest is not None:  # else created but never published
            rows.append(_index_row(repo_id, list(tags), partial(target.read, repo_id, tags[latest])))
    return rows
