"""What export needs from a RUN_DIR: the backbone folder, its preprocessing and its image lists.

Calibration uses the run's own training files (data.json ``files``); validation
uses the run's eval split when it has one, else held-out training files; the kNN
bank is training images with labels (the run's files, topped up from the same
training folder when the run used fewer than the bank size). A small labelled
folder without an eval split is halved into queries and bank (`plan_validation`).
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
from zoo.layout import RunDir
from zoo.timm_files import preprocess_of, read_config

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
        return RunDir(self.run_dir).backbone

    @property
    def labelled(self) -> bool:
        return self.train.labels is not None


def read_run(run_dir: str | Path) -> RunData:
    """Check a RUN_DIR is complete and list its training files (with folder labels when it has them)."""
    run = RunDir(run_dir)
    for path in (run.backbone_config, run.weights, run.data, run.metrics):
        if not path.is_file():
            raise RunNotExportableError(f"{run.path}: no {path.relative_to(run.path).as_posix()} (the run did not "
                                        "complete, or this is not a RUN_DIR)")
    record = json.loads(run.data.read_text())
    train = _run_files(record)
    eval_spec = (record.get("eval") or {}).get("spec")
    return RunData(run.path, read_config(run.backbone), preprocess_of(run.backbone), train, eval_spec)


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


# Fewest images export validation runs on: the top-10 neighbour agreement needs 11, and below this the
# parity checks say little about a model. A labelled run without an eval split needs twice as many
# (half queries, half kNN bank) for the kNN comparison; with fewer it gets the parity checks only.
MIN_QUERY_IMAGES = 16


class TooFewImagesError(RunNotExportableError):
    """The run has too few images to compare the exported models with torch on."""


@dataclass
class ValidationSplit:
    """The images export validation uses, and how their number was chosen (recorded in validation.json)."""

    queries: datasets.ImageList
    bank: datasets.ImageList | None  # labelled kNN bank; None when kNN cannot run (see note)
    source: str  # "eval split" or "training images"
    available: int  # images the queries (and, without an eval split, the bank) were drawn from
    note: str

    def describe(self) -> dict[str, Any]:
        return {"queries_from": self.source, "available_images": self.available, "num_queries": len(self.queries),
                "num_bank": len(self.bank) if self.bank is not None else 0, "note": self.note}


def plan_validation(run: RunData, num_val: int, bank_size: int, seed: int) -> ValidationSplit:
    """Queries and kNN bank for any folder size and layout.

    With a labelled eval split: up to `num_val` eval images as queries, a bank of
    training images. Without one, queries and bank are disjoint sets of the labelled
    training images: the bank gets up to `bank_size` of them but at most half, the
    queries up to `num_val` of the rest (a folder of 60 photos: 30 and 30; the
    default 2000 + 2000 from 10,000 images). Unlabelled runs get queries only.
    Raises TooFewImagesError when there are fewer than MIN_QUERY_IMAGES images.
    """
    if run.eval_spec:
        return _eval_split_plan(run, num_val, bank_size, seed)
    full = None
    if run.labelled and bank_size > 0:  # list the training folder only when the run's own files are too few
        full = run.train if len(run.train) >= num_val + bank_size else _labelled_folder(run)
    available = len(full) if full is not None else len(run.train)
    if full is not None and available >= 2 * MIN_QUERY_IMAGES:
        bank_share = min(bank_size, available // 2)
        queries = sample(run.train, min(num_val, available - bank_share), seed)
        require_images(len(queries), run.train.root)
        bank = _bank(run, bank_share, seed, exclude=set(queries.paths), full=full)
        note = (f"{len(queries)} training images as queries and a disjoint kNN bank of {len(bank)}, of "
                f"{available} labelled training images")
        return ValidationSplit(queries, bank, "training images", available, note)
    if not run.labelled:
        note = "no labels: parity checks only, no kNN"
    elif bank_size <= 0:
        note = "no kNN bank asked for"
    else:
        note = (f"only {available} labelled images: too few for disjoint kNN queries and bank (needs "
                f"{2 * MIN_QUERY_IMAGES}); parity checks only")
    queries = sample(run.train, num_val, seed)
    require_images(len(queries), run.train.root)
    return ValidationSplit(queries, None, "training images", available, note)


def validation_split(run: RunData, num_val: int, bank_size: int, seed: int,
                     ) -> tuple[datasets.ImageList, datasets.ImageList | None]:
    """(queries, kNN bank) of `plan_validation`, for callers that need only the images."""
    plan = plan_validation(run, num_val, bank_size, seed)
    return plan.queries, plan.bank


def require_images(count: int, where: Path | str) -> None:
    """TooFewImagesError unless `count` images are enough to validate an export on."""
    if count < MIN_QUERY_IMAGES:
        raise TooFewImagesError(f"{where}: only {count} usable image{'s' if count != 1 else ''}; export validation "
                                f"needs {MIN_QUERY_IMAGES} images or more to compare the exported models with torch "
                                "(pretrain on a larger folder)")


def _eval_split_plan(run: RunData, num_val: int, bank_size: int, seed: int) -> ValidationSplit:
    evaluation = datasets.resolve(run.eval_spec)
    queries = sample(evaluation, num_val, seed)
    require_images(len(queries), evaluation.root)
    bank = _bank(run, bank_size, seed, exclude=set()) if bank_size > 0 else None
    note = f"{len(queries)} images of the eval split {run.eval_spec} as queries"
    if bank is not None and queries.classes != bank.classes:
        log.warning("eval split %s has other classes than training: no kNN", run.eval_spec)
        bank, note = None, note + "; its classes differ from training's: no kNN"
    elif bank is not None:
        note += f", a bank of {len(bank)} labelled training images"
    return ValidationSplit(queries if bank is not None else _unlabelled(queries), bank, "eval split", len(evaluation),
                           note)


def _unlabelled(images: datasets.ImageList) -> datasets.ImageList:
    return datasets.ImageList(images.spec, images.root, images.paths)


def _labelled_folder(run: RunData) -> datasets.ImageList:
    """Every labelled image a bank may draw from: the run's training folder (the run's own files when the
    folder's classes differ from the run's)."""
    full = _full_train_split(run.train.root, run.train.spec)
    if full.classes != run.train.classes:
        log.warning("%s: classes differ from the run's; kNN bank limited to the run's %d files", full.root,
                    len(run.train))
        return run.train
    return full


def _bank(run: RunData, size: int, seed: int, exclude: set[Path],
          full: datasets.ImageList | None = None) -> datasets.ImageList | None:
    """Labelled training images: the run's own files first, then others from the same folder (`full`,
    listed here when not given)."""
    if not run.labelled:
        return None
    own = [i for i, p in enumerate(run.train.paths) if p not in exclude]
    bank = sample(run.train.subset(own), size, seed)
    if len(bank) >= size:
        return bank
    full = full if full is not None else _labelled_folder(run)
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
