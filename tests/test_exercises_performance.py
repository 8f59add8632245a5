"""The checkers and questions of notebook 08 accept correct solutions and natural alternatives, reject
plausible wrong ones naming the mistake, refuse the shortcuts (directly and by run-time routes: exec of
a string, a name built at run time, a helper module), fail a memorised table on their random cases,
give a time-limit verdict for an endless loop, name a side effect, and never raise."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from checker_harness import (
    assert_accepts,
    assert_names_side_effect,
    assert_never_raises,
    assert_rejects,
    assert_times_out,
    exec_route,
    module_route,
)
from involution_edu.exercises.performance import (
    OFFSETS_MEMORY_LIMIT,
    QUESTIONS,
    check_group_channels_for_intensity,
    check_involution_backward,
    check_involution_offsets,
    intensity_of_group_channels,
    involution_backward_reference,
)

# --- reference solutions, written independently of the library -------------------------------


def group_channels_for_intensity(kernel_size, target, dtype_bytes):
    k2 = kernel_size * kernel_size
    target = Fraction(target).limit_denominator(10**6)
    slope = 2 * k2 - 2 * target * dtype_bytes
    if slope <= 0:
        return None
    return max(1, math.ceil(target * dtype_bytes * k2 / slope))


def brute_force_group_channels(kernel_size, target, dtype_bytes):
    """Walk C/G = 1, 2, ... with the intensity spelled out from FLOPs and bytes."""
    for n in range(1, 100_000):
        flops = 2 * n * kernel_size**2
        bytes_moved = (n + kernel_size**2 + n) * dtype_bytes
        if Fraction(flops, bytes_moved) >= Fraction(target).limit_denominator(10**6):
            return n
    return None


def involution_offsets_padded(x, kernels, stride, padding, dilation):
    """The offset loop over a padded copy of x (F.pad): right values, but the exercise forbids the copy."""
    b, c, _, _ = x.shape
    g, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    xp = F.pad(x, (padding,) * 4).view(b, g, c // g, x.shape[2] + 2 * padding, x.shape[3] + 2 * padding)
    out = x.new_zeros(b, g, c // g, out_h, out_w)
    for u in range(k):
        for v in range(k):
            view = xp[..., u * dilation : u * dilation + (out_h - 1) * stride + 1 : stride,
                      v * dilation : v * dilation + (out_w - 1) * stride + 1 : stride]
            out += kernels[:, :, u, v].unsqueeze(2) * view
    return out.reshape(b, c, out_h, out_w)


def _block(offset, size, out_size, stride):
    """Outputs i with 0 <= i*stride + offset < size, and the slice of x they read."""
    first = max(0, -(offset // stride))  # ceil(-offset / stride)
    last = min(out_size, (size - 1 - offset) // stride + 1)
    return first, last, slice(first * stride + offset, (last - 1) * stride + offset + 1, stride)


def involution_offsets(x, kernels, stride, padding, dilation, *, assign=False):
    """The solution: each tap adds into the block of outputs whose pixels lie inside x; no padded copy.
    ``assign=True`` gives the slip of ``=`` for ``+=`` (the last tap overwrites the others)."""
    b, c, h, w = x.shape
    g, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    xg = x.reshape(b, g, c // g, h, w)
    out = x.new_zeros(b, g, c // g, out_h, out_w)
    for u in range(k):
        i0, i1, rows = _block(u * dilation - padding, h, out_h, stride)
        for v in range(k):
            j0, j1, cols = _block(v * dilation - padding, w, out_w, stride)
            if i1 > i0 and j1 > j0:
                product = kernels[:, :, u, v, i0:i1, j0:j1].unsqueeze(2) * xg[..., rows, cols]
                if assign:
                    out[..., i0:i1, j0:j1] = product
                else:
                    out[..., i0:i1, j0:j1] += product
    return out.reshape(b, c, out_h, out_w)


def involution_offsets_per_channel(x, kernels, stride, padding, dilation):
    """A natural alternative: math.ceil for the bounds, the kernel plane repeated to the channels of its group,
    and out = out + ... (not in place): more temporaries, still within the memory limit."""
    b, c, h, w = x.shape
    g, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    out = x.new_zeros(b, c, out_h, out_w)
    for u in range(k):
        for v in range(k):
            row0, col0 = u * dilation - padding, v * dilation - padding
            i0, i1 = max(0, math.ceil(-row0 / stride)), min(out_h, (h - 1 - row0) // stride + 1)
            j0, j1 = max(0, math.ceil(-col0 / stride)), min(out_w, (w - 1 - col0) // stride + 1)
            if i1 <= i0 or j1 <= j0:
                continue
            plane = kernels[:, :, u, v, i0:i1, j0:j1].repeat_interleave(c // g, dim=1)
            window = x[..., i0 * stride + row0 : (i1 - 1) * stride + row0 + 1 : stride,
                       j0 * stride + col0 : (j1 - 1) * stride + col0 + 1 : stride]
            out[..., i0:i1, j0:j1] = out[..., i0:i1, j0:j1] + plane * window
    return out


def involution_backward(x, kernels, grad_out, stride, padding, dilation):
    """Scatter form: the offset loop in reverse."""
    b, c, h, w = x.shape
    g, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    go = grad_out.reshape(b, g, c // g, out_h, out_w)
    shape = (b, g, c // g, h + 2 * padding, w + 2 * padding)
    xp = F.pad(x, (padding,) * 4).reshape(shape)
    gxp = x.new_zeros(shape)
    gk = torch.zeros_like(kernels)
    for u in range(k):
        for v in range(k):
            rows = slice(u * dilation, u * dilation + (out_h - 1) * stride + 1, stride)
            cols = slice(v * dilation, v * dilation + (out_w - 1) * stride + 1, stride)
            gk[:, :, u, v] = (go * xp[..., rows, cols]).sum(dim=2)
            gxp[..., rows, cols] += kernels[:, :, u, v].unsqueeze(2) * go
    gx = gxp.reshape(b, c, h + 2 * padding, w + 2 * padding)[:, :, padding : padding + h, padding : padding + w]
    return gx, gk


def involution_backward_gather(x, kernels, grad_out, stride, padding, dilation, check_divides=True):
    """Gather form by explicit loops (the paper's CUDA input gradient), optionally without the divisibility test."""
    b, c, h, w = x.shape
    g, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    per = c // g
    gx = torch.zeros_like(x)
    for hh in range(h):
        for ww in range(w):
            for u in range(k):
                for v in range(k):
                    ri, rj = hh + padding - u * dilation, ww + padding - v * dilation
                    if check_divides and (ri % stride or rj % stride):
                        continue
                    i, j = ri // stride, rj // stride
                    if 0 <= i < out_h and 0 <= j < out_w:
                        gx[:, :, hh, ww] += kernels[:, :, u, v, i, j].repeat_interleave(per, dim=1) * grad_out[:, :, i, j]
    _, gk = involution_backward(x, kernels, grad_out, stride, padding, dilation)
    return gx, gk


# --- exercise 1: group_channels_for_intensity ----------------------------------------------


def test_intensity_solution_and_brute_force_agree_and_pass(capsys):
    for k, target, dtype_bytes in [(7, 4, 4), (7, 5.5, 4), (3, 1, 4), (5, 1.5, 8), (7, 10, 2), (1, 0.2, 4), (7, 0.01, 4)]:
        assert group_channels_for_intensity(k, target, dtype_bytes) == brute_force_group_channels(k, target, dtype_bytes)
    assert_accepts(check_group_channels_for_intensity, group_channels_for_intensity, capsys)


def test_intensity_formula_matches_roofline():
    from involution_edu.roofline import involution_intensity

    for n in (1, 4, 16, 33):
        assert float(intensity_of_group_channels(7, n)) == pytest.approx(involution_intensity(2, 3 * n, 9, 11, 7, 3))


def _solve(kernel_size, target, dtype_bytes, flops_per_madd=2, outputs=2, rounding=math.ceil):
    k2 = kernel_size * kernel_size
    target = Fraction(target).limit_denominator(10**6)
    slope = flops_per_madd * k2 - outputs * target * dtype_bytes
    if slope <= 0:
        return None
    return max(1, rounding(target * dtype_bytes * k2 / slope))


def test_intensity_rejects_one_flop_per_multiply_add(capsys):
    assert_rejects(check_group_channels_for_intensity, lambda k, t, b: _solve(k, t, b, flops_per_madd=1), capsys,
                   "1 FLOP per multiply-add")


def test_intensity_rejects_forgetting_the_output(capsys):
    assert_rejects(check_group_channels_for_intensity, lambda k, t, b: _solve(k, t, b, outputs=1), capsys,
                   "leave out the output")


def test_intensity_rejects_rounding_down(capsys):
    assert_rejects(check_group_channels_for_intensity, lambda k, t, b: _solve(k, t, b, rounding=math.floor), capsys,
                   "round the bound")


def test_intensity_rejects_ignoring_dtype_bytes(capsys):
    assert_rejects(check_group_channels_for_intensity, lambda k, t, b: _solve(k, t, 4), capsys, "dtype_bytes")


def test_intensity_rejects_a_number_for_an_unreachable_target(capsys):
    def wrong(k, t, b):
        answer = _solve(k, t, b)
        return 10**6 if answer is None else answer

    assert_rejects(check_group_channels_for_intensity, wrong, capsys, "no C/G reaches it", "return None")


def test_intensity_rejects_the_unrounded_bound(capsys):
    def wrong(k, t, b):
        k2 = k * k
        slope = 2 * k2 - 2 * t * b
        return None if slope <= 0 else t * b * k2 / slope  # the bound, not a whole number of channels

    assert_rejects(check_group_channels_for_intensity, wrong, capsys, "round it UP")


def test_intensity_rejects_a_string(capsys):
    assert_rejects(check_group_channels_for_intensity, lambda k, t, b: str(group_channels_for_intensity(k, t, b)),
                   capsys, "✗")


def test_intensity_never_raises():
    assert_never_raises(check_group_channels_for_intensity)


def group_channels_float(kernel_size, target, dtype_bytes):
    """The natural float closed form (issue 15: 0.8 / 0.4 = 2.0000000000000004 must not be a trap)."""
    k2 = kernel_size**2
    slope = 2 * k2 - 2 * target * dtype_bytes
    return None if slope <= 0 else max(1, math.ceil(target * dtype_bytes * k2 / slope))


def group_channels_float_brute_force(kernel_size, target, dtype_bytes):
    """Walk n = 1, 2, ... in floats, stop where the intensity's limit K^2 / b makes the target unreachable."""
    if target >= kernel_size**2 / dtype_bytes:
        return None
    n = 1
    while 2 * n * kernel_size**2 / ((2 * n + kernel_size**2) * dtype_bytes) < target:
        n += 1
    return n


def test_intensity_accepts_the_float_closed_form_and_a_float_brute_force(capsys):
    for seed in range(5):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("INVOLUTION_EDU_CHECK_SEED", str(seed))
            assert_accepts(check_group_channels_for_intensity, group_channels_float, capsys)
            assert_accepts(check_group_channels_for_intensity, group_channels_float_brute_force, capsys)


def test_intensity_random_cases_fail_a_memorised_table(capsys):
    from involution_edu.exercises.performance import _INTENSITY_CASES

    table = {(k, float(t), b): group_channels_for_intensity(k, float(t), b) for _, _, k, t, b in _INTENSITY_CASES}
    out = assert_rejects(check_group_channels_for_intensity, lambda k, t, b: table.get((k, t, b), 1), capsys,
                         "a random case failed", "with inputs")
    assert "replay it with INVOLUTION_EDU_CHECK_SEED" in out


@pytest.mark.parametrize("source", [
    "def f(k, t, b):\n    import involution_edu.exercises.performance as m\n"
    "    return getattr(m, '_smallest_' + 'group_channels')(k, __import__('fractions').Fraction(t), b)",
    "def f(k, t, b):\n    from involution_edu.roofline import involution_intensity as i\n    n = 1\n"
    "    while i(1, n, 8, 8, k, 1, dtype_bytes=b) < t:\n        n += 1\n    return n",
])
def test_intensity_refuses_the_oracles_by_run_time_routes(source, capsys, tmp_path):
    assert_rejects(check_group_channels_for_intensity, exec_route(source, "f"), capsys, "your function call")
    assert_rejects(check_group_channels_for_intensity, module_route(tmp_path, source, "f"), capsys,
                   "your function call")


def test_intensity_refuses_the_exact_oracle_directly(capsys):
    def shortcut(k, t, b):
        n = 1
        while intensity_of_group_channels(k, n, b) < Fraction(t):
            n += 1
        return n

    assert_rejects(check_group_channels_for_intensity, shortcut, capsys, "your function call",
                   "intensity_of_group_channels")


def test_intensity_time_limit(capsys):
    assert_times_out(check_group_channels_for_intensity,
                     exec_route("def f(k, t, b):\n    n = 1\n    while True:\n        n + 1", "f"), capsys)


def test_intensity_names_a_leaked_grad_mode(capsys):
    def leaks(k, t, b):
        torch.set_grad_enabled(False)  # meant as `with torch.no_grad():`
        return group_channels_for_intensity(k, t, b)

    try:
        assert_names_side_effect(check_group_channels_for_intensity, leaks, capsys, "autograd was left switched off")
    finally:
        torch.set_grad_enabled(True)


# --- exercise 2: the offset loop ----------------------------------------------------------------


def test_offsets_accept_the_solution(capsys):
    assert_accepts(check_involution_offsets, involution_offsets, capsys)


def test_offsets_reject_modulo_grouping(capsys):
    def wrong(x, kernels, stride, padding, dilation):
        b, c, h, w = x.shape
        g = kernels.shape[1]
        order = torch.arange(c).view(c // g, g).t().reshape(-1)  # channels c with c % G == g first
        out = involution_offsets(x[:, order], kernels, stride, padding, dilation)
        return out[:, torch.argsort(order)]

    assert_rejects(check_involution_offsets, wrong, capsys, "c % G")


def test_offsets_reject_transposed_taps(capsys):
    assert_rejects(check_involution_offsets,
                   lambda x, k, s, p, d: involution_offsets(x, k.transpose(2, 3), s, p, d), capsys, "swapped u and v")


def test_offsets_reject_ignoring_dilation(capsys):
    def wrong(x, kernels, stride, padding, dilation):
        out = involution_offsets(x, kernels, stride, padding, 1)
        return out[..., : kernels.shape[4], : kernels.shape[5]] if out.shape[2:] != kernels.shape[4:] else out

    assert_rejects(check_involution_offsets, wrong, capsys, "dilation")


def test_offsets_reject_ignoring_the_stride(capsys):
    assert_rejects(check_involution_offsets, lambda x, k, s, p, d: involution_offsets(x, k, 1, p, d), capsys, "✗")


def test_offsets_reject_assigning_instead_of_adding(capsys):
    def wrong(x, kernels, stride, padding, dilation):
        return involution_offsets(x, kernels, stride, padding, dilation, assign=True)

    assert_rejects(check_involution_offsets, wrong, capsys, "wrong values")


def test_offsets_reject_padding_off_by_one(capsys):
    assert_rejects(check_involution_offsets, lambda x, k, s, p, d: involution_offsets(x, k, s, p + 1, d), capsys, "✗")


def test_offsets_reject_returning_the_input(capsys):
    assert_rejects(check_involution_offsets, lambda x, k, s, p, d: x, capsys, "✗")


def test_offsets_refuse_f_unfold_directly(capsys):
    def shortcut(x, kernels, stride, padding, dilation):
        b, c = x.shape[:2]
        g, k, oh, ow = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
        win = F.unfold(x, k, dilation=dilation, padding=padding, stride=stride).view(b, g, c // g, k * k, oh, ow)
        return (kernels.reshape(b, g, 1, k * k, oh, ow) * win).sum(3).reshape(b, c, oh, ow)

    assert_rejects(check_involution_offsets, shortcut, capsys, "your function call", "unfold")


def test_offsets_refuse_an_alias_import(capsys):
    from involution_edu import involution as fast

    assert_rejects(check_involution_offsets, lambda x, k, s, p, d: fast(x, k, s, p, d), capsys, "your function call")


def test_offsets_refuse_an_attribute_path(capsys):
    import involution_edu

    assert_rejects(check_involution_offsets, lambda x, k, s, p, d: involution_edu.functional.involution_unfold(x, k, s, p, d),
                   capsys, "your function call", "involution_unfold")


def test_offsets_refuse_a_shortcut_inside_a_helper(capsys):
    from involution_edu.reference import involution_loops

    def helper(x, k, s, p, d):
        return torch.from_numpy(involution_loops(x.numpy(), k.numpy(), s, p, d))

    assert_rejects(check_involution_offsets, lambda x, k, s, p, d: helper(x, k, s, p, d), capsys,
                   "your function call", "involution_loops")


def test_offsets_refuse_tensor_unfold_and_as_strided(capsys):
    def with_tensor_unfold(x, kernels, stride, padding, dilation):
        return x.unfold(2, 3, 1)

    def with_as_strided(x, kernels, stride, padding, dilation):
        return x.as_strided((1,), (1,))

    assert_rejects(check_involution_offsets, with_tensor_unfold, capsys, "your function call", "unfold")
    assert_rejects(check_involution_offsets, with_as_strided, capsys, "your function call", "as_strided")


def test_offsets_never_raise():
    assert_never_raises(check_involution_offsets)


def test_offsets_accept_a_natural_alternative(capsys):
    assert_accepts(check_involution_offsets, involution_offsets_per_channel, capsys)


def test_offsets_refuse_the_padding_function(capsys):
    assert_rejects(check_involution_offsets, involution_offsets_padded, capsys, "your function call",
                   "with no padded copy of x", "pad")


def padded_by_hand(x, kernels, stride, padding, dilation):
    """A padded copy built without a padding function: the memory measurement catches it."""
    b, c, h, w = x.shape
    xp = x.new_zeros(b, c, h + 2 * padding, w + 2 * padding)
    xp[..., padding : padding + h, padding : padding + w] = x
    g, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    xp = xp.view(b, g, c // g, h + 2 * padding, w + 2 * padding)
    out = x.new_zeros(b, g, c // g, out_h, out_w)
    for u in range(k):
        for v in range(k):
            out += kernels[:, :, u, v].unsqueeze(2) * xp[..., u * dilation : u * dilation + (out_h - 1) * stride + 1 : stride,
                                                         v * dilation : v * dilation + (out_w - 1) * stride + 1 : stride]
    return out.reshape(b, c, out_h, out_w)


def kernels_for_every_channel(x, kernels, stride, padding, dilation):
    """The kernels expanded to all C channels at once (K*K x the output), then the no-padding loop."""
    b, c = x.shape[:2]
    g, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    every = kernels.repeat_interleave(c // g, dim=1).reshape(b, c, 1, k, k, out_h, out_w).transpose(1, 2)
    return involution_offsets(x, every.reshape(b, c, k, k, out_h, out_w), stride, padding, dilation)


def test_offsets_measure_the_memory_of_a_padded_copy(capsys):
    out = assert_rejects(check_involution_offsets, padded_by_hand, capsys, "the values are right",
                         "padded copy of x alone", f"the limit is {OFFSETS_MEMORY_LIMIT:g}")
    assert "✓" not in out
    assert_rejects(check_involution_offsets, kernels_for_every_channel, capsys, "the values are right",
                   "kernels expanded to every channel")


@pytest.mark.parametrize("source, needle", [
    ("def f(x, k, s, p, d):\n    import torch.nn.functional as F\n    b, c = x.shape[:2]\n"
     "    g, K, oh, ow = k.shape[1], k.shape[2], k.shape[4], k.shape[5]\n"
     "    win = getattr(F, 'un' + 'fold')(x, K, dilation=d, padding=p, stride=s).view(b, g, c // g, K * K, oh, ow)\n"
     "    return (k.reshape(b, g, 1, K * K, oh, ow) * win).sum(3).reshape(b, c, oh, ow)", "unfold"),
    ("def f(x, k, s, p, d):\n    import importlib\n    m = importlib.import_module('involution_edu.' + 'functional')\n"
     "    return m.involution_unfold(x, k, s, p, d)", "involution"),
    ("def f(x, k, s, p, d):\n    import torch\n    torch.ops.aten.constant_pad_nd(x, [p] * 4)\n"
     "    import involution_edu\n    return involution_edu.involution(x, k, s, p, d)", "pad"),
])
def test_offsets_refuse_run_time_routes(source, needle, capsys, tmp_path):
    assert_rejects(check_involution_offsets, exec_route(source, "f"), capsys, "your function call", needle)
    assert_rejects(check_involution_offsets, module_route(tmp_path, source, "f"), capsys, "your function call", needle)


def test_offsets_refuse_a_detour_through_numpy(capsys):
    def in_numpy(x, kernels, stride, padding, dilation):
        import numpy as np

        xp = np.zeros((x.shape[0], x.shape[1], x.shape[2] + 2 * padding, x.shape[3] + 2 * padding))
        xp[..., padding : padding + x.shape[2], padding : padding + x.shape[3]] = x.numpy()
        return involution_offsets(x, kernels, stride, padding, dilation)

    assert_rejects(check_involution_offsets, in_numpy, capsys, "your function call", "numpy")


def test_offsets_time_limit(capsys):
    assert_times_out(check_involution_offsets, exec_route("def f(*a):\n    k = 0\n    while k < 10:\n        k + 2", "f"),
                     capsys)


def test_offsets_name_a_side_effect(capsys):
    def zeroes_the_corner(x, kernels, stride, padding, dilation):
        out = involution_offsets(x, kernels, stride, padding, dilation)
        x[..., 0, 0] = 0.0  # "cleans up" the caller's tensor
        return out

    assert_names_side_effect(check_involution_offsets, zeroes_the_corner, capsys, "x")


# --- exercise 3: the backward pass ----------------------------------------------------------


def test_backward_reference_matches_the_library_and_gradcheck():
    from involution_edu import involution

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 7, 6, dtype=torch.float64, generator=gen)
    k = torch.randn(1, 2, 3, 3, 3, 2, dtype=torch.float64, generator=gen)
    g = torch.randn(1, 4, 3, 2, dtype=torch.float64, generator=gen)
    gx, gk = involution_backward_reference(x, k, g, 2, 1, 2)
    ours = involution_backward(x, k, g, 2, 1, 2)
    torch.testing.assert_close(ours[0], gx)
    torch.testing.assert_close(ours[1], gk)
    gather = involution_backward_gather(x, k, g, 2, 1, 2)
    torch.testing.assert_close(gather[0], gx)
    xr, kr = x.clone().requires_grad_(), k.clone().requires_grad_()
    torch.autograd.grad(involution(xr, kr, 2, 1, 2, backend="eager"), (xr, kr), g)
    assert torch.autograd.gradcheck(lambda a, b: involution(a, b, 2, 1, 2, backend="eager"), (xr, kr))


def test_backward_accepts_scatter_and_gather_solutions(capsys):
    assert_accepts(check_involution_backward, involution_backward, capsys)
    assert_accepts(check_involution_backward, involution_backward_gather, capsys)


def test_backward_rejects_summing_over_all_channels(capsys):
    def wrong(*args):
        gx, gk = involution_backward(*args)
        return gx, gk.sum(dim=1, keepdim=True).expand_as(gk).clone()

    assert_rejects(check_involution_backward, wrong, capsys, "C/G channels of group g only")


def test_backward_rejects_modulo_grouping(capsys):
    def wrong(x, kernels, grad_out, stride, padding, dilation):
        c, g = x.shape[1], kernels.shape[1]
        order = torch.arange(c).view(c // g, g).t().reshape(-1)
        gx, gk = involution_backward(x[:, order], kernels, grad_out[:, order], stride, padding, dilation)
        return gx[:, torch.argsort(order)], gk

    assert_rejects(check_involution_backward, wrong, capsys, "not the channels c with c % G == g")


def test_backward_rejects_a_flipped_kernel(capsys):
    def wrong(x, kernels, grad_out, stride, padding, dilation):
        _, gk = involution_backward(x, kernels, grad_out, stride, padding, dilation)
        gx, _ = involution_backward(x, kernels.flip(2, 3), grad_out, stride, padding, dilation)
        return gx, gk

    assert_rejects(check_involution_backward, wrong, capsys, "flipped the kernel")


def test_backward_rejects_a_gather_without_the_divisibility_test(capsys):
    assert_rejects(check_involution_backward,
                   lambda *a: involution_backward_gather(*a, check_divides=False), capsys, "multiple of the stride")


def test_backward_rejects_view_on_a_strided_grad_out(capsys):
    def wrong(x, kernels, grad_out, *rest):
        grad_out.view(-1)  # fails on the strided case, as a `view` inside a real solution would
        return involution_backward(x, kernels, grad_out, *rest)

    assert_rejects(check_involution_backward, wrong, capsys, "a strided grad_out", "is_contiguous")


def test_backward_rejects_forgetting_to_crop_the_padding(capsys):
    def wrong(x, kernels, grad_out, stride, padding, dilation):
        gx, gk = involution_backward(x, kernels, grad_out, stride, padding, dilation)
        return F.pad(gx, (padding,) * 4), gk

    assert_rejects(check_involution_backward, wrong, capsys, "✗")


def test_backward_rejects_swapped_results_and_zero_gradients(capsys):
    assert_rejects(check_involution_backward, lambda *a: involution_backward(*a)[::-1], capsys, "✗")
    assert_rejects(check_involution_backward, lambda x, k, *r: (torch.zeros_like(x), torch.zeros_like(k)), capsys, "✗")


def test_backward_rejects_assigning_instead_of_adding(capsys):
    def wrong(x, kernels, grad_out, stride, padding, dilation):
        b, c, h, w = x.shape
        g, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
        go = grad_out.reshape(b, g, c // g, out_h, out_w)
        gxp = x.new_zeros(b, g, c // g, h + 2 * padding, w + 2 * padding)
        for u in range(k):
            for v in range(k):
                rows = slice(u * dilation, u * dilation + (out_h - 1) * stride + 1, stride)
                cols = slice(v * dilation, v * dilation + (out_w - 1) * stride + 1, stride)
                gxp[..., rows, cols] = kernels[:, :, u, v].unsqueeze(2) * go  # overwrites the other taps
        gx = gxp.reshape(b, c, h + 2 * padding, w + 2 * padding)[:, :, padding : padding + h, padding : padding + w]
        return gx, involution_backward(x, kernels, grad_out, stride, padding, dilation)[1]

    assert_rejects(check_involution_backward, wrong, capsys, "wrong values")


def test_backward_refuses_dot_backward(capsys):
    def shortcut(x, kernels, grad_out, stride, padding, dilation):
        x, kernels = x.clone().requires_grad_(), kernels.clone().requires_grad_()
        involution_offsets(x, kernels, stride, padding, dilation).backward(grad_out)
        return x.grad, kernels.grad

    assert_rejects(check_involution_backward, shortcut, capsys, "your function call", ".backward")


def test_backward_refuses_an_alias_of_autograd_grad(capsys):
    from torch.autograd import grad as derivative

    def shortcut(x, kernels, grad_out, stride, padding, dilation):
        x, kernels = x.clone().requires_grad_(), kernels.clone().requires_grad_()
        return derivative(involution_offsets(x, kernels, stride, padding, dilation), (x, kernels), grad_out)

    assert_rejects(check_involution_backward, shortcut, capsys, "your function call")


def test_backward_refuses_an_attribute_path_to_torch_func(capsys):
    def shortcut(x, kernels, grad_out, stride, padding, dilation):
        _, vjp = torch.func.vjp(lambda a, b: involution_offsets(a, b, stride, padding, dilation), x, kernels)
        return vjp(grad_out)

    assert_rejects(check_involution_backward, shortcut, capsys, "your function call", "vjp")


def test_backward_refuses_the_library_inside_a_helper_and_fold(capsys):
    from involution_edu.functional import involution_unfold

    def helper(x, kernels, stride, padding, dilation):
        return involution_unfold(x, kernels, stride, padding, dilation)

    def shortcut(x, kernels, grad_out, stride, padding, dilation):
        helper(x, kernels, stride, padding, dilation)
        return involution_backward(x, kernels, grad_out, stride, padding, dilation)

    def with_fold(x, kernels, grad_out, stride, padding, dilation):
        F.fold(grad_out, (1, 1), 1)
        return involution_backward(x, kernels, grad_out, stride, padding, dilation)

    assert_rejects(check_involution_backward, shortcut, capsys, "your function call", "involution_unfold")
    assert_rejects(check_involution_backward, with_fold, capsys, "your function call", "fold")


def test_backward_never_raises():
    assert_never_raises(check_involution_backward)
    assert_never_raises(check_involution_backward, make_candidate=lambda value: (lambda *a: (value, value)))


@pytest.mark.parametrize("source, needle", [
    ("def f(x, k, g, s, p, d):\n    import torch, involution_edu.exercises.performance as m\n"
     "    return getattr(m, 'involution_backward_' + 'reference')(x, k, g, s, p, d)", "involution_backward_reference"),
    ("def f(x, k, g, s, p, d):\n    import torch\n    from involution_edu import involution\n"
     "    x, k = x.clone().requires_grad_(), k.clone().requires_grad_()\n"
     "    grad = getattr(torch.autograd, 'gr' + 'ad')\n"
     "    return grad(involution(x, k, s, p, d, backend='eager'), (x, k), g)", "involution"),
    ("def f(x, k, g, s, p, d):\n    import torch\n    x, k = x.clone().requires_grad_(), k.clone().requires_grad_()\n"
     "    y = (x.sum() * k.sum())\n    getattr(y, 'back' + 'ward')()\n    return x.grad, k.grad", "backward"),
])
def test_backward_refuses_run_time_routes(source, needle, capsys, tmp_path):
    assert_rejects(check_involution_backward, exec_route(source, "f"), capsys, "your function call", needle)
    assert_rejects(check_involution_backward, module_route(tmp_path, source, "f"), capsys, "your function call",
                   needle)


def test_backward_refuses_the_oracle_directly(capsys):
    assert_rejects(check_involution_backward, involution_backward_reference, capsys, "yourself",
                   "involution_backward_reference")
    from involution_edu.functional import involution_unfold

    assert_rejects(check_involution_offsets, involution_unfold, capsys, "yourself", "involution_unfold")


def test_backward_random_cases_fail_a_memorised_table(capsys):
    from involution_edu.exercises.performance import _BACKWARD_CASES, _backward_case

    table = {}
    for seed, (name, why, *rest) in enumerate(_BACKWARD_CASES):
        case = _backward_case(name, why, seed, *rest)
        table[tuple(case.args[0].shape) + tuple(case.args[3:])] = case.expected

    def memorised(x, kernels, grad_out, stride, padding, dilation):
        answer = table.get(tuple(x.shape) + (stride, padding, dilation))
        if answer is None:
            return torch.zeros_like(x), torch.zeros_like(kernels)
        return torch.from_numpy(answer[0]), torch.from_numpy(answer[1])

    assert_rejects(check_involution_backward, memorised, capsys, "a random case failed")


def test_backward_time_limit(capsys):
    assert_times_out(check_involution_backward, exec_route("def f(*a):\n    while True:\n        pass", "f"), capsys)


def test_backward_names_a_side_effect(capsys):
    def reuses_grad_out(x, kernels, grad_out, stride, padding, dilation):
        gx, gk = involution_backward(x, kernels, grad_out, stride, padding, dilation)
        grad_out.zero_()  # "frees" the caller's gradient
        return gx, gk

    assert_names_side_effect(check_involution_backward, reuses_grad_out, capsys, "grad_out")


# --- questions ------------------------------------------------------------------------------


def test_gather_taps_answer_is_counted_not_asserted():
    """The numeric answer of 'gather_taps' is what the gather loops actually do."""
    k, s, p, d = 3, 2, 1, 1
    h = w = 7  # odd, interior of a large input
    taps = [(u, v) for u in range(k) for v in range(k)
            if (h + p - u * d) % s == 0 and (w + p - v * d) % s == 0]
    assert len(taps) == QUESTIONS["gather_taps"].answer
