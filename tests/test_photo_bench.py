"""benchmarks/photo_bench.py: every row is a valid run, and its untrained references score real photos.

The bench's measurements live in BENCHMARKS.md; this checks the script a person would run (its rows build
configs the trainer accepts, its table is made of scores of real embeddings) without training anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pretrain.config import build_config
from pretrain.init import IMAGENET_WHEELS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import photo_bench  # noqa: E402 (benchmarks/ is not a package)


def test_every_row_is_a_config_the_trainer_accepts(tmp_path: Path) -> None:
    table = photo_bench.rows(adapt_lr=0.03, l2sp_weight=0.01, teacher_px=160, vit_px=64)
    assert len({r.slug for r in table}) == len(table)
    for row in table:
        cfg = build_config(None, **{"data": str(tmp_path), "small_stem": False, "img_size": 128, **row.values})
        if row.values.get("init") == photo_bench.INIT:
            assert cfg.model == photo_bench.STUDENT and tuple(cfg.mean) == (0.5, 0.5, 0.5)  # the init's preprocessing
        if cfg.method == "distill":
            assert cfg.teacher == photo_bench.TEACHER and cfg.teacher_img_size == 160
    assert {r.slug for r in table if r.trained} >= {"effssl-init", "effssl-init-l2-sp", "effssl-init-lp-ft",
                                                    "simclr-init"}
    lpft = next(r for r in table if r.slug == "effssl-init-lp-ft")
    assert lpft.values["freeze_bn"] and lpft.values["head_warmup_steps"] > 0


def test_untrained_rows_score_the_photos_and_the_imagenet_init_beats_random(tmp_path: Path, hymenoptera_root,
                                                                            capsys) -> None:
    pytest.importorskip(IMAGENET_WHEELS[photo_bench.INIT].module, reason='pip install ".[imagenet]"')
    src = photo_bench.smoke_folder(hymenoptera_root / "val", tmp_path / "src", per_class=12)
    out = tmp_path / "bench"
    assert photo_bench.main(["--data", str(src), "--img-size", "64", "--no-export", "--out", str(out),
                             "--only", "random-init-lite0,imagenet-init-lite0"]) == 0
    report = json.loads((out / "photo_bench.json").read_text())
    rnd, init = report["rows"]
    assert (rnd["slug"], init["slug"]) == ("random-init-lite0", "imagenet-init-lite0") and report["images"] == 24
    assert init["loo_1nn"] > rnd["loo_1nn"]  # ants vs bees: ImageNet features know them, random ones do not
    assert "| ImageNet init (Lite0) | 64 | 0 |" in capsys.readouterr().out
