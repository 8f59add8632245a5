"""Checkers for notebook 03 (vectorizing: sliding windows and unfold).

Each checker builds a table of :class:`~involution_edu.exercises.framework.Case` whose
expected answers come from the library (``F.unfold`` itself, the loop reference
:func:`~involution_edu.reference.involution_loops`, :func:`~involution_edu.shapes.output_size`)
and hands it to :func:`~involution_edu.exercises.framework.run_cases`, which prints a verdict
and returns ``True`` only when every case passes.

Exercises checked here::

    unfold_shape(batch, channels, height, width, kernel_size, stride, padding, dilation)
        -> (B, C * K * K, L)                         the shape F.unfold returns
    involution_unfold_student(x, kernels, stride=1, padding=None, dilation=1)
        x: (B, C, H, W), kernels: (B, G, K, K, H', W') -> (B, C, H', W')   (torch)
    unfold_memory_bytes(batch, channels, height, width, kernel_size,
                        stride=1, padding=None, dilation=1, bytes_per_element=4)
        -> bytes held by the unfolded tensor of shape (B, C * K * K, H' * W')
"""

from __future__ import annotations

from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from ..reference import involution_loops
from ..shapes import default_padding, output_size
from .cases import random_involution_inputs
from .framework import Case, run_cases

__all__ = [
    "check_unfold_shape",
    "check_involution_unfold",
    "check_unfold_memory_bytes",
    "unfold_memory_bytes_reference",
]

# (name, why, batch, channels, height, width, kernel_size, stride, padding, dilation, groups)
_GEOMETRIES = [
    ("3x3, stride 1, padding 1", "the basic 'same' case", 1, 2, 5, 5, 3, 1, 1, 1, 1),
    ("batch 2, 4 channels in 2 groups", "batch and channel axes, groups > 1", 2, 4, 6, 6, 3, 1, 1, 1, 2),
    ("stride 2, even size", "stride: every second window; H' = floor((8 + 2 - 3) / 2) + 1 = 4", 1, 4, 8, 8, 3, 2, 1, 1, 2),
    ("stride 2, odd size 7x5", "odd, non-square sizes with stride 2", 2, 4, 7, 5, 3, 2, 1, 1, 4),
    ("K = 1", "a 1x1 window: no neighbours at all", 1, 3, 4, 6, 1, 1, 0, 1, 3),
    ("dilation 2", "dilation spreads the taps: the window spans d*(K-1)+1 pixels", 1, 4, 9, 9, 3, 1, 2, 2, 2),
    ("no padding, K = 5", "without padding the output shrinks by K - 1", 1, 2, 8, 7, 5, 1, 0, 1, 1),
    ("K = 7, stride 3, dilation 2, padding 2", "everything at once", 2, 6, 13, 11, 7, 3, 2, 2, 3),
]


def check_unfold_shape(unfold_shape: Callable[..., object]) -> bool:
    """Check ``unfold_shape(batch, channels, height, width, kernel_size, stride, padding, dilation)``.

    The expected answer is the shape ``F.unfold`` really returns, ``(B, C * K * K, L)`` with
    ``L = H' * W'`` window positions, computed on a tensor on PyTorch's ``meta`` device (no memory).
    """
    cases: List[Case] = []
    for name, why, batch, channels, height, width, k, stride, padding, dilation, _ in _GEOMETRIES:
        x = torch.empty(batch, channels, height, width, device="meta")
        expected = tuple(F.unfold(x, k, dilation=dilation, padding=padding, stride=stride).shape)
        cases.append(Case(name, (batch, channels, height, width, k, stride, padding, dilation), expected, why))
    return run_cases("unfold_shape", unfold_shape, cases)


def _torch_case(seed: int, batch: int, channels: int, height: int, width: int, k: int, stride: int,
                padding: Optional[int], dilation: int, groups: int):
    """Random float64 tensors ``x (B, C, H, W)`` and ``kernels (B, G, K, K, H', W')`` plus the loops' answer."""
    x, kernels = random_involution_inputs(seed, batch, channels, height, width, k, stride, padding, dilation, groups)
    expected = involution_loops(x, kernels, stride, padding, dilation)
    return torch.from_numpy(x), torch.from_numpy(kernels), expected


def check_involution_unfold(involution_unfold_student: Callable[..., object]) -> bool:
    """Check ``involution_unfold_student(x, kernels, stride=1, padding=None, dilation=1)`` (torch).

    Inputs are float64 tensors; the expected output comes from
    :func:`involution_edu.reference.involution_loops`. The cases cover stride 2, groups > 1,
    odd sizes, K = 1, dilation 2 and the default padding ``dilation * (K - 1) // 2``.
    """
    cases: List[Case] = []
    for seed, (name, why, batch, channels, height, width, k, stride, padding, dilation, groups) in enumerate(_GEOMETRIES):
        x, kernels, expected = _torch_case(seed, batch, channels, height, width, k, stride, padding, dilation, groups)
        kwargs = dict(stride=stride, padding=padding, dilation=dilation)
        cases.append(Case(name, (x, kernels), expected, why, kwargs=kwargs, rtol=1e-9, atol=1e-10))
    x, kernels, expected = _torch_case(100, 1, 4, 9, 8, 3, 1, None, 2, 2)
    cases.append(Case("default padding with dilation 2", (x, kernels), expected,
                      "padding=None means dilation * (K - 1) // 2, here 2, not (K - 1) // 2",
                      kwargs=dict(stride=1, padding=None, dilation=2), rtol=1e-9, atol=1e-10))
    x, kernels, expected = _torch_case(101, 2, 8, 6, 6, 3, 1, None, 1, 4)
    cases.append(Case("8 channels in 4 groups, called with defaults", (x, kernels), expected,
                      "channel c uses group c // (C // G): contiguous blocks of channels share a kernel",
                      rtol=1e-9, atol=1e-10))
    return run_cases("involution_unfold_student", involution_unfold_student, cases)


def unfold_memory_bytes_reference(
    batch: int,
    channels: int,
    height: int,
    width: int,
    kernel_size: int,
    stride: int = 1,
    padding: Optional[int] = None,
    dilation: int = 1,
    bytes_per_element: int = 4,
) -> int:
    """Bytes held by ``F.unfold(x, ...)`` for ``x`` of shape ``(B, C, H, W)``: ``B * C * K^2 * H' * W' * bytes``."""
    if padding is None:
        padding = default_padding(kernel_size, dilation)
    out_h = output_size(height, kernel_size, stride, padding, dilation)
    out_w = output_size(width, kernel_size, stride, padding, dilation)
    return batch * channels * kernel_size**2 * out_h * out_w * bytes_per_element


def check_unfold_memory_bytes(unfold_memory_bytes: Callable[..., object]) -> bool:
    """Check ``unfold_memory_bytes(batch, channels, height, width, kernel_size, stride=1,
    padding=None, dilation=1, bytes_per_element=4)``: the size in bytes of the unfolded tensor."""
    cases = [
        Case("RedNet-50 stage 1, float32", (8, 64, 56, 56, 7), unfold_memory_bytes_reference(8, 64, 56, 56, 7),
             "B * C * K^2 * H' * W' elements of 4 bytes each"),
        Case("float64 (8 bytes)", (2, 16, 10, 10, 3), unfold_memory_bytes_reference(2, 16, 10, 10, 3, bytes_per_element=8),
             "bytes_per_element multiplies the element count", kwargs=dict(bytes_per_element=8)),
        Case("stride 2 on 56x56", (8, 128, 56, 56, 7), unfold_memory_bytes_reference(8, 128, 56, 56, 7, stride=2),
             "the window positions are the OUTPUT positions H' x W' = 28 x 28, not the input's",
             kwargs=dict(stride=2)),
        Case("odd size 7x7, stride 2", (1, 16, 7, 7, 3), unfold_memory_bytes_reference(1, 16, 7, 7, 3, stride=2),
             "H' = floor((H + 2p - d(K-1) - 1) / s) + 1 = 4 for H = 7", kwargs=dict(stride=2)),
        Case("no padding", (1, 4, 12, 10, 5), unfold_memory_bytes_reference(1, 4, 12, 10, 5, padding=0),
             "padding=0 shrinks the output by K - 1 on each axis", kwargs=dict(padding=0)),
        Case("default padding, dilation 2", (1, 4, 12, 12, 3), unfold_memory_bytes_reference(1, 4, 12, 12, 3, dilation=2),
             "padding=None means dilation * (K - 1) // 2, which keeps H' = H", kwargs=dict(dilation=2)),
        Case("K = 1, half precision", (4, 32, 14, 14, 1),
             unfold_memory_bytes_reference(4, 32, 14, 14, 1, bytes_per_element=2),
             "K = 1: the unfolded tensor is exactly the input", kwargs=dict(bytes_per_element=2)),
    ]
    return run_cases("unfold_memory_bytes", unfold_memory_bytes, cases)
