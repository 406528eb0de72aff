"""Several full trainings at once on one GPU, inside a wall-clock budget: the harness of a GPU window.

    python benchmarks/gpu_sweep.py --grid benchmarks/grids/gpu-head-to-head.json \\
        --grid benchmarks/grids/gpu-ablation.json --epochs 30 --budget-s 360 --out runs/gpu-sweep \\
        --speed runs/gpu-window/speed.json
    python benchmarks/gpu_sweep.py --grid benchmarks/grids/gpu-head-to-head.json --smoke --out /tmp/smoke

Each grid entry is one training, a separate process sharing the GPU with up to
`--parallel` others, each with its own full cosine schedule over its epochs and a
kNN evaluation every `--eval-every` epochs, through the same Trainer as
`edgezoo pretrain`. Entries run in grid order (put what matters most first).

A grid file is a JSON object: ``{"description": ..., "runs": [{"name": ..., "overrides": {...}}, ...]}``.
An entry may set ``"epochs"`` (else --epochs) or ``"equal_time_with": "<name>"``: as
many epochs as take this method the GPU time the named entry's epochs take,
from the isolated images/s per method of `--speed` (pretrain_speed.py's JSON).
That is the method's claim, accuracy per unit of compute, measured without the
other runs sharing the GPU distorting it.

Before anything starts, every entry is checked (its config built), so a typo
fails in a second, not minutes into a window. A run is started only if it is
estimated to finish inside the budget (from the speed file at first, then from
the epochs the running ones report); runs not started are listed with the
reason. At the budget, runs still going are stopped and reported with their last
kNN. No process is left behind. Results are appended to OUT/results.jsonl as
they finish; `--skip-done FILE` skips entries a previous window finished.
Prints a markdown table, then one JSON line.

`--smoke` runs the same code path on the CPU on a tiny subset (seconds a run):
what a test runs, and what to run before spending a GPU window.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.layout import RunDir  # noqa: E402
from smoke import SMOKE_CONFIG, SMOKE_EPOCHS  # noqa: E402 (benchmarks/ is the script's own folder)

log = logging.getLogger("gpu_sweep")

POLL_S = 1.0
STARTUP_GUESS_S = 45.0  # process start, data from the decode cache, calibration: before any epoch is seen
MARGIN = 1.15  # estimates are stretched by this much before a run is started


@dataclass
class Entry:
    """One training of the grid."""

    name: str
    overrides: dict[str, Any]
    epochs: int | None = None
    equal_time_with: str | None = None

    @property
    def method(self) -> str:
        return self.overrides.get("method", "effssl")


@dataclass
class Run:
    """A started training and what the sweep has seen of it."""

    entry: Entry
    epochs: int
    run_dir: Path
    proc: subprocess.Popen | None = None
    launched: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    seen: list[tuple[float, int]] = field(default_factory=list)  # (when, epochs done) as first observed

    def poll_rows(self) -> None:
        path = RunDir(self.run_dir).log
        if not path.exists():
            return
        with path.open() as f:
            rows = list(csv.DictReader(f))
        if len(rows) > len(self.rows):
            self.seen.append((time.monotonic(), len(rows)))
        self.rows = rows

    def per_epoch_s(self) -> float | None:
        """Seconds an epoch takes under the present sharing, from two observations of log.csv."""
        if len(self.seen) < 2:
            return None
        (t0, e0), (t1, e1) = self.seen[0], self.seen[-1]
        return (t1 - t0) / (e1 - e0)

    def knn(self) -> dict[int, float]:
        return {int(r["epoch"]): float(r["knn_top1"]) for r in self.rows if r.get("knn_top1") not in (None, "")}


def load_grid(paths: list[Path]) -> list[Entry]:
    """The entries of the grid files, in order; names must be unique."""
    entries: list[Entry] = []
    for path in paths:
        doc = json.loads(Path(path).read_text())
        for raw in doc["runs"]:
            unknown = set(raw) - {"name", "overrides", "epochs", "equal_time_with"}
            if unknown:
                raise ValueError(f"{path}: entry {raw.get('name')!r} has unknown key(s) {sorted(unknown)}")
            entries.append(Entry(raw["name"], dict(raw.get("overrides", {})), raw.get("epochs"),
                                 raw.get("equal_time_with")))
    names = [e.name for e in entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"grid names must be unique: {dupes}")
    for e in entries:
        if e.equal_time_with and e.equal_time_with not in names:
            raise ValueError(f"{e.name}: equal_time_with {e.equal_time_with!r} is not an entry of the grid")
    return entries


def speed_table(path: Path | None, compile_mode: str) -> dict[str, float]:
    """Isolated images/s per method from pretrain_speed.py's JSON line, in the sweep's compile mode."""
    if path is None or not path.exists():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip().startswith("{")]
    results = json.loads(lines[-1])["results"]
    rank = {compile_mode: 2, "off": 1}  # the sweep's own mode first, then eager, then any
    best: dict[str, tuple[int, float]] = {}
    for r in results:
        key = (rank.get(r.get("compile", "off"), 0), r["images_per_s"])
        if r["method"] not in best or key[0] > best[r["method"]][0]:
            best[r["method"]] = key
    return {m: ips for m, (_, ips) in best.items()}


def resolve_epochs(entries: list[Entry], default: int, speed: dict[str, float]) -> dict[str, int | str]:
    """Epochs of each entry, or why it cannot be planned (equal time needs both methods' speed)."""
    out: dict[str, int | str] = {}
    by_name = {e.name: e for e in entries}
    for e in entries:
        if not e.equal_time_with:
            out[e.name] = e.epochs or default
            continue
        ref = by_name[e.equal_time_with]
        if ref.equal_time_with:
            out[e.name] = "equal_time_with must name an entry with fixed epochs"
        elif e.method not in speed or ref.method not in speed:
            out[e.name] = f"no --speed images/s for {e.method} and {ref.method}"
        else:
            out[e.name] = max(1, round((ref.epochs or default) * speed[e.method] / speed[ref.method]))
    return out


def check_entries(entries: list[Entry], recipe: str, common: dict[str, Any]) -> None:
    """Build every entry's config now: a typo fails before the window's minutes are spent."""
    from pretrain.config import build_config

    for e in entries:
        try:
            build_config(recipe, **{**common, **e.overrides})
        except Exception as err:  # whatever the config refuses (unknown option, bad value): name the entry
            raise ValueError(f"grid entry {e.name!r}: {err}") from err


def estimate_s(run_epochs: int, method: str, running: list[Run], finished: list[Run], speed: dict[str, float],
               num_images: int | None, parallel: int) -> float | None:
    """Seconds a new run of `method` would take under the present sharing (None: nothing to go on yet)."""
    observed = [r for r in running + finished if r.per_epoch_s() is not None]
    same = [r for r in observed if r.entry.method == method]
    per_epoch = None
    if same:
        per_epoch = max(r.per_epoch_s() for r in same)
    elif observed and speed and method in speed:
        r = max(observed, key=lambda r: r.per_epoch_s())
        if r.entry.method in speed:
            per_epoch = r.per_epoch_s() * speed[r.entry.method] / speed[method]
    elif speed and method in speed and num_images:
        per_epoch = num_images / (speed[method] / parallel)
    if per_epoch is None:
        return None
    startups = [r.seen[0][0] - r.launched - per_epoch * r.seen[0][1] for r in observed]
    startup = max([STARTUP_GUESS_S / 3, *startups]) if startups else STARTUP_GUESS_S
    return MARGIN * (startup + run_epochs * per_epoch)


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop a worker and everything it started (compile workers): its whole process group."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def result_of(run: Run, status: str, reason: str | None = None, speed: dict[str, float] | None = None) -> dict:
    """One results.jsonl record."""
    metrics_path = RunDir(run.run_dir).metrics
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    run.poll_rows()
    knn = run.knn()
    last = run.rows[-1] if run.rows else {}
    ips = (speed or {}).get(run.entry.method)
    n = metrics.get("num_images")
    return {
        "name": run.entry.name, "method": run.entry.method, "overrides": run.entry.overrides,
        "equal_time_with": run.entry.equal_time_with, "epochs": run.epochs, "status": status, "reason": reason,
        "epochs_done": int(last["epoch"]) if last else 0,
        "knn": {str(k): round(100 * v, 2) for k, v in sorted(knn.items())},
        "knn_top1": round(100 * metrics["knn_top1"], 2) if metrics.get("knn_top1") is not None else None,
        "rankme": metrics.get("rankme"), "train_s": metrics.get("wall_time_s"),
        "elapsed_s": round(time.monotonic() - run.launched, 1) if run.launched else None,
        "images_per_s_shared": metrics.get("images_per_sec"),
        "gpu_s_isolated": round(run.epochs * n / ips, 1) if ips and n else None,
        "peak_mem_mb": metrics.get("peak_mem_mb"), "compile": metrics.get("compile"),
        "device_name": metrics.get("device_name"),
    }


def markdown(results: list[dict]) -> str:
    evals = sorted({int(k) for r in results for k in r.get("knn", {})})
    head = ["run", "method", "epochs", *[f"kNN@{e}" for e in evals], "final kNN", "train s (shared)",
            "GPU s (isolated)", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r["name"], r.get("method", ""), str(r.get("epochs", ""))]
        cells += [f"{r['knn'][str(e)]:.2f}" if str(e) in r.get("knn", {}) else "" for e in evals]
        cells += [f"{r['knn_top1']:.2f}" if r.get("knn_top1") is not None else "-",
                  f"{r['train_s']:.0f}" if r.get("train_s") else "-",
                  f"{r['gpu_s_isolated']:.0f}" if r.get("gpu_s_isolated") else "-",
                  r["status"] + (f": {r['reason']}" if r.get("reason") else "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def worker(run_dir: Path) -> int:
    """One training, as described by RUN_DIR/sweep_entry.json (resumed if interrupted)."""
    from pretrain.config import build_config
    from pretrain.trainer import Trainer

    spec = json.loads((run_dir / "sweep_entry.json").read_text())
    cfg = build_config(spec["recipe"], **spec["config"])
    Trainer(cfg, run_dir, resume=RunDir(run_dir).config.exists(), progress=False).fit()
    return 0


class Sweep:
    """Starts, watches and stops the runs of one grid inside a budget."""

    def __init__(self, args: argparse.Namespace, entries: list[Entry], epochs: dict[str, int | str],
                 common: dict[str, Any], speed: dict[str, float], done: set[str]) -> None:
        self.args, self.entries, self.epochs, self.common, self.speed = args, entries, epochs, common, speed
        self.done = done
        self.results: list[dict] = []
        self.running: list[Run] = []
        self.finished: list[Run] = []
        self.start = time.monotonic()
        self.results_path = args.out / "results.jsonl"

    def left_s(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.start)

    def record(self, res: dict) -> None:
        self.results.append(res)
        with self.results_path.open("a") as f:
            f.write(json.dumps(res) + "\n")
        log.info("%s: %s%s, kNN %s", res["name"], res["status"], f" ({res['reason']})" if res.get("reason") else "",
                 res.get("knn_top1") if res.get("knn_top1") is not None else res.get("knn"))

    def launch(self, entry: Entry, epochs: int) -> None:
        run_dir = self.args.out / "runs" / entry.name
        run_dir.mkdir(parents=True, exist_ok=True)
        config = {**self.common, **entry.overrides, "epochs": epochs}
        (run_dir / "sweep_entry.json").write_text(json.dumps({"recipe": self.args.recipe, "config": config}))
        run = Run(entry, epochs, run_dir)
        if RunDir(run_dir).metrics.exists():  # finished by an earlier call with this --out
            self.record(result_of(run, "finished", "reused", self.speed))
            return
        with (run_dir / "worker.log").open("ab") as out:
            run.proc = subprocess.Popen([sys.executable, __file__, "--worker", str(run_dir)], stdout=out,
                                        stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        run.launched = time.monotonic()
        self.running.append(run)
        log.info("started %s: %s, %d epochs (%.0f s left)", entry.name, entry.overrides or "recipe", epochs,
                 self.left_s())

    def reap(self) -> None:
        for run in list(self.running):
            run.poll_rows()
            code = run.proc.poll()
            if code is None:
                continue
            self.running.remove(run)
            if code == 0 and RunDir(run.run_dir).metrics.exists():
                self.finished.append(run)
                self.record(result_of(run, "finished", speed=self.speed))
            else:
                tail = (run.run_dir / "worker.log").read_text(errors="replace").strip().splitlines()[-1:]
                self.record(result_of(run, "failed", f"exit {code}: {tail[0][:200] if tail else ''}", self.speed))

    def run(self) -> list[dict]:
        pending = []
        for e in self.entries:
            if e.name in self.done:
                log.info("%s: finished in an earlier window, skipped", e.name)
            elif isinstance(self.epochs[e.name], str):
                self.record({"name": e.name, "method": e.method, "overrides": e.overrides, "status": "not started",
                             "reason": self.epochs[e.name], "knn": {}})
            else:
                pending.append(e)
        try:
            while pending or self.running:
                self.reap()
                if self.left_s() <= 0:
                    break
                while pending and len(self.running) < self.args.parallel:
                    e = pending.pop(0)
                    epochs = int(self.epochs[e.name])
                    est = estimate_s(epochs, e.method, self.running, self.finished, self.speed,
                                     self.args.num_images, self.args.parallel)
                    if est is not None and est > self.left_s():
                        self.record({"name": e.name, "method": e.method, "overrides": e.overrides, "epochs": epochs,
                                     "status": "not started", "knn": {},
                                     "reason": f"needs about {est:.0f} s, {self.left_s():.0f} s left"})
                        continue
                    self.launch(e, epochs)
                time.sleep(POLL_S)
            for e in pending:
                self.record({"name": e.name, "method": e.method, "overrides": e.overrides, "status": "not started",
                             "epochs": self.epochs[e.name], "knn": {}, "reason": "budget spent"})
        finally:
            for run in self.running:
                stop(run.proc)
                self.record(result_of(run, "stopped", f"budget spent at epoch {len(run.rows)} of {run.epochs}",
                                      self.speed))
            self.running = []
        return self.results


def _interrupted(signum: int, frame: Any) -> None:
    """SIGTERM (the window's own time limit) stops the sweep the way Ctrl-C does: runs stopped, table printed."""
    raise KeyboardInterrupt


def smoke_eval_split(out: Path, per_class: int = 10) -> Path:
    """A few CIFAR-10 test images per class, linked: the smoke runs' kNN would otherwise embed 10,000."""
    from zoo.datasets import resolve

    test = resolve("cifar10:test")
    root = out / "smoke-eval"
    for cls in test.classes or []:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for src in [q for q in test.paths if q.parent.name == cls][:per_class]:
            if not (root / cls / src.name).exists():
                (root / cls / src.name).symlink_to(src.resolve())
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", type=Path, action="append", default=[], help="grid file (repeatable; in order)")
    p.add_argument("--recipe", default="cifar10-resnet18", help="recipe every entry overrides")
    p.add_argument("--epochs", type=int, default=30, help="epochs of entries that do not set their own")
    p.add_argument("--budget-s", type=float, default=360.0, help="wall-clock budget of the whole sweep")
    p.add_argument("--parallel", type=int, default=4, help="runs sharing the GPU at once")
    p.add_argument("--eval-every", type=int, default=10, help="kNN every N epochs (and at the end)")
    p.add_argument("--out", type=Path, default=Path("runs/gpu-sweep"), help="RUN_DIRs and results.jsonl")
    p.add_argument("--speed", type=Path, default=None, help="pretrain_speed.py output (its last JSON line)")
    p.add_argument("--compile", action="store_true", help="torch.compile every run (mode: --compile-mode)")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode of --compile")
    p.add_argument("--num-images", type=int, default=50000, help="training images a run sees an epoch (estimates)")
    p.add_argument("--skip-done", type=Path, action="append", default=[],
                   help="results.jsonl of an earlier window: its finished entries are skipped")
    p.add_argument("--max-runs", type=int, default=None, help="start at most this many entries (smoke: 3)")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny subset, 2 epochs: the code path in seconds")
    p.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not args.grid:
        p.error("at least one --grid")
    entries = load_grid(args.grid)
    common: dict[str, Any] = {"eval_every": args.eval_every}
    if args.compile:
        common.update(compile=True, compile_mode=args.compile_mode)
    if args.smoke:
        common.update(SMOKE_CONFIG, eval_every=1)
        args.epochs, args.num_images = SMOKE_EPOCHS, SMOKE_CONFIG["max_images"]
        args.parallel = min(args.parallel, 2)
        args.max_runs = args.max_runs or 3
        for e in entries:  # every entry is checked, a few run, each for SMOKE_EPOCHS
            e.epochs = SMOKE_EPOCHS if e.epochs else None
        args.out.mkdir(parents=True, exist_ok=True)
        common["eval_data"] = str(smoke_eval_split(args.out))
        if args.compile:
            common["compile_mode"] = "aot_eager"
    check_entries(entries, args.recipe, common)
    speed = speed_table(args.speed, common.get("compile_mode", "default") if args.compile else "off")
    epochs = resolve_epochs(entries, args.epochs, speed)
    if args.smoke:  # equal-time entries keep their ratio but stay tiny
        epochs = {k: min(v, 2 * SMOKE_EPOCHS) if isinstance(v, int) else v for k, v in epochs.items()}
    if args.max_runs is not None:
        startable = [e.name for e in entries if isinstance(epochs[e.name], int)]
        for name in startable[args.max_runs:]:
            epochs[name] = f"beyond --max-runs {args.max_runs}"
    done = set()
    for path in args.skip_done:
        for line in path.read_text().splitlines():
            if line.strip() and json.loads(line).get("status") == "finished":
                done.add(json.loads(line)["name"])
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupted)
    sweep = Sweep(args, entries, epochs, common, speed, done)
    try:
        results = sweep.run()
    except KeyboardInterrupt:
        log.warning("interrupted: running trainings stopped")
        results = sweep.results
    order = {e.name: i for i, e in enumerate(entries)}
    results = sorted(results, key=lambda r: order.get(r["name"], len(order)))  # grid order, as planned
    print(markdown(results))
    print(json.dumps({"recipe": args.recipe, "epochs": args.epochs, "budget_s": args.budget_s,
                      "parallel": args.parallel, "speed": speed, "smoke": args.smoke, "results": results}))
    return 0 if all(r["status"] != "failed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
