"""Checkers and questions for notebook 03 (vectorizing: sliding windows and unfold).

Each checker builds a table of :class:`~involution_edu.exercises.framework.Case` whose
expected answers come from the library (the loop reference
:func:`~involution_edu.reference.involution_loops`, :func:`~involution_edu.shapes.output_size`),
names the likely mistakes, forbids the library's own implementations, and hands it to
:func:`~involution_edu.exercises.framework.run_cases`, which prints one verdict and returns
``True`` only when every case passes. A checker never raises.

Exercises checked here::

    involution_unfold_student(x, kernels, stride=1, padding=None, dilation=1)
        x: (B, C, H, W), kernels: (B, G, K, K, H', W') -> (B, C, H', W')   (torch, with F.unfold)
    expose_bug() -> (x, kernels)
        float64 tensors on which involution_unfold_suspect and the loops disagree
    unfold_total_bytes(layers, batch, bytes_per_element=4)
        layers: [(C, H, W, K, stride), ...] involution inputs -> bytes of all their unfolded tensors

Also here: :func:`involution_unfold_suspect`, an unfold implementation with one bug.

Questions (``QUESTIONS``): ``speedup_size``, ``stem_vs_stage1``, ``suspect_grouping``.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import reference, shapes
from .cases import random_involution_inputs
from .framework import Case, Question, Rule, run_cases

__all__ = [
    "check_involution_unfold",
    "check_expose_bug",
    "check_unfold_total_bytes",
    "involution_unfold_suspect",
    "unfold_total_bytes_reference",
    "QUESTIONS",
]

def _add_mistake(mistakes: list, expected: object, wrong: object, message: str) -> None:
    """Append ``(wrong, message)`` unless ``wrong`` is right; two mistakes with the same answer share one entry."""
    if wrong == expected:
        return
    for index, (other, other_message) in enumerate(mistakes):
        if other == wrong and type(other) is type(wrong):
            mistakes[index] = (other, f"{other_message}; or {message}")
            return
    mistakes.append((wrong, message))


# (name, why, batch, channels, height, width, kernel_size, stride, padding, dilation, groups)
_GEOMETRIES = [
    ("3x3, stride 1, padding 1", "the basic 'same' case", 1, 2, 5, 5, 3, 1, 1, 1, 1),
    ("batch 2, 4 channels in 2 groups", "batch and channel axes, groups > 1", 2, 4, 6, 6, 3, 1, 1, 1, 2),
    ("stride 2, even size, 2 groups", "stride: every second window; H' = floor((8 + 2 - 3) / 2) + 1 = 4",
     1, 4, 8, 8, 3, 2, 1, 1, 2),
    ("stride 2, odd size 7x5, 4 groups", "odd, non-square sizes with stride 2 and G = C", 2, 4, 7, 5, 3, 2, 1, 1, 4),
    ("K = 1, 6 channels in 3 groups", "a 1x1 window: no neighbours at all", 1, 6, 4, 6, 1, 1, 0, 1, 3),
    ("dilation 2, 2 groups", "dilation spreads the taps: the window spans d*(K-1)+1 pixels", 1, 4, 9, 9, 3, 1, 2, 2, 2),
    ("no padding, K = 5", "without padding the output shrinks by K - 1", 1, 2, 8, 7, 5, 1, 0, 1, 1),
    ("K = 7, stride 3, dilation 2, padding 2", "everything at once", 2, 6, 13, 11, 7, 3, 2, 2, 3),
]

_UNFOLD_MISTAKES = [
    (dict(interleaved=True), "unfold's rows are channel-major (row c*K*K + t), so the channel axis splits as "
                             "(G, C/G): view (B, G, C//G, K*K, ...). A view as (B, C//G, G, ...) puts channel c in "
                             "group c % G"),
    (dict(transposed=True), "the K*K taps of the kernels are in (u, v) reading order, like unfold's rows: do not "
                            "transpose the kernel"),
    (dict(padding_ignores_dilation=True), "padding=None means dilation * (K - 1) // 2, not (K - 1) // 2"),
    (dict(ignore_dilation=True), "pass dilation= to F.unfold: the taps are d pixels apart"),
]


def _unfold_variant(x: np.ndarray, kernels: np.ndarray, stride: int, padding: Optional[int], dilation: int, *,
                    interleaved: bool = False, transposed: bool = False, padding_ignores_dilation: bool = False,
                    ignore_dilation: bool = False) -> Optional[np.ndarray]:
    """The unfold involution (float64) with one of the likely slips of the exercise switched on.

    ``x (B, C, H, W)``, ``kernels (B, G, K, K, H', W')`` -> ``(B, C, H', W')``, or ``None`` where the
    slip makes the shapes disagree (the learner's code then fails with an error, which is named anyway).
    """
    xt, kt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(kernels))
    batch, channels = xt.shape[:2]
    groups, k, out_h, out_w = kt.shape[1], kt.shape[2], kt.shape[4], kt.shape[5]
    if padding is None:
        padding = (k - 1) // 2 if padding_ignores_dilation else dilation * (k - 1) // 2
    try:
        columns = F.unfold(xt, k, dilation=1 if ignore_dilation else dilation, padding=padding, stride=stride)
    except RuntimeError:  # no window fits with the slip's padding
        return None
    if columns.shape[-1] != out_h * out_w:
        return None
    if interleaved:
        windows = columns.view(batch, channels // groups, groups, k * k, out_h, out_w).transpose(1, 2)
    else:
        windows = columns.view(batch, groups, channels // groups, k * k, out_h, out_w)
    taps = kt.transpose(2, 3) if transposed else kt
    out = (taps.reshape(batch, groups, 1, k * k, out_h, out_w) * windows).sum(dim=3)
    if interleaved:
        out = out.transpose(1, 2)
    return out.reshape(batch, channels, out_h, out_w).numpy()


def _torch_case(seed: int, batch: int, channels: int, height: int, width: int, k: int, stride: int,
                padding: Optional[int], dilation: int, groups: int):
    """Random float64 tensors ``x (B, C, H, W)`` and ``kernels (B, G, K, K, H', W')``, the loops' answer,
    and the wrong answers of :data:`_UNFOLD_MISTAKES`."""
    x, kernels = random_involution_inputs(seed, batch, channels, height, width, k, stride, padding, dilation, groups)
    expected = reference.involution_loops(x, kernels, stride, padding, dilation)
    mistakes = []
    for switches, message in _UNFOLD_MISTAKES:
        wrong = _unfold_variant(x, kernels, stride, padding, dilation, **switches)
        if wrong is not None and not np.allclose(wrong, expected, rtol=1e-9, atol=1e-10):
            mistakes.append((wrong, message))
    return torch.from_numpy(x), torch.from_numpy(kernels), expected, mistakes


def check_involution_unfold(involution_unfold_student: Callable[..., object]) -> bool:
    """Check ``involution_unfold_student(x, kernels, stride=1, padding=None, dilation=1)`` (torch).

    Inputs are float64 tensors; the expected output comes from
    :func:`involution_edu.reference.involution_loops`. The cases cover stride 2, groups > 1, odd
    and non-square sizes, K = 1, dilation 2 and the default padding ``dilation * (K - 1) // 2``.
    The library's implementations of the operator are forbidden (``F.unfold`` is the tool to use).
    """
    cases: List[Case] = []
    for seed, (name, why, batch, channels, height, width, k, stride, padding, dilation, groups) in enumerate(_GEOMETRIES):
        x, kernels, expected, mistakes = _torch_case(seed, batch, channels, height, width, k, stride, padding,
                                                     dilation, groups)
        kwargs = dict(stride=stride, padding=padding, dilation=dilation)
        cases.append(Case(name, (x, kernels), expected, why, kwargs=kwargs, rtol=1e-9, atol=1e-10, mistakes=mistakes))
    x, kernels, expected, mistakes = _torch_case(100, 1, 4, 9, 8, 3, 1, None, 2, 2)
    cases.append(Case("default padding with dilation 2", (x, kernels), expected,
                      "padding=None means dilation * (K - 1) // 2, here 2, not (K - 1) // 2",
                      kwargs=dict(stride=1, padding=None, dilation=2), rtol=1e-9, atol=1e-10, mistakes=mistakes))
    x, kernels, expected, mistakes = _torch_case(101, 2, 8, 6, 6, 3, 1, None, 1, 4)
    cases.append(Case("8 channels in 4 groups, called with defaults", (x, kernels), expected,
                      "channel c uses group c // (C // G): contiguous blocks of channels share a kernel",
                      rtol=1e-9, atol=1e-10, mistakes=mistakes))
    return run_cases("involution_unfold_student", involution_unfold_student, cases,
                     rule=Rule(what="the unfold formulation", families=("involution",)), random_cases=_random_unfold_cases)


def _random_unfold_cases(rng: np.random.Generator) -> List[Case]:
    """Hidden cases: a fresh geometry each call (odd K up to 7, stride 1-3, dilation 1-2, 1 < G < C too)."""
    cases: List[Case] = []
    while len(cases) < 3:
        groups = int(rng.choice([1, 2, 3, 4]))
        channels = groups * int(rng.integers(1, 4))
        k = int(rng.choice([1, 3, 5, 7]))
        stride, dilation = int(rng.integers(1, 4)), int(rng.integers(1, 3))
        padding = None if rng.random() < 0.5 else int(rng.integers(0, 4))
        height, width = int(rng.integers(3, 12)), int(rng.integers(3, 12))
        pad = shapes.default_padding(k, dilation) if padding is None else padding
        if min(height, width) + 2 * pad < dilation * (k - 1) + 1:
            continue  # no window fits: not a valid geometry
        batch = int(rng.integers(1, 3))
        x, kernels, expected, mistakes = _torch_case(int(rng.integers(1 << 30)), batch, channels, height, width, k,
                                                     stride, padding, dilation, groups)
        cases.append(Case(f"hidden case {len(cases) + 1}", (x, kernels), expected,
                          "the output equals the loops' on a geometry drawn at random",
                          kwargs=dict(stride=stride, padding=padding, dilation=dilation), rtol=1e-9, atol=1e-10,
                          mistakes=mistakes))
    return cases


# ------------------------------------------------------------------------------------ diagnosis
def involution_unfold_suspect(x: torch.Tensor, kernels: torch.Tensor, stride: int = 1, padding: Optional[int] = None,
                              dilation: int = 1) -> torch.Tensor:
    """An unfold involution with ONE bug, for the diagnosis exercise of notebook 03.

    ``x (B, C, H, W)``, ``kernels (B, G, K, K, H', W')`` -> ``(B, C, H', W')``. It agrees with the
    loops on many inputs; the exercise is to find one where it does not, and say why.
    """
    batch, channels = x.shape[:2]
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    if padding is None:
        padding = dilation * (k - 1) // 2
    windows = F.unfold(x, k, dilation=dilation, padding=padding, stride=stride)  # (B, C*K*K, H'*W')
    windows = windows.view(batch, channels // groups, groups, k * k, out_h, out_w).transpose(1, 2)
    taps = kernels.reshape(batch, groups, 1, k * k, out_h, out_w)
    out = (taps * windows).sum(dim=3)  # (B, G, C/G, H', W')
    return out.transpose(1, 2).reshape(batch, channels, out_h, out_w)  # back to the channel order of x


_DIAGNOSIS = {
    "not a pair": "expose_bug() must return a pair (x, kernels)",
    "not tensors": "x and kernels must both be torch tensors",
    "not float64": "use float64 tensors (dtype=torch.float64), so that rounding cannot hide or fake a difference",
    "not on the CPU": "put the tensors on the CPU",
    "not finite": ("x and kernels must be finite: NaN or infinity makes every comparison fail, so a 'difference' "
                   "on such inputs shows nothing about the suspect"),
    "bad shapes": "x must be (B, C, H, W) and kernels (B, G, K, K, H', W'), of modest size",
    "loops refuse them": ("the loops refuse these shapes: with stride 1 and the default padding the kernels must be "
                          "(B, G, K, K, H, W) with an odd K and C divisible by G"),
    "G = 1": "with G = 1 every channel uses the one kernel, whatever the grouping rule: no difference",
    "G = C": "with G = C every channel is a group of its own under both rules: no difference",
    "same kernels": ("no difference on these inputs: are the kernels of different groups different? If all groups "
                     "share one kernel, the grouping rule does not matter"),
    "more channels than needed": ("these inputs expose the bug, but with more channels than needed: find the smallest "
                                  "C for which some G puts a channel in different groups under the two rules"),
}

#: The fewest channels on which the suspect can differ from the loops: it needs a G with 1 < G < C that divides C.
FEWEST_CHANNELS = 4


def _diagnose(expose_bug: Callable[..., object]) -> Callable[[], str]:
    """Call the learner's ``expose_bug()`` and name what its inputs show about the suspect (a key of _DIAGNOSIS)."""

    def verdict() -> str:
        answer = expose_bug()
        if not isinstance(answer, (tuple, list)) or len(answer) != 2:
            return "not a pair"
        x, kernels = answer
        if not (isinstance(x, torch.Tensor) and isinstance(kernels, torch.Tensor)):
            return "not tensors"
        if x.dtype != torch.float64 or kernels.dtype != torch.float64:
            return "not float64"
        if x.device.type != "cpu" or kernels.device.type != "cpu":
            return "not on the CPU"
        if x.dim() != 4 or kernels.dim() != 6 or x.numel() > 100_000 or kernels.numel() > 1_000_000:
            return "bad shapes"
        if not (bool(torch.isfinite(x).all()) and bool(torch.isfinite(kernels).all())):
            return "not finite"
        try:
            expected = reference.involution_loops(x.numpy(), kernels.numpy())
        except (TypeError, ValueError):
            return "loops refuse them"
        got = involution_unfold_suspect(x, kernels).numpy()
        if not (np.isfinite(expected).all() and np.isfinite(got).all()):
            return "not finite"
        scale = max(float(np.abs(expected).max()), 1e-300)
        if float(np.abs(got - expected).max()) > 1e-6 * scale:
            return "exposes the bug" if x.shape[1] <= FEWEST_CHANNELS else "more channels than needed"
        groups, channels = kernels.shape[1], x.shape[1]
        if groups == 1:
            return "G = 1"
        if groups == channels:
            return "G = C"
        return "same kernels"

    return verdict


def check_expose_bug(expose_bug: Callable[..., object]) -> bool:
    """Check ``expose_bug() -> (x, kernels)``: finite float64 CPU tensors on which
    :func:`involution_unfold_suspect` (stride 1, default padding) differs from the loops, with the
    fewest channels that allow it (:data:`FEWEST_CHANNELS`).

    The suspect splits unfold's channel axis as ``(C/G, G)``, which is the ``c % G`` grouping; it
    agrees with the loops whenever ``G = 1`` or ``G = C``, so the answer needs ``1 < G < C`` with
    ``G`` dividing ``C`` (hence ``C = 4, G = 2`` at the least) and kernels that differ between
    groups. Each way of missing is named; NaN or infinite inputs are refused (they would "differ"
    through any comparison). The function takes no input, so there are no random cases: the
    learner's inputs are judged as they are.
    """
    case = Case("your (x, kernels)", (), "exposes the bug",
                "the suspect must disagree with involution_loops(x, kernels) on your inputs",
                mistakes=[(code, message) for code, message in _DIAGNOSIS.items()])
    # No Rule: expose_bug may call anything (the suspect, the loops) to find its inputs; the checker's own calls
    # to the loops and the suspect run inside the same wrapper. The time limit still applies.
    return run_cases("expose_bug", _diagnose(expose_bug), [case])


# ---------------------------------------------------------------------------------- memory total
def unfold_total_bytes_reference(layers: Sequence[Tuple[int, int, int, int, int]], batch: int,
                                 bytes_per_element: int = 4) -> int:
    """Bytes of the unfolded tensors ``(B, C*K*K, H'*W')`` of every layer ``(C, H, W, K, stride)``.

    ``H, W`` are the layer's input size; the padding is the 'same' ``(K - 1) // 2`` and the
    dilation 1, so ``H' = output_size(H, K, stride, (K - 1) // 2)``.
    """
    total = 0
    for channels, height, width, k, stride in layers:
        padding = shapes.default_padding(k)
        out_h = shapes.output_size(height, k, stride, padding)
        out_w = shapes.output_size(width, k, stride, padding)
        total += batch * channels * k * k * out_h * out_w * bytes_per_element
    return total


def _total_wrong(layers, batch, bytes_per_element, *, input_positions=False, no_taps=False, k_not_squared=False,
                 no_batch=False, ceil_half=False, elements=False) -> int:
    total = 0
    for channels, height, width, k, stride in layers:
        if input_positions:
            out_h, out_w = height, width
        elif ceil_half:
            out_h, out_w = height // stride, width // stride
        else:
            out_h = shapes.output_size(height, k, stride, (k - 1) // 2)
            out_w = shapes.output_size(width, k, stride, (k - 1) // 2)
        taps = 1 if no_taps else (k if k_not_squared else k * k)
        total += (1 if no_batch else batch) * channels * taps * out_h * out_w * (1 if elements else bytes_per_element)
    return total


def check_unfold_total_bytes(unfold_total_bytes: Callable[..., object]) -> bool:
    """Check ``unfold_total_bytes(layers, batch, bytes_per_element=4) -> int``.

    ``layers`` lists involution layers by their INPUT ``(C, H, W, K, stride)``; each unfolds to
    ``(B, C*K*K, H'*W')`` with ``H' = floor((H + 2p - K) / s) + 1`` and ``p = (K - 1) // 2``.
    """
    rednet50 = ([(32, 112, 112, 7, 1)] + [(64, 56, 56, 7, 1)] * 3 + [(128, 56, 56, 7, 2)] + [(128, 28, 28, 7, 1)] * 3
                + [(256, 28, 28, 7, 2)] + [(256, 14, 14, 7, 1)] * 5 + [(512, 14, 14, 7, 2)] + [(512, 7, 7, 7, 1)] * 2)
    # (name, why, layers, batch, bytes_per_element)
    table = [
        ("one 3x3 layer, batch 1", "B * C * K^2 * H' * W' elements", [(16, 10, 10, 3, 1)], 1, 4),
        ("two layers, batch 4, float64", "sum over the layers; 8 bytes per element", [(8, 12, 9, 5, 1), (4, 6, 6, 3, 1)],
         4, 8),
        ("stride 2 on 56x56", "the positions are the OUTPUT positions: 28 x 28, not 56 x 56", [(128, 56, 56, 7, 2)], 8, 4),
        ("stride 2 on an odd 7x7", "H' = floor((7 + 6 - 7) / 2) + 1 = 4 (not 7 // 2 = 3)", [(64, 7, 7, 7, 2)], 2, 4),
        ("K = 1, half precision", "K = 1: the unfolded tensor is the input itself", [(32, 14, 14, 1, 1)], 4, 2),
        ("RedNet-50 with its 7x7 stem, batch 8", "every involution, the stem's and the strided ones included",
         rednet50, 8, 4),
        ("RedNet-50 with the classification code's 3x3 stem, batch 8", "the same network, a 3x3 stem involution",
         [(32, 112, 112, 3, 1)] + rednet50[1:], 8, 4),
    ]
    cases = [_total_case(name, why, layers, batch, nbytes) for name, why, layers, batch, nbytes in table]
    rule = Rule(what="the memory count (without building the tensors)", families=("unfold", "convolution", "involution"),
                allow=(shapes.output_size, shapes.default_padding))
    return run_cases("unfold_total_bytes", unfold_total_bytes, cases, rule=rule, random_cases=_random_total_cases)


_TOTAL_MISTAKES = [
    (dict(input_positions=True), "a strided layer has H' x W' OUTPUT positions, fewer than the input's H x W"),
    (dict(ceil_half=True), "H' is floor((H + 2p - K) / s) + 1, which is not H // s for odd H"),
    (dict(no_taps=True), "that is the size of the feature map; unfold copies K*K values per channel and position"),
    (dict(k_not_squared=True), "a K x K window has K*K taps, not K"),
    (dict(no_batch=True), "multiply by the batch size B"),
    (dict(elements=True), "that is the number of elements; multiply by bytes_per_element (4 for float32)"),
]


def _total_case(name: str, why: str, layers, batch: int, nbytes: int) -> Case:
    expected = unfold_total_bytes_reference(layers, batch, nbytes)
    mistakes: list = []
    for switches, message in _TOTAL_MISTAKES:
        _add_mistake(mistakes, expected, _total_wrong(layers, batch, nbytes, **switches), message)
    kwargs = {} if nbytes == 4 else dict(bytes_per_element=nbytes)
    return Case(name, (layers, batch), expected, why, kwargs=kwargs, mistakes=mistakes)


def _random_total_cases(rng: np.random.Generator) -> List[Case]:
    """Hidden cases: 1 to 4 random layers (odd and even sizes, strides 1-3, K 1-7), a random batch and dtype size."""
    cases = []
    for index in range(3):
        layers = []
        for _ in range(int(rng.integers(1, 5))):
            k = int(rng.choice([1, 3, 5, 7]))
            size_h, size_w = int(rng.integers(k, 40)), int(rng.integers(k, 40))
            layers.append((int(rng.integers(1, 9)) * 8, size_h, size_w, k, int(rng.integers(1, 4))))
        batch, nbytes = int(rng.integers(1, 17)), int(rng.choice([1, 2, 4, 8]))
        cases.append(_total_case(f"hidden case {index + 1}", "the count on layers drawn at random", layers, batch,
                                 nbytes))
    return cases


# ------------------------------------------------------------------------------------ questions
QUESTIONS = {
    "speedup_size": Question(
        prompt=("The loops take a fixed cost per multiply-add; a vectorized call takes a fixed cost per CALL plus "
                "a much smaller cost per multiply-add. As the input grows, the speed-up of einsum over the loops:"),
        choices={
            "a": "stays the same: both do the same multiply-adds",
            "b": "grows, then levels off: the per-call overhead is spread over more work",
            "c": "shrinks: bigger arrays are slower to vectorize",
        },
        answer="b",
        explanation=("time_loops ~ a*N and time_vec ~ c + b*N with b << a, so the ratio a*N / (c + b*N) grows with "
                     "N towards a/b. On a tiny input the call overhead c dominates and the ratio is modest; on a "
                     "large one it approaches a/b. So a speed-up measured at one size says little about another."),
        wrong={
            "a": "They do the same multiply-adds, but not at the same cost each; and the vectorized call has a "
                 "fixed overhead that matters most on small inputs.",
            "c": "Vectorized code is at its best on big arrays: its fixed overhead is spread over more work.",
        },
    ),
    "stem_vs_stage1": Question(
        prompt=("RedNet-50's stem involution has 32 channels at 112x112; each stage-1 involution has 64 channels at "
                "56x56; both K = 7, stride 1. The stem's unfolded tensor, against one stage-1 involution's, is:"),
        choices={
            "a": "a quarter as large",
            "b": "half as large",
            "c": "the same size",
            "d": "twice as large",
        },
        answer="d",
        explanation=("The unfolded tensor holds C*K*K values per output position. The stem has half the channels but "
                     "112*112 = 4 * 56*56 positions, so 32 * 112^2 = 2 * 64 * 56^2: twice one stage-1 involution. "
                     "The table below reads it off the model: 600 MiB against 300 MiB per stage-1 involution at batch 8."),
        wrong={
            "a": "The positions go the other way: 112x112 is four times 56x56, not a quarter of it.",
            "b": "Half the channels, yes; but 112x112 holds four times the positions of 56x56, which more than makes "
                 "up for it.",
            "c": "The channels halve but the positions quadruple: the product doubles.",
        },
    ),
    "suspect_grouping": Question(
        prompt=("involution_unfold_suspect views unfold's output as (B, C//G, G, K*K, H', W') and swaps axes 1 and 2 "
                "(and back after the sum, so every output channel keeps its place). Which group's kernel does "
                "channel c use?"),
        choices={
            "a": "c // (C // G), the paper's contiguous blocks",
            "b": "c % G, the keras.io interleaved grouping",
            "c": "it depends on K",
        },
        answer="b",
        explanation=("unfold's channel c sits at row c*K*K + t. Viewing the channel axis as (C/G, G) writes "
                     "c = n*G + g, so after the swap channel c lands at group g = c % G: the keras.io grouping. "
                     "The next exercise turns that hypothesis into inputs on which the suspect fails."),
        wrong={
            "a": "For the paper's grouping the channel axis must split as (G, C/G): c = g*(C/G) + n. The suspect "
                 "splits it as (C/G, G).",
            "c": "The K*K taps are a separate axis; the grouping only depends on how the channel axis is split.",
        },
    ),
}
