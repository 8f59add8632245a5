"""The checkers of notebook 06 accept correct solutions and reject plausible wrong ones."""

from __future__ import annotations

import math

import pytest
from checker_harness import assert_accepts, assert_never_raises, assert_rejects

from involution_edu.exercises.rednet import QUESTIONS, check_bottleneck_params, check_identify_checkpoint, check_stage_shapes


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
    shortcut_bn = 4 * planes if stride != 1 or in_channels != 4 * planes else 0
    bn_channels = planes + planes // 4 + planes + 4 * planes + shortcut_bn
    return bottleneck_params_solution(in_channels, planes, stride) + 2 * bn_channels  # running_mean, running_var


def bottleneck_params_3x3_conv(in_channels, planes, stride):
    return bottleneck_params_solution(in_channels, planes, stride) - _involution_params(planes) + 9 * planes * planes


def bottleneck_params_shortcut_ignores_stride(in_channels, planes, stride):
    total = bottleneck_params_no_shortcut(in_channels, planes, stride)
    return total + (in_channels * 4 * planes + 8 * planes if in_channels != 4 * planes else 0)


def bottleneck_params_no_bn3(in_channels, planes, stride):
    return bottleneck_params_solution(in_channels, planes, stride) - 8 * planes


def bottleneck_params_no_generator_bn(in_channels, planes, stride):
    return bottleneck_params_solution(in_channels, planes, stride) - 2 * (planes // 4)


def bottleneck_params_shortcut_with_bias(in_channels, planes, stride):
    extra = 4 * planes if stride != 1 or in_channels != 4 * planes else 0
    return bottleneck_params_solution(in_channels, planes, stride) + extra


def bottleneck_params_always_shortcut(in_channels, planes, stride):
    return bottleneck_params_no_shortcut(in_channels, planes, stride) + in_channels * 4 * planes + 8 * planes


def test_bottleneck_params_accepts_solution(capsys):
    assert_accepts(check_bottleneck_params, bottleneck_params_solution, capsys)


@pytest.mark.parametrize(
    "wrong, needles",
    [
        (bottleneck_params_no_shortcut, ("'layer1.0: 64 -> 256'", "left out the shortcut")),
        (bottleneck_params_shortcut_only_when_strided, ("'layer1.0: 64 -> 256'", "left out the shortcut")),
        (bottleneck_params_shortcut_ignores_stride, ("'256 -> 256 with stride 2'", "stride is 2")),
        (bottleneck_params_no_involution_bias, ("bias of the involution's conv2 (K*K*G = 196 values)",)),
        (bottleneck_params_with_running_stats, ("running statistics",)),
        (bottleneck_params_3x3_conv, ("3x3 convolution in the middle",)),
        (bottleneck_params_no_bn3, ("bn3's two vectors",)),
        (bottleneck_params_no_generator_bn, ("BN inside the involution's kernel generator",)),
        (bottleneck_params_shortcut_with_bias, ("no bias",)),
        (bottleneck_params_always_shortcut, ("'layer1.1: 256 -> 256'", "identity")),
    ],
)
def test_bottleneck_params_names_the_mistake(wrong, needles, capsys):
    assert_rejects(check_bottleneck_params, wrong, capsys, *needles)


def bottleneck_by_building(in_channels, planes, stride):
    from involution_edu.rednet import InvolutionBottleneck
    from involution_edu.resnet import make_res_layer

    return sum(p.numel() for p in make_res_layer(InvolutionBottleneck, 1, in_channels, 4 * planes, stride).parameters())


def bottleneck_by_counting(in_channels, planes, stride):
    from involution_edu.counting import count_parameters as count

    return count(_block(in_channels, planes, stride))


def _block(in_channels, planes, stride):
    from involution_edu.rednet import InvolutionBottleneck
    from involution_edu.resnet import make_res_layer

    return make_res_layer(InvolutionBottleneck, 1, in_channels, 4 * planes, stride)


@pytest.mark.parametrize("shortcut", [bottleneck_by_building, bottleneck_by_counting])
def test_bottleneck_params_refuses_building_the_block(shortcut, capsys):
    assert_rejects(check_bottleneck_params, shortcut, capsys, "asks you to write the count from the layer shapes yourself")


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


def stage_shapes_no_stride_in_layer4(input_size):
    shapes = stage_shapes_solution(input_size)
    c, h, w = shapes[3]
    return shapes[:4] + [(2048, h, w)]


@pytest.mark.parametrize(
    "wrong, needles",
    [
        (stage_shapes_floor, ("floor",)),
        (stage_shapes_forgets_max_pool, ("max pool",)),
        (stage_shapes_inner_width, ("inner widths",)),
        (stage_shapes_layer1_strided, ("layer1 has stride 1",)),
        (stage_shapes_no_stride_in_layer4, ("'224 x 224 (ImageNet)'",)),
        (lambda n: [(c, h) for c, h, _ in stage_shapes_solution(n)], ("'224 x 224 (ImageNet)'",)),
    ],
)
def test_stage_shapes_names_the_mistake(wrong, needles, capsys):
    assert_rejects(check_stage_shapes, wrong, capsys, *needles)


def stage_shapes_by_running(input_size):
    import torch

    from involution_edu.rednet import RedNet

    with torch.device("meta"):
        stages = RedNet(26).forward_stages(torch.empty(1, 3, input_size, input_size))
    return [tuple(out.shape[1:]) for _, out in stages]


def test_stage_shapes_refuses_running_the_network(capsys):
    assert_rejects(check_stage_shapes, stage_shapes_by_running, capsys, "asks you to write the size arithmetic yourself")


def test_stage_shapes_rejects_wrong_length(capsys):
    assert check_stage_shapes(lambda n: stage_shapes_solution(n)[1:]) is False
    assert "expected 5 items" in capsys.readouterr().out
    assert check_stage_shapes(not_attempted) is False
    assert "not attempted yet" in capsys.readouterr().out


# ----------------------------------------------------------------------------- identify_checkpoint
def _strip(state_dict):
    names = []
    for name in state_dict:
        for prefix in ("module.", "backbone."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        names.append(name)
    return names


def _blocks(names):
    return sum(max(int(n.split(".")[1]) for n in names if n.startswith(f"layer{s}.")) + 1 for s in range(1, 5))


def _stem_outputs(state_dict):
    return next(v for k, v in state_dict.items() if k.endswith("stem.1.conv2.conv.weight")).shape[0]


def identify_solution(state_dict):
    return 3 * _blocks(_strip(state_dict)) + 2, math.isqrt(_stem_outputs(state_dict) // 2)


def identify_blocks_not_depth(state_dict):
    return _blocks(_strip(state_dict)), math.isqrt(_stem_outputs(state_dict) // 2)


def identify_three_per_block(state_dict):
    return 3 * _blocks(_strip(state_dict)), math.isqrt(_stem_outputs(state_dict) // 2)


def identify_forgets_groups(state_dict):
    return 3 * _blocks(_strip(state_dict)) + 2, math.isqrt(_stem_outputs(state_dict))


def identify_assumes_backbone_prefix(state_dict):
    names = [n[len("backbone."):] for n in state_dict]  # breaks on bare backbones and DDP keys
    return 3 * _blocks(names) + 2, math.isqrt(_stem_outputs(state_dict) // 2)


def identify_always_7x7(state_dict):
    return 3 * _blocks(_strip(state_dict)) + 2, 7


def identify_counts_layer_names(state_dict):
    names = _strip(state_dict)
    return 3 * len({n.split(".")[1] for n in names if n.startswith("layer")}) + 2, 7


def identify_by_loading(state_dict):
    from involution_edu.rednet import rednet

    for depth in (26, 38, 50, 101, 152):
        for k in (3, 7):
            try:
                rednet(depth, stem_kernel_size=k).load_state_dict(state_dict)
                return depth, k
            except Exception:
                continue
    return None


def test_identify_checkpoint_accepts_solution(capsys):
    assert_accepts(check_identify_checkpoint, identify_solution, capsys)


@pytest.mark.parametrize(
    "wrong, needles",
    [
        (identify_blocks_not_depth, ("number of bottlenecks",)),
        (identify_three_per_block, ("plus 2",)),
        (identify_forgets_groups, ("divide by G",)),
        (identify_assumes_backbone_prefix, ("'RedNet-101, bare backbone'",)),
        (identify_always_7x7, ("'RedNet-50, classifier, 3x3 stem'", "stem.1.conv2's shape")),
        (identify_counts_layer_names, ("✗ identify_checkpoint",)),
    ],
)
def test_identify_checkpoint_names_the_mistake(wrong, needles, capsys):
    assert_rejects(check_identify_checkpoint, wrong, capsys, *needles)


def test_identify_checkpoint_refuses_loading_models(capsys):
    assert_rejects(check_identify_checkpoint, identify_by_loading, capsys, "asks you to write the reading of names and shapes yourself")


def test_identify_checkpoint_not_attempted(capsys):
    assert check_identify_checkpoint(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


@pytest.mark.parametrize("checker", [check_bottleneck_params, check_stage_shapes, check_identify_checkpoint])
def test_checkers_never_raise(checker):
    assert_never_raises(checker)


# ----------------------------------------------------------------------------- questions


def test_most_parameters_answer_is_what_the_count_says():
    import torch

    from involution_edu.rednet import rednet

    with torch.device("meta"):
        model = rednet(50)
    groups = {"a": 0, "b": 0, "c": 0, "d": 0}
    for name, parameter in model.named_parameters():
        if name.startswith("head"):
            groups["d"] += parameter.numel()
        elif ".downsample." in name:
            groups["c"] += parameter.numel()
        elif name.startswith("backbone.layer") and ".conv2." in name:
            groups["a"] += parameter.numel()
        elif name.startswith("backbone.layer") and (".conv1." in name or ".conv3." in name):
            groups["b"] += parameter.numel()
    assert max(groups, key=groups.get) == QUESTIONS["most_parameters"].answer
