"""Does a time budget hold on a busy machine? Run a command and load the CPU while it trains.

    python benchmarks/busy_budget.py --hog-threads 2 --hog-s 20 --out runs/busy-budget -- make demo
    python benchmarks/busy_budget.py --hog-threads 0 -- .venv/bin/edgezoo zoo build cpu   # no hog: budgets only

The command runs in its own process group. Each time its output shows that training
started (the trainer's "training on N images" line), `--hog-threads` busy processes
spin for `--hog-s` seconds: another program that is busy while the first steps are
timed, which is when a plan made from those steps alone went wrong. The command ends
by itself, or after `--stop-after` (a regex, e.g. the demo's "Running on" line, for
`make demo`, which serves until stopped), or at `--timeout-s`; its process group is
then stopped. Every metrics.json that appeared under `--runs` while it ran is read:
the budget, the seconds spent, spent / budget, epochs, re-plans and kNN. Prints a
markdown table and a final JSON line (also written to OUT/busy_budget.json).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.layout import METRICS  # noqa: E402

TRAINING_STARTS = re.compile(r"pretrain\.trainer: training on \d+ images")


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x = (x * 1103515245 + 12345) % 2**31


def hog(threads: int, seconds: float) -> list[mp.Process]:
    """`threads` processes that each keep one core busy for `seconds` (processes: the GIL would serialise threads)."""
    procs = [mp.Process(target=_spin, args=(seconds,), daemon=True) for _ in range(threads)]
    for p in procs:
        p.start()
    return procs


def metrics_since(root: Path, t0: float) -> list[Path]:
    return sorted(p for p in root.rglob(METRICS) if p.stat().st_mtime >= t0)


def budget_row(path: Path) -> dict[str, Any]:
    m = json.loads(path.read_text())
    tb = m.get("time_budget") or {}
    budget, spent = tb.get("budget_s"), tb.get("spent_s")
    return {"run": str(path.parent), "model": m.get("model"), "budget_s": budget, "spent_s": spent,
            "used": round(spent / budget, 3) if budget and spent is not None else None, "epochs": m.get("epochs"),
            "first_plan_epochs": (tb.get("plans") or [{}])[0].get("epochs"), "replans": tb.get("replans"),
            "knn_top1": m.get("knn_top1"), "images_per_sec": m.get("images_per_sec")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hog-threads", type=int, default=2, help="busy processes started when training starts")
    ap.add_argument("--hog-s", type=float, default=20.0, help="how long each hog spins")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs", help="where the command writes its RUN_DIRs")
    ap.add_argument("--stop-after", default=None, help="stop the command once a line matches this regex")
    ap.add_argument("--timeout-s", type=float, default=3600.0)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "busy-budget")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command after --")
    args.out.mkdir(parents=True, exist_ok=True)
    stop = re.compile(args.stop_after) if args.stop_after else None
    t0 = time.time()
    log_path = args.out / "command.log"
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True, cwd=ROOT)
    timer = threading.Timer(args.timeout_s, lambda: os.killpg(proc.pid, signal.SIGTERM))
    timer.start()
    hogs: list[mp.Process] = []
    try:
        with log_path.open("w") as out:
            for line in proc.stdout:  # type: ignore[union-attr]
                out.write(line)
                out.flush()
                if args.hog_threads and TRAINING_STARTS.search(line):
                    out.write(f"# busy_budget: {args.hog_threads} hog(s) for {args.hog_s:.0f} s from here\n")
                    hogs += hog(args.hog_threads, args.hog_s)
                if stop is not None and stop.search(line):
                    break
    finally:
        timer.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        for p in hogs:
            p.terminate()
            p.join()
    rows = [budget_row(p) for p in metrics_since(args.runs, t0)]
    print("| run | model | budget s | spent s | used | epochs (first plan) | re-plans | kNN top-1 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        knn = f"{100 * r['knn_top1']:.2f}" if r["knn_top1"] is not None else "-"
        print(f"| {Path(r['run']).name} | {r['model']} | {r['budget_s']} | {r['spent_s']} | {r['used']} | "
              f"{r['epochs']} ({r['first_plan_epochs']}) | {r['replans']} | {knn} |")
    result = {"command": command, "hog_threads": args.hog_threads, "hog_s": args.hog_s, "rc": proc.returncode,
              "wall_s": round(time.time() - t0, 1), "runs": rows}
    (args.out / "busy_budget.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
