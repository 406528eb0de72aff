"""One-view SSL augmentation (METHOD.md): crop, flip, colour jitter, grayscale, blur.

Two paths that sample the same distribution:
- `PerImageAugment`: torchvision transforms, one image at a time (the reference).
- `BatchAugment`: draws per-sample parameters and applies them to a whole uint8
  batch on the training device (crop + flip as one affine `grid_sample`, jitter in
  a per-sample random order, blur as a grouped conv), so a GPU is not starved by
  CPU decoding. All randomness comes from one `torch.Generator` (checkpointed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pretrain.config import PretrainConfig
from pretrain.preprocess import normalize, to_unit


@dataclass(frozen=True)
class AugmentParams:
    """The augmentation recipe, resolved from a PretrainConfig."""

    size: int
    scale: tuple[float, float]
    ratio: tuple[float, float]
    jitter: tuple[float, float, float, float]
    jitter_p: float
    gray_p: float
    flip_p: float
    blur_p: float
    blur_sigma: tuple[float, float]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_config(cls, cfg: PretrainConfig, mean: tuple[float, float, float], std: tuple[float, float, float],
                    ) -> "AugmentParams":
        return cls(cfg.img_size, tuple(cfg.crop_scale), (3 / 4, 4 / 3), tuple(cfg.jitter), cfg.jitter_p, cfg.gray_p,
                   cfg.flip_p, cfg.effective_blur_p, tuple(cfg.blur_sigma), tuple(mean), tuple(std))


# --- batched path -------------------------------------------------------------------------------------

def sample_crops(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                 attempts: int = 10) -> torch.Tensor:
    """RandomResizedCrop boxes (n, 4) = (top, left, h, w), torchvision's algorithm, vectorised.

    Up to `attempts` (area, aspect) draws per sample; the first that fits wins; else
    the central crop with the aspect clamped to `ratio` (torchvision's fallback).
    """
    area = float(height * width)
    u = torch.rand(n, attempts, device=device, generator=generator)
    target = area * (scale[0] + (scale[1] - scale[0]) * u)
    lr = torch.rand(n, attempts, device=device, generator=generator)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * lr
    ar = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * ar))
    h = torch.round(torch.sqrt(target / ar))
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.argmax(ok.int(), dim=1)
    any_ok = ok.any(dim=1)
    w = w.gather(1, first[:, None]).squeeze(1)
    h = h.gather(1, first[:, None]).squeeze(1)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = float(width), float(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = float(round(height * ratio[1])), float(height)
    else:
        fw, fh = float(width), float(height)
    w = torch.where(any_ok, w, torch.full_like(w, fw))
    h = torch.where(any_ok, h, torch.full_like(h, fh))
    ti = torch.rand(n, device=device, generator=generator)
    tj = torch.rand(n, device=device, generator=generator)
    top = torch.where(any_ok, torch.floor(ti * (height - h + 1)), torch.floor((height - h) / 2))
    left = torch.where(any_ok, torch.floor(tj * (width - w + 1)), torch.floor((width - w) / 2))
    return torch.stack([top, left, h, w], dim=1)


def _crop_flip(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each box, resize to size x size (bilinear) and mirror where flip, in one grid_sample."""
    n, _, H, W = x.shape
    top, left, h, w = boxes.unbind(1)
    # Pixel-centre coordinates of the output grid mapped into the input, align_corners=False.
    lin = (torch.arange(size, device=x.device, dtype=torch.float32) + 0.5) / size
    xs = left[:, None] + lin[None, :] * w[:, None]
    ys = top[:, None] + lin[None, :] * h[:, None]
    xs = torch.where(flip[:, None], (left + w)[:, None] - (xs - left[:, None]), xs)
    gx = xs / W * 2 - 1
    gy = ys / H * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(n, size, size), gy[:, :, None].expand(n, size, size)], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_div, (maxc - g) / cr_div, (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack([h, s, maxc], dim=1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    mask = i.unsqueeze(1) == torch.arange(6, device=x.device).view(1, -1, 1, 1)
    a1 = torch.stack((v, q, p, p, t, v), dim=1)
    a2 = torch.stack((t, v, v, q, p, p), dim=1)
    a3 = torch.stack((p, p, t, v, v, q), dim=1)
    a4 = torch.stack((a1, a2, a3), dim=1)
    return torch.einsum("...ijk,...xijk->...xjk", mask.to(x.dtype), a4)


@dataclass(frozen=True)
class JitterDraw:
    """Per-sample ColorJitter parameters: factors (n, 1, 1, 1), who is jittered, op order (n, 4)."""

    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    apply: torch.Tensor
    order: torch.Tensor  # 0 brightness, 1 contrast, 2 saturation, 3 hue


def draw_jitter(n: int, strength: tuple[float, float, float, float], p: float, device: torch.device,
                generator: torch.Generator | None) -> JitterDraw:
    b, c, s, h = strength

    def u(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(n, device=device, generator=generator)).view(n, 1, 1, 1)

    fb, fc, fs = u(max(0, 1 - b), 1 + b), u(max(0, 1 - c), 1 + c), u(max(0, 1 - s), 1 + s)
    fh = u(-h, h)
    apply = torch.rand(n, device=device, generator=generator) < p
    order = torch.argsort(torch.rand(n, 4, device=device, generator=generator), dim=1)
    return JitterDraw(fb, fc, fs, fh, apply, order)


def apply_jitter(x: torch.Tensor, d: JitterDraw, indexed: bool | None = None) -> torch.Tensor:
    """torchvision ColorJitter with per-sample factors and a per-sample op order.

    indexed (the default on CPU): each op runs only on the samples that take it at that
    position of their order, one pass of each op instead of four of all four. Otherwise
    (the default on accelerators) every op runs on the whole batch and is selected per
    sample: more arithmetic, but no host sync to size the subsets inside the training step.
    """
    if indexed is None:
        indexed = x.device.type == "cpu"
    every = slice(None)

    def bright(y: torch.Tensor, i: torch.Tensor | slice) -> torch.Tensor:
        return (y * d.brightness[i]).clamp(0, 1)

    def contrast(y: torch.Tensor, i: torch.Tensor | slice) -> torch.Tensor:
        f = d.contrast[i]
        return (f * y + (1 - f) * _gray(y).mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)

    def saturation(y: torch.Tensor, i: torch.Tensor | slice) -> torch.Tensor:
        return (d.saturation[i] * y + (1 - d.saturation[i]) * _gray(y)).clamp(0, 1)

    def hue(y: torch.Tensor, i: torch.Tensor | slice) -> torch.Tensor:
        hsv = _rgb_to_hsv(y)
        return _hsv_to_rgb(torch.cat([torch.remainder(hsv[:, 0:1] + d.hue[i], 1.0), hsv[:, 1:]], dim=1))

    out = x.clone()
    for step in range(4):
        for k, op in enumerate((bright, contrast, saturation, hue)):
            take = (d.order[:, step] == k) & d.apply  # a sample takes one op per position
            if not indexed:
                out = torch.where(take.view(-1, 1, 1, 1), op(out, every), out)
            elif (i := take.nonzero().squeeze(1)).numel():
                out[i] = op(out[i], i)
    return out


def _blur(x: torch.Tensor, sigma_range: tuple[float, float], p: float, generator: torch.Generator | None,
          ) -> torch.Tensor:
    """Gaussian blur with a per-sample sigma (separable grouped conv), applied with probability p."""
    n, ch, H, W = x.shape
    dev = x.device
    sigma = sigma_range[0] + (sigma_range[1] - sigma_range[0]) * torch.rand(n, device=dev, generator=generator)
    apply = (torch.rand(n, device=dev, generator=generator) < p).view(n, 1, 1, 1)
    radius = max(1, min(int(math.ceil(3 * sigma_range[1])), (min(H, W) - 1) // 2))
    t = torch.arange(-radius, radius + 1, device=dev, dtype=x.dtype)
    k = torch.exp(-(t[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(ch, dim=0)  # (n*ch, K)
    y = x.reshape(1, n * ch, H, W)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k.view(n * ch, 1, 1, -1), groups=n * ch)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(n * ch, 1, -1, 1), groups=n * ch)
    return torch.where(apply, y.view(n, ch, H, W), x)


class BatchAugment:
    """Augment a whole uint8 batch on its device with per-sample parameters."""

    def __init__(self, params: AugmentParams) -> None:
        self.p = params

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, 3, R, R) -> normalised float32 (B, 3, size, size)."""
        p = self.p
        n, _, H, W = images.shape
        dev = images.device
        boxes = sample_crops(n, H, W, p.scale, p.ratio, generator, dev)
        flip = torch.rand(n, device=dev, generator=generator) < p.flip_p
        x = _crop_flip(to_unit(images), boxes, flip, p.size)
        if p.jitter_p > 0:
            x = apply_jitter(x, draw_jitter(n, p.jitter, p.jitter_p, dev, generator))
        if p.gray_p > 0:
            g = (torch.rand(n, device=dev, generator=generator) < p.gray_p).view(n, 1, 1, 1)
            x = torch.where(g, _gray(x).expand_as(x), x)
        if p.blur_p > 0:
            x = _blur(x, p.blur_sigma, p.blur_p, generator)
        return normalize(x, p.mean, p.std)


# --- per-image reference path ---------------------------------------------------------------------------

class PerImageAugment:
    """torchvision transforms v2, one image at a time (the reference distribution)."""

    def __init__(self, params: AugmentParams) -> None:
        from torchvision.transforms import v2

        p = params
        ops = [
            v2.RandomResizedCrop(p.size, scale=p.scale, ratio=p.ratio, antialias=True),
            v2.RandomApply([v2.ColorJitter(*p.jitter)], p=p.jitter_p),
            v2.RandomGrayscale(p=p.gray_p),
        ]
        if p.blur_p > 0:
            ops.append(v2.RandomApply([v2.GaussianBlur(2 * int(math.ceil(3 * p.blur_sigma[1])) + 1, p.blur_sigma)],
                                      p=p.blur_p))
        ops += [v2.RandomHorizontalFlip(p.flip_p), v2.ToDtype(torch.float32, scale=True), v2.Normalize(p.mean, p.std)]
        self.p = p
        self.transform = v2.Compose(ops)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, 3, R, R) -> normalised float32; torchvision draws from the global RNG."""
        if generator is not None:
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        return torch.stack([self.transform(img) for img in images.cpu()]).to(images.device)


def build_augment(params: AugmentParams, kind: str = "batched") -> BatchAugment | PerImageAugment:
    """`kind`: one of config.AUGMENTS (PretrainConfig checks --augment when it is made)."""
    return {"batched": BatchAugment, "per-image": PerImageAugment}[kind](params)
