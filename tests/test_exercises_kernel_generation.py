"""The checkers and questions of notebook 04 accept correct answers and reject plausible wrong ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from checker_harness import assert_accepts, assert_never_raises, assert_rejects

import involution_edu
from involution_edu.data import bilateral_filter
from involution_edu.data import bilateral_kernels
from involution_edu.data import bilateral_kernels as library_bilateral
from involution_edu.exercises.kernel_generation import (
    QUESTIONS,
    check_bilateral_kernels,
    check_generate_kernels,
    check_paper_span_from_keras,
)
from involution_edu.module import Involution


def not_attempted(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------------------------ bilateral kernels
def bilateral(image, kernel_size, sigma_space, sigma_range, *, normalise=True, border=True, use_range=True,
              use_space=True, two=2.0, transpose=False, mean_channels=False, abs_range=False):
    """The solution, or (with a flag) one plausible mistake."""
    batch, channels, height, width = image.shape
    k, half = kernel_size, kernel_size // 2
    windows = F.unfold(image, k, padding=half).view(batch, channels, k * k, height, width)
    inside = F.unfold(torch.ones_like(image[:, :1]), k, padding=half).view(batch, k * k, height, width)
    offsets = torch.arange(k, dtype=image.dtype) - half
    space2 = (offsets[:, None] ** 2 + offsets[None, :] ** 2).reshape(k * k, 1, 1)
    diff = (windows - image[:, :, None])
    diff = diff.abs() if abs_range else diff.pow(2)
    range2 = diff.mean(dim=1) if mean_channels else diff.sum(dim=1)
    exponent = torch.zeros_like(range2)
    if use_space:
        exponent = exponent - space2 / (two * sigma_space**2)
    if use_range:
        exponent = exponent - range2 / (two * sigma_range**2)
    weights = torch.exp(exponent)
    if border:
        weights = weights * inside
    if normalise:
        weights = weights / weights.sum(dim=1, keepdim=True)
    kernels = weights.view(batch, 1, k, k, height, width)
    return kernels.transpose(2, 3) if transpose else kernels


def bilateral_solution(image, kernel_size, sigma_space, sigma_range):
    return bilateral(image, kernel_size, sigma_space, sigma_range)


def test_bilateral_accepts_solution(capsys):
    assert_accepts(check_bilateral_kernels, bilateral_solution, capsys)


def test_library_bilateral_filter_is_the_involution_of_its_kernels():
    image = torch.rand(2, 3, 9, 7, dtype=torch.float64)
    kernels = bilateral_kernels(image, 5, 1.5, 0.2)
    assert torch.allclose(kernels.sum(dim=(2, 3)), torch.ones(2, 1, 9, 7, dtype=torch.float64))
    assert torch.allclose(involution_edu.involution(image, kernels), bilateral_filter(image, 5, 1.5, 0.2))
    flat = torch.full((1, 1, 6, 6), 0.5, dtype=torch.float64)  # a flat image: the filter changes nothing
    assert torch.allclose(bilateral_filter(flat, 3, 1.0, 0.1), flat)


@pytest.mark.parametrize("name, value", [("kernel_size", 4), ("sigma_space", 0.0), ("sigma_range", -1.0)])
def test_library_bilateral_rejects_bad_arguments(name, value):
    arguments = {"kernel_size": 3, "sigma_space": 1.0, "sigma_range": 0.1, name: value}
    with pytest.raises(ValueError, match=name):
        bilateral_kernels(torch.rand(1, 1, 4, 4), **arguments)
    with pytest.raises(ValueError, match="image"):
        bilateral_kernels(torch.rand(4, 4), 3, 1.0, 0.1)


@pytest.mark.parametrize(
    "flags, needle",
    [
        (dict(normalise=False), "not normalised"),
        (dict(border=False), "outside the image"),
        (dict(use_range=False), "no range term"),
        (dict(use_space=False), "no spatial term"),
        (dict(two=1.0), "factor 2"),
        (dict(transpose=True), "transposed"),
        (dict(mean_channels=True), "averaged over channels"),
        (dict(border=False, normalise=False), "zero padding counted"),
    ],
)
def test_bilateral_names_the_mistake(flags, needle, capsys):
    assert_rejects(check_bilateral_kernels, lambda *args: bilateral(*args, **flags), capsys, needle)


def test_bilateral_rejects_other_wrong_answers(capsys):
    assert_rejects(check_bilateral_kernels, lambda *args: bilateral(*args, abs_range=True), capsys, "✗")
    assert_rejects(check_bilateral_kernels, lambda image, k, s, r: bilateral(image, k, s, r)[..., :-1], capsys,
                   "shape")
    assert_rejects(check_bilateral_kernels, lambda image, k, s, r: bilateral(image, k, r, s), capsys, "✗")


def bilateral_direct(image, k, s, r):
    return bilateral_kernels(image, k, s, r)


def bilateral_alias(image, k, s, r):
    return library_bilateral(image, k, s, r)


def bilateral_attribute(image, k, s, r):
    return involution_edu.data.bilateral_kernels(image, k, s, r)


def _helper(image, k, s, r):
    return bilateral_filter(image, k, s, r)


def bilateral_in_helper(image, k, s, r):
    _helper(image, k, s, r)
    return bilateral(image, k, s, r)


@pytest.mark.parametrize("candidate", [bilateral_direct, bilateral_alias, bilateral_attribute, bilateral_in_helper])
def test_bilateral_guard_catches_the_library(candidate, capsys):
    assert_rejects(check_bilateral_kernels, candidate, capsys, "yourself", "bilateral_")


def test_bilateral_not_attempted_and_never_raises(capsys):
    assert_rejects(check_bilateral_kernels, not_attempted, capsys, "not attempted")
    assert_never_raises(check_bilateral_kernels)


# ------------------------------------------------------------------------------ keras -> paper span
def reorder(rows, groups, k, *, inverse=False):
    taps = k * k
    if inverse:
        return rows.reshape(groups, taps, *rows.shape[1:]).transpose(0, 1).reshape(rows.shape)
    return rows.reshape(taps, groups, *rows.shape[1:]).transpose(0, 1).reshape(rows.shape)


def span_solution(weight, bias, groups, k):
    return reorder(weight, groups, k), reorder(bias, groups, k)


def span_by_index(weight, bias, groups, k):
    """Another correct way: an explicit index list."""
    index = [t * groups + g for g in range(groups) for t in range(k * k)]
    return weight[index], bias[index]


def test_span_accepts_solutions(capsys):
    assert_accepts(check_paper_span_from_keras, span_solution, capsys)
    assert_accepts(check_paper_span_from_keras, span_by_index, capsys)


def transposed_taps(weight, bias, groups, k):
    w, b = span_solution(weight, bias, groups, k)

    def flip(rows):
        return rows.reshape(groups, k, k, *rows.shape[1:]).transpose(1, 2).reshape(rows.shape)

    return flip(w), flip(b)


@pytest.mark.parametrize(
    "candidate, needle",
    [
        (lambda w, b, g, k: (w, b), "nothing moved"),
        (lambda w, b, g, k: (reorder(w, g, k, inverse=True), reorder(b, g, k, inverse=True)), "inverse permutation"),
        (lambda w, b, g, k: (reorder(w, g, k), b), "bias did not"),
        (lambda w, b, g, k: (w, reorder(b, g, k)), "weight rows did not"),
        (transposed_taps, "transposed"),
        (lambda w, b, g, k: (reorder(w, g, k),), "✗"),
        (lambda w, b, g, k: reorder(w, g, k), "✗"),
        (lambda w, b, g, k: (reorder(w, g, k)[:, :, 0, 0], reorder(b, g, k)), "shape"),
    ],
)
def test_span_rejects_wrong_answers(candidate, needle, capsys):
    assert_rejects(check_paper_span_from_keras, candidate, capsys, needle)


def test_span_not_attempted_and_never_raises(capsys):
    assert_rejects(check_paper_span_from_keras, not_attempted, capsys, "not attempted")
    assert_never_raises(check_paper_span_from_keras)


def test_span_conversion_makes_the_paper_module_generate_the_keras_kernels():
    """The checker's expected answer really converts: same kernels from both readings."""
    torch.manual_seed(0)
    groups, k, channels = 2, 3, 8
    module = Involution(channels, k, reduction_ratio=2, group_channels=channels // groups).double().eval()
    x = torch.randn(1, channels, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        hidden = module.conv1(x)
        flat_keras = module.conv2(hidden)  # pretend these weights were trained in keras.io's layout
        keras_kernels = flat_keras.view(1, k * k, groups, 5, 4).transpose(1, 2).reshape(1, groups, k, k, 5, 4)
        weight, bias = span_solution(module.conv2.conv.weight, module.conv2.conv.bias, groups, k)
        module.conv2.conv.weight.copy_(weight)
        module.conv2.conv.bias.copy_(bias)
        assert torch.allclose(module.generate_kernels(x), keras_kernels)


# ------------------------------------------------------------------------------ generate_kernels_student
def generator(x, conv1_weight, bn, conv2_weight, conv2_bias, groups, kernel_size, *, training=False, relu=True,
              bias=True, norm=True, keras=False, eps=True):
    z = F.conv2d(x, conv1_weight)
    if norm:
        if training:
            z = F.batch_norm(z, None, None, bn["weight"], bn["bias"], True, 0.0, bn["eps"])
        else:
            z = F.batch_norm(z, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], False, 0.0,
                             bn["eps"] if eps else 0.0)
    if relu:
        z = torch.relu(z)
    flat = F.conv2d(z, conv2_weight, conv2_bias if bias else None)
    b, _, h, w = flat.shape
    if keras:
        return flat.view(b, kernel_size, kernel_size, groups, h, w).permute(0, 3, 1, 2, 4, 5)
    return flat.view(b, groups, kernel_size, kernel_size, h, w)


def generator_solution(*args):
    return generator(*args)


def test_generate_kernels_accepts_solution(capsys):
    assert_accepts(check_generate_kernels, generator_solution, capsys)


@pytest.mark.parametrize(
    "flags, needle",
    [
        (dict(training=True), "training mode"),
        (dict(norm=False), "BatchNorm step is missing"),
        (dict(relu=False), "ReLU"),
        (dict(bias=False), "bias"),
        (dict(keras=True), "keras.io"),
    ],
)
def test_generate_kernels_names_the_mistake(flags, needle, capsys):
    assert_rejects(check_generate_kernels, lambda *args: generator(*args, **flags), capsys, needle)


def test_generate_kernels_rejects_other_wrong_answers(capsys):
    assert_rejects(check_generate_kernels, lambda *args: generator(*args).transpose(2, 3), capsys, "✗")
    assert_rejects(check_generate_kernels, lambda *args: generator(*args)[:, :, :, :, :-1], capsys, "shape")
    assert_rejects(check_generate_kernels, lambda *args: generator(*args).flatten(1, 3), capsys, "shape")


def shortcut_direct(x, conv1_weight, bn, conv2_weight, conv2_bias, groups, kernel_size):
    module = Involution(x.shape[1], kernel_size, group_channels=x.shape[1] // groups).double().eval()
    return module.generate_kernels(x)


def shortcut_attribute(x, conv1_weight, bn, conv2_weight, conv2_bias, groups, kernel_size):
    return involution_edu.Involution.generate_kernels


def _build(x, kernel_size, groups):
    return Involution(x.shape[1], kernel_size, group_channels=x.shape[1] // groups)


def shortcut_in_helper(x, conv1_weight, bn, conv2_weight, conv2_bias, groups, kernel_size):
    _build(x, kernel_size, groups)
    return generator(x, conv1_weight, bn, conv2_weight, conv2_bias, groups, kernel_size)


@pytest.mark.parametrize("candidate", [shortcut_direct, shortcut_attribute, shortcut_in_helper])
def test_generate_kernels_guard(candidate, capsys):
    assert_rejects(check_generate_kernels, candidate, capsys, "yourself")


def test_generate_kernels_not_attempted_and_never_raises(capsys):
    assert_rejects(check_generate_kernels, not_attempted, capsys, "not attempted")
    assert_never_raises(check_generate_kernels)


# ------------------------------------------------------------------------------ questions


def test_kernel_ratio_question_is_the_measured_ratio():
    module = Involution(32, 7, group_channels=16)
    x = torch.randn(2, 32, 5, 6)
    with torch.no_grad():
        kernels = module.generate_kernels(x)
    assert kernels.numel() / x.numel() == pytest.approx(QUESTIONS["kernel_ratio"].answer)
