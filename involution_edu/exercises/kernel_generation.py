"""Checkers for notebook 04 (kernel generation).

The expected answers come from the library's :class:`~involution_edu.module.Involution`
(its parameters and :meth:`~involution_edu.module.Involution.generate_kernels`) and from
PyTorch's own ``view``; :func:`~involution_edu.exercises.framework.run_cases` prints the verdict.

Exercises checked here::

    kernel_generator_param_count(channels, kernel_size, reduction_ratio, group_channels) -> int
    reshape_kernels(flat, groups, kernel_size)
        flat: (B, G*K*K, H, W) -> (B, G, K, K, H, W)
    generate_kernels_student(x, conv1_weight, bn, conv2_weight, conv2_bias, groups, kernel_size)
        x: (B, C, H, W); conv1_weight: (C/r, C, 1, 1); bn: dict of BatchNorm tensors (eval mode);
        conv2_weight: (G*K*K, C/r, 1, 1); conv2_bias: (G*K*K,) -> kernels (B, G, K, K, H, W)
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch

from ..module import Involution
from .framework import Case, run_cases

__all__ = [
    "check_kernel_generator_param_count",
    "check_reshape_kernels",
    "check_generate_kernels",
    "bn_tensors",
    "seeded_involution",
]


def check_kernel_generator_param_count(kernel_generator_param_count: Callable[..., object]) -> bool:
    """Check ``kernel_generator_param_count(channels, kernel_size, reduction_ratio, group_channels)``.

    The expected count is ``sum(p.numel() for p in Involution(...).parameters())``: the learnable
    weights of conv1 (no bias), BatchNorm (scale and shift; running statistics are buffers, not
    parameters) and conv2 (weight and bias).
    """
    # (name, why, channels, kernel_size, reduction_ratio, group_channels)
    table = [
        ("RedNet stage 1: C=64, K=7", "the paper's defaults r = 4, 16 channels per group (G = 4)", 64, 7, 4, 16),
        ("one group: C=16, K=3", "G = C // group_channels = 1", 16, 3, 4, 16),
        ("RedNet stage 4: C=512, K=7", "a wide layer: G = 32 groups, each needs its own K*K kernel", 512, 7, 4, 16),
        ("C=48, K=5, r=2, 8 per group", "other reduction ratio and group size (G = 6)", 48, 5, 2, 8),
        ("C=30, r=4 (C/r rounds down)", "the hidden width is C // r = 7", 30, 3, 4, 10),
        ("K=1", "a 1x1 kernel: conv2 has G outputs", 32, 1, 4, 16),
    ]
    cases: List[Case] = []
    for name, why, channels, k, r, gc in table:
        expected = sum(p.numel() for p in Involution(channels, k, 1, r, gc).parameters())
        cases.append(Case(name, (channels, k, r, gc), expected, why))
    return run_cases("kernel_generator_param_count", kernel_generator_param_count, cases)


def check_reshape_kernels(reshape_kernels: Callable[..., object]) -> bool:
    """Check ``reshape_kernels(flat, groups, kernel_size)``: ``(B, G*K*K, H, W) -> (B, G, K, K, H, W)``.

    The channel axis of the generator's output is group-major: channel ``g*K*K + u*K + v`` holds
    tap ``(u, v)`` of group ``g``, exactly what ``flat.view(B, G, K, K, H, W)`` reads.
    """
    generator = torch.Generator().manual_seed(0)
    # (name, why, batch, groups, kernel_size, height, width)
    table = [
        ("one group, K=3", "the K*K taps in row-major order (u, v): no transposed K axes", 1, 1, 3, 4, 4),
        ("4 groups, K=3", "group-major: channels 0..8 are group 0, 9..17 group 1, ...", 1, 4, 3, 5, 5),
        ("batch 2, 2 groups, K=5, 3x6", "batch and non-square positions stay where they are", 2, 2, 5, 3, 6),
        ("3 groups, K=1", "K = 1: one tap per group", 2, 3, 1, 4, 2),
        ("2 groups, K=7, 1x1 position", "a single position: only the channel axis moves", 1, 2, 7, 1, 1),
    ]
    cases: List[Case] = []
    for name, why, batch, groups, k, height, width in table:
        flat = torch.randn(batch, groups * k * k, height, width, generator=generator, dtype=torch.float64)
        expected = flat.view(batch, groups, k, k, height, width).clone()
        cases.append(Case(name, (flat, groups, k), expected, why, rtol=0.0, atol=0.0))
    return run_cases("reshape_kernels", reshape_kernels, cases)


def bn_tensors(bn: torch.nn.BatchNorm2d) -> Dict[str, object]:
    """The tensors of a BatchNorm layer as a dict: ``weight, bias, running_mean, running_var`` (all
    ``(C/r,)``) and the float ``eps``; detached copies, so the student cannot change the layer."""
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


def check_generate_kernels(generate_kernels_student: Callable[..., object]) -> bool:
    """Check ``generate_kernels_student(x, conv1_weight, bn, conv2_weight, conv2_bias, groups, kernel_size)``.

    The expected kernels are ``Involution.generate_kernels(x)`` in eval mode (BatchNorm uses its
    running statistics) with the same weights; ``bn`` is the dict made by :func:`bn_tensors`.
    """
    # (name, why, batch, channels, height, width, kernel_size, reduction_ratio, group_channels)
    table = [
        ("C=16, K=3, one group", "conv1 (no bias) -> BatchNorm with its running statistics -> ReLU -> conv2 + bias -> view", 1, 16, 5, 5, 3, 4, 16),
        ("C=32, K=3, 4 groups", "group-major view (B, G, K, K, H, W)", 1, 32, 4, 4, 3, 4, 8),
        ("batch 2, odd size 7x5, K=5", "batch, non-square positions; eval-mode BN (running statistics)", 2, 16, 7, 5, 5, 2, 4),
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
        args = (
            x,
            module.conv1.conv.weight.detach().clone(),
            bn_tensors(module.conv1.bn),
            module.conv2.conv.weight.detach().clone(),
            module.conv2.conv.bias.detach().clone(),
            module.groups,
            k,
        )
        cases.append(Case(name, args, expected, why, rtol=1e-9, atol=1e-10))
    return run_cases("generate_kernels_student", generate_kernels_student, cases)
