"""The checkers and questions of notebook 01 accept correct answers and reject plausible wrong ones.

For every checker: the solution and natural alternatives pass (reusing the notebook's own
``correlate2d`` included); likely mistakes are named; the obvious shortcut and routes to it
built at run time (``exec`` of a string, a name built from pieces, a helper module) are refused;
odd return values get a verdict; a table of memorised answers fails the hidden random cases.
"""

from __future__ import annotations


import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
import checker_harness
from checker_harness import assert_accepts, assert_never_raises, assert_rejects, module_route

import involution_edu.shapes
from involution_edu import Involution
from involution_edu.exercises import convolution
from involution_edu.exercises.convolution import (
    QUESTIONS,
    check_conv2d_loops,
    check_depthwise_as_involution,
    check_widest_kernel,
)
from involution_edu.reference import involution_loops
from involution_edu.shapes import output_size as library_output_size
from torch.nn.functional import conv2d as aliased_conv2d

REFUSED = "yourself"  # every refusal says "this exercise asks you to write ... yourself"


def exec_route(source: str, name: str, extra_globals=None):
    """The harness's route, with this file's imports in the namespace."""
    return checker_harness.exec_route(source, name, {**{"np": np, "F": F, "scipy": scipy}, **(extra_globals or {})})


# --------------------------------------------------------------------------------- conv2d_loops
def make_conv(flip=False, transpose=False, swap_channels=False, own_channel_only=False, ignore_padding=False,
              ignore_stride=False, ceil=False, pad_one_side=False, odd_only=False):
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
        span = 2 * (k // 2) + 1 if odd_only else k  # written for odd K only: the window "centre +- K//2"
        out_h = -(-(height - span) // s) + 1 if ceil else (height - span) // s + 1
        out_w = -(-(width - span) // s) + 1 if ceil else (width - span) // s + 1
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


def correlate2d(image, kernel):
    """Notebook 01's own single-channel cross-correlation (section 2)."""
    height, width = image.shape
    k = kernel.shape[0]
    out = np.zeros((height - k + 1, width - k + 1))
    for i in range(height - k + 1):
        for j in range(width - k + 1):
            total = 0.0
            for u in range(k):
                for v in range(k):
                    total += kernel[u, v] * image[i + u, j + v]
            out[i, j] = total
    return out


def conv_reusing_correlate2d(x, weight, stride=1, padding=0):
    """A natural answer: pad, correlate every (output, input) channel pair with the notebook's helper, subsample."""
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    full = np.zeros((x.shape[0], weight.shape[0]) + correlate2d(xp[0, 0], weight[0, 0]).shape)
    for b in range(x.shape[0]):
        for o in range(weight.shape[0]):
            for c in range(x.shape[1]):
                full[b, o] += correlate2d(xp[b, c], weight[o, c])
    return full[:, :, ::stride, ::stride]


def conv_einsum(x, weight, stride=1, padding=0):
    """Another natural answer: a loop over the K x K taps, an einsum over the channels."""
    k = weight.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_h, out_w = (xp.shape[2] - k) // stride + 1, (xp.shape[3] - k) // stride + 1
    out = np.zeros((x.shape[0], weight.shape[0], out_h, out_w))
    for u in range(k):
        for v in range(k):
            taps = xp[:, :, u : u + stride * (out_h - 1) + 1 : stride, v : v + stride * (out_w - 1) + 1 : stride]
            out += np.einsum("oc,bcij->boij", weight[:, :, u, v], taps)
    return out


@pytest.mark.parametrize("candidate", [make_conv(), conv_reusing_correlate2d, conv_einsum],
                         ids=["solution", "reuses the notebook's correlate2d", "einsum over taps"])
def test_conv2d_loops_accepts(candidate, capsys):
    assert_accepts(check_conv2d_loops, candidate, capsys)


def test_conv2d_loops_accepts_a_helper_named_like_a_library_function(capsys):
    """A learner helper called ``correlate`` is the learner's, not SciPy's: its name is not refused."""
    def correlate(image, kernel):
        return correlate2d(image, kernel)

    def conv2d_loops(x, weight, stride=1, padding=0):
        xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        full = sum(correlate(xp[0, c], weight[0, c]) for c in range(x.shape[1]))
        out = np.zeros((x.shape[0], weight.shape[0]) + full.shape)
        for b in range(x.shape[0]):
            for o in range(weight.shape[0]):
                out[b, o] = sum(correlate(xp[b, c], weight[o, c]) for c in range(x.shape[1]))
        return out[:, :, ::stride, ::stride]

    assert_accepts(check_conv2d_loops, conv2d_loops, capsys)


@pytest.mark.parametrize("switch, needles", [
    ("flip", ["flipped the kernel"]),
    ("transpose", ["transposed"]),
    ("swap_channels", ["weight[c, o]"]),
    ("own_channel_only", ["ALL input channels"]),
    ("ignore_padding", ["wrong shape", "padding"]),
    ("ignore_stride", ["wrong shape", "stride"]),
    ("ceil", ["wrong shape", "floor"]),
    ("pad_one_side", ["EVERY side"]),
    ("odd_only", ["even K"]),
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
    lambda x, w, stride=1, padding=0: torch.convolution(torch.from_numpy(x), torch.from_numpy(w.copy()), None,
                                                        [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1).numpy(),
    lambda x, w, stride=1, padding=0: F.conv3d(torch.from_numpy(x)[:, :, None], torch.from_numpy(w.copy())[:, :, None],
                                               stride=(1, stride, stride), padding=(0, padding, padding))[:, :, 0].numpy(),
    lambda x, w, stride=1, padding=0: scipy.signal.oaconvolve(x, w[None], mode="valid"),
], ids=["direct", "alias", "attribute path", "helper", "nn.Conv2d", "unfold", "torch.convolution", "conv3d",
        "scipy oaconvolve"])
def test_conv2d_loops_guard(shortcut, capsys):
    assert_rejects(check_conv2d_loops, shortcut, capsys, REFUSED)


def test_conv2d_loops_refuses_a_name_built_at_run_time(capsys):
    shortcut = exec_route("""
        def conv2d_loops(x, w, stride=1, padding=0):
            conv = getattr(F, "con" + "v2d")
            return conv(torch.from_numpy(x), torch.from_numpy(w.copy()), stride=stride, padding=padding).numpy()
    """, "conv2d_loops")
    assert_rejects(check_conv2d_loops, shortcut, capsys, REFUSED)


def test_conv2d_loops_refuses_a_helper_module(tmp_path, capsys):
    shortcut = module_route(tmp_path, """
        import torch
        import torch.nn.functional as F

        def conv2d_loops(x, w, stride=1, padding=0):
            return F.conv2d(torch.from_numpy(x), torch.from_numpy(w.copy()), stride=stride, padding=padding).numpy()
    """, "conv2d_loops")
    assert_rejects(check_conv2d_loops, shortcut, capsys, REFUSED)


def test_conv2d_loops_never_raises():
    assert_never_raises(check_conv2d_loops)


def test_conv2d_loops_not_attempted(capsys):
    def stub(x, weight, stride=1, padding=0):
        raise NotImplementedError

    assert_rejects(check_conv2d_loops, stub, capsys, "not attempted")


def test_conv2d_loops_has_even_kernels_and_hidden_cases():
    cases = convolution._random_conv_cases(np.random.default_rng(0))
    assert len(cases) >= 3 and all(case.name == "hidden random case" for case in cases)
    ks = {case.args[1].shape[2] for seed in range(10) for case in convolution._random_conv_cases(np.random.default_rng(seed))}
    assert ks & {2, 4}, "the hidden cases never draw an even K"


def test_conv2d_loops_refuses_a_table_of_the_fixed_answers(capsys):
    """A function that returns the answers of the fixed cases (read off a failing verdict) fails a hidden case."""
    captured = []
    check_conv2d_loops(lambda x, w, stride=1, padding=0: captured.append((x, w, stride, padding)) or make_conv()(x, w, stride, padding))
    fixed = [(x.tobytes(), make_conv()(x, w, s, p)) for x, w, s, p in captured[:12]]

    def memorised(x, weight, stride=1, padding=0):
        for key, answer in fixed:
            if key == x.tobytes():
                return answer
        return np.zeros((1,))

    assert_rejects(check_conv2d_loops, memorised, capsys, "random case")


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


def widest_closed_form(channels, budget, reduction_ratio, group_channels):
    """A natural alternative: solve the count for K^2, then step down to an odd K that fits."""
    hidden, groups = channels // reduction_ratio, channels // group_channels
    fixed = channels * hidden + 2 * hidden
    if budget < fixed + (hidden + 1) * groups:
        return 0
    k = int(((budget - fixed) / ((hidden + 1) * groups)) ** 0.5)
    k = k if k % 2 else k - 1
    while fixed + (hidden + 1) * groups * (k + 2) ** 2 <= budget:
        k += 2
    while k > 0 and fixed + (hidden + 1) * groups * k * k > budget:
        k -= 2
    return max(k, 0)


@pytest.mark.parametrize("candidate", [make_widest(), widest_closed_form], ids=["loop", "closed form"])
def test_widest_kernel_accepts(candidate, capsys):
    assert_accepts(check_widest_kernel, candidate, capsys)


@pytest.mark.parametrize("switches, needles", [
    (dict(bias=False), ["does not fit", "leaving out W1's bias"]),
    (dict(bn=False), ["does not fit", "BatchNorm"]),
    (dict(groups_is_group_channels=True), ["group_channels as the number of groups"]),
    (dict(step=1), ["must be odd"]),
    (dict(strict=True), ["EQUAL the budget"]),
    (dict(overshoot=True), ["K = 23 does not fit"]),
    (dict(floor_one=True), ["not even K = 1"]),
])
def test_widest_kernel_rejects_mistakes(switches, needles, capsys):
    assert_rejects(check_widest_kernel, make_widest(**switches), capsys, *needles)


def test_widest_kernel_too_wide_is_told_the_fact_not_a_guessed_cause(capsys):
    """An answer two too wide for another reason is told that its K does not fit, not that it left out the bias."""
    def two_too_wide(channels, budget, r, gc):
        return make_widest()(channels, budget, r, gc) + 2

    out = assert_rejects(check_widest_kernel, two_too_wide, capsys, "does not fit")
    assert "your count leaves out" not in out


def test_widest_kernel_float_arithmetic_passes(capsys):
    def widest_kernel(channels, budget, reduction_ratio, group_channels):
        hidden, groups = channels / reduction_ratio, channels / group_channels
        best, k = 0, 1
        while channels * hidden + 2 * hidden + (hidden + 1) * k * k * groups <= budget:
            best, k = k, k + 2
        return best

    assert_accepts(check_widest_kernel, widest_kernel, capsys)


def _count_with_module(channels, k, r, gc):
    return sum(p.numel() for p in Involution(channels, k, 1, r, gc).parameters())


@pytest.mark.parametrize("shortcut", [
    lambda c, budget, r, gc: max(k for k in range(1, 31, 2) if sum(p.numel() for p in Involution(c, k, 1, r, gc).parameters()) <= budget),
    lambda c, budget, r, gc: max(k for k in range(1, 31, 2) if _count_with_module(c, k, r, gc) <= budget),
    lambda c, budget, r, gc: involution_edu.module.Involution(c, 3),
], ids=["direct", "helper", "attribute path"])
def test_widest_kernel_guard(shortcut, capsys):
    assert_rejects(check_widest_kernel, shortcut, capsys, REFUSED)


def test_widest_kernel_refuses_a_module_count_through_exec(capsys):
    shortcut = exec_route("""
        def widest_kernel(c, budget, r, gc):
            count = lambda k: sum(p.numel() for p in Involution(c, k, 1, r, gc).parameters())
            return max([k for k in range(1, 31, 2) if count(k) <= budget] or [0])
    """, "widest_kernel", {"Involution": Involution})
    assert_rejects(check_widest_kernel, shortcut, capsys, REFUSED)


def test_widest_kernel_never_raises():
    assert_never_raises(check_widest_kernel)


def test_widest_kernel_hidden_cases_defeat_a_table(capsys):
    answers = {}
    check_widest_kernel(lambda c, b, r, gc: answers.setdefault((c, b, r, gc), make_widest()(c, b, r, gc)))
    fixed = dict(list(answers.items())[:9])
    assert_rejects(check_widest_kernel, lambda c, b, r, gc: fixed.get((c, b, r, gc), -1), capsys, "random case")


def test_count_formula_matches_module():
    for channels, k, r, gc in [(64, 7, 4, 16), (48, 5, 2, 8), (36, 3, 8, 4), (8, 3, 4, 1)]:
        assert convolution._count(channels, k, r, gc) == _count_with_module(channels, k, r, gc)


def test_a_3x3_budget_buys_a_wide_window():
    """The claim of notebook 01: a 3x3 conv's budget pays for a 21..23 involution window."""
    for channels, widest in [(64, 21), (128, 23), (256, 23), (512, 23)]:
        budget = 9 * channels * channels + channels
        k = make_widest()(channels, budget, 4, 16)
        assert k == widest and _count_with_module(channels, k, 4, 16) <= budget < _count_with_module(channels, k + 2, 4, 16)


# ---------------------------------------------------------------------- depthwise_as_involution
def make_depthwise(out="output", batch_one=False, transpose=False, every_channel=False, distinct=False,
                   interleaved=False):
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
        if every_channel:
            groups = channels
        elif distinct:  # the number of distinct kernels, whether or not they sit in blocks
            groups = len({weight[c].tobytes() for c in range(channels)})
        else:
            groups = next(g for g in range(1, channels + 1) if channels % g == 0 and all(
                np.array_equal(weight[c], weight[c - c % (channels // g)]) for c in range(channels)))
        first = list(range(groups)) if interleaved else [g * (channels // groups) for g in range(groups)]
        kernels = weight[first, 0]
        kernels = kernels.transpose(0, 2, 1) if transpose else kernels
        return np.broadcast_to(kernels[None, :, :, :, None, None],
                               (1 if batch_one else batch, groups, k, k, out_h, out_w))

    return depthwise_as_involution


def depthwise_by_unique_blocks(weight, batch, height, width, stride, padding):
    """A natural alternative: largest block size first, kernels copied with np.tile."""
    channels, _, k, _ = weight.shape
    out_h, out_w = (height + 2 * padding - k) // stride + 1, (width + 2 * padding - k) // stride + 1
    for size in range(channels, 0, -1):
        if channels % size == 0 and all((weight[s : s + size] == weight[s]).all() for s in range(0, channels, size)):
            break
    kernels = weight[::size, 0]
    return np.tile(kernels[None, :, :, :, None, None], (batch, 1, 1, 1, out_h, out_w))


@pytest.mark.parametrize("candidate", [make_depthwise(), depthwise_by_unique_blocks], ids=["solution", "tile"])
def test_depthwise_accepts(candidate, capsys):
    assert_accepts(check_depthwise_as_involution, candidate, capsys)


def test_depthwise_solution_reproduces_the_depthwise_conv():
    """With the fewest groups, involution equals F.conv2d(groups=C)."""
    rng = np.random.default_rng(5)
    for pattern, groups in [("aaaabb", 3), ("abab", 4), ("aaabbb", 2), ("aaaa", 1)]:
        bank = {letter: rng.standard_normal((3, 3)) for letter in set(pattern)}
        weight = np.stack([bank[letter] for letter in pattern])[:, None]
        x = rng.standard_normal((2, len(pattern), 7, 6))
        kernels = np.ascontiguousarray(make_depthwise()(weight, 2, 7, 6, 2, 1))
        assert kernels.shape[1] == groups
        expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), stride=2, padding=1, groups=len(pattern))
        np.testing.assert_allclose(involution_loops(x, kernels, 2, 1), expected.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("switches, needles", [
    (dict(out="input"), ["OUTPUT size"]),
    (dict(out="no stride"), ["stride"]),
    (dict(out="ceil"), ["round down"]),
    (dict(out="no padding"), ["padding"]),
    (dict(batch_one=True), ["batch axis"]),
    (dict(transpose=True), ["transposed"]),
    (dict(every_channel=True), ["FEWEST groups"]),
    (dict(distinct=True), ["CONSECUTIVE"]),
    (dict(interleaved=True), []),
])
def test_depthwise_rejects_mistakes(switches, needles, capsys):
    assert_rejects(check_depthwise_as_involution, make_depthwise(**switches), capsys, *needles)


def test_depthwise_rejects_the_weight_itself(capsys):
    assert_rejects(check_depthwise_as_involution, lambda weight, *args: weight, capsys, "shape")


@pytest.mark.parametrize("shortcut", [
    lambda weight, b, h, w, s, p: np.broadcast_to(weight[:, 0][None, :, :, :, None, None],
                                                  (b,) + weight[:, 0].shape + (library_output_size(h, 3, s, p),) * 2),
    lambda weight, b, h, w, s, p: np.broadcast_to(weight[:, 0][None, :, :, :, None, None],
                                                  (b,) + weight[:, 0].shape + (involution_edu.shapes.output_size(h, 3, s, p),) * 2),
], ids=["direct", "attribute path"])
def test_depthwise_guard(shortcut, capsys):
    assert_rejects(check_depthwise_as_involution, shortcut, capsys, REFUSED)


def test_depthwise_refuses_the_library_through_exec(capsys):
    shortcut = exec_route("""
        def depthwise_as_involution(weight, b, h, w, s, p):
            size = getattr(shapes, "output" + "_size")
            k = weight.shape[2]
            return np.broadcast_to(weight[:, 0][None, :, :, :, None, None], (b,) + weight[:, 0].shape + (size(h, k, s, p), size(w, k, s, p)))
    """, "depthwise_as_involution", {"shapes": involution_edu.shapes})
    assert_rejects(check_depthwise_as_involution, shortcut, capsys, REFUSED)


def test_depthwise_never_raises():
    assert_never_raises(check_depthwise_as_involution)


def test_depthwise_hidden_cases_vary_the_groups():
    groups = {convolution._fewest_groups(case.args[0]) for seed in range(10)
              for case in convolution._random_depthwise_cases(np.random.default_rng(seed))}
    assert len(groups) >= 3


# --------------------------------------------------------------------------------------- questions
def test_channel_mixing_claim():
    """Question 1's answer, measured: 16 channels at the pixel, channel 0 at its 8 neighbours."""
    torch.manual_seed(0)
    layer = Involution(16, 3, group_channels=8).double().eval()
    x = torch.randn(1, 16, 6, 6, dtype=torch.float64)
    changed = x.clone()
    changed[0, 0, 3, 2] += 1.0
    with torch.no_grad():
        moved = (layer(changed) - layer(x)).abs() > 1e-12
    assert int(moved.sum()) == QUESTIONS["channel_mixing"].answer
    assert int(moved[0, :, 3, 2].sum()) == 16 and int(moved[0, 1:].sum()) == 15


def test_largest_term_claim():
    """Question 2: at K = 3, W0 holds more parameters than W1."""
    layer = Involution(256, 3)
    w0, w1 = layer.conv1.conv.weight.numel(), layer.conv2.conv.weight.numel()
    assert QUESTIONS["largest_term"].answer == "a" and w0 > w1 > layer.conv2.conv.bias.numel()
    assert Involution(256, 5).conv2.conv.weight.numel() > w0  # from K = 5 on, W1 wins


# ------------------------------------------------------------------ time limits and side effects
def _endless(*args, **kwargs):
    k = 1
    while k != 10:  # `k + 2` where `k += 2` was meant would hang; this one never reaches 10 either
        k += 2
    return k


@pytest.mark.parametrize("checker", [check_conv2d_loops, check_widest_kernel, check_depthwise_as_involution],
                         ids=["conv2d_loops", "widest_kernel", "depthwise_as_involution"])
def test_an_endless_loop_gets_a_time_limit_verdict(checker, capsys, monkeypatch):
    monkeypatch.setenv("INVOLUTION_EDU_CASE_TIME_LIMIT", "0.5")
    monkeypatch.setenv("INVOLUTION_EDU_TOTAL_TIME_LIMIT", "2")
    assert_rejects(checker, _endless, capsys, "ran for more than", "endless loop")


def test_conv2d_loops_names_an_overwritten_input(capsys):
    def conv_in_place(x, weight, stride=1, padding=0):
        out = make_conv()(x, weight, stride, padding)
        x[...] = 0.0  # "free the memory"
        return out

    assert_rejects(check_conv2d_loops, conv_in_place, capsys, "changed its input", "x")


def test_depthwise_names_an_overwritten_weight(capsys):
    def depthwise_in_place(weight, batch, height, width, stride, padding):
        kernels = np.array(make_depthwise()(weight, batch, height, width, stride, padding))
        weight *= 0.0
        return kernels

    assert_rejects(check_depthwise_as_involution, depthwise_in_place, capsys, "changed its input")
