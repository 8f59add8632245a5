"""The checkers and questions of notebook 02 accept correct answers and reject plausible wrong ones.

For every checker: the solution and natural alternatives pass; likely mistakes are named (each
single output-size mistake by its own message); the obvious shortcut and routes to it built at
run time are refused; odd return values get a verdict; memorised answers fail the hidden cases.
"""

from __future__ import annotations

import copy
import math
from typing import Set, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import checker_harness
from checker_harness import assert_accepts, assert_never_raises, assert_rejects, module_route

import involution_edu.reference
from involution_edu import Involution
from involution_edu.exercises import loops
from involution_edu.exercises.framework import _matched_mistake, describe_mismatch
from involution_edu.exercises.loops import (
    OUTPUT_SIZE_MISTAKES,
    QUESTIONS,
    _affected,
    _compose,
    check_affected_outputs,
    check_compose_kernels,
    check_output_size,
    check_paper_channel_order,
    involution_interleaved,
    keras_kernel_order,
    output_size_variant,
)
from involution_edu.reference import involution_loops
from involution_edu.reference import involution_loops as aliased_loops
from involution_edu.shapes import output_size as library_output_size

REFUSED = "yourself"


def exec_route(source: str, name: str, extra_globals=None):
    """The harness's route, with this file's imports in the namespace."""
    return checker_harness.exec_route(source, name, {**{"np": np, "F": F}, **(extra_globals or {})})


# ---------------------------------------------------------------------------------- output_size
def output_size_solution(size, kernel_size, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def test_output_size_accepts_solution(capsys):
    assert_accepts(check_output_size, output_size_solution, capsys)


@pytest.mark.parametrize("wrong, needles", [
    (lambda n, k, s, p, d: (n + 2 * p - k) // s + 1, ["left out the dilation"]),
    (lambda n, k, s, p, d: math.ceil((n + 2 * p - d * (k - 1) - 1) / s) + 1, ["round down"]),
    (lambda n, k, s, p, d: (n + p - d * (k - 1) - 1) // s + 1, ["one side only"]),
    (lambda n, k, s, p, d: (n + 2 * p - d * (k - 1) - 1) // s, ["off by one"]),
    (lambda n, k, s, p, d: (n + 2 * p - d * k) // s + 1, ["not d*K"]),
    (lambda n, k, s, p, d: (n + 2 * p - d * (k - 1) - 1) / s + 1, ["integer"]),
    (lambda n, k, s, p, d: str(output_size_solution(n, k, s, p, d)), ["string"]),
], ids=["no dilation", "ceil", "one side", "off by one", "d*K", "true division", "string"])
def test_output_size_rejects_mistakes(wrong, needles, capsys):
    assert_rejects(check_output_size, wrong, capsys, *needles)


def _helper_size(n, k, s, p, d):
    return library_output_size(n, k, s, p, d)


@pytest.mark.parametrize("shortcut", [
    lambda n, k, s, p, d: library_output_size(n, k, s, p, d),
    lambda n, k, s, p, d: involution_edu.shapes.output_size(n, k, s, p, d),
    lambda n, k, s, p, d: _helper_size(n, k, s, p, d),
], ids=["alias import", "attribute path", "helper"])
def test_output_size_guard(shortcut, capsys):
    assert_rejects(check_output_size, shortcut, capsys, REFUSED)


def test_output_size_refuses_a_name_built_at_run_time(capsys):
    shortcut = exec_route("""
        def output_size(n, k, s, p, d):
            return getattr(shapes, "output" + "_size")(n, k, s, p, d)
    """, "output_size", {"shapes": involution_edu.shapes})
    assert_rejects(check_output_size, shortcut, capsys, REFUSED)


def test_output_size_never_raises():
    assert_never_raises(check_output_size)


@pytest.mark.parametrize("mistake", sorted(OUTPUT_SIZE_MISTAKES))
def test_output_size_each_mistake_is_named_by_its_own_message(mistake):
    """The first fixed case a single mistake fails names that mistake and no other (no misleading message)."""
    for case in loops._output_size_table_cases():
        got = output_size_variant(*case.args, mistake=mistake)
        if describe_mismatch(got, case.expected) is not None:
            assert _matched_mistake(got, case) == OUTPUT_SIZE_MISTAKES[mistake], case.name
            return
    raise AssertionError(f"no fixed case catches {mistake}")


def test_output_size_hidden_cases_defeat_a_table(capsys):
    fixed = {row[2:]: library_output_size(*row[2:]) for row in loops._OUTPUT_SIZE_TABLE}
    assert_rejects(check_output_size, lambda n, k, s, p, d: fixed.get((n, k, s, p, d), 1), capsys, "random case")


# ----------------------------------------------------------------------------- affected_outputs
# The learner-side copies below build the candidates: the checker refuses calls into the library
# (its oracles included), so a test's wrong answer must be written outside it, as a learner would.
def affected_local(height: int, width: int, k: int, stride: int, padding: int, dilation: int, row: int, col: int,
              *, mirrored: bool = False, ignore_stride: bool = False, ignore_dilation: bool = False,
              ignore_padding: bool = False, no_last_window: bool = False) -> Set[Tuple[int, int]]:
    """Output positions whose window reads ``(row, col)``: ``row = i*s + u*d - p`` for some tap ``u``."""
    s = 1 if ignore_stride else stride
    d = 1 if ignore_dilation else dilation
    p = 0 if ignore_padding else padding
    out_h = library_output_size(height, k, stride, padding, dilation)
    out_w = library_output_size(width, k, stride, padding, dilation)
    if no_last_window:  # every i with i*s - p inside the input, as if partial windows were kept
        out_h, out_w = (height + padding - 1) // stride + 1, (width + padding - 1) // stride + 1
    sign = -1 if mirrored else 1
    rows = {i for i in range(out_h) for u in range(k) if i * s + sign * (u * d - p) == row}
    cols = {j for j in range(out_w) for v in range(k) if j * s + sign * (v * d - p) == col}
    return {(i, j) for i in sorted(rows) for j in sorted(cols)}


def affected_solution(height, width, kernel_size, stride, padding, dilation, row, col):
    return affected_local(height, width, kernel_size, stride, padding, dilation, row, col)


def affected_by_perturbation(height, width, k, stride, padding, dilation, row, col):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, height, width))
    out_h = library_output_size(height, k, stride, padding, dilation)
    out_w = library_output_size(width, k, stride, padding, dilation)
    kernels = rng.standard_normal((1, 1, k, k, out_h, out_w)) + 3.0  # no zero taps
    changed = x.copy()
    changed[0, 0, row, col] += 1.0
    moved = np.abs(involution_loops(changed, kernels, stride, padding, dilation)
                   - involution_loops(x, kernels, stride, padding, dilation))[0, 0] > 1e-12
    return {(int(i), int(j)) for i, j in zip(*np.nonzero(moved))}


@pytest.mark.parametrize("geometry", [
    (7, 7, 3, 1, 1, 1, 3, 3), (7, 7, 3, 1, 1, 1, 0, 0), (8, 8, 3, 2, 1, 1, 3, 5), (9, 9, 3, 1, 2, 2, 4, 4),
    (13, 11, 5, 2, 0, 2, 8, 6), (9, 8, 7, 1, 3, 1, 8, 7), (9, 9, 3, 2, 2, 2, 4, 5),
])
def test_affected_outputs_reference_matches_perturbation(geometry):
    assert _affected(*geometry) == affected_by_perturbation(*geometry) == affected_local(*geometry)


def test_affected_outputs_accepts_solution(capsys):
    assert_accepts(check_affected_outputs, affected_solution, capsys)


def _affected_wrong(**switches):
    return lambda h, w, k, s, p, d, row, col: affected_local(h, w, k, s, p, d, row, col, **switches)


@pytest.mark.parametrize("wrong, needles", [
    (_affected_wrong(mirrored=True), ["goes DOWN"]),
    (_affected_wrong(ignore_stride=True), ["left out the stride"]),
    (_affected_wrong(ignore_dilation=True), ["left out the dilation"]),
    (_affected_wrong(ignore_padding=True), ["left out the padding"]),
    (lambda h, w, k, s, p, d, row, col: sorted(affected_local(h, w, k, s, p, d, row, col)), ["expected"]),
    (lambda h, w, k, s, p, d, row, col: {(row, col)}, ["9 outputs"]),
    (lambda h, w, k, s, p, d, row, col: {(i, j) for i in range(row - 1, row + 2) for j in range(col - 1, col + 2)},
     ["corner"]),
], ids=["mirrored", "no stride", "no dilation", "no padding", "a list", "only the pixel", "always 3x3"])
def test_affected_outputs_rejects_mistakes(wrong, needles, capsys):
    assert_rejects(check_affected_outputs, wrong, capsys, *needles)


def _moved_by_running(h, w, k, s, p, d, row, col):
    return affected_by_perturbation(h, w, k, s, p, d, row, col)


@pytest.mark.parametrize("shortcut", [
    lambda h, w, k, s, p, d, row, col: involution_loops(np.zeros((1, 1, h, w)), np.zeros((1, 1, k, k, 1, 1))),
    lambda h, w, k, s, p, d, row, col: aliased_loops(np.zeros((1, 1, h, w)), np.zeros((1, 1, k, k, 1, 1))),
    lambda h, w, k, s, p, d, row, col: involution_edu.reference.involution_loops(np.zeros((1, 1, h, w)),
                                                                                np.zeros((1, 1, k, k, 1, 1))),
    _moved_by_running,
], ids=["direct", "alias", "attribute path", "helper"])
def test_affected_outputs_guard(shortcut, capsys):
    assert_rejects(check_affected_outputs, shortcut, capsys, "this exercise asks you to write")


def test_affected_outputs_never_raises():
    assert_never_raises(check_affected_outputs)


def test_affected_outputs_rejects_windows_past_the_last_one(capsys):
    """Solving row = i*s + u*d - p for i without the bound i < H' names the dropped last window."""
    def unbounded(h, w, k, s, p, d, row, col):
        rows = {(row + p - u * d) // s for u in range(k) if (row + p - u * d) % s == 0 and row + p - u * d >= 0}
        cols = {(col + p - v * d) // s for v in range(k) if (col + p - v * d) % s == 0 and col + p - v * d >= 0}
        return {(i, j) for i in rows for j in cols}

    assert_rejects(check_affected_outputs, unbounded, capsys, "do not exist")


def test_affected_outputs_refuses_running_the_operator_through_a_helper_module(tmp_path, capsys):
    shortcut = module_route(tmp_path, """
        import numpy as np
        from involution_edu.reference import involution_loops

        def affected_outputs(h, w, k, s, p, d, row, col):
            x = np.zeros((1, 1, h, w)); x[0, 0, row, col] = 1.0
            oh, ow = (h + 2 * p - d * (k - 1) - 1) // s + 1, (w + 2 * p - d * (k - 1) - 1) // s + 1
            y = involution_loops(x, np.ones((1, 1, k, k, oh, ow)), s, p, d)[0, 0]
            return {(int(i), int(j)) for i, j in zip(*np.nonzero(y))}
    """, "affected_outputs")
    assert_rejects(check_affected_outputs, shortcut, capsys, REFUSED)


@pytest.mark.parametrize("geometry", [(8, 8, 3, 2, 0, 1, 7, 3), (6, 10, 3, 3, 0, 2, 2, 9)])
def test_affected_outputs_dropped_rows_read_by_none(geometry):
    assert _affected(*geometry) == affected_by_perturbation(*geometry) == set()


# ------------------------------------------------------------------------------ compose_kernels
def compose_loops(inner, outer, *, inner_at_output=False, border="zero", flip_inner=False):
    """The composition pixel by pixel; the switches give the usual slips (the inner kernel read at
    the output pixel, a clamped or wrapped border instead of zeros, a flipped inner kernel)."""
    batch, groups, k1, _, height, width = inner.shape
    k2 = outer.shape[2]
    p2 = (k2 - 1) // 2
    if flip_inner:
        inner = inner[:, :, ::-1, ::-1]
    out = np.zeros((batch, groups, k1 + k2 - 1, k1 + k2 - 1, height, width))
    for i in range(height):
        for j in range(width):
            for u2 in range(k2):
                for v2 in range(k2):
                    m, n = (i, j) if inner_at_output else (i + u2 - p2, j + v2 - p2)
                    if border == "wrap":
                        m, n = m % height, n % width
                    elif border == "clamp":
                        m, n = min(max(m, 0), height - 1), min(max(n, 0), width - 1)
                    elif not (0 <= m < height and 0 <= n < width):
                        continue
                    out[:, :, u2:u2 + k1, v2:v2 + k1, i, j] += (outer[:, :, u2, v2, i, j][:, :, None, None]
                                                                 * inner[:, :, :, :, m, n])
    return out


def compose_solution(kernels_1, kernels_2):
    return compose_loops(kernels_1, kernels_2)


def reads_input_loops(k: int, height: int, width: int) -> np.ndarray:
    """``(K, K, H, W)`` mask: tap ``(a, e)`` of output ``(i, j)`` reads a pixel of x (not its zero padding)."""
    p = (k - 1) // 2
    mask = np.zeros((k, k, height, width), dtype=bool)
    for a, e, i, j in np.ndindex(k, k, height, width):
        mask[a, e, i, j] = 0 <= i + a - p < height and 0 <= j + e - p < width
    return mask


def compose_by_padding(kernels_1, kernels_2):
    """A natural alternative: zero-pad kernels_1's position axes, then one shifted slice per outer tap."""
    k1, k2 = kernels_1.shape[2], kernels_2.shape[2]
    p2 = (k2 - 1) // 2
    height, width = kernels_1.shape[4:]
    padded = np.pad(kernels_1, ((0, 0),) * 4 + ((p2, p2), (p2, p2)))
    out = np.zeros(kernels_1.shape[:2] + (k1 + k2 - 1,) * 2 + (height, width))
    for u2 in range(k2):
        for v2 in range(k2):
            moved = padded[..., u2:u2 + height, v2:v2 + width]
            out[:, :, u2:u2 + k1, v2:v2 + k1] += kernels_2[:, :, u2, v2][:, :, None, None] * moved
    return out


def compose_zeroing_the_padding_taps(kernels_1, kernels_2):
    """Also right: the taps that read x's zero padding set to zero (they are free)."""
    out = compose_solution(kernels_1, kernels_2)
    return out * reads_input_loops(out.shape[2], out.shape[4], out.shape[5])


@pytest.mark.parametrize("candidate", [compose_solution, compose_by_padding, compose_zeroing_the_padding_taps],
                         ids=["loops", "padded slices", "padding taps zeroed"])
def test_compose_kernels_accepts(candidate, capsys):
    assert_accepts(check_compose_kernels, candidate, capsys)


def test_compose_is_two_involutions_in_one():
    rng = np.random.default_rng(4)
    for k1, k2, groups in [(3, 3, 1), (5, 3, 2), (1, 5, 1), (3, 1, 3)]:
        kernels_1 = rng.standard_normal((2, groups, k1, k1, 5, 6))
        kernels_2 = rng.standard_normal((2, groups, k2, k2, 5, 6))
        x = rng.standard_normal((2, 2 * groups, 5, 6))
        np.testing.assert_allclose(involution_loops(x, compose_solution(kernels_1, kernels_2)),
                                   involution_loops(involution_loops(x, kernels_1), kernels_2), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(compose_solution(kernels_1, kernels_2), _compose(kernels_1, kernels_2), atol=1e-12)


def _compose_wrong(**switches):
    return lambda a, b: compose_loops(a, b, **switches)


@pytest.mark.parametrize("wrong, needles", [
    (_compose_wrong(inner_at_output=True), ["intermediate pixel"]),
    (_compose_wrong(border="clamp"), ["zero-padded"]),
    (_compose_wrong(border="wrap"), ["wrapped"]),
    (_compose_wrong(flip_inner=True), ["flipped"]),
    (lambda a, b: compose_loops(b, a), ["swapped"]),
    (lambda a, b: a, ["shape"]),
], ids=["inner at the output", "clamped border", "wrapped border", "flipped", "swapped", "first kernels"])
def test_compose_kernels_rejects_mistakes(wrong, needles, capsys):
    assert_rejects(check_compose_kernels, wrong, capsys, *needles)


def test_compose_kernels_refuses_probing_with_the_library(capsys):
    def probe(kernels_1, kernels_2):  # runs the library's operator on deltas
        batch, groups, k1, _, height, width = kernels_1.shape
        k = k1 + kernels_2.shape[2] - 1
        involution_loops(np.zeros((batch, groups, height, width)), kernels_1)
        return np.zeros((batch, groups, k, k, height, width))

    assert_rejects(check_compose_kernels, probe, capsys, REFUSED)


def test_compose_kernels_refuses_the_oracle_through_exec(capsys):
    shortcut = exec_route("""
        def compose_kernels(a, b):
            return getattr(loops, "_com" + "pose")(a, b)
    """, "compose_kernels", {"loops": loops})
    assert_rejects(check_compose_kernels, shortcut, capsys, REFUSED)


def test_compose_kernels_never_raises():
    assert_never_raises(check_compose_kernels)


# ------------------------------------------------------------------------- paper_channel_order
def order_solution(channels, groups):
    per_group = channels // groups
    return [(p % groups) * per_group + p // groups for p in range(channels)]


def order_within_groups_reversed(channels, groups):
    per_group = channels // groups
    return [(p % groups) * per_group + (per_group - 1 - p // groups) for p in range(channels)]


@pytest.mark.parametrize("solution", [order_solution, order_within_groups_reversed,
                                      lambda c, g: np.array(order_solution(c, g)),
                                      lambda c, g: torch.tensor(order_solution(c, g))],
                         ids=["list", "another valid order", "numpy", "tensor"])
def test_paper_channel_order_accepts_solutions(solution, capsys):
    assert_accepts(check_paper_channel_order, solution, capsys)


def test_paper_channel_order_property_holds():
    rng = np.random.default_rng(1)
    for channels, groups in [(6, 2), (6, 3), (12, 4)]:
        x = rng.standard_normal((1, channels, 4, 4))
        kernels = rng.standard_normal((1, groups, 3, 3, 4, 4))
        perm = order_solution(channels, groups)
        np.testing.assert_allclose(involution_interleaved(x[:, perm], kernels), involution_loops(x, kernels)[:, perm],
                                   atol=1e-12)


@pytest.mark.parametrize("wrong, needles", [
    (lambda c, g: list(np.argsort(order_solution(c, g))), ["inverse permutation"]),
    (lambda c, g: list(range(c)), ["c' % G"]),
    (lambda c, g: [p % g for p in range(c)], ["not a permutation"]),
    (lambda c, g: list(range(c))[::-1], ["c' % G"]),
    (lambda c, g: order_solution(c, g)[:-1], ["not a permutation"]),
    (lambda c, g: [float(p) for p in order_solution(c, g)], ["expected"]),
    (lambda c, g: [(p // g) * g + p % g for p in range(c)], ["c' % G"]),
], ids=["inverse", "identity", "groups not channels", "reversed", "too short", "floats", "identity again"])
def test_paper_channel_order_rejects_mistakes(wrong, needles, capsys):
    assert_rejects(check_paper_channel_order, wrong, capsys, *needles)


def test_paper_channel_order_never_raises():
    assert_never_raises(check_paper_channel_order)


# -------------------------------------------------------------------------- keras kernel order
def test_keras_kernel_order_turns_one_reading_into_the_other():
    torch.manual_seed(0)
    layer = Involution(8, 3, group_channels=2).double().eval()
    x = torch.randn(1, 8, 5, 5, dtype=torch.float64)
    k, groups = 3, layer.groups
    converted = copy.deepcopy(layer)
    order = torch.from_numpy(keras_kernel_order(k, groups))
    with torch.no_grad():
        converted.conv2.conv.weight[order] = layer.conv2.conv.weight
        converted.conv2.conv.bias[order] = layer.conv2.conv.bias
        paper = layer.conv2(layer.conv1(x)).view(1, groups, k, k, 5, 5)
        keras_unchanged = layer.conv2(layer.conv1(x)).view(1, k * k, groups, 5, 5).transpose(1, 2).reshape(paper.shape)
        keras = converted.conv2(converted.conv1(x)).view(1, k * k, groups, 5, 5).transpose(1, 2).reshape(paper.shape)
    assert not torch.allclose(keras_unchanged, paper)
    assert torch.allclose(keras, paper)
    assert sorted(order.tolist()) == list(range(k * k * groups))


def test_keras_grouping_is_a_relabelling_of_the_whole_layer():
    """The claim of notebook 02: permuted input + permuted W0 columns + c % G == the paper's layer, relabelled."""
    torch.manual_seed(1)
    layer = Involution(8, 3, group_channels=2).double().eval()
    x = torch.randn(1, 8, 6, 6, dtype=torch.float64)
    perm = order_solution(8, 4)
    relabelled = copy.deepcopy(layer)
    with torch.no_grad():
        relabelled.conv1.conv.weight.copy_(layer.conv1.conv.weight[:, perm])
        y = layer(x)
        kernels = relabelled.generate_kernels(x[:, perm])
    np.testing.assert_allclose(involution_interleaved(x[:, perm].numpy(), kernels.numpy()), y[:, perm].numpy(),
                               atol=1e-12)


# ------------------------------------------------------------------------------------ questions


def test_corner_pixel_answer_is_right():
    assert len(_affected(7, 7, 3, 1, 1, 1, 0, 0)) == QUESTIONS["corner_pixel"].answer


def test_same_padding_answer_keeps_the_size():
    p = QUESTIONS["same_padding"].answer
    assert all(library_output_size(n, 5, 1, p, 3) == n for n in (13, 20, 31))
    assert library_output_size(20, 5, 1, 2, 3) == 12  # the official (K-1)//2 shrinks it by 8


@pytest.mark.parametrize("kernel_size, groups, same", [(3, 1, True), (1, 4, True), (3, 2, False), (3, 9, False),
                                                        (5, 5, False)])
def test_keras_reading_is_the_paper_reading_only_for_one_group_or_k1(kernel_size, groups, same):
    order = keras_kernel_order(kernel_size, groups)
    assert (order == np.arange(kernel_size * kernel_size * groups)).all() == same
    assert QUESTIONS["keras_reading"].answer == "b"


def test_affected_outputs_accepts_the_library_output_size_built_in_exercise_1(capsys):
    def affected_outputs(h, w, k, s, p, d, row, col):
        out_h, out_w = library_output_size(h, k, s, p, d), library_output_size(w, k, s, p, d)
        rows = {i for i in range(out_h) for u in range(k) if i * s + u * d - p == row}
        cols = {j for j in range(out_w) for v in range(k) if j * s + v * d - p == col}
        return {(i, j) for i in rows for j in cols}

    assert_accepts(check_affected_outputs, affected_outputs, capsys)


# ------------------------------------------------------------------ time limits and side effects
def _endless(*args, **kwargs):
    k = 1
    while k != 10:  # `k + 2` where `k += 2` was meant would hang; this one never reaches 10 either
        k += 2
    return k


@pytest.mark.parametrize("checker", [check_output_size, check_affected_outputs, check_compose_kernels,
                                     check_paper_channel_order],
                         ids=["output_size", "affected_outputs", "compose_kernels", "paper_channel_order"])
def test_an_endless_loop_gets_a_time_limit_verdict(checker, capsys, monkeypatch):
    monkeypatch.setenv("INVOLUTION_EDU_CASE_TIME_LIMIT", "0.5")
    monkeypatch.setenv("INVOLUTION_EDU_TOTAL_TIME_LIMIT", "2")
    assert_rejects(checker, _endless, capsys, "ran for more than", "endless loop")


def test_compose_kernels_names_an_overwritten_input(capsys):
    def compose_in_place(kernels_1, kernels_2):
        out = compose_solution(kernels_1, kernels_2)
        kernels_2[...] = 0.0
        return out

    assert_rejects(check_compose_kernels, compose_in_place, capsys, "changed its input")


def test_paper_channel_order_refuses_a_search_that_runs_the_operator(capsys):
    """Trying permutations until the two groupings agree runs the operator: refused, however it is reached."""
    shortcut = exec_route("""
        import itertools

        def paper_channel_order(c, g):
            run = getattr(loops, "involution_" + "interleaved")
            x, kernels = np.arange(c * 9.0).reshape(1, c, 3, 3), np.ones((1, g, 1, 1, 3, 3))
            for perm in itertools.permutations(range(c)):
                if np.allclose(run(x[:, list(perm)], kernels), reference(x, kernels)[:, list(perm)]):
                    return list(perm)
    """, "paper_channel_order", {"loops": loops, "reference": involution_loops})
    assert_rejects(check_paper_channel_order, shortcut, capsys, REFUSED)


def test_compose_kernels_refuses_nn_unfold(capsys):
    def compose_with_unfold(kernels_1, kernels_2):
        torch.nn.Unfold(3, padding=1)(torch.from_numpy(kernels_1[:, :, 0, 0]))
        return compose_solution(kernels_1, kernels_2)

    assert_rejects(check_compose_kernels, compose_with_unfold, capsys, REFUSED)
