"""Checkers and questions for notebook 01 (convolution recap and the idea of involution).

Each checker builds a table of :class:`~involution_edu.exercises.framework.Case` whose
expected answers come from PyTorch (``F.conv2d``) or from the parameter count of the library's
:class:`~involution_edu.module.Involution`, names the likely mistakes (``Case.mistakes``,
computed with deliberately wrong versions), adds hidden cases drawn at random on every call
(``random_cases``: a table of memorised answers fails them), declares what the exercise forbids
as a :class:`~involution_edu.exercises.framework.Rule` (enforced at run time on every call the
learner's function makes), and hands it all to
:func:`~involution_edu.exercises.framework.run_cases`, which prints one verdict and returns a
truthy :class:`~involution_edu.exercises.framework.Verdict` only when every case passes. A
checker never raises.

Exercises checked here::

    conv2d_loops(x, weight, stride=1, padding=0)
        x: (B, C_in, H, W), weight: (C_out, C_in, K, K) -> (B, C_out, H', W')
        cross-correlation like F.conv2d (no kernel flip, no bias), zero padding p, stride s, any K
    widest_kernel(channels, budget, reduction_ratio, group_channels) -> int
        the largest odd K whose involution fits a parameter budget (0 if none)
    depthwise_as_involution(weight, batch, height, width, stride, padding)
        weight: (C, 1, K, K) of a depthwise conv -> kernels (B, G, K, K, H', W') with the FEWEST
        groups G for which involution computes that depthwise conv exactly

Questions (``QUESTIONS``): ``channel_mixing``, ``largest_term``, ``depthwise``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import shapes
from ..module import Involution
from .framework import Case, Question, Rule, run_cases

__all__ = [
    "check_conv2d_loops",
    "check_widest_kernel",
    "check_depthwise_as_involution",
    "QUESTIONS",
]

#: What a NumPy-loops exercise of this notebook may not call: any torch op, any convolution or
#: correlation (NumPy's, SciPy's, torch's), any sliding-window view, and the library's operator.
#: The library itself (its oracles included) is forbidden by every Rule by default.
_NUMPY_LOOP_FAMILIES = ("torch", "convolution", "unfold", "involution")


def _check(title: str, candidate: Callable[..., object], cases: Sequence[Case], *, what: str,
           families: Sequence[str] = (), forbid: Sequence[Any] = (), allow: Sequence[Any] = (),
           random_cases: Optional[Callable[[np.random.Generator], Sequence[Case]]] = None):
    """``run_cases`` with this exercise's :class:`Rule` (enforced at run time) and its hidden random cases."""
    rule = Rule(what=what, forbid=tuple(forbid), families=tuple(families), allow=tuple(allow))
    return run_cases(title, candidate, cases, rule=rule, random_cases=random_cases)


# --------------------------------------------------------------------------------- conv2d_loops
def _conv2d_torch(x: np.ndarray, weight: np.ndarray, stride: int = 1, padding: int = 0) -> np.ndarray:
    """``F.conv2d`` on NumPy float64 arrays: ``x (B, C_in, H, W)``, ``weight (C_out, C_in, K, K)``."""
    out = F.conv2d(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.array(weight, dtype=np.float64)),
                   stride=stride, padding=padding)
    return out.numpy()


def _conv_case(name: str, why: str, x: np.ndarray, weight: np.ndarray, stride: int, padding: int) -> Case:
    expected = _conv2d_torch(x, weight, stride, padding)
    mistakes = [
        (_conv2d_torch(x, weight[:, :, ::-1, ::-1], stride, padding),
         "you flipped the kernel (a true convolution); F.conv2d is a cross-correlation: weight[o, c, u, v] "
         "multiplies x[..., i*s + u, j*s + v]"),
        (_conv2d_torch(x, weight.transpose(0, 1, 3, 2), stride, padding),
         "the kernel is transposed: weight[o, c, u, v] must meet row offset u and column offset v, "
         "not the other way round"),
    ]
    if weight.shape[0] == weight.shape[1]:
        mistakes.append((_conv2d_torch(x, weight.transpose(1, 0, 2, 3), stride, padding),
                         "you used weight[c, o] instead of weight[o, c]: the first axis is the OUTPUT channel"))
    k = weight.shape[2]
    if padding > 0 and x.shape[2] + padding >= k and x.shape[3] + padding >= k:
        one_side = np.pad(x, ((0, 0), (0, 0), (padding, 0), (padding, 0)))
        mistakes.append((_conv2d_torch(one_side, weight, stride, 0),
                         "you padded only the top and left: p zeros go on EVERY side (H + 2p rows)"))
    mistakes = [(wrong, message) for wrong, message in mistakes
                if wrong.shape != expected.shape or not np.allclose(wrong, expected, rtol=1e-9, atol=1e-10)]
    return Case(name, (x, weight), expected, why, kwargs=dict(stride=stride, padding=padding),
                rtol=1e-9, atol=1e-10, mistakes=mistakes)


def _random_conv_cases(rng: np.random.Generator) -> List[Case]:
    cases = []
    for _ in range(3):
        k = int(rng.integers(1, 6))  # even K too
        stride, padding = int(rng.integers(1, 4)), int(rng.integers(0, 3))
        height, width = (int(v) for v in rng.integers(max(k - 2 * padding, 1), 10, size=2))
        x = rng.standard_normal((int(rng.integers(1, 3)), int(rng.integers(1, 4)), height, width))
        weight = rng.standard_normal((int(rng.integers(1, 4)), x.shape[1], k, k))
        cases.append(_conv_case("hidden random case", "F.conv2d on a random geometry (any K, even ones too; "
                                "stride 1 to 3; padding 0 to 2)", x, weight, stride, padding))
    return cases


def check_conv2d_loops(conv2d_loops: Callable[..., object]):
    """Check ``conv2d_loops(x, weight, stride=1, padding=0)`` against ``F.conv2d`` (no bias).

    ``x``: ``(B, C_in, H, W)`` and ``weight``: ``(C_out, C_in, K, K)``, float64 NumPy arrays;
    the answer has shape ``(B, C_out, H', W')`` with ``H' = (H + 2p - K) // s + 1``:
    ``y[b, o, i, j] = sum_{c,u,v} weight[o, c, u, v] * x_padded[b, c, i*s + u, j*s + v]``.
    Any torch op, any convolution or correlation (NumPy's, SciPy's), sliding-window views and the
    library are forbidden at run time; the learner's own helpers (notebook 01's ``correlate2d``)
    are fine. Cases cover even ``K``, a stride that leaves rows unread, ``C_in != C_out``.
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
        ("stride 2 on 8x6, no padding", "floor((8 - 3) / 2) + 1 = 3 rows: the last row is never read",
         2, 2, 2, 8, 6, 3, 2, 0),
        ("even K=2", "an even window has no centre pixel; the same formula holds", 1, 2, 2, 5, 6, 2, 1, 0),
        ("even K=4, stride 2, padding 1", "even K with stride and padding: floor((7 + 2 - 4) / 2) + 1 = 3",
         1, 2, 3, 7, 6, 4, 2, 1),
        ("K=1, stride 2", "a 1x1 kernel only mixes channels; stride 2 keeps every second pixel", 2, 3, 2, 5, 4, 1, 2, 0),
        ("K=5, stride 3, padding 2 on 9x10", "every argument at once", 1, 2, 3, 9, 10, 5, 3, 2),
        ("kernel as big as the image", "K = H = W: a single output position", 1, 2, 3, 3, 3, 3, 1, 0),
    ]
    cases: List[Case] = []
    for name, why, batch, c_in, c_out, height, width, k, stride, padding in table:
        x = rng.standard_normal((batch, c_in, height, width))
        weight = rng.standard_normal((c_out, c_in, k, k))
        cases.append(_conv_case(name, why, x, weight, stride, padding))
    return _check("conv2d_loops", conv2d_loops, cases, what="the convolution as loops",
                  families=_NUMPY_LOOP_FAMILIES, random_cases=_random_conv_cases)


# ---------------------------------------------------------------------------------- widest_kernel
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


def _is_even_k(got: object) -> bool:
    return isinstance(got, (int, np.integer)) and not isinstance(got, bool) and got > 0 and got % 2 == 0


def _widest_case(name: str, why: str, channels: int, budget: int, r: int, gc: int) -> Case:
    expected = _widest(channels, budget, r, gc)
    groups, hidden = channels // gc, channels // r
    causes = {}  # K -> the count mistakes that give it here (an answer two too wide may have other causes)
    for switches, cause in [(dict(bias=False), f"leaving out W1's bias (K*K*G = K*K*{groups} values)"),
                            (dict(bn=False), f"leaving out BatchNorm's scale and shift (2*C/r = {2 * hidden} values)"),
                            (dict(groups_is_group_channels=True), "using group_channels as the number of groups G "
                                                                  "(G = C // group_channels)")]:
        wrong = _widest(channels, budget, r, gc, **switches)
        if wrong != expected:
            causes.setdefault(wrong, []).append(cause)
    mistakes: List[tuple] = [(_is_even_k, "K must be odd (the window needs a centre pixel); you returned an even K")]
    for wrong in sorted({expected + 2, expected + 4} | set(causes)):
        if wrong <= expected:
            continue
        over = _count(channels, wrong, r, gc) - budget
        message = f"K = {wrong} does not fit: that involution has {over:,} parameters more than the budget"
        if wrong in causes:
            message += "; " + " or ".join(causes[wrong]) + " gives this K here"
        mistakes.append((wrong, message))
    for wrong in sorted({expected - 2} | set(causes), reverse=True):
        if wrong >= expected or wrong < 0:
            continue
        message = "a wider odd K still fits the budget"
        if wrong == expected - 2:
            message += ": the count may EQUAL the budget (at most `budget`); did your loop stop one step early?"
        if wrong in causes:
            message += "; " + " or ".join(causes[wrong]) + " gives this K here"
        mistakes.append((wrong, message))
    return Case(name, (channels, budget, r, gc), expected, why, mistakes=mistakes)


def _random_widest_cases(rng: np.random.Generator) -> List[Case]:
    cases = []
    for _ in range(4):
        r = int(rng.choice([1, 2, 4, 8]))
        gc = int(rng.choice([1, 4, 8, 16]))
        channels = int(np.lcm(r, gc)) * int(rng.integers(1, 9))
        k = int(rng.choice([1, 3, 5, 7, 9, 11]))
        budget = _count(channels, k, r, gc) + int(rng.integers(-3, 4)) * int(rng.integers(0, 2))
        cases.append(_widest_case("hidden random case", "a budget near the count of some odd K, with random C, r and "
                                  "group size", channels, max(budget, 1), r, gc))
    return cases


def check_widest_kernel(widest_kernel: Callable[..., object]):
    """Check ``widest_kernel(channels, budget, reduction_ratio, group_channels) -> int``.

    The answer is the largest ODD ``K`` such that ``Involution(channels, K, 1, reduction_ratio,
    group_channels)`` has at most ``budget`` parameters, or 0 when not even ``K = 1`` fits. Some
    budgets are the count of a ``3x3`` convolution ``C -> C`` with bias (``9 C^2 + C``), the layer
    RedNet replaces; others sit just below the next odd ``K``, where a count that leaves out a
    term (W1's bias, BN's two vectors) picks a window that is too wide. Hidden random cases put
    the budget next to the count of a random odd ``K``. Building an ``Involution`` (or any library
    function) is forbidden at run time.
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
    cases = [_widest_case(*row) for row in table]
    return _check("widest_kernel", widest_kernel, cases, what="the parameter count", families=("involution",),
                  forbid=(Involution, torch.nn.Module.parameters), random_cases=_random_widest_cases)


# --------------------------------------------------------------------------- depthwise_as_involution
def _fewest_groups(weight: np.ndarray) -> int:
    """The smallest G (a divisor of C) whose blocks of C/G consecutive channels share one kernel."""
    channels = weight.shape[0]
    for groups in range(1, channels + 1):
        if channels % groups:
            continue
        size = channels // groups
        if all(np.array_equal(weight[g * size + m], weight[g * size]) for g in range(groups) for m in range(size)):
            return groups
    return channels


def _grouped_kernels(weight: np.ndarray, groups: int, batch: int, out_h: int, out_w: int, *,
                     interleaved: bool = False, transpose: bool = False) -> np.ndarray:
    """Kernels (B, G, K, K, H', W'): group g takes the kernel of its first channel (or of channel g)."""
    channels = weight.shape[0]
    first = [g if interleaved else g * (channels // groups) for g in range(groups)]
    kernels = weight[first, 0]
    if transpose:
        kernels = kernels.transpose(0, 2, 1)
    return np.ascontiguousarray(np.broadcast_to(kernels[None, :, :, :, None, None],
                                                (batch,) + kernels.shape + (out_h, out_w)))


def _distinct(weight: np.ndarray) -> int:
    return len({weight[c].tobytes() for c in range(weight.shape[0])})


def _depthwise_case(name: str, why: str, weight: np.ndarray, batch: int, height: int, width: int, stride: int,
                    padding: int) -> Case:
    channels, k = weight.shape[0], weight.shape[2]
    out_h = shapes.output_size(height, k, stride, padding)
    out_w = shapes.output_size(width, k, stride, padding)
    groups = _fewest_groups(weight)
    expected = _grouped_kernels(weight, groups, batch, out_h, out_w)
    raw_h, raw_w = height + 2 * padding - k, width + 2 * padding - k
    mistakes = []
    for wrong, message in [
        (_grouped_kernels(weight, channels, batch, out_h, out_w),
         "these kernels are right but not the FEWEST groups: channels with the same kernel can share a group"),
        (_grouped_kernels(weight, groups, batch, raw_h + 1, raw_w + 1), "you left out the stride: H' = (H + 2p - K) // s + 1"),
        (_grouped_kernels(weight, groups, batch, height, width), "H' and W' are the OUTPUT size, not the input's"),
        (_grouped_kernels(weight, groups, batch, -(-raw_h // stride) + 1, -(-raw_w // stride) + 1),
         "round down, not up: a window that would stick out of the padded input is dropped"),
        (_grouped_kernels(weight, groups, batch, (height - k) // stride + 1, (width - k) // stride + 1),
         "you left out the padding: H' = (H + 2p - K) // s + 1"),
        (_grouped_kernels(weight, groups, 1, out_h, out_w), "the kernels need a batch axis of length B"),
        (_grouped_kernels(weight, groups, batch, out_h, out_w, transpose=True),
         "the kernel is transposed: kernels[b, g, u, v, i, j] must be weight[c, 0, u, v] (u is the row offset)"),
    ]:
        if wrong.shape != expected.shape or not np.array_equal(wrong, expected):
            mistakes.append((wrong, message))
    distinct = _distinct(weight)
    if distinct != groups and channels % distinct == 0:
        mistakes.append((lambda got, g=distinct: getattr(got, "ndim", 0) == 6 and got.shape[1] == g,
                         f"you counted the distinct kernels ({distinct}); but a group is a block of C/G CONSECUTIVE "
                         "channels of equal size, so equal kernels that are not neighbours cannot share one"))
    return Case(name, (weight, batch, height, width, stride, padding), expected, why, mistakes=mistakes)


def _blocks(rng: np.random.Generator, pattern: str, k: int) -> np.ndarray:
    """A depthwise weight (C, 1, K, K) whose channel c has kernel number ``pattern[c]`` (a letter)."""
    bank = {letter: rng.standard_normal((k, k)) for letter in sorted(set(pattern))}
    return np.stack([bank[letter] for letter in pattern])[:, None]


def _random_depthwise_cases(rng: np.random.Generator) -> List[Case]:
    cases = []
    for _ in range(3):
        channels = int(rng.choice([4, 6, 8, 12]))
        divisors = [g for g in range(1, channels + 1) if channels % g == 0]
        groups = int(rng.choice(divisors))
        letters = "".join(chr(ord("a") + int(v)) for v in rng.integers(0, 3, size=groups))
        pattern = "".join(letter * (channels // groups) for letter in letters)
        k = int(rng.choice([1, 3, 5]))
        stride, padding = int(rng.integers(1, 3)), int(rng.integers(0, (k + 1) // 2 + 1))
        height, width = (int(v) for v in rng.integers(k, 10, size=2))
        cases.append(_depthwise_case("hidden random case", "random blocks of equal kernels, random geometry",
                                     _blocks(rng, pattern, k), int(rng.integers(1, 3)), height, width, stride, padding))
    return cases


def check_depthwise_as_involution(depthwise_as_involution: Callable[..., object]):
    """Check ``depthwise_as_involution(weight, batch, height, width, stride, padding)``.

    ``weight`` is the ``(C, 1, K, K)`` weight of a depthwise convolution (``groups=C``) applied
    to inputs of size ``height x width`` with the given stride and zero padding; the answer must
    be involution kernels ``(B, G, K, K, H', W')`` with the FEWEST groups ``G`` (a divisor of
    ``C``: contiguous blocks of ``C/G`` channels) for which ``involution_loops(x, kernels, stride,
    padding)`` equals ``F.conv2d(x, weight, stride=stride, padding=padding, groups=C)``: the
    smallest ``G`` whose blocks each hold one repeated kernel. ``H'`` and ``W'`` are the learner's
    to work out: the library (``output_size`` included), torch and convolutions are forbidden.
    """
    rng = np.random.default_rng(2)
    # (name, why, channel pattern (one letter per kernel), batch, height, width, kernel_size, stride, padding)
    table = [
        ("one channel, 5x5, K=3", "one channel: one group, the same kernel at every position", "a", 1, 5, 5, 3, 1, 0),
        ("3 different kernels", "every channel its own kernel: G = C", "abc", 1, 5, 5, 3, 1, 1),
        ("4 channels, one kernel", "all channels share one kernel: a single group", "aaaa", 2, 7, 5, 3, 1, 1),
        ("6 channels in 2 blocks", "blocks of 3 equal kernels", "aaabbb", 1, 7, 7, 3, 2, 1),
        ("6 channels: a a a a b b", "blocks must have EQUAL size: 2 blocks of 3 do not work, 3 blocks of 2 do",
         "aaaabb", 2, 8, 6, 3, 2, 0),
        ("4 channels: a b a b", "equal kernels that are not neighbours cannot share a group (blocks are consecutive)",
         "abab", 1, 6, 6, 5, 1, 2),
        ("8 channels: a a b b a a b b", "4 blocks of 2, although only 2 distinct kernels", "aabbaabb", 1, 6, 7, 3, 1, 1),
        ("K=1, stride 3", "a 1x1 depthwise conv scales each channel", "aabb", 2, 7, 5, 1, 3, 0),
    ]
    cases = [_depthwise_case(name, why, _blocks(rng, pattern, k), batch, height, width, stride, padding)
             for name, why, pattern, batch, height, width, k, stride, padding in table]
    return _check("depthwise_as_involution", depthwise_as_involution, cases, what="the groups and the kernels",
                  families=_NUMPY_LOOP_FAMILIES, random_cases=_random_depthwise_cases)


# ------------------------------------------------------------------------------------ questions
QUESTIONS: Dict[str, Question] = {
    "channel_mixing": Question(
        prompt=("Involution(channels=16, kernel_size=3, group_channels=8) (G = 2, stride 1, padding 1), in eval "
                "mode, on a 6x6 input. You add 1 to input channel 0 at ONE interior pixel (3, 2) and change nothing "
                "else. How many of the 16 x 6 x 6 output values change?"),
        answer=24,
        rtol=0.0,
        explanation=("At the pixel itself all 16 channels change: the kernels at (3, 2) are generated from the "
                     "whole feature vector there, so both groups' kernels change. At the 8 neighbours whose 3x3 window "
                     "reads (3, 2), the kernels are generated from THEIR own pixels (phi is two 1x1 convs) and do not "
                     "change, so only channel 0 changes there: 16 + 8 = 24. Involution mixes channels, but only "
                     "through the kernel of the pixel itself."),
        mistakes=[
            (9, "That counts only the aggregation with FIXED kernels (channel 0 at the 9 outputs whose window reads "
                "the pixel). But the kernels at (3, 2) itself are generated from all 16 channels there."),
            (16, "Right for the pixel itself; but the 8 neighbouring outputs read the changed pixel through their "
                 "windows too (in channel 0)."),
            (144, "The neighbours' kernels are generated from the neighbours' own pixels (phi is two 1x1 convs), "
                  "which did not change: only channel 0 changes there."),
            (1, "The kernels at the pixel are generated from all 16 channels there, and the neighbours' windows read "
                "the pixel too."),
        ],
    ),
    "largest_term": Question(
        prompt=("Involution(256, kernel_size=3) with the paper's r = 4 and 16 channels per group (G = 16). Which "
                "part of the kernel generator phi holds the most parameters?"),
        choices={
            "a": "W0, the 1x1 conv C -> C/r",
            "b": "the BatchNorm between the two convs",
            "c": "W1, the 1x1 conv C/r -> K*K*G",
            "d": "the bias of W1",
        },
        answer="a",
        explanation=("W0 has C * C/r = 256 * 64 = 16,384 weights; W1 has (C/r) * K^2 * G = 64 * 9 * 16 = 9,216, BN 128 "
                     "and the bias K^2 * G = 144. W1 grows like K^2/64 * C^2 and W0 is C^2/4, so W1 only wins from "
                     "K = 5 on (K^2 > 16)."),
        wrong={
            "b": "BN has only 2 * C/r = 128 parameters (its running statistics are buffers).",
            "c": "At K = 3, W1 has 64 * 9 * 16 = 9,216 weights, fewer than W0's 256 * 64 = 16,384. (At K = 7 W1 "
                 "would win: its size grows with K^2.)",
            "d": "The bias of W1 has K^2 * G = 9 * 16 = 144 values, one per generated kernel value.",
        },
    ),
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
}
