"""`edgezoo embed MODEL FOLDER --out FILE`: one L2-normalised embedding row per image of a folder.

The first thing asked of an embedding model is the embeddings of one's own images, for deduplication,
curation or search in other tools. The pieces already exist and are reused, not copied: MODEL is whatever
`edgezoo demo --model` takes (`app.demo.model.load_model`: a RUN_DIR, an export folder, an .onnx/.ort file
or a published ``org/name[@vN]``), FOLDER is listed as every command lists one (`zoo.images.find_images`:
recursive, hidden files and folders left out) and embedded by `zoo.index.embed_paths`, which skips an
unreadable file instead of failing. With the onnx backend nothing here imports torch (an edge install).

Outputs, each written atomically (`zoo.fsutil.atomic_path`: an interrupt leaves no half file):
  FILE.npz      ``embeddings`` (N, D) float32, L2-normalised, and ``paths`` (N,) str, relative to FOLDER;
                names that are not UTF-8 are kept exactly (``os.fsencode(path)`` gives the file's bytes back)
  FILE.csv      ``path`` then ``emb_0 .. emb_{D-1}``, one row per image
  FILE.parquet  the same columns (needs pyarrow)
  --skipped     csv ``path,error`` of the unreadable files
  --pairs       csv ``path_a,path_b,cosine`` of the pairs at or above --near-duplicates
The text formats show undecodable file-name bytes as ``\\xNN`` (`zoo.fsutil.printable_name`).
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from app.demo.model import VARIANTS, load_model
from zoo.errors import ConfigError, MissingDependencyError
from zoo.fsutil import atomic_path, printable_name
from zoo.images import IMAGE_EXTENSIONS, NoImagesError, SkipReport, find_images, paths_under
from zoo.index import EmbedFn, ProgressFn, embed_paths
from zoo.layout import RunDir
from zoo.pretrained import BACKENDS, resolve_backend

log = logging.getLogger(__name__)

FORMATS = (".npz", ".csv", ".parquet")
PAIRS_SUFFIX = ".pairs.csv"
# Rows and columns of one tile of the near-duplicate search: 16 MiB of float32 scores whatever the folder's size.
PAIR_BLOCK = 2048


@dataclass
class Embedded:
    """A folder's embeddings: row i is the image ``paths[i]`` (relative to ``root``)."""

    root: Path
    paths: list[str]
    embeddings: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why) of each unreadable file


@dataclass
class EmbedResult:
    """What `edgezoo embed` wrote, for its summary line and for callers."""

    out: Path
    rows: int
    dim: int
    skipped: int
    seconds: float
    pairs: int | None = None
    pairs_path: Path | None = None


# --- embedding ------------------------------------------------------------------------------------------

def folder_images(folder: str | Path) -> tuple[Path, list[Path]]:
    """(the root the paths are relative to, the image files under `folder`); none at all is an error, found
    before a model is loaded."""
    folder = Path(folder)
    files = find_images(folder)
    if not files:
        raise NoImagesError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}; searched recursively)")
    return (folder if folder.is_dir() else folder.parent), files


def embed_folder(embed: EmbedFn, root: Path, files: Sequence[Path], *, batch_size: int = 32,
                 progress: ProgressFn | None = None) -> Embedded:
    """`files` (under `root`) embedded; unreadable ones are left out and listed, not fatal."""
    names = paths_under(root, files)
    skip = SkipReport()
    emb, kept = embed_paths(embed, files, batch_size=batch_size, progress=progress, skip=skip)
    skip.warn(str(root))
    if not kept:
        raise NoImagesError(f"{root}: none of its {len(files)} image file(s) is a readable image")
    kept_set = set(kept)
    lost = [name for i, name in enumerate(names) if i not in kept_set]  # embed_paths records them in this order
    return Embedded(root, [names[i] for i in kept], np.asarray(emb, np.float32), list(zip(lost, skip.skipped)))


class Progress:
    """A tqdm bar on a terminal; elsewhere, or without tqdm (an edge install), a log line every tenth."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self._started = False
        self._tenth = 0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if not self._started:
            self._started = True
            self.bar = _tqdm_bar(total)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            return
        tenth = done * 10 // max(total, 1)
        if tenth > self._tenth:
            self._tenth = tenth
            log.info("embedded %d/%d images", done, total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _tqdm_bar(total: int) -> Any:
    """A tqdm bar on stderr when it is a terminal and tqdm is installed, else None."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:
        return None
    return tqdm(total=total, unit="img", desc="embedding", file=sys.stderr)


def choose_backend(model: str, backend: str, variant: str) -> str:
    """``auto`` as `zoo.from_pretrained` decides it (torch when installed, for fp32; else onnx), except that a
    local export folder or model file has only ONNX models."""
    if backend != "auto":
        return backend
    chosen = resolve_backend("auto", variant)
    path = Path(model).expanduser()
    if chosen == "torch" and path.exists() and not RunDir(path).backbone_config.is_file():
        return "onnx"
    return chosen


# --- near duplicates ------------------------------------------------------------------------------------

def near_duplicates(embeddings: np.ndarray, threshold: float, block: int = PAIR_BLOCK,
                    ) -> Iterator[tuple[int, int, float]]:
    """Pairs i < j whose cosine is >= threshold, tile by tile (block x block scores at a time, never N x N);
    in (i, j) order within a tile."""
    emb = np.asarray(embeddings, np.float32)
    n = len(emb)
    for r0 in range(0, n, block):
        rows = emb[r0:r0 + block]
        for c0 in range(r0, n, block):
            sim = rows @ emb[c0:c0 + block].T
            i, j = np.nonzero(sim >= threshold)  # row-major: already sorted by (i, j)
            upper = j + c0 > i + r0
            for a, b in zip(i[upper].tolist(), j[upper].tolist()):
                yield a + r0, b + c0, float(sim[a, b])


# --- writing --------------------------------------------------------------------------------------------

def output_format(out: Path) -> str:
    """`out`'s format from its extension, refused before any work if unknown or if it needs a missing pyarrow."""
    fmt = out.suffix.lower()
    if fmt not in FORMATS:
        raise ConfigError(f"--out {out}: unknown format {out.suffix or '(no extension)'!r}; "
                          f"one of {', '.join(FORMATS)}")
    if fmt == ".parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ModuleNotFoundError as exc:
            raise MissingDependencyError(f"--out {out}: writing parquet needs pyarrow, which is not installed: "
                                         "pip install pyarrow, or write .npz or .csv") from exc
    return fmt


@contextmanager
def _csv_writer(path: Path) -> Iterator[Any]:
    """A csv writer on a temp file that becomes `path` when the block ends (and is removed if it raises)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        yield csv.writer(fh)


def write_embeddings(out: str | Path, paths: Sequence[str], embeddings: np.ndarray) -> Path:
    """The embeddings and their paths as .npz, .csv or .parquet (by `out`'s extension), atomically."""
    out = Path(out)
    fmt = output_format(out)
    emb = np.asarray(embeddings, np.float32)
    columns = ["path", *(f"emb_{d}" for d in range(emb.shape[1]))]
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == ".npz":
        with atomic_path(out, ".tmp.npz") as tmp:
            np.savez(tmp, embeddings=emb, paths=np.asarray(list(paths), dtype=str))
    elif fmt == ".csv":
        with _csv_writer(out) as writer:
            writer.writerow(columns)
            for name, row in zip(paths, emb.tolist()):
                writer.writerow([printable_name(name), *(f"{v:.9g}" for v in row)])  # 9 digits: float32 exact
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"path": [printable_name(p) for p in paths],
                          **{name: emb[:, d] for d, name in enumerate(columns[1:])}})
        with atomic_path(out) as tmp:
            pq.write_table(table, str(tmp))
    return out


def write_pairs(path: str | Path, paths: Sequence[str], pairs: Iterator[tuple[int, int, float]]) -> int:
    """``path_a,path_b,cosine`` rows as the pairs come (streamed); returns how many."""
    shown = [printable_name(p) for p in paths]
    count = 0
    with _csv_writer(Path(path)) as writer:
        writer.writerow(["path_a", "path_b", "cosine"])
        for i, j, cosine in pairs:
            writer.writerow([shown[i], shown[j], f"{cosine:.6f}"])
            count += 1
    return count


def write_skipped(path: str | Path, skipped: Sequence[tuple[str, str]]) -> Path:
    """``path,error`` of each unreadable file (a header alone when there is none, so scripts can rely on it)."""
    with _csv_writer(Path(path)) as writer:
        writer.writerow(["path", "error"])
        writer.writerows([printable_name(p), error] for p, error in skipped)
    return Path(path)


# --- the command ----------------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _cosine(text: str) -> float:
    value = float(text)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a cosine is between -1 and 1, got {value}")
    return value


def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    from zoo.cli import add_hub_arguments

    parser.add_argument("model", metavar="MODEL",
                        help="a published org/name[@vN], a RUN_DIR (its validated export, or its backbone with "
                             "--backend torch), an export folder or an .onnx/.ort file")
    parser.add_argument("folder", metavar="FOLDER", type=Path,
                        help="images to embed (jpg, jpeg, png, webp, bmp; searched recursively, hidden files "
                             "left out)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="FILE.npz (arrays embeddings N x D float32 L2-normalised, and paths), FILE.csv "
                             "(path + one column per dimension) or FILE.parquet (the same; needs pyarrow)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto (default, as zoo.from_pretrained: torch when installed and --variant fp32, "
                             "else onnx), torch or onnx (onnxruntime alone)")
    parser.add_argument("--variant", choices=VARIANTS, default="fp32", help="ONNX model: fp32 (default) or int8")
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="images per batch (default: 32)")
    add_hub_arguments(parser, "hub of a published MODEL (default: as `edgezoo list`)")
    parser.add_argument("--skipped", type=Path, default=None, metavar="FILE",
                        help="write the unreadable files (csv path,error) here; they are counted either way")
    parser.add_argument("--near-duplicates", type=_cosine, default=None, metavar="THRESHOLD",
                        help="also write the pairs of images whose cosine is at least THRESHOLD (e.g. 0.95), "
                             f"csv path_a,path_b,cosine, to --pairs (default: --out's name + {PAIRS_SUFFIX})")
    parser.add_argument("--pairs", type=Path, default=None, metavar="FILE",
                        help="where --near-duplicates writes its pairs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")


def run_embed(args: argparse.Namespace) -> EmbedResult:
    out = Path(args.out)
    output_format(out)  # a bad --out is refused before the model loads
    if args.pairs is not None and args.near_duplicates is None:
        raise ConfigError("--pairs FILE goes with --near-duplicates THRESHOLD")
    pairs_path = args.pairs or (out.with_name(out.stem + PAIRS_SUFFIX) if args.near_duplicates is not None
                                else None)
    root, files = folder_images(args.folder)  # an empty folder is refused before the model loads, too
    backend = choose_backend(args.model, args.backend, args.variant)
    model = load_model(args.model, backend=backend, variant=args.variant, hub=args.hub, hub_dir=args.hub_dir)
    start = time.perf_counter()
    progress = Progress(enabled=not args.no_progress)
    try:
        embedded = embed_folder(lambda items: model.embed(items, batch_size=args.batch_size), root, files,
                                batch_size=args.batch_size, progress=progress)
    finally:
        progress.close()
    seconds = time.perf_counter() - start
    write_embeddings(out, embedded.paths, embedded.embeddings)
    if args.skipped is not None:
        write_skipped(args.skipped, embedded.skipped)
    result = EmbedResult(out, len(embedded.paths), int(embedded.embeddings.shape[1]), len(embedded.skipped), seconds)
    if pairs_path is not None:
        result.pairs = write_pairs(pairs_path, embedded.paths,
                                   near_duplicates(embedded.embeddings, args.near_duplicates))
        result.pairs_path = pairs_path
    log.info("embedded %d images of %s (%d skipped) with %s (%s) in %.1f s, %.1f images/s -> %s%s", result.rows,
             args.folder, result.skipped, model.name, model.description, seconds, result.rows / max(seconds, 1e-9),
             out, f"; {result.pairs} pair(s) with cosine >= {args.near_duplicates} -> {pairs_path}"
             if pairs_path is not None else "")
    return result
