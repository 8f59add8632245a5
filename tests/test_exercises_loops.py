"""The checkers and questions of notebook 02 accept correct answers and reject plausible wrong ones."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from checker_harness import assert_accepts, assert_never_raises, assert_rejects

import involution_edu.reference
from involution_edu import Involution
from involution_edu.exercises.loops import (
    QUESTIONS,
    _affected,
    _variant,
    check_affected_outputs,
    check_involution_loops,
    check_output_size,
    check_paper_channel_order,
    involution_interleaved,
    keras_kernel_order,
)
from involution_edu.reference import involution_loops
from involution_edu.reference import involution_loops as aliased_loops
from involution_edu.shapes import output_size as library_output_size


# ---------------------------------------------------------------------------------- output_size
def output_size_solution(size, kernel_size, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def test_output_size_accepts_solution(capsys):
    assert_accepts(check_output_size, output_size_solution, capsys)


@pytest.mark.parametrize("wrong, needles", [
    (lambda n, k, s, p, d: (n + 2 * p - k) // s + 1, ["left out the dilation"]),
    (lambda n, k, s, p, d: math.ceil((n + 2 * p - d * (k - 1) - 1) / s) + 1, ["round down"]),
    (lambda n, k, s, p, d: (n + p - d * (k - 1) - 1) // s + 1, ["BOTH sides"]),
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
    assert_rejects(check_output_size, shortcut, capsys, "write the output-size formula yourself")


def test_output_size_never_raises():
    assert_never_raises(check_output_size)


# ------------------------------------------------------------------------------------ the loops
def loops_solution(x, kernels, stride=1, padding=None, dilation=1):
    batch, channels = x.shape[:2]
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    if padding is None:
        padding = dilation * (k - 1) // 2
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    y = np.zeros((batch, channels, out_h, out_w))
    for b in range(batch):
        for c in range(channels):
            g = c // (channels // groups)
            for i in range(out_h):
                for j in range(out_w):
                    for u in range(k):
                        for v in range(k):
                            y[b, c, i, j] += kernels[b, g, u, v, i, j] * xp[b, c, i * stride + u * dilation,
                                                                           j * stride + v * dilation]
    return y


def test_variant_without_switches_is_the_operator():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 9, 8))
    kernels = rng.standard_normal((2, 3, 3, 3, 4, 3))
    np.testing.assert_allclose(_variant(x, kernels, 2, 1, 2), involution_loops(x, kernels, 2, 1, 2), atol=1e-12)


def test_involution_loops_accepts_solution(capsys):
    assert_accepts(check_involution_loops, loops_solution, capsys)


def _wrong(**switches):
    return lambda x, kernels, stride=1, padding=None, dilation=1: _variant(x, kernels, stride, padding, dilation,
                                                                           **switches)


def _batch_zero_kernels(x, kernels, stride=1, padding=None, dilation=1):
    return _variant(x, kernels[:1].repeat(kernels.shape[0], axis=0), stride, padding, dilation)


def _stride_on_taps(x, kernels, stride=1, padding=None, dilation=1):
    return _variant(x, kernels, 1, padding, dilation)[:, :, : kernels.shape[4], : kernels.shape[5]]


@pytest.mark.parametrize("wrong, needles", [
    (_wrong(interleaved=True), ["c % G"]),
    (_wrong(transposed=True), ["transposed"]),
    (_wrong(padding_ignores_dilation=True), ["dilation * (K - 1) // 2"]),
    (_wrong(ignore_dilation=True), ["left out the dilation"]),
    (_wrong(no_padding_offset=True), ["subtract the padding"]),
    (_batch_zero_kernels, ["batch axis"]),
    (_stride_on_taps, ["stride"]),
], ids=["c % G", "transposed", "padding without dilation", "no dilation", "no padding offset", "batch", "stride"])
def test_involution_loops_rejects_mistakes(wrong, needles, capsys):
    assert_rejects(check_involution_loops, wrong, capsys, *needles)


def _helper_loops(x, kernels, stride, padding, dilation):
    return involution_loops(x, kernels, stride, padding, dilation)


@pytest.mark.parametrize("shortcut", [
    lambda x, k, stride=1, padding=None, dilation=1: involution_loops(x, k, stride, padding, dilation),
    lambda x, k, stride=1, padding=None, dilation=1: aliased_loops(x, k, stride, padding, dilation),
    lambda x, k, stride=1, padding=None, dilation=1: involution_edu.reference.involution_loops(x, k, stride, padding,
                                                                                              dilation),
    lambda x, k, stride=1, padding=None, dilation=1: _helper_loops(x, k, stride, padding, dilation),
    lambda x, k, stride=1, padding=None, dilation=1: involution_edu.reference.involution_numpy(x, k, stride, padding,
                                                                                              dilation),
    lambda x, k, stride=1, padding=None, dilation=1: F.unfold(torch.from_numpy(x), k.shape[2]),
    lambda x, k, stride=1, padding=None, dilation=1: Involution(x.shape[1], k.shape[2]),
], ids=["direct", "alias", "attribute path", "helper", "numpy reference", "unfold", "module"])
def test_involution_loops_guard(shortcut, capsys):
    assert_rejects(check_involution_loops, shortcut, capsys, "write the involution loops yourself")


def test_involution_loops_never_raises():
    assert_never_raises(check_involution_loops)


def test_involution_loops_delete_the_raise(capsys):
    def stub(x, kernels, stride=1, padding=None, dilation=1):
        raise NotImplementedError
        return loops_solution(x, kernels, stride, padding, dilation)

    assert_rejects(check_involution_loops, stub, capsys, "Delete that line")


# ----------------------------------------------------------------------------- affected_outputs
def affected_solution(height, width, kernel_size, stride, padding, dilation, row, col):
    return _affected(height, width, kernel_size, stride, padding, dilation, row, col)


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
    assert _affected(*geometry) == affected_by_perturbation(*geometry)


def test_affected_outputs_accepts_solution(capsys):
    assert_accepts(check_affected_outputs, affected_solution, capsys)


def _affected_wrong(**switches):
    return lambda h, w, k, s, p, d, row, col: _affected(h, w, k, s, p, d, row, col, **switches)


@pytest.mark.parametrize("wrong, needles", [
    (_affected_wrong(mirrored=True), ["goes DOWN"]),
    (_affected_wrong(ignore_stride=True), ["left out the stride"]),
    (_affected_wrong(ignore_dilation=True), ["left out the dilation"]),
    (_affected_wrong(ignore_padding=True), ["left out the padding"]),
    (lambda h, w, k, s, p, d, row, col: sorted(_affected(h, w, k, s, p, d, row, col)), ["expected"]),
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
