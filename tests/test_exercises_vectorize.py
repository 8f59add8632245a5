"""The checkers and questions of notebook 03 accept correct answers and reject plausible wrong ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from checker_harness import assert_accepts, assert_never_raises, assert_rejects

import involution_edu.functional
from involution_edu import involution_unfold
from involution_edu.exercises.vectorize import _unfold_variant as _variant
from involution_edu.exercises.vectorize import (
    check_expose_bug,
    check_involution_unfold,
    check_unfold_total_bytes,
    involution_unfold_suspect,
    unfold_total_bytes_reference,
)
from involution_edu.functional import involution_unfold as aliased_unfold
from involution_edu.reference import involution_loops, involution_numpy


# ---------------------------------------------------------------------------- involution_unfold
def make_unfold(view="paper", transpose_taps=False, padding_ignores_dilation=False, ignore_dilation=False,
                ignore_stride=False):
    def involution_unfold_student(x, kernels, stride=1, padding=None, dilation=1):
        batch, channels = x.shape[:2]
        groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
        if padding is None:
            padding = (k - 1) // 2 if padding_ignores_dilation else dilation * (k - 1) // 2
        columns = F.unfold(x, k, dilation=1 if ignore_dilation else dilation, padding=padding,
                           stride=1 if ignore_stride else stride)
        if view == "paper":
            windows = columns.view(batch, groups, channels // groups, k * k, out_h, out_w)
        else:  # c % G
            windows = columns.view(batch, channels // groups, groups, k * k, out_h, out_w).transpose(1, 2)
        taps = kernels.transpose(2, 3) if transpose_taps else kernels
        out = (taps.reshape(batch, groups, 1, k * k, out_h, out_w) * windows).sum(dim=3)
        if view != "paper":
            out = out.transpose(1, 2)
        return out.reshape(batch, channels, out_h, out_w)

    return involution_unfold_student


def test_involution_unfold_accepts_solution(capsys):
    assert_accepts(check_involution_unfold, make_unfold(), capsys)


@pytest.mark.parametrize("switches, needles", [
    (dict(view="keras"), ["c % G"]),
    (dict(transpose_taps=True), ["do not transpose"]),
    (dict(padding_ignores_dilation=True), ["dilation * (K - 1) // 2"]),
    (dict(ignore_dilation=True), ["raised", "dilation"]),
    (dict(ignore_stride=True), ["raised", "stride"]),
])
def test_involution_unfold_rejects_mistakes(switches, needles, capsys):
    assert_rejects(check_involution_unfold, make_unfold(**switches), capsys, *needles)


def test_involution_unfold_rejects_the_suspect(capsys):
    assert_rejects(check_involution_unfold, involution_unfold_suspect, capsys, "c % G")


def test_involution_unfold_rejects_float32(capsys):
    solution = make_unfold()
    assert_rejects(check_involution_unfold, lambda x, k, **kw: solution(x.float(), k.float(), **kw), capsys, "float32")


def _helper_unfold(x, kernels, stride, padding, dilation):
    return involution_unfold(x, kernels, stride, padding, dilation)


@pytest.mark.parametrize("shortcut", [
    lambda x, k, stride=1, padding=None, dilation=1: involution_unfold(x, k, stride, padding, dilation),
    lambda x, k, stride=1, padding=None, dilation=1: aliased_unfold(x, k, stride, padding, dilation),
    lambda x, k, stride=1, padding=None, dilation=1: involution_edu.functional.involution_unfold(x, k, stride,
                                                                                               padding, dilation),
    lambda x, k, stride=1, padding=None, dilation=1: _helper_unfold(x, k, stride, padding, dilation),
    lambda x, k, stride=1, padding=None, dilation=1: involution_edu.functional.involution(x, k, stride, padding,
                                                                                        dilation),
    lambda x, k, stride=1, padding=None, dilation=1: torch.from_numpy(involution_numpy(x.numpy(), k.numpy(), stride,
                                                                                       padding, dilation)),
    lambda x, k, stride=1, padding=None, dilation=1: torch.from_numpy(involution_loops(x.numpy(), k.numpy(), stride,
                                                                                       padding, dilation)),
], ids=["direct", "alias", "attribute path", "helper", "default op", "numpy reference", "loops"])
def test_involution_unfold_guard(shortcut, capsys):
    assert_rejects(check_involution_unfold, shortcut, capsys, "write the unfold formulation yourself")


def test_involution_unfold_never_raises():
    assert_never_raises(check_involution_unfold)


# ------------------------------------------------------------------------------------ diagnosis
def test_suspect_is_the_keras_grouping():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 5, 4))
    kernels = rng.standard_normal((2, 3, 3, 3, 5, 4))
    got = involution_unfold_suspect(torch.from_numpy(x), torch.from_numpy(kernels)).numpy()
    np.testing.assert_allclose(got, _variant(x, kernels, 1, None, 1, interleaved=True), atol=1e-12)
    assert not np.allclose(got, involution_loops(x, kernels))
    for groups in (1, 6):
        k = rng.standard_normal((2, groups, 3, 3, 5, 4))
        np.testing.assert_allclose(involution_unfold_suspect(torch.from_numpy(x), torch.from_numpy(k)).numpy(),
                                   involution_loops(x, k), atol=1e-12)


def _pair(channels=4, groups=2, dtype=torch.float64, same_kernels=False):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, 5, 5, generator=generator, dtype=dtype)
    kernels = torch.randn(1, groups, 3, 3, 5, 5, generator=generator, dtype=dtype)
    if same_kernels:
        kernels = kernels[:, :1].expand(-1, groups, -1, -1, -1, -1).contiguous()
    return x, kernels


def test_expose_bug_accepts_solution(capsys):
    assert_accepts(check_expose_bug, lambda: _pair(), capsys)


@pytest.mark.parametrize("wrong, needles", [
    (lambda: _pair(groups=1), ["G = 1"]),
    (lambda: _pair(groups=4), ["G = C"]),
    (lambda: _pair(same_kernels=True), ["kernels of different groups"]),
    (lambda: _pair(dtype=torch.float32), ["float64"]),
    (lambda: (torch.randn(1, 4, 5, 5, dtype=torch.float64), torch.randn(1, 2, 3, 3, 4, 4, dtype=torch.float64)),
     ["the loops refuse"]),
    (lambda: _pair()[0], ["a pair"]),
    (lambda: tuple(t.numpy() for t in _pair()), ["torch tensors"]),
    (lambda: (torch.randn(1, 4, 5, 5, dtype=torch.float64), torch.randn(1, 2, 3, 3, 5, dtype=torch.float64)),
     ["kernels (B, G, K, K, H', W')"]),
], ids=["G=1", "G=C", "same kernels", "float32", "wrong size", "one tensor", "numpy", "5-d kernels"])
def test_expose_bug_rejects_mistakes(wrong, needles, capsys):
    assert_rejects(check_expose_bug, wrong, capsys, *needles)


def test_expose_bug_never_raises():
    assert_never_raises(check_expose_bug)


def test_expose_bug_not_attempted(capsys):
    def expose_bug():
        raise NotImplementedError

    assert_rejects(check_expose_bug, expose_bug, capsys, "not attempted")


# ----------------------------------------------------------------------------- memory total
def total_solution(layers, batch, bytes_per_element=4):
    total = 0
    for channels, height, width, k, stride in layers:
        p = (k - 1) // 2
        total += batch * channels * k * k * ((height + 2 * p - k) // stride + 1) * ((width + 2 * p - k) // stride + 1)
    return total * bytes_per_element


def make_total(input_positions=False, half=False, no_taps=False, k_only=False, no_batch=False, no_bytes=False):
    def unfold_total_bytes(layers, batch, bytes_per_element=4):
        total = 0
        for channels, height, width, k, stride in layers:
            p = (k - 1) // 2
            if input_positions:
                out_h, out_w = height, width
            elif half:
                out_h, out_w = height // stride, width // stride
            else:
                out_h, out_w = (height + 2 * p - k) // stride + 1, (width + 2 * p - k) // stride + 1
            taps = 1 if no_taps else (k if k_only else k * k)
            total += (1 if no_batch else batch) * channels * taps * out_h * out_w * (1 if no_bytes else bytes_per_element)
        return total

    return unfold_total_bytes


def test_total_reference_matches_real_unfold():
    layers = [(4, 7, 5, 3, 2), (3, 6, 6, 5, 1), (2, 9, 8, 7, 3)]
    expected = sum(F.unfold(torch.zeros(2, c, h, w), k, padding=(k - 1) // 2, stride=s).numel() * 4
                   for c, h, w, k, s in layers)
    assert unfold_total_bytes_reference(layers, 2) == expected == total_solution(layers, 2)


def test_total_accepts_solution(capsys):
    assert_accepts(check_unfold_total_bytes, total_solution, capsys)


@pytest.mark.parametrize("switches, needles", [
    (dict(input_positions=True), ["OUTPUT positions"]),
    (dict(half=True), ["not H // s"]),
    (dict(no_taps=True), ["size of the feature map"]),
    (dict(k_only=True), ["K*K taps"]),
    (dict(no_batch=True), ["batch size"]),
    (dict(no_bytes=True), ["bytes_per_element"]),
])
def test_total_rejects_mistakes(switches, needles, capsys):
    assert_rejects(check_unfold_total_bytes, make_total(**switches), capsys, *needles)


def _by_building(layers, batch, bytes_per_element=4):
    return sum(F.unfold(torch.zeros(batch, c, h, w), k, padding=(k - 1) // 2, stride=s).numel()
               for c, h, w, k, s in layers) * bytes_per_element


@pytest.mark.parametrize("shortcut", [
    lambda layers, batch, bytes_per_element=4: sum(F.unfold(torch.zeros(batch, c, h, w), k, padding=(k - 1) // 2,
                                                            stride=s).numel() for c, h, w, k, s in layers),
    lambda layers, batch, bytes_per_element=4: sum(torch.nn.functional.unfold(torch.zeros(batch, c, h, w), k).numel()
                                                   for c, h, w, k, s in layers),
    _by_building,
    lambda layers, batch, bytes_per_element=4: unfold_total_bytes_reference(layers, batch, bytes_per_element),
], ids=["direct", "attribute path", "helper", "reference"])
def test_total_guard(shortcut, capsys):
    assert_rejects(check_unfold_total_bytes, shortcut, capsys, "write the memory count")


def test_total_never_raises():
    assert_never_raises(check_unfold_total_bytes)


def test_rednet50_unfold_total_includes_the_stem():
    """Notebook 03's total: about 2.6 GiB at batch 8 in float32, 600 MiB of it the 7x7 stem involution."""
    stem = [(32, 112, 112, 7, 1)]
    blocks = ([(64, 56, 56, 7, 1)] * 3 + [(128, 56, 56, 7, 2)] + [(128, 28, 28, 7, 1)] * 3 + [(256, 28, 28, 7, 2)]
              + [(256, 14, 14, 7, 1)] * 5 + [(512, 14, 14, 7, 2)] + [(512, 7, 7, 7, 1)] * 2)
    assert unfold_total_bytes_reference(stem, 8) / 2**20 == pytest.approx(600.25)
    assert unfold_total_bytes_reference(stem + blocks, 8) / 2**30 == pytest.approx(2.60, abs=0.01)


# ------------------------------------------------------------------------------------ questions




# ------------------------------------------------------------------------------ harness helpers
# tests/checker_harness.py provides these (FRAMEWORK_API.md); the local versions below are used only where the
# harness does not have them yet, and do the same.



from checker_harness import assert_names_side_effect, assert_times_out, exec_route, module_route  # noqa: E402


def endless(*args, **kwargs):
    """A learner's loop that never ends (`k + 2` where `k += 2` was meant)."""
    k = 0
    while k < 10:
        k + 2


# ------------------------------------------------------------------------------ routes, time limits, side effects
def unfold_with_module(x, kernels, stride=1, padding=None, dilation=1):
    """A natural alternative: nn.Unfold and einsum instead of F.unfold and a broadcast product."""
    batch, channels = x.shape[:2]
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    padding = dilation * (k - 1) // 2 if padding is None else padding
    columns = torch.nn.Unfold(k, dilation=dilation, padding=padding, stride=stride)(x)
    columns = columns.view(batch, groups, channels // groups, k * k, out_h, out_w)
    out = torch.einsum("bgntij,bgtij->bgnij", columns, kernels.reshape(batch, groups, k * k, out_h, out_w))
    return out.reshape(batch, channels, out_h, out_w)


def test_involution_unfold_accepts_alternatives(capsys):
    assert_accepts(check_involution_unfold, unfold_with_module, capsys)


ROUTE_SOURCE = """
import involution_edu
def involution_unfold_student(x, kernels, stride=1, padding=None, dilation=1):
    return getattr(involution_edu, "involution_" + "unfold")(x, kernels, stride, padding, dilation)
"""


def test_involution_unfold_refuses_run_time_routes(tmp_path, capsys):
    assert_rejects(check_involution_unfold, exec_route(ROUTE_SOURCE, "involution_unfold_student"), capsys, "involution")
    assert_rejects(check_involution_unfold, module_route(tmp_path, ROUTE_SOURCE, "involution_unfold_student"), capsys,
                   "involution")
    custom_op = exec_route("""
import torch, involution_edu.ops
def involution_unfold_student(x, kernels, stride=1, padding=None, dilation=1):
    op = getattr(torch.ops, "involution" + "_edu").involution
    padding = dilation * (kernels.shape[2] - 1) // 2 if padding is None else padding
    return op(x, kernels, stride, padding, dilation, "eager")
""", "involution_unfold_student")
    assert_rejects(check_involution_unfold, custom_op, capsys, "involution")
    eager = exec_route("""
import involution_edu.ops as ops
def involution_unfold_student(x, kernels, stride=1, padding=None, dilation=1):
    padding = dilation * (kernels.shape[2] - 1) // 2 if padding is None else padding
    return ops._eager_forward(x, kernels, stride, padding, dilation)
""", "involution_unfold_student")
    assert_rejects(check_involution_unfold, eager, capsys, "_eager_forward")


def test_involution_unfold_refuses_the_oracle_variant(capsys):
    import involution_edu.exercises.vectorize as checkers

    oracle = exec_route("""
def involution_unfold_student(x, kernels, stride=1, padding=None, dilation=1):
    import torch
    variant = getattr(checkers, "_unfold" + "_variant")
    return torch.from_numpy(variant(x.numpy(), kernels.numpy(), stride, padding, dilation))
""", "involution_unfold_student", {"checkers": checkers})
    assert_rejects(check_involution_unfold, oracle, capsys, "✗")


def test_involution_unfold_time_limit(capsys):
    assert_times_out(check_involution_unfold, endless, capsys)


def test_involution_unfold_names_a_side_effect(capsys):
    solution = make_unfold()

    def changes_x(x, kernels, stride=1, padding=None, dilation=1):
        out = solution(x, kernels, stride, padding, dilation)
        x[0, 0, 0, 0] = 5.0
        return out

    assert_names_side_effect(check_involution_unfold, changes_x, capsys, "changed its input")


def test_expose_bug_smallest_alternatives(capsys):
    def one_pixel():  # C = 4, G = 2, K = 1 on a single pixel: the smallest inputs of all
        x = torch.arange(1.0, 5.0, dtype=torch.float64).view(1, 4, 1, 1)
        kernels = torch.tensor([1.0, -1.0], dtype=torch.float64).view(1, 2, 1, 1, 1, 1)
        return x, kernels

    assert_accepts(check_expose_bug, one_pixel, capsys)


@pytest.mark.parametrize("channels, groups", [(6, 2), (6, 3), (8, 4), (16, 4)])
def test_expose_bug_asks_for_the_fewest_channels(channels, groups, capsys):
    def more_channels():
        generator = torch.Generator().manual_seed(0)
        return (torch.randn(1, channels, 4, 4, generator=generator, dtype=torch.float64),
                torch.randn(1, groups, 3, 3, 4, 4, generator=generator, dtype=torch.float64))

    assert_rejects(check_expose_bug, more_channels, capsys, "more channels than needed")


@pytest.mark.parametrize("poison", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["x", "kernels"])
def test_expose_bug_refuses_non_finite_inputs(poison, where, capsys):
    def non_finite():
        x, kernels = _pair()
        (x if where == "x" else kernels)[0, 0, 0, 0] = poison
        return x, kernels

    assert_rejects(check_expose_bug, non_finite, capsys, "finite")


def test_expose_bug_refuses_overflowing_inputs(capsys):
    def overflowing():  # finite inputs whose products overflow to inf
        x, kernels = _pair()
        return x * 1e200, kernels * 1e200

    assert_rejects(check_expose_bug, overflowing, capsys, "finite")


def test_expose_bug_time_limit(capsys):
    # expose_bug takes no input, so there are no random cases and no input to change; the time limit still holds
    assert_times_out(check_expose_bug, endless, capsys)


def total_with_output_size(layers, batch, bytes_per_element=4):
    """A natural alternative reusing notebook 02's output_size (imported in notebook 03)."""
    from involution_edu.shapes import output_size

    return sum(batch * c * k * k * output_size(h, k, s, (k - 1) // 2) * output_size(w, k, s, (k - 1) // 2)
               for c, h, w, k, s in layers) * bytes_per_element


def test_total_accepts_the_notebooks_helper(capsys):
    assert_accepts(check_unfold_total_bytes, total_with_output_size, capsys)


def test_total_refuses_a_memorised_table(capsys):
    """The fixed cases' answers looked up by their inputs: the random cases catch it."""
    table = {}
    for layers, batch, nbytes in [([(16, 10, 10, 3, 1)], 1, 4), ([(8, 12, 9, 5, 1), (4, 6, 6, 3, 1)], 4, 8),
                                  ([(128, 56, 56, 7, 2)], 8, 4), ([(64, 7, 7, 7, 2)], 2, 4),
                                  ([(32, 14, 14, 1, 1)], 4, 2)]:
        table[(tuple(layers), batch, nbytes)] = unfold_total_bytes_reference(layers, batch, nbytes)

    def memorised(layers, batch, bytes_per_element=4):
        key = (tuple(layers), batch, bytes_per_element)
        return table.get(key, total_with_output_size(layers, batch, bytes_per_element) if len(layers) > 10 else 0)

    assert_rejects(check_unfold_total_bytes, memorised, capsys, "random case")


def test_total_refuses_building_the_tensors(tmp_path, capsys):
    source = """
import torch
def unfold_total_bytes(layers, batch, bytes_per_element=4):
    unfold = getattr(torch.nn.functional, "un" + "fold")
    total = 0
    for c, h, w, k, s in layers:
        total += unfold(torch.empty(batch, c, h, w, device="meta"), k, padding=(k - 1) // 2, stride=s).numel()
    return total * bytes_per_element
"""
    assert_rejects(check_unfold_total_bytes, exec_route(source, "unfold_total_bytes"), capsys, "unfold")
    assert_rejects(check_unfold_total_bytes, module_route(tmp_path, source, "unfold_total_bytes"), capsys, "unfold")


def test_total_time_limit(capsys):
    assert_times_out(check_unfold_total_bytes, endless, capsys)


def test_total_names_a_side_effect(capsys):
    def pops_the_stem(layers, batch, bytes_per_element=4):
        total = total_with_output_size(layers, batch, bytes_per_element)
        layers.clear()
        return total

    assert_names_side_effect(check_unfold_total_bytes, pops_the_stem, capsys, "changed its input")


@pytest.mark.parametrize("source", [
    """
import torch
def unfold_total_bytes(layers, batch, bytes_per_element=4):
    total = 0
    for c, h, w, k, s in layers:
        columns = torch._C._nn.im2col(torch.zeros(batch, c, h, w), (k, k), (1, 1), ((k - 1) // 2, (k - 1) // 2), (s, s))
        total += columns.numel()
    return total * bytes_per_element
""" + "#im2col",
    """
import numpy as np
def unfold_total_bytes(layers, batch, bytes_per_element=4):
    total = 0
    for c, h, w, k, s in layers:
        p = (k - 1) // 2
        windows = np.lib.stride_tricks.sliding_window_view(np.zeros((batch, c, h + 2 * p, w + 2 * p)), (k, k),
                                                           axis=(2, 3))[:, :, ::s, ::s]
        total += windows.size
    return total * bytes_per_element
""" + "#sliding_window_view",
])
def test_total_refuses_im2col_and_window_views(source, capsys):
    source, needle = source.rsplit("#", 1)  # each route's source, then what the verdict must name
    assert_rejects(check_unfold_total_bytes, exec_route(source, "unfold_total_bytes"), capsys, "yourself", needle)
