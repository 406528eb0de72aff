"""`edgezoo run` end to end on a CIFAR-10 subset (--no-serve, a temporary local hub), then again: nothing redone.

The first run (conftest.py's ``published``, ``pipeline_once``) is built once per session and shared by the
demo and browser tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _statuses(result: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in result["stages"]}


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_first_run_does_every_stage(published):
    first, repo = published, published["repo_id"]
    run = Path(first["run_dir"])
    assert _statuses(first) == {"pretrain": "ran", "evaluate": "ran", "export": "ran", "publish": "ran"}
    # Each stage's time is its own share of the run: the pretrain stage holds training's elapsed time.
    seconds = {s["name"]: s["seconds"] for s in first["stages"]}
    assert all(s > 0 for s in seconds.values()) and sum(seconds.values()) <= first["elapsed_s"] + 0.1, seconds
    assert seconds["pretrain"] >= json.loads((run / "metrics.json").read_text())["elapsed_s"] - 0.01, seconds
    assert (run / "metrics.json").is_file() and (run / "eval.json").is_file()
    assert json.loads((run / "export" / "validation.json").read_text())["passed"] is True
    from zoo.records import Evaluation, Metrics, Validation

    # Each writer writes its record's fields and nothing else: a key added to a report is added to its record.
    for record, path in ((Metrics, "metrics.json"), (Evaluation, "eval.json"), (Validation, "export/validation.json")):
        assert record.read(run / path).extra == {}, path
    assert first["version"] == "v1" and first["commit"]
    from zoo.hub.local import LocalHub

    assert LocalHub(first["hub_dir"]).refs(repo)["tags"] == {"v1": first["commit"]}
    summary = first["summary"]
    for text in ("pretrain", "evaluate", "export", "publish", "kNN top-1", "fp32 vs torch", "latency",
                 f"{repo}@v1", str(run)):
        assert text in summary, text


def test_second_run_skips_every_stage(published, capsys):
    from app.cli import main
    from zoo.hub.local import LocalHub

    first, repo = published, published["repo_id"]
    run = Path(first["run_dir"])
    before = _mtimes(run)
    assert main(first["argv"]) == 0
    out = capsys.readouterr().out
    for stage in ("pretrain", "evaluate", "export", "publish"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(stage))
        assert "skipped" in line, line
    assert _mtimes(run) == before  # nothing retrained, re-evaluated or re-exported
    assert LocalHub(first["hub_dir"]).refs(repo)["tags"] == {"v1": first["commit"]}  # nor republished
    assert f"{repo}@v1" in out


def test_other_options_in_the_same_run_dir_are_refused(published, caplog):
    from app.cli import main

    argv = list(published["argv"])
    argv[argv.index("--epochs") + 1] = "3"
    assert main(argv) == 2
    assert "holds a run with other options" in caplog.text and "epochs" in caplog.text


def test_pretrain_plan(tmp_path):
    from app.pipeline import pretrain_plan

    assert pretrain_plan(tmp_path) == "fresh"
    (tmp_path / "config.yaml").write_text("epochs: 1\n")
    assert pretrain_plan(tmp_path) == "fresh"  # interrupted before the first checkpoint: start again
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert pretrain_plan(tmp_path) == "resume"
    (tmp_path / "metrics.json").write_text("{}")
    assert pretrain_plan(tmp_path) == "skip"


def test_export_options_are_export_flags():
    from app.pipeline import PipelineError, export_options

    opts = export_options("--val-images 300 --max-knn-drop 2.5")
    assert opts.val_images == 300 and opts.thresholds.int8_max_knn_drop == 2.5
    with pytest.raises(PipelineError):
        export_options("--out /elsewhere")
