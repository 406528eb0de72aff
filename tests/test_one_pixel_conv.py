"""The one-pixel shortcut computes what nn.Conv2d computes: output, input gradient and weight gradient."""

import copy

import pytest
import torch
from torch import nn

from pretrain.modules.one_pixel_conv import OnePixelConv2d, use_one_pixel_convs


@pytest.mark.parametrize("cin,cout,k,stride,pad,size", [
    (16, 24, 3, 1, 1, 1),  # layer4 of a stock-stem ResNet at 32 px
    (8, 16, 3, 2, 1, 2),  # its strided entry: 2x2 -> 1x1
    (8, 16, 1, 2, 0, 2),  # the 1x1 downsample: 2x2 -> 1x1 reads one pixel
    (4, 6, 3, 1, 0, 3),  # no padding, the kernel covers the input
    (4, 6, 3, 1, 1, 4),  # a 4x4 output: the ordinary convolution
])
def test_same_output_and_gradients_as_conv2d(cin, cout, k, stride, pad, size):
    torch.manual_seed(0)
    ref = nn.Conv2d(cin, cout, k, stride, pad, bias=True).double()
    fast = copy.deepcopy(ref)
    assert use_one_pixel_convs(fast) == 1 and isinstance(fast, OnePixelConv2d)
    x = torch.randn(5, cin, size, size, dtype=torch.float64)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yf = ref(xr), fast(xf)
    assert yf.shape == yr.shape
    torch.testing.assert_close(yf, yr)
    g = torch.randn_like(yr)
    yr.backward(g)
    yf.backward(g)
    torch.testing.assert_close(xf.grad, xr.grad)
    torch.testing.assert_close(fast.weight.grad, ref.weight.grad)
    torch.testing.assert_close(fast.bias.grad, ref.bias.grad)
    shortcut = fast._window(size, size) is not None
    assert shortcut == (yr.shape[-2:] == (1, 1))


def test_backbone_keeps_its_state_dict_and_output():
    from zoo.backbones import create_backbone

    torch.manual_seed(0)
    ref = create_backbone("resnet18").eval()
    fast = copy.deepcopy(ref)
    assert use_one_pixel_convs(fast) == 20  # every dense convolution of ResNet-18
    assert fast.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-4, atol=1e-5)


def test_grouped_convolutions_are_left_alone():
    depthwise = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8))
    assert use_one_pixel_convs(depthwise) == 0 and type(depthwise[0]) is nn.Conv2d
