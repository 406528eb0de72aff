"""Exact cosine retrieval over a gallery of images, persisted with a record of what it describes.

``EmbeddingIndex`` holds L2-normalised (N, D) embeddings (float32, or float16 to
halve memory and disk) and answers top-k queries exactly: one matrix product
and ``np.argpartition`` (O(N) per query, not a full sort). On 2 CPU cores that is
a few milliseconds for 10k x 512 and tens of milliseconds for 100k x 512
(``benchmarks/retrieval.py``), which is what a demo or an edge device with a
personal photo library needs.

``build_gallery_index`` embeds a folder of images once and saves the embeddings
(``<stem>.npy``) beside a JSON record (``<stem>.json``, written last) of the model
(name, revision, sha256 of the model file, preprocessing) and of the image list
(relative path, size and mtime of every file). Loading compares the record
with the current model and folder and rebuilds only when either changed, so an
app restart with the same model and photos costs one ``np.load``.

Larger galleries (beyond ~1e6 images, or many queries per second): swap the
matrix product for FAISS, keeping this module's record and file list:
``faiss.IndexFlatIP(d)`` + ``index.add(embeddings)`` gives the same exact
results with faster BLAS kernels; ``faiss.IndexHNSWFlat(d, 32,
faiss.METRIC_INNER_PRODUCT)`` or ``IndexIVFPQ`` trade a little recall for
sub-millisecond search and a fraction of the memory
(``faiss.write_index`` replaces the .npy). Inner product on L2-normalised
vectors is cosine similarity, so scores stay comparable. See docs/walkthrough.md.

torch-free: numpy and Pillow only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from zoo.errors import EdgezooError
from zoo.fsutil import atomic_path, atomic_write_text
from zoo.images import ImageError, NoImagesError, SkipReport, paths_under
from zoo.knn import top_k

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
DTYPES = ("float32", "float16")
# Rows scored per block when a batch of queries meets a float16 gallery (upcast to float32 for BLAS).
_FP16_BLOCK = 16384
_FEW_QUERIES = 4

EmbedFn = Callable[[Sequence[Any]], np.ndarray]
ProgressFn = Callable[[int, int], None]


class IndexFileError(EdgezooError):
    """An index file that is missing, unreadable or does not match its record."""


class EmbeddingIndex:
    """Exact top-k cosine search over L2-normalised embeddings (rows)."""

    def __init__(self, embeddings: np.ndarray, *, dtype: str = "float32", normalize: bool = False) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2:
            raise ValueError(f"embeddings must be (N, D), got shape {emb.shape}")
        if normalize:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        self.embeddings = np.ascontiguousarray(emb.astype(dtype, copy=False))

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def dtype(self) -> str:
        return str(self.embeddings.dtype)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(Q, N) cosine similarities of L2-normalised (Q, D) queries to every row.

        A few queries (an app's case) use numpy's single-threaded SIMD einsum: memory
        bound like BLAS, but steady when the cores are busy (a threaded BLAS GEMV on a
        loaded 2-core machine was 5x slower at p50 and worse at p99). Batches use BLAS.
        """
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have {q.shape[1]} dimensions, the index {self.dim}")
        if q.shape[0] <= _FEW_QUERIES:
            return np.stack([np.einsum("ij,j->i", self.embeddings, row, dtype=np.float32) for row in q])
        if self.embeddings.dtype == np.float32:
            return q @ self.embeddings.T
        out = np.empty((q.shape[0], len(self)), np.float32)
        for start in range(0, len(self), _FP16_BLOCK):
            block = self.embeddings[start:start + _FP16_BLOCK].astype(np.float32)
            out[:, start:start + len(block)] = q @ block.T
        return out

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indices), each (Q, min(k, N)), best first; a single (D,) query gives (1, k)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if len(self) == 0:
            q = np.atleast_2d(queries).shape[0]
            return np.zeros((q, 0), np.float32), np.zeros((q, 0), np.int64)
        sim = self.scores(queries)
        idx = top_k(sim, min(k, len(self)))
        return np.take_along_axis(sim, idx, axis=1), idx.astype(np.int64)

    def save(self, path: str | Path) -> Path:
        """The embeddings as one .npy (atomically: a reader never sees half a file)."""
        path = Path(path)
        # A temp name unique per call: the index cache is shared, two demos may build the same gallery at once.
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, self.embeddings)
        return path

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = False) -> "EmbeddingIndex":
        try:
            emb = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise IndexFileError(f"{path}: unreadable index ({exc})") from exc
        if emb.dtype.name not in DTYPES:
            raise IndexFileError(f"{path}: embeddings are {emb.dtype}, expected one of {DTYPES}")
        index = cls.__new__(cls)
        index.embeddings = emb if mmap else np.ascontiguousarray(emb)
        if index.embeddings.ndim != 2:
            raise IndexFileError(f"{path}: embeddings must be (N, D), got shape {emb.shape}")
        return index


# --- a gallery of image files ---------------------------------------------------------------------------

@dataclass
class GalleryIndex:
    """A folder's images (the rows of `index`, in order) and the record they were built under."""

    root: Path
    ids: list[str]  # row i is root / ids[i]
    index: EmbeddingIndex
    record: dict[str, Any] = field(repr=False)
    stem: Path | None = None
    rebuilt: bool = False

    def __len__(self) -> int:
        return len(self.ids)

    def path(self, i: int) -> Path:
        return self.root / self.ids[i]

    def search(self, query: np.ndarray, k: int = 10) -> list[tuple[Path, float]]:
        """The k most similar gallery images to one L2-normalised embedding, best first."""
        scores, idx = self.index.search(np.asarray(query, np.float32).reshape(1, -1), k)
        return [(self.path(int(i)), float(s)) for s, i in zip(scores[0], idx[0])]


def file_list(root: Path, paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The image list as the record stores it: relative path, size and mtime of each file."""
    out = []
    for rel, p in zip(paths_under(root, paths), paths):
        st = p.stat()
        out.append({"path": rel, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def index_stem(index_dir: str | Path, root: str | Path, model_name: str) -> Path:
    """One index per (gallery folder, model name): switching models back and forth never rebuilds."""
    digest = hashlib.sha256(os.fsencode(Path(root).resolve())).hexdigest()[:12]  # also for non-UTF-8 names
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name).strip("_.")[-80:] or "model"
    return Path(index_dir) / f"{Path(root).resolve().name}-{digest}" / slug


def _wanted_record(root: Path, paths: Sequence[Path], model: dict[str, Any], dtype: str) -> dict[str, Any]:
    """As it will read back from JSON (tuples become lists), so that comparing with a saved one is exact."""
    return json.loads(json.dumps({"format": INDEX_FORMAT, "model": model, "root": str(root.resolve()),
                                  "dtype": dtype, "files": file_list(root, paths)}))


def _same_source(saved: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """Why a saved record no longer describes the wanted one (None: it still does)."""
    for key, why in (("format", "index format"), ("model", "model"), ("root", "gallery folder"),
                     ("dtype", "dtype"), ("files", "image list")):
        if saved.get(key) != wanted[key]:
            return f"the {why} changed"
    return None


def load_gallery_index(stem: str | Path) -> GalleryIndex:
    """A saved index and its record; IndexFileError when either is missing or they disagree."""
    rec_path, npy_path = index_files(stem)
    try:
        record = json.loads(rec_path.read_text())
        ids = list(record["ids"])
        root = Path(record["root"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexFileError(f"{rec_path}: missing or unreadable index record ({exc})") from exc
    index = EmbeddingIndex.load(npy_path)
    if len(index) != len(ids) or index.dim != record.get("dim"):
        raise IndexFileError(f"{npy_path}: {len(index)}x{index.dim} embeddings, the record lists "
                             f"{len(ids)}x{record.get('dim')}")
    return GalleryIndex(root, ids, index, record, Path(stem))


def index_files(stem: str | Path) -> tuple[Path, Path]:
    """(record .json, embeddings .npy) of an index stem (names may contain dots)."""
    stem = Path(stem)
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".npy")


def embed_paths(embed: EmbedFn, paths: Sequence[Path], *, batch_size: int = 32,
                progress: ProgressFn | None = None, skip: SkipReport | None = None,
                ) -> tuple[np.ndarray, list[int]]:
    """Embed image files in batches; an unreadable file is skipped (reported once), not fatal.

    Returns the (M, D) embeddings and the positions in `paths` they belong to.
    """
    skip = skip if skip is not None else SkipReport()
    chunks: list[np.ndarray] = []
    kept: list[int] = []
    for start in range(0, len(paths), batch_size):
        batch = list(range(start, min(start + batch_size, len(paths))))
        try:
            chunks.append(np.asarray(embed([paths[i] for i in batch]), np.float32))
            kept.extend(batch)
        except ImageError:  # find the bad file(s): embed this batch one image at a time
            for i in batch:
                try:
                    chunks.append(np.asarray(embed([paths[i]]), np.float32))
                    kept.append(i)
                except ImageError as exc:
                    skip.add(exc)
        if progress is not None:
            progress(batch[-1] + 1, len(paths))
    emb = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    return emb, kept


def build_gallery_index(root: str | Path, paths: Sequence[Path], embed: EmbedFn, model: dict[str, Any],
                        stem: str | Path, *, dtype: str = "float32", batch_size: int = 32,
                        progress: ProgressFn | None = None) -> GalleryIndex:
    """The gallery's index: loaded from `stem` when its record matches `model` and the files, else rebuilt.

    `model` identifies the embedder (e.g. name, revision, sha256 of the model file,
    preprocessing); any change to it, or any added, removed, resized or touched
    image, rebuilds. Unreadable images are left out (one warning) and stay out
    until the image list changes.
    """
    root, stem = Path(root), Path(stem)
    rec_path, npy_path = index_files(stem)
    wanted = _wanted_record(root, paths, model, dtype)
    if rec_path.is_file():
        try:
            saved = load_gallery_index(stem)
            why = _same_source(saved.record, wanted)
            if why is None:
                log.info("loaded the gallery index %s (%d images)", npy_path, len(saved))
                return saved
            log.info("rebuilding the gallery index %s: %s", stem, why)
        except IndexFileError as exc:
            log.warning("rebuilding the gallery index: %s", exc)
    skip = SkipReport()
    emb, kept = embed_paths(embed, paths, batch_size=batch_size, progress=progress, skip=skip)
    skip.warn(str(root))
    if not kept:
        raise NoImagesError(f"{root}: no readable image among {len(paths)} file(s) for the gallery")
    ids = [wanted["files"][i]["path"] for i in kept]
    index = EmbeddingIndex(emb, dtype=dtype)
    record = {**wanted, "ids": ids, "dim": index.dim, "skipped": skip.skipped}
    stem.parent.mkdir(parents=True, exist_ok=True)
    index.save(npy_path)
    atomic_write_text(rec_path, json.dumps(record) + "\n")  # written last: a record on disk means a complete index
    log.info("built the gallery index %s (%d images, %d skipped)", npy_path, len(ids), len(skip.skipped))
    return GalleryIndex(root, ids, index, record, stem, rebuilt=True)
