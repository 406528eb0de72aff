"""The torch side of `zoo.preprocess.Preprocess`: stored uint8 squares to the network's input, on any device.

Training decodes every image once to `Preprocess.resize_size` squares (pretrain/data.py). Evaluation, the
calibration pass and MAS importance all see the centre `img_size` crop of those squares, scaled to [0, 1] and
normalised (`center_crop_normalize`): the pixels `Preprocess.decode` + `normalize` give the edge runtime. The
augmentation (pretrain/augment.py) crops at random instead, between the same `to_unit` and `normalize`.
"""

from __future__ import annotations

import torch

from zoo.preprocess import Preprocess


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 in [0, 1]."""
    return x.float().div_(255.0)


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """float [0, 1] (B, 3, H, W) -> normalised."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def center_crop_normalize(images: torch.Tensor, preprocess: Preprocess, device: torch.device | str | None = None,
                          ) -> torch.Tensor:
    """uint8 (N, 3, R, R) -> the centre img_size crop, normalised float32 (N, 3, img_size, img_size).

    `device`: where the crop is moved before it is converted (a quarter of the bytes of the float batch).
    """
    size = preprocess.img_size
    off = int(round((images.shape[-1] - size) / 2.0))
    x = images[:, :, off:off + size, off:off + size]
    if device is not None:
        x = x.to(device, non_blocking=True)
    return normalize(to_unit(x), preprocess.mean, preprocess.std)
