"""The int8 ladder of `export.quantize`: the portable W8A8, then full-range weights, then the input stage float,
then 16-bit activations.

The quantizer and the cosine are stand-ins here (the real ones run in test_export.py on real runs): what is
checked is which candidate `activations="auto"` keeps for given measured cosines, and what it records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from export import quantize


@pytest.fixture
def ladder(monkeypatch, tmp_path) -> Any:
    """Run `quantize_int8` with the candidates' median cosines given by (bits, reduce_range[, "float input"])."""
    made: list[tuple] = []

    def run(cosines: dict[tuple, float]) -> tuple[dict[str, Any], list[tuple]]:
        def fake_static(src: Path, dst: Path, calib: np.ndarray, bits: int, batch_size: int, *,
                        reduce_range: bool | None = None, float_nodes: list[str] | None = None) -> dict[str, Any]:
            rr = bits == 8 if reduce_range is None else reduce_range
            made.append((bits, rr, "float input") if float_nodes == ["head", "stem"] else (bits, rr))
            Path(dst).write_bytes(b"model")
            return {"mode": "static", "scheme": f"W8A{bits}", "reduce_range": rr}

        monkeypatch.setattr(quantize, "_static", fake_static)
        monkeypatch.setattr(quantize, "_pre_process", lambda src, dst: False)
        monkeypatch.setattr(quantize, "graph_nodes", lambda path: [])
        monkeypatch.setattr(quantize, "float_head", lambda nodes: ["head"])
        monkeypatch.setattr(quantize, "input_stage", lambda nodes: ["stem"])
        monkeypatch.setattr(quantize, "median_cosine", lambda ref, model, x, batch_size=64: cosines[made[-1]])
        fp32 = tmp_path / "model.onnx"
        fp32.write_bytes(b"fp32")
        x = np.zeros((4, 3, 8, 8), np.float32)
        info = quantize.quantize_int8(fp32, tmp_path / "model.int8.onnx", x, x, activations="auto")
        return info, made

    return run


def test_the_portable_w8a8_is_kept_when_it_meets_the_target(ladder):
    info, made = ladder({(8, True): 0.995})
    assert made == [(8, True)]
    assert info["scheme"] == "W8A8" and info["reduce_range"] is True and "note" not in info


def test_full_range_weights_come_before_16_bit_activations(ladder):
    info, made = ladder({(8, True): 0.983, (8, False): 0.995})
    assert made == [(8, True), (8, False)]
    assert info["scheme"] == "W8A8" and info["reduce_range"] is False
    assert info["check_median_cosine"]["W8A8"] == 0.983 and info["check_median_cosine"]["W8A8 full-range"] == 0.995
    assert "VNNI" in info["note"] and "0.9830" in info["reason"]


def test_the_input_stage_float_comes_before_16_bit_activations(ladder):
    info, made = ladder({(8, True): 0.95, (8, False): 0.983, (8, False, "float input"): 0.993})
    assert made == [(8, True), (8, False), (8, False, "float input")]
    assert info["scheme"] == "W8A8" and "input stage" in info["note"] and "0.9830" in info["reason"]


def test_16_bit_activations_when_no_w8a8_meets_the_target(ladder):
    info, made = ladder({(8, True): 0.95, (8, False): 0.96, (8, False, "float input"): 0.97, (16, False): 0.998})
    assert made == [(8, True), (8, False), (8, False, "float input"), (16, False)]
    assert info["scheme"] == "W8A16" and "note" not in info
    assert info["check_median_cosine"]["W8A16"] == 0.998
    assert "0.9500" in info["reason"] and "0.9600" in info["reason"] and "0.9700" in info["reason"]
