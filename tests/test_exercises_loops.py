"""The checkers of notebook 02 accept correct solutions and reject plausible wrong ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from involution_edu.exercises.loops import (
    check_involution_loops,
    check_output_size,
    check_paper_channel_order,
    involution_interleaved,
)
from involution_edu.reference import involution_loops


def not_attempted(*args, **kwargs):
    raise NotImplementedError("write your solution")


def crashes(*args, **kwargs):
    raise ZeroDivisionError("division by zero")


# ------------------------------------------------------------------------------- output_size
def output_size_solution(size, kernel_size, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def output_size_ignores_dilation(size, kernel_size, stride, padding, dilation):
    return (size + 2 * padding - kernel_size) // stride + 1


def output_size_ceil(size, kernel_size, stride, padding, dilation):
    return math.ceil((size + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1


def output_size_pads_one_side(size, kernel_size, stride, padding, dilation):
    return (size + padding - dilation * (kernel_size - 1) - 1) // stride + 1


def output_size_size_over_stride(size, kernel_size, stride, padding, dilation):
    """Assumes 'same' padding: H / s, rounded down."""
    return size // stride


def output_size_float(size, kernel_size, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) / stride + 1


def test_output_size_accepts_solution(capsys):
    assert check_output_size(output_size_solution) is True
    assert "all 15 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (output_size_ignores_dilation, "dilation 2"),
        (output_size_ceil, "stride 2, even: 8, K=3, p=1"),
        (output_size_pads_one_side, "'same': 8, K=3, p=1"),
        (output_size_size_over_stride, "no padding"),
        (output_size_float, "stride 2, even: 8, K=3, p=1"),
    ],
)
def test_output_size_rejects_wrong_answers(wrong, message, capsys):
    assert check_output_size(wrong) is False
    out = capsys.readouterr().out
    assert "✗ output_size" in out and message in out and "expected" in out


def test_output_size_not_attempted(capsys):
    assert check_output_size(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


def test_output_size_reports_exception_type(capsys):
    assert check_output_size(crashes) is False
    assert "ZeroDivisionError" in capsys.readouterr().out


# ------------------------------------------------------------------- involution_loops_student
def make_loops(group_of=None, kernel_tap=None, row_of=None, padding_rule=None, taps=None):
    """A loop involution with one piece swappable, so that each wrong answer differs in one place only."""
    group_of = group_of or (lambda c, channels, groups: c // (channels // groups))
    kernel_tap = kernel_tap or (lambda kernels, b, g, u, v, i, j, k: kernels[b, g, u, v, i, j])
    row_of = row_of or (lambda i, u, stride, padding, dilation: i * stride + u * dilation - padding)
    padding_rule = padding_rule or (lambda padding, k, dilation: dilation * (k - 1) // 2 if padding is None else padding)

    def loops(x, kernels, stride=1, padding=None, dilation=1):
        batch, channels, height, width = x.shape
        groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
        padding = padding_rule(padding, k, dilation)
        y = np.zeros((batch, channels, out_h, out_w))
        for b in range(batch):
            for c in range(channels):
                g = group_of(c, channels, groups)
                for i in range(out_h):
                    for j in range(out_w):
                        for u, v in (taps(k) if taps else [(u, v) for u in range(k) for v in range(k)]):
                            row = row_of(i, u, stride, padding, dilation)
                            col = row_of(j, v, stride, padding, dilation)
                            if 0 <= row < height and 0 <= col < width:
                                y[b, c, i, j] += kernel_tap(kernels, b, g, u, v, i, j, k) * x[b, c, row, col]
        return y

    return loops


loops_solution = make_loops()
loops_swapped_kernel_axes = make_loops(kernel_tap=lambda kernels, b, g, u, v, i, j, k: kernels[b, g, v, u, i, j])
loops_no_padding = make_loops(padding_rule=lambda padding, k, dilation: 0)
loops_interleaved_groups = make_loops(group_of=lambda c, channels, groups: c % groups)
loops_stride_on_kernels_only = make_loops(row_of=lambda i, u, stride, padding, dilation: i + u * dilation - padding)
loops_centre_tap_only = make_loops(taps=lambda k: [(k // 2, k // 2)])
loops_flipped_kernel = make_loops(
    kernel_tap=lambda kernels, b, g, u, v, i, j, k: kernels[b, g, k - 1 - u, k - 1 - v, i, j]
)
loops_padding_ignores_dilation = make_loops(padding_rule=lambda padding, k, dilation: (k - 1) // 2 if padding is None else padding)
loops_padding_zero_means_default = make_loops(padding_rule=lambda padding, k, dilation: padding or dilation * (k - 1) // 2)


def test_loops_solution_matches_reference():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 7, 6))
    kernels = rng.standard_normal((2, 2, 3, 3, 4, 3))
    np.testing.assert_allclose(loops_solution(x, kernels, stride=2), involution_loops(x, kernels, stride=2))


def test_involution_loops_accepts_solution_and_reference(capsys):
    assert check_involution_loops(loops_solution) is True
    assert "all 9 cases pass" in capsys.readouterr().out
    assert check_involution_loops(involution_loops) is True


@pytest.mark.parametrize(
    "wrong, message",
    [
        (loops_swapped_kernel_axes, "basic: 1 channel"),
        (loops_no_padding, "'same' zero padding"),
        (loops_interleaved_groups, "4 channels in 2 groups"),
        (loops_stride_on_kernels_only, "stride 2 on 6x6"),
        (loops_centre_tap_only, "basic: 1 channel"),
        (loops_flipped_kernel, "basic: 1 channel"),
        (loops_padding_ignores_dilation, "dilation 2"),
        (loops_padding_zero_means_default, "explicit padding 0"),
    ],
)
def test_involution_loops_rejects_wrong_answers(wrong, message, capsys):
    assert check_involution_loops(wrong) is False
    out = capsys.readouterr().out
    assert "✗ involution_loops_student" in out and message in out


def test_involution_loops_explains_the_grouping_rule(capsys):
    check_involution_loops(loops_interleaved_groups)
    out = capsys.readouterr().out
    assert "wrong values" in out and "c // (C // G)" in out


def test_involution_loops_explains_the_stride(capsys):
    check_involution_loops(loops_stride_on_kernels_only)
    out = capsys.readouterr().out
    assert "wrong values" in out and "i*s + u - p" in out


def test_involution_loops_not_attempted(capsys):
    assert check_involution_loops(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


def test_involution_loops_reports_exception_type(capsys):
    assert check_involution_loops(crashes) is False
    out = capsys.readouterr().out
    assert "raised ZeroDivisionError" in out and "basic: 1 channel" in out


def test_involution_loops_reports_index_error_of_missing_bounds_check(capsys):
    def no_bounds_check(x, kernels, stride=1, padding=None, dilation=1):
        k = kernels.shape[2]
        y = np.zeros(x.shape[:2] + kernels.shape[4:])
        for i in range(kernels.shape[4]):
            for j in range(kernels.shape[5]):
                for u in range(k):
                    for v in range(k):
                        y[:, :, i, j] += kernels[:, 0, u, v, i, j, None] * x[:, :, i + u + 5, j + v]
        return y

    assert check_involution_loops(no_bounds_check) is False
    assert "raised IndexError" in capsys.readouterr().out


# ------------------------------------------------------------------------- paper_channel_order
def paper_channel_order_solution(channels, groups):
    per_group = channels // groups
    return [(c % groups) * per_group + c // groups for c in range(channels)]


def paper_channel_order_identity(channels, groups):
    return list(range(channels))


def paper_channel_order_inverse(channels, groups):
    """The inverse permutation: right for a square layout only."""
    return list(np.argsort(paper_channel_order_solution(channels, groups)))


def paper_channel_order_not_a_permutation(channels, groups):
    return [c % groups for c in range(channels)]


def paper_channel_order_one_short(channels, groups):
    return paper_channel_order_solution(channels, groups)[:-1]


def test_interleaved_helper_uses_c_mod_g():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 4, 4))
    kernels = rng.standard_normal((1, 2, 3, 3, 4, 4))
    y = involution_interleaved(x, kernels)
    # channel 1 uses group 1 under c % G, group 0 under the paper's c // (C // G)
    np.testing.assert_allclose(y[:, 1:2], involution_loops(x[:, 1:2], kernels[:, 1:2]))
    assert not np.allclose(y, involution_loops(x, kernels))


def test_paper_channel_order_accepts_solution(capsys):
    assert check_paper_channel_order(paper_channel_order_solution) is True
    assert capsys.readouterr().out.count("all 6 cases pass") == 2


def test_paper_channel_order_accepts_any_order_within_a_group(capsys):
    def reversed_within_groups(channels, groups):
        per_group = channels // groups
        return [(c % groups) * per_group + (per_group - 1 - c // groups) for c in range(channels)]

    assert check_paper_channel_order(reversed_within_groups) is True


@pytest.mark.parametrize(
    "wrong, stage, message",
    [
        (paper_channel_order_identity, "interleaved", "C=4, G=2"),
        (paper_channel_order_inverse, "interleaved", "C=6, G=3"),
        (paper_channel_order_not_a_permutation, "is a permutation", "C=4, G=1"),
        (paper_channel_order_one_short, "is a permutation", "expected 4 items"),
    ],
)
def test_paper_channel_order_rejects_wrong_answers(wrong, stage, message, capsys):
    assert check_paper_channel_order(wrong) is False
    out = capsys.readouterr().out
    assert "✗ paper_channel_order" in out and stage in out and message in out


def test_paper_channel_order_not_attempted(capsys):
    assert check_paper_channel_order(not_attempted) is False
    out = capsys.readouterr().out
    assert "not attempted" in out and "✓" not in out


def test_paper_channel_order_reports_exception_type(capsys):
    assert check_paper_channel_order(crashes) is False
    assert "ZeroDivisionError" in capsys.readouterr().out
