"""Bad input: unreadable files are skipped with one warning; an empty source is a clear error."""

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo import datasets
from zoo.images import ImageError, NoImagesError, as_rgb_image, load_image


def _mixed_folder(root: Path) -> Path:
    """Good images of every awkward mode, plus files that are not images."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(root / "rgb.jpg")
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8)).save(root / "gray.png")
    Image.fromarray(rng.integers(0, 255, (30, 30, 4), dtype=np.uint8), "RGBA").save(root / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).convert("P").save(root / "palette.png")
    Image.fromarray((rng.integers(0, 65535, (30, 30))).astype(np.uint16)).save(root / "deep16.png")
    Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(root / "nested.webp")
    # EXIF orientation 6 (rotate 90): stored 40 wide x 20 high, shown 20 wide x 40 high
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 255, (20, 40, 3), dtype=np.uint8)).save(root / "rotated.jpg", exif=exif)
    good = (root / "rgb.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "notes.jpg").write_text("this is not an image")
    (root / "empty.png").write_bytes(b"")
    (root / "readme.txt").write_text("ignored: not an image extension")
    return root


def test_every_mode_converts_to_rgb(tmp_path):
    root = _mixed_folder(tmp_path / "imgs")
    for name in ("rgb.jpg", "gray.png", "rgba.png", "palette.png", "deep16.png", "nested.webp"):
        img = load_image(root / name)
        assert img.mode == "RGB", name
    assert load_image(root / "rotated.jpg").size == (20, 40)  # EXIF orientation applied
    deep = np.asarray(load_image(root / "deep16.png"))
    assert deep.max() > 100  # 16-bit scaled into 8 bits, not clipped to white or black
    for bad in ("truncated.jpg", "notes.jpg", "empty.png"):
        with pytest.raises(ImageError, match=bad):
            load_image(root / bad)


def test_decode_skips_unreadable_with_one_counting_warning(tmp_path, caplog):
    root = _mixed_folder(tmp_path / "imgs")
    files = datasets.resolve(str(root))
    assert files.labels is None and len(files) == 10
    with caplog.at_level(logging.WARNING):
        arr, kept = datasets.decode(files, 36, 32, use_cache=False)
    assert arr.shape == (7, 32, 32, 3) and arr.dtype == np.uint8
    assert {p.name for p in kept.paths} == {"rgb.jpg", "gray.png", "rgba.png", "palette.png", "deep16.png",
                                            "nested.webp", "rotated.jpg"}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 3 unreadable" in warnings[0].getMessage() and "truncated.jpg" in warnings[0].getMessage()


def test_decompression_bomb_guard_stays_on(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (200, 200)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError):
        load_image(path)


def test_arrays_and_bad_objects():
    assert as_rgb_image(np.zeros((5, 6), np.uint8)).size == (6, 5)
    with pytest.raises(ImageError):
        as_rgb_image(np.zeros((5, 6), np.float32))
    with pytest.raises(ImageError):
        as_rgb_image(42)


def test_imagefolder_labels_and_splits(hymenoptera_root):
    train = datasets.resolve(str(hymenoptera_root))
    assert train.classes == ["ants", "bees"] and set(train.labels) == {0, 1}
    assert train.root.name == "train"
    assert datasets.eval_spec(str(hymenoptera_root)).endswith(":val")


def test_a_photo_set_by_name_is_unpacked_once_from_shared(hymenoptera_root, tmp_path, monkeypatch):
    """``--data hymenoptera`` (as ``--data cifar10``): prepare.py copies the set into EDGEZOO_DATA once; its train
    split trains and its val split evaluates; a folder of that name in the working directory still wins."""
    monkeypatch.setenv("EDGEZOO_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    train = datasets.resolve("hymenoptera")
    assert train.root == tmp_path / "data" / "hymenoptera" / "train" and train.classes == ["ants", "bees"]
    assert len(train) == len(datasets.resolve(str(hymenoptera_root)))
    assert datasets.eval_spec("hymenoptera") == "hymenoptera:val"
    assert len(datasets.resolve("hymenoptera:val")) == len(list((hymenoptera_root / "val").rglob("*.jpg")))
    mark = tmp_path / "data" / "hymenoptera" / ".complete"
    stamp = mark.stat().st_mtime_ns
    datasets.resolve("hymenoptera")
    assert mark.stat().st_mtime_ns == stamp  # found, not unpacked again
    (tmp_path / "hymenoptera" / "x").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "hymenoptera" / "x" / "a.png")
    assert datasets.resolve("hymenoptera").root.resolve() == tmp_path / "hymenoptera"


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoImagesError, match="empty"):
        datasets.resolve(str(tmp_path / "empty"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_text("nope")
    with pytest.raises(NoImagesError, match="no readable image"):
        datasets.decode(datasets.resolve(str(tmp_path / "junk")), 32, 32, use_cache=False)


def test_cli_exits_nonzero_naming_the_path(tmp_path):
    (tmp_path / "nothing").mkdir()
    proc = subprocess.run([sys.executable, "-m", "app.cli", "pretrain", "--data", str(tmp_path / "nothing"),
                           "--out", str(tmp_path / "run"), "--epochs", "1"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert str(tmp_path / "nothing") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_shared_cache_temp_names_are_unique_per_writer(tmp_path):
    """Two runs decoding one source at once must not rename each other's half-written cache file."""
    from zoo.fsutil import sibling_tmp

    target = tmp_path / "decoded" / "abc.npz"
    a, b = sibling_tmp(target, ".tmp.npz"), sibling_tmp(target, ".tmp.npz")
    assert a != b
    assert a.parent == target.parent and a.name.startswith("abc.npz.") and a.name.endswith(".tmp.npz")
