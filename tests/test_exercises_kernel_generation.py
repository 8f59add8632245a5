"""The checkers of notebook 04 accept correct solutions and reject plausible wrong ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from involution_edu.exercises.kernel_generation import (
    bn_tensors,
    check_generate_kernels,
    check_kernel_generator_param_count,
    check_reshape_kernels,
    seeded_involution,
)


def not_attempted(*args, **kwargs):
    raise NotImplementedError("write your solution")


# ------------------------------------------------------------------ kernel_generator_param_count
def param_count_solution(channels, kernel_size, reduction_ratio, group_channels):
    hidden = channels // reduction_ratio
    groups = channels // group_channels
    reduce = channels * hidden + 2 * hidden  # 1x1 conv without bias + BN scale and shift
    span = hidden * kernel_size**2 * groups + kernel_size**2 * groups  # 1x1 conv with bias
    return reduce + span


def param_count_without_bn(channels, kernel_size, reduction_ratio, group_channels):
    return param_count_solution(channels, kernel_size, reduction_ratio, group_channels) - 2 * (channels // reduction_ratio)


def param_count_without_conv2_bias(channels, kernel_size, reduction_ratio, group_channels):
    groups = channels // group_channels
    return param_count_solution(channels, kernel_size, reduction_ratio, group_channels) - kernel_size**2 * groups


def param_count_one_kernel_for_all_groups(channels, kernel_size, reduction_ratio, group_channels):
    hidden = channels // reduction_ratio
    return channels * hidden + 2 * hidden + hidden * kernel_size**2 + kernel_size**2


def param_count_with_running_stats(channels, kernel_size, reduction_ratio, group_channels):
    return param_count_solution(channels, kernel_size, reduction_ratio, group_channels) + 2 * (channels // reduction_ratio)


def param_count_float_hidden(channels, kernel_size, reduction_ratio, group_channels):
    hidden = channels / reduction_ratio
    groups = channels // group_channels
    return channels * hidden + 2 * hidden + hidden * kernel_size**2 * groups + kernel_size**2 * groups


def test_param_count_accepts_solution(capsys):
    assert check_kernel_generator_param_count(param_count_solution) is True
    assert "all 6 cases pass" in capsys.readouterr().out


def test_param_count_solution_matches_paper_module():
    from involution_edu.paper import PaperInvolution

    for channels, k in [(64, 7), (128, 7), (32, 3)]:
        expected = sum(p.numel() for p in PaperInvolution(channels, k, 1).parameters())
        assert param_count_solution(channels, k, 4, 16) == expected


@pytest.mark.parametrize(
    "wrong, message",
    [
        (param_count_without_bn, "RedNet stage 1"),
        (param_count_without_conv2_bias, "RedNet stage 1"),
        (param_count_one_kernel_for_all_groups, "RedNet stage 1"),
        (param_count_with_running_stats, "RedNet stage 1"),
        (param_count_float_hidden, "C // r = 7"),
    ],
)
def test_param_count_rejects_wrong_answers(wrong, message, capsys):
    assert check_kernel_generator_param_count(wrong) is False
    out = capsys.readouterr().out
    assert "✗ kernel_generator_param_count" in out and message in out and "expected" in out


def test_param_count_not_attempted(capsys):
    assert check_kernel_generator_param_count(not_attempted) is False
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

