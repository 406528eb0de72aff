"""`edgezoo embed MODEL FOLDER --out FILE`: a folder's embeddings as .npz/.csv, skipped files, near duplicates.

The model is the hub tests' tiny exported run (`hubutil.tiny_exported_run`, built once per session and shared
with them) and its published copy in a local hub; the images are the 398 real hymenoptera photos.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from app.embed import choose_backend, near_duplicates
from conftest import edge_cli
from hubutil import ROOT, tiny_exported_run
from zoo.edge import EdgeEmbedder
from zoo.images import find_images

ODD_NAME = os.fsdecode(b"caf\xe9.jpg")  # not UTF-8: 'caf\udce9.jpg'


@pytest.fixture(scope="module")
def run(tmp_path_factory, cifar_root) -> Path:
    return tiny_exported_run(tmp_path_factory.getbasetemp() / "hub-tiny-run", cifar_root)


@pytest.fixture(scope="module")
def repo(run, tmp_path_factory) -> tuple[str, Path]:
    """The tiny run published as edgezoo/embed-tiny v1 to a local hub: (spec, hub_dir)."""
    from zoo.publish import publish

    hub_dir = tmp_path_factory.mktemp("embed-hub")
    result = publish(run, "edgezoo/embed-tiny", hub_dir=hub_dir)
    return f"{result.repo_id}@{result.version}", hub_dir


@pytest.fixture(scope="module")
def hymenoptera_and_a_corrupt_file(tmp_path_factory, hymenoptera_root) -> Path:
    """The 398 photos (linked, in their train/val class folders) and one file that is no image."""
    root = tmp_path_factory.mktemp("embed-photos")
    shutil.copytree(hymenoptera_root, root / "hymenoptera", copy_function=os.symlink)
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


@pytest.fixture(scope="module")
def few(tmp_path_factory, hymenoptera_root) -> Path:
    """Six photos, one of them again as copy.jpg, and one under a name that is not UTF-8 (where allowed)."""
    root = tmp_path_factory.mktemp("embed-few")
    photos = find_images(hymenoptera_root / "val")
    for src in photos[:3] + photos[-3:]:
        shutil.copy2(src, root / src.name)
    shutil.copy2(photos[0], root / "copy.jpg")
    try:
        shutil.copy2(photos[1], root / ODD_NAME)
    except (OSError, UnicodeEncodeError):
        pass  # a file system that refuses the name: the rest still runs
    return root


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_hymenoptera_with_a_corrupt_file(run, hymenoptera_and_a_corrupt_file, tmp_path, caplog):
    """The issue's acceptance: exit 0, 398 rows, 1 skipped (and listed), and the npz reloads."""
    folder, out = hymenoptera_and_a_corrupt_file, tmp_path / "out" / "emb.npz"
    caplog.set_level(logging.INFO)
    assert main(["embed", str(run), str(folder), "--out", str(out), "--backend", "onnx",
                 "--skipped", str(tmp_path / "skipped.csv"), "--no-progress"]) == 0
    with np.load(out, allow_pickle=False) as saved:
        emb, paths = saved["embeddings"], saved["paths"].tolist()
    assert emb.dtype == np.float32 and emb.shape[0] == 398 and len(paths) == 398 and emb.shape[1] > 1
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    photos = find_images(folder / "hymenoptera")
    assert paths == [p.relative_to(folder).as_posix() for p in photos]  # every photo, in order, relative
    assert _rows(tmp_path / "skipped.csv")[0] == ["path", "error"]
    assert [r[0] for r in _rows(tmp_path / "skipped.csv")[1:]] == ["broken.jpg"]
    assert "embedded 398 images" in caplog.text and "(1 skipped)" in caplog.text
    # Row i is the embedding of paths[i]: the same as the exported model gives those files directly.
    picks = [0, 200, 397]
    direct = EdgeEmbedder(run / "export" / "model.onnx").embed([folder / paths[i] for i in picks])
    np.testing.assert_allclose(emb[picks], direct, atol=1e-5)
    assert sorted(p.name for p in out.parent.iterdir()) == ["emb.npz"]  # no temp file left beside it


def test_published_int8_to_csv_keeps_odd_names(repo, few, tmp_path):
    """A published org/name@vN with the int8 ONNX model; csv: path + one column per dimension."""
    import zoo

    spec, hub_dir = repo
    out = tmp_path / "emb.csv"
    assert main(["embed", spec, str(few), "--out", str(out), "--hub-dir", str(hub_dir), "--backend", "onnx",
                 "--variant", "int8", "--batch-size", "3", "--no-progress"]) == 0
    header, *rows = _rows(out)
    files = find_images(few)
    model = zoo.from_pretrained("edgezoo/embed-tiny", "v1", backend="onnx", variant="int8", hub_dir=hub_dir)
    assert header == ["path", *(f"emb_{d}" for d in range(model.dim))]
    assert len(rows) == len(files) and all(len(r) == 1 + model.dim for r in rows)
    emb = np.asarray([[float(v) for v in r[1:]] for r in rows], np.float32)
    np.testing.assert_allclose(emb, model.embed(files), atol=1e-6)
    names = [r[0] for r in rows]
    if (few / ODD_NAME).exists():  # shown as \xNN in a text format, kept exactly in an npz
        assert "caf\\xe9.jpg" in names
        npz = tmp_path / "emb.npz"
        assert main(["embed", spec, str(few), "--out", str(npz), "--hub-dir", str(hub_dir), "--backend", "onnx",
                     "--no-progress"]) == 0
        assert ODD_NAME in np.load(npz)["paths"].tolist()


def test_near_duplicates_find_a_copied_photo(run, few, tmp_path):
    out = tmp_path / "emb.npz"
    assert main(["embed", str(run / "export"), str(few), "--out", str(out), "--near-duplicates", "0.9999",
                 "--no-progress"]) == 0
    header, *pairs = _rows(tmp_path / "emb.pairs.csv")  # beside --out by default
    assert header == ["path_a", "path_b", "cosine"]
    names = [p.name for p in find_images(few)]
    copied = next(n for n in names if n != "copy.jpg" and (few / n).read_bytes() == (few / "copy.jpg").read_bytes())
    best = max(pairs, key=lambda r: float(r[2]))
    assert {best[0], best[1]} == {copied, "copy.jpg"} and float(best[2]) >= 0.9999
    assert all(a != b for a, b, _ in pairs)


def test_near_duplicates_in_tiles_equal_the_full_matrix():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(23, 8)).astype(np.float32)
    emb[17] = emb[3] + 0.01  # planted near duplicates
    emb[9] = emb[20]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sim = emb @ emb.T
    expected = {(i, j) for i in range(23) for j in range(i + 1, 23) if sim[i, j] >= 0.5}
    assert {(3, 17), (9, 20)} <= expected
    for block in (4, 7, 23, 100):
        found = list(near_duplicates(emb, 0.5, block=block))
        assert {(i, j) for i, j, _ in found} == expected and len(found) == len(expected), block
        assert all(abs(c - sim[i, j]) < 1e-5 for i, j, c in found)


def test_run_dir_with_torch_and_the_default_backend(run, few, tmp_path):
    pytest.importorskip("torch")
    assert choose_backend(str(run), "auto", "fp32") == "torch"  # as from_pretrained: torch when installed
    assert choose_backend(str(run), "auto", "int8") == "onnx"
    assert choose_backend(str(run / "export"), "auto", "fp32") == "onnx"  # an export folder has only ONNX
    assert main(["embed", str(run), str(few), "--out", str(tmp_path / "torch.npz"), "--no-progress"]) == 0
    assert main(["embed", str(run), str(few), "--out", str(tmp_path / "onnx.npz"), "--backend", "onnx",
                 "--no-progress"]) == 0
    torch_emb, onnx_emb = (np.load(tmp_path / f"{b}.npz")["embeddings"] for b in ("torch", "onnx"))
    np.testing.assert_allclose(torch_emb, onnx_emb, atol=1e-4)


def test_edge_install_embeds_with_onnxruntime_alone(run, few, tmp_path):
    """No torch, timm, gradio or tqdm: the onnx backend embeds, and progress goes to the log."""
    out = tmp_path / "emb.npz"
    proc = subprocess.run([sys.executable, "-c", edge_cli("tqdm"), "embed", str(run), str(few), "--out", str(out),
                           "--backend", "onnx", "--batch-size", "2"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert f"embedded {len(find_images(few))}/{len(find_images(few))} images" in proc.stderr
    assert np.load(out)["embeddings"].shape[0] == len(find_images(few))


@pytest.mark.parametrize(("case", "message"), [
    ("extension", "unknown format '.txt'; one of .npz, .csv, .parquet"),
    ("empty", "no image files"),
    ("unreadable", "none of its 1 image file(s) is a readable image"),
    ("parquet", "writing parquet needs pyarrow, which is not installed"),
    ("pairs", "--pairs FILE goes with --near-duplicates"),
])
def test_expected_failures_are_one_line(run, hymenoptera_root, tmp_path, caplog, monkeypatch, case, message):
    folder = tmp_path / "images"
    folder.mkdir()
    if case == "unreadable":
        (folder / "broken.png").write_bytes(b"no png")
    elif case != "empty":
        shutil.copy2(find_images(hymenoptera_root / "val")[0], folder / "a.jpg")
    out = tmp_path / {"extension": "emb.txt", "parquet": "emb.parquet"}.get(case, "emb.npz")
    extra = ["--pairs", str(tmp_path / "p.csv")] if case == "pairs" else []
    if case == "parquet":
        monkeypatch.setitem(sys.modules, "pyarrow", None)  # as where pyarrow is not installed
        monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["embed", str(run), str(folder), "--out", str(out), "--backend", "onnx", *extra]) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and message in errors[0].getMessage() and errors[0].exc_info is None
    assert "\n" not in errors[0].getMessage() and not out.exists()


def test_parquet_has_the_csv_columns(run, few, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")

    out = tmp_path / "emb.parquet"
    assert main(["embed", str(run), str(few), "--out", str(out), "--backend", "onnx", "--no-progress"]) == 0
    table = pq.read_table(out)
    dim = EdgeEmbedder(run / "export" / "model.onnx").dim
    assert table.column_names == ["path", *(f"emb_{d}" for d in range(dim))]
    assert table.num_rows == len(find_images(few))
