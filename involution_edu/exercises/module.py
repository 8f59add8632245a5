"""Checkers and questions for notebook 05 (the full involution module).

Each checker builds a table of :class:`~involution_edu.exercises.framework.Case` whose expected
answers come from the library (the layers of a real :class:`~involution_edu.module.Involution`,
the module's own forward pass) and hands it to
:func:`~involution_edu.exercises.framework.run_cases`, which prints one verdict and returns
``True`` only when every case passes. The likely mistakes are computed with deliberately wrong
implementations, so the verdict can name them. After the named cases each checker draws a few
hidden cases at random on every call (a table of memorised answers fails them), and a run-time
guard refuses the routes each exercise closes, however they are reached.

Exercises checked here::

    involution_madds(channels, height, width, kernel_size, stride, reduction_ratio, group_channels)
        -> multiply-adds of one Involution layer on an H x W input: the two 1x1 convolutions of
           kernel generation (on the pooled H' x W' grid) plus the aggregation K^2 * C * H' * W';
           batch norm, ReLU, average pooling and the conv2 bias are not counted
    fixed_involution(x, module)
        x: (B, C, H, W), module: an Involution in eval mode (its weights only) -> module(x),
        (B, C, ceil(H / s), ceil(W / s)): :func:`broken_involution` with its three bugs fixed
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..counting import count_flops
from ..functional import involution, involution_unfold
from ..module import ConvNormAct, Involution, stride_pool
from ..reference import involution_loops
from ..shapes import default_padding, output_size
from .framework import Case, Question, Rule, run_cases

__all__ = [
    "QUESTIONS",
    "broken_involution",
    "check_fixed_involution",
    "check_involution_madds",
    "involution_madds_reference",
    "seeded_module",
]


def _run(title: str, candidate: Callable[..., object], cases: Sequence[Case], *, what: str,
         forbid: Sequence[object] = (), families: Sequence[str] = (), allow: Sequence[object] = (),
         random_cases: Optional[Callable[[np.random.Generator], Sequence[Case]]] = None):
    """``run_cases`` with this exercise's rule (run-time guard) and hidden random cases."""
    rule = Rule(what=what, forbid=tuple(forbid), families=tuple(families), allow=tuple(allow))
    return run_cases(title, candidate, cases, rule=rule, random_cases=random_cases)


def involution_madds_reference(
    channels: int,
    height: int,
    width: int,
    kernel_size: int,
    stride: int,
    reduction_ratio: int,
    group_channels: int,
) -> int:
    """Multiply-adds of one :class:`~involution_edu.module.Involution` on a ``(C, H, W)`` input.

    Read off a real module: each 1x1 convolution costs ``weight.numel()`` multiply-adds per
    output position of the pooled grid ``H' x W'`` (``H' = ceil(H / stride)``), and the
    aggregation costs ``K * K`` per output element, ``K^2 * C * H' * W'``. Batch norm, ReLU,
    average pooling and the conv2 bias are not counted.
    """
    module = Involution(channels, kernel_size, stride, reduction_ratio, group_channels)
    padding = default_padding(kernel_size)
    positions = output_size(height, kernel_size, stride, padding) * output_size(width, kernel_size, stride, padding)
    reduce_madds = module.conv1.conv.weight.numel() * positions  # C -> C/r
    span_madds = module.conv2.conv.weight.numel() * positions  # C/r -> K*K*G
    aggregation_madds = kernel_size**2 * channels * positions
    return reduce_madds + span_madds + aggregation_madds


def _madds_case(name: str, why: str, c: int, h: int, w: int, k: int, s: int, r: int, gc: int) -> Case:
    """One case of ``involution_madds`` with the slips it can show named."""
    expected = involution_madds_reference(c, h, w, k, s, r, gc)
    hidden, groups = c // r, c // gc
    out_positions = -(-h // s) * -(-w // s)
    floor_positions = max(h // s, 1) * max(w // s, 1)
    generation = c * hidden + hidden * k * k * groups
    mistakes = [
        (generation * h * w + k * k * c * out_positions,
         "the kernel generation runs on the pooled H' x W' grid, not on the full H x W input"),
        (generation * out_positions + k * k * c * h * w,
         "the aggregation runs once per OUTPUT position, H' x W', not per input pixel"),
        (generation * h * w + k * k * c * h * w, "the stride is ignored: every part runs on the H' x W' grid"),
        ((generation + k * k * c) * floor_positions,
         "floor(H / s) rows: the output has ceil(H / s) (the last, partial block still gets an output)"),
        (expected + k * k * groups * out_positions, "conv2's bias is counted; the exercise leaves biases out"),
        (expected - hidden * k * k * groups * out_positions, "the span convolution conv2 (C/r -> K*K*G) is missing"),
        (expected - c * hidden * out_positions, "the reduce convolution conv1 (C -> C/r) is missing"),
        (expected - k * k * c * out_positions + k * k * groups * out_positions,
         "the aggregation is counted once per group; every one of the C channels does its own K*K multiply-adds"),
        (expected - k * k * c * out_positions, "the aggregation (K*K per output element) is missing"),
    ]
    merged: List = []
    for value, message in mistakes:
        if value == expected:
            continue
        same = [index for index, (other, _) in enumerate(merged) if other == value]
        if same:
            merged[same[0]] = (value, f"{merged[same[0]][1]}; or: {message}")
        else:
            merged.append((value, message))
    return Case(name, (c, h, w, k, s, r, gc), expected, why, rtol=0.0, atol=0.0, mistakes=merged)


def _random_madds(rng: np.random.Generator) -> List[Case]:
    """Three layers no table holds: random widths, groups, ratio, odd K, stride and (often odd) sizes."""
    cases = []
    for _ in range(3):
        gc = int(rng.choice([2, 4, 8, 16]))
        c = gc * int(rng.integers(1, 9))
        r = int(rng.choice([ratio for ratio in (1, 2, 4) if c % ratio == 0]))
        k = int(rng.choice([1, 3, 5, 7, 9]))
        s = int(rng.integers(1, 5))
        h, w = (int(v) for v in rng.integers(1, 65, size=2))
        cases.append(_madds_case("a random layer", "conv1 and conv2 on the ceil(H/s) x ceil(W/s) grid plus K*K*C per "
                                 "output position, for any widths, stride and size", c, h, w, k, s, r, gc))
    return cases


def check_involution_madds(involution_madds: Callable[..., object]):
    """Check ``involution_madds(channels, height, width, kernel_size, stride, reduction_ratio, group_channels)``.

    Expected: :func:`involution_madds_reference` (conv1 + conv2 weights on the ``H' x W'`` grid,
    plus ``K^2 * C * H' * W'``; no batch norm, ReLU, pooling or bias). Pure arithmetic: the guard
    refuses any torch call and any library function (the counters, the reference, building a layer).
    """
    # (name, why, channels, height, width, kernel_size, stride, reduction_ratio, group_channels)
    table = [
        ("RedNet stage 1: C=64, 56x56, K=7", "the paper's defaults: r = 4, 16 channels per group (G = 4)", 64, 56, 56, 7, 1, 4, 16),
        ("one group: C=16, 8x8, K=3", "G = 1: conv2 has K*K outputs", 16, 8, 8, 3, 1, 4, 16),
        ("stride 2, C=128, 28x28", "with stride 2 the kernels are generated on the pooled 14x14 grid", 128, 28, 28, 7, 2, 4, 16),
        ("stride 2, odd size 15x15", "H' = ceil(15 / 2) = 8, not floor", 64, 15, 15, 7, 2, 4, 16),
        ("C=48, r=2, 8 per group, 9x12", "another reduction ratio and group size (G = 6)", 48, 9, 12, 5, 1, 2, 8),
        ("K=1, stride 3, 10x10", "K = 1 and stride 3: H' = ceil(10 / 3) = 4", 32, 10, 10, 1, 3, 4, 16),
        ("stride 2, non-square 9x14, r=2", "rows and columns separately: ceil(9 / 2) = 5, ceil(14 / 2) = 7",
         32, 9, 14, 3, 2, 2, 8),
    ]
    cases = [_madds_case(*row) for row in table]
    return _run("involution_madds", involution_madds, cases, what="the multiply-add count", families=["torch"],
                forbid=[involution_madds_reference, count_flops], random_cases=_random_madds)


def seeded_module(
    seed: int,
    channels: int,
    kernel_size: int,
    stride: int,
    reduction_ratio: int = 4,
    group_channels: int = 16,
) -> Involution:
    """A float64 :class:`Involution` in eval mode with seeded weights and non-trivial BN statistics."""
    generator = torch.Generator().manual_seed(seed)
    module = Involution(channels, kernel_size, stride, reduction_ratio, group_channels).double()
    with torch.no_grad():
        for tensor in list(module.parameters()) + [module.conv1.bn.running_mean, module.conv1.bn.running_var]:
            tensor.copy_(torch.randn(tensor.shape, generator=generator, dtype=torch.float64))
        module.conv1.bn.running_var.abs_().add_(0.5)
    return module.eval()




# --------------------------------------------------------------------------------------------
# Exercise: find and fix the three bugs
# --------------------------------------------------------------------------------------------

def broken_involution(x: torch.Tensor, module: Involution) -> torch.Tensor:
    """An involution forward pass with three bugs. x: (B, C, H, W) -> (B, C, H', W')."""
    k, s, groups = module.kernel_size, module.stride, module.groups
    batch, channels, height, width = x.shape
    pooled = F.avg_pool2d(x, s, s) if s > 1 else x  # one averaged pixel per output position
    bn = module.conv1.bn
    hidden = F.conv2d(pooled, module.conv1.conv.weight)  # reduce: C -> C/r
    hidden = torch.relu(F.batch_norm(hidden, None, None, bn.weight, bn.bias, training=True, eps=bn.eps))
    flat = F.conv2d(hidden, module.conv2.conv.weight, module.conv2.conv.bias)  # span: C/r -> G*K*K
    out_h, out_w = flat.shape[-2:]
    kernels = flat.view(batch, groups, 1, k * k, out_h, out_w)
    windows = F.unfold(x, k, padding=(k - 1) // 2, stride=s)  # (B, C*K*K, H'*W')
    windows = windows.view(batch, channels // groups, groups, k * k, out_h, out_w)
    out = (kernels.transpose(1, 2) * windows).sum(dim=3)  # (B, C/G, G, H', W')
    return out.reshape(batch, channels, out_h, out_w)


def _variant(x: torch.Tensor, module: Involution, *, modulo: bool = False, batch_stats: bool = False,
             floor: bool = False, relu: bool = True, bias: bool = True) -> torch.Tensor:
    """The module's forward pass (eval mode), or one with some of the likely bugs."""
    k, s, groups = module.kernel_size, module.stride, module.groups
    batch, channels = x.shape[:2]
    pooled = F.avg_pool2d(x, s, s, ceil_mode=not floor) if s > 1 else x
    bn = module.conv1.bn
    with torch.no_grad():
        hidden = F.conv2d(pooled, module.conv1.conv.weight)
        if batch_stats:
            hidden = F.batch_norm(hidden, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
        else:
            hidden = F.batch_norm(hidden, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False,
                                  eps=bn.eps)
        if relu:
            hidden = torch.relu(hidden)
        flat = F.conv2d(hidden, module.conv2.conv.weight, module.conv2.conv.bias if bias else None)
        out_h, out_w = flat.shape[-2:]
        kernels = flat.view(batch, groups, 1, k * k, out_h, out_w)
        windows = F.unfold(x, k, padding=(k - 1) // 2, stride=s)
        if modulo:
            windows = windows.view(batch, channels // groups, groups, k * k, out_h, out_w)
            return (kernels.transpose(1, 2) * windows).sum(dim=3).reshape(batch, channels, out_h, out_w)
        windows = windows.view(batch, groups, channels // groups, k * k, out_h, out_w)
        return (kernels * windows).sum(dim=3).reshape(batch, channels, out_h, out_w)


class _NoShortcutInvolution(Involution):
    """An :class:`Involution` whose own forward pass and kernel generator refuse to run (the submodules
    ``conv1``, ``conv2`` still run: calling ``module.conv1`` is one natural way to fix the BN bug)."""

    def reduced_features(self, x):  # type: ignore[override]
        raise RuntimeError("this exercise asks you to write the kernel generation yourself: "
                           "module.reduced_features is switched off here")

    _reduce = reduced_features

    def generate_kernels(self, x):  # type: ignore[override]
        raise RuntimeError("this exercise asks you to write the kernel generation yourself: "
                           "module.generate_kernels is switched off here")

    def forward(self, x, return_kernels=False):  # type: ignore[override]
        raise RuntimeError("this exercise asks you to write the forward pass yourself: "
                           "module(x) (the module's own forward) is switched off here")


_FIXED_MISTAKES = [
    ("channel c still takes the kernel of group c % G (keras.io's grouping, notebook 02); the paper's "
     "is c // (C // G), contiguous blocks", dict(modulo=True)),
    ("BatchNorm still normalises with this batch's own mean and variance (training mode); in evaluation "
     "mode it uses running_mean and running_var", dict(batch_stats=True)),
    ("the pool still drops the last, partial block (floor mode): use ceil_mode=True", dict(floor=True)),
    ("the ReLU after the BatchNorm is missing", dict(relu=False)),
    ("conv2's bias is missing", dict(bias=False)),
    ("two bugs at once: channel c still takes the kernel of group c % G, and BatchNorm still uses the "
     "batch's statistics", dict(modulo=True, batch_stats=True)),
    ("all three bugs are still there", dict(modulo=True, batch_stats=True, floor=True)),
]


def _matches_variant(x: torch.Tensor, module: Involution, kwargs: Dict[str, bool]) -> Callable[[object], bool]:
    """A predicate: does an answer equal :func:`_variant` with these slips? The variant is computed only
    when an answer is wrong (so a right answer costs no extra forward passes), from a copy of the weights
    taken now, before the learner's function runs."""
    weights = {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}
    cache: Dict[str, object] = {}

    def matches(got: object) -> bool:
        if "value" not in cache:
            twin = Involution(module.channels, module.kernel_size, module.stride, module.reduction_ratio,
                              module.group_channels).double()
            twin.load_state_dict(weights)
            try:
                cache["value"] = _variant(x, twin.eval(), **kwargs)
            except (RuntimeError, ValueError):  # a floor-mode pool on an odd size, batch statistics of one value
                cache["value"] = None
        value = cache["value"]
        if value is None or not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(value.shape):
            return False
        try:
            return bool(torch.allclose(got.detach().to(torch.float64), value, rtol=1e-9, atol=1e-10))
        except (RuntimeError, TypeError):
            return False

    return matches


def _fixed_case(name: str, why: str, seed: int, batch: int, channels: int, h: int, w: int, k: int, stride: int,
                r: int, gc: int, name_mistakes: bool = True) -> Case:
    """A seeded eval-mode module and input; expected = the module's own forward, then its forward is switched off.
    ``name_mistakes``: also compute the likely slips (the named cases; a random case only states its property)."""
    module = seeded_module(seed, channels, k, stride, r, gc)
    x = torch.randn(batch, channels, h, w, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
    with torch.no_grad():
        expected = module(x)
    mistakes = [(_matches_variant(x, module, kwargs), message) for message, kwargs in _FIXED_MISTAKES] if name_mistakes else []
    module.__class__ = _NoShortcutInvolution
    return Case(name, (x, module), expected, why, rtol=1e-9, atol=1e-10, mistakes=mistakes)


def _random_fixed(rng: np.random.Generator) -> List[Case]:
    """Three modules no table holds: random groups, group size, K, stride (1-3), odd or even sizes, batch."""
    cases = []
    for _ in range(3):
        groups, gc = int(rng.integers(1, 5)), int(rng.choice([1, 2, 4]))
        channels = groups * gc
        r = int(rng.choice([ratio for ratio in (1, 2) if channels % ratio == 0]))
        k, stride = int(rng.choice([1, 3, 5])), int(rng.integers(1, 4))
        h, w = (int(v) for v in rng.integers(1, 11, size=2))
        batch = int(rng.integers(1, 4))
        cases.append(_fixed_case("a random module", "module(x) for any groups, stride, odd or even size and batch: "
                                 "group c // (C / G), running statistics, the last partial block averaged",
                                 int(rng.integers(1000, 10**6)), batch, channels, h, w, k, stride, r, gc,
                                 name_mistakes=False))
    return cases


def check_fixed_involution(fixed_involution: Callable[..., object]):
    """Check ``fixed_involution(x, module)``: :func:`broken_involution` with its three bugs fixed.

    The expected output is the library module's own forward pass (eval mode, float64, seeded
    weights, BatchNorm running statistics far from any batch's). The module handed to the
    learner's function refuses ``module(x)``, ``module.generate_kernels`` and
    ``module.reduced_features``; the run-time guard refuses every implementation of the operator
    and the library's forward pass reached any other way. ``module.conv1`` and ``stride_pool``
    (shown in the notebook) may be used.
    """
    # (name, why, seed, batch, channels, height, width, kernel_size, stride, reduction_ratio, group_channels)
    table = [
        ("2 groups, stride 1, 6x6", "BatchNorm in evaluation mode (running_mean and running_var); channel c in "
         "group c // (C / G)", 0, 1, 8, 6, 6, 3, 1, 2, 4),
        ("4 groups, stride 1, K=5, 7x9", "groups > 1: channel c uses the kernel of group c // (C / G)",
         1, 2, 16, 7, 9, 5, 1, 2, 4),
        ("stride 2, even size 8x10, 2 groups", "stride 2: kernels from the 2x2-averaged input", 2, 1, 8, 8, 10, 3, 2, 2, 4),
        ("stride 2, odd size 7x7", "odd size with stride 2: unfold gives ceil(7/2) = 4 positions per axis, so the "
         "pool must give 4 too (ceil_mode=True)", 3, 2, 8, 7, 7, 3, 2, 2, 2),
        ("stride 3, K=7, 11x10, 3 groups", "stride 3, odd and non-square sizes", 4, 1, 12, 11, 10, 7, 3, 3, 4),
        ("K=1, one group, batch 3, 5x6", "K = 1; one group; a batch of three", 5, 3, 8, 5, 6, 1, 1, 4, 8),
    ]
    cases = [_fixed_case(*row) for row in table]
    forbid = [Involution.forward, Involution.generate_kernels, involution, involution_unfold, involution_loops]
    forbid += [getattr(Involution, name) for name in ("reduced_features", "_reduce") if hasattr(Involution, name)]
    return _run("fixed_involution", _without_grad(fixed_involution), cases, what="the fixed forward pass",
                forbid=forbid, families=["involution"], allow=[stride_pool, ConvNormAct.forward, broken_involution],
                random_cases=_random_fixed)


def _without_grad(function: Callable[..., object]) -> Callable[..., object]:
    """Run the learner's function under ``torch.no_grad`` (the checker compares values only)."""
    if not callable(function):
        return function

    def wrapped(*args, **kwargs):
        with torch.no_grad():
            return function(*args, **kwargs)

    wrapped.__wrapped__ = function  # the shortcut guard inspects the learner's own code
    return wrapped


# --------------------------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------------------------

QUESTIONS: Dict[str, Question] = {
    "involution_shift": Question(
        prompt="Shift the input of a stride-1 Involution (eval mode) circularly by (3, 5) pixels. Away from the "
               "border, what does its output do?",
        choices={
            "a": "it shifts by (3, 5), as a convolution's would",
            "b": "it changes in general: each position has its own kernel",
            "c": "it does not change",
            "d": "it shifts by (3, 5), but only approximately, because the kernels at the new positions differ a little",
        },
        answer="a",
        explanation="phi works pixel by pixel (1x1 convolutions, eval-mode BN, ReLU), so the kernel generated at "
                    "(i + 3, j + 5) of the shifted input is the kernel generated at (i, j) of the original; the "
                    "aggregation then computes the same sum at the shifted position. The kernels move with the "
                    "content. A locally connected layer's kernels are tied to positions and do not.",
        wrong={
            "b": "that is the locally connected layer, whose kernels are parameters tied to positions; involution's "
                 "kernels are computed from the features at each position, so they move with the content",
            "c": "the content moved, and the kernels move with it: the output moves too",
            "d": "the same pixel values give the same kernel, so the shifted output equals the shifted original to "
                 "rounding (the notebook asserts < 1e-12 away from the border)",
        },
    ),
    "stride_shift": Question(
        prompt="An Involution with stride 2. Shift the input by ONE pixel (circularly). What happens to the output?",
        choices={
            "a": "it shifts by one output pixel",
            "b": "it shifts by half an output pixel, which the grid cannot show, so it changes almost everywhere",
            "c": "it does not change",
            "d": "only the border changes",
        },
        answer="b",
        explanation="The output grid samples every second input pixel, and the kernels come from 2x2 averages: a "
                    "one-pixel shift moves the content between the samples and regroups the averaged blocks. Shifts "
                    "by multiples of the stride shift the output by whole pixels (away from the border).",
        wrong={
            "a": "one output pixel is two input pixels; a shift by 2 does that, a shift by 1 does not",
            "c": "the windows now sit on different pixels, so the output changes",
            "d": "that is zero padding's effect at stride 1; with stride 2 the sampling grid itself no longer lines up",
        },
    ),
}
