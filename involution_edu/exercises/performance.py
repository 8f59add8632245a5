"""Checkers for notebook 08 (making it fast: bytes, arithmetic intensity, the offset loop).

Each checker builds a table of :class:`~involution_edu.exercises.framework.Case` whose
expected answers come from the library (:mod:`involution_edu.roofline` for the counts, the
loop reference :func:`~involution_edu.reference.involution_loops` for values) and hands it to
:func:`~involution_edu.exercises.framework.run_cases`, which prints a verdict and returns
``True`` only when every case passes.

Exercises checked here::

    bytes_moved(batch, channels, height, width, kernel_size, groups, stride, dtype_bytes)
        -> least bytes of one involution layer's forward pass: read x and kernels, write out
           (padding (K - 1) // 2, dilation 1)
    arithmetic_intensity(batch, channels, height, width, kernel_size, groups, stride, dtype_bytes)
        -> FLOPs per byte of that forward pass (a multiply-add is 2 FLOPs)
    involution_offsets_student(x, kernels, stride, padding, dilation)
        x: (B, C, H, W), kernels: (B, G, K, K, H', W') -> (B, C, H', W')   (torch, a loop
        over the K * K kernel offsets, no unfold)
"""

from __future__ import annotations

from typing import Callable, List

import torch

from ..reference import involution_loops
from ..roofline import involution_bytes, involution_intensity
from .cases import random_involution_inputs
from .framework import Case, run_cases

__all__ = ["check_bytes_moved", "check_arithmetic_intensity", "check_involution_offsets"]

# (name, why, batch, channels, height, width, kernel_size, groups, stride, dtype_bytes)
_LAYERS = [
    ("RedNet-50 stage 1, float32", "x + kernels + out, each counted once: B*C*H*W + B*G*K^2*H'*W' + B*C*H'*W'",
     8, 64, 56, 56, 7, 4, 1, 4),
    ("one group", "G = 1: every channel shares one kernel per position", 1, 16, 8, 8, 3, 1, 1, 4),
    ("float64", "dtype_bytes multiplies everything: 8 bytes per element", 2, 32, 14, 14, 7, 2, 1, 8),
    ("stride 2 on 56x56", "kernels and output live on the output grid H' x W' = 28 x 28; x stays 56 x 56",
     8, 128, 56, 56, 7, 8, 2, 4),
    ("odd size 7x7, stride 2", "H' = floor((7 + 2*3 - 7) / 2) + 1 = 4 with padding (K - 1) // 2", 1, 32, 7, 7, 7, 2, 2, 4),
    ("not square, half precision", "H and W are separate axes; 2 bytes per element", 2, 48, 10, 6, 3, 3, 1, 2),
    ("K = 1", "a 1 x 1 kernel: G kernel values per position", 4, 64, 7, 7, 1, 4, 1, 4),
]


def check_bytes_moved(bytes_moved: Callable[..., object]) -> bool:
    """Check ``bytes_moved(batch, channels, height, width, kernel_size, groups, stride, dtype_bytes)``.

    Expected: :func:`involution_edu.roofline.involution_bytes`, the least traffic of the
    forward pass (read ``x`` and ``kernels`` once, write ``out`` once).
    """
    cases = [
        Case(name, (batch, channels, height, width, k, groups, stride, dtype_bytes),
             involution_bytes(batch, channels, height, width, k, groups, stride, dtype_bytes), why, rtol=0, atol=0)
        for name, why, batch, channels, height, width, k, groups, stride, dtype_bytes in _LAYERS
    ]
    return run_cases("bytes_moved", bytes_moved, cases)


def check_arithmetic_intensity(arithmetic_intensity: Callable[..., object]) -> bool:
    """Check ``arithmetic_intensity(batch, channels, height, width, kernel_size, groups, stride, dtype_bytes)``.

    Expected: :func:`involution_edu.roofline.involution_intensity`, i.e.
    ``2 * B * C * H' * W' * K^2`` FLOPs divided by the bytes of :func:`check_bytes_moved`.
    """
    whys = {
        "RedNet-50 stage 1, float32": "FLOPs = 2 per multiply-add, B*C*H'*W'*K^2 multiply-adds; divided by the bytes",
        "float64": "twice the bytes, same FLOPs: half the intensity",
        "stride 2 on 56x56": "stride 2 computes only H' x W' outputs but still reads all of x",
        "K = 1": "K = 1: one multiply-add per output element; intensity is tiny",
    }
    cases = [
        Case(name, (batch, channels, height, width, k, groups, stride, dtype_bytes),
             involution_intensity(batch, channels, height, width, k, groups, stride, dtype_bytes),
             whys.get(name, why), rtol=1e-9, atol=0)
        for name, why, batch, channels, height, width, k, groups, stride, dtype_bytes in _LAYERS
    ]
    return run_cases("arithmetic_intensity", arithmetic_intensity, cases)


# (name, why, batch, groups, per_group, height, width, kernel_size, stride, padding, dilation)
_OFFSET_CASES = [
    ("3x3, one group", "the basic case: 9 shifted views, each times its tap", 1, 1, 2, 5, 5, 3, 1, 1, 1),
    ("6 channels in 2 groups", "channel c uses group c // (C // G): contiguous blocks, not c % G", 2, 2, 3, 6, 5, 3, 1, 1, 1),
    ("stride 2, odd size 7x7", "stride steps the view by s: rows u*d, u*d + s, ... up to (H'-1)*s + u*d", 1, 2, 2, 7, 7, 3, 2, 1, 1),
    ("dilation 2", "tap (u, v) is offset by (u*d, v*d) in the padded input", 1, 1, 2, 9, 8, 3, 1, 2, 2),
    ("no padding, K = 5", "padding 0: the output shrinks by K - 1", 2, 2, 1, 8, 9, 5, 1, 0, 1),
    ("K = 1", "a single tap: the output is kernels * x", 1, 3, 2, 4, 6, 1, 1, 0, 1),
    ("K = 7, stride 3, dilation 2, padding 4", "everything at once", 1, 2, 2, 13, 11, 7, 3, 4, 2),
]


def check_involution_offsets(involution_offsets_student: Callable[..., object]) -> bool:
    """Check ``involution_offsets_student(x, kernels, stride, padding, dilation)`` (torch, float64).

    The expected output comes from :func:`involution_edu.reference.involution_loops`.
    """
    cases: List[Case] = []
    for seed, (name, why, batch, groups, per_group, height, width, k, stride, padding, dilation) in enumerate(_OFFSET_CASES):
        x, kernels = random_involution_inputs(seed, batch, groups * per_group, height, width, k, stride, padding,
                                              dilation, groups)
        expected = involution_loops(x, kernels, stride, padding, dilation)
        x, kernels = torch.from_numpy(x), torch.from_numpy(kernels)
        cases.append(Case(name, (x, kernels, stride, padding, dilation), expected, why, rtol=1e-9, atol=1e-10))
    return run_cases("involution_offsets_student", involution_offsets_student, cases)
