"""The batched augmentation samples the same distribution as the per-image torchvision path."""

import math

import numpy as np
import torch
from torchvision.transforms import v2

from pretrain.augment import AugmentParams, BatchAugment, PerImageAugment, sample_crops
from pretrain.config import PretrainConfig


def _params(**kw) -> AugmentParams:
    return AugmentParams.from_config(PretrainConfig(**kw), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_crop_scale_and_aspect_match_torchvision():
    n, h, w = 20000, 32, 32
    g = torch.Generator().manual_seed(0)
    ours = sample_crops(n, h, w, (0.2, 1.0), (3 / 4, 4 / 3), g)
    torch.manual_seed(0)
    img = torch.zeros(3, h, w)
    ref = torch.tensor([v2.RandomResizedCrop.get_params(img, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(n)],
                       dtype=torch.float32)  # (top, left, h, w)
    for boxes in (ours, ref):
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= h).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 3] <= w).all()

    def stats(boxes):
        area = (boxes[:, 2] * boxes[:, 3] / (h * w)).numpy()
        log_ar = np.log((boxes[:, 3] / boxes[:, 2]).numpy())
        centre = ((boxes[:, 1] + boxes[:, 3] / 2) / w).numpy()
        return area, log_ar, centre

    for a, b in zip(stats(ours), stats(ref)):
        assert abs(a.mean() - b.mean()) < 0.01
        assert abs(a.std() - b.std()) < 0.01
        for q in (0.1, 0.5, 0.9):
            assert abs(np.quantile(a, q) - np.quantile(b, q)) < 0.03


def _half_image(n: int) -> torch.Tensor:
    x = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    x[..., 16:] = 255
    return x


def test_flip_rate_matches():
    n = 2000
    p = _params(crop_scale=(1.0, 1.0), jitter_p=0.0, gray_p=0.0)
    p = AugmentParams(**{**p.__dict__, "ratio": (1.0, 1.0)})
    rates = []
    for aug in (BatchAugment(p), PerImageAugment(p)):
        y = aug(_half_image(n), torch.Generator().manual_seed(0))
        left_bright = y[:, 0, :, :8].mean(dim=(1, 2)) > y[:, 0, :, 24:].mean(dim=(1, 2))
        rates.append(left_bright.float().mean().item())
    assert all(abs(r - 0.5) < 0.05 for r in rates), rates


def test_grayscale_and_jitter_rates_match():
    n = 2000
    torch.manual_seed(0)
    colourful = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    colourful[:, 0], colourful[:, 1], colourful[:, 2] = 200, 60, 20
    for kw, name in (({"jitter_p": 0.0, "gray_p": 0.2}, "gray"), ({"jitter_p": 0.8, "gray_p": 0.0}, "jitter")):
        p = _params(crop_scale=(1.0, 1.0), **kw)
        rates = []
        for aug in (BatchAugment(p), PerImageAugment(p)):
            y = aug(colourful, torch.Generator().manual_seed(1)) * 0.25 + 0.5  # back to [0, 1]
            if name == "gray":
                changed = (y[:, 0] - y[:, 1]).abs().amax(dim=(1, 2)) < 1e-3
            else:
                ref = torch.tensor([200, 60, 20]) / 255.0
                changed = (y.mean(dim=(2, 3)) - ref).abs().amax(dim=1) > 1e-3
            rates.append(changed.float().mean().item())
        expect = kw["gray_p"] if name == "gray" else kw["jitter_p"]
        assert all(abs(r - expect) < 0.05 for r in rates), (name, rates)


def test_jitter_brightness_spread_matches():
    """Mean intensity after jitter has the same spread on both paths."""
    n = 2000
    grey = torch.full((n, 3, 32, 32), 128, dtype=torch.uint8)
    grey[:, 0] = 150
    p = _params(crop_scale=(1.0, 1.0), jitter_p=1.0, gray_p=0.0)
    spreads = []
    for aug in (BatchAugment(p), PerImageAugment(p)):
        y = aug(grey, torch.Generator().manual_seed(2)) * 0.25 + 0.5
        m = y.mean(dim=(1, 2, 3))
        spreads.append((m.mean().item(), m.std().item()))
    (m1, s1), (m2, s2) = spreads
    assert abs(m1 - m2) < 0.02 and abs(s1 - s2) < 0.02, spreads


def test_batched_output_shape_and_blur_path():
    """With blur_p 1 every sample is the unblurred view (the same draws: blur draws last) after torchvision's
    Gaussian blur of the same sigma and kernel; at 96 px blur is on by default."""
    import torchvision.transforms.v2.functional as TF

    x = torch.randint(0, 256, (4, 3, 110, 110), dtype=torch.uint8)
    assert math.isclose(_params(img_size=96).blur_p, 0.5)
    sigma = 1.0
    plain, blurred = (BatchAugment(_params(img_size=96, blur_p=p, blur_sigma=(sigma, sigma)))(
        x, torch.Generator().manual_seed(0)) for p in (0.0, 1.0))
    assert blurred.shape == plain.shape == (4, 3, 96, 96) and torch.isfinite(blurred).all()
    size = 2 * math.ceil(3 * sigma) + 1  # the kernel PerImageAugment gives torchvision
    expect = TF.gaussian_blur(plain, [size, size], [sigma, sigma])  # normalising commutes with a blur
    assert (blurred - plain).abs().mean() > 0.1  # random pixels: a blur changes them a lot
    torch.testing.assert_close(blurred, expect, atol=1e-4, rtol=0)


def test_batched_jitter_equals_torchvision_ops_in_each_samples_order():
    """Every sample gets torchvision's brightness/contrast/saturation/hue with its own factors and order."""
    import torchvision.transforms.v2.functional as TF

    from pretrain.augment import apply_jitter, draw_jitter

    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 16, 16, generator=g)
    d = draw_jitter(64, (0.4, 0.4, 0.4, 0.1), 0.8, x.device, g)
    out = apply_jitter(x, d)
    assert 0 < int(d.apply.sum()) < 64  # both jittered and untouched samples are checked
    ops = (lambda y, i: TF.adjust_brightness(y, float(d.brightness[i])),
           lambda y, i: TF.adjust_contrast(y, float(d.contrast[i])),
           lambda y, i: TF.adjust_saturation(y, float(d.saturation[i])),
           lambda y, i: TF.adjust_hue(y, float(d.hue[i])))
    for i in range(64):
        expect = x[i]
        if d.apply[i]:
            for k in d.order[i].tolist():
                expect = ops[k](expect, i)
        torch.testing.assert_close(out[i], expect, atol=1e-4, rtol=0)  # float rounding only
    # The accelerators' sync-free path (every op on the whole batch, then selected) gives the same batch.
    torch.testing.assert_close(apply_jitter(x, d, indexed=False), out, atol=1e-6, rtol=0)
