"""Everything to run when a GPU window opens, as one command of at most 9 minutes.

    python benchmarks/gpu_window.py OUT                # on the GPU machine (PYTHONPATH=. is not needed)
    python benchmarks/gpu_window.py OUT --smoke        # the same phases on the CPU in about a minute

Phases, each with its own time limit inside `--total-s` (default 540 s):
1. data: CIFAR-10 unpacked from ../shared/datasets, or from data/shared-datasets
   (a copy carried to a machine without ../shared), unless already there;
2. speed: benchmarks/pretrain_speed.py, effssl and simclr eagerly, batch 512:
   images/s, their ratio, peak memory; its JSON is what the sweep's equal-time
   entries are planned from;
3. sweep: benchmarks/gpu_sweep.py over the head-to-head grid, then the ablation
   (grid order is priority order; what cannot finish is not started, and
   `--skip-done` takes the results.jsonl of earlier windows);
4. compile: pretrain_speed.py under torch.compile (default for both methods,
   reduce-overhead = CUDA graphs for effssl), one phase a mode, after the sweep so
   that a slow compilation costs its own row and nothing else (`--compile-s 0`: none).
Writes OUT/{speed,sweep,compile}.{md,json}, OUT/window.log and OUT/summary.json,
prints the tables and, last, one JSON line. Every phase runs in its own process
group, and the window ends by stopping whatever a phase left behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
GRIDS = HERE / "grids"

log = logging.getLogger("gpu_window")


class Window:
    """The clock and the phases of one window."""

    def __init__(self, out: Path, total_s: float) -> None:
        self.out, self.total_s = out, total_s
        self.start = time.monotonic()
        self.phases: list[dict] = []

    def left_s(self) -> float:
        return self.total_s - (time.monotonic() - self.start)

    def phase(self, name: str, cmd: list[str], limit_s: float, env: dict[str, str] | None = None) -> Path | None:
        """Run one phase (stdout to OUT/<name>.out) within limit_s; its process group is stopped after."""
        limit_s = min(limit_s, self.left_s())
        record = {"phase": name, "limit_s": round(limit_s, 1), "command": " ".join(cmd)}
        self.phases.append(record)
        if limit_s < 5:
            record["status"] = "skipped: window spent"
            log.warning("%s skipped: %.0f s left", name, self.left_s())
            return None
        out_path = self.out / f"{name}.out"
        t0 = time.monotonic()
        log.info("phase %s (at most %.0f s): %s", name, limit_s, " ".join(cmd))
        with out_path.open("w") as out, (self.out / "window.log").open("a") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, start_new_session=True,
                                    env={**os.environ, **(env or {})})
            try:
                code = proc.wait(timeout=limit_s)
                record["status"] = "ok" if code == 0 else f"exit {code}"
            except subprocess.TimeoutExpired:
                record["status"] = "time limit"
                stop_group(proc.pid, signal.SIGTERM, grace_s=20)
            finally:
                stop_group(proc.pid, signal.SIGKILL, grace_s=0)  # anything of the phase still alive
        record["seconds"] = round(time.monotonic() - t0, 1)
        log.info("phase %s: %s in %.0f s", name, record["status"], record["seconds"])
        return out_path


def stop_group(pgid: int, sig: int, grace_s: float) -> None:
    """Signal a process group and wait up to grace_s for it to go."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)


def last_json(path: Path | None) -> dict | None:
    """The final JSON line a benchmark printed (None if it printed none)."""
    if path is None or not path.exists():
        return None
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def split_output(path: Path | None, name: str, out: Path) -> str:
    """OUT/<name>.md (the tables) and OUT/<name>.json (the JSON line) from a phase's stdout."""
    if path is None or not path.exists():
        return ""
    text = path.read_text()
    tables = "\n".join(ln for ln in text.splitlines() if not ln.startswith("{"))
    (out / f"{name}.md").write_text(tables + "\n")
    data = last_json(path)
    if data is not None:
        (out / f"{name}.json").write_text(json.dumps(data) + "\n")  # one line, as the benchmark printed it
    return tables


def find_shared(explicit: Path | None) -> Path | None:
    for cand in (explicit, ROOT.parent / "shared" / "datasets", ROOT / "data" / "shared-datasets"):
        if cand is not None and (cand / "prepare.py").is_file():
            return cand
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="folder for the tables, JSON and logs")
    p.add_argument("--total-s", type=float, default=540.0, help="the whole window")
    p.add_argument("--compile-s", type=float, default=180.0,
                   help="kept for the compile phases, at the end (0: none, a sweep-only window)")
    p.add_argument("--epochs", type=int, default=30, help="epochs of the sweep's entries that set none")
    p.add_argument("--parallel", type=int, default=4, help="trainings sharing the GPU")
    p.add_argument("--grid", type=Path, action="append", default=None,
                   help="grid files in priority order (default: gpu-head-to-head then gpu-ablation)")
    p.add_argument("--skip-done", type=Path, action="append", default=[], help="results.jsonl of earlier windows")
    p.add_argument("--shared", type=Path, default=None, help="a ../shared/datasets folder (with prepare.py)")
    p.add_argument("--smoke", action="store_true", help="every phase on the CPU, tiny: before a real window")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "window.log")])
    win = Window(args.out, args.total_s)
    py = sys.executable
    data_env = {"EDGEZOO_DATA": os.environ.get("EDGEZOO_DATA", str(ROOT / "data"))}
    smoke = ["--smoke"] if args.smoke else []

    shared = find_shared(args.shared)
    if (Path(data_env["EDGEZOO_DATA"]) / "cifar10" / "test" / ".complete").exists():
        log.info("CIFAR-10 already in %s", data_env["EDGEZOO_DATA"])
    elif shared is None:
        log.error("no CIFAR-10 and no ../shared/datasets or data/shared-datasets to unpack it from")
        return 2
    else:
        win.phase("data", [py, str(shared / "prepare.py"), data_env["EDGEZOO_DATA"], "--only", "cifar10"], 150)

    def speed_cmd(methods: str, modes: str) -> list[str]:
        gpu = ["--device", "cuda", "--batch-size", "512", "--steps", "30", "--warmup", "5"]
        return [py, str(HERE / "pretrain_speed.py"), "--methods", methods, "--compile", modes,
                *(smoke or gpu)]

    speed_out = win.phase("speed", speed_cmd("effssl,simclr", "off"), 150, data_env)
    speed_tables = split_output(speed_out, "speed", args.out)

    grids = args.grid or [GRIDS / "gpu-head-to-head.json", GRIDS / "gpu-ablation.json"]
    sweep_s = win.left_s() - args.compile_s - 15
    sweep_cmd = [py, str(HERE / "gpu_sweep.py"), "--out", str(args.out / "sweep"), "--epochs", str(args.epochs),
                 "--parallel", str(args.parallel), "--budget-s", str(max(0, int(sweep_s) - 20)), *smoke]
    sweep_cmd += [a for g in grids for a in ("--grid", str(g))]
    sweep_cmd += [a for d in args.skip_done for a in ("--skip-done", str(d))]
    if (args.out / "speed.json").exists():
        sweep_cmd += ["--speed", str(args.out / "speed.json")]
    sweep_out = win.phase("sweep", sweep_cmd, sweep_s, data_env)
    sweep_tables = split_output(sweep_out, "sweep", args.out)

    # CUDA graphs only where they can exist; on the CPU the smoke traces without code generation.
    # One phase a mode, so that a compilation that outlasts its share costs that row only.
    compile_phases = ([("compile", "effssl", "aot_eager", 1.0)] if args.smoke else
                      [("compile", "effssl", "default", 0.35), ("compile-cudagraphs", "effssl", "reduce-overhead", 0.35),
                       ("compile-simclr", "simclr", "default", 0.3)])
    if args.compile_s <= 0:
        compile_phases = []
    compiled: dict[str, dict | None] = {}
    compile_tables = ""
    for name, methods, modes, share in compile_phases:
        out = win.phase(name, speed_cmd(methods, modes), args.compile_s * share, data_env)
        compile_tables += split_output(out, name, args.out) + "\n"
        compiled[name] = last_json(out)

    summary = {"smoke": args.smoke, "seconds": round(time.monotonic() - win.start, 1), "phases": win.phases,
               "speed": last_json(speed_out), "sweep": last_json(sweep_out), **compiled}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    for title, tables in (("speed", speed_tables), ("sweep", sweep_tables), ("compile", compile_tables)):
        print(f"\n## {title}\n{tables}")
    print(json.dumps(summary))
    return 0 if all(ph.get("status") == "ok" for ph in win.phases) else 1


if __name__ == "__main__":
    sys.exit(main())
