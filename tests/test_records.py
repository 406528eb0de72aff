"""zoo/records.py: every report shape edgezoo ever wrote still reads, through the same readers the card, the
zoo's index and the demo use; what a record does not know passes through unharmed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zoo.card import method_context, onnx_summary
from zoo.catalog import _index_row
from zoo.layout import REPO_EVAL, REPO_METRICS, REPO_VALIDATION
from zoo.records import Evaluation, Metrics, Validation

FIXTURES = Path(__file__).parent / "fixtures" / "reports"


def _json(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_the_oldest_reports_read_as_records():
    metrics = Metrics.read(FIXTURES / "metrics-oldest.json")
    assert metrics.extra == {} and metrics.elapsed_s is None and metrics.train_seconds == 281.4
    assert method_context(metrics, {"lr": 0.03})["method_name"] == "effssl"  # before methods described themselves
    evaluation = Evaluation.read(FIXTURES / "eval-oldest.json")
    assert evaluation.extra == {} and evaluation.knn_top1 == 0.3071 and evaluation.random_init_knn_top1 is None
    validation = Validation.read(FIXTURES / "validation-oldest.json")
    assert validation.extra == {} and validation.failed_checks == []
    assert validation.opset == 18 and validation.onnxruntime == "1.20.1" and validation.int8_knn_drop == 0.4
    assert validation.latency_p50("ort_int8", 1) == 1.12 and validation.machine() is None  # no cpu recorded yet
    summary = onnx_summary(validation)
    assert summary["opset"] == 18 and summary["knn_bank"] == 2000 and summary["latency"]


def test_the_oldest_repo_files_make_a_catalog_row():
    files = {REPO_METRICS: "metrics-oldest.json", REPO_EVAL: "eval-oldest.json",
             REPO_VALIDATION: "validation-oldest.json"}
    row = _index_row("org/old", ["v1"], lambda path: (FIXTURES / files[path]).read_text() if path in files else None)
    assert (row.name, row.version, row.method, row.knn_top1, row.int8_b1_ms, row.train_s, row.onnx_passed) == \
        ("old", "v1", "effssl", 0.3071, 1.12, 281.4, True)
    assert row.to_json()["repo_id"] == "org/old"


def test_a_newer_key_is_kept_and_written_back():
    data = _json("validation-newer.json")
    validation = Validation.from_json(data)
    assert validation.extra == {"energy_mj": {"ort_int8": 0.4}} and validation.latency_p50("ort_int8", 1) == 0.9
    assert validation.to_json()["energy_mj"] == data["energy_mj"]
    assert Validation.from_json(validation.to_json()) == validation  # a round trip changes nothing


def test_a_report_that_is_not_an_object_is_a_clear_error():
    with pytest.raises(ValueError, match="Metrics: a JSON object was expected, not list"):
        Metrics.from_json([1, 2])


def test_an_evaluation_without_an_init_writes_no_init_fields():
    assert "init" not in Evaluation(knn_top1=0.5).to_json()
    assert Evaluation(init="tf_efficientnet_lite0.in1k").to_json()["init"] == "tf_efficientnet_lite0.in1k"
