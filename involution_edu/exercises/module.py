"""Checkers and questions for notebook 05 (the full involution module).

Each checker builds a table of :class:`~involution_edu.exercises.framework.Case` whose expected
answers come from the library (the layers of a real :class:`~involution_edu.module.Involution`,
the module's own forward pass) and hands it to
:func:`~involution_edu.exercises.framework.run_cases`, which prints one verdict and returns
``True`` only when every case passes. The likely mistakes are computed with deliberately wrong
implementations, so the verdict can name them.

Exercises checked here::

    involution_madds(channels, height, width, kernel_size, stride, reduction_ratio, group_channels)
        -> multiply-adds of one Involution layer on an H x W input: the two 1x1 convolutions of
           kernel generation (on the pooled H' x W' grid) plus the aggregation K^2 * C * H' * W';
           batch norm, ReLU, average pooling and the conv2 bias are not counted
    fixed_involution(x, module)
        x: (B, C, H, W), module: an Involution in eval mode (its weights only) -> module(x),
        (B, C, ceil(H / s), ceil(W / s)): :func:`broken_involution` with its three bugs fixed
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

from ..counting import count_flops
from ..functional import involution, involution_unfold
from ..module import Involution
from ..reference import involution_loops
from ..shapes import default_padding, output_size
from .framework import Case, Question, run_cases

__all__ = [
    "QUESTIONS",
    "broken_involution",
    "check_fixed_involution",
    "check_involution_madds",
    "involution_madds_reference",
    "seeded_module",
]


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
        ("stride 2, non-square 9x14, r=2", "rows and columns separately: ceil(9 / 2) = 5, ceil(14 / 2) = 7",
         32, 9, 14, 3, 2, 2, 8),
    ]
    cases: List[Case] = []
    for name, why, c, h, w, k, s, r, gc in table:
        expected = involution_madds_reference(c, h, w, k, s, r, gc)
        hidden, groups = c // r, c // gc
        out_positions = -(-h // s) * -(-w // s)
        floor_positions = max(h // s, 1) * max(w // s, 1)
        generation = c * hidden + hidden * k * k * groups
        mistakes = [
            (generation * h * w + k * k * c * out_positions,
             "the kernel generation runs on the pooled H' x W' grid, not on the full H x W input"),
            (generation * out_positions + k * k * c * h * w,
             "the aggregation runs once per OUTPUT position, H' x W', not per input pixel"),
            (generation * h * w + k * k * c * h * w, "the stride is ignored: every part runs on the H' x W' grid"),
            ((generation + k * k * c) * floor_positions,
             "floor(H / s) rows: the output has ceil(H / s) (the last, partial block still gets an output)"),
            (expected + k * k * groups * out_positions, "conv2's bias is counted; the exercise leaves biases out"),
            (expected - hidden * k * k * groups * out_positions, "the span convolution conv2 (C/r -> K*K*G) is missing"),
            (expected - c * hidden * out_positions, "the reduce convolution conv1 (C -> C/r) is missing"),
            (expected - k * k * c * out_positions + k * k * groups * out_positions,
             "the aggregation is counted once per group; every one of the C channels does its own K*K multiply-adds"),
            (expected - k * k * c * out_positions, "the aggregation (K*K per output element) is missing"),
        ]
        mistakes = [(value, message) for value, message in mistakes if value != expected]
        cases.append(Case(name, (c, h, w, k, s, r, gc), expected, why, rtol=0.0, atol=0.0, mistakes=mistakes))
    return run_cases("involution_madds", involution_madds, cases,
                     forbidden=(involution_madds_reference, count_flops, ".count_flops", ".involution_madds_reference"),
                     what="the multiply-add count")


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




# --------------------------------------------------------------------------------------------
# Exercise: find and fix the three bugs
# --------------------------------------------------------------------------------------------

def broken_involution(x: torch.Tensor, module: Involution) -> torch.Tensor:
    """An involution forward pass with three bugs. x: (B, C, H, W) -> (B, C, H', W')."""
    k, s, groups = module.kernel_size, module.stride, module.groups
    batch, channels, height, width = x.shape
    pooled = F.avg_pool2d(x, s, s) if s > 1 else x  # one averaged pixel per output position
    bn = module.conv1.bn
    hidden = F.conv2d(pooled, module.conv1.conv.weight)  # reduce: C -> C/r
    hidden = torch.relu(F.batch_norm(hidden, None, None, bn.weight, bn.bias, training=True, eps=bn.eps))
    flat = F.conv2d(hidden, module.conv2.conv.weight, module.conv2.conv.bias)  # span: C/r -> G*K*K
    out_h, out_w = flat.shape[-2:]
    kernels = flat.view(batch, groups, 1, k * k, out_h, out_w)
    windows = F.unfold(x, k, padding=(k - 1) // 2, stride=s)  # (B, C*K*K, H'*W')
    windows = windows.view(batch, channels // groups, groups, k * k, out_h, out_w)
    out = (kernels.transpose(1, 2) * windows).sum(dim=3)  # (B, C/G, G, H', W')
    return out.reshape(batch, channels, out_h, out_w)


def _variant(x: torch.Tensor, module: Involution, *, modulo: bool = False, batch_stats: bool = False,
             floor: bool = False, relu: bool = True, bias: bool = True) -> torch.Tensor:
    """The module's forward pass (eval mode), or one with some of the likely bugs."""
    k, s, groups = module.kernel_size, module.stride, module.groups
    batch, channels = x.shape[:2]
    pooled = F.avg_pool2d(x, s, s, ceil_mode=not floor) if s > 1 else x
    bn = module.conv1.bn
    with torch.no_grad():
        hidden = F.conv2d(pooled, module.conv1.conv.weight)
        if batch_stats:
            hidden = F.batch_norm(hidden, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
        else:
            hidden = F.batch_norm(hidden, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False,
                                  eps=bn.eps)
        if relu:
            hidden = torch.relu(hidden)
        flat = F.conv2d(hidden, module.conv2.conv.weight, module.conv2.conv.bias if bias else None)
        out_h, out_w = flat.shape[-2:]
        kernels = flat.view(batch, groups, 1, k * k, out_h, out_w)
        windows = F.unfold(x, k, padding=(k - 1) // 2, stride=s)
        if modulo:
            windows = windows.view(batch, channels // groups, groups, k * k, out_h, out_w)
            return (kernels.transpose(1, 2) * windows).sum(dim=3).reshape(batch, channels, out_h, out_w)
        windows = windows.view(batch, groups, channels // groups, k * k, out_h, out_w)
        return (kernels * windows).sum(dim=3).reshape(batch, channels, out_h, out_w)


class _NoShortcutInvolution(Involution):
    """An :class:`Involution` whose own forward pass and kernel generator refuse to run."""

    def generate_kernels(self, x):  # type: ignore[override]
        raise RuntimeError("this exercise asks you to write the kernel generation yourself: "
                           "module.generate_kernels is switched off here")

    def forward(self, x, return_kernels=False):  # type: ignore[override]
        raise RuntimeError("this exercise asks you to write the forward pass yourself: "
                           "module(x) (the module's own forward) is switched off here")


def check_fixed_involution(fixed_involution: Callable[..., object]) -> bool:
    """Check ``fixed_involution(x, module)``: :func:`broken_involution` with its three bugs fixed.

    The expected output is the library module's own forward pass (eval mode, float64, seeded
    weights, BatchNorm running statistics far from any batch's). The module handed to the
    learner's function refuses ``module(x)`` and ``module.generate_kernels``.
    """
    # (name, why, batch, channels, height, width, kernel_size, stride, reduction_ratio, group_channels)
    table = [
        ("2 groups, stride 1, 6x6", "BatchNorm in evaluation mode (running_mean and running_var); channel c in "
         "group c // (C / G)", 1, 8, 6, 6, 3, 1, 2, 4),
        ("4 groups, stride 1, K=5, 7x9", "groups > 1: channel c uses the kernel of group c // (C / G)",
         2, 16, 7, 9, 5, 1, 2, 4),
        ("stride 2, even size 8x10, 2 groups", "stride 2: kernels from the 2x2-averaged input", 1, 8, 8, 10, 3, 2, 2, 4),
        ("stride 2, odd size 7x7", "odd size with stride 2: unfold gives ceil(7/2) = 4 positions per axis, so the "
         "pool must give 4 too (ceil_mode=True)", 2, 8, 7, 7, 3, 2, 2, 2),
        ("stride 3, K=7, 11x10, 3 groups", "stride 3, odd and non-square sizes", 1, 12, 11, 10, 7, 3, 3, 4),
        ("K=1, one group, batch 3, 5x6", "K = 1; one group; a batch of three", 3, 8, 5, 6, 1, 1, 4, 8),
    ]
    cases: List[Case] = []
    for seed, (name, why, batch, channels, h, w, k, stride, r, gc) in enumerate(table):
        module = seeded_module(seed, channels, k, stride, r, gc)
        x = torch.randn(batch, channels, h, w, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
        with torch.no_grad():
            expected = module(x)
        mistakes = []
        for message, kwargs in [
            ("channel c still takes the kernel of group c % G (keras.io's grouping, notebook 02); the paper's "
             "is c // (C // G), contiguous blocks", dict(modulo=True)),
            ("BatchNorm still normalises with this batch's own mean and variance (training mode); in evaluation "
             "mode it uses running_mean and running_var", dict(batch_stats=True)),
            ("the pool still drops the last, partial block (floor mode): use ceil_mode=True", dict(floor=True)),
            ("the ReLU after the BatchNorm is missing", dict(relu=False)),
            ("conv2's bias is missing", dict(bias=False)),
            ("two bugs at once: channel c still takes the kernel of group c % G, and BatchNorm still uses the "
             "batch's statistics", dict(modulo=True, batch_stats=True)),
            ("all three bugs are still there", dict(modulo=True, batch_stats=True, floor=True)),
        ]:
            try:
                mistakes.append((_variant(x, module, **kwargs), message))
            except RuntimeError:  # a floor-mode pool on an odd size does not even run
                pass
        module.__class__ = _NoShortcutInvolution
        cases.append(Case(name, (x, module), expected, why, rtol=1e-9, atol=1e-10, mistakes=mistakes))
    forbidden = (Involution.forward, Involution.generate_kernels, involution, involution_unfold, involution_loops,
                 ".generate_kernels", ".forward", ".involution_unfold", ".involution_loops")
    return run_cases("fixed_involution", _without_grad(fixed_involution), cases, forbidden=forbidden,
                     what="the fixed forward pass")


def _without_grad(function: Callable[..., object]) -> Callable[..., object]:
    """Run the learner's function under ``torch.no_grad`` (the checker compares values only)."""
    if not callable(function):
        return function

    def wrapped(*args, **kwargs):
        with torch.no_grad():
            return function(*args, **kwargs)

    wrapped.__wrapped__ = function  # the shortcut guard inspects the learner's own code
    return wrapped


# --------------------------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------------------------

QUESTIONS: Dict[str, Question] = {
    "locally_connected": Question(
        prompt="A locally connected layer has its own learned K x K kernel at every position (not generated). "
               "Shift its input by 3 pixels: what happens to the output?",
        choices={
            "a": "it shifts by 3 pixels too, like a convolution's",
            "b": "it changes in general: the content moves but each position keeps its own kernel",
            "c": "it does not change at all",
            "d": "it shifts by 3 pixels, except that it is also scaled",
        },
        answer="b",
        explanation="The kernel at position (i, j) is a parameter tied to (i, j). After the shift, a different "
                    "pixel sits under that kernel, so the output is not the shifted output. Involution's kernel "
                    "moves with the content because it is computed from it.",
        wrong={
            "a": "a convolution is equivariant because its one kernel is the same everywhere; here each position "
                 "has a different kernel, and the kernels do not move with the content",
            "c": "the input under each kernel has changed, so the output changes",
            "d": "nothing rescales the output; the kernels at the new positions are simply different kernels",
        },
    ),
    "stride_shift": Question(
        prompt="An Involution with stride 2. Shift the input by ONE pixel (circularly). What happens to the output?",
        choices={
            "a": "it shifts by one output pixel",
            "b": "it shifts by half an output pixel, which the grid cannot show, so it changes almost everywhere",
            "c": "it does not change",
            "d": "only the border changes",
        },
        answer="b",
        explanation="The output grid samples every second input pixel, and the kernels come from 2x2 averages: a "
                    "one-pixel shift moves the content between the samples and regroups the averaged blocks. Shifts "
                    "by multiples of the stride shift the output by whole pixels (away from the border).",
        wrong={
            "a": "one output pixel is two input pixels; a shift by 2 does that, a shift by 1 does not",
            "c": "the windows now sit on different pixels, so the output changes",
            "d": "that is zero padding's effect at stride 1; with stride 2 the sampling grid itself no longer lines up",
        },
    ),
}
