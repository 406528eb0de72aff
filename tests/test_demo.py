"""The Gradio demo, headless: launched on 127.0.0.1 and queried through gradio_client.

A gallery image used as the query comes back first with similarity ~1, the
others scored as the published model scores them; a non-image, corrupt, empty
or huge upload gets a readable error and the server goes on serving; nothing
outside the gallery is served; the index is persisted.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
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

    bomb = tmp_path / "bomb.png"  # a 900-megapixel header over 100 bytes of data: Pillow refuses it on open
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
                     + _png_chunk(b"IDAT", zlib.compress(b"\0" * 100)) + _png_chunk(b"IEND", b""))
    assert "bomb.png is too large to decode safely" in _error_message(client, bomb)

    assert _search(client, good, k=1)[0][1] == good.relative_to(gallery).as_posix()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_uploads_over_the_size_cap_are_refused_before_any_work(served, client, tmp_path):
    """Over MAX_UPLOAD_MB the upload itself is refused (gradio's max_file_size): by the client from the page's
    config, and by the server for a raw HTTP upload, before the file reaches the handler."""
    import httpx
    from gradio_client import handle_file

    from app.demo.view import MAX_UPLOAD_MB

    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (MAX_UPLOAD_MB * 2**20 + 1))
    with pytest.raises(ValueError, match="maximum file size"):
        client.predict(handle_file(str(big)), 3, api_name="/search")
    with big.open("rb") as fh:
        answer = httpx.post(f"{served[1]}gradio_api/upload", files={"files": ("big.png", fh, "image/png")}, timeout=60)
    assert answer.status_code == 413 and "maximum allowed size" in answer.text


def test_search_answers_with_plot_data_and_links_results_in_place(served, client, gallery, gallery_size):
    """The PCA plot is gradio plot data (the gallery's points, the hits marked, the query on its top-1 match),
    and the result images are the gallery's own files, linked where they are, not copies in gradio's cache."""
    from gradio_client import handle_file

    query = sorted((gallery / "ants").iterdir())[5]
    results, table, _, plot = client.predict(handle_file(str(query)), 4, api_name="/search")
    names = [row[1] for row in table["data"]]
    assert plot["columns"] == ["x", "y", "kind", "image"] and plot["mark"] == "point"
    by_kind: dict[str, list] = {}
    for row in plot["data"]:
        by_kind.setdefault(row[2], []).append(row)
    assert [r[3] for r in by_kind["top-k"]] == names and len(by_kind["query"]) == 1
    assert len(by_kind["gallery"]) == gallery_size - 4  # a 40-image gallery: every image drawn, the hits marked
    assert by_kind["query"][0][:2] == pytest.approx(by_kind["top-k"][0][:2], abs=2e-4)  # its own best match
    for item, name in zip(results, names):
        path = Path(item["image"]["path"])
        assert path == gallery.resolve() / name and path.read_bytes() == (gallery / name).read_bytes()


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


def test_load_benchmark_smoke_times_every_search_and_stops_its_server(cifar_root, tmp_path):
    """benchmarks/demo_load.py --smoke: its own demo (a tiny ONNX model, 60 images), every search answered
    and timed, each client with images of its own, and no process of the server's left afterwards."""
    out = tmp_path / "load.json"
    env = {**os.environ, "EDGEZOO_DATA": str(cifar_root.parent)}
    proc = subprocess.run([sys.executable, "benchmarks/demo_load.py", "--smoke", "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    cfg, summary, requests = result["config"], result["summary"], result["requests"]
    sent = cfg["clients"] * cfg["per_client"]
    assert sent > 1 and summary["sent"] == summary["answered"] == len(requests) == sent
    assert all(r["ok"] and r["latency_s"] > 0 and r["results"] == cfg["k"] for r in requests), requests
    assert sorted(r["client"] for r in requests) == sorted(list(range(cfg["clients"])) * cfg["per_client"])
    assert len({r["query"] for r in requests}) == sent
    assert summary["max_s"] >= summary["p95_s"] >= summary["p50_s"] > 0 and cfg["gallery_images"] == 60
    assert "p95" in proc.stdout
    with pytest.raises(ProcessLookupError):  # the server's whole process group is gone
        os.killpg(result["server_pid"], 0)
