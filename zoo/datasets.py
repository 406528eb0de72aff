"""Image sources: ImageFolder trees, flat or nested folders, and the shared sets by name.

Torch-free, so pretraining, export (calibration and validation images) and the
demo (galleries) resolve a source the same way from what a RUN_DIR records.

A source spec is a path or a name of NAMED_SETS (``cifar10``, ``flowers``,
``hymenoptera``: unpacked once from ../shared/datasets into ./data or EDGEZOO_DATA),
optionally with a split: ``cifar10:test``, ``flowers:val``, ``PATH:val``. A folder
with a ``train/`` subfolder is a dataset root: its ``train`` split trains and
``test`` (or ``val``) evaluates. A folder whose images all sit in first-level
subfolders is labelled by subfolder; anything else is unlabelled.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from zoo.fsutil import atomic_path
from zoo.images import NoImagesError, SkipReport, decode_many, find_images, interpolation_from_name

log = logging.getLogger(__name__)

EVAL_SPLITS = ("test", "val", "valid", "validation")
# The sets ../shared/datasets/prepare.py unpacks, usable by name (``--data flowers``).
NAMED_SETS = ("cifar10", "flowers", "hymenoptera")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class ImageList:
    """The files of one source split, with folder labels when it has them."""

    spec: str
    root: Path
    paths: list[Path]
    labels: list[int] | None = None
    classes: list[str] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, keep: Sequence[int]) -> "ImageList":
        labels = [self.labels[i] for i in keep] if self.labels is not None else None
        return ImageList(self.spec, self.root, [self.paths[i] for i in keep], labels, self.classes)


def data_dirs() -> list[Path]:
    """Where local dataset copies are looked for, in order."""
    dirs = []
    if os.environ.get("EDGEZOO_DATA"):
        dirs.append(Path(os.environ["EDGEZOO_DATA"]))
    dirs.append(Path.cwd() / "data")
    return dirs


def shared_datasets() -> Path | None:
    """The sibling ../shared/datasets (with prepare.py) of the working tree or of this package."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        cand = base.parent / "shared" / "datasets"
        if (cand / "prepare.py").is_file():
            return cand
    return None


def is_named(spec: str) -> bool:
    """A bare name of NAMED_SETS (``flowers``, ``cifar10:test``) that is not also a folder here."""
    base = split_spec(spec)[0]
    return base.lower() in NAMED_SETS and (base.lower() == "cifar10" or not Path(base).exists())


def _complete(root: Path, name: str) -> bool:
    """prepare.py's marks: one per split for CIFAR-10, one for the whole tree for the photo sets."""
    marks = (root / "train" / ".complete", root / "test" / ".complete") if name == "cifar10" else (root / ".complete",)
    return all(m.exists() for m in marks)


def find_named(name: str, download: bool = True) -> Path:
    """The ImageFolder root (train/ and test/ or val/) of a named set, provisioning it if needed.

    Looks in EDGEZOO_DATA and ./data; else unpacks it from ../shared/datasets with its prepare.py into
    the first of those; else (CIFAR-10 only, when `download`) downloads it with torchvision.
    """
    name = name.lower()
    if name not in NAMED_SETS:
        raise NoImagesError(f"unknown dataset name {name!r}: expected a folder or one of {', '.join(NAMED_SETS)}")
    for d in data_dirs():
        if _complete(d / name, name):
            return d / name
    dest = data_dirs()[0]
    shared = shared_datasets()
    if shared is not None:
        log.info("unpacking %s from %s into %s", name, shared, dest)
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(shared / "prepare.py"), str(dest), "--only", name], check=True)
        return dest / name
    if download and name == "cifar10":
        return _download_cifar10(dest)
    raise NoImagesError(f"{name} not found: set EDGEZOO_DATA to a folder holding {name}/ (prepare.py's layout) "
                        "or pass the dataset's folder")


def find_cifar10(download: bool = True) -> Path:
    """A CIFAR-10 ImageFolder root (train/ and test/), provisioning one if needed (`find_named`)."""
    return find_named("cifar10", download)


def _download_cifar10(dest: Path) -> Path:
    """torchvision download (where online), written out as an ImageFolder tree."""
    from PIL import Image
    from torchvision.datasets import CIFAR10  # lazy: only for this fallback

    raw = dest / "cifar10-raw"
    for split, train in (("train", True), ("test", False)):
        ds = CIFAR10(str(raw), train=train, download=True)
        out = dest / "cifar10" / split
        for c in CIFAR10_CLASSES:
            (out / c).mkdir(parents=True, exist_ok=True)
        for i, (arr, label) in enumerate(zip(ds.data, ds.targets)):
            Image.fromarray(arr).save(out / CIFAR10_CLASSES[label] / f"{i:05d}.png")
        (out / ".complete").touch()
    return dest / "cifar10"


def split_spec(spec: str) -> tuple[str, str | None]:
    """'cifar10:test' -> ('cifar10', 'test'); paths keep their own colons unless the suffix is a split."""
    base, sep, split = spec.rpartition(":")
    if sep and split in ("train", *EVAL_SPLITS) and base:
        return base, split
    return spec, None


def dataset_root(spec: str, download: bool = True) -> Path:
    base, _ = split_spec(spec)
    return find_named(base, download) if is_named(spec) else Path(base).expanduser()


def resolve(spec: str) -> ImageList:
    """List the images of a source spec (see module doc). Raises NoImagesError when there are none."""
    base, split = split_spec(spec)
    root = dataset_root(spec)
    if not root.exists():
        raise NoImagesError(f"{root}: no such file or folder")
    if split is None and (root / "train").is_dir():
        split = "train"
    folder = root / split if split else root
    if split and split != "train" and not folder.is_dir():
        raise NoImagesError(f"{root}: no {split}/ split")
    paths = find_images(folder)
    if not paths:
        raise NoImagesError(f"{folder}: no image files (looked for jpg, jpeg, png, webp, bmp)")
    labels, classes = _folder_labels(folder, paths)
    return ImageList(spec, folder, paths, labels, classes)


def eval_spec(train_spec: str) -> str | None:
    """The labelled held-out split next to a training source, if there is one."""
    base, split = split_spec(train_spec)
    root = dataset_root(train_spec)
    if split not in (None, "train") or not (root / "train").is_dir():
        return None
    for name in EVAL_SPLITS:
        if (root / name).is_dir():
            return f"{base}:{name}"
    return None


def _folder_labels(folder: Path, paths: list[Path]) -> tuple[list[int] | None, list[str] | None]:
    parents = [p.relative_to(folder).parts for p in paths]
    if any(len(parts) != 2 for parts in parents):
        return None, None
    classes = sorted({parts[0] for parts in parents})
    if len(classes) < 2:
        return None, None
    lookup = {c: i for i, c in enumerate(classes)}
    return [lookup[parts[0]] for parts in parents], classes


def cache_dir() -> Path:
    env = os.environ.get("EDGEZOO_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgezoo"
    return base


def _cache_key(paths: Sequence[Path], resize: int, crop: int, interpolation: str) -> str:
    h = hashlib.sha256(f"v1|{resize}|{crop}|{interpolation}".encode())
    for p in paths:
        st = p.stat()
        # os.fsencode: the name's own bytes, also when they are not UTF-8 (str.encode() refuses those)
        h.update(b"|" + os.fsencode(p.resolve()) + f"|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def decode(images: ImageList, resize: int, crop: int, interpolation: str = "bicubic", *,
           use_cache: bool = True, workers: int | None = None) -> tuple[np.ndarray, ImageList]:
    """Decode a source once into an (N, crop, crop, 3) uint8 array, skipping unreadable files.

    Unreadable files are dropped with one warning that counts them; the returned
    ImageList lists exactly the kept files. Results are cached on disk (keyed by
    the files' paths, sizes and mtimes) so later runs and stages skip decoding.
    """
    key = _cache_key(images.paths, resize, crop, interpolation)
    cache = cache_dir() / "decoded" / f"{key}.npz"
    if use_cache and cache.is_file():
        with np.load(cache) as z:
            arr, kept = z["images"], z["kept"].tolist()
        log.debug("%d images of %s: decoded earlier (%s)", len(kept), images.root, cache)
        return arr, images.subset(kept)
    skip = SkipReport()
    interp = interpolation_from_name(interpolation)
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    log.info("decoding %d images of %s at %d px (%d threads)", len(images), images.root, resize, workers)
    chunks = [list(range(i, min(i + 512, len(images)), 1)) for i in range(0, len(images), 512)]

    def work(chunk: list[int]) -> tuple[np.ndarray, list[int], SkipReport]:
        local = SkipReport()
        arr, kept = decode_many((images.paths[i] for i in chunk), resize, crop, interp, local)
        return arr, [chunk[k] for k in kept], local

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(work, chunks))
    arrays = [r[0] for r in results]
    kept = [i for r in results for i in r[1]]
    for r in results:
        skip.skipped.extend(r[2].skipped)
    skip.warn(str(images.root))
    if not kept:
        raise NoImagesError(f"{images.root}: no readable image among {len(images)} file(s)")
    arr = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    if use_cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        # A temp name unique per call: the cache is shared, two runs may decode the same source at once.
        with atomic_path(cache, ".tmp.npz") as tmp:
            np.savez(tmp, images=arr, kept=np.asarray(kept, np.int64))
    return arr, images.subset(kept)
