"""The checkers and questions of notebook 04 accept correct answers and reject plausible wrong ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights
from checker_harness import assert_accepts, assert_never_raises, assert_rejects

import involution_edu
from involution_edu.data import bilateral_filter
from involution_edu.data import bilateral_kernels
from involution_edu.data import bilateral_kernels as library_bilateral
from involution_edu.exercises.kernel_generation import (
    QUESTIONS,
    bn_tensors,
    check_bilateral_kernels,
    check_fold_batchnorm,
    check_paper_span_from_keras,
    seeded_involution,
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


# ------------------------------------------------------------------------------ fold_batchnorm
def fold(conv1_weight, bn, *, eps=True, sqrt=True, mean=True, scale_mean=True, sign=-1.0, scale_beta=False,
         columns=False, scale_weight=True):
    """The solution, or (with a flag) one plausible mistake."""
    variance = bn["running_var"] + (bn["eps"] if eps else 0.0)
    scale = bn["weight"] / (variance.sqrt() if sqrt else variance)
    shift = bn["running_mean"] * scale if scale_mean else bn["running_mean"]
    bias = bn["bias"] + sign * shift if mean else bn["bias"]
    if scale_beta:
        bias = (bn["bias"] - bn["running_mean"]) * scale
    if not scale_weight:
        return conv1_weight, bias
    weight = conv1_weight * (scale[None, :, None, None] if columns else scale[:, None, None, None])
    return weight, bias


def fold_solution(conv1_weight, bn):
    return fold(conv1_weight, bn)


def fold_by_probing(conv1_weight, bn):
    """Another correct way: BatchNorm applied to 0 gives the shift, to 1 the shift plus the scale."""
    hidden = conv1_weight.shape[0]
    probe = torch.stack([torch.zeros(hidden, dtype=conv1_weight.dtype), torch.ones(hidden, dtype=conv1_weight.dtype)])
    out = F.batch_norm(probe, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], False, 0.0, bn["eps"])
    shift, scale = out[0], out[1] - out[0]
    return conv1_weight * scale.view(-1, 1, 1, 1), shift


def fold_with_rsqrt_numpy(conv1_weight, bn):
    """Another correct way, in NumPy with rsqrt written out."""
    import numpy as np

    gamma, beta = bn["weight"].numpy(), bn["bias"].numpy()
    scale = gamma / np.sqrt(bn["running_var"].numpy() + bn["eps"])
    weight = conv1_weight.numpy() * scale.reshape(-1, 1, 1, 1)
    return torch.from_numpy(weight), torch.from_numpy(beta - bn["running_mean"].numpy() * scale)


@pytest.mark.parametrize("candidate", [fold_solution, fold_by_probing, fold_with_rsqrt_numpy])
def test_fold_accepts_solutions(candidate, capsys):
    assert_accepts(check_fold_batchnorm, candidate, capsys)


def test_fold_solution_gives_the_generators_kernels():
    """What the exercise promises: the folded reduce layer gives generate_kernels' kernels in eval mode."""
    module = seeded_involution(16, 3, 4, 8, seed=3)
    x = torch.randn(2, 16, 5, 4, dtype=torch.float64)
    weight, bias = fold_solution(module.conv1.conv.weight.detach(), bn_tensors(module.conv1.bn))
    with torch.no_grad():
        folded = module.conv2.conv(torch.relu(F.conv2d(x, weight, bias))).view(2, 2, 3, 3, 5, 4)
        assert torch.allclose(folded, module.generate_kernels(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "flags, needle",
    [
        (dict(eps=False), "eps is missing"),
        (dict(sqrt=False), "standard deviation"),
        (dict(mean=False), "running mean, scaled, must be subtracted"),
        (dict(scale_mean=False), "multiplied by weight / sqrt"),
        (dict(sign=1.0), "wrong sign"),
        (dict(scale_beta=True), "not scaled"),
        (dict(scale_weight=False), "weight is unchanged"),
    ],
)
def test_fold_names_the_mistake(flags, needle, capsys):
    assert_rejects(check_fold_batchnorm, lambda w, bn: fold(w, bn, **flags), capsys, needle)


def test_fold_names_the_scale_on_the_columns(capsys):
    # on a non-square weight the slip cannot broadcast (an error, named as such); on the square case it is named
    assert_rejects(check_fold_batchnorm, lambda w, bn: fold(w, bn, columns=True), capsys, "raised")
    assert_rejects(check_fold_batchnorm, lambda w, bn: fold(w, bn, columns=w.shape[0] == w.shape[1]), capsys,
                   "columns")


def test_fold_rejects_other_wrong_answers(capsys):
    assert_rejects(check_fold_batchnorm, lambda w, bn: fold(w, bn)[0], capsys, "✗")
    assert_rejects(check_fold_batchnorm, lambda w, bn: (fold(w, bn)[0][:, :, 0, 0], fold(w, bn)[1]), capsys, "shape")
    assert_rejects(check_fold_batchnorm, lambda w, bn: tuple(t.float() for t in fold(w, bn)), capsys, "float32")


def fold_by_pytorch(conv1_weight, bn):
    return fuse_conv_bn_weights(conv1_weight, None, bn["running_mean"], bn["running_var"], bn["eps"], bn["weight"],
                                bn["bias"])


def fold_by_pytorch_attribute(conv1_weight, bn):
    return torch.nn.utils.fusion.fuse_conv_bn_weights(conv1_weight, None, bn["running_mean"], bn["running_var"],
                                                      bn["eps"], bn["weight"], bn["bias"])


def test_fold_refuses_pytorchs_fusion(capsys):
    assert_rejects(check_fold_batchnorm, fold_by_pytorch, capsys, "fuse_conv_bn_weights")
    assert_rejects(check_fold_batchnorm, fold_by_pytorch_attribute, capsys, "fuse_conv_bn_weights")


# ------------------------------------------------------------------------------ questions


def test_kernel_ratio_question_is_the_measured_ratio():
    module = Involution(32, 7, group_channels=16)
    x = torch.randn(2, 32, 5, 6)
    with torch.no_grad():
        kernels = module.generate_kernels(x)
    assert kernels.numel() / x.numel() == pytest.approx(QUESTIONS["kernel_ratio"].answer)


def test_kernel_ratio_accepts_about_three(capsys):
    """The text says "about three times": 3 is accepted, as is 49/16."""
    from involution_edu.exercises.framework import check_answer

    assert check_answer(QUESTIONS["kernel_ratio"], 3)
    assert check_answer(QUESTIONS["kernel_ratio"], 49 / 16)
    assert not check_answer(QUESTIONS["kernel_ratio"], 49)
    assert not check_answer(QUESTIONS["kernel_ratio"], 2.9)


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
BILATERAL_ROUTE = """
import involution_edu.data
def bilateral_kernels_student(image, kernel_size, sigma_space, sigma_range):
    return getattr(involution_edu.data, "bilateral_" + "kernels")(image, kernel_size, sigma_space, sigma_range)
"""


def test_bilateral_refuses_run_time_routes(tmp_path, capsys):
    assert_rejects(check_bilateral_kernels, exec_route(BILATERAL_ROUTE, "bilateral_kernels_student"), capsys,
                   "bilateral_kernels")
    assert_rejects(check_bilateral_kernels, module_route(tmp_path, BILATERAL_ROUTE, "bilateral_kernels_student"),
                   capsys, "bilateral_kernels")


def test_bilateral_refuses_the_checkers_oracle(capsys):
    """kernel_generation._bilateral_variant is importable from the checker's module: it is refused too."""
    oracle = exec_route("""
import importlib
def bilateral_kernels_student(image, kernel_size, sigma_space, sigma_range):
    checkers = importlib.import_module("involution_edu.exercises." + "kernel_generation")
    return getattr(checkers, "_bilateral" + "_variant")(image, kernel_size, sigma_space, sigma_range)
""", "bilateral_kernels_student")
    assert_rejects(check_bilateral_kernels, oracle, capsys, "_bilateral_variant")


def test_bilateral_time_limit(capsys):
    assert_times_out(check_bilateral_kernels, endless, capsys)


def test_bilateral_names_a_side_effect(capsys):
    def clamps_the_image(image, k, s, r):
        kernels = bilateral(image, k, s, r)
        image.clamp_(0.2, 0.8)  # "tidies" the caller's image
        return kernels

    assert_names_side_effect(check_bilateral_kernels, clamps_the_image, capsys, "changed its input")


def test_span_refuses_the_checkers_oracle(tmp_path, capsys):
    source = """
import involution_edu.exercises.kernel_generation as checkers
def paper_span_from_keras(weight, bias, groups, kernel_size):
    move = getattr(checkers, "_keras_to" + "_paper")
    return move(weight, groups, kernel_size), move(bias, groups, kernel_size)
"""
    assert_rejects(check_paper_span_from_keras, exec_route(source, "paper_span_from_keras"), capsys, "_keras_to_paper")
    assert_rejects(check_paper_span_from_keras, module_route(tmp_path, source, "paper_span_from_keras"), capsys,
                   "_keras_to_paper")


def test_span_time_limit(capsys):
    assert_times_out(check_paper_span_from_keras, endless, capsys)


def test_span_names_a_side_effect(capsys):
    def reorders_in_place(weight, bias, groups, k):
        new_weight, new_bias = span_solution(weight.clone(), bias.clone(), groups, k)
        weight.copy_(new_weight)  # writes the answer into the caller's tensor
        return weight, new_bias

    assert_names_side_effect(check_paper_span_from_keras, reorders_in_place, capsys, "changed its input")


FOLD_ROUTE = """
import torch
def fold_batchnorm(conv1_weight, bn):
    fuse = getattr(torch.nn.utils.fusion, "fuse_conv_bn" + "_weights")
    return fuse(conv1_weight, None, bn["running_mean"], bn["running_var"], bn["eps"], bn["weight"], bn["bias"])
"""


def test_fold_refuses_run_time_routes(tmp_path, capsys):
    assert_rejects(check_fold_batchnorm, exec_route(FOLD_ROUTE, "fold_batchnorm"), capsys, "fuse_conv_bn_weights")
    assert_rejects(check_fold_batchnorm, module_route(tmp_path, FOLD_ROUTE, "fold_batchnorm"), capsys,
                   "fuse_conv_bn_weights")
    oracle = exec_route("""
import involution_edu.exercises.kernel_generation as checkers
def fold_batchnorm(conv1_weight, bn):
    return getattr(checkers, "_" + "fold")(conv1_weight, bn)
""", "fold_batchnorm")
    assert_rejects(check_fold_batchnorm, oracle, capsys, "_fold")


def test_fold_time_limit(capsys):
    assert_times_out(check_fold_batchnorm, endless, capsys)


def test_fold_names_a_side_effect(capsys):
    def folds_in_place(conv1_weight, bn):
        weight, bias = fold_solution(conv1_weight.clone(), bn)
        conv1_weight.copy_(weight)  # the caller's reduce weight is overwritten
        return conv1_weight, bias

    assert_names_side_effect(check_fold_batchnorm, folds_in_place, capsys, "changed its input")


def test_fold_not_attempted_and_never_raises(capsys):
    assert_rejects(check_fold_batchnorm, not_attempted, capsys, "not attempted")
    assert_never_raises(check_fold_batchnorm)
