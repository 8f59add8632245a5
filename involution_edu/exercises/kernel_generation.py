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
    generate_kernels_student(x, conv1_weight, bn, conv2_weight, conv2_bias, groups, kernel_size)
        x: (B, C, H, W); conv1_weight: (C/r, C, 1, 1); bn: dict of BatchNorm tensors (eval mode);
        conv2_weight: (G*K*K, C/r, 1, 1); conv2_bias: (G*K*K,) -> kernels (B, G, K, K, H, W)
"""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

from .. import data as _data
from ..module import Involution
from .framework import Case, Question, run_cases

__all__ = [
    "QUESTIONS",
    "check_bilateral_kernels",
    "check_paper_span_from_keras",
    "check_generate_kernels",
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
    cases: List[Case] = []
    for name, why, batch, channels, height, width, k, s, r in table:
        image = _test_image(generator, batch, channels, height, width)
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
        if channels > 1:
            mistakes.append((_bilateral_variant(image, k, s, r, range_mean=True),
                             "the squared colour difference is averaged over channels; the formula sums it"))
        cases.append(Case(name, (image, k, s, r), expected, why, rtol=1e-7, atol=1e-10, mistakes=mistakes))
    return run_cases("bilateral_kernels_student", bilateral_kernels_student, cases,
                     forbidden=(_data.bilateral_kernels, _data.bilateral_filter, ".bilateral_kernels",
                                ".bilateral_filter"),
                     what="the bilateral kernels")


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
    cases: List[Case] = []
    for name, why, groups, k, hidden in table:
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
        cases.append(Case(name, (weight.clone(), bias.clone(), groups, k), expected, why,
                          rtol=0.0, atol=0.0, mistakes=mistakes))
    return run_cases("paper_span_from_keras", paper_span_from_keras, cases)


# --------------------------------------------------------------------------------------------
# Exercise 3: the generator as one function
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


def _generator_variant(x: torch.Tensor, module: Involution, *, batch_stats: bool = False, relu: bool = True,
                       bias: bool = True, norm: bool = True, keras_view: bool = False) -> torch.Tensor:
    """``module.generate_kernels(x)`` (eval mode), or one of the likely wrong versions."""
    bn = module.conv1.bn
    with torch.no_grad():
        z = F.conv2d(x, module.conv1.conv.weight)
        if norm:
            if batch_stats:
                z = F.batch_norm(z, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
            else:
                z = F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)
        if relu:
            z = torch.relu(z)
        flat = F.conv2d(z, module.conv2.conv.weight, module.conv2.conv.bias if bias else None)
        batch, _, height, width = flat.shape
        g, k = module.groups, module.kernel_size
        if keras_view:
            return flat.view(batch, k, k, g, height, width).permute(0, 3, 1, 2, 4, 5).contiguous()
        return flat.view(batch, g, k, k, height, width)


def check_generate_kernels(generate_kernels_student: Callable[..., object]) -> bool:
    """Check ``generate_kernels_student(x, conv1_weight, bn, conv2_weight, conv2_bias, groups, kernel_size)``.

    The expected kernels are ``Involution.generate_kernels(x)`` in eval mode (BatchNorm uses its
    running statistics) with the same weights; ``bn`` is the dict made by :func:`bn_tensors`.
    """
    # (name, why, batch, channels, height, width, kernel_size, reduction_ratio, group_channels)
    table = [
        ("C=16, K=3, one group", "conv1 (no bias) -> BatchNorm with its running statistics -> ReLU -> conv2 + bias "
         "-> view", 1, 16, 5, 5, 3, 4, 16),
        ("C=32, K=3, 4 groups", "group-major view (B, G, K, K, H, W)", 1, 32, 4, 4, 3, 4, 8),
        ("batch 2, odd size 7x5, K=5", "batch, non-square positions; eval-mode BN (running statistics)",
         2, 16, 7, 5, 5, 2, 4),
        ("K=1, 2 groups", "K = 1", 2, 16, 3, 3, 1, 4, 8),
        ("C=64, K=7, paper defaults", "RedNet's setting: r = 4, 16 channels per group", 1, 64, 6, 6, 7, 4, 16),
    ]
    generator = torch.Generator().manual_seed(1)
    cases: List[Case] = []
    for seed, (name, why, batch, channels, height, width, k, r, gc) in enumerate(table):
        module = seeded_involution(channels, k, r, gc, seed)
        x = torch.randn(batch, channels, height, width, generator=generator, dtype=torch.float64)
        with torch.no_grad():
            expected = module.generate_kernels(x)
        mistakes = [
            (_generator_variant(x, module, batch_stats=True),
             "BatchNorm normalised with this batch's own mean and variance (training mode); in evaluation mode "
             "it uses running_mean and running_var"),
            (_generator_variant(x, module, norm=False), "the BatchNorm step is missing between conv1 and the ReLU"),
            (_generator_variant(x, module, relu=False), "the ReLU after the BatchNorm is missing"),
            (_generator_variant(x, module, bias=False), "conv2's bias is missing (the span convolution has one)"),
            (_generator_variant(x, module, keras_view=True),
             "the channels are read as (K, K, G), keras.io's order; the paper's is group-major (G, K, K)"),
        ]
        args = (
            x,
            module.conv1.conv.weight.detach().clone(),
            bn_tensors(module.conv1.bn),
            module.conv2.conv.weight.detach().clone(),
            module.conv2.conv.bias.detach().clone(),
            module.groups,
            k,
        )
        cases.append(Case(name, args, expected, why, rtol=1e-9, atol=1e-10, mistakes=mistakes))
    return run_cases("generate_kernels_student", generate_kernels_student, cases,
                     forbidden=(Involution.generate_kernels, Involution, ".generate_kernels"),
                     what="the kernel generator (conv1, BatchNorm, ReLU, conv2, view)")


# --------------------------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------------------------

QUESTIONS: Dict[str, Question] = {
    "kernel_ratio": Question(
        prompt="K = 7, 16 channels per group, stride 1: how many times more values does phi write (the "
               "kernels) than the input feature map holds?",
        answer=49 / 16,
        explanation="Per pixel phi writes G*K*K values and the input holds C = 16*G, so the ratio is "
                    "K*K / group_channels = 49/16, about 3, whatever C, B, H and W are.",
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
