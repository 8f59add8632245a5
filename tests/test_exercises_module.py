"""The checkers and questions of notebook 05 accept correct answers and reject plausible wrong ones."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from checker_harness import assert_accepts, assert_never_raises, assert_rejects, exec_route, module_route

import involution_edu
from involution_edu import involution
from involution_edu import involution as aggregate
from involution_edu.counting import count_flops
from involution_edu.exercises.module import (
    broken_involution,
    check_fixed_involution,
    check_involution_madds,
    involution_madds_reference,
    seeded_module,
)
from involution_edu.module import Involution


def not_attempted(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------------------------ involution_madds
def madds(c, h, w, k, s, r, gc, *, grid="ceil", generation_on_input=False, aggregation_on_input=False,
          bias=False, span=True, reduce=True, aggregation_per_group=False):
    """The solution, or (with a flag) one plausible mistake."""
    rows, cols = (math.ceil(h / s), math.ceil(w / s)) if grid == "ceil" else (h // s, w // s)
    hidden, groups = c // r, c // gc
    generation = (c * hidden if reduce else 0) + (hidden * k * k * groups if span else 0)
    generation += k * k * groups if bias else 0
    total = generation * (h * w if generation_on_input else rows * cols)
    per_position = k * k * (groups if aggregation_per_group else c)
    return total + per_position * (h * w if aggregation_on_input else rows * cols)


def madds_solution(c, h, w, k, s, r, gc):
    return madds(c, h, w, k, s, r, gc)


def test_madds_accepts_solution(capsys):
    assert_accepts(check_involution_madds, madds_solution, capsys)


def test_madds_reference_matches_the_counter():
    """The checker's expected count agrees with the library's FLOP counter's multiply-adds."""
    module = Involution(32, 7, stride=2, reduction_ratio=4, group_channels=16)
    counted = count_flops(module, (1, 32, 15, 15))
    assert counted.total == involution_madds_reference(32, 15, 15, 7, 2, 4, 16)


@pytest.mark.parametrize(
    "flags, needle",
    [
        (dict(generation_on_input=True), "pooled H' x W' grid"),
        (dict(aggregation_on_input=True), "once per OUTPUT position"),
        (dict(generation_on_input=True, aggregation_on_input=True), "stride is ignored"),
        (dict(grid="floor"), "floor(H / s)"),
        (dict(bias=True), "bias is counted"),
        (dict(span=False), "span convolution"),
        (dict(reduce=False), "reduce convolution"),
        (dict(aggregation_per_group=True), "once per group"),
    ],
)
def test_madds_names_the_mistake(flags, needle, capsys):
    assert_rejects(check_involution_madds, lambda *args: madds(*args, **flags), capsys, needle)


def test_madds_rejects_strings_and_floats_off(capsys):
    assert_rejects(check_involution_madds, lambda *args: str(madds(*args)), capsys, "✗")
    assert_rejects(check_involution_madds, lambda *args: madds(*args) * 1.01, capsys, "✗")


def madds_direct(c, h, w, k, s, r, gc):
    return involution_madds_reference(c, h, w, k, s, r, gc)


def madds_attribute(c, h, w, k, s, r, gc):
    return involution_edu.exercises.module.involution_madds_reference(c, h, w, k, s, r, gc)


def madds_counter(c, h, w, k, s, r, gc):
    return count_flops(Involution(c, k, s, r, gc), (1, c, h, w)).total


def _count(c, h, w, k, s, r, gc):
    return involution_madds_reference(c, h, w, k, s, r, gc)


def madds_in_helper(c, h, w, k, s, r, gc):
    return _count(c, h, w, k, s, r, gc)


@pytest.mark.parametrize("candidate", [madds_direct, madds_attribute, madds_counter, madds_in_helper])
def test_madds_guard(candidate, capsys):
    assert_rejects(check_involution_madds, candidate, capsys, "yourself")


def test_madds_not_attempted_and_never_raises(capsys):
    assert_rejects(check_involution_madds, not_attempted, capsys, "not attempted")
    assert_never_raises(check_involution_madds)


# ------------------------------------------------------------------------------ fixed_involution
def variant(x, module, *, modulo=False, batch_stats=False, floor=False, relu=True, bias=True, transpose=False,
            padding=None):
    """The fixed forward pass, or one with some bugs left in."""
    k, s, groups = module.kernel_size, module.stride, module.groups
    batch, channels = x.shape[:2]
    pooled = F.avg_pool2d(x, s, s, ceil_mode=not floor) if s > 1 else x
    bn = module.conv1.bn
    hidden = F.conv2d(pooled, module.conv1.conv.weight)
    if batch_stats:
        hidden = F.batch_norm(hidden, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    else:
        hidden = F.batch_norm(hidden, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)
    if relu:
        hidden = torch.relu(hidden)
    flat = F.conv2d(hidden, module.conv2.conv.weight, module.conv2.conv.bias if bias else None)
    out_h, out_w = flat.shape[-2:]
    kernels = flat.view(batch, groups, k, k, out_h, out_w)
    if transpose:
        kernels = kernels.transpose(2, 3)
    kernels = kernels.reshape(batch, groups, 1, k * k, out_h, out_w)
    pad = (k - 1) // 2 if padding is None else padding
    windows = F.unfold(x, k, padding=pad, stride=s)
    if modulo:
        windows = windows.view(batch, channels // groups, groups, k * k, out_h, out_w)
        return (kernels.transpose(1, 2) * windows).sum(dim=3).reshape(batch, channels, out_h, out_w)
    windows = windows.view(batch, groups, channels // groups, k * k, out_h, out_w)
    return (kernels * windows).sum(dim=3).reshape(batch, channels, out_h, out_w)


def fixed_solution(x, module):
    return variant(x, module)


def test_fixed_accepts_solution(capsys):
    assert_accepts(check_fixed_involution, fixed_solution, capsys)


def test_the_broken_function_has_the_three_bugs():
    module = seeded_module(0, 8, 3, stride=2, reduction_ratio=2, group_channels=4)
    x = torch.randn(2, 8, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(broken_involution(x, module), variant(x, module, modulo=True, batch_stats=True))
        assert not torch.allclose(broken_involution(x, module), module(x))
    with pytest.raises(RuntimeError):  # floor-mode pooling on an odd size
        broken_involution(torch.randn(1, 8, 7, 7, dtype=torch.float64), module)


@pytest.mark.parametrize(
    "flags, needle",
    [
        (dict(modulo=True), "c % G"),
        (dict(batch_stats=True), "batch's own mean"),
        (dict(floor=True), "ceil_mode"),
        (dict(relu=False), "ReLU"),
        (dict(bias=False), "bias"),
        (dict(modulo=True, batch_stats=True), "two bugs"),
    ],
)
def test_fixed_names_the_remaining_bug(flags, needle, capsys):
    assert_rejects(check_fixed_involution, lambda x, m: variant(x, m, **flags), capsys, needle)


def test_fixed_rejects_the_broken_function_and_other_slips(capsys):
    assert_rejects(check_fixed_involution, broken_involution, capsys, "BatchNorm")
    assert_rejects(check_fixed_involution, lambda x, m: variant(x, m, transpose=True), capsys, "✗")
    assert_rejects(check_fixed_involution, lambda x, m: variant(x, m, padding=0), capsys, "✗")


def calls_the_module(x, module):
    return module(x)


def calls_forward(x, module):
    return module.forward(x)


def calls_generate_kernels(x, module):
    return aggregate(x, module.generate_kernels(x), stride=module.stride)


def calls_library_by_attribute(x, module):
    return involution_edu.functional.involution_unfold(x, None)


def _aggregate(x, kernels, stride):
    return involution(x, kernels, stride=stride)


def calls_library_in_helper(x, module):
    kernels = variant(x, module)  # any tensor: the guard looks at the code, not the values
    return _aggregate(x, kernels, module.stride)


def calls_class_forward(x, module):
    return Involution.forward(module, x)


@pytest.mark.parametrize("candidate", [calls_forward, calls_generate_kernels, calls_library_by_attribute,
                                       calls_library_in_helper, calls_class_forward])
def test_fixed_guard(candidate, capsys):
    assert_rejects(check_fixed_involution, candidate, capsys, "yourself")


def test_fixed_refuses_the_modules_own_forward_at_run_time(capsys):
    for candidate in (calls_the_module, lambda x, m: m(x)):
        assert_rejects(check_fixed_involution, candidate, capsys, "module(x)", "switched off")


def test_fixed_not_attempted_and_never_raises(capsys):
    assert_rejects(check_fixed_involution, not_attempted, capsys, "not attempted")
    assert_never_raises(check_fixed_involution)


# ------------------------------------------------------------------------------ questions


def test_equivariance_claims_of_the_questions():
    """Involution commutes with whole-stride shifts in the interior; a locally connected layer does not."""
    x = torch.randn(1, 8, 16, 16, dtype=torch.float64)
    layer = seeded_module(3, 8, 3, stride=1, reduction_ratio=2, group_channels=4)
    strided = seeded_module(4, 8, 3, stride=2, reduction_ratio=2, group_channels=4)
    with torch.no_grad():
        shifted = torch.roll(x, (2, 2), (-2, -1))
        assert torch.allclose(layer(shifted)[..., 4:-2, 4:-2], torch.roll(layer(x), (2, 2), (-2, -1))[..., 4:-2, 4:-2])
        assert torch.allclose(strided(shifted)[..., 2:-1, 2:-1], torch.roll(strided(x), (1, 1), (-2, -1))[..., 2:-1, 2:-1])
        one = torch.roll(x, (1, 1), (-2, -1))
        assert not torch.allclose(strided(one)[..., 2:-1, 2:-1], strided(x)[..., 2:-1, 2:-1])
        fixed = torch.randn(1, 8, 3, 3, 16, 16, dtype=torch.float64)
        local = involution(shifted, fixed)[..., 4:-2, 4:-2]
        assert not torch.allclose(local, torch.roll(involution(x, fixed), (2, 2), (-2, -1))[..., 4:-2, 4:-2])


# ------------------------------------------------------------------------------ run-time routes, hidden cases,
# time limits and side effects (issue 15)


def madds_by_ceil_division(c, h, w, k, s, r, gc):
    """A natural alternative: ceil as -(-h // s), one helper per part."""
    def per_position(c, k, r, gc):
        return c * (c // r) + (c // r) * k * k * (c // gc) + k * k * c

    return per_position(c, k, r, gc) * (-(-h // s)) * (-(-w // s))


def test_madds_accepts_an_alternative(capsys):
    out = assert_accepts(check_involution_madds, madds_by_ceil_division, capsys)
    assert "3 random cases pass" in out


def test_madds_refuses_run_time_routes(tmp_path, capsys):
    by_name = exec_route(
        "import importlib\n"
        "def madds(c, h, w, k, s, r, gc):\n"
        "    counting = importlib.import_module('involution_edu.' + 'counting')\n"
        "    layer = getattr(importlib.import_module('involution_edu'), 'Invol' + 'ution')(c, k, s, r, gc)\n"
        "    return getattr(counting, 'count_' + 'flops')(layer, (1, c, h, w)).total\n", "madds")
    assert_rejects(check_involution_madds, by_name, capsys, "asks you to write the multiply-add count yourself")
    helper = module_route(tmp_path, "from involution_edu.exercises import module as m\n"
                                     "def madds(*args):\n    return getattr(m, 'involution_madds_' + 'reference')(*args)\n",
                          "madds")
    assert_rejects(check_involution_madds, helper, capsys, "asks you to write the multiply-add count yourself")
    with_torch = exec_route(
        "import torch\n"
        "def madds(c, h, w, k, s, r, gc):\n"
        "    rows = torch.ceil(torch.tensor(h / s)) * torch.ceil(torch.tensor(w / s))\n"
        "    return int(rows * (c * (c // r) + (c // r) * k * k * (c // gc) + k * k * c))\n", "madds")
    assert_rejects(check_involution_madds, with_torch, capsys, "yourself")


def test_madds_a_table_of_the_named_answers_fails_the_hidden_cases(monkeypatch, capsys):
    from involution_edu.exercises import module as checkers

    monkeypatch.setenv("INVOLUTION_EDU_CHECK_SEED", "5")
    remembered = {}
    original = checkers._madds_case

    def spy(name, why, *args):
        remembered[args] = involution_madds_reference(*args)
        return original(name, why, *args)

    monkeypatch.setattr(checkers, "_madds_case", spy)
    check_involution_madds(madds_solution)  # the learner sees the named cases' answers in the messages
    monkeypatch.setattr(checkers, "_madds_case", original)
    named = {args: value for args, value in remembered.items()}
    table = {args: named[args] for args in list(named)[:7]}
    assert_rejects(check_involution_madds, lambda *args: table.get(args, 0), capsys, "random case")


def test_madds_times_out_on_an_endless_loop(monkeypatch, capsys):
    monkeypatch.setenv("INVOLUTION_EDU_CASE_TIME_LIMIT", "0.5")
    monkeypatch.setenv("INVOLUTION_EDU_TOTAL_TIME_LIMIT", "2")

    def endless(c, h, w, k, s, r, gc):
        rows = 0
        while rows < h:  # `rows + s` where `rows += s` was meant
            rows + s
        return rows

    assert_rejects(check_involution_madds, endless, capsys, "ran for more than", "endless loop")


def fixed_by_submodules(x, module):
    """A natural alternative: the module's own conv1 (eval-mode BN) and conv2, and the library's stride_pool."""
    from involution_edu.module import stride_pool

    k, s, groups = module.kernel_size, module.stride, module.groups
    b, c = x.shape[:2]
    flat = module.conv2(module.conv1(stride_pool(x, s) if s > 1 else x))
    rows, cols = flat.shape[-2:]
    windows = F.unfold(x, k, padding=(k - 1) // 2, stride=s).view(b, groups, c // groups, k * k, rows, cols)
    return (flat.view(b, groups, 1, k * k, rows, cols) * windows).sum(3).reshape(b, c, rows, cols)


def test_fixed_accepts_the_submodules_and_stride_pool(capsys):
    out = assert_accepts(check_fixed_involution, fixed_by_submodules, capsys)
    assert "3 random cases pass" in out


def test_fixed_refuses_run_time_routes(tmp_path, capsys):
    base_forward = exec_route(
        "def fixed(x, module):\n"
        "    return type(module).__mro__[1].forward(module, x)\n", "fixed")
    assert_rejects(check_fixed_involution, base_forward, capsys, "this exercise asks you to write", "yourself")
    by_name = exec_route(
        "import importlib\n"
        "def fixed(x, module):\n"
        "    op = getattr(importlib.import_module('involution_edu'), 'invol' + 'ution')\n"
        "    kernels = type(module).__mro__[1].generate_kernels(module, x)\n"
        "    return op(x, kernels, stride=module.stride)\n", "fixed")
    assert_rejects(check_fixed_involution, by_name, capsys, "yourself")
    helper = module_route(tmp_path, "import torch\nfrom involution_edu.reference import involution_loops\n"
                                     "def fixed(x, module):\n"
                                     "    kernels = module.conv2(module.conv1(x))\n"
                                     "    b, _, h, w = kernels.shape\n"
                                     "    k = module.kernel_size\n"
                                     "    kernels = kernels.view(b, module.groups, k, k, h, w)\n"
                                     "    return torch.from_numpy(involution_loops(x.numpy(), kernels.numpy(), stride=module.stride))\n",
                          "fixed")
    assert_rejects(check_fixed_involution, helper, capsys, "yourself")


def test_fixed_names_side_effects(capsys):
    def leaves_training_mode(x, module):
        out = fixed_by_submodules(x, module)
        module.train()
        return out

    assert_rejects(check_fixed_involution, leaves_training_mode, capsys, "training mode")

    def updates_running_stats(x, module):
        out = fixed_by_submodules(x, module)
        bn = module.conv1.bn
        F.batch_norm(F.conv2d(x, module.conv1.conv.weight), bn.running_mean, bn.running_var, training=True)
        return out

    assert_rejects(check_fixed_involution, updates_running_stats, capsys, "running_mean")


def test_fixed_times_out_on_an_endless_loop(monkeypatch, capsys):
    monkeypatch.setenv("INVOLUTION_EDU_CASE_TIME_LIMIT", "0.5")
    monkeypatch.setenv("INVOLUTION_EDU_TOTAL_TIME_LIMIT", "2")

    def endless(x, module):
        while True:
            x = x + 0

    assert_rejects(check_fixed_involution, endless, capsys, "ran for more than")
