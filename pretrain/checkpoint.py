"""A run's checkpoint.pt and log.csv: atomic writes, a full disk said in one line, rows kept in step on resume.

Shared by the trainer (pretrain/trainer.py) and the cached fit (pretrain/readout.py); what each file holds and
when it is written: zoo/layout.py.
"""

from __future__ import annotations

import csv
import errno
import shutil
from pathlib import Path
from typing import Any

import torch

from zoo.fsutil import atomic_path, atomic_write_text

LOG_COLUMNS = ("epoch", "loss", "lr", "images_per_s", "knn_top1", "rankme", "wall_time_s")


def state_nbytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) state: about the size of its checkpoint file."""
    if isinstance(obj, torch.Tensor):
        return obj.nelement() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_nbytes(v) for v in obj)
    return 0


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic: an interrupt never leaves a half-written checkpoint.

    torch.save reports a full disk as a bare RuntimeError ("unexpected pos ..."); where the free space is below
    the state's size it becomes OSError(ENOSPC) saying how much is needed, which the CLI prints as one line.
    """
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except RuntimeError as err:
        need = state_nbytes(state)
        free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else need
        if free >= need:
            raise
        raise OSError(errno.ENOSPC, f"no space left on the device to write {path.name} (about {need / 2**20:.0f} MiB "
                                    f"needed, {free / 2**20:.0f} MiB free in {path.parent})") from err


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def cpu_snapshot(obj: Any) -> Any:
    """A deep copy on the CPU of a (nested) state, safe to write while training changes the original."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_snapshot(v) for v in obj)
    return obj


def append_log_row(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", newline="") as f:
        csv.writer(f).writerow(["" if row[c] is None else row[c] for c in LOG_COLUMNS])


def trim_log(path: Path, last_epoch: int) -> None:
    """Drop rows past the checkpoint's epoch, so a resumed run does not log an epoch twice."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = lines[:1] + [ln for ln in lines[1:] if ln and int(ln.split(",", 1)[0]) <= last_epoch]
    if len(kept) != len(lines):
        atomic_write_text(path, "\n".join(kept) + "\n")
