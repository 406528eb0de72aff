"""The Gradio demo, headless: launched on 127.0.0.1 and queried through gradio_client.

A gallery image used as the query comes back first with similarity ~1, the
others scored as the published model scores them; a non-image, corrupt, empty
or huge upload gets a readable error and the server goes on serving; nothing
outside the gallery is served; the index is persisted.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(published) -> Path:
    return Path(published["run_dir"])


@pytest.fixture(scope="module")
def gallery_size(gallery) -> int:
    return sum(1 for p in gallery.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served[1], verbose=False, download_files=False, analytics_enabled=False)


def _search(client, path: Path, k: int = 5) -> list[list]:
    from gradio_client import handle_file

    _, table, info, _ = client.predict(handle_file(str(path)), k, api_name="/search")
    assert "L2 norm" in info
    return table["data"]


def test_gallery_image_comes_back_first_scored_by_the_published_model(served, client, gallery, gallery_size,
                                                                      published):
    """A gallery image finds itself at similarity 1 with any network; the other scores are the published weights'
    cosine similarities, recomputed here with the torch backbone (a random or wrong network gives others)."""
    from gradio_client import handle_file

    from zoo.pretrained import from_pretrained

    app, _ = served
    assert len(app.gallery_paths) == gallery_size
    torch_model = from_pretrained(published["repo_id"], published["version"], backend="torch",
                                  hub_dir=published["hub_dir"])
    for path in (sorted((gallery / "ants").iterdir())[3], sorted((gallery / "bees").iterdir())[7]):
        rows = _search(client, path, k=5)
        assert len(rows) == 5
        rank, name, score = rows[0]
        assert name == path.relative_to(gallery).as_posix() and score >= 0.999
        assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)
        emb = torch_model.embed([path, *(gallery / r[1] for r in rows)])
        np.testing.assert_allclose([r[2] for r in rows], emb[1:] @ emb[0], atol=2e-4)  # shown to 4 decimals
        served_emb = client.predict(handle_file(str(path)), api_name="/embed")["embedding"]
        np.testing.assert_allclose(served_emb, emb[0], atol=1e-3)


def _error_message(client, path: Path) -> str:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as err:
        client.predict(handle_file(str(path)), 3, api_name="/search")
    return str(err.value)


def test_bad_uploads_get_readable_errors_and_the_server_goes_on(client, gallery, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n" * 10)
    assert "notes.txt is not an image" in _error_message(client, text)

    good = sorted((gallery / "ants").iterdir())[0]
    corrupt = tmp_path / "cut.jpg"
    corrupt.write_bytes(good.read_bytes()[:good.stat().st_size // 2])  # a valid header, half the data
    assert "cut.jpg is corrupt or truncated" in _error_message(client, corrupt)

    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert "empty" in _error_message(client, empty)

    huge = tmp_path / "huge.png"
    Image.new("L", (8000, 6000)).save(huge, optimize=False)  # 48 megapixels, a small file
    assert "8000x6000 pixels" in _error_message(client, huge)

    assert _search(client, good, k=1)[0][1] == good.relative_to(gallery).as_posix()


def test_embed_endpoint(client, gallery):
    from gradio_client import handle_file

    out = client.predict(handle_file(str(sorted((gallery / "bees").iterdir())[0])), api_name="/embed")
    assert out["dim"] == len(out["embedding"]) and out["norm"] == pytest.approx(1.0, abs=1e-4)


def test_model_picker_offers_local_runs_and_the_zoo_and_switches(served, run, gallery, gallery_size, published):
    from gradio_client import Client

    app, url = served
    specs = [spec for _, spec in app.choices]
    assert specs[0] == f"{published['repo_id']}@v1" and str(run) in specs
    client = Client(url, verbose=False, download_files=False, analytics_enabled=False)  # its own session
    status = client.predict(str(run), api_name="/switch_model")  # the session's state changes too (not returned)
    assert str(run) in status and "model.onnx" in status and f"{gallery_size} images" in status
    # the labelled gallery is scored: this model, its architecture at random init, chance
    assert "kNN top-1" in status and "random-init network" in status and "chance 48.7%" in status
    query = sorted((gallery / "bees").iterdir())[2]
    rows = _search(client, query, k=2)
    assert rows[0][1] == query.relative_to(gallery).as_posix() and rows[0][2] >= 0.999
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError):  # only the listed models can be loaded
        client.predict("/etc", api_name="/switch_model")


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_only_the_gallery_is_served(served, gallery):
    _, url = served
    inside = sorted((gallery / "ants").iterdir())[0]
    assert _status(f"{url}gradio_api/file={inside}") == 200
    for outside in (ROOT / "pyproject.toml", Path("/etc/passwd"), gallery.parent / "secret.txt"):
        if outside.name == "secret.txt":
            outside.write_text("secret")
        assert _status(f"{url}gradio_api/file={outside}") in (403, 404), outside


def test_index_is_persisted_and_reused(served, published, gallery, index_dir):
    from app.demo import create_app

    app, _ = served
    assert app.default == f"{published['repo_id']}@v1"
    first = app.served(app.default).gallery
    assert first.stem is not None and first.stem.with_name(first.stem.name + ".npy").is_file()
    again = create_app(app.default, gallery, index_dir=index_dir, runs_dir=None, hub_dir=published["hub_dir"])
    again = again.served(app.default).gallery
    assert not again.rebuilt
    np.testing.assert_array_equal(again.index.embeddings, first.index.embeddings)


def test_served_paths_allow_symlinked_files_not_their_folders(tmp_path, gallery):
    from app.demo.view import served_paths

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "linked.jpg"
    shutil.copy2(sorted((gallery / "ants").iterdir())[0], target)
    root = tmp_path / "g"
    root.mkdir()
    (root / "linked.jpg").symlink_to(target)
    assert served_paths(root, [root / "linked.jpg"]) == [str(root.resolve()), str(target.resolve())]


def test_gallery_reached_through_a_symlinked_folder(served, published, gallery, tmp_path):
    """`make demo` on a machine where ../shared is a symlink: the photos keep names relative to the gallery."""
    from app.demo import create_app

    app, _ = served
    link = tmp_path / "linked-gallery"
    link.symlink_to(gallery, target_is_directory=True)
    linked = create_app(app.default, link, index_dir=tmp_path / "idx", runs_dir=None, hub_dir=published["hub_dir"])
    names = [name for _, name in linked.picker_items()]
    assert names and all(name.startswith(("ants/", "bees/")) for name in names)
    query = sorted((gallery / "bees").iterdir())[3]
    _, table, _, _ = linked.search({"path": str(query), "orig_name": query.name}, 3, linked.default)
    assert table[0][1] == f"bees/{query.name}" and table[0][2] >= 0.999, table


def test_serving_needs_no_torch(run, gallery, tmp_path):
    """The ONNX path of the demo (model, index, query) with torch made unimportable."""
    code = f"""
import sys
sys.modules["torch"] = None
from pathlib import Path
from app.demo import create_app
app = create_app({str(run)!r}, {str(gallery)!r}, index_dir={str(tmp_path / 'idx')!r}, runs_dir=None,
                 hub_dir={str(tmp_path / 'hub')!r})
query = sorted(Path({str(gallery)!r}).rglob("*.jpg"))[5]
results, table, info, plot = app.search({{"path": str(query), "orig_name": query.name}}, 3, app.default)
assert table[0][1] == query.relative_to({str(gallery)!r}).as_posix() and table[0][2] >= 0.999, table
assert "torch" not in sys.modules or sys.modules["torch"] is None
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
