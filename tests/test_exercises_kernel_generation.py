"""The checkers of notebook 04 accept correct solutions and reject plausible wrong ones."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from involution_edu.exercises.kernel_generation import (
    bn_tensors,
    check_generate_kernels,
    check_generated_kernel_elements,
    check_reshape_kernels,
    seeded_involution,
)
from involution_edu.module import Involution
from involution_edu.shapes import default_padding, output_size


def not_attempted(*args, **kwargs):
    raise NotImplementedError("write your solution")


# -------------------------------------------------------------------- generated_kernel_elements
def kernel_elements_solution(batch, channels, height, width, kernel_size, group_channels, stride=1):
    groups = channels // group_channels
    out_h, out_w = math.ceil(height / stride), math.ceil(width / stride)
    return batch * groups * kernel_size * kernel_size * out_h * out_w


def kernel_elements_floor(batch, channels, height, width, kernel_size, group_channels, stride=1):
    groups = channels // group_channels
    return batch * groups * kernel_size**2 * (height // stride) * (width // stride)


def kernel_elements_one_group_per_channel(batch, channels, height, width, kernel_size, group_channels, stride=1):
    """G = C: the size of a kernel per channel (what unfold multiplies), not per group."""
    return batch * channels * kernel_size**2 * math.ceil(height / stride) * math.ceil(width / stride)


def kernel_elements_without_square(batch, channels, height, width, kernel_size, group_channels, stride=1):
    groups = channels // group_channels
    return batch * groups * kernel_size * math.ceil(height / stride) * math.ceil(width / stride)


def kernel_elements_input_size(batch, channels, height, width, kernel_size, group_channels, stride=1):
    """H and W instead of H' and W': one kernel per input position."""
    return batch * (channels // group_channels) * kernel_size**2 * height * width


def kernel_elements_without_batch(batch, channels, height, width, kernel_size, group_channels, stride=1):
    return (channels // group_channels) * kernel_size**2 * math.ceil(height / stride) * math.ceil(width / stride)


def test_kernel_elements_accepts_solution(capsys):
    assert check_generated_kernel_elements(kernel_elements_solution) is True
    assert "all 7 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "batch, channels, height, width, kernel_size, group_channels, stride",
    [(2, 32, 9, 7, 7, 16, 2), (1, 16, 5, 5, 3, 4, 1), (3, 8, 11, 6, 1, 2, 3)],
)
def test_kernel_elements_solution_matches_real_kernels(batch, channels, height, width, kernel_size, group_channels,
                                                       stride):
    module = Involution(channels, kernel_size, stride, group_channels=group_channels)
    with torch.no_grad():
        kernels = module.generate_kernels(torch.randn(batch, channels, height, width))
    assert kernels.numel() == kernel_elements_solution(batch, channels, height, width, kernel_size, group_channels,
                                                       stride)
    padding = default_padding(kernel_size)
    assert kernels.shape[-2:] == (output_size(height, kernel_size, stride, padding),
                                  output_size(width, kernel_size, stride, padding))


def test_kernel_elements_paper_default_ratio_to_input():
    """The lesson of the exercise: at stride 1 the kernels are K^2 / group_channels times the input."""
    batch, channels, size = 8, 64, 56
    ratio = kernel_elements_solution(batch, channels, size, size, 7, 16) / (batch * channels * size * size)
    assert ratio == pytest.approx(49 / 16)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (kernel_elements_floor, "stride 2, odd size 7x9"),
        (kernel_elements_one_group_per_channel, "RedNet-50 stage 1"),
        (kernel_elements_without_square, "RedNet-50 stage 1"),
        (kernel_elements_input_size, "stride 2, even size 8x8"),
        (kernel_elements_without_batch, "RedNet-50 stage 1"),
    ],
)
def test_kernel_elements_rejects_wrong_answers(wrong, message, capsys):
    assert check_generated_kernel_elements(wrong) is False
    out = capsys.readouterr().out
    assert "✗ generated_kernel_elements" in out and message in out and "expected" in out


def test_kernel_elements_floor_message_explains_ceil(capsys):
    check_generated_kernel_elements(kernel_elements_floor)
    assert "ceil(7 / 2) = 4" in capsys.readouterr().out


def test_kernel_elements_not_attempted(capsys):
    assert check_generated_kernel_elements(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


# ----------------------------------------------------------------------------- reshape_kernels
def reshape_kernels_solution(flat, groups, kernel_size):
    batch, _, height, width = flat.shape
    return flat.view(batch, groups, kernel_size, kernel_size, height, width)


def reshape_kernels_k_major(flat, groups, kernel_size):
    batch, _, height, width = flat.shape
    return flat.view(batch, kernel_size, kernel_size, groups, height, width).permute(0, 3, 1, 2, 4, 5)


def reshape_kernels_transposed(flat, groups, kernel_size):
    return reshape_kernels_solution(flat, groups, kernel_size).transpose(2, 3)


def reshape_kernels_memory_order(flat, groups, kernel_size):
    batch, _, height, width = flat.shape
    return flat.reshape(batch, height, width, groups, kernel_size, kernel_size).permute(0, 3, 4, 5, 1, 2)


def reshape_kernels_flat_taps(flat, groups, kernel_size):
    batch, _, height, width = flat.shape
    return flat.view(batch, groups, kernel_size * kernel_size, height, width)


def test_reshape_kernels_accepts_solution(capsys):
    assert check_reshape_kernels(reshape_kernels_solution) is True
    assert "all 5 cases pass" in capsys.readouterr().out


def test_reshape_kernels_accepts_equivalent_permute_solution():
    def via_permute(flat, groups, kernel_size):
        batch, _, height, width = flat.shape
        moved = flat.permute(0, 2, 3, 1).reshape(batch, height, width, groups, kernel_size, kernel_size)
        return moved.permute(0, 3, 4, 5, 1, 2)

    assert check_reshape_kernels(via_permute) is True


@pytest.mark.parametrize(
    "wrong, message",
    [
        (reshape_kernels_k_major, "4 groups, K=3"),
        (reshape_kernels_transposed, "one group, K=3"),
        (reshape_kernels_memory_order, "one group, K=3"),
        (reshape_kernels_flat_taps, "wrong shape"),
    ],
)
def test_reshape_kernels_rejects_wrong_answers(wrong, message, capsys):
    assert check_reshape_kernels(wrong) is False
    out = capsys.readouterr().out
    assert "✗ reshape_kernels" in out and message in out


def test_reshape_kernels_k_major_message_explains_group_major(capsys):
    check_reshape_kernels(reshape_kernels_k_major)
    assert "group-major" in capsys.readouterr().out


def test_reshape_kernels_not_attempted(capsys):
    assert check_reshape_kernels(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


# ------------------------------------------------------------------------ generate_kernels_student
def generate_kernels_solution(x, conv1_weight, bn, conv2_weight, conv2_bias, groups, kernel_size):
    hidden = F.conv2d(x, conv1_weight)
    hidden = F.batch_norm(hidden, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"],
                          training=False, eps=bn["eps"])
    flat = F.conv2d(torch.relu(hidden), conv2_weight, conv2_bias)
    batch, _, height, width = flat.shape
    return flat.view(batch, groups, kernel_size, kernel_size, height, width)


def generate_kernels_by_hand(x, conv1_weight, bn, conv2_weight, conv2_bias, groups, kernel_size):
    """Same thing with einsum and the BatchNorm formula written out."""
    hidden = torch.einsum("oc,bchw->bohw", conv1_weight[:, :, 0, 0], x)
    scale = bn["weight"] / torch.sqrt(bn["running_var"] + bn["eps"])
    hidden = (hidden - bn["running_mean"][:, None, None]) * scale[:, None, None] + bn["bias"][:, None, None]
    flat = torch.einsum("oc,bchw->bohw", conv2_weight[:, :, 0, 0], hidden.clamp(min=0)) + conv2_bias[:, None, None]
    batch, _, height, width = flat.shape
    return flat.reshape(batch, groups, kernel_size, kernel_size, height, width)


def generate_kernels_no_relu(x, conv1_weight, bn, conv2_weight, conv2_bias, groups, kernel_size):
    hidden = F.batch_norm(F.conv2d(x, conv1_weight), bn["running_mean"], bn["running_var"], bn["weight"],
                          bn["bias"], training=False, eps=bn["eps"])
    flat = F.conv2d(hidden, conv2_weight, conv2_bias)
    return flat.view(flat.shape[0], groups, kernel_size, kernel_size, *flat.shape[2:])


def generate_kernels_batch_statistics(x, conv1_weight, bn, conv2_weight, conv2_bias, groups, kernel_size):
    """Training-mode BatchNorm: normalises with the batch's own mean and variance."""
    hidden = F.batch_norm(F.conv2d(x, conv1_weight), None, None, bn["weight"], bn["bias"],
                          training=True, eps=bn["eps"])
    flat = F.conv2d(torch.relu(hidden), conv2_weight, conv2_bias)
    return flat.view(flat.shape[0], groups, kernel_size, kernel_size, *flat.shape[2:])


def generate_kernels_no_bias(x, conv1_weight, bn, conv2_weight, conv2_bias, groups, kernel_size):
    return generate_kernels_solution(x, conv1_weight, bn, conv2_weight, torch.zeros_like(conv2_bias), groups,
                                     kernel_size)


def generate_kernels_k_major(x, conv1_weight, bn, conv2_weight, conv2_bias, groups, kernel_size):
    kernels = generate_kernels_solution(x, conv1_weight, bn, conv2_weight, conv2_bias, groups, kernel_size)
    batch, _, _, _, height, width = kernels.shape
    return kernels.reshape(batch, kernel_size, kernel_size, groups, height, width).permute(0, 3, 1, 2, 4, 5)


def generate_kernels_relu_before_bn(x, conv1_weight, bn, conv2_weight, conv2_bias, groups, kernel_size):
    hidden = F.batch_norm(torch.relu(F.conv2d(x, conv1_weight)), bn["running_mean"], bn["running_var"],
                          bn["weight"], bn["bias"], training=False, eps=bn["eps"])
    flat = F.conv2d(hidden, conv2_weight, conv2_bias)
    return flat.view(flat.shape[0], groups, kernel_size, kernel_size, *flat.shape[2:])


def test_seeded_involution_is_in_eval_mode_with_nontrivial_statistics():
    module = seeded_involution(16, 3, 4, 8, seed=0)
    assert not module.training
    assert module.conv1.bn.running_mean.abs().sum() > 0
    assert not torch.allclose(module.conv1.bn.running_var, torch.ones(4, dtype=torch.float64))


def test_bn_tensors_are_copies():
    module = seeded_involution(16, 3, 4, 8, seed=0)
    tensors = bn_tensors(module.conv1.bn)
    tensors["running_mean"].add_(1.0)
    assert not torch.equal(tensors["running_mean"], module.conv1.bn.running_mean)


@pytest.mark.parametrize("solution", [generate_kernels_solution, generate_kernels_by_hand])
def test_generate_kernels_accepts_solutions(solution, capsys):
    assert check_generate_kernels(solution) is True
    assert "all 5 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (generate_kernels_no_relu, "wrong values"),
        (generate_kernels_batch_statistics, "wrong values"),
        (generate_kernels_no_bias, "wrong values"),
        (generate_kernels_k_major, "4 groups"),
        (generate_kernels_relu_before_bn, "wrong values"),
    ],
)
def test_generate_kernels_rejects_wrong_answers(wrong, message, capsys):
    assert check_generate_kernels(wrong) is False
    out = capsys.readouterr().out
    assert "✗ generate_kernels_student" in out and message in out


def test_generate_kernels_not_attempted(capsys):
    assert check_generate_kernels(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out

