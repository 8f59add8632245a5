"""The checkers of notebook 06 accept correct solutions and reject plausible wrong ones."""

from __future__ import annotations

import math

from involution_edu.exercises.rednet import check_bottleneck_params, check_involution_flops, check_stage_shapes


def not_attempted(*args, **kwargs):
    raise NotImplementedError("write your solution")


# ----------------------------------------------------------------------------- bottleneck_params
def _involution_params(channels, k=7, r=4, group_channels=16, with_bias=True, with_bn=True):
    hidden, groups = channels // r, channels // group_channels
    return channels * hidden + (2 * hidden if with_bn else 0) + hidden * k * k * groups + (k * k * groups if with_bias else 0)


def bottleneck_params_solution(in_channels, planes, stride):
    out_channels = 4 * planes
    total = in_channels * planes + 2 * planes  # conv1 1x1 + bn1
    total += _involution_params(planes) + 2 * planes  # conv2 (involution) + bn2
    total += planes * out_channels + 2 * out_channels  # conv3 1x1 + bn3
    if stride != 1 or in_channels != out_channels:
        total += in_channels * out_channels + 2 * out_channels  # downsample conv + BN
    return total


def bottleneck_params_no_shortcut(in_channels, planes, stride):
    out_channels = 4 * planes
    return bottleneck_params_solution(in_channels, planes, stride) - (
        in_channels * out_channels + 2 * out_channels if stride != 1 or in_channels != out_channels else 0
    )


def bottleneck_params_shortcut_only_when_strided(in_channels, planes, stride):
    total = bottleneck_params_no_shortcut(in_channels, planes, stride)
    return total + (in_channels * 4 * planes + 8 * planes if stride != 1 else 0)


def bottleneck_params_no_involution_bias(in_channels, planes, stride):
    return bottleneck_params_solution(in_channels, planes, stride) - 49 * (planes // 16)


def bottleneck_params_with_running_stats(in_channels, planes, stride):
    return bottleneck_params_solution(in_channels, planes, stride) + 2 * planes + 2 * planes + 8 * planes


def bottleneck_params_3x3_conv(in_channels, planes, stride):
    return bottleneck_params_solution(in_channels, planes, stride) - _involution_params(planes) + 9 * planes * planes


def test_bottleneck_params_accepts_solution(capsys):
    assert check_bottleneck_params(bottleneck_params_solution) is True
    assert "all 5 cases pass" in capsys.readouterr().out


def test_bottleneck_params_rejects_missing_shortcut(capsys):
    assert check_bottleneck_params(bottleneck_params_no_shortcut) is False
    out = capsys.readouterr().out
    assert "case 1/5 'layer1.0: 64 -> 256'" in out and "shortcut" in out


def test_bottleneck_params_rejects_shortcut_only_for_stride(capsys):
    assert check_bottleneck_params(bottleneck_params_shortcut_only_when_strided) is False
    out = capsys.readouterr().out
    assert "'layer1.0: 64 -> 256'" in out and "widens 64 -> 256" in out


def test_bottleneck_params_rejects_missing_bias(capsys):
    assert check_bottleneck_params(bottleneck_params_no_involution_bias) is False
    out = capsys.readouterr().out
    assert "off by -196" in out  # 49 * (64 // 16) bias entries of conv2.conv


def test_bottleneck_params_rejects_running_stats_and_plain_conv(capsys):
    assert check_bottleneck_params(bottleneck_params_with_running_stats) is False
    assert "expected 42532, got" in capsys.readouterr().out
    assert check_bottleneck_params(bottleneck_params_3x3_conv) is False
    assert "case 1/5" in capsys.readouterr().out


def test_bottleneck_params_not_attempted_and_crashing(capsys):
    assert check_bottleneck_params(not_attempted) is False
    assert "not attempted yet" in capsys.readouterr().out
    assert check_bottleneck_params(lambda c, p, s: c // 0) is False
    assert "ZeroDivisionError" in capsys.readouterr().out


# ----------------------------------------------------------------------------- stage_shapes
def _halve(size):
    return (size - 1) // 2 + 1  # a 3x3 (or 7x7 involution, or 1x1) layer with stride 2 and "same" padding: ceil(size / 2)


def stage_shapes_solution(input_size):
    size = _halve(_halve(input_size))  # stem conv stride 2, max pool stride 2
    shapes = [(64, size, size), (256, size, size)]
    for channels in (512, 1024, 2048):
        size = _halve(size)
        shapes.append((channels, size, size))
    return shapes


def stage_shapes_floor(input_size):
    size = input_size // 4
    shapes = [(64, size, size), (256, size, size)]
    for channels in (512, 1024, 2048):
        size //= 2
        shapes.append((channels, size, size))
    return shapes


def stage_shapes_forgets_max_pool(input_size):
    size = _halve(input_size)
    shapes = [(64, size, size), (256, size, size)]
    for channels in (512, 1024, 2048):
        size = _halve(size)
        shapes.append((channels, size, size))
    return shapes


def stage_shapes_inner_width(input_size):
    return [(c // 4 if c > 64 else c, h, w) for c, h, w in stage_shapes_solution(input_size)]


def stage_shapes_layer1_strided(input_size):
    size = _halve(_halve(input_size))
    shapes = [(64, size, size)]
    for channels in (256, 512, 1024, 2048):
        size = _halve(size)
        shapes.append((channels, size, size))
    return shapes


def test_stage_shapes_accepts_solution(capsys):
    assert check_stage_shapes(stage_shapes_solution) is True
    assert "all 5 cases pass" in capsys.readouterr().out
    assert check_stage_shapes(lambda n: [tuple(s) for s in stage_shapes_solution(n)]) is True  # tuples or lists


def test_stage_shapes_rejects_floor_division(capsys):
    assert check_stage_shapes(stage_shapes_floor) is False
    out = capsys.readouterr().out
    assert "'65 x 65'" in out and "ceil(H / 2)" in out


def test_stage_shapes_rejects_missing_max_pool(capsys):
    assert check_stage_shapes(stage_shapes_forgets_max_pool) is False
    out = capsys.readouterr().out
    assert "'224 x 224 (ImageNet)'" in out and "item 0" in out


def test_stage_shapes_rejects_inner_width(capsys):
    assert check_stage_shapes(stage_shapes_inner_width) is False
    out = capsys.readouterr().out
    assert "item 1: item 0: expected 256, got 64" in out


def test_stage_shapes_rejects_strided_layer1(capsys):
    assert check_stage_shapes(stage_shapes_layer1_strided) is False
    assert "item 1: item 1: expected 56, got 28" in capsys.readouterr().out


def test_stage_shapes_rejects_wrong_length(capsys):
    assert check_stage_shapes(lambda n: stage_shapes_solution(n)[1:]) is False
    assert "expected 5 items" in capsys.readouterr().out
    assert check_stage_shapes(not_attempted) is False
    assert "not attempted yet" in capsys.readouterr().out


# ----------------------------------------------------------------------------- involution_flops
def involution_flops_solution(channels, height, width, stride=1, kernel_size=7, reduction_ratio=4, group_channels=16):
    out_h, out_w = math.ceil(height / stride), math.ceil(width / stride)
    hidden, groups = channels // reduction_ratio, channels // group_channels
    generation = (channels * hidden + hidden * kernel_size**2 * groups) * out_h * out_w
    aggregation = kernel_size**2 * channels * out_h * out_w
    return generation + aggregation


def involution_flops_no_aggregation(channels, height, width, stride=1, kernel_size=7, reduction_ratio=4, group_channels=16):
    out_h, out_w = math.ceil(height / stride), math.ceil(width / stride)
    return involution_flops_solution(channels, height, width, stride, kernel_size, reduction_ratio, group_channels) - (
        kernel_size**2 * channels * out_h * out_w
    )


def involution_flops_per_group(channels, height, width, stride=1, kernel_size=7, reduction_ratio=4, group_channels=16):
    out_h, out_w = math.ceil(height / stride), math.ceil(width / stride)
    groups = channels // group_channels
    return involution_flops_no_aggregation(channels, height, width, stride, kernel_size, reduction_ratio, group_channels) + (
        kernel_size**2 * groups * out_h * out_w
    )


def involution_flops_generation_at_full_size(channels, height, width, stride=1, kernel_size=7, reduction_ratio=4, group_channels=16):
    out_h, out_w = math.ceil(height / stride), math.ceil(width / stride)
    hidden, groups = channels // reduction_ratio, channels // group_channels
    generation = (channels * hidden + hidden * kernel_size**2 * groups) * height * width
    return generation + kernel_size**2 * channels * out_h * out_w


def involution_flops_floor(channels, height, width, stride=1, kernel_size=7, reduction_ratio=4, group_channels=16):
    return involution_flops_solution(channels, (height // stride) * stride, (width // stride) * stride, stride,
                                     kernel_size, reduction_ratio, group_channels)


def involution_flops_with_bias(channels, height, width, stride=1, kernel_size=7, reduction_ratio=4, group_channels=16):
    out_h, out_w = math.ceil(height / stride), math.ceil(width / stride)
    return involution_flops_solution(channels, height, width, stride, kernel_size, reduction_ratio, group_channels) + (
        kernel_size**2 * (channels // group_channels) * out_h * out_w
    )


def test_involution_flops_accepts_solution(capsys):
    assert check_involution_flops(involution_flops_solution) is True
    assert "all 5 cases pass" in capsys.readouterr().out


def test_involution_flops_rejects_missing_aggregation(capsys):
    assert check_involution_flops(involution_flops_no_aggregation) is False
    out = capsys.readouterr().out
    assert "case 1/5" in out and "expected 22880256, got 13045760" in out and "aggregation" in out


def test_involution_flops_rejects_aggregation_per_group(capsys):
    assert check_involution_flops(involution_flops_per_group) is False
    assert "case 1/5" in capsys.readouterr().out


def test_involution_flops_rejects_generation_before_pooling(capsys):
    assert check_involution_flops(involution_flops_generation_at_full_size) is False
    out = capsys.readouterr().out
    assert "'layer2.0 involution: C=128, 56x56, stride 2'" in out and "pooled 28 x 28" in out


def test_involution_flops_rejects_floor_sizes(capsys):
    assert check_involution_flops(involution_flops_floor) is False
    out = capsys.readouterr().out
    assert "'odd size: C=256, 15x15, stride 2'" in out and "ceil(15 / 2) = 8" in out


def test_involution_flops_rejects_bias_and_not_attempted(capsys):
    assert check_involution_flops(involution_flops_with_bias) is False
    assert "case 1/5" in capsys.readouterr().out
    assert check_involution_flops(not_attempted) is False
    assert "not attempted yet" in capsys.readouterr().out
