"""What export needs from a RUN_DIR: the backbone folder, its preprocessing and its image lists.

Calibration uses the run's own training files (data.json ``files``); validation
uses the run's eval split when it has one, else held-out training files; the kNN
bank is training images with labels (the run's files, topped up from the same
training folder when the run used fewer than the bank size).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo import datasets
from zoo.errors import EdgezooError
from zoo.images import SkipReport
from zoo.preprocess import Preprocess
from zoo.timm_files import CONFIG_NAME, WEIGHTS_NAME, preprocess_of, read_config

log = logging.getLogger(__name__)


class RunNotExportableError(EdgezooError):
    """A RUN_DIR that lacks what export needs (incomplete run, missing files)."""


@dataclass
class RunData:
    """A completed run as export sees it."""

    run_dir: Path
    config: dict[str, Any]
    preprocess: Preprocess
    train: datasets.ImageList  # exactly the run's training files, in data.json order
    eval_spec: str | None

    @property
    def backbone_dir(self) -> Path:
        return self.run_dir / "backbone"

    @property
    def labelled(self) -> bool:
        return self.train.labels is not None


def read_run(run_dir: str | Path) -> RunData:
    """Check a RUN_DIR is complete and list its training files (with folder labels when it has them)."""
    run_dir = Path(run_dir)
    for rel in (f"backbone/{CONFIG_NAME}", f"backbone/{WEIGHTS_NAME}", "data.json", "metrics.json"):
        if not (run_dir / rel).is_file():
            raise RunNotExportableError(f"{run_dir}: no {rel} (the run did not complete, or this is not a RUN_DIR)")
    record = json.loads((run_dir / "data.json").read_text())
    train = _run_files(record)
    eval_spec = (record.get("eval") or {}).get("spec")
    return RunData(run_dir, read_config(run_dir / "backbone"), preprocess_of(run_dir / "backbone"), train, eval_spec)


def _full_train_split(root: Path, spec: str) -> datasets.ImageList:
    """Every image of the run's training folder (labelled the way training labelled it)."""
    if root.is_dir():
        return datasets.resolve(str(root))
    log.warning("%s is gone; resolving the training source %r again", root, spec)
    return datasets.resolve(spec)


def _run_files(record: dict[str, Any]) -> datasets.ImageList:
    """The run's training files, labelled by their first folder as data.json's ``classes`` records
    (listing the whole training folder, 50k files for CIFAR-10, only when the files moved)."""
    train = record["train"]
    root, classes = Path(train["root"]), train.get("classes")
    paths = [root / f for f in record["files"]]
    if not all(p.is_file() for p in paths):
        full = _full_train_split(root, train["spec"])
        index = {p.relative_to(full.root).as_posix(): p for p in full.paths}
        missing = [f for f in record["files"] if f not in index]
        if missing:
            raise RunNotExportableError(f"{full.root}: {len(missing)} of the run's training files are missing "
                                        f"(first: {missing[0]})")
        root, paths = full.root, [index[f] for f in record["files"]]
    if not classes:
        return datasets.ImageList(train["spec"], root, paths)
    lookup = {c: i for i, c in enumerate(classes)}
    labels = [lookup[f.split("/")[0]] for f in record["files"]]
    return datasets.ImageList(train["spec"], root, paths, labels, list(classes))


def sample(images: datasets.ImageList, n: int, seed: int) -> datasets.ImageList:
    """A fixed random subset of n images (all when n >= len), in a stable order."""
    if n >= len(images):
        return images
    return images.subset(sorted(np.random.default_rng(seed).choice(len(images), n, replace=False).tolist()))


def disjoint_samples(images: datasets.ImageList, sizes: tuple[int, ...], seed: int) -> list[datasets.ImageList]:
    """Disjoint fixed random subsets of the given sizes (smaller when the images run out), each in stable order."""
    order = np.random.default_rng(seed).permutation(len(images))
    out, start = [], 0
    for n in sizes:
        out.append(images.subset(sorted(order[start:start + n].tolist())))
        start += n
    return out


def validation_split(run: RunData, num_val: int, bank_size: int, seed: int,
                     ) -> tuple[datasets.ImageList, datasets.ImageList | None]:
    """(queries, kNN bank): eval-split queries and training bank, or disjoint training subsets.

    The bank is None when there are no labels (or the eval split's classes differ).
    """
    if run.eval_spec:
        queries = sample(datasets.resolve(run.eval_spec), num_val, seed)
        bank = _bank(run, bank_size, seed, exclude=set())
        if bank is not None and queries.classes != bank.classes:
            log.warning("eval split %s has other classes than training: no kNN", run.eval_spec)
            bank = None
        return (queries if bank is not None else _unlabelled(queries)), bank
    queries = sample(run.train, num_val, seed)
    bank = _bank(run, bank_size, seed, exclude=set(queries.paths)) if run.labelled else None
    return queries, bank


def _unlabelled(images: datasets.ImageList) -> datasets.ImageList:
    return datasets.ImageList(images.spec, images.root, images.paths)


def _bank(run: RunData, size: int, seed: int, exclude: set[Path]) -> datasets.ImageList | None:
    """Labelled training images: the run's own files first, then others from the same folder."""
    if not run.labelled:
        return None
    own = [i for i, p in enumerate(run.train.paths) if p not in exclude]
    bank = sample(run.train.subset(own), size, seed)
    if len(bank) >= size:
        return bank
    full = _full_train_split(run.train.root, run.train.spec)
    if full.classes != run.train.classes:
        log.warning("%s: classes differ from the run's; kNN bank limited to the run's %d files", full.root, len(bank))
        return bank
    taken = set(bank.paths) | exclude
    extra = sample(full.subset([i for i, p in enumerate(full.paths) if p not in taken]), size - len(bank), seed)
    return datasets.ImageList(bank.spec, bank.root, bank.paths + extra.paths, bank.labels + extra.labels,
                              bank.classes)


def decode_normalized(pre: Preprocess, images: datasets.ImageList) -> tuple[np.ndarray, datasets.ImageList]:
    """Deployment preprocessing (Preprocess.decode + normalize), skipping unreadable files once-reported."""
    skip = SkipReport()
    arr, kept = pre.decode(images.paths, skip=skip)
    skip.warn(str(images.root))
    return pre.normalize(arr), images.subset(kept)
