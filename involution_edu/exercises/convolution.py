"""Checkers for notebook 01 (convolution recap and the idea of involution).

Each checker builds a table of :class:`~involution_edu.exercises.framework.Case` whose
expected answers come from PyTorch (``F.conv2d``), from the library's
:class:`~involution_edu.module.Involution` (its parameter count) or from the loop reference
:func:`~involution_edu.reference.involution_loops`, and hands it to
:func:`~involution_edu.exercises.framework.run_cases`, which prints a verdict and returns
``True`` only when every case passes. A checker never raises because of the student's code.

Exercises checked here::

    conv2d_loops(x, weight)
        x: (B, C_in, H, W), weight: (C_out, C_in, K, K) -> (B, C_out, H - K + 1, W - K + 1)
        (stride 1, no padding, no bias; cross-correlation like F.conv2d, no kernel flip)
    involution_param_count(channels, kernel_size, reduction_ratio, group_channels) -> int
    depthwise_as_involution(weight, batch, out_h, out_w)
        weight: (C, 1, K, K) of a depthwise conv -> kernels (B, G=C, K, K, H', W')
"""

from __future__ import annotations

from typing import Callable, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..module import Involution
from ..reference import involution_loops
from ..shapes import output_size
from .framework import Case, run_cases, to_numpy

__all__ = [
    "check_conv2d_loops",
    "check_involution_param_count",
    "check_depthwise_as_involution",
    "involution_param_count_reference",
]


def _conv2d_torch(x: np.ndarray, weight: np.ndarray, stride: int = 1, padding: int = 0, groups: int = 1) -> np.ndarray:
    """``F.conv2d`` on NumPy float64 arrays: ``x (B, C_in, H, W)``, ``weight (C_out, C_in/groups, K, K)``."""
    out = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), stride=stride, padding=padding, groups=groups)
    return out.numpy()


def check_conv2d_loops(conv2d_loops: Callable[..., object]) -> bool:
    """Check ``conv2d_loops(x, weight)`` against ``F.conv2d(x, weight)`` (stride 1, no padding, no bias).

    ``x``: ``(B, C_in, H, W)`` and ``weight``: ``(C_out, C_in, K, K)``, float64 NumPy arrays; the
    answer has shape ``(B, C_out, H - K + 1, W - K + 1)``. ``F.conv2d`` computes a
    cross-correlation: ``y[b, o, i, j] = sum_{c,u,v} weight[o, c, u, v] * x[b, c, i + u, j + v]``.
    """
    rng = np.random.default_rng(1)
    # (name, why, batch, in_channels, out_channels, height, width, kernel_size)
    table = [
        ("one channel, 5x5, K=3", "one kernel slid over one image, no flip (cross-correlation)", 1, 1, 1, 5, 5, 3),
        ("C_in=3 -> C_out=2", "sum over ALL input channels; one kernel per (out, in) pair: weight[o, c]", 1, 3, 2, 6, 6, 3),
        ("C_in=2 -> C_out=4, batch 2", "more outputs than inputs, and a batch axis", 2, 2, 4, 5, 5, 3),
        ("odd non-square 7x5, K=3", "H and W are separate: H' = H - K + 1 and W' = W - K + 1", 1, 2, 3, 7, 5, 3),
        ("K=1", "a 1x1 kernel only mixes channels", 2, 3, 2, 4, 3, 1),
        ("K=5 on 6x9", "a wider kernel: the window starts at (i, j) and covers K rows and columns", 1, 2, 2, 6, 9, 5),
        ("kernel as big as the image", "K = H = W: a single output position", 1, 2, 3, 3, 3, 3),
    ]
    cases: List[Case] = []
    for name, why, batch, c_in, c_out, height, width, k in table:
        x = rng.standard_normal((batch, c_in, height, width))
        weight = rng.standard_normal((c_out, c_in, k, k))
        cases.append(Case(name, (x, weight), _conv2d_torch(x, weight), why, rtol=1e-9, atol=1e-10))
    return run_cases("conv2d_loops", conv2d_loops, cases)


def involution_param_count_reference(channels: int, kernel_size: int, reduction_ratio: int = 4,
                                     group_channels: int = 16) -> int:
    """Parameters of ``Involution(channels, kernel_size, 1, reduction_ratio, group_channels)``, counted on the module."""
    module = Involution(channels, kernel_size, 1, reduction_ratio, group_channels)
    return sum(p.numel() for p in module.parameters())


def check_involution_param_count(involution_param_count: Callable[..., object]) -> bool:
    """Check ``involution_param_count(channels, kernel_size, reduction_ratio, group_channels)``.

    The expected count is ``sum(p.numel() for p in Involution(...).parameters())``: conv1
    ``C -> C/r`` (no bias), BatchNorm's scale and shift (its running statistics are buffers),
    conv2 ``C/r -> K^2 G`` with bias, where ``G = C // group_channels``.
    """
    # (name, why, channels, kernel_size, reduction_ratio, group_channels)
    table: List[Tuple[str, str, int, int, int, int]] = [
        ("C=64, K=7, paper defaults", "r = 4 and 16 channels per group, so G = 4", 64, 7, 4, 16),
        ("C=16, K=3: one group", "G = C // group_channels = 1", 16, 3, 4, 16),
        ("C=512, K=7", "G = 32 groups: conv2 makes K*K*G = 1568 kernel values per position", 512, 7, 4, 16),
        ("C=48, K=5, r=2, 8 per group", "another reduction ratio and group size (C/r = 24, G = 6)", 48, 5, 2, 8),
        ("C=36, K=3, r=8, 4 per group", "C/r rounds down: 36 // 8 = 4 hidden channels", 36, 3, 8, 4),
        ("C=32, K=1", "K = 1: one kernel value per group and position", 32, 1, 4, 16),
        ("C=8, K=3, 1 channel per group", "group_channels = 1: G = C, one kernel per channel", 8, 3, 4, 1),
    ]
    cases = [
        Case(name, (channels, k, r, gc), involution_param_count_reference(channels, k, r, gc), why)
        for name, why, channels, k, r, gc in table
    ]
    return run_cases("involution_param_count", involution_param_count, cases)


def _depthwise_stage_shape(depthwise_as_involution: Callable[..., object]) -> Callable[..., object]:
    """Wrap the student's function so that it returns the shape of the kernels it builds."""

    def kernels_shape(weight, batch, out_h, out_w):
        kernels = to_numpy(depthwise_as_involution(weight, batch, out_h, out_w))
        return tuple(int(s) for s in np.shape(kernels))

    return kernels_shape


def _depthwise_stage_values(depthwise_as_involution: Callable[..., object]) -> Callable[..., object]:
    """Wrap the student's function: build the kernels, then apply them with the loop reference."""

    def involution_output(weight, batch, out_h, out_w, x, stride, padding):
        kernels = np.asarray(to_numpy(depthwise_as_involution(weight, batch, out_h, out_w)), dtype=np.float64)
        return involution_loops(x, kernels, stride=stride, padding=padding)

    return involution_output


def check_depthwise_as_involution(depthwise_as_involution: Callable[..., object]) -> bool:
    """Check ``depthwise_as_involution(weight, batch, out_h, out_w)``.

    ``weight`` is the ``(C, 1, K, K)`` weight of a depthwise convolution (``groups=C``); the answer
    must be involution kernels ``(B, G=C, K, K, H', W')`` (one group per channel, the same kernel at
    every position) such that ``involution_loops(x, kernels, stride, padding)`` equals
    ``F.conv2d(x, weight, stride=stride, padding=padding, groups=C)``.

    Two stages: first the shape of the kernels, then the output of the involution they define.
    """
    rng = np.random.default_rng(2)
    # (name, why, batch, channels, height, width, kernel_size, stride, padding)
    table = [
        ("one channel, 5x5, K=3, no padding", "the kernel is the same at every position (i, j)", 1, 1, 5, 5, 3, 1, 0),
        ("3 channels, 'same' padding", "G = C: channel c has its own kernel weight[c, 0]", 1, 3, 5, 5, 3, 1, 1),
        ("batch 2, 4 channels, odd 7x5", "the kernels repeat over the batch axis and over H' x W'", 2, 4, 7, 5, 3, 1, 1),
        ("stride 2 on 7x7", "with stride 2 the kernels cover the H' x W' = 4 x 4 output positions", 1, 2, 7, 7, 3, 2, 1),
        ("K=5, 2 channels", "the K x K axes keep their order: kernels[b, c, u, v] = weight[c, 0, u, v]", 1, 2, 6, 6, 5, 1, 2),
        ("K=1", "a 1x1 depthwise conv scales each channel", 2, 3, 4, 3, 1, 1, 0),
    ]
    shape_cases: List[Case] = []
    value_cases: List[Case] = []
    for name, why, batch, channels, height, width, k, stride, padding in table:
        x = rng.standard_normal((batch, channels, height, width))
        weight = rng.standard_normal((channels, 1, k, k))
        out_h = output_size(height, k, stride, padding)
        out_w = output_size(width, k, stride, padding)
        shape = (batch, channels, k, k, out_h, out_w)
        shape_cases.append(Case(name, (weight, batch, out_h, out_w), shape,
                                f"kernels must have the layout (B, G, K, K, H', W') with G = C, here {shape}"))
        expected = _conv2d_torch(x, weight, stride=stride, padding=padding, groups=channels)
        value_cases.append(Case(name, (weight, batch, out_h, out_w, x, stride, padding), expected, why,
                                rtol=1e-9, atol=1e-10))
    if not run_cases("depthwise_as_involution (kernel shape)", _depthwise_stage_shape(depthwise_as_involution),
                     shape_cases):
        return False
    return run_cases("depthwise_as_involution (involution_loops vs F.conv2d(groups=C))",
                     _depthwise_stage_values(depthwise_as_involution), value_cases)
