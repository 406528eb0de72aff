"""Convolutions whose output is one pixel, computed as the matrix product they are (CPU training fast path).

A stock-stem ResNet-18 at 32 px ends on a 1x1 feature map: layer4's 3x3 convolutions
see one pixel plus zero padding. oneDNN (torch 2.14, 2 cores) takes ~80 ms for the
weight gradient of each such 512x512 convolution at batch 128, against ~10 ms for the
equivalent matrix product, and those few layers cost about half of a training step.
When a convolution's output is 1x1, only the kernel taps that meet the input
contribute, so ``y = x_window . W[:, :, taps]`` exactly, in the forward and in both
gradients (the other taps multiply zeros and get zero gradient either way).

The module stays an ``nn.Conv2d`` with the same parameters and state_dict (the saved
backbone is unchanged and timm-native); only ``forward`` takes the shortcut, and only
for an input that produces a 1x1 output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class OnePixelConv2d(nn.Conv2d):
    """nn.Conv2d that computes a 1x1 output as a linear layer over the taps that meet the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = self._window(x.shape[-2], x.shape[-1])
        if window is None:
            return super().forward(x)
        (i0, i1), (j0, j1) = window
        ph, pw = self.padding  # type: ignore[misc]
        taps = x[:, :, i0 - ph:i1 - ph, j0 - pw:j1 - pw].flatten(1)
        return F.linear(taps, self.weight[:, :, i0:i1, j0:j1].flatten(1), self.bias)[:, :, None, None]

    def _window(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """Kernel rows and columns that meet the input when the output is one pixel, else None."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if (h + 2 * ph - kh) // sh + 1 != 1 or (w + 2 * pw - kw) // sw + 1 != 1:
            return None
        return (max(0, ph), min(kh, h + ph)), (max(0, pw), min(kw, w + pw))


def use_one_pixel_convs(model: nn.Module) -> int:
    """Give every plain dense convolution of `model` the one-pixel shortcut; returns how many."""
    count = 0
    for module in model.modules():
        if (type(module) is nn.Conv2d and module.groups == 1 and module.dilation == (1, 1)
                and isinstance(module.padding, tuple) and module.padding_mode == "zeros"):
            module.__class__ = OnePixelConv2d
            count += 1
    return count
