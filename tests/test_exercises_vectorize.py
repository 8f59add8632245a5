"""The checkers of notebook 03 accept correct solutions and reject plausible wrong ones."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from involution_edu.exercises.vectorize import (
    check_involution_unfold,
    check_unfold_memory_bytes,
    check_unfold_shape,
    unfold_memory_bytes_reference,
)


# ----------------------------------------------------------------------------- unfold_shape
def unfold_shape_solution(batch, channels, height, width, kernel_size, stride, padding, dilation):
    span = dilation * (kernel_size - 1) + 1
    out_h = (height + 2 * padding - span) // stride + 1
    out_w = (width + 2 * padding - span) // stride + 1
    return (batch, channels * kernel_size * kernel_size, out_h * out_w)


def unfold_shape_ignores_dilation(batch, channels, height, width, kernel_size, stride, padding, dilation):
    out_h = (height + 2 * padding - kernel_size) // stride + 1
    out_w = (width + 2 * padding - kernel_size) // stride + 1
    return (batch, channels * kernel_size * kernel_size, out_h * out_w)


def unfold_shape_four_axes(batch, channels, height, width, kernel_size, stride, padding, dilation):
    span = dilation * (kernel_size - 1) + 1
    out_h = (height + 2 * padding - span) // stride + 1
    out_w = (width + 2 * padding - span) // stride + 1
    return (batch, channels, kernel_size * kernel_size, out_h * out_w)


def unfold_shape_ignores_stride(batch, channels, height, width, kernel_size, stride, padding, dilation):
    span = dilation * (kernel_size - 1) + 1
    out_h = height + 2 * padding - span + 1
    out_w = width + 2 * padding - span + 1
    return (batch, channels * kernel_size * kernel_size, out_h * out_w)


def unfold_shape_ceil(batch, channels, height, width, kernel_size, stride, padding, dilation):
    span = dilation * (kernel_size - 1) + 1
    out_h = math.ceil((height + 2 * padding - span) / stride) + 1
    out_w = math.ceil((width + 2 * padding - span) / stride) + 1
    return (batch, channels * kernel_size * kernel_size, out_h * out_w)


def not_attempted(*args, **kwargs):
    raise NotImplementedError("write your solution")


def test_unfold_shape_accepts_solution(capsys):
    assert check_unfold_shape(unfold_shape_solution) is True
    assert "all 8 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (unfold_shape_ignores_dilation, "dilation 2"),
        (unfold_shape_four_axes, "expected 3 items"),
        (unfold_shape_ignores_stride, "stride 2, even size"),
        (unfold_shape_ceil, "stride 2, even size"),
    ],
)
def test_unfold_shape_rejects_wrong_answers(wrong, message, capsys):
    assert check_unfold_shape(wrong) is False
    out = capsys.readouterr().out
    assert "✗ unfold_shape" in out and message in out


def test_unfold_shape_not_attempted(capsys):
    assert check_unfold_shape(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


# ------------------------------------------------------------------ involution_unfold_student
def involution_unfold_solution(x, kernels, stride=1, padding=None, dilation=1):
    batch, channels = x.shape[:2]
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    if padding is None:
        padding = dilation * (k - 1) // 2
    windows = F.unfold(x, k, dilation=dilation, padding=padding, stride=stride)
    windows = windows.view(batch, groups, channels // groups, k * k, out_h, out_w)
    taps = kernels.reshape(batch, groups, 1, k * k, out_h, out_w)
    return (taps * windows).sum(dim=3).view(batch, channels, out_h, out_w)


def involution_unfold_interleaved_groups(x, kernels, stride=1, padding=None, dilation=1):
    """Channel c uses group c % G (the keras.io layout), not c // (C // G)."""
    batch, channels = x.shape[:2]
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    if padding is None:
        padding = dilation * (k - 1) // 2
    windows = F.unfold(x, k, dilation=dilation, padding=padding, stride=stride)
    windows = windows.view(batch, channels // groups, groups, k * k, out_h, out_w)
    taps = kernels.reshape(batch, 1, groups, k * k, out_h, out_w)
    return (taps * windows).sum(dim=3).view(batch, channels, out_h, out_w)


def involution_unfold_ignores_dilation(x, kernels, stride=1, padding=None, dilation=1):
    batch, channels = x.shape[:2]
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    if padding is None:
        padding = dilation * (k - 1) // 2
    windows = F.unfold(x, k, padding=padding, stride=stride)
    windows = windows[..., : out_h * out_w].reshape(batch, groups, channels // groups, k * k, out_h, out_w)
    taps = kernels.reshape(batch, groups, 1, k * k, out_h, out_w)
    return (taps * windows).sum(dim=3).view(batch, channels, out_h, out_w)


def involution_unfold_transposed_kernels(x, kernels, stride=1, padding=None, dilation=1):
    """Flattens the kernel as (v, u) instead of (u, v)."""
    return involution_unfold_solution(x, kernels.transpose(2, 3), stride, padding, dilation)


def involution_unfold_default_padding_without_dilation(x, kernels, stride=1, padding=None, dilation=1):
    k = kernels.shape[2]
    return involution_unfold_solution(x, kernels, stride, (k - 1) // 2 if padding is None else padding, dilation)


def test_involution_unfold_accepts_solution(capsys):
    assert check_involution_unfold(involution_unfold_solution) is True
    assert "all 10 cases pass" in capsys.readouterr().out


def test_involution_unfold_accepts_library():
    from involution_edu import involution_unfold

    assert check_involution_unfold(involution_unfold) is True


@pytest.mark.parametrize(
    "wrong, message",
    [
        (involution_unfold_interleaved_groups, "groups"),
        (involution_unfold_ignores_dilation, "dilation 2"),
        (involution_unfold_transposed_kernels, "wrong values"),
        (involution_unfold_default_padding_without_dilation, "default padding with dilation 2"),
    ],
)
def test_involution_unfold_rejects_wrong_answers(wrong, message, capsys):
    assert check_involution_unfold(wrong) is False
    out = capsys.readouterr().out
    assert "✗ involution_unfold_student" in out and message in out


def test_involution_unfold_interleaved_groups_names_the_grouping_case(capsys):
    check_involution_unfold(involution_unfold_interleaved_groups)
    out = capsys.readouterr().out
    assert "4 channels in 2 groups" in out and "wrong values" in out and "groups > 1" in out


def test_involution_unfold_not_attempted(capsys):
    assert check_involution_unfold(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


# ------------------------------------------------------------------------ unfold_memory_bytes
def unfold_memory_bytes_solution(batch, channels, height, width, kernel_size, stride=1, padding=None,
                                 dilation=1, bytes_per_element=4):
    if padding is None:
        padding = dilation * (kernel_size - 1) // 2
    span = dilation * (kernel_size - 1) + 1
    out_h = (height + 2 * padding - span) // stride + 1
    out_w = (width + 2 * padding - span) // stride + 1
    return batch * channels * kernel_size**2 * out_h * out_w * bytes_per_element


def unfold_memory_bytes_without_k2(batch, channels, height, width, kernel_size, stride=1, padding=None,
                                   dilation=1, bytes_per_element=4):
    full = unfold_memory_bytes_solution(batch, channels, height, width, kernel_size, stride, padding,
                                        dilation, bytes_per_element)
    return full // kernel_size**2


def unfold_memory_bytes_input_positions(batch, channels, height, width, kernel_size, stride=1, padding=None,
                                        dilation=1, bytes_per_element=4):
    return batch * channels * kernel_size**2 * height * width * bytes_per_element


def unfold_memory_bytes_always_float32(batch, channels, height, width, kernel_size, stride=1, padding=None,
                                       dilation=1, bytes_per_element=4):
    return unfold_memory_bytes_solution(batch, channels, height, width, kernel_size, stride, padding, dilation, 4)


def unfold_memory_bytes_padding_ignores_dilation(batch, channels, height, width, kernel_size, stride=1,
                                                 padding=None, dilation=1, bytes_per_element=4):
    if padding is None:
        padding = (kernel_size - 1) // 2
    return unfold_memory_bytes_solution(batch, channels, height, width, kernel_size, stride, padding,
                                        dilation, bytes_per_element)


def test_unfold_memory_reference_matches_real_unfold():
    for args, kwargs in [((8, 64, 56, 56, 7), {}), ((1, 16, 7, 7, 3), dict(stride=2)),
                         ((1, 4, 12, 12, 3), dict(dilation=2)), ((2, 3, 9, 6, 5), dict(padding=0))]:
        batch, channels, height, width, k = args
        x = torch.empty(batch, channels, height, width, device="meta")
        stride, dilation = kwargs.get("stride", 1), kwargs.get("dilation", 1)
        padding = kwargs.get("padding", dilation * (k - 1) // 2)
        unfolded = F.unfold(x, k, dilation=dilation, padding=padding, stride=stride)
        assert unfold_memory_bytes_reference(*args, **kwargs) == unfolded.numel() * 4


def test_unfold_memory_bytes_accepts_solution(capsys):
    assert check_unfold_memory_bytes(unfold_memory_bytes_solution) is True
    assert "all 7 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (unfold_memory_bytes_without_k2, "RedNet-50 stage 1"),
        (unfold_memory_bytes_input_positions, "stride 2 on 56x56"),
        (unfold_memory_bytes_always_float32, "float64"),
        (unfold_memory_bytes_padding_ignores_dilation, "default padding, dilation 2"),
    ],
)
def test_unfold_memory_bytes_rejects_wrong_answers(wrong, message, capsys):
    assert check_unfold_memory_bytes(wrong) is False
    out = capsys.readouterr().out
    assert "✗ unfold_memory_bytes" in out and message in out and "expected" in out


def test_unfold_memory_bytes_not_attempted(capsys):
    assert check_unfold_memory_bytes(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out
