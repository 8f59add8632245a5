"""Checkers and questions for notebook 01 (convolution recap and the idea of involution).

Each checker builds a table of :class:`~involution_edu.exercises.framework.Case` whose
expected answers come from PyTorch (``F.conv2d``), from the library's
:class:`~involution_edu.module.Involution` (its parameter count) or from the loop reference
:func:`~involution_edu.reference.involution_loops`, names the likely mistakes
(``Case.mistakes``, computed with deliberately wrong versions), forbids the library
equivalents, and hands it to :func:`~involution_edu.exercises.framework.run_cases`, which prints
one verdict and returns ``True`` only when every case passes. A checker never raises.

Exercises checked here::

    conv2d_loops(x, weight, stride=1, padding=0)
        x: (B, C_in, H, W), weight: (C_out, C_in, K, K) -> (B, C_out, H', W')
        cross-correlation like F.conv2d (no kernel flip, no bias), zero padding p, stride s
    widest_kernel(channels, budget, reduction_ratio, group_channels) -> int
        the largest odd K whose involution fits a parameter budget (0 if none)
    depthwise_as_involution(weight, batch, height, width, stride, padding)
        weight: (C, 1, K, K) of a depthwise conv -> kernels (B, G=C, K, K, H', W')

Questions (``QUESTIONS``): ``depthwise``, ``channel_mixing``, ``largest_term``.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import shapes
from ..module import Involution
from ..reference import involution_loops, involution_numpy
from .framework import Case, Question, run_cases

__all__ = [
    "check_conv2d_loops",
    "check_widest_kernel",
    "check_depthwise_as_involution",
    "involution_param_count_reference",
    "QUESTIONS",
]

_CONV_FORBIDDEN = (F.conv2d, torch.conv2d, nn.Conv2d, F.conv_transpose2d, F.unfold, nn.Unfold, torch.nn.functional.conv1d,
                   ".conv2d", ".unfold", ".Conv2d", ".correlate2d", ".convolve2d", ".correlate", ".convolve",
                   ".fftconvolve")


# --------------------------------------------------------------------------------- conv2d_loops
def _conv2d_torch(x: np.ndarray, weight: np.ndarray, stride: int = 1, padding: int = 0, groups: int = 1) -> np.ndarray:
    """``F.conv2d`` on NumPy float64 arrays: ``x (B, C_in, H, W)``, ``weight (C_out, C_in/groups, K, K)``."""
    out = F.conv2d(torch.from_numpy(x), torch.from_numpy(np.array(weight, dtype=np.float64, copy=True)), stride=stride,
                   padding=padding, groups=groups)
    return out.numpy()


def check_conv2d_loops(conv2d_loops: Callable[..., object]) -> bool:
    """Check ``conv2d_loops(x, weight, stride=1, padding=0)`` against ``F.conv2d`` (no bias).

    ``x``: ``(B, C_in, H, W)`` and ``weight``: ``(C_out, C_in, K, K)``, float64 NumPy arrays;
    the answer has shape ``(B, C_out, H', W')`` with ``H' = (H + 2p - K) // s + 1``:
    ``y[b, o, i, j] = sum_{c,u,v} weight[o, c, u, v] * x_padded[b, c, i*s + u, j*s + v]``.
    ``F.conv2d``, ``nn.Conv2d``, ``F.unfold`` and SciPy's correlate/convolve are forbidden.
    """
    rng = np.random.default_rng(1)
    # (name, why, batch, in_channels, out_channels, height, width, kernel_size, stride, padding)
    table = [
        ("one channel, 5x5, K=3", "one kernel slid over one image, no flip (cross-correlation)", 1, 1, 1, 5, 5, 3, 1, 0),
        ("C_in=3 -> C_out=2", "sum over ALL input channels; one kernel per (out, in) pair: weight[o, c]",
         1, 3, 2, 6, 6, 3, 1, 0),
        ("C_in=2 -> C_out=4, batch 2", "more outputs than inputs, and a batch axis", 2, 2, 4, 5, 5, 3, 1, 0),
        ("odd non-square 7x5, K=3", "H and W are separate axes", 1, 2, 3, 7, 5, 3, 1, 0),
        ("padding 1 on 5x6", "zero padding: the window may hang over the border, the zeros add nothing",
         1, 2, 2, 5, 6, 3, 1, 1),
        ("stride 2 on 7x7, padding 1", "stride 2: output (i, j) sits over input pixel (2i, 2j); H' = 4",
         1, 3, 3, 7, 7, 3, 2, 1),
        ("stride 2 on 8x6, no padding", "floor((8 - 3) / 2) + 1 = 3 rows, floor((6 - 3) / 2) + 1 = 2 columns",
         2, 2, 2, 8, 6, 3, 2, 0),
        ("K=1, stride 2", "a 1x1 kernel only mixes channels; stride 2 keeps every second pixel", 2, 3, 2, 5, 4, 1, 2, 0),
        ("K=5, stride 3, padding 2 on 9x10", "every argument at once", 1, 2, 3, 9, 10, 5, 3, 2),
        ("kernel as big as the image", "K = H = W: a single output position", 1, 2, 3, 3, 3, 3, 1, 0),
    ]
    cases: List[Case] = []
    for name, why, batch, c_in, c_out, height, width, k, stride, padding in table:
        x = rng.standard_normal((batch, c_in, height, width))
        weight = rng.standard_normal((c_out, c_in, k, k))
        expected = _conv2d_torch(x, weight, stride, padding)
        mistakes = [
            (_conv2d_torch(x, weight[:, :, ::-1, ::-1], stride, padding),
             "you flipped the kernel (a true convolution); F.conv2d is a cross-correlation: weight[o, c, u, v] "
             "multiplies x[..., i*s + u, j*s + v]"),
            (_conv2d_torch(x, weight.transpose(0, 1, 3, 2), stride, padding),
             "the kernel is transposed: weight[o, c, u, v] must meet row offset u and column offset v, "
             "not the other way round"),
        ]
        if c_in == c_out:
            mistakes.append((_conv2d_torch(x, weight.transpose(1, 0, 2, 3), stride, padding),
                             "you used weight[c, o] instead of weight[o, c]: the first axis is the OUTPUT channel"))
        cases.append(Case(name, (x, weight), expected, why, kwargs=dict(stride=stride, padding=padding),
                          rtol=1e-9, atol=1e-10, mistakes=mistakes))
    return run_cases("conv2d_loops", conv2d_loops, cases, forbidden=_CONV_FORBIDDEN,
                     what="the convolution as loops")


# ---------------------------------------------------------------------------------- widest_kernel
def involution_param_count_reference(channels: int, kernel_size: int, reduction_ratio: int = 4,
                                     group_channels: int = 16) -> int:
    """Parameters of ``Involution(channels, kernel_size, 1, reduction_ratio, group_channels)``, counted on the module."""
    module = Involution(channels, kernel_size, 1, reduction_ratio, group_channels)
    return sum(p.numel() for p in module.parameters())


def _count(channels: int, k: int, r: int, gc: int, *, bias: bool = True, bn: bool = True,
           groups_is_group_channels: bool = False) -> int:
    """The parameter count by formula, with switches that reproduce the likely mistakes."""
    hidden = channels // r
    groups = gc if groups_is_group_channels else channels // gc
    return channels * hidden + (2 * hidden if bn else 0) + hidden * k * k * groups + (k * k * groups if bias else 0)


def _widest(channels: int, budget: int, r: int, gc: int, step: int = 2, **count_switches: bool) -> int:
    """Largest K (odd when ``step`` is 2) whose count is within the budget; 0 when not even K = 1 fits."""
    best, k = 0, 1
    while _count(channels, k, r, gc, **count_switches) <= budget:
        best, k = k, k + step
    return best


def check_widest_kernel(widest_kernel: Callable[..., object]) -> bool:
    """Check ``widest_kernel(channels, budget, reduction_ratio, group_channels) -> int``.

    The answer is the largest ODD ``K`` such that ``Involution(channels, K, 1, reduction_ratio,
    group_channels)`` has at most ``budget`` parameters, or 0 when not even ``K = 1`` fits. Some
    budgets are the count of a ``3x3`` convolution ``C -> C`` with bias (``9 C^2 + C``), the layer
    RedNet replaces; others sit just below the next odd ``K``, where a count that leaves out a
    term (W1's bias, BN's two vectors) picks a window that is too wide.
    """
    # (name, why, channels, budget, reduction_ratio, group_channels)
    table = [
        ("C=64, a 3x3 conv's budget", "9 * 64^2 + 64 parameters: how wide can the involution's window be?", 64,
         9 * 64 * 64 + 64, 4, 16),
        ("C=256, a 3x3 conv's budget", "the same question at RedNet's stage-3 width", 256, 9 * 256 * 256 + 256, 4, 16),
        ("C=64, the paper's 7x7 layer exactly", "a budget equal to the count of K = 7 still allows K = 7", 64,
         _count(64, 7, 4, 16), 4, 16),
        ("C=64, just below K = 9", "one parameter short of K = 9: every term of the count matters", 64,
         _count(64, 9, 4, 16) - 1, 4, 16),
        ("C=128, r=2, 8 per group, just below K = 5", "another r and group size; just short of K = 5", 128,
         _count(128, 5, 2, 8) - 1, 2, 8),
        ("C=96, r=8, 32 per group, just below K = 13", "G = 3 groups, hidden width 12", 96,
         _count(96, 13, 8, 32) - 1, 8, 32),
        ("C=48, r=4, 1 per group, a 3x3 conv's budget", "group_channels = 1: G = C groups", 48, 9 * 48 * 48 + 48, 4, 1),
        ("C=256, r=1, one group, 300 short of K = 9", "a wide generator (C/r = 256): BN's 2*C/r = 512 values count",
         256, _count(256, 9, 1, 256) - 300, 1, 256),
        ("C=32, tiny budget", "not even K = 1 fits: the answer is 0", 32, 100, 4, 16),
    ]
    cases: List[Case] = []
    for name, why, channels, budget, r, gc in table:
        expected = _widest(channels, budget, r, gc)
        mistakes = []
        for wrong, message in [
            (_widest(channels, budget, r, gc, bias=False),
             "your count leaves out the bias of W1 (K*K*G values), so your window is one size too wide"),
            (_widest(channels, budget, r, gc, bn=False),
             "your count leaves out BatchNorm's scale and shift (2*C/r values), so your window is too wide"),
            (_widest(channels, budget, r, gc, groups_is_group_channels=True),
             "you used group_channels as the number of groups G; G = C // group_channels"),
            (_widest(channels, budget, r, gc, step=1), "K must be odd (the window needs a centre pixel); "
                                                        "you returned an even K"),
        ]:
            if wrong == expected:
                continue
            for index, (other, other_message) in enumerate(mistakes):
                if other == wrong:  # two mistakes give the same answer here: name both
                    mistakes[index] = (other, f"{other_message}; or {message}")
                    break
            else:
                mistakes.append((wrong, message))
        cases.append(Case(name, (channels, budget, r, gc), expected, why, mistakes=mistakes))
    return run_cases("widest_kernel", widest_kernel, cases,
                     forbidden=(Involution, involution_param_count_reference),
                     what="the parameter count")


def _depthwise_kernels(weight: np.ndarray, batch: int, out_h: int, out_w: int, transpose: bool = False) -> np.ndarray:
    kernels = weight[:, 0].transpose(0, 2, 1) if transpose else weight[:, 0]
    return np.broadcast_to(kernels[None, :, :, :, None, None], (batch,) + kernels.shape + (out_h, out_w))


def check_depthwise_as_involution(depthwise_as_involution: Callable[..., object]) -> bool:
    """Check ``depthwise_as_involution(weight, batch, height, width, stride, padding)``.

    ``weight`` is the ``(C, 1, K, K)`` weight of a depthwise convolution (``groups=C``) applied
    to inputs of size ``height x width`` with the given stride and zero padding; the answer must
    be the involution kernels ``(B, G=C, K, K, H', W')`` with
    ``kernels[b, c, u, v, i, j] = weight[c, 0, u, v]`` at every sample and output position, so
    that ``involution_loops(x, kernels, stride, padding)`` equals
    ``F.conv2d(x, weight, stride=stride, padding=padding, groups=C)`` (the tests check that).
    ``H'`` and ``W'`` are the learner's to work out: ``output_size`` is forbidden.
    """
    rng = np.random.default_rng(2)
    # (name, why, batch, channels, height, width, kernel_size, stride, padding)
    table = [
        ("one channel, 5x5, K=3, no padding", "the kernel is the same at every position (i, j)", 1, 1, 5, 5, 3, 1, 0),
        ("3 channels, 'same' padding", "G = C: channel c has its own kernel weight[c, 0]", 1, 3, 5, 5, 3, 1, 1),
        ("batch 2, 4 channels, odd 7x5", "the kernels repeat over the batch axis and over H' x W'", 2, 4, 7, 5, 3, 1, 1),
        ("stride 2 on 7x7", "with stride 2 the kernels cover the H' x W' = 4 x 4 output positions", 1, 2, 7, 7, 3, 2, 1),
        ("stride 2 on 8x6, no padding", "H' = (8 - 3) // 2 + 1 = 3, W' = (6 - 3) // 2 + 1 = 2", 2, 3, 8, 6, 3, 2, 0),
        ("K=5, 2 channels", "the K x K axes keep their order: kernels[b, c, u, v] = weight[c, 0, u, v]",
         1, 2, 6, 6, 5, 1, 2),
        ("K=1, stride 3", "a 1x1 depthwise conv scales each channel", 2, 3, 7, 5, 1, 3, 0),
    ]
    cases: List[Case] = []
    for name, why, batch, channels, height, width, k, stride, padding in table:
        weight = rng.standard_normal((channels, 1, k, k))
        out_h = shapes.output_size(height, k, stride, padding)
        out_w = shapes.output_size(width, k, stride, padding)
        expected = _depthwise_kernels(weight, batch, out_h, out_w)
        candidates = [
            (_depthwise_kernels(weight, batch, height + 2 * padding - k + 1, width + 2 * padding - k + 1),
             "you left out the stride: H' = (H + 2p - K) // s + 1"),
            (_depthwise_kernels(weight, batch, height, width), "H' and W' are the OUTPUT size, not the input's: "
                                                               "(H + 2p - K) // s + 1"),
            (_depthwise_kernels(weight, batch, -(-(height + 2 * padding - k) // stride) + 1,
                                -(-(width + 2 * padding - k) // stride) + 1),
             "round down, not up: H' = floor((H + 2p - K) / s) + 1"),
            (_depthwise_kernels(weight, batch, (height - k) // stride + 1, (width - k) // stride + 1),
             "you left out the padding: H' = (H + 2p - K) // s + 1"),
            (_depthwise_kernels(weight, 1, out_h, out_w), "the kernels need a batch axis of length B"),
            (_depthwise_kernels(weight, batch, out_h, out_w, transpose=True),
             "the kernel is transposed: kernels[b, c, u, v, i, j] must be weight[c, 0, u, v] (u is the row offset)"),
        ]
        mistakes = [(wrong, message) for wrong, message in candidates
                    if wrong.shape != expected.shape or not np.array_equal(wrong, expected)]
        cases.append(Case(name, (weight, batch, height, width, stride, padding), expected, why, mistakes=mistakes))
    return run_cases("depthwise_as_involution", depthwise_as_involution, cases,
                     forbidden=(shapes.output_size, involution_loops, involution_numpy, Involution),
                     what="the output size and the kernels")


# ------------------------------------------------------------------------------------ questions
QUESTIONS = {
    "depthwise": Question(
        prompt=("A depthwise convolution, nn.Conv2d(C, C, K, groups=C), has one K x K kernel per channel, "
                "the same at every position. In the paper's terms it is:"),
        choices={
            "a": "spatial-specific and channel-agnostic, like involution",
            "b": "spatial-agnostic and channel-specific: an involution-style layout with G = C, the most "
                 "channel-specific end of the range, whose kernels do not depend on the position",
            "c": "spatial-agnostic and channel-agnostic",
            "d": "spatial-specific and channel-specific",
        },
        answer="b",
        explanation=("The weight (C, 1, K, K) has no position axis (spatial-agnostic) and a kernel of its own "
                     "for every channel (channel-specific). In involution's terms that is G = C groups of one "
                     "channel: the most channel-specific choice of G, with position-independent kernels."),
        wrong={
            "a": "Its kernel has no position axis: the same kernel is slid over every position, so it is "
                 "spatial-agnostic, not spatial-specific.",
            "c": "Channel-agnostic would mean channels SHARE a kernel; here every channel has its own.",
            "d": "Spatial-specific would need a kernel per position; the depthwise weight (C, 1, K, K) has none.",
        },
    ),
    "channel_mixing": Question(
        prompt=("Involution(channels=16, kernel_size=3, group_channels=8) (G = 2), in eval mode. You change "
                "input channel 0 at ONE pixel (i, j) and nothing else. At that same output pixel (i, j), how "
                "many of the 16 output channels change?"),
        answer=16,
        rtol=0.0,
        explanation=("All 16. The aggregation alone would change only channel 0 (Y_c reads X_c only). But the "
                     "kernels at (i, j) are generated from the whole feature vector X_ij, all C channels: the "
                     "changed pixel changes the kernels of BOTH groups at (i, j), and every output channel there "
                     "is a sum with those kernels. Involution mixes channels through its kernel generator."),
        mistakes=[
            (1, "That is true of the aggregation with FIXED kernels (Y_c reads only X_c). Here the kernels are "
                "generated from X_ij, all C channels, so they change too."),
            (8, "The group of channel 0 is not the only one affected: phi's first 1x1 conv reads all C channels, "
                "so the kernels of both groups change."),
        ],
    ),
    "largest_term": Question(
        prompt=("Involution(256, kernel_size=7) with the paper's r = 4 and 16 channels per group (G = 16). Which "
                "part of the kernel generator phi holds the most parameters?"),
        choices={
            "a": "W0, the 1x1 conv C -> C/r",
            "b": "the BatchNorm between the two convs",
            "c": "W1, the 1x1 conv C/r -> K*K*G",
            "d": "the bias of W1",
        },
        answer="c",
        explanation=("W1 has (C/r) * K^2 * G = 64 * 49 * 16 = 50,176 weights, W0 has C * C/r = 16,384, BN 128 and the "
                     "bias K^2 * G = 784. With 16 channels per group, W1 grows like (49/64) C^2 and beats W0's C^2/4."),
        wrong={
            "a": "W0 has C * C/r = 256 * 64 = 16,384 weights; W1 has 64 * 49 * 16 = 50,176.",
            "b": "BN has only 2 * C/r = 128 parameters (its running statistics are buffers).",
            "d": "The bias of W1 has K^2 * G = 49 * 16 = 784 values, one per generated kernel value.",
        },
    ),
}
