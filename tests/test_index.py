"""zoo.index: exact top-k equals a full sort, and a saved gallery index is rebuilt only when it must be."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.images import find_images
from zoo.index import (EmbeddingIndex, IndexFileError, build_gallery_index, index_files, index_stem,
                       load_gallery_index)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_top_k_equals_brute_force_full_sort(dtype):
    rng = np.random.default_rng(0)
    gallery, queries = _unit(rng, 5000, 64), _unit(rng, 7, 64)  # 7 queries: the batched (BLAS) path
    index = EmbeddingIndex(gallery, dtype=dtype)
    stored = gallery.astype(dtype).astype(np.float32)
    for k in (1, 10, 100):
        scores, idx = index.search(queries, k)
        full = queries @ stored.T
        want = np.argsort(-full, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(idx, want)
        np.testing.assert_allclose(scores, np.take_along_axis(full, want, axis=1), rtol=1e-5, atol=1e-6)
        assert np.all(np.diff(scores, axis=1) <= 0)
        for i in (0, 3):  # one query at a time: the few-queries (einsum) path gives the same answer
            one_scores, one_idx = index.search(queries[i], k)
            np.testing.assert_array_equal(one_idx[0], want[i])
            np.testing.assert_allclose(one_scores[0], scores[i], rtol=1e-5, atol=1e-6)


def test_search_edge_cases():
    rng = np.random.default_rng(1)
    gallery = _unit(rng, 5, 8)
    index = EmbeddingIndex(gallery)
    scores, idx = index.search(gallery[3], k=50)  # one (D,) query, k > N
    assert scores.shape == idx.shape == (1, 5)
    assert idx[0, 0] == 3 and scores[0, 0] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError):
        index.search(gallery[:, :4], k=1)
    with pytest.raises(ValueError):
        index.search(gallery[0], k=0)
    raw = rng.standard_normal((4, 8)).astype(np.float32) * 7
    assert np.allclose(np.linalg.norm(EmbeddingIndex(raw, normalize=True).embeddings, axis=1), 1.0)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    for dtype in ("float32", "float16"):
        index = EmbeddingIndex(_unit(rng, 100, 16), dtype=dtype)
        path = index.save(tmp_path / f"emb-{dtype}.npy")
        loaded = EmbeddingIndex.load(path)
        assert loaded.dtype == dtype and np.array_equal(loaded.embeddings, index.embeddings)
        assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(IndexFileError):
        EmbeddingIndex.load(tmp_path / "bad.npy")


class CountingEmbedder:
    """Deterministic stand-in for a model: mean colour + size features, counting every image it embeds."""

    def __init__(self) -> None:
        self.images = 0

    def __call__(self, items) -> np.ndarray:
        from zoo.images import as_rgb_image

        rows = []
        for item in items:
            arr = np.asarray(as_rgb_image(item), np.float32)
            rows.append(np.concatenate([arr.mean(axis=(0, 1)) + 1.0, [arr.shape[0], arr.shape[1]]]))
            self.images += 1
        x = np.asarray(rows, np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def gallery(tmp_path) -> Path:
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i in range(12):
        colour = rng.integers(0, 255, 3, dtype=np.uint8)
        img = np.broadcast_to(colour, (20 + i, 30, 3)).copy()
        Image.fromarray(img).save(root / ("sub" if i % 2 else ".") / f"img{i:02d}.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def _build(root: Path, embed: CountingEmbedder, model: dict, stem: Path):
    return build_gallery_index(root, find_images(root), embed, model, stem, batch_size=5)


def test_gallery_index_rebuilds_only_when_the_model_or_the_images_change(gallery, tmp_path):
    embed = CountingEmbedder()
    model = {"name": "runs/a", "sha256": "aa", "preprocess": {"img_size": 32, "mean": (0.5, 0.5, 0.5)}}
    stem = index_stem(tmp_path / "index", gallery, "runs/a")
    first = _build(gallery, embed, model, stem)
    # The bad file is skipped; the rest of its batch is embedded one image at a time.
    assert first.rebuilt and len(first) == 12 and embed.images == 12
    assert "broken.jpg" not in first.ids and len(first.record["skipped"]) == 1
    record, npy = index_files(stem)
    mtimes = (record.stat().st_mtime_ns, npy.stat().st_mtime_ns)

    # Same model, same files: loaded, nothing embedded, files untouched.
    again = _build(gallery, embed, model, stem)
    assert not again.rebuilt and embed.images == 12
    assert (record.stat().st_mtime_ns, npy.stat().st_mtime_ns) == mtimes
    np.testing.assert_array_equal(again.index.embeddings, first.index.embeddings)
    # A gallery image finds itself first.
    (path, score), *_ = again.search(first.index.embeddings[4], k=3)
    assert path == gallery / first.ids[4] and score == pytest.approx(1.0, abs=1e-5)

    # The model changed (another file hash): rebuilt.
    _build(gallery, embed, {**model, "sha256": "bb"}, stem)
    assert embed.images == 24
    # An image touched (mtime), added, removed: rebuilt each time.
    target = gallery / "sub" / "img01.png"
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    assert _build(gallery, embed, {**model, "sha256": "bb"}, stem).rebuilt
    Image.new("RGB", (8, 8), (1, 2, 3)).save(gallery / "new.png")
    assert len(_build(gallery, embed, {**model, "sha256": "bb"}, stem)) == 13
    (gallery / "new.png").unlink()
    assert len(_build(gallery, embed, {**model, "sha256": "bb"}, stem)) == 12
    # Another model name has its own file: switching back to the first model would not rebuild it.
    assert index_stem(tmp_path / "index", gallery, "org/other") != stem


def test_damaged_index_is_rebuilt_not_trusted(gallery, tmp_path):
    embed = CountingEmbedder()
    model = {"name": "m", "sha256": "x"}
    stem = index_stem(tmp_path / "index", gallery, "m")
    _build(gallery, embed, model, stem)
    record, npy = index_files(stem)
    np.save(npy, np.zeros((3, 5), np.float32))  # rows no longer match the record
    with pytest.raises(IndexFileError):
        load_gallery_index(stem)
    rebuilt = _build(gallery, embed, model, stem)
    assert rebuilt.rebuilt and len(rebuilt) == 12


def test_stem_names_with_dots(tmp_path):
    stem = index_stem(tmp_path, tmp_path, "org/model.v2")
    record, npy = index_files(stem)
    assert record.name.endswith("model.v2.json") and npy.name.endswith("model.v2.npy")
