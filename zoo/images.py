"""Robust image reading shared by training, export, the edge runtime and the demo.

Needs only numpy and Pillow, so an edge install can use it. Every image is
returned as 8-bit RGB with EXIF orientation applied; grayscale, RGBA, palette
and 16-bit images are converted. Pillow's decompression-bomb guard stays on.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from zoo.errors import EdgezooError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class ImageError(EdgezooError):
    """An input that is not a readable image (corrupt, truncated, not an image)."""


class NoImagesError(EdgezooError):
    """A source that holds no readable image at all."""


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB with EXIF orientation applied, whatever the input mode."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open and fully decode one image file as RGB, or raise ImageError naming it."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # A truncated file must fail, not decode half grey.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc


def as_rgb_image(item: "Image.Image | str | Path | np.ndarray") -> Image.Image:
    """Accept a PIL image, a path or an HxWx3 / HxW uint8 array; return RGB PIL."""
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, (str, Path)):
        return load_image(item)
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8:
            raise ImageError(f"array images must be uint8, got {item.dtype}")
        if item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (1, 3, 4)):
            arr = item[..., 0] if item.ndim == 3 and item.shape[2] == 1 else item
            return to_rgb(Image.fromarray(np.ascontiguousarray(arr)))
        raise ImageError(f"array images must be HxW or HxWxC (C in 1,3,4), got shape {item.shape}")
    raise ImageError(f"not an image: {type(item).__name__}")


def find_images(root: str | Path) -> list[Path]:
    """Every file with an image extension under root (recursive), sorted."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise NoImagesError(f"{root}: no such file or folder")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


@dataclass
class SkipReport:
    """Counts unreadable files so they are reported once, not once per file."""

    skipped: list[str] = field(default_factory=list)

    def add(self, err: Exception) -> None:
        self.skipped.append(str(err))

    def warn(self, what: str) -> None:
        if self.skipped:
            first = "; ".join(self.skipped[:3])
            log.warning("skipped %d unreadable file(s) in %s: %s%s", len(self.skipped), what, first,
                        " ..." if len(self.skipped) > 3 else "")


def resize_center_crop(img: Image.Image, resize: int, crop: int,
                       interpolation: int = Image.BICUBIC) -> Image.Image:
    """Shorter side to `resize`, then a centred `crop` square (torchvision's Resize+CenterCrop)."""
    w, h = img.size
    if (w, h) != (resize, resize) or w != h:
        if w <= h:
            nw, nh = resize, int(resize * h / w)
        else:
            nw, nh = int(resize * w / h), resize
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), interpolation)
    w, h = img.size
    left = int(round((w - crop) / 2.0))
    top = int(round((h - crop) / 2.0))
    if left < 0 or top < 0:
        raise ImageError(f"crop {crop} larger than resized image {img.size}")
    return img.crop((left, top, left + crop, top + crop))


def decode_many(items: Iterable["Image.Image | str | Path | np.ndarray"], resize: int, crop: int,
                interpolation: int = Image.BICUBIC, skip: SkipReport | None = None,
                ) -> tuple[np.ndarray, list[int]]:
    """Decode, resize and crop many images into one (N, crop, crop, 3) uint8 array.

    With `skip` given, unreadable items are recorded there and left out (their
    positions are missing from the returned list of kept positions); without it
    the first bad item raises ImageError.
    """
    arrays: list[np.ndarray] = []
    kept: list[int] = []
    for i, item in enumerate(items):
        try:
            img = resize_center_crop(as_rgb_image(item), resize, crop, interpolation)
        except ImageError as exc:
            if skip is None:
                raise
            skip.add(exc)
            continue
        arrays.append(np.asarray(img, dtype=np.uint8))
        kept.append(i)
    out = np.stack(arrays) if arrays else np.zeros((0, crop, crop, 3), np.uint8)
    return out, kept


def interpolation_from_name(name: str) -> int:
    """timm/torchvision interpolation names to Pillow constants."""
    table = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
             "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}
    try:
        return table[name]
    except KeyError as exc:
        raise ValueError(f"unknown interpolation {name!r}; one of {sorted(table)}") from exc


def paths_under(root: Path, paths: Sequence[Path]) -> list[str]:
    """Paths relative to root as posix strings (for manifests and index records)."""
    return [p.relative_to(root).as_posix() for p in paths]
