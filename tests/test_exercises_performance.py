"""The checkers and questions of notebook 08 accept correct solutions, reject plausible wrong ones
naming the mistake, refuse the shortcuts, and never raise."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from checker_harness import assert_accepts, assert_never_raises, assert_rejects
from involution_edu.exercises.performance import (
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


def involution_offsets(x, kernels, stride, padding, dilation, group_of=None):
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

    assert_rejects(check_group_channels_for_intensity, wrong, capsys, "unreachable", "None")


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
        b, c, _, _ = x.shape
        g, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
        xp = F.pad(x, (padding,) * 4).view(b, g, c // g, x.shape[2] + 2 * padding, x.shape[3] + 2 * padding)
        out = x.new_zeros(b, g, c // g, out_h, out_w)
        for u in range(k):
            for v in range(k):
                out = kernels[:, :, u, v].unsqueeze(2) * xp[..., u * dilation : u * dilation + (out_h - 1) * stride + 1 : stride,
                                                            v * dilation : v * dilation + (out_w - 1) * stride + 1 : stride]
        return out.reshape(b, c, out_h, out_w)

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


# --- questions ------------------------------------------------------------------------------


def test_gather_taps_answer_is_counted_not_asserted():
    """The numeric answer of 'gather_taps' is what the gather loops actually do."""
    k, s, p, d = 3, 2, 1, 1
    h = w = 7  # odd, interior of a large input
    taps = [(u, v) for u in range(k) for v in range(k)
            if (h + p - u * d) % s == 0 and (w + p - v * d) % s == 0]
    assert len(taps) == QUESTIONS["gather_taps"].answer
