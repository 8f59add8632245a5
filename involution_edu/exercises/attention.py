"""Checkers for notebook 09 (going further: local self-attention as an involution).

Exercises checked here (PyTorch tensors, involution layout ``(B, G, K, K, H, W)``)::

    window_softmax(logits)                        logits: (B, G, K, K, H, W) -> same shape
        softmax over the K x K window of every position, taken jointly over both window
        axes; taps whose logit is -inf get weight 0; must not overflow for large logits.

    attention_kernels(q, k, kernel_size, heads)   q, k: (B, D, H, W) -> (B, heads, K, K, H, W)
        the attention weights of local multi-head self-attention as involution kernels:
        head h uses the channel block [h * D/heads, (h+1) * D/heads) of q and k,
        logit[b, h, u, v, i, j] = q_h[b, :, i, j] . k_h[b, :, i + u - p, j + v - p] / sqrt(D/heads)
        with p = (K - 1) // 2; window taps outside the image are left out of the softmax
        (weight exactly 0); softmax over the K x K window.

The expected answers come from the reference functions below, written as plainly as possible
(one window tap at a time) and tested against explicit loops in the test suite.
"""

from __future__ import annotations

import math
from typing import Callable, List

import torch
import torch.nn.functional as F

from .framework import Case, run_cases

__all__ = [
    "window_softmax_reference",
    "attention_kernels_reference",
    "check_window_softmax",
    "check_attention_kernels",
]


def window_softmax_reference(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the window axes (2, 3) of ``logits: (B, G, K, K, H, W)``, jointly; -inf -> weight 0."""
    if logits.dim() != 6:
        raise ValueError(f"logits must have 6 dimensions (B, G, K, K, H, W), got shape {tuple(logits.shape)}")
    batch, groups, k1, k2, height, width = logits.shape
    flat = logits.reshape(batch, groups, k1 * k2, height, width)
    return torch.softmax(flat, dim=2).reshape(logits.shape)


def attention_kernels_reference(q: torch.Tensor, k: torch.Tensor, kernel_size: int, heads: int) -> torch.Tensor:
    """Local multi-head attention weights in involution layout.

    Args:
        q, k: queries and keys ``(B, D, H, W)``; ``D`` divisible by ``heads``.
        kernel_size: odd window size ``K``.
        heads: number of heads ``G``; head ``h`` owns channels ``h*D/G .. (h+1)*D/G - 1``.

    Returns:
        ``(B, G, K, K, H, W)``: for every head and position, softmax weights over the ``K x K``
        window (scaled dot products; taps outside the image have weight 0).
    """
    if q.shape != k.shape or q.dim() != 4:
        raise ValueError(f"q and k must both be (B, D, H, W) of the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    batch, dims, height, width = q.shape
    if heads < 1 or dims % heads:
        raise ValueError(f"heads must divide the {dims} query channels, got {heads}")
    head_dims, pad = dims // heads, (kernel_size - 1) // 2
    q_heads = q.reshape(batch, heads, head_dims, height, width)
    k_padded = F.pad(k, (pad, pad, pad, pad)).reshape(batch, heads, head_dims, height + 2 * pad, width + 2 * pad)
    inside = F.pad(torch.ones(height, width, dtype=torch.bool), (pad, pad, pad, pad))
    logits = q.new_empty(batch, heads, kernel_size, kernel_size, height, width)
    for u in range(kernel_size):
        for v in range(kernel_size):
            k_shifted = k_padded[..., u : u + height, v : v + width]  # key at (i + u - p, j + v - p)
            tap = (q_heads * k_shifted).sum(dim=2) / math.sqrt(head_dims)
            logits[:, :, u, v] = tap.masked_fill(~inside[u : u + height, v : v + width], float("-inf"))
    return window_softmax_reference(logits)


def check_window_softmax(window_softmax: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """Check ``window_softmax(logits: (B, G, K, K, H, W)) -> (B, G, K, K, H, W)``."""
    generator = torch.Generator().manual_seed(9)
    cases: List[Case] = []
    shapes = [
        ("one head, 3x3 window, 2x2 image", "the K*K weights of every window, over BOTH window axes (u, v) together, sum to 1", (1, 1, 3, 3, 2, 2)),
        ("2 heads, 5x5 window, 3x4 image", "several heads and a non-square image: the softmax stays inside each window", (2, 2, 5, 5, 3, 4)),
    ]
    for name, why, shape in shapes:
        logits = torch.randn(shape, generator=generator, dtype=torch.float64) * 3.0
        cases.append(Case(name, (logits.clone(),), window_softmax_reference(logits), why, rtol=1e-6, atol=1e-9))
    large = torch.randn(1, 2, 3, 3, 2, 3, generator=generator, dtype=torch.float64) * 3.0
    large[:, :, :, :, 0, 0] += 1000.0  # one window of large logits
    cases.append(Case("large logits (around 1000)", (large.clone(),), window_softmax_reference(large),
                      "subtract the window's maximum before exp: exp(1000) overflows to inf", rtol=1e-6, atol=1e-9))
    masked = torch.randn(1, 1, 3, 3, 2, 2, generator=generator, dtype=torch.float64)
    masked[:, :, 0, :] = float("-inf")  # the top row of every window lies outside the image
    cases.append(Case("-inf taps (outside the image)", (masked.clone(),), window_softmax_reference(masked),
                      "a tap with logit -inf must get weight exactly 0 (not nan)", rtol=1e-6, atol=1e-9))
    return run_cases("window_softmax", window_softmax, cases)


def check_attention_kernels(attention_kernels: Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]) -> bool:
    """Check ``attention_kernels(q, k, kernel_size, heads) -> (B, heads, K, K, H, W)``."""
    generator = torch.Generator().manual_seed(90)
    # (name, why, batch, dims, height, width, kernel_size, heads, offset): offset > 0 makes every
    # logit large and positive, so taps outside the image would get a negligible weight anyway.
    geometries = [
        ("3 heads, K=1", "a 1x1 window: every weight is 1, shape (B, heads, 1, 1, H, W)", 1, 6, 2, 3, 1, 3, 0.0),
        ("one head, K=3, large positive logits", "scaled dot products q.k / sqrt(D/G), softmax over the K x K window (u = row, v = column offset)", 1, 4, 4, 4, 3, 1, 5.0),
        ("K=5 on a 3x4 image", "taps outside the image are left out of the softmax (weight 0), not treated as zero keys", 1, 3, 3, 4, 5, 1, 0.0),
        ("2 heads, 4 channels", "head h uses the contiguous channel block h*D/G .. (h+1)*D/G - 1 and scales by sqrt(D/G)", 2, 4, 4, 3, 3, 2, 0.0),
        ("4 heads, K=5, 5x6", "everything at once", 2, 8, 5, 6, 5, 4, 0.0),
    ]
    cases: List[Case] = []
    for name, why, batch, dims, height, width, kernel_size, heads, offset in geometries:
        q = torch.randn(batch, dims, height, width, generator=generator, dtype=torch.float64) * 0.2 + offset
        k = torch.randn(batch, dims, height, width, generator=generator, dtype=torch.float64) * 0.2 + offset
        if offset == 0.0:
            q, k = q * 5.0, k * 5.0
        expected = attention_kernels_reference(q, k, kernel_size, heads)
        cases.append(Case(name, (q.clone(), k.clone(), kernel_size, heads), expected, why, rtol=1e-6, atol=1e-9))
    return run_cases("attention_kernels", attention_kernels, cases)
