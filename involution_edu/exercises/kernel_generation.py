"""Checkers and questions for notebook 04 (kernel generation).

The expected answers come from the library: :func:`~involution_edu.data.bilateral_kernels`, the
paper's group-major layout of the span convolution's channels, and
:meth:`~involution_edu.module.Involution.generate_kernels`;
:func:`~involution_edu.exercises.framework.run_cases` prints the verdict. The likely mistakes
are computed with deliberately wrong implementations, so the verdict can name them.

Exercises checked here::

    bilateral_kernels_student(image, kernel_size, sigma_space, sigma_range)
        image: (B, C, H, W) -> kernels (B, 1, K, K, H, W), normalised over the in-image taps
    paper_span_from_keras(weight, bias, groups, kernel_size)
        weight: (G*K*K, C/r, 1, 1), bias: (G*K*K,) of a span convolution whose channel t*G + g is
        tap t of group g (keras.io's Reshape((h, w, K*K, 1, G))) -> (weight, bias) in the paper's
        order, channel g*K*K + t
    fold_batchnorm(conv1_weight, bn)
        conv1_weight: (C/r, C, 1, 1) (no bias); bn: dict of BatchNorm tensors (eval mode)
        -> (weight (C/r, C, 1, 1), bias (C/r,)) with F.conv2d(x, weight, bias) == BN(conv1(x))

Every checker declares its :class:`~involution_edu.exercises.framework.Rule` (what it forbids, enforced
at run time; the library and these checkers' own oracles such as ``_bilateral_variant`` are forbidden
by default) and draws hidden cases at random on every call (``random_cases``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import numpy as np
import torch
import torch.nn.functional as F
import torch.nn.utils.fusion

from .. import data as _data
from ..module import Involution
from .framework import Case, Question, Rule, run_cases

__all__ = [
    "QUESTIONS",
    "check_bilateral_kernels",
    "check_paper_span_from_keras",
    "check_fold_batchnorm",
    "bn_tensors",
    "seeded_involution",
]


# --------------------------------------------------------------------------------------------
# Exercise 1: the bilateral filter's kernels
# --------------------------------------------------------------------------------------------

def _bilateral_variant(image: torch.Tensor, k: int, sigma_space: float, sigma_range: float, *,
                       normalise: bool = True, outside_counts: bool = False, use_range: bool = True,
                       use_space: bool = True, factor_two: bool = True, transpose: bool = False,
                       range_mean: bool = False) -> torch.Tensor:
    """The bilateral kernels ``(B, 1, K, K, H, W)``, or one of the likely wrong versions."""
    batch, channels, height, width = image.shape
    half = k // 2
    windows = F.unfold(image, k, padding=half).view(batch, channels, k * k, height, width)
    inside = F.unfold(torch.ones_like(image[:, :1]), k, padding=half).view(batch, k * k, height, width)
    offsets = torch.arange(k, dtype=image.dtype) - half
    distance2 = (offsets[:, None] ** 2 + offsets[None, :] ** 2).reshape(k * k, 1, 1)
    differences = (windows - image[:, :, None]).pow(2)
    range2 = differences.mean(dim=1) if range_mean else differences.sum(dim=1)
    two = 2.0 if factor_two else 1.0
    exponent = torch.zeros_like(range2)
    if use_space:
        exponent = exponent - distance2 / (two * sigma_space**2)
    if use_range:
        exponent = exponent - range2 / (two * sigma_range**2)
    weights = torch.exp(exponent)
    if not outside_counts:
        weights = weights * inside
    if normalise:
        weights = weights / weights.sum(dim=1, keepdim=True)
    kernels = weights.view(batch, 1, k, k, height, width)
    return kernels.transpose(2, 3).contiguous() if transpose else kernels


def _test_image(generator: torch.Generator, batch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """Random values in [0, 1] on top of a step edge, so the range term matters (float64)."""
    noise = torch.rand(batch, channels, height, width, generator=generator, dtype=torch.float64) * 0.3
    step = (torch.arange(width, dtype=torch.float64) >= width // 2).to(torch.float64) * 0.7
    return noise + step


def check_bilateral_kernels(bilateral_kernels_student: Callable[..., object]) -> bool:
    """Check ``bilateral_kernels_student(image, kernel_size, sigma_space, sigma_range)``.

    Expected: :func:`involution_edu.data.bilateral_kernels` (``(B, 1, K, K, H, W)``; the weight of
    a tap is ``exp(-(du^2+dv^2)/(2 s^2)) * exp(-|I[n]-I[i,j]|^2/(2 r^2))`` with the squared
    difference summed over channels, taps outside the image weigh 0, each pixel's weights sum to 1).
    """
    generator = torch.Generator().manual_seed(4)
    # (name, why, batch, channels, height, width, kernel_size, sigma_space, sigma_range)
    table = [
        ("grey 6x7, K=3", "one grey image, non-square: the basic formula", 1, 1, 6, 7, 3, 1.0, 0.2),
        ("batch 2, 8x8, K=5", "a batch of two, wider spatial Gaussian", 2, 1, 8, 8, 5, 2.0, 0.3),
        ("K=7 on a 5x4 image", "a kernel larger than the image: most taps lie outside and must weigh 0",
         1, 1, 5, 4, 7, 1.5, 0.25),
        ("colour 4x6, K=3", "three channels: the squared differences add up over the channels; "
         "one kernel for all of them", 1, 3, 4, 6, 3, 1.0, 0.3),
        ("small sigma_range, 7x5, K=5", "a sharp range Gaussian: taps across the edge get almost no weight",
         2, 1, 7, 5, 5, 3.0, 0.05),
        ("K=1", "a 1x1 kernel: the single weight is 1", 1, 1, 3, 5, 1, 1.0, 0.1),
    ]
    cases = [_bilateral_case(name, why, _test_image(generator, batch, channels, height, width), k, s, r)
             for name, why, batch, channels, height, width, k, s, r in table]
    return run_cases("bilateral_kernels_student", bilateral_kernels_student, cases,
                     rule=Rule(what="the bilateral kernels"), random_cases=_random_bilateral_cases)


def _bilateral_case(name: str, why: str, image: torch.Tensor, k: int, s: float, r: float) -> Case:
    expected = _data.bilateral_kernels(image, k, s, r)
    mistakes = [
        (_bilateral_variant(image, k, s, r, normalise=False),
         "the weights are not normalised: divide each pixel's K*K weights by their sum"),
        (_bilateral_variant(image, k, s, r, outside_counts=True),
         "taps outside the image count as pixels of value 0 (zero padding); give them weight 0 before "
         "normalising"),
        (_bilateral_variant(image, k, s, r, use_range=False),
         "there is no range term: that is a plain Gaussian blur, the same kernel everywhere"),
        (_bilateral_variant(image, k, s, r, use_space=False),
         "there is no spatial term exp(-(du^2 + dv^2) / (2 sigma_space^2))"),
        (_bilateral_variant(image, k, s, r, factor_two=False),
         "the Gaussians lack the factor 2: exp(-d^2 / (2 sigma^2)), not exp(-d^2 / sigma^2)"),
        (_bilateral_variant(image, k, s, r, transpose=True),
         "the K x K axes are transposed: tap (u, v) is row offset u - K//2, column offset v - K//2"),
        (_bilateral_variant(image, k, s, r, normalise=False, outside_counts=True),
         "zero padding counted as pixels and no normalisation"),
    ]
    if image.shape[1] > 1:
        mistakes.append((_bilateral_variant(image, k, s, r, range_mean=True),
                         "the squared colour difference is averaged over channels; the formula sums it"))
    return Case(name, (image, k, s, r), expected, why, rtol=1e-7, atol=1e-10, mistakes=mistakes)


def _random_bilateral_cases(rng: np.random.Generator) -> List[Case]:
    """Hidden cases: a random image on a step edge, odd K 1-7 (larger than the image too), random sigmas."""
    generator = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
    cases = []
    for index in range(3):
        batch, channels = int(rng.integers(1, 3)), int(rng.choice([1, 3]))
        height, width = int(rng.integers(2, 10)), int(rng.integers(2, 10))
        k = int(rng.choice([1, 3, 5, 7]))
        sigma_space, sigma_range = float(rng.uniform(0.7, 3.0)), float(rng.uniform(0.05, 0.4))
        cases.append(_bilateral_case(f"hidden case {index + 1}", "the kernels of a random image, K and sigmas",
                                     _test_image(generator, batch, channels, height, width), k, sigma_space,
                                     sigma_range))
    return cases


# --------------------------------------------------------------------------------------------
# Exercise 2: keras.io's reading of the span channels -> the paper's
# --------------------------------------------------------------------------------------------

def _keras_to_paper(tensor: torch.Tensor, groups: int, kernel_size: int) -> torch.Tensor:
    """Reorder the first axis from t*G + g (keras.io) to g*K*K + t (paper)."""
    kk = kernel_size * kernel_size
    rest = tensor.shape[1:]
    return tensor.reshape(kk, groups, *rest).transpose(0, 1).reshape(groups * kk, *rest).clone()


def _paper_to_keras(tensor: torch.Tensor, groups: int, kernel_size: int) -> torch.Tensor:
    kk = kernel_size * kernel_size
    rest = tensor.shape[1:]
    return tensor.reshape(groups, kk, *rest).transpose(0, 1).reshape(groups * kk, *rest).clone()


def _transpose_taps(tensor: torch.Tensor, groups: int, kernel_size: int) -> torch.Tensor:
    k = kernel_size
    rest = tensor.shape[1:]
    return tensor.reshape(groups, k, k, *rest).transpose(1, 2).reshape(groups * k * k, *rest).clone()


def check_paper_span_from_keras(paper_span_from_keras: Callable[..., object]) -> bool:
    """Check ``paper_span_from_keras(weight, bias, groups, kernel_size) -> (weight, bias)``.

    The keras.io layer reads the span convolution's output channel ``t*G + g`` as tap ``t`` of
    group ``g``; the paper's ``view(B, G, K*K, H, W)`` reads channel ``g*K*K + t``. The answer
    reorders the rows of ``weight`` ``(G*K*K, C/r, 1, 1)`` and ``bias`` ``(G*K*K,)`` so that a
    paper-layout module generates the same kernels as the keras.io-layout one.
    """
    generator = torch.Generator().manual_seed(7)
    # (name, why, groups, kernel_size, hidden)
    table = [
        ("G=2, K=3", "channel t*G + g (keras) must move to g*K*K + t (paper)", 2, 3, 4),
        ("G=3, K=3", "three groups: the permutation is not its own inverse", 3, 3, 5),
        ("G=4, K=5, 2 hidden", "more groups and taps; the bias moves with its row", 4, 5, 2),
        ("G=1, K=5", "one group: both layouts coincide, nothing moves", 1, 5, 3),
        ("G=4, K=1", "K = 1: one tap per group, both layouts coincide", 4, 1, 6),
        ("G=2, K=7, 8 hidden", "the paper's K = 7", 2, 7, 8),
    ]
    cases = [_span_case(name, why, generator, groups, k, hidden) for name, why, groups, k, hidden in table]
    return run_cases("paper_span_from_keras", paper_span_from_keras, cases,
                     rule=Rule(what="the reordering of the span rows"), random_cases=_random_span_cases)


def _span_case(name: str, why: str, generator: torch.Generator, groups: int, k: int, hidden: int) -> Case:
    weight = torch.randn(groups * k * k, hidden, 1, 1, generator=generator, dtype=torch.float64)
    bias = torch.randn(groups * k * k, generator=generator, dtype=torch.float64)
    expected = (_keras_to_paper(weight, groups, k), _keras_to_paper(bias, groups, k))
    mistakes = [
        ((weight.clone(), bias.clone()), "nothing moved: the rows are still in keras.io's order t*G + g"),
        ((_paper_to_keras(weight, groups, k), _paper_to_keras(bias, groups, k)),
         "this is the inverse permutation (paper -> keras.io): row g*K*K + t of the answer must be "
         "row t*G + g of the input"),
        ((expected[0], bias.clone()), "the weight rows moved but the bias did not: each bias belongs to its row"),
        ((weight.clone(), expected[1]), "the bias moved but the weight rows did not"),
        ((_transpose_taps(expected[0], groups, k), _transpose_taps(expected[1], groups, k)),
         "the taps of each kernel are transposed: t = u*K + v, row-major"),
    ]
    return Case(name, (weight.clone(), bias.clone(), groups, k), expected, why, rtol=0.0, atol=0.0,
                mistakes=mistakes)


def _random_span_cases(rng: np.random.Generator) -> List[Case]:
    """Hidden cases: random G (1-5), odd K (1-7) and hidden width."""
    generator = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
    return [_span_case(f"hidden case {index + 1}", "the reordering for a random G, K and hidden width", generator,
                       int(rng.integers(1, 6)), int(rng.choice([1, 3, 5, 7])), int(rng.integers(1, 9)))
            for index in range(3)]


# --------------------------------------------------------------------------------------------
# Exercise: fold BatchNorm into the reduce convolution
# --------------------------------------------------------------------------------------------

def bn_tensors(bn: torch.nn.BatchNorm2d) -> Dict[str, object]:
    """The tensors of a BatchNorm layer as a dict: ``weight, bias, running_mean, running_var`` (all
    ``(C/r,)``) and the float ``eps``; detached copies, so the learner cannot change the layer."""
    return {
        "weight": bn.weight.detach().clone(),
        "bias": bn.bias.detach().clone(),
        "running_mean": bn.running_mean.detach().clone(),
        "running_var": bn.running_var.detach().clone(),
        "eps": float(bn.eps),
    }


def seeded_involution(channels: int, kernel_size: int, reduction_ratio: int, group_channels: int,
                      seed: int) -> Involution:
    """An :class:`Involution` (stride 1, float64, eval mode) with seeded random weights and BatchNorm
    statistics far from their defaults, so that forgetting any part of the generator shows."""
    generator = torch.Generator().manual_seed(seed)
    module = Involution(channels, kernel_size, 1, reduction_ratio, group_channels).double()
    with torch.no_grad():
        for tensor in module.parameters():
            tensor.copy_(torch.randn(tensor.shape, generator=generator, dtype=torch.float64) * 0.5)
        bn = module.conv1.bn
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=generator, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=generator, dtype=torch.float64) * 2 + 0.5)
    return module.eval()


def _fold(conv1_weight: torch.Tensor, bn: Dict[str, Any], *, eps: bool = True, sqrt: bool = True,
          mean_in_bias: bool = True, scale_mean: bool = True, shift_sign: float = -1.0, scale_weight: bool = True,
          scale_bias_after: bool = False, columns: bool = False):
    """BatchNorm (eval mode) folded into ``conv1_weight`` ``(C/r, C, 1, 1)``: ``(weight, bias (C/r,))``,
    or one of the likely wrong folds. ``None`` where a slip cannot even be computed (shapes)."""
    variance = bn["running_var"] + (bn["eps"] if eps else 0.0)
    scale = bn["weight"] / (torch.sqrt(variance) if sqrt else variance)
    mean = bn["running_mean"] * scale if scale_mean else bn["running_mean"]
    bias = bn["bias"] + shift_sign * mean if mean_in_bias else bn["bias"].clone()
    if scale_bias_after:  # (beta - mean) * scale
        bias = (bn["bias"] - bn["running_mean"]) * scale
    if not scale_weight:
        return conv1_weight.clone(), bias
    if columns:
        if conv1_weight.shape[0] != conv1_weight.shape[1]:
            return None
        return conv1_weight * scale[None, :, None, None], bias
    return conv1_weight * scale[:, None, None, None], bias


_FOLD_MISTAKES = [
    (dict(eps=False), "eps is missing: BatchNorm divides by sqrt(running_var + eps)"),
    (dict(sqrt=False), "BatchNorm divides by the standard deviation sqrt(running_var + eps), not by the variance"),
    (dict(mean_in_bias=False), "the bias is BatchNorm's bias alone: the running mean, scaled, must be subtracted too"),
    (dict(scale_mean=False), "the running mean is subtracted BEFORE the scaling: in the folded bias it is multiplied "
                             "by weight / sqrt(running_var + eps) too"),
    (dict(shift_sign=1.0), "the mean term has the wrong sign: BatchNorm subtracts the running mean"),
    (dict(scale_bias_after=True), "BatchNorm's own bias is added AFTER the scaling: it is not scaled"),
    (dict(scale_weight=False), "the weight is unchanged: the scale multiplies every output row of W0 too"),
    (dict(columns=True), "the scale multiplied the columns (input channels) of W0; it belongs to the rows: "
                         "channel o of the OUTPUT is normalised"),
]


def _batchnorm_dict(generator: torch.Generator, hidden: int, eps: float) -> Dict[str, Any]:
    """Random eval-mode BatchNorm tensors far from their defaults (negative weights, nonzero means)."""
    return {
        "weight": torch.randn(hidden, generator=generator, dtype=torch.float64),
        "bias": torch.randn(hidden, generator=generator, dtype=torch.float64),
        "running_mean": torch.randn(hidden, generator=generator, dtype=torch.float64),
        "running_var": torch.rand(hidden, generator=generator, dtype=torch.float64) * 2 + 0.05,
        "eps": float(eps),
    }


def _fold_case(name: str, why: str, generator: torch.Generator, hidden: int, channels: int, eps: float) -> Case:
    conv1_weight = torch.randn(hidden, channels, 1, 1, generator=generator, dtype=torch.float64)
    bn = _batchnorm_dict(generator, hidden, eps)
    expected = _fold(conv1_weight, bn)
    mistakes = []
    for switches, message in _FOLD_MISTAKES:
        wrong = _fold(conv1_weight, bn, **switches)
        if wrong is not None and not all(torch.allclose(w, e, rtol=1e-9, atol=1e-12) for w, e in zip(wrong, expected)):
            mistakes.append((wrong, message))
    return Case(name, (conv1_weight, bn), expected, why, rtol=1e-9, atol=1e-12, mistakes=mistakes)


def _random_fold_cases(rng: np.random.Generator) -> List[Case]:
    """Hidden cases: random widths, eps and BatchNorm statistics."""
    generator = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
    return [_fold_case(f"hidden case {index + 1}", "F.conv2d(x, weight, bias) == BN(conv1(x)) for random tensors",
                       generator, int(rng.integers(1, 9)), int(rng.integers(1, 17)), float(rng.choice([1e-5, 1e-3, 0.5])))
            for index in range(3)]


#: PyTorch's own fusion helpers: they are the answer, so the exercise forbids them.
_FUSION = ("torch.nn.utils.fusion.fuse_conv_bn_weights", "torch.nn.utils.fusion.fuse_conv_bn_eval",
           "torch.nn.utils.fusion.fuse_linear_bn_weights", "torch.nn.utils.fusion.fuse_linear_bn_eval")


def check_fold_batchnorm(fold_batchnorm: Callable[..., object]):
    """Check ``fold_batchnorm(conv1_weight, bn) -> (weight, bias)``.

    ``conv1_weight`` is ``(C/r, C, 1, 1)`` (no bias) and ``bn`` the dict of :func:`bn_tensors`.
    Expected: ``scale = bn.weight / sqrt(running_var + eps)``, ``weight = conv1_weight * scale``
    row by row (output channel ``o``), ``bias = bn.bias - running_mean * scale``: the only weight and
    bias for which ``F.conv2d(x, weight, bias)`` equals eval-mode BatchNorm of ``conv1(x)`` for every
    ``x``. Named slips: eps, sqrt, the mean term (missing, unscaled, wrong sign), the scaled bias,
    the unscaled weight, the scale on the columns. ``torch.nn.utils.fusion`` and the library are
    forbidden.
    """
    generator = torch.Generator().manual_seed(11)
    # (name, why, hidden, channels, eps)
    table = [
        ("8 hidden from 32 channels", "r = 4, BatchNorm's default eps", 8, 32, 1e-5),
        ("a large eps", "eps = 0.5 is part of the variance: sqrt(running_var + eps)", 4, 8, 0.5),
        ("square 6x6", "C/r = C (r = 1): the scale goes on the rows (output channels), not the columns", 6, 6, 1e-3),
        ("one hidden channel", "C/r = 1", 1, 5, 1e-5),
        ("16 hidden from 64 channels", "RedNet's stage-1 generator: C = 64, r = 4", 16, 64, 1e-5),
    ]
    cases = [_fold_case(name, why, generator, hidden, channels, eps) for name, why, hidden, channels, eps in table]
    return run_cases("fold_batchnorm", fold_batchnorm, cases,
                     rule=Rule(what="the folding of BatchNorm into the weights", forbid=_FUSION),
                     random_cases=_random_fold_cases)


# --------------------------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------------------------

QUESTIONS: Dict[str, Question] = {
    "kernel_ratio": Question(
        prompt="K = 7, 16 channels per group, stride 1: how many times more values does phi write (the "
               "kernels) than the input feature map holds?",
        answer=49 / 16,
        rtol=0.025,  # 3, "about three times", is accepted too
        explanation="Per pixel phi writes G*K*K values and the input holds C = 16*G, so the ratio is "
                    "K*K / group_channels = 49/16 = 3.06, about 3, whatever C, B, H and W are.",
        mistakes=[
            (49.0, "that is K*K per channel, but one kernel is shared by the 16 channels of its group"),
            (16 / 49, "upside down: kernels / input, not input / kernels"),
            (49 / 16 / 4, "that is stride 2 (one kernel per 2x2 block); the question is about stride 1"),
            (49 / 4, "r = 4 is the generator's hidden width; it does not change how many kernel values come out"),
        ],
    ),
    "edge_kernel": Question(
        prompt="Before training: once the involution layer imitates the bilateral filter, what will its "
               "kernel at a pixel on a straight edge look like?",
        choices={
            "a": "a round blob, like the kernel in a flat region",
            "b": "its weight lies on the pixel's own side of the edge (along the edge), hardly any across it",
            "c": "an edge detector: positive on one side, negative on the other",
            "d": "the same kernel as at every other pixel",
        },
        answer="b",
        explanation="The target averages only similar neighbours, so the output at an edge pixel must not mix "
                    "in the other side; phi sees the edge in its input features and puts the weight along it.",
        wrong={
            "a": "a round blob at an edge would average both sides and blur the edge; the bilateral filter keeps it",
            "c": "an edge detector outputs differences (near 0 in flat regions); the target is a smoothed image, "
                 "so the weights are positive and add up to about 1",
            "d": "that is a convolution; involution generates each pixel's kernel from that pixel's features",
        },
    ),
    "static_conv": Question(
        prompt="A static 7x7 convolution trained on the same task (one kernel for every pixel): which is true?",
        choices={
            "a": "it can match the bilateral filter exactly, given enough training",
            "b": "it learns one compromise: a blur mild enough not to ruin the edges, too weak to clean flat regions",
            "c": "it learns the identity kernel, because that is the best a static filter can do",
            "d": "it learns an edge detector",
        },
        answer="b",
        explanation="The best single kernel trades smoothing in flat regions against blurring edges; the notebook "
                    "computes that best static filter exactly (least squares) and the involution beats it.",
        wrong={
            "a": "the bilateral filter's kernel changes with the image content; a convolution has one kernel for "
                 "every pixel, so no amount of training makes it edge-aware",
            "c": "the identity leaves all the noise; some blur lowers the error in the flat regions, which are most "
                 "of the image",
            "d": "the target is a smoothed image, not edges",
        },
    ),
}
