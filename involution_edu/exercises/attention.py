"""Checkers, references and questions for notebook 09 (dynamic convolution, local self-attention
and involution side by side).

Exercises checked here (PyTorch tensors, involution layout ``(B, G, K, K, H, W)``)::

    window_softmax(logits)                        logits: (B, G, K, K, H, W) -> same shape
        softmax over the K x K window of every position, taken jointly over both window
        axes; taps whose logit is -inf get weight 0; must not overflow for large logits.
        Written without torch.softmax / F.softmax / Tensor.softmax / nn.Softmax.

    attention_as_involution(x, w_query, w_key, w_value, heads, kernel_size)
        x: (B, C, H, W); w_query, w_key, w_value: (C, C) (1x1 projections, no bias)
        -> (values: (B, C, H, W), kernels: (B, heads, K, K, H, W)) such that
        involution(values, kernels) is local multi-head self-attention:
        head h owns the channel block [h*C/heads, (h+1)*C/heads) of q, k and v,
        logit[b, h, u, v, i, j] = q_h[:, i, j] . k_h[:, i + u - p, j + v - p] / sqrt(C/heads),
        p = (K - 1) // 2, softmax over the window taps that lie inside the image.

    local_attention_costs(channels, height, width, kernel_size, heads) -> (params, madds)
        parameters and multiply-adds of one LocalSelfAttention2d layer on one image: three
        bias-free 1x1 projections C -> C, query-key products over every window tap, and the
        weighted sum of the values (softmax not counted).

    kernel_footprint(kind, height, width, kernel_size, row, col, stride=1) -> set of (i, j)
        the output positions whose kernel changes when input pixel (row, col) changes, for
        kind "involution" (eval mode, any stride: kernels made from the stride-pooled pixel),
        "attention" (local self-attention, stride 1) or "dynamic" (dynamic convolution, stride 1).

Every checker enforces its :class:`~involution_edu.exercises.framework.Rule` at run time and adds
hidden random cases to its fixed ones (:func:`~involution_edu.exercises.framework.run_cases`).

The expected answers come from the reference functions below, written as plainly as possible
(one window tap at a time) and tested against explicit loops in the test suite.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, List, Set, Tuple

import numpy as np

import torch
import torch.nn.functional as F

from .framework import Case, Question, Rule, run_cases

__all__ = [
    "window_softmax_reference",
    "attention_logits_reference",
    "attention_as_involution_reference",
    "local_attention_reference",
    "local_attention_costs_reference",
    "kernel_footprint_reference",
    "check_kernel_footprint",
    "check_window_softmax",
    "check_attention_as_involution",
    "check_local_attention_costs",
    "QUESTIONS",
]


def window_softmax_reference(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the window axes (2, 3) of ``logits: (B, G, K, K, H, W)``, jointly; -inf -> weight 0."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 6:
        raise ValueError(f"logits must be a 6-dimensional tensor (B, G, K, K, H, W), got {getattr(logits, 'shape', logits)!r}")
    batch, groups, k1, k2, height, width = logits.shape
    flat = logits.reshape(batch, groups, k1 * k2, height, width)
    return torch.softmax(flat, dim=2).reshape(logits.shape)


def attention_logits_reference(q: torch.Tensor, k: torch.Tensor, kernel_size: int, heads: int,
                               mask_outside: bool = True, scale: bool = True, modulo_heads: bool = False) -> torch.Tensor:
    """Window logits of local multi-head attention, ``q, k: (B, D, H, W) -> (B, heads, K, K, H, W)``.

    ``logit[b, h, u, v, i, j] = q_h[b, :, i, j] . k_h[b, :, i + u - p, j + v - p] / sqrt(D / heads)``,
    ``-inf`` where the tap lies outside the image. The keyword flags compute likely mistakes
    (padded taps as zero keys, no scaling, heads as channels ``c % heads``).
    """
    if q.shape != k.shape or q.dim() != 4:
        raise ValueError(f"q and k must both be (B, D, H, W) of the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    batch, dims, height, width = q.shape
    if heads < 1 or dims % heads:
        raise ValueError(f"heads must divide the {dims} query channels, got {heads}")
    head_dims, pad = dims // heads, (kernel_size - 1) // 2
    if modulo_heads:
        order = torch.arange(dims).view(head_dims, heads).t().reshape(-1)  # head h: channels c with c % heads == h
        q, k = q[:, order], k[:, order]
    q_heads = q.reshape(batch, heads, head_dims, height, width)
    k_padded = F.pad(k, (pad, pad, pad, pad)).reshape(batch, heads, head_dims, height + 2 * pad, width + 2 * pad)
    inside = F.pad(torch.ones(height, width, dtype=torch.bool), (pad, pad, pad, pad))
    logits = q.new_empty(batch, heads, kernel_size, kernel_size, height, width)
    for u in range(kernel_size):
        for v in range(kernel_size):
            k_shifted = k_padded[..., u : u + height, v : v + width]  # key at (i + u - p, j + v - p)
            tap = (q_heads * k_shifted).sum(dim=2)
            if scale:
                tap = tap / math.sqrt(head_dims)
            if mask_outside:
                tap = tap.masked_fill(~inside[u : u + height, v : v + width], float("-inf"))
            logits[:, :, u, v] = tap
    return logits


def _project(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A bias-free 1x1 convolution: ``weight (C_out, C_in)``, ``x (B, C_in, H, W) -> (B, C_out, H, W)``."""
    return torch.einsum("oc,bchw->bohw", weight, x)


def attention_as_involution_reference(x: torch.Tensor, w_query: torch.Tensor, w_key: torch.Tensor, w_value: torch.Tensor,
                                      heads: int, kernel_size: int, **mistake: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(values, kernels)`` with ``involution(values, kernels)`` = local multi-head self-attention.

    ``values = W_v x`` ``(B, C, H, W)``; ``kernels = softmax over the window of the logits``
    ``(B, heads, K, K, H, W)``, zero on taps outside the image.
    """
    q, k = _project(x, w_query), _project(x, w_key)
    values = x if mistake.get("no_value_projection") else _project(x, w_value)
    logits = attention_logits_reference(q, k, kernel_size, heads, mask_outside=not mistake.get("padded_keys"),
                                        scale=not mistake.get("no_scale"), modulo_heads=bool(mistake.get("modulo_heads")))
    if mistake.get("one_axis"):
        return values, torch.softmax(logits, dim=3)
    return values, window_softmax_reference(logits)


def local_attention_reference(x: torch.Tensor, w_query: torch.Tensor, w_key: torch.Tensor, w_value: torch.Tensor,
                              heads: int, kernel_size: int) -> torch.Tensor:
    """Local multi-head self-attention ``(B, C, H, W) -> (B, C, H, W)``, computed tap by tap.

    ``y[b, c, i, j] = sum_{u,v} A[b, h(c), u, v, i, j] * (W_v x)[b, c, i + u - p, j + v - p]``
    with ``h(c) = c // (C / heads)``; taps outside the image are left out.
    """
    values, kernels = attention_as_involution_reference(x, w_query, w_key, w_value, heads, kernel_size)
    batch, channels, height, width = values.shape
    pad = (kernel_size - 1) // 2
    padded = F.pad(values, (pad, pad, pad, pad)).reshape(batch, heads, channels // heads, height + 2 * pad, width + 2 * pad)
    out = values.new_zeros(batch, heads, channels // heads, height, width)
    for u in range(kernel_size):
        for v in range(kernel_size):
            out = out + kernels[:, :, u, v].unsqueeze(2) * padded[..., u : u + height, v : v + width]
    return out.reshape(batch, channels, height, width)


def local_attention_costs_reference(channels: int, height: int, width: int, kernel_size: int, heads: int) -> Tuple[int, int]:
    """``(parameters, multiply-adds)`` of one local self-attention layer on one ``C x H x W`` image.

    Parameters: three bias-free 1x1 projections, ``3 C^2`` (``heads`` does not change it).
    Multiply-adds: projections ``3 C^2 H W``; query-key products ``H W K^2 C`` (each head:
    ``K^2`` dot products of length ``C / heads`` per position); aggregation ``H W K^2 C``.
    Every tap is counted, padded ones too (as FLOP counters do for convolutions).
    """
    for name, value in (("channels", channels), ("height", height), ("width", width), ("kernel_size", kernel_size),
                        ("heads", heads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if channels % heads:
        raise ValueError(f"heads must divide channels ({channels}), got {heads}")
    positions, taps = height * width, kernel_size * kernel_size
    return 3 * channels * channels, 3 * channels * channels * positions + 2 * positions * taps * channels


FOOTPRINT_KINDS = ("involution", "attention", "dynamic")


def kernel_footprint_reference(kind: str, height: int, width: int, kernel_size: int, row: int, col: int,
                               stride: int = 1) -> Set[Tuple[int, int]]:
    """The output positions ``(i, j)`` whose kernel changes when input pixel ``(row, col)`` changes.

    ``"involution"`` (eval mode): the kernel at ``(i, j)`` is made from the ``stride x stride``
    average-pooled block ``(i, j)`` alone, so only ``(row // stride, col // stride)``.
    ``"attention"`` (stride 1): the kernel at ``(i, j)`` reads the query at ``(i, j)`` and the keys of
    its window, ``|row - i| <= p`` and ``|col - j| <= p`` with ``p = (K - 1) // 2``, inside the image.
    ``"dynamic"`` (stride 1): one kernel per image, mixed from the global average: every position.
    """
    if kind not in FOOTPRINT_KINDS:
        raise ValueError(f"kind must be one of {FOOTPRINT_KINDS}, got {kind!r}")
    if kind != "involution" and stride != 1:
        raise ValueError(f"stride must be 1 for {kind!r}, got {stride}")
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(f"(row, col) must lie inside the {height} x {width} image, got {(row, col)}")
    if kind == "involution":
        return {(row // stride, col // stride)}
    if kind == "dynamic":
        return {(i, j) for i in range(height) for j in range(width)}
    pad = (kernel_size - 1) // 2
    return {(i, j) for i in range(max(0, row - pad), min(height, row + pad + 1))
            for j in range(max(0, col - pad), min(width, col + pad + 1))}


# --- checkers -----------------------------------------------------------------------------------


def _softmax_shortcuts() -> list:
    return [torch.softmax, F.softmax, torch.nn.Softmax, torch.special.softmax, F.log_softmax, torch.log_softmax,
            ".softmax", ".log_softmax", "torch.nn.functional.softmax", window_softmax_reference]


def check_window_softmax(window_softmax: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """Check ``window_softmax(logits: (B, G, K, K, H, W)) -> (B, G, K, K, H, W)`` (no library softmax)."""
    generator = torch.Generator().manual_seed(9)
    cases: List[Case] = []

    def one_axis(logits):  # likely mistake: softmax over the column offsets only
        return torch.softmax(logits, dim=3)

    def naive(logits):  # likely mistake: no max subtraction
        e = logits.exp()
        return e / e.sum(dim=(2, 3), keepdim=True)

    def over_positions(logits):  # likely mistake: normalise over the image instead of the window
        flat = logits.flatten(4, 5)
        return torch.softmax(flat, dim=4).view_as(logits)

    shapes = [
        ("one head, 3x3 window, 2x2 image", "the K*K weights of every window, over BOTH window axes (u, v) together, sum to 1",
         (1, 1, 3, 3, 2, 2)),
        ("2 heads, 5x5 window, 3x4 image, batch 2", "several heads and a non-square image: the softmax stays inside each window",
         (2, 2, 5, 5, 3, 4)),
        ("K = 1", "a 1x1 window: every weight is exactly 1", (1, 3, 1, 1, 2, 3)),
    ]
    for name, why, shape in shapes:
        logits = torch.randn(shape, generator=generator, dtype=torch.float64) * 3.0
        expected = window_softmax_reference(logits)
        mistakes = [(one_axis(logits), "you normalised over one window axis only; flatten (u, v) and normalise over all K*K taps"),
                    (over_positions(logits), "you normalised over the image positions (i, j); the softmax runs over the window taps (u, v)")]
        cases.append(Case(name, (logits.clone(),), expected, why, rtol=1e-6, atol=1e-9,
                          mistakes=[(w, m) for w, m in mistakes if w.shape == expected.shape]))
    large = torch.randn(1, 2, 3, 3, 2, 3, generator=generator, dtype=torch.float64) * 3.0
    large[:, :, :, :, 0, 0] += 1000.0  # one window of large logits
    cases.append(Case("large logits (around 1000)", (large.clone(),), window_softmax_reference(large),
                      "subtract the window's maximum before exp: exp(1000) overflows to inf", rtol=1e-6, atol=1e-9,
                      mistakes=[(naive(large), "exp(1000) overflows to inf and inf/inf is NaN: subtract each window's maximum first")]))
    masked = torch.randn(1, 1, 3, 3, 2, 2, generator=generator, dtype=torch.float64)
    masked[:, :, 0, :] = float("-inf")  # the top row of every window lies outside the image
    zeroed = masked.clone()
    zeroed[:, :, 0, :] = 0.0
    cases.append(Case("-inf taps (outside the image)", (masked.clone(),), window_softmax_reference(masked),
                      "a tap with logit -inf must get weight exactly 0 (not nan)", rtol=1e-6, atol=1e-9,
                      mistakes=[(window_softmax_reference(zeroed), "you replaced -inf by 0: a tap outside the image must get weight 0, "
                                                                   "not exp(0) / sum")]))
    def random_cases(rng: np.random.Generator) -> List[Case]:
        drawn = []
        for _ in range(2):
            k = int(rng.choice([1, 3, 5]))
            shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), k, k, int(rng.integers(1, 5)), int(rng.integers(1, 5)))
            logits = torch.from_numpy(rng.standard_normal(shape) * float(rng.choice([1.0, 30.0])))
            logits = logits + float(rng.choice([0.0, 700.0]))
            if k > 1:
                logits[:, :, 0, :] = float("-inf")  # a row of taps outside the image
            drawn.append(Case(f"random logits {tuple(shape)}", (logits.clone(),), window_softmax_reference(logits),
                              "every window's K*K weights are e^l / sum e^l over both window axes, -inf taps get 0, "
                              "and shifting all logits of a window changes nothing", rtol=1e-6, atol=1e-9))
        return drawn

    rule = Rule("the softmax over the window", families=["softmax"], forbid=[window_softmax_reference])
    return run_cases("window_softmax", window_softmax, cases, rule=rule, random_cases=random_cases)


# (name, why, batch, channels, height, width, kernel_size, heads)
_MAPPING_CASES = [
    ("one head, K = 3, 4x4", "values = W_v x; kernels = softmax over the window of q . k / sqrt(C/heads)", 1, 4, 4, 4, 3, 1),
    ("K = 5 on a 3x4 image", "taps outside the image are LEFT OUT of the softmax (weight 0), not treated as zero keys "
     "(a zero key gives logit 0, i.e. weight exp(0) / sum)", 1, 3, 3, 4, 5, 1),
    ("2 heads, 4 channels, batch 2", "head h owns the contiguous channel block h*C/heads .. (h+1)*C/heads - 1 of q, k "
     "and v: heads are involution groups", 2, 4, 4, 3, 3, 2),
    ("3 heads, K = 1", "a 1x1 window: every kernel value is 1 and the layer is the value projection", 1, 6, 2, 3, 1, 3),
    ("4 heads, K = 5, 5x6, batch 2", "everything at once", 2, 8, 5, 6, 5, 4),
]


@functools.lru_cache(maxsize=1)
def _mapping_cases() -> Tuple[Case, ...]:
    """The fixed cases of :func:`check_attention_as_involution` with their named mistakes (built once)."""
    generator = torch.Generator().manual_seed(90)
    cases: List[Case] = []
    for name, why, batch, channels, height, width, kernel_size, heads in _MAPPING_CASES:
        x = torch.randn(batch, channels, height, width, generator=generator, dtype=torch.float64)
        weights = [torch.randn(channels, channels, generator=generator, dtype=torch.float64) * 1.5 for _ in range(3)]
        args = (x, *weights, heads, kernel_size)
        values, kernels = attention_as_involution_reference(*args)
        mistakes = []
        for flag, message in (
            ("padded_keys", "taps outside the image must be left out of the softmax (logit -inf, weight 0); a zero-padded "
                            "key gives logit 0 and a weight of exp(0) / sum"),
            ("no_scale", "the logits are q . k / sqrt(C / heads): you left out the scaling"),
            ("modulo_heads", "head h owns the contiguous channels h*C/heads .. (h+1)*C/heads - 1 (the involution's groups), "
                             "not the channels c with c % heads == h"),
            ("no_value_projection", "the values are W_v x (a 1x1 convolution before the aggregation), not x itself"),
            ("one_axis", "the softmax runs over all K*K taps of the window together, not over one window axis"),
        ):
            try:
                wrong = attention_as_involution_reference(*args, **{flag: True})
            except Exception:  # a mistake that is not defined for this case (e.g. one head)
                continue
            if not all(torch.allclose(a, b, atol=1e-10) for a, b in zip(wrong, (values, kernels))):
                mistakes.append((wrong, message))
        cases.append(Case(name, args, (values, kernels), why, rtol=1e-6, atol=1e-9, mistakes=mistakes))
    return tuple(cases)


def check_attention_as_involution(attention_as_involution: Callable[..., object]) -> bool:
    """Check ``attention_as_involution(x, w_query, w_key, w_value, heads, kernel_size) -> (values, kernels)``."""
    # fresh copies of the inputs on every call: a learner's function that writes into them cannot spoil the next check
    cases = [dataclasses.replace(case, args=tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in case.args))
             for case in _mapping_cases()]

    def random_cases(rng: np.random.Generator) -> List[Case]:
        heads = int(rng.choice([1, 2, 3]))
        channels, kernel_size = heads * int(rng.integers(1, 4)), int(rng.choice([1, 3, 5]))
        x = torch.from_numpy(rng.standard_normal((int(rng.integers(1, 3)), channels, int(rng.integers(2, 6)),
                                                  int(rng.integers(2, 6)))))
        weights = [torch.from_numpy(rng.standard_normal((channels, channels)) * 1.5) for _ in range(3)]
        args = (x, *weights, heads, kernel_size)
        return [Case(f"random: C = {channels}, {heads} heads, K = {kernel_size}, x {tuple(x.shape)}", args,
                     attention_as_involution_reference(*args),
                     "values = W_v x and kernels = the window softmax of q . k / sqrt(C/heads) over the taps inside "
                     "the image, head h = the h-th channel block", rtol=1e-6, atol=1e-9)]

    # The notebook's own attention module would answer the exercise: its class (whatever the learner's
    # globals call it) is forbidden at run time, with every method, as are the references above.
    module_class = _notebook_attention_class(attention_as_involution)
    forbid = [attention_as_involution_reference, local_attention_reference, attention_logits_reference]
    if module_class is not None:
        forbid += [value for value in vars(module_class).values() if callable(value)]
    rule = Rule("the mapping from attention to involution", forbid=forbid)
    return run_cases("attention_as_involution", attention_as_involution, cases, rule=rule, random_cases=random_cases)


def _notebook_attention_class(candidate: Callable[..., object]):
    """The notebook's ``LocalSelfAttention2d`` class, looked up in the candidate's globals and closure (None if absent)."""
    try:
        found = getattr(candidate, "__globals__", {}).get("LocalSelfAttention2d")
        code, cells = getattr(candidate, "__code__", None), getattr(candidate, "__closure__", None) or ()
        if not isinstance(found, type) and code is not None:
            for name, cell in zip(code.co_freevars, cells):
                if name == "LocalSelfAttention2d":
                    found = cell.cell_contents
        return found if isinstance(found, type) else None
    except Exception:
        return None


# (name, why, channels, height, width, kernel_size, heads)
_COST_CASES = [
    ("C = 64, 28x28, K = 7, 4 heads", "params: W_q, W_k, W_v, each C x C; madds: 3 projections + q.k + aggregation", 64, 28, 28, 7, 4),
    ("one head", "the number of heads changes neither count: each head does K^2 dot products of length C/heads", 64, 28, 28, 7, 1),
    ("not square, K = 3", "H x W positions, each with K^2 taps", 32, 10, 6, 3, 2),
    ("K = 1", "a 1x1 window: the layer is (almost) the three projections", 16, 5, 5, 1, 4),
    ("C = 8 per head", "heads = C/8", 48, 7, 9, 5, 6),
]


def check_local_attention_costs(local_attention_costs: Callable[..., object]) -> bool:
    """Check ``local_attention_costs(channels, height, width, kernel_size, heads) -> (params, madds)``."""
    cases: List[Case] = []
    for name, why, channels, height, width, kernel_size, heads in _COST_CASES:
        params, madds = local_attention_costs_reference(channels, height, width, kernel_size, heads)
        positions, taps = height * width, kernel_size * kernel_size
        candidates = [
            ((2 * channels * channels, madds - channels * channels * positions),
             "you left out the value projection W_v: attention weighs W_v x, not x"),
            ((params, madds - positions * taps * channels), "you counted only one of the two window products: the query-key "
                                                           "logits AND the weighted sum of the values each cost H*W*K^2*C"),
            ((params, madds * heads - (heads - 1) * 3 * channels * channels * positions),
             "each head's dot products have length C/heads, so all heads together cost H*W*K^2*C, not heads times that"),
            ((params + 3 * channels, madds), "the projections have no bias here"),
            ((params, 3 * channels * channels * positions), "you counted only the projections; the window products cost "
                                                            "2*H*W*K^2*C more"),
            ((params, madds - 3 * channels * channels * positions + 3 * channels * channels),
             "the 1x1 projections run at every position: 3*C^2*H*W multiply-adds, not 3*C^2"),
        ]
        mistakes = [(value, message) for value, message in candidates if value != (params, madds)]
        cases.append(Case(name, (channels, height, width, kernel_size, heads), (params, madds), why, rtol=0, atol=0,
                          mistakes=mistakes))
    def random_cases(rng: np.random.Generator) -> List[Case]:
        heads = int(rng.integers(1, 9))
        args = (heads * int(rng.integers(1, 17)), int(rng.integers(1, 40)), int(rng.integers(1, 40)),
                int(rng.choice([1, 3, 5, 7, 9])), heads)
        return [Case(f"random: C, H, W, K, heads = {args}", args, local_attention_costs_reference(*args),
                     "the counts as formulas of C, H, W and K (a table of the fixed cases does not generalise)",
                     rtol=0, atol=0)]

    rule = Rule("the count", families=["torch"])
    return run_cases("local_attention_costs", local_attention_costs, cases, rule=rule, random_cases=random_cases)


# (name, why, kind, height, width, kernel_size, row, col, stride)
_FOOTPRINT_CASES = [
    ("involution, middle pixel", "involution's kernel at (i, j) is made from the pixel (i, j) alone", "involution",
     9, 9, 7, 4, 4, 1),
    ("attention, middle pixel, K = 3", "the pixel is a key in the window of every position within p = 1 of it",
     "attention", 9, 9, 3, 4, 4, 1),
    ("attention, corner pixel, K = 7", "windows of positions outside the image do not exist: clip to the image",
     "attention", 10, 10, 7, 0, 0, 1),
    ("attention, edge pixel, K = 5, 6x9", "clipped on one side only; rows and columns are independent",
     "attention", 6, 9, 5, 5, 3, 1),
    ("attention, K = 5 on a 2x3 image", "a window larger than the image: every position", "attention", 2, 3, 5, 1, 1, 1),
    ("attention, K = 1", "a 1x1 window: the kernel reads the pixel itself", "attention", 4, 5, 1, 2, 3, 1),
    ("dynamic convolution", "one kernel per image, mixed from the global average: every position changes",
     "dynamic", 5, 6, 3, 2, 2, 1),
    ("involution, stride 2, odd size", "with stride s the kernels come from the s x s pooled block that holds the pixel",
     "involution", 7, 7, 3, 6, 3, 2),
    ("involution, stride 3", "pooled block (row // 3, col // 3)", "involution", 10, 8, 5, 5, 7, 3),
]


def check_kernel_footprint(kernel_footprint: Callable[..., object]) -> bool:
    """Check ``kernel_footprint(kind, height, width, kernel_size, row, col, stride=1) -> set of (i, j)``."""
    cases: List[Case] = []
    for name, why, kind, height, width, k, row, col, stride in _FOOTPRINT_CASES:
        expected = kernel_footprint_reference(kind, height, width, k, row, col, stride)
        pad = (k - 1) // 2
        candidates = [
            ({(row, col)}, "that is only the pixel itself: which positions READ this pixel when they make their kernel?"),
            ({(i, j) for i in range(row - pad, row + pad + 1) for j in range(col - pad, col + pad + 1)},
             "some of these positions lie outside the image: there is no kernel there (clip to 0 .. H-1, 0 .. W-1)"),
            ({(i, j) for i in range(height) for j in range(width)},
             "every position changes only for dynamic convolution, whose kernel comes from the whole image"),
            ({(i, j) for i in range(max(0, row - k + 1), min(height, row + k)) for j in range(max(0, col - k + 1), min(width, col + k))},
             "the window reaches p = (K - 1) // 2 to each side, not K - 1"),
        ]
        mistakes = [(value, message) for value, message in candidates if value != expected]
        cases.append(Case(name, (kind, height, width, k, row, col), expected, why, kwargs={"stride": stride},
                          rtol=0, atol=0, mistakes=mistakes))

    def random_cases(rng: np.random.Generator) -> List[Case]:
        drawn = []
        for kind in FOOTPRINT_KINDS:
            height, width = int(rng.integers(1, 13)), int(rng.integers(1, 13))
            k = int(rng.choice([1, 3, 5, 7]))
            stride = int(rng.integers(1, 4)) if kind == "involution" else 1
            row, col = int(rng.integers(0, height)), int(rng.integers(0, width))
            args = (kind, height, width, k, row, col)
            drawn.append(Case(f"random: {kind}, {height}x{width}, K = {k}, pixel {(row, col)}, stride {stride}", args,
                              kernel_footprint_reference(*args, stride=stride),
                              {"involution": "only the pooled block that holds the pixel",
                               "attention": "the positions within p of the pixel, clipped to the image",
                               "dynamic": "every position"}[kind], kwargs={"stride": stride}, rtol=0, atol=0))
        return drawn

    rule = Rule("the footprint (reason it out; do not run the layers)", families=["torch"])
    return run_cases("kernel_footprint", kernel_footprint, cases, rule=rule, random_cases=random_cases)


# --- questions ----------------------------------------------------------------------------------

QUESTIONS = {
    "not_involution": Question(
        "Which of these layers can NOT be written as a bias-free 1x1 convolution followed by an involution "
        "(kernels of layout (B, G, K, K, H, W), computed in any way you like)?",
        answer="c",
        choices={
            "a": "single-head local self-attention over a K x K window",
            "b": "dynamic convolution with depthwise kernels (one K x K kernel per channel, mixed per image)",
            "c": "dynamic convolution with dense kernels (C_out x C_in x K x K, mixed per image)",
            "d": "local self-attention with a relative position term added to every logit",
        },
        explanation="An involution computes output channel c from input channel c only (its kernel is shared by "
                    "the channels of a group, never mixes them). A dense dynamic convolution sums over all input "
                    "channels inside its window, and a 1x1 convolution before it cannot bring that spatial mixing "
                    "of channels back, so no involution reproduces it.",
        wrong={
            "a": "Attention weights are one K x K kernel per position, shared by all value channels: the 1x1 "
                 "convolution is W_v, then an involution with G = 1. Section 4 checks it numerically.",
            "b": "Take the identity as the 1x1 convolution: a depthwise kernel per image is an involution kernel "
                 "with G = C that happens to be the same at every position.",
            "d": "A position term changes how the kernel is generated (the logits), not how it is applied: still one "
                 "K x K kernel per position and head, after the value projection.",
        },
    ),
    "generator_footprint": Question(
        "On a 28 x 28 input, K = 7, change one pixel in the middle of the image (all channels). At how many "
        "positions (i, j) does the LOCAL SELF-ATTENTION kernel change?",
        answer=49,
        rtol=0,
        explanation="The kernel at (i, j) depends on the query at (i, j) and the keys of its 7 x 7 window. The "
                    "changed pixel is a key in the windows of the 49 positions around it (its own included), "
                    "and the softmax passes any changed logit on to the whole window.",
        mistakes=[(1, "1 is involution's answer: its kernel at (i, j) is made from the pixel (i, j) alone; attention "
                      "also reads the keys of the window"),
                  (784, "784 (every position) is dynamic convolution's answer: its kernel depends on the whole image "
                        "through global pooling; attention's depends only on the window"),
                  (9, "9 would be a 3 x 3 window; here K = 7")],
    ),
    "madds_ratio": Question(
        "C = 64 channels, a 28 x 28 map, K = 7, 4 heads or groups, reduction r = 4. How many times the involution's "
        "multiply-adds does one local self-attention layer need? Count attention as in exercise 3, and the "
        "involution as its kernel generator (two 1x1 convolutions, C -> C/r -> K*K*G) plus its aggregation "
        "(one decimal).",
        answer=14_551_040 / 5_720_064,
        rtol=0.03,
        explanation="Per position attention costs 3 C^2 + 2 K^2 C = 12,288 + 6,272 = 18,560 multiply-adds, the "
                    "involution C^2/r + (C/r) K^2 G + K^2 C = 1,024 + 3,136 + 3,136 = 7,296: about 2.5 times fewer. "
                    "Both pay the same window sum (K^2 C); attention adds three dense projections and the query-key "
                    "products, the involution a generator that reads one pixel.",
        mistakes=[(18_560 / 3_136, "that leaves out the involution's kernel generator: its two 1x1 convolutions "
                                   "cost C^2/r + (C/r) K^2 G per position"),
                  (6_272 / 7_296, "that leaves out attention's three 1x1 projections, 3 C^2 per position"),
                  (15_424 / 7_296, "attention has TWO window products: the query-key logits and the weighted sum of "
                                   "the values, K^2 C each")],
    ),
    "equivariance": Question(
        "The input's content lies away from the border, and is shifted by a few pixels (staying inside the zero "
        "margin). Which layers give the same output, shifted the same way?",
        answer="d",
        choices={"a": "only involution", "b": "involution and local self-attention",
                 "c": "only dynamic convolution", "d": "all three"},
        explanation="Involution's kernel at a position is made from the pixel there, attention's from the pixel "
                    "and its window: both move with the content. Dynamic convolution's kernel comes from a global "
                    "average, which a shift inside the margin does not change, and the same kernel is applied "
                    "everywhere. Only the borders (zero padding) and strides break equivariance (notebook 05).",
        wrong={"a": "Attention's kernel is built from the pixel and its neighbours; shifting both shifts the kernel.",
               "b": "Dynamic convolution applies ONE kernel everywhere, and the global average it is mixed from does "
                    "not change when the content moves inside the margin.",
               "c": "Position-specific kernels are not a problem as long as they are generated from the content: "
                    "they move with it."},
    ),
}
