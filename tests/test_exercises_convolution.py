"""The checkers of notebook 01 accept correct solutions and reject plausible wrong ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from involution_edu import Involution
from involution_edu.exercises.convolution import (
    check_conv2d_loops,
    check_depthwise_as_involution,
    check_involution_param_count,
    involution_param_count_reference,
)


def not_attempted(*args, **kwargs):
    raise NotImplementedError("write your solution")


def crashes(*args, **kwargs):
    raise KeyError("oops")


# ------------------------------------------------------------------------------ conv2d_loops
def conv2d_loops_solution(x, weight):
    batch, c_in, height, width = x.shape
    c_out, _, k, _ = weight.shape
    out = np.zeros((batch, c_out, height - k + 1, width - k + 1))
    for b in range(batch):
        for o in range(c_out):
            for i in range(height - k + 1):
                for j in range(width - k + 1):
                    out[b, o, i, j] = np.sum(weight[o] * x[b, :, i : i + k, j : j + k])
    return out


def conv2d_loops_flipped(x, weight):
    """True convolution: the kernel is flipped in both axes."""
    return conv2d_loops_solution(x, weight[:, :, ::-1, ::-1])


def conv2d_loops_transposed_kernel(x, weight):
    """Reads weight[o, c, v, u] instead of weight[o, c, u, v]."""
    return conv2d_loops_solution(x, weight.transpose(0, 1, 3, 2))


def conv2d_loops_same_channel_only(x, weight):
    """Forgets the sum over input channels: output o reads input channel o % C_in only."""
    batch, c_in, height, width = x.shape
    c_out, _, k, _ = weight.shape
    out = np.zeros((batch, c_out, height - k + 1, width - k + 1))
    for b in range(batch):
        for o in range(c_out):
            c = o % c_in
            for i in range(height - k + 1):
                for j in range(width - k + 1):
                    out[b, o, i, j] = np.sum(weight[o, c] * x[b, c, i : i + k, j : j + k])
    return out


def conv2d_loops_swapped_weight_axes(x, weight):
    """Indexes the weight as (C_in, C_out, K, K)."""
    batch, c_in, height, width = x.shape
    _, _, k, _ = weight.shape
    c_out = weight.shape[0]
    out = np.zeros((batch, c_out, height - k + 1, width - k + 1))
    flat = weight.reshape(c_in, c_out, k, k)  # the wrong reading of the same memory
    for b in range(batch):
        for o in range(c_out):
            for i in range(height - k + 1):
                for j in range(width - k + 1):
                    out[b, o, i, j] = np.sum(flat[:, o] * x[b, :, i : i + k, j : j + k])
    return out


def conv2d_loops_off_by_one(x, weight):
    """Stops one window early: H - K positions instead of H - K + 1."""
    k = weight.shape[2]
    return conv2d_loops_solution(x, weight)[:, :, : x.shape[2] - k, : x.shape[3] - k]


def test_conv2d_loops_accepts_solution(capsys):
    assert check_conv2d_loops(conv2d_loops_solution) is True
    assert "all 7 cases pass" in capsys.readouterr().out


def test_conv2d_loops_accepts_torch_returning_solution(capsys):
    def via_torch(x, weight):
        return torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight))

    assert check_conv2d_loops(via_torch) is True


@pytest.mark.parametrize(
    "wrong, message",
    [
        (conv2d_loops_flipped, "one channel, 5x5, K=3"),
        (conv2d_loops_transposed_kernel, "wrong values"),
        (conv2d_loops_same_channel_only, "C_in=3 -> C_out=2"),
        (conv2d_loops_swapped_weight_axes, "C_in=3 -> C_out=2"),
        (conv2d_loops_off_by_one, "wrong shape"),
    ],
)
def test_conv2d_loops_rejects_wrong_answers(wrong, message, capsys):
    assert check_conv2d_loops(wrong) is False
    out = capsys.readouterr().out
    assert "✗ conv2d_loops" in out and message in out


def test_conv2d_loops_flip_is_explained(capsys):
    check_conv2d_loops(conv2d_loops_flipped)
    assert "no flip" in capsys.readouterr().out


def test_conv2d_loops_not_attempted(capsys):
    assert check_conv2d_loops(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


def test_conv2d_loops_reports_exception_type(capsys):
    assert check_conv2d_loops(crashes) is False
    out = capsys.readouterr().out
    assert "KeyError" in out and "oops" in out


# -------------------------------------------------------------------- involution_param_count
def involution_param_count_solution(channels, kernel_size, reduction_ratio, group_channels):
    hidden = channels // reduction_ratio
    groups = channels // group_channels
    conv1 = channels * hidden  # 1x1 conv C -> C/r, no bias
    bn = 2 * hidden  # scale and shift
    conv2 = hidden * kernel_size**2 * groups + kernel_size**2 * groups  # 1x1 conv C/r -> K^2 G, with bias
    return conv1 + bn + conv2


def involution_param_count_no_bn(channels, kernel_size, reduction_ratio, group_channels):
    hidden = channels // reduction_ratio
    return involution_param_count_solution(channels, kernel_size, reduction_ratio, group_channels) - 2 * hidden


def involution_param_count_bn_buffers(channels, kernel_size, reduction_ratio, group_channels):
    """Counts BatchNorm's running mean and variance as parameters."""
    hidden = channels // reduction_ratio
    return involution_param_count_solution(channels, kernel_size, reduction_ratio, group_channels) + 2 * hidden


def involution_param_count_no_conv2_bias(channels, kernel_size, reduction_ratio, group_channels):
    groups = channels // group_channels
    return involution_param_count_solution(channels, kernel_size, reduction_ratio, group_channels) - kernel_size**2 * groups


def involution_param_count_groups_confused(channels, kernel_size, reduction_ratio, group_channels):
    """Uses group_channels where the number of groups G = C // group_channels belongs."""
    return involution_param_count_solution(channels, kernel_size, reduction_ratio, channels // group_channels)


def involution_param_count_float_division(channels, kernel_size, reduction_ratio, group_channels):
    hidden = channels / reduction_ratio
    groups = channels / group_channels
    return channels * hidden + 2 * hidden + hidden * kernel_size**2 * groups + kernel_size**2 * groups


def test_param_count_reference_matches_formula_and_nn_modules():
    for channels, k, r, gc in [(64, 7, 4, 16), (36, 3, 8, 4), (8, 3, 4, 1)]:
        assert involution_param_count_reference(channels, k, r, gc) == involution_param_count_solution(channels, k, r, gc)
    conv = nn.Conv2d(64, 64, 7)
    assert sum(p.numel() for p in conv.parameters()) == 64 * 64 * 49 + 64
    assert involution_param_count_reference(64, 7) == sum(p.numel() for p in Involution(64, 7).parameters())


def test_involution_param_count_accepts_solution(capsys):
    assert check_involution_param_count(involution_param_count_solution) is True
    assert "all 7 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (involution_param_count_no_bn, "C=64, K=7, paper defaults"),
        (involution_param_count_bn_buffers, "off by"),
        (involution_param_count_no_conv2_bias, "C=64, K=7, paper defaults"),
        (involution_param_count_groups_confused, "C=64, K=7, paper defaults"),
        (involution_param_count_float_division, "C/r rounds down"),
    ],
)
def test_involution_param_count_rejects_wrong_answers(wrong, message, capsys):
    assert check_involution_param_count(wrong) is False
    out = capsys.readouterr().out
    assert "✗ involution_param_count" in out and message in out and "expected" in out


def test_involution_param_count_not_attempted(capsys):
    assert check_involution_param_count(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


def test_involution_param_count_reports_exception_type(capsys):
    assert check_involution_param_count(crashes) is False
    assert "KeyError" in capsys.readouterr().out


# ------------------------------------------------------------------- depthwise_as_involution
def depthwise_as_involution_solution(weight, batch, out_h, out_w):
    channels, _, k, _ = weight.shape
    kernels = weight[:, 0][None, :, :, :, None, None]  # (1, C, K, K, 1, 1)
    return np.broadcast_to(kernels, (batch, channels, k, k, out_h, out_w)).copy()


def depthwise_as_involution_one_group(weight, batch, out_h, out_w):
    """G = 1: every channel uses channel 0's kernel."""
    return depthwise_as_involution_solution(weight[:1], batch, out_h, out_w)


def depthwise_as_involution_flipped(weight, batch, out_h, out_w):
    return depthwise_as_involution_solution(weight[:, :, ::-1, ::-1], batch, out_h, out_w)


def depthwise_as_involution_transposed(weight, batch, out_h, out_w):
    return depthwise_as_involution_solution(weight.transpose(0, 1, 3, 2), batch, out_h, out_w)


def depthwise_as_involution_positions_first(weight, batch, out_h, out_w):
    """Layout (B, C, H', W', K, K) instead of (B, C, K, K, H', W')."""
    return depthwise_as_involution_solution(weight, batch, out_h, out_w).transpose(0, 1, 4, 5, 2, 3)


def depthwise_as_involution_no_batch(weight, batch, out_h, out_w):
    return depthwise_as_involution_solution(weight, batch, out_h, out_w)[0]


def test_depthwise_as_involution_accepts_solution(capsys):
    assert check_depthwise_as_involution(depthwise_as_involution_solution) is True
    out = capsys.readouterr().out
    assert out.count("all 6 cases pass") == 2


def test_depthwise_as_involution_accepts_torch_expand(capsys):
    def via_torch(weight, batch, out_h, out_w):
        w = torch.from_numpy(weight)[:, 0]
        return w[None, :, :, :, None, None].expand(batch, -1, -1, -1, out_h, out_w)

    assert check_depthwise_as_involution(via_torch) is True


@pytest.mark.parametrize(
    "wrong, stage, message",
    [
        (depthwise_as_involution_one_group, "kernel shape", "item 1"),
        (depthwise_as_involution_positions_first, "kernel shape", "item 2"),
        (depthwise_as_involution_no_batch, "kernel shape", "expected 6 items"),
        (depthwise_as_involution_flipped, "F.conv2d", "wrong values"),
        (depthwise_as_involution_transposed, "F.conv2d", "wrong values"),
    ],
)
def test_depthwise_as_involution_rejects_wrong_answers(wrong, stage, message, capsys):
    assert check_depthwise_as_involution(wrong) is False
    out = capsys.readouterr().out
    assert "✗ depthwise_as_involution" in out and stage in out and message in out


def test_depthwise_as_involution_not_attempted(capsys):
    assert check_depthwise_as_involution(not_attempted) is False
    out = capsys.readouterr().out
    assert "not attempted" in out and "✓" not in out


def test_depthwise_as_involution_reports_exception_type(capsys):
    assert check_depthwise_as_involution(crashes) is False
    assert "KeyError" in capsys.readouterr().out
