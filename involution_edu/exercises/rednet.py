"""Checkers for notebook 06 (RedNet, parameters and FLOPs).

Every expected answer comes from the library: the block or network is built (on the
``meta`` device where only shapes matter) and measured with
:func:`~involution_edu.counting.count_parameters`, :func:`~involution_edu.counting.count_flops`
or a forward pass. Exercises checked here::

    bottleneck_params(in_channels, planes, stride) -> int
        parameters of one RedNet bottleneck (7x7 involution, r = 4, 16 channels per group)
        with inner width ``planes`` and output width ``4 * planes``, shortcut included
    stage_shapes(input_size) -> [(C, H, W)] * 5
        RedNet's feature-map shape after the stem (max pool included) and after layer1..layer4
        for a square ``input_size x input_size`` image
    involution_flops(channels, height, width, stride=1, kernel_size=7,
                     reduction_ratio=4, group_channels=16) -> int
        multiply-adds of one Involution layer on a (1, C, H, W) input: kernel generation
        (two 1x1 convs, no bias) + aggregation K^2 * C * H' * W'
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Tuple

import torch

from ..counting import count_flops, count_parameters
from ..module import Involution
from ..rednet import InvolutionBottleneck, RedNet
from ..resnet import EXPANSION, make_res_layer
from .framework import Case, run_cases

__all__ = ["check_bottleneck_params", "check_stage_shapes", "check_involution_flops"]


def _bottleneck_params_expected(in_channels: int, planes: int, stride: int) -> int:
    with torch.device("meta"):
        layer = make_res_layer(InvolutionBottleneck, 1, in_channels, EXPANSION * planes, stride)
    return count_parameters(layer)


def check_bottleneck_params(bottleneck_params: Callable[[int, int, int], object]) -> bool:
    """Check ``bottleneck_params(in_channels, planes, stride) -> int`` against a built block."""
    table = [
        ("layer1.0: 64 -> 256", (64, 64, 1), "the first block of layer1 widens 64 -> 256, so it has a shortcut conv + BN even with stride 1"),
        ("layer1.1: 256 -> 256", (256, 64, 1), "same shape in and out: no shortcut parameters at all"),
        ("layer2.0: 256 -> 512, stride 2", (256, 128, 2), "a strided first block: shortcut conv 256 -> 512 + BN; the stride adds no parameters"),
        ("layer3.1: 1024 -> 1024", (1024, 256, 1), "a wide block: the involution has G = 256 // 16 = 16 groups and C/r = 64 hidden channels"),
        ("layer4.0: 1024 -> 2048, stride 2", (1024, 512, 2), "the widest block; conv2 of the involution has a bias of K*K*G = 49 * 32 entries"),
    ]
    cases = [Case(name, args, _bottleneck_params_expected(*args), why) for name, args, why in table]
    return run_cases("bottleneck_params", bottleneck_params, cases)


@lru_cache(maxsize=None)
def _stage_shapes_expected(input_size: int) -> Tuple[Tuple[int, int, int], ...]:
    with torch.device("meta"):
        backbone = RedNet(26).eval()
        with torch.no_grad():
            stages = backbone.forward_stages(torch.empty(1, 3, input_size, input_size))
    return tuple(tuple(int(s) for s in out.shape[1:]) for _, out in stages)


def check_stage_shapes(stage_shapes: Callable[[int], object]) -> bool:
    """Check ``stage_shapes(input_size) -> [(C, H, W), ...]`` (stem, layer1 ... layer4) against a forward pass."""
    table = [
        ("224 x 224 (ImageNet)", 224, "the paper's resolution: 56, 56, 28, 14, 7"),
        ("64 x 64", 64, "a small even size: every stride divides it"),
        ("65 x 65", 65, "odd sizes: each stride-2 layer gives ceil(H / 2) rows (padding keeps the last partial window)"),
        ("100 x 100", 100, "100 -> 50 -> 25 -> 25 -> 13 -> 7 -> 4: an odd size appears in the middle"),
        ("33 x 33", 33, "a tiny image: the last stage is 2 x 2, not 1 x 1"),
    ]
    cases = [
        Case(name, (size,), [tuple(shape) for shape in _stage_shapes_expected(size)], why)
        for name, size, why in table
    ]
    return run_cases("stage_shapes", stage_shapes, cases)


def _involution_flops_expected(channels: int, height: int, width: int, stride: int = 1, kernel_size: int = 7,
                               reduction_ratio: int = 4, group_channels: int = 16) -> int:
    with torch.device("meta"):
        layer = Involution(channels, kernel_size, stride, reduction_ratio, group_channels)
    return count_flops(layer, (1, channels, height, width), mode="madds").total


def check_involution_flops(involution_flops: Callable[..., object]) -> bool:
    """Check ``involution_flops(channels, height, width, stride=1, kernel_size=7, reduction_ratio=4,
    group_channels=16) -> int`` (multiply-adds, batch 1) against :func:`count_flops` in ``"madds"`` mode."""
    table = [
        ("layer1 involution: C=64, 56x56", (64, 56, 56), {}, "stride 1: kernel generation (two 1x1 convs) and aggregation (K^2 multiply-adds per output element) both run at all H x W positions"),
        ("stem involution: C=32, 112x112, K=3", (32, 112, 112), {"kernel_size": 3}, "K enters the aggregation as K^2 and conv2's width as K^2 * G"),
        ("layer2.0 involution: C=128, 56x56, stride 2", (128, 56, 56), {"stride": 2}, "stride 2: the kernels are generated from the pooled 28 x 28 map, and only 28 x 28 outputs are aggregated"),
        ("odd size: C=256, 15x15, stride 2", (256, 15, 15), {"stride": 2}, "odd size with stride 2: H' = ceil(15 / 2) = 8"),
        ("r=2, 8 channels per group: C=64, 10x12", (64, 10, 12), {"reduction_ratio": 2, "group_channels": 8}, "C/r hidden channels, G = C / group_channels groups; a non-square map"),
    ]
    cases = [
        Case(name, args, _involution_flops_expected(*args, **kwargs), why, kwargs=kwargs)
        for name, args, kwargs, why in table
    ]
    return run_cases("involution_flops", involution_flops, cases)

