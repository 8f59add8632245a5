"""Checkers for notebook 04 (kernel generation).

The expected answers come from the library's :class:`~involution_edu.module.Involution`
(:meth:`~involution_edu.module.Involution.generate_kernels`, also on the shapes-only ``meta`` device) and from
PyTorch's own ``view``; :func:`~involution_edu.exercises.framework.run_cases` prints the verdict.

Exercises checked here::

    generated_kernel_elements(batch, channels, height, width, kernel_size, group_channels, stride=1) -> int
        the number of values in the kernels (B, G, K, K, H', W'), G = C // group_channels, H' = ceil(H / stride)
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
    "check_generated_kernel_elements",
    "check_reshape_kernels",
    "check_generate_kernels",
    "bn_tensors",
    "seeded_involution",
]


def check_generated_kernel_elements(generated_kernel_elements: Callable[..., object]) -> bool:
    """Check ``generated_kernel_elements(batch, channels, height, width, kernel_size, group_channels, stride=1)``.

    The answer is the number of values in the generated kernel tensor ``(B, G, K, K, H', W')`` with
    ``G = C // group_channels`` and ``H' = ceil(H / stride)``, ``W' = ceil(W / stride)``. The expected
    count is ``Involution(...).generate_kernels(x).numel()``, run on PyTorch's ``meta`` device (shapes
    only: no memory is allocated and nothing is computed).
    """
    # (name, why, batch, channels, height, width, kernel_size, group_channels, stride)
    table = [
        ("RedNet-50 stage 1: B=8, C=64, 56x56, K=7", "the paper's defaults: G = 64 // 16 = 4 groups of K*K = 49 values "
         "per position, about 3x the input's B*C*H*W", 8, 64, 56, 56, 7, 16, 1),
        ("one group: C=16, K=3", "G = C // group_channels = 1: all channels share one kernel per position",
         2, 16, 5, 6, 3, 16, 1),
        ("stride 2, even size 8x8", "one kernel per OUTPUT position: H' = ceil(H / stride), here 4",
         1, 32, 8, 8, 7, 16, 2),
        ("stride 2, odd size 7x9", "H' = ceil(7 / 2) = 4, W' = ceil(9 / 2) = 5: rounded up, the last partial "
         "window still gets a kernel", 2, 16, 7, 9, 5, 8, 2),
        ("K=1", "a 1x1 kernel: one value per group and position", 1, 32, 6, 4, 1, 16, 1),
        ("group_channels=1", "one channel per group: G = C", 1, 8, 5, 5, 3, 1, 1),
        ("stride 3, non-square 10x5", "H' = ceil(10 / 3) = 4 and W' = ceil(5 / 3) = 2, each axis on its own",
         1, 48, 10, 5, 3, 16, 3),
    ]
    cases: List[Case] = []
    for name, why, batch, channels, height, width, k, gc, stride in table:
        with torch.device("meta"):
            module = Involution(channels, k, stride, group_channels=gc)
            kernels = module.generate_kernels(torch.empty(batch, channels, height, width))
        cases.append(Case(name, (batch, channels, height, width, k, gc, stride), kernels.numel(), why))
    return run_cases("generated_kernel_elements", generated_kernel_elements, cases)


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
