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


