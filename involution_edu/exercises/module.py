"""Checkers for notebook 05 (the full involution module).

Each checker builds a table of :class:`~involution_edu.exercises.framework.Case` whose
expected answers come from the library (:func:`~involution_edu.shapes.output_size`, the
layers of a real :class:`~involution_edu.module.Involution`, the module's own forward pass)
and hands it to :func:`~involution_edu.exercises.framework.run_cases`, which prints a verdict
and returns ``True`` only when every case passes.

Exercises checked here::

    involution_output_shape(input_shape, channels, kernel_size, stride)
        input_shape (B, C, H, W) -> (B, C, ceil(H / s), ceil(W / s))
    involution_madds(channels, height, width, kernel_size, stride, reduction_ratio, group_channels)
        -> multiply-adds of one Involution layer on an H x W input: the two 1x1 convolutions of
           kernel generation (on the pooled H' x W' grid) plus the aggregation K^2 * C * H' * W';
           batch norm, ReLU, average pooling and the conv2 bias are not counted
    group_of_channel(c, channels, groups) -> c // (channels // groups)
    involution_forward_student(x, module)
        x: (B, C, H, W), module: Involution -> module(x), (B, C, H', W')
"""

from __future__ import annotations

from typing import Callable, List

import torch

from ..module import Involution
from ..shapes import default_padding, group_of_channel, output_size
from .framework import Case, run_cases

__all__ = [
    "check_involution_output_shape",
    "check_involution_madds",
    "check_group_of_channel",
    "check_involution_forward",
    "involution_madds_reference",
    "seeded_module",
]


def check_involution_output_shape(involution_output_shape: Callable[..., object]) -> bool:
    """Check ``involution_output_shape(input_shape, channels, kernel_size, stride)``.

    The expected shape is ``(B, C, H', W')`` with ``H'`` the number of positions ``nn.Unfold``
    visits with padding ``(K - 1) // 2`` (:func:`~involution_edu.shapes.output_size`), which
    equals ``ceil(H / stride)`` for odd ``K``.
    """
    # (name, why, input_shape, channels, kernel_size, stride)
    table = [
        ("stride 1, K=7", "stride 1 with 'same' padding keeps H and W", (2, 64, 56, 56), 64, 7, 1),
        ("stride 2, even size 56", "stride 2 halves an even size: 56 -> 28", (1, 64, 56, 56), 64, 7, 2),
        ("stride 2, odd size 7x7", "an odd size rounds UP: ceil(7 / 2) = 4, not 3", (1, 32, 7, 7), 32, 3, 2),
        ("stride 3, 10x8", "ceil(10 / 3) = 4 and ceil(8 / 3) = 3: rows and columns separately", (3, 16, 10, 8), 16, 3, 3),
        ("K=1, stride 2, 5x9", "a 1x1 kernel with stride: still ceil(H / s)", (1, 16, 5, 9), 16, 1, 2),
        ("stride 2, 15x14, batch 2", "output channels = input channels (not G or K*K*G); rows and columns separately", (2, 64, 15, 14), 64, 7, 2),
    ]
    cases: List[Case] = []
    for name, why, input_shape, channels, k, stride in table:
        batch, _, height, width = input_shape
        padding = default_padding(k)
        expected = (batch, channels, output_size(height, k, stride, padding), output_size(width, k, stride, padding))
        cases.append(Case(name, (input_shape, channels, k, stride), expected, why))
    return run_cases("involution_output_shape", involution_output_shape, cases)


def involution_madds_reference(
    channels: int,
    height: int,
    width: int,
    kernel_size: int,
    stride: int,
    reduction_ratio: int,
    group_channels: int,
) -> int:
    """Multiply-adds of one :class:`~involution_edu.module.Involution` on a ``(C, H, W)`` input.

    Read off a real module: each 1x1 convolution costs ``weight.numel()`` multiply-adds per
    output position of the pooled grid ``H' x W'`` (``H' = ceil(H / stride)``), and the
    aggregation costs ``K * K`` per output element, ``K^2 * C * H' * W'``. Batch norm, ReLU,
    average pooling and the conv2 bias are not counted.
    """
    module = Involution(channels, kernel_size, stride, reduction_ratio, group_channels)
    padding = default_padding(kernel_size)
    positions = output_size(height, kernel_size, stride, padding) * output_size(width, kernel_size, stride, padding)
    reduce_madds = module.conv1.conv.weight.numel() * positions  # C -> C/r
    span_madds = module.conv2.conv.weight.numel() * positions  # C/r -> K*K*G
    aggregation_madds = kernel_size**2 * channels * positions
    return reduce_madds + span_madds + aggregation_madds


def check_involution_madds(involution_madds: Callable[..., object]) -> bool:
    """Check ``involution_madds(channels, height, width, kernel_size, stride, reduction_ratio, group_channels)``.

    Expected: :func:`involution_madds_reference` (conv1 + conv2 weights on the ``H' x W'`` grid,
    plus ``K^2 * C * H' * W'``; no batch norm, ReLU, pooling or bias).
    """
    # (name, why, channels, height, width, kernel_size, stride, reduction_ratio, group_channels)
    table = [
        ("RedNet stage 1: C=64, 56x56, K=7", "the paper's defaults: r = 4, 16 channels per group (G = 4)", 64, 56, 56, 7, 1, 4, 16),
        ("one group: C=16, 8x8, K=3", "G = 1: conv2 has K*K outputs", 16, 8, 8, 3, 1, 4, 16),
        ("stride 2, C=128, 28x28", "with stride 2 the kernels are generated on the pooled 14x14 grid", 128, 28, 28, 7, 2, 4, 16),
        ("stride 2, odd size 15x15", "H' = ceil(15 / 2) = 8, not floor", 64, 15, 15, 7, 2, 4, 16),
        ("C=48, r=2, 8 per group, 9x12", "another reduction ratio and group size (G = 6)", 48, 9, 12, 5, 1, 2, 8),
        ("K=1, stride 3, 10x10", "K = 1 and stride 3: H' = ceil(10 / 3) = 4", 32, 10, 10, 1, 3, 4, 16),
    ]
    cases: List[Case] = []
    for name, why, c, h, w, k, s, r, gc in table:
        expected = involution_madds_reference(c, h, w, k, s, r, gc)
        cases.append(Case(name, (c, h, w, k, s, r, gc), expected, why, rtol=0.0, atol=0.0))
    return run_cases("involution_madds", involution_madds, cases)


def check_group_of_channel(group_of_channel_student: Callable[..., object]) -> bool:
    """Check ``group_of_channel(c, channels, groups)``: the paper's ``c // (channels // groups)``."""
    # (name, why, c, channels, groups)
    table = [
        ("C=4, G=2, channel 1", "channels 0 and 1 form group 0 (contiguous blocks), so channel 1 is in group 0", 1, 4, 2),
        ("C=4, G=2, channel 2", "channel 2 starts the second block: group 1", 2, 4, 2),
        ("C=64, G=4, channel 20", "blocks of C / G = 16 channels: channel 20 is in group 1", 20, 64, 4),
        ("C=64, G=4, channel 63", "the last channel is in the last group, G - 1 = 3", 63, 64, 4),
        ("C=8, G=1, channel 7", "one group: every channel is in group 0", 7, 8, 1),
        ("C=6, G=6, channel 5", "one channel per group: group = channel", 5, 6, 6),
        ("C=48, G=3, channel 17", "blocks of 16: channels 16..31 are group 1", 17, 48, 3),
    ]
    cases: List[Case] = []
    for name, why, c, channels, groups in table:
        cases.append(Case(name, (c, channels, groups), group_of_channel(c, channels, groups), why, rtol=0.0, atol=0.0))
    return run_cases("group_of_channel", group_of_channel_student, cases)


def seeded_module(
    seed: int,
    channels: int,
    kernel_size: int,
    stride: int,
    reduction_ratio: int = 4,
    group_channels: int = 16,
) -> Involution:
    """A float64 :class:`Involution` in eval mode with seeded weights and non-trivial BN statistics."""
    generator = torch.Generator().manual_seed(seed)
    module = Involution(channels, kernel_size, stride, reduction_ratio, group_channels).double()
    with torch.no_grad():
        for tensor in list(module.parameters()) + [module.conv1.bn.running_mean, module.conv1.bn.running_var]:
            tensor.copy_(torch.randn(tensor.shape, generator=generator, dtype=torch.float64))
        module.conv1.bn.running_var.abs_().add_(0.5)
    return module.eval()


def check_involution_forward(involution_forward_student: Callable[..., object]) -> bool:
    """Check ``involution_forward_student(x, module)`` against ``module(x)``.

    The modules are float64, in eval mode, with seeded weights; the cases cover stride 1, 2
    and 3, odd and non-square sizes, groups > 1 and K = 1, 3, 7.
    """
    # (name, why, batch, channels, height, width, kernel_size, stride, reduction_ratio, group_channels)
    table = [
        ("stride 1, K=3, one group", "the basic case", 1, 16, 6, 6, 3, 1, 4, 16),
        ("stride 1, K=7, 4 groups", "groups > 1: channel c uses the kernels of group c // (C / G)", 2, 16, 9, 9, 7, 1, 2, 4),
        ("stride 2, even size 8x8", "stride 2: unfold x with stride 2 (the kernels already come from the pooled x)", 1, 8, 8, 8, 3, 2, 2, 4),
        ("stride 2, odd size 7x7", "odd size with stride 2: 4x4 positions, where the paper's code fails", 2, 8, 7, 7, 3, 2, 2, 2),
        ("K=1, 2 groups, 5x6", "a 1x1 kernel: each output is the input scaled by its own kernel", 1, 8, 5, 6, 1, 1, 2, 4),
        ("K=7, stride 3, 11x10", "stride 3, odd and non-square sizes, 3 groups", 2, 12, 11, 10, 7, 3, 3, 4),
    ]
    cases: List[Case] = []
    for seed, (name, why, batch, channels, h, w, k, stride, r, gc) in enumerate(table):
        module = seeded_module(seed, channels, k, stride, r, gc)
        x = torch.randn(batch, channels, h, w, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
        with torch.no_grad():
            expected = module(x)
        cases.append(Case(name, (x, module), expected, why, rtol=1e-9, atol=1e-10))
    return run_cases("involution_forward_student", _without_grad(involution_forward_student), cases)


def _without_grad(function: Callable[..., object]) -> Callable[..., object]:
    """Run the student's function under ``torch.no_grad`` (the checker compares values only)."""
    if not callable(function):
        return function

    def wrapped(*args, **kwargs):
        with torch.no_grad():
            return function(*args, **kwargs)

    return wrapped
