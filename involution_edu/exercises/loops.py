"""Checkers and questions for notebook 02 (involution as explicit NumPy loops).

Each checker builds a table of :class:`~involution_edu.exercises.framework.Case` whose
expected answers come from the library (:func:`~involution_edu.shapes.output_size`) or from
a computation written here, names the likely mistakes (computed with deliberately wrong
versions), adds hidden cases drawn at random on every call (``random_cases``: a table of
memorised answers fails them), declares what the exercise forbids as a
:class:`~involution_edu.exercises.framework.Rule` (enforced at run time on every call the
learner's function makes; the library, this module's oracles included, is forbidden by
default), and hands it all to :func:`~involution_edu.exercises.framework.run_cases`, which
prints one verdict. A checker never raises.

Exercises checked here::

    output_size(size, kernel_size, stride, padding, dilation) -> int
    affected_outputs(height, width, kernel_size, stride, padding, dilation, row, col)
        -> set of output positions (i, j) whose window reads input pixel (row, col)
    compose_kernels(kernels_1, kernels_2) -> kernels
        kernels_1: (B, G, K1, K1, H, W), kernels_2: (B, G, K2, K2, H, W), both stride 1 and
        "same" padding -> (B, G, K1 + K2 - 1, K1 + K2 - 1, H, W) such that ONE involution with
        them equals the two in a row: involution(involution(x, kernels_1), kernels_2)
    paper_channel_order(channels, groups) -> perm, a permutation of 0..C-1 such that
        involution_interleaved(x[:, perm], kernels) == involution_loops(x, kernels)[:, perm]
        where involution_interleaved puts channel c in group c % G (the keras.io grouping)

Also here: :func:`involution_interleaved` (the keras.io grouping) and
:func:`keras_kernel_order` (how keras.io reads the generator's K*K*G channels).

Questions (``QUESTIONS``): ``same_padding``, ``corner_pixel``, ``keras_reading``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from .. import reference, shapes
from .framework import Case, Question, Rule, run_cases

__all__ = [
    "check_output_size",
    "check_affected_outputs",
    "check_compose_kernels",
    "check_paper_channel_order",
    "involution_interleaved",
    "keras_kernel_order",
    "QUESTIONS",
]

#: What the exercises of this notebook may not call: any convolution, any sliding-window view or
#: unfold, and every implementation of the operator (the library, its oracles included, by default).
#: Plain torch arithmetic is allowed: no torch op other than these computes an answer here.
_FAMILIES = ("convolution", "unfold", "involution")


def _check(title: str, candidate: Callable[..., object], cases: Sequence[Case], *, what: str,
           families: Sequence[str] = _FAMILIES, forbid: Sequence[Any] = (), allow: Sequence[Any] = (),
           random_cases: Optional[Callable[[np.random.Generator], Sequence[Case]]] = None):
    """``run_cases`` with this exercise's :class:`Rule` (enforced at run time) and its hidden random cases."""
    rule = Rule(what=what, forbid=tuple(forbid), families=tuple(families), allow=tuple(allow))
    return run_cases(title, candidate, cases, rule=rule, random_cases=random_cases)


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
#: (switch, message): each a single, likely mistake in the output-size formula.
OUTPUT_SIZE_MISTAKES = {
    "no_dilation": "you left out the dilation: the window spans d*(K-1) + 1 pixels, not K",
    "ceil": "round down, not up: a window that would stick out of the padded input is dropped",
    "one_side": "your count pads one side only: the padding adds p rows at the top AND p at the bottom (H + 2p)",
    "off_by_one": "off by one: count the window starts 0, s, 2s, ... (the first one is at 0, so add 1)",
    "span_dk": "the span of a dilated window is d*(K-1) + 1, not d*K",
    "true_division": "use integer (floor) division: the answer is a count",
}


def output_size_variant(size: int, k: int, stride: int, padding: int, dilation: int, mistake: str = "") -> Any:
    """The output size, or the value one named mistake (a key of :data:`OUTPUT_SIZE_MISTAKES`) gives."""
    span = dilation * (k - 1) + 1
    if mistake == "no_dilation":
        return (size + 2 * padding - k) // stride + 1
    if mistake == "ceil":
        return -(-(size + 2 * padding - span) // stride) + 1
    if mistake == "one_side":
        return (size + padding - span) // stride + 1
    if mistake == "off_by_one":
        return (size + 2 * padding - span) // stride
    if mistake == "span_dk":
        return (size + 2 * padding - dilation * k) // stride + 1
    if mistake == "true_division":
        return (size + 2 * padding - span) / stride + 1
    return (size + 2 * padding - span) // stride + 1


def _output_size_case(name: str, why: str, size: int, k: int, stride: int, padding: int, dilation: int) -> Case:
    expected = shapes.output_size(size, k, stride, padding, dilation)
    mistakes: list = []
    for mistake, message in OUTPUT_SIZE_MISTAKES.items():
        _add_mistake(mistakes, expected, output_size_variant(size, k, stride, padding, dilation, mistake), message)
    return Case(name, (size, k, stride, padding, dilation), expected, why, mistakes=mistakes)


def _random_output_size_cases(rng: np.random.Generator) -> List[Case]:
    cases = []
    while len(cases) < 6:
        k, stride = int(rng.integers(1, 8)), int(rng.integers(1, 5))
        padding, dilation = int(rng.integers(0, 5)), int(rng.integers(1, 4))
        size = int(rng.integers(1, 40))
        if size + 2 * padding >= dilation * (k - 1) + 1:
            cases.append(_output_size_case("hidden random case", "the output size of a random geometry (any K, "
                                           "stride, padding, dilation)", size, k, stride, padding, dilation))
    return cases


#: (name, why, size, kernel_size, stride, padding, dilation), ordered so that each single mistake of
#: OUTPUT_SIZE_MISTAKES fails first on a case where no other mistake gives the same value (the tests check it).
_OUTPUT_SIZE_TABLE = [
    ("no padding: 8, K=3", "without padding the output shrinks by K - 1", 8, 3, 1, 0, 1),
    ("'same': 8, K=5, p=2", "padding (K-1)/2 = 2 on each side keeps the size", 8, 5, 1, 2, 1),
    ("'same': 8, K=3, p=1", "padding (K-1)/2 keeps the size", 8, 3, 1, 1, 1),
    ("K=1", "a 1x1 window fits everywhere", 5, 1, 1, 0, 1),
    ("stride 2, even: 8, K=3, p=1", "every second window: floor(7 / 2) + 1 = 4", 8, 3, 2, 1, 1),
    ("stride 2, odd: 7, K=3, p=1", "odd size with stride 2: floor(6 / 2) + 1 = 4, not 3", 7, 3, 2, 1, 1),
    ("stride 2, no padding: 10, K=3", "floor drops a last partial step: floor(7 / 2) + 1 = 4", 10, 3, 2, 0, 1),
    ("stride 3: 11, K=3, p=1", "floor(10 / 3) + 1 = 4: round down, not up", 11, 3, 3, 1, 1),
    ("dilation 3: 10, K=3, p=3", "a dilated window spans d(K-1)+1 = 7 pixels", 10, 3, 1, 3, 3),
    ("dilation 2: 9, K=3, p=2", "a dilated window spans d(K-1)+1 = 5 pixels", 9, 3, 1, 2, 2),
    ("dilation 2, no padding: 9, K=3", "9 - 5 + 1 = 5 positions", 9, 3, 1, 0, 2),
    ("dilation 3, stride 2: 13, K=3, p=1", "span 7: floor((13 + 2 - 7) / 2) + 1 = 5", 13, 3, 2, 1, 3),
    ("K=7, stride 2, p=3 on 7", "the odd-size case the paper's code gets wrong: 4 positions", 7, 7, 2, 3, 1),
    ("window = input: 5, K=5", "exactly one position", 5, 5, 1, 0, 1),
    ("even K=4, p=1: 9", "an even window: 9 + 2 - 4 + 1 = 8 positions", 9, 4, 1, 1, 1),
    ("K=5, stride 2, dilation 2, p=4 on 11", "everything at once: span 9, floor(10 / 2) + 1 = 6", 11, 5, 2, 4, 2),
    ("K=3, stride 4, dilation 3, p=1 on 12", "span 7: floor(7 / 4) + 1 = 2", 12, 3, 4, 1, 3),
]


def _output_size_table_cases() -> List[Case]:
    return [_output_size_case(*row) for row in _OUTPUT_SIZE_TABLE]


def check_output_size(output_size_student: Callable[..., object]):
    """Check ``output_size(size, kernel_size, stride, padding, dilation)`` against
    :func:`involution_edu.shapes.output_size`: ``floor((size + 2p - d(K-1) - 1) / s) + 1``.

    Fixed cases (each named mistake fails first where only it gives that value), then hidden
    random geometries. Any torch op, convolution, unfold and the library are forbidden.
    """
    cases = _output_size_table_cases()
    return _check("output_size", output_size_student, cases, what="the output-size formula",
                  random_cases=_random_output_size_cases)


# ----------------------------------------------------------------------------- affected_outputs
def _affected(height: int, width: int, k: int, stride: int, padding: int, dilation: int, row: int, col: int,
              *, mirrored: bool = False, ignore_stride: bool = False, ignore_dilation: bool = False,
              ignore_padding: bool = False, no_last_window: bool = False) -> Set[Tuple[int, int]]:
    """Output positions whose window reads ``(row, col)``: ``row = i*s + u*d - p`` for some tap ``u``."""
    s = 1 if ignore_stride else stride
    d = 1 if ignore_dilation else dilation
    p = 0 if ignore_padding else padding
    out_h = shapes.output_size(height, k, stride, padding, dilation)
    out_w = shapes.output_size(width, k, stride, padding, dilation)
    if no_last_window:  # every i with i*s - p inside the input, as if partial windows were kept
        out_h, out_w = (height + padding - 1) // stride + 1, (width + padding - 1) // stride + 1
    sign = -1 if mirrored else 1
    rows = {i for i in range(out_h) for u in range(k) if i * s + sign * (u * d - p) == row}
    cols = {j for j in range(out_w) for v in range(k) if j * s + sign * (v * d - p) == col}
    return {(i, j) for i in sorted(rows) for j in sorted(cols)}


_AFFECTED_MISTAKES = [
    (dict(mirrored=True), "the window of output i starts at row i*s - p and goes DOWN: row = i*s + u*d - p, "
                          "so i = (row - u*d + p) / s"),
    (dict(ignore_stride=True), "you left out the stride: output i starts at row i*s - p, and only the i "
                               "for which (row - u*d + p) is divisible by s count"),
    (dict(ignore_dilation=True), "you left out the dilation: tap u is u*d rows below the window's start"),
    (dict(ignore_padding=True), "you left out the padding: output i's window starts at row i*s - p"),
    (dict(no_last_window=True), "some of your outputs do not exist: there are only H' = (H + 2p - d(K-1) - 1) // s + 1 "
                                "output rows; a last window that would stick out of the padded input is dropped"),
]


def _affected_case(name: str, why: str, height: int, width: int, k: int, stride: int, padding: int, dilation: int,
                   row: int, col: int) -> Case:
    expected = _affected(height, width, k, stride, padding, dilation, row, col)
    mistakes: list = []
    for switches, message in _AFFECTED_MISTAKES:
        _add_mistake(mistakes, expected, _affected(height, width, k, stride, padding, dilation, row, col, **switches),
                     message)
    return Case(name, (height, width, k, stride, padding, dilation, row, col), expected, why, mistakes=mistakes)


def _random_affected_cases(rng: np.random.Generator) -> List[Case]:
    cases = []
    while len(cases) < 5:
        k, stride = int(rng.choice([1, 2, 3, 5])), int(rng.integers(1, 4))
        padding, dilation = int(rng.integers(0, 3)), int(rng.integers(1, 3))
        height, width = (int(v) for v in rng.integers(1, 14, size=2))
        span = dilation * (k - 1) + 1
        if height + 2 * padding < span or width + 2 * padding < span:
            continue
        row, col = int(rng.integers(0, height)), int(rng.integers(0, width))
        cases.append(_affected_case("hidden random case", "a random pixel of a random geometry (the bottom rows "
                                    "and right columns included)", height, width, k, stride, padding, dilation,
                                    row, col))
    return cases


def check_affected_outputs(affected_outputs: Callable[..., object]):
    """Check ``affected_outputs(height, width, kernel_size, stride, padding, dilation, row, col)``.

    The answer is the set of output positions ``(i, j)`` (plain ints) whose window reads input
    pixel ``(row, col)``: those with ``row = i*s + u*d - p`` and ``col = j*s + v*d - p`` for some
    taps ``u, v`` in ``0..K-1`` and ``0 <= i < H'``, ``0 <= j < W'``. With fixed kernels these are
    exactly the outputs that change when that pixel changes (the tests confirm it by perturbing
    the pixel). Running the operator (any implementation) is forbidden: the point is to derive
    the positions. The library's ``output_size`` is allowed (the learner built it in Exercise 1).
    Cases include pixels in the rows and columns that the last, partial window drops (no output
    reads them).
    """
    # (name, why, height, width, kernel_size, stride, padding, dilation, row, col)
    table = [
        ("interior pixel, K=3", "a 3x3 window: the 9 outputs around the pixel read it", 7, 7, 3, 1, 1, 1, 3, 3),
        ("corner pixel (0, 0)", "at the corner only the outputs whose window reaches it: 2 x 2", 7, 7, 3, 1, 1, 1, 0, 0),
        ("edge pixel, non-square", "H and W are separate axes", 6, 9, 3, 1, 1, 1, 0, 4),
        ("stride 2, even row", "with stride 2, output i covers rows 2i - 1 .. 2i + 1", 8, 8, 3, 2, 1, 1, 4, 4),
        ("stride 2, odd row", "an odd row is reached from fewer outputs when the stride is 2", 8, 8, 3, 2, 1, 1, 3, 5),
        ("dilation 2", "the taps are 2 apart: output i reads rows i - 2, i, i + 2", 9, 9, 3, 1, 2, 2, 4, 4),
        ("the last row, stride 2, no padding", "8 rows, K=3, s=2: H' = 3 windows cover rows 0..6; row 7 is read "
         "by no output", 8, 8, 3, 2, 0, 1, 7, 3),
        ("the last columns, stride 3, dilation 2", "10 columns, span 5, s=3: W' = 2 windows; column 9 lies past "
         "the last one", 6, 10, 3, 3, 0, 2, 2, 9),
        ("K=5, stride 2, dilation 2, no padding", "everything at once, no padding", 13, 11, 5, 2, 0, 2, 8, 6),
        ("K=7, 'same' padding, last pixel", "the bottom-right corner with a 7x7 window", 9, 8, 7, 1, 3, 1, 8, 7),
        ("K=3, stride 3, pixel between windows", "stride 3 = K, no padding: the windows do not overlap, one output "
         "reads the pixel", 9, 9, 3, 3, 0, 1, 4, 2),
    ]
    cases = [_affected_case(*row) for row in table]
    return _check("affected_outputs", affected_outputs, cases,
                  what="the positions (derive them, do not run the operator)", allow=(shapes.output_size,),
                  random_cases=_random_affected_cases)


# ------------------------------------------------------------------------------ compose_kernels
def _shift(kernels: np.ndarray, du: int, dv: int, border: str) -> np.ndarray:
    """``moved[..., i, j] = kernels[..., i + du, j + dv]``; outside the map: 0 (or clamped / wrapped)."""
    height, width = kernels.shape[-2:]
    rows, cols = np.arange(height) + du, np.arange(width) + dv
    if border == "wrap":
        return kernels[..., rows % height, :][..., cols % width]
    moved = kernels[..., np.clip(rows, 0, height - 1), :][..., np.clip(cols, 0, width - 1)]
    if border == "clamp":
        return moved
    inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]
    return moved * inside


def _compose(inner: np.ndarray, outer: np.ndarray, *, inner_at_output: bool = False, border: str = "zero",
             flip_inner: bool = False) -> np.ndarray:
    """Kernels of one involution equal to ``inner`` then ``outer`` (stride 1, 'same' padding each).

    ``inner (B, G, K1, K1, H, W)``, ``outer (B, G, K2, K2, H, W)`` -> ``(B, G, K1+K2-1, K1+K2-1, H, W)``:
    ``out[a, e, i, j] = sum_{u2, v2} outer[u2, v2, i, j] * inner[a - u2, e - v2, i + u2 - p2, j + v2 - p2]``,
    the inner kernel taken at the intermediate pixel the outer tap reads (zero outside the map).
    """
    batch, groups, k1, _, height, width = inner.shape
    k2 = outer.shape[2]
    p2 = (k2 - 1) // 2
    k = k1 + k2 - 1
    if flip_inner:
        inner = inner[:, :, ::-1, ::-1]
    out = np.zeros((batch, groups, k, k, height, width))
    for u2 in range(k2):
        for v2 in range(k2):
            moved = inner if inner_at_output else _shift(inner, u2 - p2, v2 - p2, border)
            out[:, :, u2 : u2 + k1, v2 : v2 + k1] += outer[:, :, u2, v2][:, :, None, None] * moved
    return out


def _reads_input(k: int, height: int, width: int) -> np.ndarray:
    """``(K, K, H, W)`` mask: tap ``(a, e)`` of output ``(i, j)`` reads a pixel of x (not its zero padding)."""
    p = (k - 1) // 2
    a, i = np.arange(k)[:, None], np.arange(height)[None, :]
    rows = (i + a - p >= 0) & (i + a - p < height)  # (K, H)
    e, j = np.arange(k)[:, None], np.arange(width)[None, :]
    cols = (j + e - p >= 0) & (j + e - p < width)  # (K, W)
    return rows[:, None, :, None] & cols[None, :, None, :]


_COMPOSE_MISTAKES = [
    (dict(inner_at_output=True),
     "you took kernels_1 at the output position (i, j). The first layer's kernel belongs to the pixel it "
     "computes: the intermediate pixel (i + u2 - p2, j + v2 - p2) that tap (u2, v2) of the second layer reads. "
     "(For a convolution the two are the same kernel; for involution they are not.)"),
    (dict(border="clamp"),
     "at the border you reused the kernel of the nearest intermediate pixel: the first layer's output is "
     "zero-padded before the second layer reads it, so a tap that lands outside 0..H-1 adds nothing"),
    (dict(border="wrap"),
     "a negative index wrapped around to the other side of the map: the first layer's output is zero-padded "
     "before the second layer reads it, so a tap that lands outside 0..H-1 adds nothing"),
    (dict(flip_inner=True), "kernels_1 is flipped: tap (a, e) of the result pairs tap (a - u2, e - v2) of "
                            "kernels_1 with tap (u2, v2) of kernels_2 (no flip, as in the operator)"),
]


def _compose_case(name: str, why: str, inner: np.ndarray, outer: np.ndarray) -> Case:
    k = inner.shape[2] + outer.shape[2] - 1
    mask = _reads_input(k, inner.shape[4], inner.shape[5])
    expected = _compose(inner, outer) * mask
    mistakes = []
    for switches, message in _COMPOSE_MISTAKES:
        wrong = _compose(inner, outer, **switches) * mask
        if not np.allclose(wrong, expected, rtol=1e-9, atol=1e-10):
            mistakes.append((wrong, message))
    swapped = _compose(outer, inner) * mask
    if not np.allclose(swapped, expected, rtol=1e-9, atol=1e-10):
        mistakes.append((swapped, "the order is swapped: kernels_1 acts FIRST (it belongs to the intermediate pixel), "
                                  "kernels_2 second (it belongs to the output pixel (i, j))"))
    return Case(name, (inner, outer), expected, why, rtol=1e-9, atol=1e-10, mistakes=mistakes)


def _random_compose_pair(rng: np.random.Generator, batch: int, groups: int, k1: int, k2: int, height: int,
                         width: int) -> Tuple[np.ndarray, np.ndarray]:
    return (rng.standard_normal((batch, groups, k1, k1, height, width)),
            rng.standard_normal((batch, groups, k2, k2, height, width)))


def _random_compose_cases(rng: np.random.Generator) -> List[Case]:
    cases = []
    for _ in range(3):
        k1, k2 = (int(v) for v in rng.choice([1, 3, 5], size=2))
        height, width = (int(v) for v in rng.integers(2, 8, size=2))
        pair = _random_compose_pair(rng, int(rng.integers(1, 3)), int(rng.integers(1, 4)), k1, k2, height, width)
        cases.append(_compose_case("hidden random case", "random K1, K2, groups and map size", *pair))
    return cases


def check_compose_kernels(compose_kernels: Callable[..., object]):
    """Check ``compose_kernels(kernels_1, kernels_2)``: ONE involution equal to two in a row.

    ``kernels_1 (B, G, K1, K1, H, W)`` and ``kernels_2 (B, G, K2, K2, H, W)``, odd ``K1``, ``K2``,
    both used with stride 1 and "same" padding ``(K - 1) // 2``; the answer ``(B, G, K, K, H, W)``
    with ``K = K1 + K2 - 1`` must give ``involution_loops(x, answer) ==
    involution_loops(involution_loops(x, kernels_1), kernels_2)`` for every ``x``. Taps that read
    x's zero padding are free (they multiply zeros), so the checker compares only the taps that
    read a pixel of x. Any torch op, convolution, unfold and the library are forbidden.
    """

    def composed_taps_that_matter(kernels_1, kernels_2):
        got = compose_kernels(kernels_1, kernels_2)
        k = kernels_1.shape[2] + kernels_2.shape[2] - 1
        expected_shape = kernels_1.shape[:2] + (k, k) + kernels_1.shape[4:]
        if isinstance(got, np.ndarray) and got.shape == expected_shape and got.dtype.kind == "f":
            return got * _reads_input(k, kernels_1.shape[4], kernels_1.shape[5])
        return got  # anything else: the framework describes what came back

    rng = np.random.default_rng(3)
    # (name, why, batch, groups, K1, K2, height, width)
    table = [
        ("two 3x3 layers, one group, 5x5", "the result is one 5x5 window per output pixel", 1, 1, 3, 3, 5, 5),
        ("K1 = 1 then K2 = 3", "a 1x1 first layer scales each intermediate pixel by its own number", 1, 1, 1, 3, 4, 5),
        ("K1 = 3 then K2 = 1", "a 1x1 second layer scales the first layer's output at the same pixel", 1, 1, 3, 1, 5, 4),
        ("2 groups, batch 2", "each sample and group composes its own kernels", 2, 2, 3, 3, 4, 6),
        ("K1 = 5 then K2 = 3, non-square", "a 7x7 result; the border taps of the first layer's zero padding",
         1, 2, 5, 3, 6, 7),
        ("K1 = 3 then K2 = 5, small map", "a 7x7 result on a 3x4 map: most taps meet the border", 1, 1, 3, 5, 3, 4),
    ]
    cases = []
    for name, why, batch, groups, k1, k2, height, width in table:
        cases.append(_compose_case(name, why, *_random_compose_pair(rng, batch, groups, k1, k2, height, width)))
    return _check("compose_kernels", composed_taps_that_matter, cases, what="the composed kernels",
                  random_cases=_random_compose_cases)


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


def _as_int_list(value: object) -> Optional[List[int]]:
    """The entries of a list/tuple/array of integers as Python ints, else ``None`` (never raises)."""
    try:
        array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    except Exception:  # noqa: BLE001 - anything odd is described by the framework instead
        return None
    if array.ndim != 1 or array.dtype.kind not in "iu":
        return None
    return [int(item) for item in array]


def _channel_order_case(name: str, why: str, channels: int, groups: int) -> Case:
    per_group = channels // groups
    expected = [position % groups for position in range(channels)]
    correct = [(p % groups) * per_group + p // groups for p in range(channels)]
    inverse_groups = [value // per_group for value in np.argsort(correct).tolist()]
    mistakes = []
    if inverse_groups != expected:
        mistakes.append((inverse_groups, "you returned the inverse permutation: perm[c'] must be the channel of "
                                         "x that goes to position c', not the position channel c goes to"))
    return Case(name, (channels, groups), expected,
                f"position c' gets group c' % G under the keras rule, so x[:, perm[c']] must be a channel "
                f"of paper group c' % G; {why}", mistakes=mistakes)


def _random_channel_order_cases(rng: np.random.Generator) -> List[Case]:
    cases = []
    for _ in range(3):
        groups = int(rng.integers(1, 7))
        channels = groups * int(rng.integers(1, 6))
        cases.append(_channel_order_case("hidden random case", f"C = {channels}, G = {groups}", channels, groups))
    return cases


def check_paper_channel_order(paper_channel_order: Callable[..., object]):
    """Check ``paper_channel_order(channels, groups)``: a permutation ``perm`` of ``0..C-1`` with
    ``involution_interleaved(x[:, perm], kernels) == involution_loops(x, kernels)[:, perm]``.

    Any permutation with that property passes (within a group the order of channels is free):
    the answer is judged by the group each position receives, ``perm[c'] // (C // G)`` must equal
    ``c' % G``, after a check that ``perm`` is a permutation of ``0..C-1``. Running the operator
    (either grouping) or any torch op is forbidden: derive the order.
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
    cases = [_channel_order_case(*row) for row in table]
    return _check("paper_channel_order", groups_received, cases, what="the channel order",
                  forbid=(involution_interleaved,), random_cases=_random_channel_order_cases)


# ------------------------------------------------------------------------------------ questions
QUESTIONS: Dict[str, Question] = {
    "same_padding": Question(
        prompt=("A 5x5 kernel (K = 5) with dilation 3 and stride 1. Which padding p (zeros on each side) keeps the "
                "output as large as the input, H' = H?"),
        answer=6,
        rtol=0.0,
        explanation=("H' = H + 2p - d(K-1) - 1 + 1 = H needs 2p = d(K-1) = 12, so p = 6: half the dilated span "
                     "minus its centre pixel on each side. The official module's (K-1)//2 = 2 would shrink the "
                     "output by 8 here."),
        mistakes=[
            (2, "That is (K-1)//2, the official module's padding, which has no dilation: here the window spans "
                "d(K-1) + 1 = 13 pixels, and 2 zeros on each side shrink the output by 8."),
            (12, "12 is the whole extra span d(K-1); it is split over the two sides."),
            (7, "d*K//2 counts the span as d*K; the span of a dilated window is d(K-1) + 1."),
            (3, "The padding grows with both K and d: the window spans d(K-1) + 1 = 13 pixels."),
        ],
    ),
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
    "keras_reading": Question(
        prompt=("phi outputs K*K*G numbers per pixel. The paper reads channel g*K*K + t as tap t of group g; keras.io "
                "reads channel t*G + g as tap t of group g. You load the paper's trained W1 (and its bias) into the "
                "keras layer unchanged. When is the keras layer then the same layer as the paper's?"),
        choices={
            "a": "for every K and G: both read the same K*K*G numbers",
            "b": "only when G = 1 or K = 1; otherwise kernel values land on other taps and groups",
            "c": "whenever G divides K*K",
            "d": "never, not even for G = 1",
        },
        answer="b",
        explanation=("The two readings agree on every channel only if g*K*K + t = t*G + g for all g and t. With G = 1 "
                     "(g = 0) both give t; with K = 1 (t = 0) both give g. Otherwise channel 1 is tap 1 of group 0 for "
                     "the paper and tap 0 of group 1 for keras: the same numbers, assigned to other taps and groups."),
        wrong={
            "a": "The same numbers, but not the same assignment: for G = 2, K = 3, channel 1 is tap 1 of group 0 for "
                 "the paper and tap 0 of group 1 for keras.",
            "c": "Divisibility does not help: the two formulas g*K*K + t and t*G + g must agree for EVERY (g, t), "
                 "and for G > 1, K > 1 they already differ at channel 1.",
            "d": "With one group (g = 0) both readings give channel t for tap t: the same layer.",
        },
    ),
}
