"""File names that are not valid UTF-8 (Latin-1 bytes on Linux, e.g. b'caf\\xe9.jpg').

Python hands such a name over as a surrogate-escaped str ('caf\\udce9.jpg') that
str.encode(), gradio and JSON encoders refuse. Pretraining's decode cache and the
demo's gallery must take the file like any other. Also zoo.fsutil's other job: atomic writes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from zoo.fsutil import atomic_path, atomic_write_text, is_utf8, printable_name
from zoo.images import as_rgb_image

NAME = os.fsdecode(b"caf\xe9.jpg")  # 'caf\udce9.jpg' on a UTF-8 file system
SHOWN = "caf\\xe9.jpg"


@pytest.fixture
def folder(tmp_path: Path, hymenoptera_root: Path) -> Path:
    """Three real photos under their own names and a fourth (a bee among ants) under the Latin-1 name."""
    root = tmp_path / "photos"
    root.mkdir()
    for src in sorted((hymenoptera_root / "val" / "ants").iterdir())[:3]:
        shutil.copy2(src, root / src.name)
    try:
        shutil.copy2(sorted((hymenoptera_root / "val" / "bees").iterdir())[0], root / NAME)
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    return root


def test_printable_name():
    assert not is_utf8(NAME) and is_utf8(SHOWN)
    assert printable_name(NAME) == SHOWN and printable_name("café/ok.jpg") == "café/ok.jpg"


def test_atomic_writes_replace_whole_files_and_leave_nothing_behind(tmp_path):
    target = tmp_path / NAME  # a name that is not UTF-8 is no different
    atomic_write_text(target, "first")
    with atomic_path(target, ".tmp.npz") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".tmp.npz") and not tmp.exists()
        tmp.write_text("second")
        assert target.read_text() == "first"  # a reader sees the old file until the block ends
    assert target.read_text() == "second"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "second" and sorted(tmp_path.iterdir()) == [target]


def test_pretrain_decode_cache_takes_the_file(folder):
    from pretrain.data import load_split
    from zoo.preprocess import Preprocess

    pre = Preprocess(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    first = load_split(str(folder), pre)  # decodes and writes the cache (keyed by the files' paths)
    assert len(first.images) == 4 and NAME in [p.name for p in first.files.paths]
    again = load_split(str(folder), pre)  # read back from the cache
    np.testing.assert_array_equal(again.images, first.images)
    assert [p.name for p in again.files.paths] == [p.name for p in first.files.paths]


def _embed(items) -> np.ndarray:
    """A deterministic stand-in for a model: colour mean and spread."""
    rows = []
    for item in items:
        arr = np.asarray(as_rgb_image(item), np.float32)
        rows.append(np.concatenate([arr.mean(axis=(0, 1)), arr.std(axis=(0, 1))]) + 1.0)
    x = np.asarray(rows, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_demo_gallery_lists_searches_and_serves_the_file(folder, tmp_path):
    pytest.importorskip("gradio")
    from gradio_client import Client, handle_file

    from app.demo.model import DemoModel, gallery_images
    from app.demo.view import DemoApp, start
    from hubutil import free_port

    model = DemoModel("fake", _embed, 6, {"name": "fake"}, "colour statistics")

    def app() -> DemoApp:
        return DemoApp(folder, gallery_images(folder), model, loader=lambda spec: model,
                       choices=[("fake", "fake")], index_dir=tmp_path / "index")

    demo = app()
    gallery = demo.served("fake").gallery
    assert NAME in gallery.ids and len(gallery) == 4  # indexed, under its real name (root / id is the file)
    assert not app().served("fake").gallery.rebuilt  # the saved record (JSON) compares equal when loaded back

    picks = {label: path for path, label in demo.picker_items()}
    assert SHOWN in picks and is_utf8(picks[SHOWN])
    assert Path(picks[SHOWN]).read_bytes() == (folder / NAME).read_bytes()  # what gradio gets shows the photo

    blocks, url = start(demo, "127.0.0.1", free_port())  # builds the picker gallery: gradio copies every pick
    try:
        query = tmp_path / "query.jpg"  # the same photo, uploaded under a plain name
        shutil.copy2(folder / NAME, query)
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        results, table, info, _ = client.predict(handle_file(str(query)), 2, api_name="/search")
    finally:
        blocks.close()
    rank, name, score = table["data"][0]
    assert name == SHOWN and score >= 0.999 and SHOWN in info
    assert results[0]["caption"].endswith(SHOWN) and results[0]["image"]["url"]
