"""Helpers of the hub tests: one tiny exported run, olah on 127.0.0.1, the Hub client in a subprocess.

The tiny run is built once per test session (the first module to ask builds it
under pytest's session temp dir, later ones find it finished).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Small stem on purpose: plain timm `hf-hub:` loading must find the *_smallstem architecture.
TINY = dict(data="cifar10", model="mobilenetv3_small_050", small_stem=True, img_size=32, max_images=64, epochs=2,
            batch_size=32, proj_hidden_dim=128, proj_dim=64, num_negatives=32, threads=2, eval_max_train=64)
EVAL_PER_CLASS = 26  # 260 images: the export validator wants at least 256

# benchmarks/ is not an installed package: the clone's root goes on the path (last) for its server helpers.
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))
from benchmarks.servers import free_port, stop_process, wait_port  # noqa: E402


def small_eval_folder(cifar_root: Path, dest: Path) -> Path:
    """A labelled ImageFolder of a few CIFAR-10 test images (all ten classes, so labels line up)."""
    for cls_dir in sorted(p for p in (cifar_root / "test").iterdir() if p.is_dir()):
        (dest / cls_dir.name).mkdir(parents=True, exist_ok=True)
        for img in sorted(cls_dir.iterdir())[:EVAL_PER_CLASS]:
            link = dest / cls_dir.name / img.name
            if not link.exists():
                link.symlink_to(img)
    return dest


# Quick export of the tiny run: fewest images the validator allows, no latency, loose int8 thresholds (the
# hub tests check publishing, not quantization quality of a barely trained network).
EXPORT_FLAGS = ["--val-images", "256", "--bank-images", "1000", "--calib-images", "256", "--no-latency",
                "--int8-median-cosine", "0.5", "--max-knn-drop", "100"]


def make_export(run_dir: Path) -> Path:
    """`edgezoo export RUN_DIR` (validated ONNX fp32 + int8 into RUN_DIR/export)."""
    from app.cli import main

    assert main(["export", str(run_dir), *EXPORT_FLAGS]) == 0, "edgezoo export failed"
    return run_dir / "export"


def fail_validation(export_dir: Path) -> str:
    """Mark the export's last check as failed (what a real failed validation writes); returns its name."""
    report = json.loads((export_dir / "validation.json").read_text())
    report["passed"] = False
    report["checks"][-1]["passed"] = False
    (export_dir / "validation.json").write_text(json.dumps(report, indent=2))
    return report["checks"][-1]["name"]


def tiny_exported_run(base: Path, cifar_root: Path) -> Path:
    """pretrain (tiny) + export into base/run, once."""
    run = base / "run"
    if (run / "export" / "validation.json").is_file():
        return run
    from pretrain.config import build_config
    from pretrain.trainer import Trainer

    eval_dir = small_eval_folder(cifar_root, base / "eval")
    Trainer(build_config(None, eval_data=str(eval_dir), **TINY), run, progress=False).fit()
    make_export(run)
    return run


def sample_images(cifar_root: Path, n: int = 6) -> list[Path]:
    classes = sorted(p for p in (cifar_root / "test").iterdir() if p.is_dir())
    return [sorted(c.iterdir())[0] for c in classes][:n]


def run_embeddings(run_dir: Path, images: list[Path]) -> np.ndarray:
    """The run's own backbone on the shared preprocessing: what every published copy must reproduce."""
    import torch

    from zoo.preprocess import l2_normalize
    from zoo.timm_files import load_backbone, preprocess_of

    model, pre = load_backbone(run_dir / "backbone"), preprocess_of(run_dir / "backbone")
    pixels, _ = pre.decode(images)
    with torch.no_grad():
        return l2_normalize(model(torch.from_numpy(pre.normalize(pixels))).numpy())


# --- servers --------------------------------------------------------------------------------------------

def olah_config(mirror_dir: Path, scratch: Path, port: int) -> str:
    """olah.toml serving `mirror_dir` (a local hub) read-only and offline on 127.0.0.1:`port`."""
    return ("[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {port}\n"
            f'repos-path = "{scratch / "repos"}"\n'
            f'mirrors-path = ["{mirror_dir}"]\n'
            'hf-netloc = "127.0.0.1:9"\n'
            'hf-lfs-netloc = "127.0.0.1:9"\n'
            "[accessibility]\n"
            "offline = true\n")


@contextlib.contextmanager
def olah(mirror_dir: Path, scratch: Path, config: str | None = None, port: int | None = None) -> Iterator[str]:
    """olah serving `mirror_dir` (a local hub) read-only and offline on 127.0.0.1; yields its endpoint.

    `config` replaces the default olah.toml (`olah_config`); it must listen on `port`. olah runs in `scratch`.
    """
    port = port or free_port()
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "olah.toml").write_text(config if config is not None else olah_config(mirror_dir, scratch, port))
    olah_cli = Path(sys.executable).with_name("olah-cli")
    log = open(scratch / "olah.log", "wb")
    proc = subprocess.Popen([str(olah_cli), "-c", str(scratch / "olah.toml")], cwd=scratch, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
        log.close()


def hf_env(endpoint: str | None, hf_home: Path, **extra: str) -> dict[str, str]:
    """Environment of a subprocess that uses huggingface_hub against `endpoint` (set before it is imported)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
               PYTHONPATH=str(ROOT), **extra)
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    return env


def run_python(code: str, env: dict[str, str], timeout: float = 300) -> str:
    """Run `code` in a fresh interpreter; return its stdout, fail with its stderr."""
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout

