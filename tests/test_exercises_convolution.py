"""The checkers and questions of notebook 01 accept correct answers and reject plausible wrong ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from checker_harness import assert_accepts, assert_never_raises, assert_rejects

import involution_edu.shapes
from involution_edu import Involution
from involution_edu.exercises.convolution import (
    QUESTIONS,
    check_conv2d_loops,
    check_depthwise_as_involution,
    check_widest_kernel,
    involution_param_count_reference,
)
from involution_edu.reference import involution_loops
from involution_edu.shapes import output_size as library_output_size
from torch.nn.functional import conv2d as aliased_conv2d


# --------------------------------------------------------------------------------- conv2d_loops
def make_conv(flip=False, transpose=False, swap_channels=False, own_channel_only=False, ignore_padding=False,
              ignore_stride=False, ceil=False, pad_one_side=False):
    def conv2d_loops(x, weight, stride=1, padding=0):
        w = weight[:, :, ::-1, ::-1] if flip else weight
        w = w.transpose(0, 1, 3, 2) if transpose else w
        w = w.transpose(1, 0, 2, 3) if swap_channels and w.shape[0] == w.shape[1] else w
        s = 1 if ignore_stride else stride
        p = 0 if ignore_padding else padding
        pads = ((0, 0), (0, 0), (p, 0), (p, 0)) if pad_one_side else ((0, 0), (0, 0), (p, p), (p, p))
        xp = np.pad(x, pads)
        k = w.shape[2]
        height, width = xp.shape[2], xp.shape[3]
        out_h = -(-(height - k) // s) + 1 if ceil else (height - k) // s + 1
        out_w = -(-(width - k) // s) + 1 if ceil else (width - k) // s + 1
        out = np.zeros((x.shape[0], w.shape[0], out_h, out_w))
        for b in range(x.shape[0]):
            for o in range(w.shape[0]):
                for i in range(out_h):
                    for j in range(out_w):
                        window = xp[b, :, i * s : i * s + k, j * s : j * s + k]
                        if own_channel_only:
                            c = o % x.shape[1]
                            out[b, o, i, j] = np.sum(w[o, c] * window[c]) if window.shape[1:] == (k, k) else np.nan
                        elif window.shape[1:] == (k, k):
                            out[b, o, i, j] = np.sum(w[o] * window)
        return out

    return conv2d_loops


def test_conv2d_loops_accepts_solution(capsys):
    assert_accepts(check_conv2d_loops, make_conv(), capsys)


@pytest.mark.parametrize("switch, needles", [
    ("flip", ["flipped the kernel"]),
    ("transpose", ["transposed"]),
    ("swap_channels", ["weight[c, o]"]),
    ("own_channel_only", ["ALL input channels"]),
    ("ignore_padding", ["wrong shape", "padding"]),
    ("ignore_stride", ["wrong shape", "stride"]),
    ("ceil", ["wrong shape", "floor"]),
    ("pad_one_side", ["wrong shape", "padding"]),
])
def test_conv2d_loops_rejects_mistakes(switch, needles, capsys):
    assert_rejects(check_conv2d_loops, make_conv(**{switch: True}), capsys, *needles)


def _helper_conv(x, weight, stride, padding):
    return F.conv2d(torch.from_numpy(x), torch.from_numpy(weight.copy()), stride=stride, padding=padding).numpy()


@pytest.mark.parametrize("shortcut", [
    lambda x, w, stride=1, padding=0: F.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride,
                                               padding=padding).numpy(),
    lambda x, w, stride=1, padding=0: aliased_conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride,
                                                     padding=padding).numpy(),
    lambda x, w, stride=1, padding=0: torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                                                 stride=stride, padding=padding).numpy(),
    lambda x, w, stride=1, padding=0: _helper_conv(x, w, stride, padding),
    lambda x, w, stride=1, padding=0: torch.nn.Conv2d(1, 1, 1),
    lambda x, w, stride=1, padding=0: F.unfold(torch.from_numpy(x), w.shape[-1]),
], ids=["direct", "alias", "attribute path", "helper", "nn.Conv2d", "unfold"])
def test_conv2d_loops_guard(shortcut, capsys):
    assert_rejects(check_conv2d_loops, shortcut, capsys, "write the convolution as loops yourself")


def test_conv2d_loops_never_raises():
    assert_never_raises(check_conv2d_loops)


def test_conv2d_loops_not_attempted(capsys):
    def stub(x, weight, stride=1, padding=0):
        raise NotImplementedError

    assert_rejects(check_conv2d_loops, stub, capsys, "not attempted")


# -------------------------------------------------------------------------------- widest_kernel
def make_widest(bias=True, bn=True, groups_is_group_channels=False, step=2, strict=False, overshoot=False,
                floor_one=False):
    def widest_kernel(channels, budget, reduction_ratio, group_channels):
        hidden = channels // reduction_ratio
        groups = group_channels if groups_is_group_channels else channels // group_channels

        def count(k):
            return channels * hidden + (2 * hidden if bn else 0) + hidden * k * k * groups + (k * k * groups if bias else 0)

        def fits(k):
            return count(k) < budget if strict else count(k) <= budget

        best, k = 0, 1
        while fits(k):
            best, k = k, k + step
        if overshoot:
            return k
        if floor_one:
            return max(best, 1)
        return best

    return widest_kernel


def test_widest_kernel_accepts_solution(capsys):
    assert_accepts(check_widest_kernel, make_widest(), capsys)


@pytest.mark.parametrize("switches, needles", [
    (dict(bias=False), ["bias of W1"]),
    (dict(bn=False), ["BatchNorm"]),
    (dict(groups_is_group_channels=True), ["group_channels as the number of groups"]),
    (dict(step=1), ["must be odd"]),
    (dict(strict=True), ["still allows K = 7"]),
    (dict(overshoot=True), ["expected 21, got 23"]),
    (dict(floor_one=True), ["not even K = 1"]),
])
def test_widest_kernel_rejects_mistakes(switches, needles, capsys):
    assert_rejects(check_widest_kernel, make_widest(**switches), capsys, *needles)


def _count_with_module(channels, k, r, gc):
    return sum(p.numel() for p in Involution(channels, k, 1, r, gc).parameters())


@pytest.mark.parametrize("shortcut", [
    lambda c, budget, r, gc: max(k for k in range(1, 31, 2) if sum(p.numel() for p in Involution(c, k, 1, r, gc).parameters()) <= budget),
    lambda c, budget, r, gc: max(k for k in range(1, 31, 2) if involution_param_count_reference(c, k, r, gc) <= budget),
    lambda c, budget, r, gc: max(k for k in range(1, 31, 2) if _count_with_module(c, k, r, gc) <= budget),
    lambda c, budget, r, gc: involution_edu.module.Involution(c, 3),
], ids=["direct", "reference", "helper", "attribute path"])
def test_widest_kernel_guard(shortcut, capsys):
    assert_rejects(check_widest_kernel, shortcut, capsys, "write the parameter count yourself")


def test_widest_kernel_never_raises():
    assert_never_raises(check_widest_kernel)


def test_param_count_reference_matches_module():
    for channels, k, r, gc in [(64, 7, 4, 16), (48, 5, 2, 8), (36, 3, 8, 4), (8, 3, 4, 1)]:
        hidden, groups = channels // r, channels // gc
        formula = channels * hidden + 2 * hidden + hidden * k * k * groups + k * k * groups
        assert involution_param_count_reference(channels, k, r, gc) == formula


def test_a_3x3_budget_buys_a_wide_window():
    """The claim of notebook 01: a 3x3 conv's budget pays for a 21..23 involution window."""
    for channels in (64, 256):
        budget = 9 * channels * channels + channels
        k = make_widest()(channels, budget, 4, 16)
        assert k >= 21 and involution_param_count_reference(channels, k) <= budget
        assert involution_param_count_reference(channels, k + 2) > budget


# ---------------------------------------------------------------------- depthwise_as_involution
def make_depthwise(out="output", batch_one=False, transpose=False):
    def depthwise_as_involution(weight, batch, height, width, stride, padding):
        channels, _, k, _ = weight.shape
        if out == "output":
            out_h, out_w = (height + 2 * padding - k) // stride + 1, (width + 2 * padding - k) // stride + 1
        elif out == "input":
            out_h, out_w = height, width
        elif out == "no stride":
            out_h, out_w = height + 2 * padding - k + 1, width + 2 * padding - k + 1
        elif out == "ceil":
            out_h, out_w = -(-(height + 2 * padding - k) // stride) + 1, -(-(width + 2 * padding - k) // stride) + 1
        else:  # "no padding"
            out_h, out_w = (height - k) // stride + 1, (width - k) // stride + 1
        kernels = weight[:, 0].transpose(0, 2, 1) if transpose else weight[:, 0]
        return np.broadcast_to(kernels[None, :, :, :, None, None],
                               (1 if batch_one else batch, channels, k, k, out_h, out_w))

    return depthwise_as_involution


def test_depthwise_accepts_solution(capsys):
    assert_accepts(check_depthwise_as_involution, make_depthwise(), capsys)


def test_depthwise_solution_reproduces_the_depthwise_conv():
    """The premise of the exercise: these kernels make involution equal F.conv2d(groups=C)."""
    rng = np.random.default_rng(0)
    for batch, channels, height, width, k, stride, padding in [(2, 3, 7, 5, 3, 2, 1), (1, 2, 6, 6, 5, 1, 2)]:
        x = rng.standard_normal((batch, channels, height, width))
        weight = rng.standard_normal((channels, 1, k, k))
        kernels = make_depthwise()(weight, batch, height, width, stride, padding)
        expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), stride=stride, padding=padding,
                            groups=channels).numpy()
        np.testing.assert_allclose(involution_loops(x, kernels, stride, padding), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("switches, needles", [
    (dict(out="input"), ["OUTPUT size"]),
    (dict(out="no stride"), ["left out the stride"]),
    (dict(out="ceil"), ["round down"]),
    (dict(out="no padding"), ["left out the padding"]),
    (dict(batch_one=True), ["batch axis"]),
    (dict(transpose=True), ["transposed"]),
])
def test_depthwise_rejects_mistakes(switches, needles, capsys):
    assert_rejects(check_depthwise_as_involution, make_depthwise(**switches), capsys, *needles)


def test_depthwise_rejects_the_weight_itself(capsys):
    assert_rejects(check_depthwise_as_involution, lambda w, b, h, wd, s, p: w, capsys, "shape")


def _helper_size(height, k, stride, padding):
    return library_output_size(height, k, stride, padding)


def _shortcut_kernels(size_fn):
    def depthwise_as_involution(weight, batch, height, width, stride, padding):
        k = weight.shape[-1]
        shape = (batch, weight.shape[0], k, k, size_fn(height, k, stride, padding), size_fn(width, k, stride, padding))
        return np.broadcast_to(weight[:, 0][None, :, :, :, None, None], shape)

    return depthwise_as_involution


@pytest.mark.parametrize("shortcut", [
    _shortcut_kernels(lambda h, k, s, p: library_output_size(h, k, s, p)),
    _shortcut_kernels(lambda h, k, s, p: involution_edu.shapes.output_size(h, k, s, p)),
    _shortcut_kernels(lambda h, k, s, p: _helper_size(h, k, s, p)),
], ids=["alias", "attribute path", "helper"])
def test_depthwise_guard(shortcut, capsys):
    assert_rejects(check_depthwise_as_involution, shortcut, capsys, "write the output size and the kernels yourself")


def test_depthwise_never_raises():
    assert_never_raises(check_depthwise_as_involution)


# ------------------------------------------------------------------------------------ questions


def test_channel_mixing_claim():
    """Question 'channel_mixing': one changed input channel changes every output channel at that pixel."""
    torch.manual_seed(0)
    layer = Involution(16, 3, group_channels=8).double().eval()
    x = torch.randn(1, 16, 6, 6, dtype=torch.float64)
    changed = x.clone()
    changed[0, 0, 3, 2] += 1.0
    with torch.no_grad():
        delta = (layer(changed) - layer(x))[0, :, 3, 2].abs()
    assert int((delta > 1e-12).sum()) == QUESTIONS["channel_mixing"].answer
