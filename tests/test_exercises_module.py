"""The checkers of notebook 05 accept correct solutions and reject plausible wrong ones."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from involution_edu import Involution, involution_loops
from involution_edu.exercises.module import (
    check_group_of_channel,
    check_involution_forward,
    check_involution_madds,
    check_involution_output_shape,
    involution_madds_reference,
    seeded_module,
)


def not_attempted(*args, **kwargs):
    raise NotImplementedError("write your solution")


# ----------------------------------------------------------------------------- output shape
def output_shape_solution(input_shape, channels, kernel_size, stride):
    batch, _, height, width = input_shape
    return (batch, channels, math.ceil(height / stride), math.ceil(width / stride))


def output_shape_floor(input_shape, channels, kernel_size, stride):
    batch, _, height, width = input_shape
    return (batch, channels, height // stride, width // stride)


def output_shape_ignores_stride(input_shape, channels, kernel_size, stride):
    batch, _, height, width = input_shape
    return (batch, channels, height, width)


def output_shape_no_padding(input_shape, channels, kernel_size, stride):
    batch, _, height, width = input_shape
    return (batch, channels, (height - kernel_size) // stride + 1, (width - kernel_size) // stride + 1)


def output_shape_uses_height_twice(input_shape, channels, kernel_size, stride):
    batch, _, height, _ = input_shape
    return (batch, channels, math.ceil(height / stride), math.ceil(height / stride))


def test_output_shape_solution_matches_the_module():
    """The reference answer is what Involution really returns (odd sizes, strides 1-3)."""
    for shape, k, stride in [((1, 16, 7, 7), 3, 2), ((2, 16, 10, 8), 7, 3), ((1, 16, 5, 9), 1, 2)]:
        module = Involution(16, k, stride).eval()
        with torch.no_grad():
            got = tuple(module(torch.zeros(shape)).shape)
        assert got == output_shape_solution(shape, 16, k, stride)


def test_output_shape_accepts_solution(capsys):
    assert check_involution_output_shape(output_shape_solution) is True
    assert "all 6 cases pass" in capsys.readouterr().out


def test_output_shape_accepts_torch_size(capsys):
    def as_torch_size(input_shape, channels, kernel_size, stride):
        return torch.Size(output_shape_solution(input_shape, channels, kernel_size, stride))

    assert check_involution_output_shape(as_torch_size) is True


@pytest.mark.parametrize(
    "wrong, message",
    [
        (output_shape_floor, "odd size 7x7"),
        (output_shape_ignores_stride, "stride 2, even size 56"),
        (output_shape_no_padding, "stride 1, K=7"),
        (output_shape_uses_height_twice, "stride 3, 10x8"),
    ],
)
def test_output_shape_rejects_wrong_answers(wrong, message, capsys):
    assert check_involution_output_shape(wrong) is False
    out = capsys.readouterr().out
    assert "✗ involution_output_shape" in out and message in out


def test_output_shape_floor_message_says_how_wrong(capsys):
    check_involution_output_shape(output_shape_floor)
    out = capsys.readouterr().out
    assert "item 2: expected 4, got 3" in out and "rounds UP" in out


def test_output_shape_not_attempted(capsys):
    assert check_involution_output_shape(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


# ----------------------------------------------------------------------------- multiply-adds
def madds_solution(channels, height, width, kernel_size, stride, reduction_ratio, group_channels):
    out_h, out_w = math.ceil(height / stride), math.ceil(width / stride)
    hidden, groups = channels // reduction_ratio, channels // group_channels
    reduce = channels * hidden * out_h * out_w
    span = hidden * kernel_size**2 * groups * out_h * out_w
    aggregate = kernel_size**2 * channels * out_h * out_w
    return reduce + span + aggregate


def madds_no_pooling(channels, height, width, kernel_size, stride, reduction_ratio, group_channels):
    """Kernel generation counted on the full H x W grid, as if there were no average pooling."""
    out_h, out_w = math.ceil(height / stride), math.ceil(width / stride)
    hidden, groups = channels // reduction_ratio, channels // group_channels
    generate = (channels * hidden + hidden * kernel_size**2 * groups) * height * width
    return generate + kernel_size**2 * channels * out_h * out_w


def madds_counts_bn_and_bias(channels, height, width, kernel_size, stride, reduction_ratio, group_channels):
    out_h, out_w = math.ceil(height / stride), math.ceil(width / stride)
    hidden, groups = channels // reduction_ratio, channels // group_channels
    extra = (2 * hidden + kernel_size**2 * groups) * out_h * out_w  # BN scale + shift, conv2 bias
    return madds_solution(channels, height, width, kernel_size, stride, reduction_ratio, group_channels) + extra


def madds_floor(channels, height, width, kernel_size, stride, reduction_ratio, group_channels):
    out_h, out_w = height // stride, width // stride
    hidden, groups = channels // reduction_ratio, channels // group_channels
    return (channels * hidden + hidden * kernel_size**2 * groups + kernel_size**2 * channels) * out_h * out_w


def madds_forgets_groups(channels, height, width, kernel_size, stride, reduction_ratio, group_channels):
    out_h, out_w = math.ceil(height / stride), math.ceil(width / stride)
    hidden = channels // reduction_ratio
    return (channels * hidden + hidden * kernel_size**2 + kernel_size**2 * channels) * out_h * out_w


def madds_aggregation_only(channels, height, width, kernel_size, stride, reduction_ratio, group_channels):
    return kernel_size**2 * channels * math.ceil(height / stride) * math.ceil(width / stride)


def test_madds_reference_matches_formula():
    for args in [(64, 56, 56, 7, 1, 4, 16), (64, 15, 15, 7, 2, 4, 16), (30, 9, 7, 3, 3, 4, 10)]:
        assert involution_madds_reference(*args) == madds_solution(*args)


def test_madds_accepts_solution(capsys):
    assert check_involution_madds(madds_solution) is True
    assert "all 6 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (madds_no_pooling, "pooled 14x14 grid"),
        (madds_counts_bn_and_bias, "RedNet stage 1"),
        (madds_floor, "not floor"),
        (madds_forgets_groups, "RedNet stage 1"),
        (madds_aggregation_only, "RedNet stage 1"),
    ],
)
def test_madds_rejects_wrong_answers(wrong, message, capsys):
    assert check_involution_madds(wrong) is False
    out = capsys.readouterr().out
    assert "✗ involution_madds" in out and message in out and "off by" in out


def test_madds_not_attempted(capsys):
    assert check_involution_madds(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


# ----------------------------------------------------------------------------- group of a channel
def group_solution(c, channels, groups):
    return c // (channels // groups)


def group_modulo(c, channels, groups):
    """The keras.io tutorial's layout: channel c in group c % G."""
    return c % groups


def group_divides_by_groups(c, channels, groups):
    return c // groups


def group_off_by_one(c, channels, groups):
    return c // (channels // groups) + 1


def test_group_accepts_solution(capsys):
    assert check_group_of_channel(group_solution) is True
    assert "all 7 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (group_modulo, "channel 1 is in group 0"),
        (group_divides_by_groups, "C=64, G=4, channel 20"),
        (group_off_by_one, "C=4, G=2, channel 1"),
    ],
)
def test_group_rejects_wrong_answers(wrong, message, capsys):
    assert check_group_of_channel(wrong) is False
    out = capsys.readouterr().out
    assert "✗ group_of_channel" in out and message in out


def test_group_not_attempted(capsys):
    assert check_group_of_channel(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


# ----------------------------------------------------------------------------- forward pass
def forward_solution(x, module):
    kernels = module.generate_kernels(x)  # (B, G, K, K, H', W')
    batch, groups, k, _, out_h, out_w = kernels.shape
    channels = x.shape[1]
    windows = F.unfold(x, k, dilation=module.dilation, padding=module.padding, stride=module.stride)
    windows = windows.view(batch, groups, channels // groups, k * k, out_h, out_w)
    out = (kernels.view(batch, groups, 1, k * k, out_h, out_w) * windows).sum(dim=3)
    return out.view(batch, channels, out_h, out_w)


def forward_with_loops(x, module):
    """A second correct answer: the NumPy loop oracle applied to the module's kernels."""
    kernels = module.generate_kernels(x)
    return torch.from_numpy(involution_loops(x.numpy(), kernels.numpy(), module.stride))


def forward_modulo_groups(x, module):
    """keras.io layout: channel c uses group c % G."""
    kernels = module.generate_kernels(x)
    batch, groups, k, _, out_h, out_w = kernels.shape
    channels = x.shape[1]
    windows = F.unfold(x, k, padding=module.padding, stride=module.stride)
    windows = windows.view(batch, channels // groups, groups, k * k, out_h, out_w)
    out = (kernels.view(batch, 1, groups, k * k, out_h, out_w) * windows).sum(dim=3)
    return out.reshape(batch, channels, out_h, out_w)


def forward_unfold_without_stride(x, module):
    """Unfolds with stride 1: the windows no longer line up with the (pooled) kernels."""
    kernels = module.generate_kernels(x)
    batch, groups, k, _, out_h, out_w = kernels.shape
    channels = x.shape[1]
    windows = F.unfold(x, k, padding=module.padding)
    windows = windows.view(batch, groups, channels // groups, k * k, x.shape[2], x.shape[3])
    out = (kernels.view(batch, groups, 1, k * k, out_h, out_w) * windows).sum(dim=3)
    return out.view(batch, channels, out_h, out_w)


def forward_paper_pooling(x, module):
    """Generates kernels from AvgPool2d without ceil_mode, like the paper's code: fails on odd sizes."""
    pooled = F.avg_pool2d(x, module.stride, module.stride) if module.stride > 1 else x
    flat = module.conv2(module.conv1(pooled))
    batch, _, out_h, out_w = flat.shape
    k, groups, channels = module.kernel_size, module.groups, x.shape[1]
    windows = F.unfold(x, k, padding=module.padding, stride=module.stride)
    windows = windows.view(batch, groups, channels // groups, k * k, out_h, out_w)
    out = (flat.view(batch, groups, 1, k * k, out_h, out_w) * windows).sum(dim=3)
    return out.view(batch, channels, out_h, out_w)


def forward_no_padding(x, module):
    kernels = module.generate_kernels(x)
    batch, groups, k, _, out_h, out_w = kernels.shape
    channels = x.shape[1]
    windows = F.unfold(x, k, stride=module.stride)  # no padding: fewer windows than kernels
    windows = windows.view(batch, groups, channels // groups, k * k, out_h, out_w)
    out = (kernels.view(batch, groups, 1, k * k, out_h, out_w) * windows).sum(dim=3)
    return out.view(batch, channels, out_h, out_w)


def forward_transposed_kernel(x, module):
    """Flips the kernel's (u, v) axes: kernel rows applied to window columns."""
    kernels = module.generate_kernels(x).transpose(2, 3).contiguous()
    batch, groups, k, _, out_h, out_w = kernels.shape
    channels = x.shape[1]
    windows = F.unfold(x, k, padding=module.padding, stride=module.stride)
    windows = windows.view(batch, groups, channels // groups, k * k, out_h, out_w)
    out = (kernels.view(batch, groups, 1, k * k, out_h, out_w) * windows).sum(dim=3)
    return out.view(batch, channels, out_h, out_w)


def test_seeded_module_is_eval_float64_and_not_trivial():
    module = seeded_module(0, 16, 3, 2, 2, 4)
    assert not module.training and module.conv1.conv.weight.dtype == torch.float64
    assert not torch.allclose(module.conv1.bn.running_mean, torch.zeros(8, dtype=torch.float64))


def test_forward_accepts_solution(capsys):
    assert check_involution_forward(forward_solution) is True
    assert "all 6 cases pass" in capsys.readouterr().out


def test_forward_accepts_loop_oracle(capsys):
    assert check_involution_forward(forward_with_loops) is True
    assert "all 6 cases pass" in capsys.readouterr().out


def test_forward_accepts_module_itself(capsys):
    assert check_involution_forward(lambda x, module: module(x)) is True


@pytest.mark.parametrize(
    "wrong, message",
    [
        (forward_modulo_groups, "case 2/6 'stride 1, K=7, 4 groups': wrong values"),
        (forward_unfold_without_stride, "case 3/6 'stride 2, even size 8x8' raised RuntimeError"),
        (forward_paper_pooling, "case 4/6 'stride 2, odd size 7x7' raised RuntimeError"),
        (forward_no_padding, "case 1/6 'stride 1, K=3, one group' raised RuntimeError"),
        (forward_transposed_kernel, "case 1/6 'stride 1, K=3, one group': wrong values"),
    ],
)
def test_forward_rejects_wrong_answers(wrong, message, capsys):
    assert check_involution_forward(wrong) is False
    out = capsys.readouterr().out
    assert "✗ involution_forward_student" in out and message in out


def test_forward_not_attempted(capsys):
    assert check_involution_forward(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


def test_forward_refuses_a_non_function(capsys):
    assert check_involution_forward(None) is False
    assert "expected a function" in capsys.readouterr().out


def test_forward_checker_leaves_running_statistics_alone():
    """The checker's modules are in eval mode: calling the student's function twice gives one answer."""
    module = seeded_module(3, 8, 3, 2, 2, 2)
    before = module.conv1.bn.running_mean.clone()
    x = torch.randn(2, 8, 7, 7, dtype=torch.float64)
    assert torch.allclose(forward_solution(x, module), module(x))
    assert torch.equal(module.conv1.bn.running_mean, before)
