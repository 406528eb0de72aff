"""What a user sees when something is wrong or slow: one clear line, the right error class, visible progress.

A misspelt repository is an UnknownRepoError (local hub and Hub), an int8 variant
with the torch backend is refused, an edge install (no torch, no gradio) is told
what to install, and `edgezoo eval` says what it is doing from the start.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from conftest import edge_cli
from zoo.hub import OfflineError, UnknownRepoError
from zoo.hub.local import LocalHub

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_hf(monkeypatch, tmp_path):
    """The local-hub setup (no HF_ENDPOINT, no token) with the Hub out of reach: nothing leaves the machine."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr("zoo.hub.core.hf_token", lambda: None)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def test_misspelt_repo_is_unknown_not_offline(no_hf, tmp_path):
    from zoo.pretrained import from_pretrained

    hub = LocalHub(tmp_path / "hub")
    hub.create("edgezoo/resnet18-cifar10-quick")
    with pytest.raises(UnknownRepoError, match="no such repository in the local hub") as err:
        from_pretrained("edgezoo/resnet18-cifar10-quik", hub_dir=hub.root, backend="onnx")
    assert "did you mean edgezoo/resnet18-cifar10-quick?" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UnknownRepoError, match="edgezoo/nope: no such repository"):
        from_pretrained("edgezoo/nope", hub_dir=hub.root, backend="onnx")
    with pytest.raises(UnknownRepoError):
        from_pretrained("edgezoo/nope", hub="local", hub_dir=hub.root)


def test_offline_with_the_hub_configured_stays_an_offline_error(no_hf, monkeypatch, tmp_path):
    """With HF_ENDPOINT set the Hub is the user's hub: an uncached repo may well exist there."""
    from zoo.pretrained import from_pretrained

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("EDGEZOO_HUB", str(tmp_path / "hub"))  # (a hub_dir argument would choose the local hub)
    with pytest.raises(OfflineError, match="download it once while online"):
        from_pretrained("edgezoo/nope", backend="onnx")


class _NoSuchRepo(http.server.BaseHTTPRequestHandler):
    """What the Hub answers for a repository that does not exist."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        body = b'{"error": "Repository not found"}'
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("X-Error-Message", "Repository not found")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hub_endpoint(monkeypatch, tmp_path) -> Iterator[str]:
    import huggingface_hub.constants as hf_constants

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoSuchRepo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()


def test_repo_the_hub_does_not_have_is_unknown(hub_endpoint, tmp_path):
    from zoo.pretrained import from_pretrained

    for hub in (None, "hf"):
        with pytest.raises(UnknownRepoError, match="edgezoo/nope: no such repository on the hub"):
            from_pretrained("edgezoo/nope", hub=hub, hub_dir=tmp_path / "empty-hub", backend="onnx")


def test_int8_with_the_torch_backend_is_refused(no_hf, tmp_path):
    from zoo.errors import EdgezooError
    from zoo.pretrained import VariantError, resolve_backend, from_pretrained

    with pytest.raises(VariantError, match='int8.* is an ONNX model: load it with backend="onnx"') as err:
        from_pretrained("edgezoo/any", backend="torch", variant="int8", hub_dir=tmp_path)
    assert isinstance(err.value, EdgezooError) and isinstance(err.value, ValueError)
    assert resolve_backend("auto", "int8") == "onnx"  # int8 exists only as ONNX
    with pytest.raises(VariantError, match="unknown variant 'fp16'"):
        from_pretrained("edgezoo/any", backend="torch", variant="fp16", hub_dir=tmp_path)


# --- an edge install: onnxruntime, numpy and Pillow only ------------------------------------------------

EDGE_CLI = edge_cli()


@pytest.mark.parametrize(("argv", "package", "extra"), [
    (["pretrain", "--data", "{tmp}", "--out", "{tmp}/run"], "torch", "train"),
    (["eval", "{tmp}/run"], "torch", "train"),
    (["demo", "--model", "{tmp}/model.onnx"], "gradio", "app"),
])
def test_edge_install_is_told_what_to_install(tmp_path, argv, package, extra):
    argv = [a.format(tmp=tmp_path) for a in argv]
    proc = subprocess.run([sys.executable, "-c", EDGE_CLI, *argv], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"{argv[0]} failed: {package} is not installed" in lines[0]
    assert f'pip install ".[{extra}]"' in lines[0]


# --- `edgezoo eval` shows what it is doing --------------------------------------------------------------

def _labelled_folder(root: Path) -> Path:
    """train/ and val/ with two classes of small random images."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4)):
        for label, cls in enumerate(("dark", "light")):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 128, (36, 36, 3)) + 127 * label
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / cls / f"{i:02d}.png")
    return root


def _tiny_run(run_dir: Path, data: Path) -> Path:
    """A RUN_DIR that `edgezoo eval` can read: config.yaml and an untrained small-stem backbone."""
    from pretrain.config import PretrainConfig
    from zoo.backbones import create_backbone, embedding_dim
    from zoo.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
    from zoo.timm_files import make_config, save_backbone

    run_dir.mkdir(parents=True)
    PretrainConfig(data=str(data), model="mobilenetv3_small_050", img_size=32).save(run_dir / "config.yaml")
    model = create_backbone("mobilenetv3_small_050", small_stem=True).eval()
    save_backbone(model, run_dir / "backbone", make_config("mobilenetv3_small_050_smallstem",
                                                           embedding_dim(model, 32),
                                                           Preprocess(32, IMAGENET_MEAN, IMAGENET_STD)))
    return run_dir


def test_eval_logs_its_progress_at_info_by_default(tmp_path):
    run_dir = _tiny_run(tmp_path / "run", _labelled_folder(tmp_path / "data"))
    proc = subprocess.run([sys.executable, "-m", "app.cli", "eval", str(run_dir), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    log = proc.stderr
    steps = ["evaluating", "loading the kNN bank", "decoding 24 images", "loading the labelled test split",
             "embedding 24 bank and 8 test images, then kNN", "evaluated in"]
    positions = [log.find(step) for step in steps]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), log
    assert " INFO " in log and (run_dir / "eval.json").is_file()


# --- options are checked when the config is made; only expected errors are one line --------------------

# (--method is not among them: the methods are the modules of pretrain/methods/, checked by `edgezoo pretrain`
# before any data is read; tests/test_methods.py)
BAD_OPTIONS = [("reg", "ewc"), ("augment", "fast"), ("bank_dtype", "float8"), ("bank_update", "sgd"),
               ("calibrate_view", "blurred"), ("compile_mode", "fastest"), ("optimizer", "lamb")]


def test_every_enumerated_option_has_a_bad_value_test():
    from pretrain.config import CHOICES

    assert {option for option, _ in BAD_OPTIONS} == set(CHOICES)


@pytest.mark.parametrize(("option", "value"), BAD_OPTIONS)
def test_a_bad_option_fails_when_the_config_is_made(option, value):
    """From a flag (build_config) or a recipe/config.yaml (PretrainConfig): the message names the option and
    lists what it accepts."""
    from pretrain.config import CHOICES, PretrainConfig, build_config
    from zoo.errors import ConfigError

    for make in (lambda: PretrainConfig(**{option: value}), lambda: build_config("cpu-quick", **{option: value})):
        with pytest.raises(ConfigError) as err:
            make()
        message = str(err.value)
        assert f"{option} (--{option.replace('_', '-')})" in message and repr(value) in message, message
        assert all(allowed in message for allowed in CHOICES[option] if allowed is not None), message
    for allowed in CHOICES[option]:
        assert getattr(PretrainConfig(**{option: allowed}), option) == allowed


def test_a_bad_option_on_the_command_line_is_one_line_before_any_work(tmp_path):
    """A bad --bank-dtype was a KeyError traceback once the data was decoded; now the config refuses it."""
    proc = subprocess.run([sys.executable, "-m", "app.cli", "pretrain", "--bank-dtype", "float8",
                           "--data", str(tmp_path / "no-such-folder"), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pretrain failed: bank_dtype (--bank-dtype) must be one of" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bug", [ValueError("a bug"), KeyError("a bug"), TypeError("a bug"),
                                 FileNotFoundError("a bug")])
def test_a_bug_keeps_its_traceback(monkeypatch, bug):
    import app.cli

    def run_stage(stage, args):
        raise bug

    monkeypatch.setattr(app.cli, "run_stage", run_stage)
    with pytest.raises(type(bug)):
        app.cli.main(["list"])


def test_an_expected_error_is_one_line_and_its_exit_code(monkeypatch, caplog):
    import app.cli
    from zoo.errors import ConfigError

    def run_stage(stage, args):
        raise ConfigError("what is wrong")

    monkeypatch.setattr(app.cli, "run_stage", run_stage)
    assert app.cli.main(["list"]) == ConfigError.exit_code
    assert "list failed: what is wrong" in caplog.text and "Traceback" not in caplog.text


def test_a_full_disk_is_one_line_not_a_traceback(monkeypatch, caplog):
    import errno

    import app.cli

    def run_stage(stage, args):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/checkpoint.pt.tmp")

    monkeypatch.setattr(app.cli, "run_stage", run_stage)
    assert app.cli.main(["list"]) == 1
    assert "list failed: No space left on device: runs/x/checkpoint.pt.tmp; free some space" in caplog.text
    assert "Traceback" not in caplog.text
