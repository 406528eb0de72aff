"""Latency of one callable, reported as percentiles (median of repeats: robust to a busy machine)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


def latency_ms(fn: Callable[[], Any], repeats: int = 20, warmup: int = 3) -> dict[str, float]:
    """p50/p90/mean wall time of fn() in milliseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    arr = np.asarray(times)
    return {"p50_ms": float(np.percentile(arr, 50)), "p90_ms": float(np.percentile(arr, 90)),
            "mean_ms": float(arr.mean()), "repeats": repeats}


def tile_batch(x: np.ndarray, n: int) -> np.ndarray:
    """Exactly n rows of x (repeating it when it has fewer), for fixed-batch timing."""
    reps = -(-n // len(x))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:n]) if reps > 1 else np.ascontiguousarray(x[:n])


def cpu_info() -> dict[str, Any]:
    """The CPU latencies were measured on: model name, cores and the vector extensions int8 speed depends on."""
    flags: set[str] = set()
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "avx2": "avx2" in flags, "avx512f": "avx512f" in flags,
            "vnni": bool({"avx512_vnni", "avx_vnni", "avx512vnni"} & flags)}
