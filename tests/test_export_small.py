"""`edgezoo export` on small folders: a labelled ImageFolder without a train/val split (what
`--recipe folder-small` is for) is split into validation queries and a kNN bank; too few images are refused.

One real 1-epoch run on 60 hymenoptera photos (ants/ and bees/, no split) is exported; the other
layouts reuse its backbone with a rewritten data.json, which is all export reads about the images.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from export.rundata import MIN_QUERY_IMAGES, TooFewImagesError, plan_validation, read_run
from zoo.edge import read_validation

PER_CLASS = 30


def photo_folder(hymenoptera_root: Path, dest: Path, per_class: int, labelled: bool = True) -> Path:
    """`per_class` ants and bees photos (linked) in class subfolders, or all in one flat folder."""
    for cls in ("ants", "bees"):
        out = dest / cls if labelled else dest
        out.mkdir(parents=True, exist_ok=True)
        for img in sorted((hymenoptera_root / "train" / cls).iterdir())[:per_class]:
            (out / f"{cls}-{img.name}").symlink_to(img)
    return dest


def with_images(run: Path, dest: Path, folder: Path) -> Path:
    """A copy of `run` (no export) whose data.json says it trained on every image of `folder`."""
    from zoo.datasets import resolve

    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("export", "checkpoint.pt"))
    images = resolve(str(folder))
    record = json.loads((dest / "data.json").read_text())
    record["train"].update(spec=str(folder), root=str(images.root), num_images=len(images), classes=images.classes)
    record["files"] = [p.relative_to(images.root).as_posix() for p in images.paths]
    (dest / "data.json").write_text(json.dumps(record))
    return dest


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, hymenoptera_root) -> Path:
    """1 epoch of resnet18 at 64 px on 60 photos in ants/ and bees/ (no train/val split, no eval split)."""
    from pretrain.config import build_config
    from pretrain.trainer import Trainer

    base = tmp_path_factory.mktemp("small-folder")
    folder = photo_folder(hymenoptera_root, base / "photos", PER_CLASS)
    cfg = build_config("folder-small", data=str(folder), model="resnet18", img_size=64, epochs=1, batch_size=32,
                       proj_hidden_dim=128, proj_dim=64, threads=2)
    Trainer(cfg, base / "run", progress=False).fit()
    return base / "run"


def test_small_labelled_folder_without_a_split_exports_and_validates(small_run, capsys):
    from app.cli import main

    assert read_run(small_run).eval_spec is None and read_run(small_run).labelled
    assert main(["export", str(small_run), "--no-latency"]) == 0  # the defaults: --val-images 2000
    report = read_validation(small_run / "export")  # passed, files unchanged
    split = report.data["split"]
    assert split["available_images"] == 2 * PER_CLASS
    assert split["num_queries"] == PER_CLASS and split["num_bank"] == PER_CLASS  # halves, disjoint
    assert report.data["validation"]["num_images"] == PER_CLASS
    assert report.data["knn_bank"]["num_images"] == PER_CLASS
    assert "disjoint kNN bank of 30" in split["note"]
    knn = report.knn
    assert knn["k"] == PER_CLASS  # k as used: capped by the bank
    assert 0.0 <= knn["torch"] <= 1.0 and knn["checked"] is False and "only 30 queries" in knn["reason"]
    names = {c["name"] for c in report.checks}
    assert names == {"fp32_max_abs_diff", "fp32_min_cosine", "ort_format_max_abs_diff", "int8_median_cosine"}
    out = capsys.readouterr().out
    assert "validation PASSED" in out and "not checked" in out and "disjoint kNN bank" in out

    plan = plan_validation(read_run(small_run), 2000, 2000, seed=0)
    assert not set(plan.queries.paths) & set(plan.bank.paths)
    assert sorted(set(plan.queries.labels)) == [0, 1] and sorted(set(plan.bank.labels)) == [0, 1]


def test_three_images_are_refused_before_any_work(small_run, tmp_path, hymenoptera_root, caplog):
    from app.cli import main

    three = photo_folder(hymenoptera_root, tmp_path / "three", 2)
    sorted((three / "bees").iterdir())[0].unlink()  # 2 ants, 1 bee
    run = with_images(small_run, tmp_path / "run", three)
    with pytest.raises(TooFewImagesError, match=rf"only 3 usable images; export validation needs "
                                                rf"{MIN_QUERY_IMAGES} images or more"):
        plan_validation(read_run(run), 2000, 2000, seed=0)
    assert main(["export", str(run), "--no-latency"]) == 2
    assert f"needs {MIN_QUERY_IMAGES} images" in caplog.text and "Traceback" not in caplog.text
    assert not (run / "export").exists()  # refused before exporting anything


def test_unlabelled_and_barely_labelled_folders_validate_without_knn(small_run, tmp_path, hymenoptera_root):
    flat = with_images(small_run, tmp_path / "flat", photo_folder(hymenoptera_root, tmp_path / "flat-photos", 10,
                                                                  labelled=False))
    plan = plan_validation(read_run(flat), 2000, 2000, seed=0)
    assert len(plan.queries) == 20 and plan.bank is None and "no labels" in plan.note

    few = with_images(small_run, tmp_path / "few", photo_folder(hymenoptera_root, tmp_path / "few-photos", 10))
    plan = plan_validation(read_run(few), 2000, 2000, seed=0)
    assert len(plan.queries) == 20 and plan.bank is None
    assert "only 20 labelled images" in plan.note and f"needs {2 * MIN_QUERY_IMAGES}" in plan.note
