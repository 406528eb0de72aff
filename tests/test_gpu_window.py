"""The GPU window's command, run in its CPU smoke mode: every phase, the sweep's budget rules, no process left."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_sweep  # noqa: E402 (benchmarks/ is not a package)


def _alive_with(text: str) -> list[str]:
    """Command lines of live processes that mention `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and proc.name.isdigit():
            found.append(cmd)
    return found


@pytest.fixture
def speed_file(tmp_path) -> Path:
    """A pretrain_speed.py output line: effssl twice as fast as simclr."""
    path = tmp_path / "speed.json"
    path.write_text(json.dumps({"results": [{"method": "effssl", "compile": "off", "images_per_s": 200.0},
                                            {"method": "simclr", "compile": "off", "images_per_s": 100.0}]}) + "\n")
    return path


def test_smoke_window_runs_every_phase_and_leaves_nothing_running(tmp_path, cifar_root):
    out = tmp_path / "window"
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_window.py"), str(out), "--smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [p["phase"] for p in summary["phases"]] == ["speed", "sweep", "compile"]
    speed = {r["method"]: r for r in summary["speed"]["results"]}
    assert set(speed) == {"effssl", "simclr"} and all(r["images_per_s"] > 0 for r in speed.values())
    runs = {r["name"]: r for r in summary["sweep"]["results"]}
    finished = [r for r in runs.values() if r["status"] == "finished"]
    assert len(finished) == 3 and all(r["knn"] and r["knn_top1"] is not None for r in finished)
    assert set(finished[0]["knn"]) == {str(e) for e in range(1, finished[0]["epochs"] + 1)}  # kNN every epoch
    # The equal-time entry trains as many epochs as SimCLR's 2 take effssl, from the measured speeds (at most 4).
    ratio = speed["effssl"]["images_per_s"] / speed["simclr"]["images_per_s"]
    assert runs["effssl@simclr-30"]["epochs"] == min(4, max(1, round(2 * ratio)))
    assert runs["simclr-30"]["epochs"] == 2
    # The ablation's entries were all checked and listed, though not run in a smoke.
    assert {"calibrate-off", "warmup-5"} <= {n for n, r in runs.items() if r["status"] == "not started"}
    comp = summary["compile"]["results"][0]
    assert comp["compile"] == "aot_eager" and comp["compiled"] and comp["compile_error"] is None
    for name in ("speed.md", "sweep.md", "compile.md", "summary.json", "window.log"):
        assert (out / name).is_file()
    assert not _alive_with(str(out))


def test_a_typo_in_any_grid_entry_fails_before_anything_starts(tmp_path):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"runs": [{"name": "ok", "overrides": {}},
                                         {"name": "typo", "overrides": {"temprature": 0.1}}]}))
    with pytest.raises(ValueError, match="typo.*temprature"):
        gpu_sweep.main(["--grid", str(grid), "--smoke", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "runs").exists()
    grid.write_text(json.dumps({"runs": [{"name": "a", "overrides": {}, "equal_time_with": "b"}]}))
    with pytest.raises(ValueError, match="not an entry"):
        gpu_sweep.load_grid([grid])


def test_runs_that_cannot_finish_in_the_budget_are_not_started(tmp_path, speed_file, capsys):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"runs": [{"name": "long", "overrides": {}, "epochs": 30}]}))
    code = gpu_sweep.main(["--grid", str(grid), "--epochs", "30", "--budget-s", "60", "--speed", str(speed_file),
                           "--num-images", "50000", "--out", str(tmp_path / "out")])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"][0]
    assert code == 0 and result["status"] == "not started" and result["reason"].startswith("needs about")
    assert not (tmp_path / "out" / "runs").exists()


def test_equal_time_epochs_follow_the_isolated_speed_ratio(speed_file):
    entries = [gpu_sweep.Entry("simclr-30", {"method": "simclr"}, 30),
               gpu_sweep.Entry("effssl@simclr-30", {}, equal_time_with="simclr-30"),
               gpu_sweep.Entry("simclr@effssl", {"method": "simclr"}, equal_time_with="effssl@simclr-30")]
    epochs = gpu_sweep.resolve_epochs(entries, 10, gpu_sweep.speed_table(speed_file, "off"))
    assert epochs["simclr-30"] == 30 and epochs["effssl@simclr-30"] == 60
    assert isinstance(epochs["simclr@effssl"], str)  # chained equal-time entries are refused, not guessed
    assert "no --speed" in gpu_sweep.resolve_epochs(entries[:2], 10, {})["effssl@simclr-30"]


def test_runs_still_going_at_the_budget_are_stopped_with_their_processes(tmp_path, capsys, cifar_root):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"runs": [{"name": "cut-short", "overrides": {}}]}))
    out = tmp_path / "out"
    gpu_sweep.main(["--grid", str(grid), "--smoke", "--budget-s", "2", "--out", str(out)])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"][0]
    assert result["status"] == "stopped" and result["reason"].startswith("budget spent")
    assert not _alive_with(str(out))
