"""Publishing to the local hub, from_pretrained, the model card, refusals, checksums and the upload receiver.

One tiny real run (pretrain + export) is shared by the hub tests; each test
publishes into its own hub directory.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from hubutil import ROOT, fail_validation, run_embeddings, sample_images, tiny_exported_run
from zoo.card import card_context, render_card
from zoo.hub import (HubError, PublishRefused, UnknownRepoError, UnknownRevisionError, check_repo_path,
                     next_version)
from zoo.hub.local import LocalHub, scratch_dir
from zoo.publish import publish
from zoo.runfiles import check_run
from zoo.layout import MANIFEST as MANIFEST_NAME
from zoo.manifest import ChecksumError, sha256_file


@pytest.fixture(scope="module")
def run(tmp_path_factory, cifar_root) -> Path:
    return tiny_exported_run(tmp_path_factory.getbasetemp() / "hub-tiny-run", cifar_root)


@pytest.fixture(scope="module")
def images(cifar_root) -> list[Path]:
    return sample_images(cifar_root)


def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, copy_function=shutil.copy2)
    return dest


# --- local round trip -----------------------------------------------------------------------------------

def test_local_round_trip_torch_and_onnx(run, tmp_path, images):
    import torch

    import zoo

    hub_dir = tmp_path / "hub"
    result = publish(run, "edgezoo/tiny", hub_dir=hub_dir)
    assert (result.repo_id, result.version, result.hub) == ("edgezoo/tiny", "v1", "local")
    hub = LocalHub(hub_dir)
    assert hub.refs("edgezoo/tiny") == {"branches": {"main": result.commit}, "tags": {"v1": result.commit}}

    # timm-native root, ONNX, training files, card, curve; the manifest covers every other file.
    files = set(hub.files("edgezoo/tiny", result.commit))
    assert {"config.json", "model.safetensors", "onnx/model.onnx", "onnx/model.int8.onnx", "onnx/validation.json",
            "README.md", "training_curve.png", "manifest.json", "training/log.csv", "training/metrics.json",
            "training/config.yaml"} <= files
    manifest = json.loads(hub.read("edgezoo/tiny", result.commit, MANIFEST_NAME))
    assert set(manifest["files"]) == files - {MANIFEST_NAME}
    assert (manifest["repo_id"], manifest["version"]) == ("edgezoo/tiny", "v1")
    assert hub.read("edgezoo/tiny", "v1", "config.json") == (run / "backbone/config.json").read_bytes()
    assert manifest["files"]["model.safetensors"]["sha256"] == sha256_file(run / "backbone/model.safetensors")

    expected = run_embeddings(run, images)
    model = zoo.from_pretrained("edgezoo/tiny", hub_dir=hub_dir, backend="torch")
    assert (model.revision, model.commit, model.backend) == ("v1", result.commit, "torch")
    assert isinstance(model.model, torch.nn.Module)
    assert model.config == json.loads((run / "backbone/config.json").read_text())
    emb = model.embed(images)
    assert emb.dtype == np.float32 and emb.shape == (len(images), model.dim)
    np.testing.assert_allclose(emb, expected, atol=1e-5)
    np.testing.assert_allclose(model.embed(images[0]), expected[:1], atol=1e-5)  # one image, not a batch

    onnx = zoo.from_pretrained("edgezoo/tiny", revision="v1", hub_dir=hub_dir, backend="onnx")
    assert onnx.model is None and onnx.backend == "onnx"
    np.testing.assert_allclose(onnx.embed(images), expected, atol=1e-4)
    int8 = zoo.from_pretrained("edgezoo/tiny", revision="v1", hub_dir=hub_dir, backend="onnx", variant="int8")
    emb8 = int8.embed(images)
    assert emb8.shape == expected.shape and np.allclose(np.linalg.norm(emb8, axis=1), 1, atol=1e-4)

    # A second publish is v2; v1 stays loadable; bad names are clear errors.
    assert publish(run, "edgezoo/tiny", hub_dir=hub_dir).version == "v2"
    assert zoo.from_pretrained("edgezoo/tiny", hub_dir=hub_dir, backend="torch").revision == "v2"
    assert zoo.from_pretrained("edgezoo/tiny", "v1", hub_dir=hub_dir, backend="torch").commit == result.commit
    with pytest.raises(UnknownRevisionError, match="v9.*versions: v1, v2"):
        zoo.from_pretrained("edgezoo/tiny", revision="v9", hub_dir=hub_dir)
    with pytest.raises(UnknownRepoError, match="edgezoo/absent"):
        zoo.from_pretrained("edgezoo/absent", hub="local", hub_dir=hub_dir)

    rows = zoo.list_models(hub_dir=hub_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    assert [(r.repo_id, r.version, r.versions) for r in rows] == [("edgezoo/tiny", "v2", 2)]
    assert rows[0].knn_top1 == metrics["knn_top1"] and rows[0].embed_dim == metrics["embed_dim"]
    assert rows[0].onnx_passed is True


def test_existing_version_is_refused_and_nothing_changes(run, tmp_path):
    hub_dir = tmp_path / "hub"
    publish(run, "edgezoo/tiny", hub_dir=hub_dir, version="v3")
    before = LocalHub(hub_dir).refs("edgezoo/tiny")
    with pytest.raises(PublishRefused, match="v3 already exists.*next free one is v4"):
        publish(run, "edgezoo/tiny", hub_dir=hub_dir, version="v3")
    assert LocalHub(hub_dir).refs("edgezoo/tiny") == before
    assert publish(run, "edgezoo/tiny", hub_dir=hub_dir).version == "v4"


# --- refusals -------------------------------------------------------------------------------------------

def _no_metrics(r: Path) -> None:
    (r / "metrics.json").unlink()


def _no_weights(r: Path) -> None:
    (r / "backbone/model.safetensors").unlink()


def _checkpoint_newer(r: Path) -> None:
    later = time.time() + 60
    (r / "checkpoint.pt").write_bytes(b"resumed")
    os.utime(r / "checkpoint.pt", (later, later))


def _failed_validation(r: Path) -> None:
    fail_validation(r / "export")


def _no_export(r: Path) -> None:
    shutil.rmtree(r / "export")


def _stale_export(r: Path) -> None:
    old = (r / "backbone/model.safetensors").stat().st_mtime - 60
    os.utime(r / "export/model.onnx", (old, old))


def _half_written(r: Path) -> None:
    (r / "backbone/model.safetensors.tmp").write_bytes(b"partial")


@pytest.mark.parametrize("damage, reason", [
    (_no_metrics, "no metrics.json"), (_no_weights, "model.safetensors is missing"),
    (_checkpoint_newer, "checkpoint.pt is newer"), (_failed_validation, "export failed validation"),
    (_no_export, "no validated export"), (_stale_export, "older than backbone"), (_half_written, "half-written"),
])
def test_unfit_run_dirs_are_refused_and_write_nothing(run, tmp_path, damage, reason):
    bad = _copy_run(run, tmp_path / "run")
    damage(bad)
    hub_dir = tmp_path / "hub"
    with pytest.raises(PublishRefused, match=reason):
        publish(bad, "edgezoo/bad", hub_dir=hub_dir)
    assert LocalHub(hub_dir).list_repos() == []


# --- checksums ------------------------------------------------------------------------------------------

def test_tampered_files_fail_the_checksum_and_name_the_file(run, tmp_path):
    import zoo

    hub_dir = tmp_path / "hub"
    publish(run, "edgezoo/tiny", hub_dir=hub_dir)
    hub = LocalHub(hub_dir)
    # Someone rewrites the weights in the hub without the manifest knowing.
    weights = bytearray(hub.read("edgezoo/tiny", "v1", "model.safetensors"))
    weights[-1] ^= 0xFF
    hub.commit("edgezoo/tiny", {"model.safetensors": bytes(weights)}, message="tamper", tag="v2")
    with pytest.raises(ChecksumError, match="model.safetensors: checksum mismatch"):
        zoo.from_pretrained("edgezoo/tiny", revision="v2", hub_dir=hub_dir, backend="torch")
    onnx = bytearray(hub.read("edgezoo/tiny", "v1", "onnx/model.onnx"))
    hub.commit("edgezoo/tiny", {"onnx/model.onnx": bytes(onnx[:-10])}, message="truncate", tag="v3")
    with pytest.raises(ChecksumError, match="onnx/model.onnx: checksum mismatch"):
        zoo.from_pretrained("edgezoo/tiny", revision="v3", hub_dir=hub_dir, backend="onnx")

    # A damaged local snapshot cache is checked out again from git, not trusted.
    model = zoo.from_pretrained("edgezoo/tiny", revision="v1", hub_dir=hub_dir, backend="torch")
    cached = model.path / "model.safetensors"
    cached.write_bytes(cached.read_bytes()[:-1] + b"\0")
    again = zoo.from_pretrained("edgezoo/tiny", revision="v1", hub_dir=hub_dir, backend="torch")
    assert sha256_file(again.path / "model.safetensors") == sha256_file(run / "backbone/model.safetensors")


# --- interrupted publishes -----------------------------------------------------------------------------

# Publishes, and stops for good once every file is staged and stored in git, before the commit is made.
STALLED_PUBLISH = """
import sys, time
from zoo.hub.local import LocalHub
from zoo.publish import publish

write_blobs = LocalHub._write_blobs

def stall(*args, **kwargs):
    write_blobs(*args, **kwargs)
    print("STALLED", flush=True)
    time.sleep(600)

LocalHub._write_blobs = stall
publish(sys.argv[1], "edgezoo/killed", hub_dir=sys.argv[2])
"""


def test_killed_publish_leaves_nothing_in_tmpdir_and_the_next_publish_removes_its_staging(run, tmp_path):
    hub_dir, tmpdir = tmp_path / "hub", tmp_path / "tmpdir"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", STALLED_PUBLISH, str(run), str(hub_dir)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "STALLED", proc.stderr.read()[-3000:]
        proc.kill()  # SIGKILL: no cleanup code of the publish runs
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sorted(p.name for p in tmpdir.iterdir()) == []  # nothing in TMPDIR
    staging = hub_dir / ".staging"
    leftovers = sorted(staging.iterdir())
    assert len(leftovers) == 2  # the staged repository and the commit's git index, named by the dead pid
    weights = (run / "backbone/model.safetensors").stat().st_size
    assert sum(f.stat().st_size for d in leftovers for f in d.rglob("*") if f.is_file()) > weights
    assert LocalHub(hub_dir).refs("edgezoo/killed") == {"branches": {}, "tags": {}}  # no half-written version

    with scratch_dir(staging) as live:  # a publish still running (this process): its folder stays
        result = publish(run, "edgezoo/killed", hub_dir=hub_dir)
        assert sorted(staging.iterdir()) == [live]
    assert result.version == "v1" and list(staging.iterdir()) == []
    assert LocalHub(hub_dir).refs("edgezoo/killed")["tags"] == {"v1": result.commit}


# --- the model card -------------------------------------------------------------------------------------

def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_model_card_renders_real_numbers_from_the_run(run):

    facts = check_run(run)
    ctx = card_context(facts, "edgezoo/tiny", "v1", hub="local", files={})
    text = render_card(ctx)
    m = facts.metrics
    meta = _front_matter(text)
    assert meta["library_name"] == "timm" and meta["pipeline_tag"] == "image-feature-extraction"
    assert meta["datasets"] == ["uoft-cs/cifar10"] and meta["license"] == "apache-2.0"
    assert "edgezoo" in meta["tags"] and m.architecture in meta["tags"]
    result = meta["model-index"][0]["results"][0]
    assert result["metrics"][0]["value"] == round(100 * m.knn_top1, 2)
    assert result["dataset"]["type"] == "imagefolder"  # the tiny run evaluates on a local folder, not a Hub dataset
    for needle in (f"{100 * m.knn_top1:.2f}%", f"{m.rankme:.4g}", f"{m.wall_time_s:.1f} s",
                   f"{ctx['stats']['params'] / 1e6:.3g} M", f"{ctx['stats']['gmacs']:.3g}", str(m.embed_dim),
                   f"{m.img_size} x {m.img_size}", m.device_name, "training_curve.png", "2404.19289",
                   'from_pretrained("edgezoo/tiny", revision="v1")', "hf-hub:edgezoo/tiny@v1", 'backend="onnx"'):
        assert needle in text, needle
    for check in facts.validation.checks:
        assert check["name"] in text
    assert str(run) not in text and "/tmp" not in text  # no local paths leak
    assert "None" not in text and "nan" not in text.lower().replace("nanjing", "")
    assert "## Lineage" not in text

    # A user's own folder: no Hub dataset id; a continual run lists its lineage.
    own = dataclasses.replace(facts, config={**facts.config, "data": "/home/me/photos"},
                              data={"eval": {"spec": "/home/me/photos:val"}},
                              lineage=[{"repo_id": "edgezoo/base", "version": "v1"}])
    text = render_card(card_context(own, "edgezoo/own", "v1", hub="hf", files={}, stats=ctx["stats"]))
    meta = _front_matter(text)
    assert "datasets" not in meta and "photos" in text and "/home/me" not in text
    assert meta["model-index"][0]["results"][0]["dataset"] == {"name": "photos", "type": "imagefolder",
                                                               "split": "val"}
    assert "## Lineage" in text and "edgezoo/base" in text

    # A run from an --init names it; saved as an average with it (--wise-alpha), the card says so.
    init = {"source": "tf_efficientnet_lite0.in1k", "origin": "ImageNet Lite0", "license": "apache-2.0",
            "sha256": "ab" * 32, "kind": "imagenet-wheel"}
    for record, line in ((init, None), ({**init, "wise_ft_alpha": 0.25}, "0.25 x the trained weights + 0.75 x")):
        cfg = {**facts.backbone_config, "edgezoo": {**facts.backbone_config.get("edgezoo", {}), "init": record}}
        text = render_card(card_context(dataclasses.replace(facts, backbone_config=cfg), "edgezoo/own", "v1",
                                        hub="local", files={}, stats=ctx["stats"]))
        assert "`tf_efficientnet_lite0.in1k`: ImageNet Lite0 (license apache-2.0" in text
        assert ("WiSE-FT" in text) == (line is not None) and (line is None or line in text)


def _section(card: str, title: str) -> str:
    """The text of one `## title` section of a card."""
    return card.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def test_card_lists_exactly_the_published_files_with_their_sizes(run, tmp_path):
    assert (run / "export/model.ort").is_file() and (run / "export/required_operators.config").is_file()
    hub_dir = tmp_path / "hub"
    result = publish(run, "edgezoo/tiny", hub_dir=hub_dir)
    hub = LocalHub(hub_dir)
    published = set(hub.files("edgezoo/tiny", result.commit))
    card = hub.read("edgezoo/tiny", result.commit, "README.md").decode()
    rows = dict(re.findall(r"^\| `([^`]+)` \| ([^|]+) \|$", _section(card, "Files"), flags=re.M))
    assert set(rows) == published
    for path in published - {"README.md", "manifest.json"}:
        assert rows[path] == _size(len(hub.read("edgezoo/tiny", result.commit, path))), path
    models = dict(re.findall(r"^\| `(onnx/[^`]+)` \| ([^|]+) \|$", _section(card, "ONNX export and validation"),
                             flags=re.M))
    assert models == {p: rows[p] for p in ("onnx/model.onnx", "onnx/model.int8.onnx")}
    for absent in (".ort", "required_operators.config"):  # validated in the export folder, not published
        assert absent not in card.replace("ort_format", ""), absent


def _evaluated_copy(run: Path, dest: Path) -> Path:
    """A copy of the tiny run with a real eval.json (`edgezoo eval`)."""
    from pretrain.evaluate import evaluate_run

    own = _copy_run(run, dest)
    evaluate_run(own, device="cpu")
    return own


def test_card_shows_one_headline_knn_with_its_protocol_and_labels_the_export_check(run, tmp_path):
    own = _evaluated_copy(run, tmp_path / "run")
    evaluation = json.loads((own / "eval.json").read_text())
    result = publish(own, "edgezoo/tiny", hub_dir=tmp_path / "hub")
    hub = LocalHub(tmp_path / "hub")
    card = hub.read("edgezoo/tiny", result.commit, "README.md").decode()
    assert json.loads(hub.read("edgezoo/tiny", result.commit, "training/eval.json"))["num_test"] == \
        evaluation["num_test"]

    headline = f"{100 * evaluation['knn_top1']:.2f}%"
    rows = [ln for ln in _section(card, "Evaluation").splitlines() if ln.startswith("| kNN top-1 |")]
    assert len(rows) == 1, rows  # one headline figure
    for protocol in (f"**{headline}**", f"k={evaluation['k']}", f"bank: {evaluation['num_train']:,} training images",
                     f"test: {evaluation['num_test']:,} images of", "training/eval.json"):
        assert protocol in rows[0], protocol
    assert _front_matter(card)["model-index"][0]["results"][0]["metrics"][0]["value"] == \
        round(100 * evaluation["knn_top1"], 2)

    # The validation kNN is there, labelled as the export check on its own (smaller) bank.
    validation = json.loads((own / "export/validation.json").read_text())
    check = f"PyTorch: {100 * validation['knn']['torch']:.2f}%"
    (line,) = [ln for ln in card.splitlines() if check in ln]
    assert "export check" in line
    bank = validation["data"]["knn_bank"]["num_images"]
    which = "a smaller" if bank < evaluation["num_train"] else "its own"  # the tiny run's export bank is larger
    assert f"the export check, not the model's score: it compares the runtimes with each other on {which} bank " \
           f"({bank:,} training images" in " ".join(card.split())

    # The random-init baseline of eval.json under the same protocol; "not measured" without one.
    random_row = next(ln for ln in card.splitlines() if "random-init" in ln)
    measured = evaluation.get("random_init_knn_top1")
    assert "same protocol" in random_row
    assert (f"{100 * measured:.2f}%" if measured is not None else "not measured") in random_row
    unmeasured = {k: v for k, v in evaluation.items() if k != "random_init_knn_top1"}
    (own / "eval.json").write_text(json.dumps(unmeasured))
    text = render_card(card_context(check_run(own), "edgezoo/tiny", "v2", hub="local", files={}))
    assert "not measured" in next(ln for ln in text.splitlines() if "random-init" in ln)
    (own / "eval.json").write_text(json.dumps({**evaluation, "random_init_knn_top1": 0.2113, "num_train": 10000}))
    text = render_card(card_context(check_run(own), "edgezoo/tiny", "v2", hub="local", files={}))
    assert "21.13%" in next(ln for ln in text.splitlines() if "random-init" in ln)
    assert "bank: 10,000 training images" in text and f"on a smaller bank ({bank:,} training" in " ".join(text.split())

    # An eval.json older than the weights describes other weights: not used.
    old = (own / "backbone/model.safetensors").stat().st_mtime - 60
    os.utime(own / "eval.json", (old, old))
    facts = check_run(own)
    assert facts.evaluation is None
    text = render_card(card_context(facts, "edgezoo/tiny", "v2", hub="local", files={}))
    metrics = json.loads((own / "metrics.json").read_text())
    (row,) = [ln for ln in _section(text, "Evaluation").splitlines() if ln.startswith("| kNN top-1 |")]
    assert f"**{100 * metrics['knn_top1']:.2f}%**" in row and "size not recorded" in row
    assert "not measured" in next(ln for ln in text.splitlines() if "random-init" in ln)


def test_published_config_json_keeps_no_local_paths(run, tmp_path):
    own = _copy_run(run, tmp_path / "run")
    config = json.loads((own / "backbone/config.json").read_text())
    config["edgezoo"]["data"] = "/home/me/photos"
    (own / "backbone/config.json").write_text(json.dumps(config, indent=2) + "\n")
    os.utime(own / "metrics.json")  # written after the backbone, as in a real run
    result = publish(own, "edgezoo/own", hub_dir=tmp_path / "hub")
    published = json.loads(LocalHub(tmp_path / "hub").read("edgezoo/own", result.commit, "config.json"))
    assert published == {**config, "edgezoo": {**config["edgezoo"], "data": "photos"}}


def test_training_curve_plots_the_logged_loss_and_knn(tmp_path):
    """The PNG draws log.csv's loss (tab:blue) and kNN top-1 (tab:orange), so it changes with the logged values;
    drawing it leaves the caller's matplotlib backend alone."""
    import matplotlib
    import numpy as np
    from PIL import Image

    from zoo.card import plot_training_curve

    def drawn(losses: list[float], name: str) -> tuple[np.ndarray, np.ndarray]:
        rows = [{"epoch": str(e + 1), "loss": str(v), "knn_top1": {1: "0.3", len(losses) - 1: "0.4"}.get(e, "")}
                for e, v in enumerate(losses)]
        with Image.open(plot_training_curve(rows, tmp_path / name)) as img:
            assert img.format == "PNG" and img.size == (600, 350)
            rgb = np.asarray(img.convert("RGB"), np.int16)
        return tuple(np.abs(rgb - colour).sum(axis=2) < 60 for colour in ((31, 119, 180), (255, 127, 14)))

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # the caller's own backend
    try:
        (falling, knn), (rising, _) = drawn([4.0, 3.0, 2.5, 2.2], "falling.png"), drawn([2.2, 2.5, 3.0, 4.0],
                                                                                          "rising.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert falling.sum() > 300 and knn.sum() > 300  # the curves, not only the blue and orange axis labels
    assert (falling != rising).sum() > 300  # the loss curve follows the log


# --- CLI ------------------------------------------------------------------------------------------------

def test_publish_and_list_commands(run, tmp_path, capsys):
    from app.cli import main

    hub_dir = tmp_path / "hub"
    assert main(["publish", str(run), "--repo", "org/cli-model", "--hub-dir", str(hub_dir)]) == 0
    assert "org/cli-model@v1" in capsys.readouterr().out
    assert main(["list", "--hub-dir", str(hub_dir)]) == 0
    table = capsys.readouterr().out
    knn = json.loads((run / "metrics.json").read_text())["knn_top1"]
    assert "org/cli-model" in table and f"{100 * knn:.2f}%" in table and "v1" in table
    assert main(["publish", str(run), "--repo", "org/cli-model", "--hub-dir", str(hub_dir), "--version", "v1"]) == 2
    assert main(["publish", str(run), "--repo", "../evil", "--hub-dir", str(hub_dir)]) == 2


def test_onnx_backend_works_without_torch(run, tmp_path, images):
    """An edge install: torch cannot be imported at all, backend "auto" picks ONNX."""
    hub_dir = tmp_path / "hub"
    publish(run, "edgezoo/tiny", hub_dir=hub_dir)
    code = f"""
import sys
sys.modules["torch"] = None  # any `import torch` now fails
import zoo
model = zoo.from_pretrained("edgezoo/tiny", hub_dir={str(hub_dir)!r})
print(model.backend, *model.embed({[str(p) for p in images[:2]]!r}).shape)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["onnx", "2", str(json.loads((run / "metrics.json").read_text())["embed_dim"])]


# --- the local hub and names ----------------------------------------------------------------------------

def test_names_and_versions():
    assert next_version([]) == "v1" and next_version(["v1", "v10", "v2", "latest"]) == "v11"
    for bad in ("../x", "/abs", "a/../b", "a//b", ".git/config", "a\\b", "", "x/\n"):
        with pytest.raises(HubError, match="invalid path"):
            check_repo_path(bad)
    assert check_repo_path("onnx/model.onnx") == "onnx/model.onnx"


# --- the upload receiver --------------------------------------------------------------------------------

def _post(url: str, body: bytes | dict, content_type: str = "application/json") -> tuple[int, dict, dict]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}"), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), dict(err.headers)


def _ndjson(*items: dict) -> bytes:
    return b"".join(json.dumps(i).encode() + b"\n" for i in items)


def _file(path: str, content: bytes) -> dict:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(content).decode(), "encoding": "base64"}}


HEADER = {"key": "header", "value": {"summary": "upload", "description": ""}}


def test_receiver_commits_all_or_nothing_and_rejects_bad_uploads(tmp_path):
    from zoo.hub.server import HubReceiver

    with HubReceiver(tmp_path / "hub") as rx:
        ep = rx.endpoint
        assert ep.startswith("http://127.0.0.1:")
        status, body, _ = _post(f"{ep}/api/repos/create", {"name": "m", "organization": "org", "type": "model"})
        assert status == 200 and body["url"] == f"{ep}/org/m"
        status, body, _ = _post(f"{ep}/api/repos/create", {"name": "m", "organization": "org"})
        assert status == 409 and body["url"] == f"{ep}/org/m"

        status, body, _ = _post(f"{ep}/api/models/org/m/preupload/main",
                                {"files": [{"path": "a.txt", "size": 1, "sample": ""}]})
        assert status == 200 and body["files"][0]["uploadMode"] == "regular"

        commit = f"{ep}/api/models/org/m/commit/main"
        status, body, _ = _post(commit, _ndjson(HEADER, _file("a.txt", b"A"), _file("d/b.bin", b"\0\1")),
                                "application/x-ndjson")
        assert status == 200 and body["commitUrl"].startswith(f"{ep}/org/m/commit/")
        hub = LocalHub(tmp_path / "hub")
        first = body["commitOid"]
        assert hub.resolve("org/m") == first and hub.read("org/m", first, "d/b.bin") == b"\0\1"

        bad_bodies = [
            _ndjson(HEADER, _file("ok.txt", b"x")) + b'{"key": "file", "value": {"path": "y"\n',  # torn JSON
            _ndjson(HEADER, _file("../x", b"escape")),  # path traversal
            _ndjson(HEADER, _file(".git/config", b"x")),
            _ndjson(HEADER, {"key": "file", "value": {"path": "z", "content": "@@@", "encoding": "base64"}}),
            _ndjson(HEADER, {"key": "lfsFile", "value": {"path": "big", "algo": "sha256", "oid": "0" * 64,
                                                         "size": 1}}),
            _ndjson(_file("no-header.txt", b"x")),
        ]
        for bad in bad_bodies:
            status, body, _ = _post(commit, bad, "application/x-ndjson")
            assert status == 400, (bad[:80], body)
        assert hub.resolve("org/m") == first and not (tmp_path / "x").exists()
        assert hub.files("org/m", first) == ["a.txt", "d/b.bin"]

        status, body, _ = _post(commit, _ndjson(HEADER, {"key": "deletedFolder", "value": {"path": "d/"}},
                                                _file("a.txt", b"A2")), "application/x-ndjson")
        assert status == 200 and hub.files("org/m", body["commitOid"]) == ["a.txt"]

        assert _post(f"{ep}/api/models/org/m/tag/main", {"tag": "v1"})[0] == 200
        assert _post(f"{ep}/api/models/org/m/tag/main", {"tag": "v1"})[0] == 409
        status, _, headers = _post(f"{ep}/api/models/org/m/tag/nope", {"tag": "v2"})
        assert status == 404 and headers.get("X-Error-Code") == "RevisionNotFound"
        status, _, headers = _post(f"{ep}/api/models/org/absent/commit/main", _ndjson(HEADER), "application/x-ndjson")
        assert status == 404 and headers.get("X-Error-Code") == "RepoNotFound"
        with urllib.request.urlopen(f"{ep}/api/models/org/m/refs", timeout=30) as resp:
            refs = json.loads(resp.read())
        assert [t["name"] for t in refs["tags"]] == ["v1"]
        assert _post(f"{ep}/api/validate-yaml", {"content": "---\nlicense: [\n---\n"})[0] == 400
        assert _post(f"{ep}/api/validate-yaml", {"content": "---\nlicense: mit\n---\n# card"})[0] == 200
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{ep}/api/models/org/m/refs", timeout=5)


def test_the_card_renders_whatever_method_the_run_describes():
    """zoo/ knows no method: a method the core has never heard of is named, cited and shown by its own record."""
    from zoo.card import method_context
    from zoo.records import Metrics

    info = {"key": "newssl", "name": "NewSSL (one view)", "options": {"new_knob": 3},
            "citation": {"key": "new2026", "text": "A. Author. NewSSL.", "bibtex": "@article{new2026}", "arxiv": ""},
            "engine_citation": {"key": "cao2024efficiency", "text": "Cao & Wu", "bibtex": "@article{x}", "arxiv": ""}}
    ctx = method_context(Metrics(method="newssl", method_info=info), {"lr": 0.1, "new_knob": 3, "unrelated": 1})
    assert ctx["method_name"] == "NewSSL (one view)" and ctx["citation"]["key"] == "new2026"
    assert ctx["key_options"] == {"lr": 0.1, "new_knob": 3}
    old = method_context(Metrics.from_json({"method": "effssl"}), {"lr": 0.1})  # a run from before methods described themselves
    assert old["method_name"] == "effssl" and old["citation"] is None
