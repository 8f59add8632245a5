"""The checkers of notebook 06 accept correct solutions and reject plausible wrong ones."""

from __future__ import annotations

import math

import pytest
from checker_harness import assert_accepts, assert_never_raises, assert_rejects, exec_route, module_route

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


def bottleneck_params_by_parts(in_channels, planes, stride):
    """A natural alternative: a helper per layer kind, the shortcut from the shapes it must match."""
    def conv(a, b, bias=False):
        return a * b + (b if bias else 0)

    def bn(c):
        return 2 * c

    out = 4 * planes
    involution = conv(planes, planes // 4) + bn(planes // 4) + conv(planes // 4, 49 * (planes // 16), bias=True)
    main = conv(in_channels, planes) + bn(planes) + involution + bn(planes) + conv(planes, out) + bn(out)
    needs_projection = (in_channels, stride) != (out, 1)
    return main + (conv(in_channels, out) + bn(out) if needs_projection else 0)


def test_bottleneck_params_accepts_solution(capsys):
    assert_accepts(check_bottleneck_params, bottleneck_params_solution, capsys)
    assert_accepts(check_bottleneck_params, bottleneck_params_by_parts, capsys)


def bottleneck_params_shortcut_only_when_widening(in_channels, planes, stride):
    total = bottleneck_params_no_shortcut(in_channels, planes, stride)
    return total + (in_channels * 4 * planes + 8 * planes if stride != 1 or in_channels < 4 * planes else 0)


def test_bottleneck_params_covers_a_narrowing_block(capsys):
    assert_rejects(check_bottleneck_params, bottleneck_params_shortcut_only_when_widening, capsys,
                   "'a narrowing block: 1024 -> 256'", "narrows 1024 channels to 256")


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
    assert not check_bottleneck_params(not_attempted)
    assert "not attempted yet" in capsys.readouterr().out
    assert not check_bottleneck_params(lambda c, p, s: c // 0)
    assert "ZeroDivisionError" in capsys.readouterr().out


# ----------------------------------------------------------------------------- stage_shapes
def _out(size, kernel_size, stride, padding):
    return (size + 2 * padding - kernel_size) // stride + 1


def stage_shapes_solution(height, width, stem_stride, max_pool):
    def stem(n):
        n = _out(n, 3, stem_stride, 1)
        return _out(n, 3, 2, 1) if max_pool else n

    h, w = stem(height), stem(width)
    shapes = [(64, h, w), (256, h, w)]
    for channels in (512, 1024, 2048):
        h, w = _out(h, 7, 2, 3), _out(w, 7, 2, 3)
        shapes.append((channels, h, w))
    return shapes


def stage_shapes_by_halving(height, width, stem_stride, max_pool):
    """A natural alternative: count the halvings, ceil(n / 2) each, with -(-n // 2)."""
    halvings = [int(stem_stride == 2) + int(max_pool), 0, 1, 1, 1]
    h, w, shapes = height, width, []
    for channels, count in zip((64, 256, 512, 1024, 2048), halvings):
        for _ in range(count):
            h, w = -(-h // 2), -(-w // 2)
        shapes.append([channels, h, w])  # lists instead of tuples are fine
    return shapes


def test_stage_shapes_accepts_solution_and_alternatives(capsys):
    assert_accepts(check_stage_shapes, stage_shapes_solution, capsys)
    assert_accepts(check_stage_shapes, stage_shapes_by_halving, capsys)
    assert_accepts(check_stage_shapes, lambda *a: tuple(stage_shapes_solution(*a)), capsys)


def _transform(fn):
    return lambda height, width, stem_stride, max_pool: fn(height, width, stem_stride, max_pool)


def stage_shapes_floor(height, width, stem_stride, max_pool):
    halvings = [int(stem_stride == 2) + int(max_pool), 0, 1, 1, 1]
    h, w, shapes = height, width, []
    for channels, count in zip((64, 256, 512, 1024, 2048), halvings):
        for _ in range(count):
            h, w = h // 2, w // 2
        shapes.append((channels, h, w))
    return shapes


def stage_shapes_ignores_max_pool(height, width, stem_stride, max_pool):
    return stage_shapes_solution(height, width, stem_stride, True)


def stage_shapes_forgets_max_pool(height, width, stem_stride, max_pool):
    return stage_shapes_solution(height, width, stem_stride, False)


def stage_shapes_ignores_stem_stride(height, width, stem_stride, max_pool):
    return stage_shapes_solution(height, width, 2, max_pool)


def stage_shapes_inner_width(*args):
    return [(c // 4 if c > 64 else c, h, w) for c, h, w in stage_shapes_solution(*args)]


def stage_shapes_layer1_strided(*args):
    shapes = stage_shapes_solution(*args)
    return shapes[:1] + [(c, -(-h // 2), -(-w // 2)) for c, h, w in shapes[:-1][1:]] + [
        (2048, -(-shapes[-1][1] // 2), -(-shapes[-1][2] // 2))]


def stage_shapes_swapped(*args):
    return [(c, w, h) for c, h, w in stage_shapes_solution(*args)]


def stage_shapes_no_stride_in_layer4(*args):
    shapes = stage_shapes_solution(*args)
    c, h, w = shapes[3]
    return shapes[:4] + [(2048, h, w)]


@pytest.mark.parametrize(
    "wrong, needles",
    [
        (stage_shapes_floor, ("floor",)),
        (stage_shapes_forgets_max_pool, ("forgot the max pool",)),
        (stage_shapes_ignores_max_pool, ("no max pool in this stem",)),
        (stage_shapes_ignores_stem_stride, ("stem.0 has stride 1 here",)),
        (stage_shapes_inner_width, ("inner widths",)),
        (stage_shapes_layer1_strided, ("layer1 has stride 1",)),
        (stage_shapes_swapped, ("swapped",)),
        (stage_shapes_no_stride_in_layer4, ("'224 x 224, the paper's stem'",)),
        (lambda *a: [(c, h) for c, h, _ in stage_shapes_solution(*a)], ("'224 x 224, the paper's stem'",)),
    ],
)
def test_stage_shapes_names_the_mistake(wrong, needles, capsys):
    assert_rejects(check_stage_shapes, wrong, capsys, *needles)


def stage_shapes_by_running(height, width, stem_stride, max_pool):
    import torch

    from involution_edu.rednet import RedNet

    with torch.device("meta"):
        backbone = RedNet(26)
        backbone.stem[0].conv.stride = (stem_stride, stem_stride)
        if not max_pool:
            backbone.maxpool = torch.nn.Identity()
        stages = backbone.forward_stages(torch.empty(1, 3, height, width))
    return [tuple(out.shape[1:]) for _, out in stages]


def test_stage_shapes_refuses_running_the_network(capsys):
    assert_rejects(check_stage_shapes, stage_shapes_by_running, capsys, "asks you to write the size arithmetic yourself")


def test_stage_shapes_rejects_wrong_length_and_the_old_signature(capsys):
    assert not check_stage_shapes(lambda *a: stage_shapes_solution(*a)[1:])
    assert "expected 5 items" in capsys.readouterr().out
    assert not check_stage_shapes(lambda input_size: [(64, 56, 56)] * 5)
    assert "TypeError" in capsys.readouterr().out
    assert not check_stage_shapes(not_attempted)
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


def identify_by_length(state_dict):
    """Issue 15's shortcut: every standard classifier has 25 entries a block and 30 besides."""
    return 3 * ((len(state_dict) - 30) // 25) + 2, math.isqrt(_stem_outputs(state_dict) // 2)


_STANDARD = {(1, 2, 4, 1): 26, (2, 3, 5, 2): 38, (3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}


def identify_by_standard_table(state_dict):
    names = _strip(state_dict)
    blocks = tuple(max(int(n.split(".")[1]) for n in names if n.startswith(f"layer{s}.")) + 1 for s in range(1, 5))
    return _STANDARD.get(blocks, 50), math.isqrt(_stem_outputs(state_dict) // 2)


def identify_by_num_batches_tracked(state_dict):
    bn_count = sum(name.endswith("num_batches_tracked") for name in state_dict)  # 4 BNs a block, 4 shortcuts, 4 in the stem
    return 3 * ((bn_count - 8) // 4) + 2, math.isqrt(_stem_outputs(state_dict) // 2)


def test_identify_checkpoint_refuses_counting_entries(capsys):
    assert_rejects(check_identify_checkpoint, identify_by_length, capsys, "'RedNet-50, legacy (no num_batches_tracked)'",
                   "count blocks, not entries")
    assert_rejects(check_identify_checkpoint, identify_by_num_batches_tracked, capsys, "legacy")


def test_identify_checkpoint_covers_other_block_counts(capsys):
    assert_rejects(check_identify_checkpoint, identify_by_standard_table, capsys, "'blocks (2, 2, 2, 2), 5x5 stem'",
                   "8 blocks give depth 26")


def test_identify_checkpoint_refuses_loading_models(capsys):
    assert_rejects(check_identify_checkpoint, identify_by_loading, capsys, "asks you to write the reading of names and shapes yourself")


def test_identify_checkpoint_not_attempted(capsys):
    assert not check_identify_checkpoint(not_attempted)
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


# ----------------------------------------------------------------------------- run-time routes, hidden cases,
# time limits and side effects (issue 15)


def test_bottleneck_params_refuses_run_time_routes(tmp_path, capsys):
    by_name = exec_route(
        "import importlib\n"
        "def count(in_channels, planes, stride):\n"
        "    rednet = importlib.import_module('involution_edu.red' + 'net')\n"
        "    layer = getattr(importlib.import_module('involution_edu.resnet'), 'make_res_' + 'layer')(\n"
        "        rednet.InvolutionBottleneck, 1, in_channels, 4 * planes, stride)\n"
        "    return sum(p.numel() for p in layer.parameters())\n", "count")
    assert_rejects(check_bottleneck_params, by_name, capsys, "asks you to write the count from the layer shapes yourself")
    oracle = module_route(tmp_path, "from involution_edu.exercises import rednet as r\n"
                                     "def count(*args):\n    return getattr(r, '_bottleneck_params_' + 'expected')(*args)\n",
                          "count")
    assert_rejects(check_bottleneck_params, oracle, capsys, "yourself")


def _named_table(solution, args_list):
    return {tuple(args): solution(*args) for args in args_list}


def test_bottleneck_params_a_table_of_the_named_answers_fails(monkeypatch, capsys):
    monkeypatch.setenv("INVOLUTION_EDU_CHECK_SEED", "3")
    named = [(64, 64, 1), (256, 64, 1), (256, 64, 2), (256, 128, 2), (128, 32, 1), (1024, 64, 1), (1024, 256, 1),
             (1024, 512, 2)]
    table = _named_table(bottleneck_params_solution, named)
    assert_rejects(check_bottleneck_params, lambda *args: table.get(args, 0), capsys, "random case")


def test_stage_shapes_a_table_of_the_named_answers_fails(monkeypatch, capsys):
    monkeypatch.setenv("INVOLUTION_EDU_CHECK_SEED", "3")
    named = [(224, 224, 2, True), (32, 32, 1, False), (65, 47, 2, True), (100, 100, 1, True), (33, 20, 2, False),
             (3, 5, 2, True)]
    table = _named_table(stage_shapes_solution, named)
    assert_rejects(check_stage_shapes, lambda *args: table.get(args, [(64, 1, 1)] * 5), capsys, "random case")


def test_stage_shapes_refuses_a_run_time_route(capsys):
    by_name = exec_route(
        "import importlib, torch\n"
        "def shapes(height, width, stem_stride, max_pool):\n"
        "    net = getattr(importlib.import_module('involution_edu.rednet'), 'Red' + 'Net')(26)\n"
        "    return [tuple(o.shape[1:]) for _, o in net.forward_stages(torch.zeros(1, 3, height, width))]\n", "shapes")
    assert_rejects(check_stage_shapes, by_name, capsys, "asks you to write the size arithmetic yourself")


def test_identify_checkpoint_refuses_a_run_time_route(capsys):
    by_loading = exec_route(
        "import importlib\n"
        "def identify(state_dict):\n"
        "    build = getattr(importlib.import_module('involution_edu.rednet'), 'red' + 'net')\n"
        "    for depth in (26, 38, 50, 101, 152):\n"
        "        for k in (3, 7):\n"
        "            try:\n"
        "                build(depth, stem_kernel_size=k).load_state_dict(state_dict)\n"
        "                return depth, k\n"
        "            except RuntimeError:\n"
        "                pass\n", "identify")
    assert_rejects(check_identify_checkpoint, by_loading, capsys, "asks you to write the reading of names and shapes yourself")


def test_identify_checkpoint_names_a_side_effect_on_the_state_dict(capsys):
    def strips_in_place(state_dict):
        for name in list(state_dict):
            for prefix in ("module.", "backbone."):
                if name.startswith(prefix):
                    state_dict[name[len(prefix):]] = state_dict.pop(name)
                    break
        return identify_solution(state_dict)

    assert_rejects(check_identify_checkpoint, strips_in_place, capsys, "changed its input")


@pytest.mark.parametrize("checker, arity", [(check_bottleneck_params, 3), (check_stage_shapes, 4),
                                            (check_identify_checkpoint, 1)])
def test_checkers_time_out_on_an_endless_loop(checker, arity, monkeypatch, capsys):
    monkeypatch.setenv("INVOLUTION_EDU_CASE_TIME_LIMIT", "0.5")
    monkeypatch.setenv("INVOLUTION_EDU_TOTAL_TIME_LIMIT", "2")

    def endless(*args):
        assert len(args) == arity
        blocks = 0
        while blocks < 4:  # `blocks + 1` where `blocks += 1` was meant
            blocks + 1
        return blocks

    assert_rejects(checker, endless, capsys, "ran for more than")
