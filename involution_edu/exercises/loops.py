"""Checkers for notebook 02 (involution as explicit NumPy loops).

Each checker builds a table of :class:`~involution_edu.exercises.framework.Case` whose
expected answers come from the library (:func:`~involution_edu.shapes.output_size`, the loop
reference :func:`~involution_edu.reference.involution_loops`) and hands it to
:func:`~involution_edu.exercises.framework.run_cases`, which prints a verdict and returns
``True`` only when every case passes. A checker never raises because of the student's code.

Exercises checked here::

    output_size(size, kernel_size, stride, padding, dilation) -> int
    involution_loops_student(x, kernels, stride=1, padding=None, dilation=1)
        x: (B, C, H, W), kernels: (B, G, K, K, H', W') -> (B, C, H', W')      (NumPy)
    paper_channel_order(channels, groups) -> perm, a permutation of 0..C-1 such that
        involution_interleaved(x[:, perm], kernels) == involution_loops(x, kernels)[:, perm]
        where involution_interleaved puts channel c in group c % G (the keras.io layout)
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import numpy as np

from ..reference import involution_loops
from ..shapes import output_size
from .cases import random_involution_inputs
from .framework import Case, run_cases, to_numpy

__all__ = [
    "check_output_size",
    "check_involution_loops",
    "check_paper_channel_order",
    "involution_interleaved",
]


def check_output_size(output_size_student: Callable[..., object]) -> bool:
    """Check ``output_size(size, kernel_size, stride, padding, dilation)`` against
    :func:`involution_edu.shapes.output_size`: ``floor((size + 2p - d(K-1) - 1) / s) + 1``."""
    # (name, why, size, kernel_size, stride, padding, dilation)
    table = [
        ("'same': 8, K=3, p=1", "padding (K-1)/2 keeps the size", 8, 3, 1, 1, 1),
        ("no padding: 8, K=3", "without padding the output shrinks by K - 1", 8, 3, 1, 0, 1),
        ("K=1", "a 1x1 window fits everywhere", 5, 1, 1, 0, 1),
        ("stride 2, even: 8, K=3, p=1", "every second window: floor(7 / 2) + 1 = 4", 8, 3, 2, 1, 1),
        ("stride 2, odd: 7, K=3, p=1", "odd size with stride 2: floor(6 / 2) + 1 = 4, not 3", 7, 3, 2, 1, 1),
        ("stride 2, odd, no padding: 9, K=3", "floor((9 - 3) / 2) + 1 = 4", 9, 3, 2, 0, 1),
        ("stride 2, no padding: 10, K=3", "floor drops a last partial step: floor(7 / 2) + 1 = 4", 10, 3, 2, 0, 1),
        ("stride 3: 11, K=3, p=1", "floor(10 / 3) + 1 = 4: round down, not up", 11, 3, 3, 1, 1),
        ("dilation 2: 9, K=3, p=2", "a dilated window spans d(K-1)+1 = 5 pixels", 9, 3, 1, 2, 2),
        ("dilation 2, no padding: 9, K=3", "9 - 5 + 1 = 5 positions", 9, 3, 1, 0, 2),
        ("dilation 3, stride 2: 13, K=3, p=1", "span 7: floor((13 + 2 - 7) / 2) + 1 = 5", 13, 3, 2, 1, 3),
        ("K=7, p=3 on 7", "RedNet's 7x7 'same' padding on a 7x7 map", 7, 7, 1, 3, 1),
        ("K=7, stride 2, p=3 on 7", "the odd-size case the paper's code gets wrong: 4 positions", 7, 7, 2, 3, 1),
        ("window = input: 5, K=5", "exactly one position", 5, 5, 1, 0, 1),
        ("K=5, stride 2, dilation 2, p=4 on 11", "everything at once: span 9, floor(10 / 2) + 1 = 6", 11, 5, 2, 4, 2),
    ]
    cases = [
        Case(name, (size, k, stride, padding, dilation), output_size(size, k, stride, padding, dilation), why)
        for name, why, size, k, stride, padding, dilation in table
    ]
    return run_cases("output_size", output_size_student, cases)


# (name, why, batch, channels, groups, height, width, kernel_size, stride, padding, dilation)
_LOOP_CASES: List[Tuple[str, str, int, int, int, int, int, int, int, Optional[int], int]] = [
    ("basic: 1 channel, 5x5, K=3", "one kernel per position, 'same' zero padding", 1, 1, 1, 5, 5, 3, 1, None, 1),
    ("4 channels in 2 groups", "channel c uses group c // (C // G): channels 0, 1 -> group 0; 2, 3 -> group 1",
     1, 4, 2, 5, 5, 3, 1, None, 1),
    ("batch 2, 6 channels in 3 groups", "the batch axis of x and kernels, and 3 contiguous channel blocks",
     2, 6, 3, 4, 4, 3, 1, None, 1),
    ("stride 2 on 6x6", "output (i, j) reads input row i*s + u - p: the stride moves the window over x",
     1, 2, 1, 6, 6, 3, 2, None, 1),
    ("odd 7x5, stride 2", "odd, non-square sizes: H' = 4, W' = 3", 1, 2, 2, 7, 5, 3, 2, None, 1),
    ("K=1", "a 1x1 kernel: each output pixel is its input pixel times one weight", 2, 3, 3, 3, 4, 1, 1, None, 1),
    ("dilation 2", "taps d apart: row i*s + u*d - p, default padding d(K-1)/2 = 2", 1, 2, 1, 6, 6, 3, 1, None, 2),
    ("explicit padding 0", "padding=0 is not the default: no zeros added, the output shrinks to 3x3",
     1, 2, 1, 5, 5, 3, 1, 0, 1),
    ("K=5, stride 2, dilation 2, padding 3", "everything at once, with an explicit padding",
     1, 4, 2, 9, 8, 5, 2, 3, 2),
]


def check_involution_loops(involution_loops_student: Callable[..., object]) -> bool:
    """Check ``involution_loops_student(x, kernels, stride=1, padding=None, dilation=1)``.

    Float64 NumPy inputs; the expected output comes from
    :func:`involution_edu.reference.involution_loops`. The cases cover the basic case, groups > 1,
    stride 2, odd sizes, K = 1, dilation 2 and an explicit padding 0.
    """
    cases: List[Case] = []
    for seed, (name, why, batch, channels, groups, height, width, k, stride, padding, dilation) in enumerate(_LOOP_CASES):
        x, kernels = random_involution_inputs(seed, batch, channels, height, width, k, stride, padding, dilation, groups)
        expected = involution_loops(x, kernels, stride, padding, dilation)
        kwargs = dict(stride=stride, padding=padding, dilation=dilation)
        cases.append(Case(name, (x, kernels), expected, why, kwargs=kwargs, rtol=1e-9, atol=1e-10))
    return run_cases("involution_loops_student", involution_loops_student, cases)


def involution_interleaved(x: np.ndarray, kernels: np.ndarray, stride: int = 1, padding: Optional[int] = None,
                           dilation: int = 1) -> np.ndarray:
    """Involution with the keras.io tutorial's grouping: channel ``c`` uses group ``c % G``.

    Same shapes as :func:`involution_edu.reference.involution_loops`: ``x (B, C, H, W)``,
    ``kernels (B, G, K, K, H', W')`` -> ``(B, C, H', W')``. Differs from the paper's grouping
    ``c // (C // G)`` whenever ``G > 1``.
    """
    groups = kernels.shape[1]
    channels = [
        involution_loops(x[:, c : c + 1], kernels[:, c % groups : c % groups + 1], stride, padding, dilation)
        for c in range(x.shape[1])
    ]
    return np.concatenate(channels, axis=1)


def check_paper_channel_order(paper_channel_order: Callable[..., object]) -> bool:
    """Check ``paper_channel_order(channels, groups)``: a permutation ``perm`` of ``0..C-1`` with
    ``involution_interleaved(x[:, perm], kernels) == involution_loops(x, kernels)[:, perm]``.

    Any permutation with that property passes (within a group the order of channels is free).
    Two stages: first that ``perm`` is a permutation of ``0..C-1``, then the property on random
    ``x`` and ``kernels``.
    """

    def sorted_entries(channels, groups):
        perm = np.asarray(to_numpy(paper_channel_order(channels, groups))).ravel()
        return [int(p) for p in sorted(perm.tolist())]

    def interleaved_output(channels, groups, x, kernels):
        perm = np.asarray(to_numpy(paper_channel_order(channels, groups))).astype(int).ravel()
        # undo the reordering so that the answer does not depend on which valid perm was chosen
        return involution_interleaved(x[:, perm], kernels)[:, np.argsort(perm)]

    # (name, why, channels, groups)
    table = [
        ("C=4, G=1", "one group: any order works", 4, 1),
        ("C=4, G=2", "paper: channels {0,1} -> group 0; keras: {0,2} -> group 0", 4, 2),
        ("C=6, G=3", "three groups of two channels", 6, 3),
        ("C=6, G=2", "two groups of three channels", 6, 2),
        ("C=8, G=8", "G = C: one channel per group", 8, 8),
        ("C=12, G=4", "four groups of three channels", 12, 4),
    ]
    rng = np.random.default_rng(3)
    perm_cases: List[Case] = []
    value_cases: List[Case] = []
    for name, why, channels, groups in table:
        x = rng.standard_normal((1, channels, 4, 4))
        kernels = rng.standard_normal((1, groups, 3, 3, 4, 4))
        perm_cases.append(Case(name, (channels, groups), list(range(channels)),
                               "perm must hold each channel index 0..C-1 exactly once"))
        value_cases.append(Case(name, (channels, groups, x, kernels), involution_loops(x, kernels), why,
                                rtol=1e-9, atol=1e-10))
    if not run_cases("paper_channel_order (is a permutation)", sorted_entries, perm_cases):
        return False
    return run_cases("paper_channel_order (interleaved on x[:, perm] == paper's, reordered)",
                     interleaved_output, value_cases)
