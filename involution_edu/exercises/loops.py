"""Checkers and questions for notebook 02 (involution as explicit NumPy loops).

Each checker builds a table of :class:`~involution_edu.exercises.framework.Case` whose
expected answers come from the library (:func:`~involution_edu.shapes.output_size`, the loop
reference :func:`~involution_edu.reference.involution_loops`), names the likely mistakes
(computed with deliberately wrong versions of the operator), forbids the library's own
implementations, and hands it to :func:`~involution_edu.exercises.framework.run_cases`, which
prints one verdict and returns ``True`` only when every case passes. A checker never raises.

Exercises checked here::

    output_size(size, kernel_size, stride, padding, dilation) -> int
    involution_loops_student(x, kernels, stride=1, padding=None, dilation=1)
        x: (B, C, H, W), kernels: (B, G, K, K, H', W') -> (B, C, H', W')      (NumPy)
    affected_outputs(height, width, kernel_size, stride, padding, dilation, row, col)
        -> set of output positions (i, j) whose window reads input pixel (row, col)
    paper_channel_order(channels, groups) -> perm, a permutation of 0..C-1 such that
        involution_interleaved(x[:, perm], kernels) == involution_loops(x, kernels)[:, perm]
        where involution_interleaved puts channel c in group c % G (the keras.io grouping)

Also here: :func:`involution_interleaved` (the keras.io grouping) and
:func:`keras_kernel_order` (how keras.io reads the generator's K*K*G channels).

Questions (``QUESTIONS``): ``corner_pixel``, ``default_padding``, ``keras_weights``.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Set, Tuple

import numpy as np
import torch.nn.functional as F

from .. import functional, reference, shapes
from ..module import Involution
from .cases import random_involution_inputs
from .framework import Case, Question, run_cases

__all__ = [
    "check_output_size",
    "check_involution_loops",
    "check_affected_outputs",
    "check_paper_channel_order",
    "involution_interleaved",
    "keras_kernel_order",
    "QUESTIONS",
]

# Every library implementation of the operator, and the tools that would do the exercise for you.
_OPERATOR_FORBIDDEN = (
    reference.involution_loops, reference.involution_numpy, functional.involution_unfold, functional.involution,
    Involution, F.unfold, F.conv2d, ".involution_loops", ".involution_numpy", ".involution_unfold", ".involution",
    ".unfold", ".conv2d",
)


def _add_mistake(mistakes: list, expected: object, wrong: object, message: str) -> None:
    """Append ``(wrong, message)`` unless ``wrong`` is right; two mistakes with the same answer share one entry."""
    if wrong == expected:
        return
    for index, (other, other_message) in enumerate(mistakes):
        if other == wrong and type(other) is type(wrong):
            mistakes[index] = (other, f"{other_message}; or {message}")
            return
    mistakes.append((wrong, message))


# ---------------------------------------------------------------------------------- output_size
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
        ("stride 2, no padding: 10, K=3", "floor drops a last partial step: floor(7 / 2) + 1 = 4", 10, 3, 2, 0, 1),
        ("stride 3: 11, K=3, p=1", "floor(10 / 3) + 1 = 4: round down, not up", 11, 3, 3, 1, 1),
        ("dilation 2: 9, K=3, p=2", "a dilated window spans d(K-1)+1 = 5 pixels", 9, 3, 1, 2, 2),
        ("dilation 2, no padding: 9, K=3", "9 - 5 + 1 = 5 positions", 9, 3, 1, 0, 2),
        ("dilation 3, stride 2: 13, K=3, p=1", "span 7: floor((13 + 2 - 7) / 2) + 1 = 5", 13, 3, 2, 1, 3),
        ("K=7, stride 2, p=3 on 7", "the odd-size case the paper's code gets wrong: 4 positions", 7, 7, 2, 3, 1),
        ("window = input: 5, K=5", "exactly one position", 5, 5, 1, 0, 1),
        ("K=5, stride 2, dilation 2, p=4 on 11", "everything at once: span 9, floor(10 / 2) + 1 = 6", 11, 5, 2, 4, 2),
        ("K=3, stride 4, dilation 3, p=1 on 12", "span 7: floor(7 / 4) + 1 = 2", 12, 3, 4, 1, 3),
    ]
    cases = []
    for name, why, size, k, stride, padding, dilation in table:
        expected = shapes.output_size(size, k, stride, padding, dilation)
        span = dilation * (k - 1) + 1
        candidates = [
            ((size + 2 * padding - k) // stride + 1, "you left out the dilation: the window spans d*(K-1) + 1 "
                                                     "pixels, not K"),
            (-(-(size + 2 * padding - span) // stride) + 1, "round down, not up: a window that would stick out of "
                                                            "the padded input is dropped"),
            ((size + padding - span) // stride + 1, "the padding is on BOTH sides: H + 2p"),
            ((size + 2 * padding - span) // stride, "off by one: count the window starts 0, s, 2s, ... "
                                                    "(the first one is at 0, so add 1)"),
            ((size + 2 * padding - dilation * k) // stride + 1, "the span of a dilated window is d*(K-1) + 1, "
                                                                "not d*K"),
            ((size + 2 * padding - span) / stride + 1, "use integer (floor) division: the answer is a count"),
        ]
        mistakes: list = []
        for wrong, message in candidates:
            _add_mistake(mistakes, expected, wrong, message)
        cases.append(Case(name, (size, k, stride, padding, dilation), expected, why, mistakes=mistakes))
    return run_cases("output_size", output_size_student, cases,
                     forbidden=(shapes.output_size, ".output_size", ".conv_output_size"),
                     what="the output-size formula")


# ------------------------------------------------------------------------------ the loops, wrong
def _variant(x: np.ndarray, kernels: np.ndarray, stride: int, padding: Optional[int], dilation: int, *,
             interleaved: bool = False, transposed: bool = False, padding_ignores_dilation: bool = False,
             ignore_dilation: bool = False, no_padding_offset: bool = False) -> np.ndarray:
    """Involution computed tap by tap, with switches that reproduce the likely mistakes.

    ``x (B, C, H, W)``, ``kernels (B, G, K, K, H', W')`` -> ``(B, C, H', W')``. With every switch
    off this is the operator; each switch is one mistake (c % G grouping, kernel taps transposed,
    the default padding without the dilation, the dilation left out, indices not shifted by p).
    """
    batch, channels, height, width = x.shape
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    if padding is None:
        padding = (k - 1) // 2 if padding_ignores_dilation else dilation * (k - 1) // 2
    d = 1 if ignore_dilation else dilation
    shift = 0 if no_padding_offset else padding
    group = np.array([c % groups if interleaved else c // (channels // groups) for c in range(channels)])
    y = np.zeros((batch, channels, out_h, out_w))
    rows_i, cols_j = np.arange(out_h) * stride, np.arange(out_w) * stride
    for u in range(k):
        for v in range(k):
            rows, cols = rows_i + u * d - shift, cols_j + v * d - shift
            row_ok, col_ok = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
            taps = x[:, :, np.clip(rows, 0, height - 1)][:, :, :, np.clip(cols, 0, width - 1)]
            taps = taps * (row_ok[:, None] & col_ok[None, :])
            weight = kernels[:, :, v, u] if transposed else kernels[:, :, u, v]  # (B, G, H', W')
            y += weight[:, group] * taps
    return y


_LOOP_MISTAKES = [
    (dict(interleaved=True), "channel c must use group c // (C // G) (contiguous blocks, the paper's code); "
                             "you used c % G, the keras.io grouping"),
    (dict(transposed=True), "the kernel taps are transposed: kernels[b, g, u, v, i, j] meets row offset u*d and "
                            "column offset v*d"),
    (dict(padding_ignores_dilation=True), "padding=None means dilation * (K - 1) // 2, not (K - 1) // 2"),
    (dict(ignore_dilation=True), "you left out the dilation: tap u reads row i*s + u*d - p"),
    (dict(no_padding_offset=True), "you forgot to subtract the padding: tap u of output i reads row i*s + u*d - p "
                                   "of x (or row i*s + u*d of the padded copy)"),
]

# (name, why, batch, channels, groups, height, width, kernel_size, stride, padding, dilation)
_LOOP_CASES: List[Tuple[str, str, int, int, int, int, int, int, int, Optional[int], int]] = [
    ("basic: 1 channel, 5x5, K=3", "one kernel per position, 'same' zero padding", 1, 1, 1, 5, 5, 3, 1, None, 1),
    ("4 channels in 2 groups", "channel c uses group c // (C // G): channels 0, 1 -> group 0; 2, 3 -> group 1",
     1, 4, 2, 5, 5, 3, 1, None, 1),
    ("batch 2, 6 channels in 3 groups", "the batch axis of x and kernels, and 3 contiguous channel blocks",
     2, 6, 3, 4, 4, 3, 1, None, 1),
    ("stride 2 on 6x6", "output (i, j) reads input row i*s + u - p: the stride moves the window over x",
     1, 2, 1, 6, 6, 3, 2, None, 1),
    ("odd 7x5, stride 2, 2 groups", "odd, non-square sizes: H' = 4, W' = 3", 1, 4, 2, 7, 5, 3, 2, None, 1),
    ("K=1", "a 1x1 kernel: each output pixel is its input pixel times one weight", 2, 3, 3, 3, 4, 1, 1, None, 1),
    ("dilation 2, default padding", "taps d apart: row i*s + u*d - p, default padding d(K-1)/2 = 2",
     1, 4, 2, 6, 7, 3, 1, None, 2),
    ("explicit padding 0", "padding=0 is not the default: no zeros added, the output shrinks to 3x3",
     1, 2, 1, 5, 5, 3, 1, 0, 1),
    ("K=5, stride 2, dilation 2, padding 3", "everything at once, with an explicit padding",
     1, 4, 2, 9, 8, 5, 2, 3, 2),
    ("K=3, stride 3, dilation 3, 8 channels in 4 groups", "a large stride and dilation on a non-square input",
     1, 8, 4, 10, 11, 3, 3, None, 3),
]


def check_involution_loops(involution_loops_student: Callable[..., object]) -> bool:
    """Check ``involution_loops_student(x, kernels, stride=1, padding=None, dilation=1)``.

    Float64 NumPy inputs; the expected output comes from
    :func:`involution_edu.reference.involution_loops`. The cases cover the basic case, groups > 1,
    stride 2, odd and non-square sizes, K = 1, dilation 2 and 3 with the default padding, and an
    explicit padding. The library's implementations, ``F.unfold`` and ``F.conv2d`` are forbidden.
    """
    cases: List[Case] = []
    for seed, (name, why, batch, channels, groups, height, width, k, stride, padding, dilation) in enumerate(_LOOP_CASES):
        x, kernels = random_involution_inputs(seed, batch, channels, height, width, k, stride, padding, dilation, groups)
        expected = reference.involution_loops(x, kernels, stride, padding, dilation)
        mistakes = []
        for switches, message in _LOOP_MISTAKES:
            wrong = _variant(x, kernels, stride, padding, dilation, **switches)
            if not np.allclose(wrong, expected, rtol=1e-9, atol=1e-10):
                mistakes.append((wrong, message))
        kwargs = dict(stride=stride, padding=padding, dilation=dilation)
        cases.append(Case(name, (x, kernels), expected, why, kwargs=kwargs, rtol=1e-9, atol=1e-10, mistakes=mistakes))
    return run_cases("involution_loops_student", involution_loops_student, cases, forbidden=_OPERATOR_FORBIDDEN,
                     what="the involution loops")


# ----------------------------------------------------------------------------- affected_outputs
def _affected(height: int, width: int, k: int, stride: int, padding: int, dilation: int, row: int, col: int,
              *, mirrored: bool = False, ignore_stride: bool = False, ignore_dilation: bool = False,
              ignore_padding: bool = False) -> Set[Tuple[int, int]]:
    """Output positions whose window reads ``(row, col)``: ``row = i*s + u*d - p`` for some tap ``u``."""
    s = 1 if ignore_stride else stride
    d = 1 if ignore_dilation else dilation
    p = 0 if ignore_padding else padding
    out_h = shapes.output_size(height, k, stride, padding, dilation)
    out_w = shapes.output_size(width, k, stride, padding, dilation)
    sign = -1 if mirrored else 1
    rows = {i for i in range(out_h) for u in range(k) if i * s + sign * (u * d - p) == row}
    cols = {j for j in range(out_w) for v in range(k) if j * s + sign * (v * d - p) == col}
    return {(i, j) for i in sorted(rows) for j in sorted(cols)}


def check_affected_outputs(affected_outputs: Callable[..., object]) -> bool:
    """Check ``affected_outputs(height, width, kernel_size, stride, padding, dilation, row, col)``.

    The answer is the set of output positions ``(i, j)`` (plain ints) whose window reads input
    pixel ``(row, col)``: those with ``row = i*s + u*d - p`` and ``col = j*s + v*d - p`` for some
    taps ``u, v`` in ``0..K-1``. With fixed kernels these are exactly the outputs that change when
    that pixel changes (the tests confirm it by perturbing the pixel). Running the operator is
    forbidden: the point is to derive the positions.
    """
    # (name, why, height, width, kernel_size, stride, padding, dilation, row, col)
    table = [
        ("interior pixel, K=3", "a 3x3 window: the 9 outputs around the pixel read it", 7, 7, 3, 1, 1, 1, 3, 3),
        ("corner pixel (0, 0)", "at the corner only the outputs whose window reaches it: 2 x 2", 7, 7, 3, 1, 1, 1, 0, 0),
        ("edge pixel, non-square", "H and W are separate axes", 6, 9, 3, 1, 1, 1, 0, 4),
        ("stride 2, even row", "with stride 2, output i covers rows 2i - 1 .. 2i + 1", 8, 8, 3, 2, 1, 1, 4, 4),
        ("stride 2, odd row", "an odd row is reached from fewer outputs when the stride is 2", 8, 8, 3, 2, 1, 1, 3, 5),
        ("dilation 2", "the taps are 2 apart: output i reads rows i - 2, i, i + 2", 9, 9, 3, 1, 2, 2, 4, 4),
        ("K=5, stride 2, dilation 2, no padding", "everything at once, no padding", 13, 11, 5, 2, 0, 2, 8, 6),
        ("K=7, 'same' padding, last pixel", "the bottom-right corner with a 7x7 window", 9, 8, 7, 1, 3, 1, 8, 7),
        ("K=3, stride 3, pixel between windows", "stride 3 = K, no padding: the windows do not overlap, one output reads the pixel",
         9, 9, 3, 3, 0, 1, 4, 2),
    ]
    cases: List[Case] = []
    for name, why, height, width, k, stride, padding, dilation, row, col in table:
        expected = _affected(height, width, k, stride, padding, dilation, row, col)
        mistakes = []
        for switches, message in [
            (dict(mirrored=True), "the window of output i starts at row i*s - p and goes DOWN: row = i*s + u*d - p, "
                                  "so i = (row - u*d + p) / s"),
            (dict(ignore_stride=True), "you left out the stride: output i starts at row i*s - p, and only the i "
                                       "for which (row - u*d + p) is divisible by s count"),
            (dict(ignore_dilation=True), "you left out the dilation: tap u is u*d rows below the window's start"),
            (dict(ignore_padding=True), "you left out the padding: output i's window starts at row i*s - p"),
        ]:
            _add_mistake(mistakes, expected, _affected(height, width, k, stride, padding, dilation, row, col, **switches),
                         message)
        cases.append(Case(name, (height, width, k, stride, padding, dilation, row, col), expected, why,
                          mistakes=mistakes))
    return run_cases("affected_outputs", affected_outputs, cases, forbidden=_OPERATOR_FORBIDDEN,
                     what="the positions (derive them, do not run the operator)")


# ------------------------------------------------------------------------------- the two layouts
def involution_interleaved(x: np.ndarray, kernels: np.ndarray, stride: int = 1, padding: Optional[int] = None,
                           dilation: int = 1) -> np.ndarray:
    """Involution with the keras.io tutorial's grouping: channel ``c`` uses group ``c % G``.

    Same shapes as :func:`involution_edu.reference.involution_loops`: ``x (B, C, H, W)``,
    ``kernels (B, G, K, K, H', W')`` -> ``(B, C, H', W')``. Differs from the paper's grouping
    ``c // (C // G)`` whenever ``1 < G < C``.
    """
    groups = kernels.shape[1]
    channels = [
        reference.involution_numpy(x[:, c : c + 1], kernels[:, c % groups : c % groups + 1], stride, padding, dilation)
        for c in range(x.shape[1])
    ]
    return np.concatenate(channels, axis=1)


def keras_kernel_order(kernel_size: int, groups: int) -> np.ndarray:
    """Where keras.io reads each kernel value, as an index into the generator's ``K*K*G`` channels.

    The paper views the generator's output channels as ``(G, K*K)``: value ``(g, t)`` (group ``g``,
    tap ``t = u*K + v``) is channel ``g*K*K + t``. keras.io reshapes them as
    ``Reshape((h, w, K*K, 1, G))``, i.e. ``(K*K, G)``: value ``(g, t)`` is channel ``t*G + g``.
    Returns ``order`` of shape ``(G*K*K,)`` with ``order[g*K*K + t] = t*G + g``: the paper's kernel
    value ``(g, t)`` is what keras reads from channel ``order[g*K*K + t]``. Permuting the rows of
    W1 (and its bias) by ``order`` turns one reading into the other.
    """
    taps = kernel_size * kernel_size
    return np.array([t * groups + g for g in range(groups) for t in range(taps)])


def check_paper_channel_order(paper_channel_order: Callable[..., object]) -> bool:
    """Check ``paper_channel_order(channels, groups)``: a permutation ``perm`` of ``0..C-1`` with
    ``involution_interleaved(x[:, perm], kernels) == involution_loops(x, kernels)[:, perm]``.

    Any permutation with that property passes (within a group the order of channels is free):
    the answer is judged by the group each position receives, ``perm[c'] // (C // G)`` must equal
    ``c' % G``, after a check that ``perm`` is a permutation of ``0..C-1``.
    """

    def groups_received(channels, groups):
        perm = paper_channel_order(channels, groups)
        values = _as_int_list(perm)
        if values is None:
            return perm  # not a list of ints: the framework describes what came back
        if sorted(values) != list(range(channels)):
            return f"not a permutation of 0..{channels - 1}: {values}"
        return [value // (channels // groups) for value in values]

    # (name, why, channels, groups)
    table = [
        ("C=4, G=1", "one group: any order works", 4, 1),
        ("C=4, G=2", "paper: channels {0,1} -> group 0; keras: positions {0,2} -> group 0", 4, 2),
        ("C=6, G=3", "three groups of two channels", 6, 3),
        ("C=6, G=2", "two groups of three channels", 6, 2),
        ("C=8, G=8", "G = C: one channel per group", 8, 8),
        ("C=12, G=4", "four groups of three channels", 12, 4),
        ("C=12, G=3", "three groups of four channels", 12, 3),
    ]
    cases: List[Case] = []
    for name, why, channels, groups in table:
        per_group = channels // groups
        expected = [position % groups for position in range(channels)]
        correct = [(p % groups) * per_group + p // groups for p in range(channels)]
        inverse = np.argsort(correct).tolist()
        mistakes = []
        inverse_groups = [value // per_group for value in inverse]
        if inverse_groups != expected:
            mistakes.append((inverse_groups, "you returned the inverse permutation: perm[c'] must be the channel of "
                                             "x that goes to position c', not the position channel c goes to"))
        cases.append(Case(name, (channels, groups), expected,
                          f"position c' gets group c' % G under the keras rule, so x[:, perm[c']] must be a channel "
                          f"of paper group c' % G; {why}", mistakes=mistakes))
    return run_cases("paper_channel_order", groups_received, cases)


def _as_int_list(value: object) -> Optional[List[int]]:
    """The entries of a list/tuple/array of integers as Python ints, else ``None`` (never raises)."""
    try:
        array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    except Exception:  # noqa: BLE001 - anything odd is described by the framework instead
        return None
    if array.ndim != 1 or array.dtype.kind not in "iu":
        return None
    return [int(item) for item in array]


# ------------------------------------------------------------------------------------ questions
QUESTIONS = {
    "corner_pixel": Question(
        prompt=("A 7x7 input, K = 3, stride 1, padding 1, fixed kernels. You change input pixel (0, 0) only. How "
                "many of the 7x7 output positions can change?"),
        answer=4,
        rtol=0.0,
        explanation=("Output (i, j) reads rows i-1..i+1 and columns j-1..j+1. Row 0 is read by i = 0 and i = 1, "
                     "column 0 by j = 0 and j = 1: 2 x 2 = 4 outputs. An interior pixel would be read by 9."),
        mistakes=[
            (9, "9 is the count for an interior pixel; at the corner, the windows of outputs i = -1 or j = -1 do "
                "not exist."),
            (1, "A 3x3 window reads its neighbours too: outputs (0, 1), (1, 0) and (1, 1) also read pixel (0, 0)."),
        ],
    ),
    "default_padding": Question(
        prompt="Whose choice is the default padding p = floor(d(K-1)/2) used in this course?",
        choices={
            "a": "the paper's: Eq. 4 states it",
            "b": "the official code's: its involution module computes it from the dilation",
            "c": "this library's: the official module has no dilation and pads (K-1)//2; the course extends that "
                 "'same' padding to dilated windows",
        },
        answer="c",
        explanation=("The paper writes the operator over a K x K neighbourhood centred on the pixel, and the official "
                     "module unfolds with padding (K-1)//2 and dilation 1. floor(d(K-1)/2) is the course's "
                     "extension, chosen so that stride 1 keeps the size for a dilated window too."),
        wrong={
            "a": "The paper has no dilation in its operator: its window is a K x K neighbourhood of the pixel.",
            "b": "The official module has no dilation argument; it unfolds with padding (K-1)//2.",
        },
    ),
    "keras_weights": Question(
        prompt=("keras.io reads the generator's K*K*G output channels with Reshape((h, w, K*K, 1, G)); the paper "
                "views them as (G, K, K). You load the paper's trained W1 into the keras layer unchanged. What do "
                "you get?"),
        choices={
            "a": "the same layer: both are reshapes of the same numbers",
            "b": "the same outputs with the output channels permuted",
            "c": "a different layer: each kernel value lands on another tap and group; permuting W1's rows (and "
                 "bias) by a fixed order gives the paper's layer back",
            "d": "an error: the shapes do not match",
        },
        answer="c",
        explanation=("Paper: channel g*K*K + t is tap t of group g. keras: channel t*G + g is tap t of group g. Same "
                     "count, different assignment, so unchanged weights scramble taps and groups. Because it is a "
                     "fixed relabelling of W1's rows, a network TRAINED with the keras reading is just as good; "
                     "only loading the paper's weights needs the permutation."),
        wrong={
            "a": "A reshape is not neutral: it decides which channel becomes which (tap, group). (K*K, G) and "
                 "(G, K*K) assign them differently whenever G > 1.",
            "b": "The kernels themselves change (taps and groups swap values), so outputs change by more than a "
                 "reordering of channels.",
            "d": "Both readings use K*K*G channels, so the shapes match; that is why the mismatch is silent.",
        },
    ),
}
