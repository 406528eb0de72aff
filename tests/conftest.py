"""Shared fixtures and helpers: real data from ../shared/datasets, small and fast.

Test modules never import each other: what two of them share lives here (the hub tests' helpers in hubutil.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# No test reads or writes a user's caches or local hub (the default one is <EDGEZOO_CACHE>/hub), nor reaches the
# Hub with their token or endpoint; CIFAR-10 is unpacked once under ./data. Set here, when pytest loads this
# file, not in a fixture: huggingface_hub reads HF_HOME and HF_HUB_CACHE when it is first imported, and test
# modules import it (through timm) as they are collected. Subprocesses inherit the same environment.
_HERMETIC_HOME = Path(tempfile.mkdtemp(prefix="edgezoo-tests-"))
os.environ.update(EDGEZOO_CACHE=str(_HERMETIC_HOME / "edgezoo-cache"), HF_HOME=str(_HERMETIC_HOME / "hf-home"),
                  HF_HUB_CACHE=str(_HERMETIC_HOME / "hf-home" / "hub"), HF_HUB_DISABLE_TELEMETRY="1")
os.environ.setdefault("HF_HUB_OFFLINE", "0")
for _name in ("EDGEZOO_HUB", "HF_TOKEN", "HF_TOKEN_PATH", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT"):
    os.environ.pop(_name, None)


def pytest_unconfigure(config) -> None:
    """The caches of the environment above go when pytest ends."""
    shutil.rmtree(_HERMETIC_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    from zoo.datasets import find_cifar10

    return find_cifar10(download=False)


@pytest.fixture(scope="session")
def hymenoptera_root() -> Path:
    from zoo.datasets import shared_datasets

    shared = shared_datasets()
    if shared is None:
        pytest.skip("../shared/datasets not found")
    return shared / "hymenoptera"


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


def cifar_test_subset(cifar_root: Path, dest: Path, per_class: int) -> Path:
    """The first `per_class` CIFAR-10 test images of every class, linked under dest/<class>/: a small labelled
    split (all ten classes, so labels line up), whose kNN runs in seconds."""
    for cls_dir in sorted(p for p in (cifar_root / "test").iterdir() if p.is_dir()):
        for img in sorted(cls_dir.iterdir())[:per_class]:
            link = dest / cls_dir.name / img.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(img)
    return dest


@pytest.fixture(scope="session")
def cifar_test_200(tmp_path_factory, cifar_root) -> Path:
    """200 CIFAR-10 test images (20 per class, linked): an eval split for tiny runs, whose end-of-run kNN
    would otherwise embed all 10,000 test images."""
    return cifar_test_subset(cifar_root, tmp_path_factory.mktemp("cifar10-test-200"), 20)


# --- an edge install: onnxruntime, numpy and Pillow only -------------------------------------------------

EDGE_MISSING = ("torch", "torchvision", "timm", "gradio", "gradio_client")


def edge_cli(*also_missing: str) -> str:
    """Code for ``python -c CODE ARGS...``: `edgezoo ARGS` as an edge install runs it, where EDGE_MISSING (and
    `also_missing`) are not installed (importing one raises ModuleNotFoundError)."""
    missing = (*EDGE_MISSING, *also_missing)
    return f"""
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {missing!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from app.cli import main
sys.exit(main(sys.argv[1:]))
"""


# --- the session's `edgezoo run` (test_pipeline.py), which the demo and browser tests serve ----------------

def pipeline_once(base: Path, cifar_root: Path) -> dict:
    """The session's first `edgezoo run --no-serve` (pretrain -> evaluate -> export -> publish to a local hub
    under `base`) and what it reported; built once per session, its result saved beside it."""
    record = base / "first-run.json"
    if record.is_file():
        return json.loads(record.read_text())
    from app.cli import build_parser
    from app.pipeline import format_summary, run_pipeline

    base.mkdir(parents=True, exist_ok=True)
    # A 1-epoch model on 256 images is too weak for export's default int8 kNN-drop threshold on 100
    # validation images (one image is a point): the test relaxes that one check, as a user with a tiny run would.
    argv = ["run", "--data", "cifar10", "--recipe", "cpu-quick", "--max-images", "256", "--epochs", "1",
            "--batch-size", "64", "--eval-data", str(cifar_test_subset(cifar_root, base / "eval", 10)),
            "--threads", "2", "--repo", "edgezoo/test-quick", "--out", str(base / "run"), "--hub-dir",
            str(base / "hub"), "--no-serve", "--no-progress",
            "--export-options=--calib-images 256 --bank-images 1000 --max-knn-drop 5"]
    start = time.perf_counter()
    result = run_pipeline(build_parser().parse_args(argv))
    out = {**result.as_dict(), "argv": argv, "hub_dir": str(base / "hub"), "summary": format_summary(result),
           "elapsed_s": time.perf_counter() - start}
    record.write_text(json.dumps(out, indent=2, default=str))
    return out


@pytest.fixture(scope="module")
def published(tmp_path_factory, cifar_root) -> dict:
    """The session's `edgezoo run --no-serve`: a RUN_DIR published to a local hub (``pipeline_once``)."""
    return pipeline_once(tmp_path_factory.getbasetemp() / "edgezoo-pipeline", cifar_root)


GALLERY_SIZE = 40


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, hymenoptera_root) -> Path:
    """GALLERY_SIZE hymenoptera photos (half ants, half bees), copied so the folder is the gallery's own."""
    dest = tmp_path_factory.mktemp("gallery")
    for cls in ("ants", "bees"):
        (dest / cls).mkdir()
        for src in sorted((hymenoptera_root / "val" / cls).iterdir())[:GALLERY_SIZE // 2]:
            shutil.copy2(src, dest / cls / src.name)
    return dest


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("index")


@pytest.fixture(scope="module")
def served(published, gallery, index_dir):
    """The demo as `edgezoo run` serves it: the published version, ONNX backend, from the local hub."""
    from app.demo import create_app, start
    from hubutil import free_port

    app = create_app(f"{published['repo_id']}@{published['version']}", gallery, index_dir=index_dir,
                     runs_dir=Path(published["run_dir"]).parent, hub_dir=published["hub_dir"])
    blocks, url = start(app, "127.0.0.1", free_port(), concurrency=2)
    try:
        yield app, url
    finally:
        blocks.close()
