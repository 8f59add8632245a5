"""Checkers and questions for notebook 08 (making it fast, and the backward pass).

Each checker runs fixed, named cases (their messages teach), then a few hidden cases drawn at random
on every call, so a table of memorised answers fails, under the run-time guard of
:mod:`~involution_edu.exercises.guard`: the exercise's :class:`~.framework.Rule` refuses the
obvious shortcut however it is reached (an alias, ``exec`` of a string, a name built at run time, a
helper module), and every function of ``involution_edu`` (the library and the oracles in this
module) unless the prompt allows it. Expected answers come from independent computations: exact
fractions for the intensity, the loop reference :func:`~involution_edu.reference.involution_loops`
for values, autograd through ``F.unfold`` for gradients.

Exercises checked here::

    group_channels_for_intensity(kernel_size, target, dtype_bytes) -> int | None
        the smallest number of channels per group C/G for which a stride-1 involution's
        forward pass reaches an arithmetic intensity >= target FLOP/byte (2 FLOPs per
        multiply-add; bytes: read x and kernels once, write the output once), or None when
        no C/G reaches it. Pure arithmetic; no case has a bound within rounding of a whole
        number, so the float closed form and exact fractions give the same answer.
    involution_offsets_student(x, kernels, stride, padding, dilation)
        x: (B, C, H, W), kernels: (B, G, K, K, H', W') -> (B, C, H', W')   (torch, a loop
        over the K * K kernel offsets with NO padded copy of x: each tap adds into the block of
        outputs whose pixel lies inside x. Measured: at its peak the function holds at most
        four output-sized tensors. No unfold, no convolution, no padding function, no
        library involution.)
    involution_backward_student(x, kernels, grad_out, stride, padding, dilation)
        x: (B, C, H, W), kernels: (B, G, K, K, H', W'), grad_out: (B, C, H', W')
        -> (grad_x: (B, C, H, W), grad_kernels: (B, G, K, K, H', W')), by hand: no autograd,
        no unfold/fold, no convolution, no library involution.

Questions (``QUESTIONS``): ``speedup_size``, ``grad_kernels_sum``, ``gather_taps``, ``fused_saved``.
"""

from __future__ import annotations

import contextlib
import io
from fractions import Fraction
from typing import Callable, List, Optional

import numpy as np
import torch

from ..memory import peak_extra_memory
from ..reference import involution_loops
from .cases import random_involution_inputs
from .framework import Case, Question, Rule, run_cases

__all__ = [
    "intensity_of_group_channels",
    "check_group_channels_for_intensity",
    "check_involution_offsets",
    "check_involution_backward",
    "involution_backward_reference",
    "OFFSETS_MEMORY_LIMIT",
    "QUESTIONS",
]


# --- exercise 1: the C/G that reaches an arithmetic intensity ----------------------------------


def intensity_of_group_channels(kernel_size: int, group_channels: int, dtype_bytes: int = 4,
                                flops_per_madd: int = 2, outputs_counted: bool = True) -> Fraction:
    """Exact arithmetic intensity (FLOP/byte) of a stride-1 involution with ``C/G = group_channels``.

    Per output position and group: ``C/G * K^2`` multiply-adds; bytes
    ``(C/G + K^2 + C/G) * dtype_bytes`` (input, kernels, output). ``flops_per_madd`` and
    ``outputs_counted`` exist to compute the answers of two likely mistakes.
    """
    k2 = kernel_size * kernel_size
    elements = group_channels + k2 + (group_channels if outputs_counted else 0)
    return Fraction(flops_per_madd * group_channels * k2, elements * dtype_bytes)


def _bound(kernel_size: int, target: Fraction, dtype_bytes: int, flops: int = 2, per_out: int = 2) -> Optional[Fraction]:
    """The real n at which the intensity equals ``target`` (None if it never does)."""
    k2 = kernel_size * kernel_size
    # flops*n*k2 >= target*bytes*(per_out*n + k2)  <=>  n * (flops*k2 - target*bytes*per_out) >= target*bytes*k2
    slope = flops * k2 - target * dtype_bytes * per_out
    if slope <= 0:
        return None
    return target * dtype_bytes * k2 / slope


def _smallest_group_channels(kernel_size: int, target: Fraction, dtype_bytes: int, **mistake: object) -> Optional[int]:
    """Smallest C/G >= 1 with intensity >= target (intensity grows with C/G), None if none."""
    flops = int(mistake.get("flops_per_madd", 2))
    per_out = 2 if mistake.get("outputs_counted", True) else 1
    need = _bound(kernel_size, target, dtype_bytes, flops, per_out)
    if need is None:
        return None
    cg = max(1, -(-need.numerator // need.denominator))  # ceil
    assert intensity_of_group_channels(kernel_size, cg, dtype_bytes, flops, per_out == 2) >= target
    return cg


def _near_whole(bound: Optional[Fraction]) -> bool:
    """A bound within rounding of a whole number: exact and float arithmetic may round it differently."""
    if bound is None:
        return False
    return abs(bound - round(bound)) <= Fraction(1, 10**6) * max(1, abs(bound))


def _intensity_case(name: str, why: str, k: int, target: Fraction, dtype_bytes: int) -> Case:
    expected = _smallest_group_channels(k, target, dtype_bytes)
    mistakes = []
    wrong_flops = _smallest_group_channels(k, target, dtype_bytes, flops_per_madd=1)
    wrong_dtype = _smallest_group_channels(k, target, 4)
    if dtype_bytes != 4 and wrong_dtype is not None and wrong_dtype == wrong_flops != expected:
        mistakes.append((wrong_flops, "you counted 1 FLOP per multiply-add (the roofline counts 2), or assumed "
                                      "4 bytes per element instead of dtype_bytes"))
    elif wrong_flops is not None and wrong_flops != expected:
        mistakes.append((wrong_flops, "you counted 1 FLOP per multiply-add; the roofline counts 2 (a multiply and an add)"))
    wrong = _smallest_group_channels(k, target, dtype_bytes, outputs_counted=False)
    if wrong is not None and wrong != expected:
        mistakes.append((wrong, "your bytes leave out the output: an involution must also WRITE B*C*H'*W' values"))
    if expected is not None and expected > 1:
        mistakes.append((expected - 1, "off by one below: round the bound for C/G UP (the smallest C/G that reaches it)"))
    bound = _bound(k, target, dtype_bytes)
    if bound is not None and bound.denominator != 1 and bound > 1:
        mistakes.append((float(bound), "that is the bound itself: C/G is a whole number of channels, round it UP"))
    if dtype_bytes != 4 and wrong_dtype is not None and wrong_dtype not in (expected, wrong_flops):
        mistakes.append((wrong_dtype, "you assumed 4 bytes per element; use dtype_bytes"))
    if expected is None:
        mistakes.append((lambda got: got is not None and not isinstance(got, bool),
                         "this target is above the intensity's limit as C/G grows: no C/G reaches it, return None"))
    return Case(name, (k, float(target), dtype_bytes), expected, why, rtol=0, atol=0, mistakes=mistakes)


# (name, why, kernel_size, target, dtype_bytes); no bound lies within rounding of a whole number (see _near_whole)
_INTENSITY_CASES = [
    ("K = 7, float32, target 4", "per position and group, FLOPs over bytes as a function of C/G; solve for C/G "
     "and round UP", 7, Fraction(4), 4),
    ("K = 7, float32, target 5.5 (a ridge point)", "the intensity grows with C/G towards a limit above 5.5, "
     "so this target is reachable", 7, Fraction(11, 2), 4),
    ("K = 3, float32, target 1", "a small kernel: only 9 kernel values per position", 3, Fraction(1), 4),
    ("K = 3, float32, target 3", "unreachable: the intensity stays below its limit as C/G grows, whatever C/G; "
     "return None", 3, Fraction(3), 4),
    ("K = 7, float16, target 10", "2 bytes per element: twice the intensity of float32", 7, Fraction(10), 2),
    ("K = 5, float64, target 1.5", "8 bytes per element", 5, Fraction(3, 2), 8),
    ("K = 1, float32, target 0.22", "K = 1: one multiply-add per output element", 1, Fraction(11, 50), 4),
    ("K = 7, float32, target 0.01", "a target below the intensity at C/G = 1: the answer is 1, not 0",
     7, Fraction(1, 100), 4),
]
assert not any(_near_whole(_bound(k, t, b)) for _, _, k, t, b in _INTENSITY_CASES)


def _random_intensity(rng: np.random.Generator) -> List[Case]:
    """Three reachable targets (two decimals, bound between 1 and 5000, never within rounding of a whole
    number) and one unreachable one, for a random K and dtype."""
    cases: List[Case] = []
    while len(cases) < 4:
        k = int(rng.choice([1, 3, 5, 7, 9]))
        dtype_bytes = int(rng.choice([2, 4, 8]))
        limit = Fraction(k * k, dtype_bytes)  # the intensity's limit as C/G grows
        if len(cases) < 3:
            target = Fraction(round(float(limit) * float(rng.uniform(0.05, 0.97)), 2)).limit_denominator(100)
            bound = _bound(k, target, dtype_bytes)
            if target <= 0 or bound is None or bound > 5000 or _near_whole(bound):
                continue
            why = "the smallest whole C/G whose intensity reaches the target"
        else:
            target = Fraction(round(float(limit) * float(rng.uniform(1.05, 2.0)), 2)).limit_denominator(100)
            why = "a target at or above the intensity's limit as C/G grows: None"
        cases.append(_intensity_case(f"K = {k}, {dtype_bytes} bytes, target {float(target):g}", why, k, target,
                                     dtype_bytes))
    return cases


def check_group_channels_for_intensity(group_channels_for_intensity: Callable[..., object]):
    """Check ``group_channels_for_intensity(kernel_size, target, dtype_bytes) -> int | None``.

    Arithmetic: the run-time guard refuses the library's intensity functions and this module's
    oracles (``intensity_of_group_channels``, ``_smallest_group_channels``); NumPy, ``math``,
    ``fractions`` and torch arithmetic are fine.
    """
    what = "the bound on C/G from the intensity formula"
    cases = [_intensity_case(*row) for row in _INTENSITY_CASES]
    rule = Rule(what)
    return run_cases("group_channels_for_intensity", group_channels_for_intensity, cases, rule=rule,
                     random_cases=_random_intensity)


# --- exercise 2: the offset loop without a padded copy ------------------------------------------

#: At its peak the learner's offset loop may hold this many output-sized tensors (the output and three
#: temporaries); a padded copy of x (4 x the output on the memory case) or the kernels expanded to every
#: channel (49 x) needs more.
OFFSETS_MEMORY_LIMIT = 4.0


def _offsets_forward(x: np.ndarray, kernels: np.ndarray, stride: int, padding: int, dilation: int,
                     mistake: str = "") -> np.ndarray:
    """Offset-loop forward in NumPy float64, optionally with a deliberate mistake (for feedback)."""
    batch, channels, height, width = x.shape
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    if mistake == "transposed":
        kernels = kernels.transpose(0, 1, 3, 2, 4, 5)
    d = 1 if mistake == "no dilation" else dilation
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    if mistake == "modulo":
        group_of = np.arange(channels) % groups
    else:
        group_of = np.arange(channels) // (channels // groups)
    out = np.zeros((batch, channels, out_h, out_w))
    for u in range(k):
        for v in range(k):
            rows = np.arange(out_h) * stride + u * d
            cols = np.arange(out_w) * stride + v * d
            rows, cols = np.minimum(rows, xp.shape[2] - 1), np.minimum(cols, xp.shape[3] - 1)
            view = xp[:, :, rows][:, :, :, cols]
            out += kernels[:, group_of, u, v] * view
    return out


def _offsets_case(name: str, why: str, seed: int, batch: int, groups: int, per_group: int, height: int, width: int,
                  k: int, stride: int, padding: int, dilation: int) -> Case:
    x, kernels = random_involution_inputs(seed, batch, groups * per_group, height, width, k, stride, padding,
                                          dilation, groups)
    expected = involution_loops(x, kernels, stride, padding, dilation)
    mistakes = []
    for mistake, message in (
        ("modulo", "channel c is in group c // (C // G) (contiguous blocks), not c % G (the keras.io layout)"),
        ("transposed", "kernels[:, :, u, v] is row offset u, column offset v; you swapped u and v"),
        ("no dilation", "tap (u, v) sits at (u*d, v*d): you left out the dilation"),
    ):
        wrong = _offsets_forward(x, kernels, stride, padding, dilation, mistake)
        if not np.allclose(wrong, expected, rtol=1e-9, atol=1e-10):
            mistakes.append((wrong, message))
    return Case(name, (torch.from_numpy(x), torch.from_numpy(kernels), stride, padding, dilation), expected, why,
                rtol=1e-9, atol=1e-10, mistakes=mistakes)


# (name, why, batch, groups, per_group, height, width, kernel_size, stride, padding, dilation)
_OFFSET_CASES = [
    ("3x3, one group", "the basic case: 9 taps, each adding into the outputs whose pixel lies inside x",
     1, 1, 2, 5, 5, 3, 1, 1, 1),
    ("6 channels in 2 groups", "channel c uses group c // (C // G): contiguous blocks, not c % G", 2, 2, 3, 6, 5, 3, 1, 1, 1),
    ("stride 2, odd size 7x7", "with stride s, output row i reads row i*s + u*d - p: the first valid i rounds UP",
     1, 2, 2, 7, 7, 3, 2, 1, 1),
    ("dilation 2, not square", "tap (u, v) reads (i*s + u*d - p, j*s + v*d - p)", 1, 1, 2, 9, 8, 3, 1, 2, 2),
    ("no padding, K = 5", "padding 0: every tap reads inside x, the output shrinks by K - 1", 2, 2, 1, 8, 9, 5, 1, 0, 1),
    ("K = 1", "a single tap: the output is kernels * x", 1, 3, 2, 4, 6, 1, 1, 0, 1),
    ("even K = 4, padding 2", "an even kernel: the taps are not centred, the blocks differ on the two sides",
     1, 2, 2, 7, 6, 4, 1, 2, 1),
    ("padding 3 with K = 3", "padding wider than the kernel's reach: the outermost outputs read only padding, "
     "so some taps add into no output at all", 1, 1, 2, 5, 4, 3, 1, 3, 1),
    ("K = 7, stride 3, dilation 2, padding 4, 3 groups", "everything at once", 1, 3, 2, 13, 11, 7, 3, 4, 2),
    ("memory: K = 7, padding 3, 6x6", "the loop needs no padded copy of x (the checker also measures its memory "
     "on this case)", 1, 2, 2, 6, 6, 7, 1, 3, 1),
]


def _random_offsets(rng: np.random.Generator) -> List[Case]:
    cases: List[Case] = []
    while len(cases) < 3:
        k = int(rng.integers(1, 6))
        dilation = int(rng.integers(1, 3))
        stride = int(rng.integers(1, 4))
        height, width = (int(v) for v in rng.integers(3, 11, size=2))
        padding = int(rng.integers(0, dilation * (k - 1) + 2))
        span = dilation * (k - 1) + 1
        if min(height, width) + 2 * padding < span:
            continue
        groups, per_group, batch = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
        cases.append(_offsets_case("a random geometry", "each tap adds kernel plane times x into the block of outputs "
                                   "whose pixel i*s + u*d - p, j*s + v*d - p lies inside x", int(rng.integers(10**6)),
                                   batch, groups, per_group, height, width, k, stride, padding, dilation))
    return cases


_PADDING_FUNCTIONS = ("torch.nn.functional.pad", "torch.constant_pad_nd", "torch._C._nn.pad",
                      "torch._C._nn.constant_pad_nd", "torch.nn.ZeroPad2d", "torch.nn.ConstantPad2d",
                      "torch.nn.ReflectionPad2d", "torch.nn.ReplicationPad2d", "numpy.pad",
                      # the loop is in torch: the memory measurement counts torch's storages, not NumPy's
                      "torch.Tensor.numpy", "numpy.asarray", "numpy.array")


def _memory_verdict(candidate: Callable[..., object], case: Case) -> Optional[str]:
    """None if the learner's loop holds at most OFFSETS_MEMORY_LIMIT output-sized tensors at its peak on ``case``,
    else the sentence that says how much it held."""
    x, kernels = case.args[0], case.args[1]
    out_bytes = int(np.prod(case.expected.shape)) * x.element_size()
    with contextlib.redirect_stdout(io.StringIO()):
        peak = peak_extra_memory(lambda: candidate(*case.args))
    ratio = peak / out_bytes
    if ratio <= OFFSETS_MEMORY_LIMIT:
        return None
    padded = (x.shape[2] + 2 * case.args[3]) * (x.shape[3] + 2 * case.args[3]) / (case.expected.shape[2] * case.expected.shape[3])
    return (f"on case '{case.name}' your function held {ratio:.1f} x the output's bytes at its peak; the limit is "
            f"{OFFSETS_MEMORY_LIMIT:g} (the output and three temporaries of its size). A padded copy of x alone is "
            f"{padded:.1f} x the output here, and kernels expanded to every channel are K*K = {kernels.shape[2] ** 2} "
            "x: add each tap into the block of outputs whose pixels lie inside x, and broadcast the kernel plane over "
            "the channels of its group")


def check_involution_offsets(involution_offsets_student: Callable[..., object]):
    """Check ``involution_offsets_student(x, kernels, stride, padding, dilation)`` (torch, float64).

    The expected output comes from :func:`involution_edu.reference.involution_loops`. Refused at run
    time: unfold and im2col (``F.unfold``, ``Tensor.unfold``, ``as_strided``, sliding windows), any
    convolution, the padding functions, a detour through NumPy (whose memory the measurement would not
    see), and every function of ``involution_edu``. After the cases pass,
    the learner's function runs once more under :func:`~involution_edu.memory.peak_extra_memory` on the
    memory case: it may hold at most :data:`OFFSETS_MEMORY_LIMIT` output-sized tensors at its peak.
    """
    title, what = "involution_offsets_student", "the offset loop (with no padded copy of x)"
    cases = [_offsets_case(name, why, seed, *geometry) for seed, (name, why, *geometry) in enumerate(_OFFSET_CASES)]
    rule = Rule(what, families=["unfold", "convolution"], forbid=list(_PADDING_FUNCTIONS))

    def memory_problem() -> Optional[str]:
        try:
            problem = _memory_verdict(involution_offsets_student, cases[-1])
        except Exception as error:  # the function passed on these inputs a moment ago; never raise
            problem = f"the memory measurement failed ({type(error).__name__}: {error})"
        return f"the values are right, but {problem}." if problem else None

    return run_cases(title, involution_offsets_student, cases, rule=rule, random_cases=_random_offsets,
                     after=memory_problem)


# --- exercise 3: the backward pass by hand ----------------------------------------------------


def involution_backward_reference(x: torch.Tensor, kernels: torch.Tensor, grad_out: torch.Tensor, stride: int,
                                  padding: int, dilation: int):
    """Gradients of ``sum(involution_unfold(x, kernels) * grad_out)`` by autograd (the oracle).

    Returns ``(grad_x: (B, C, H, W), grad_kernels: (B, G, K, K, H', W'))``. Independent of the
    hand-written backwards in :mod:`involution_edu.functional` and the native kernel.
    """
    from ..functional import involution_unfold

    x = x.detach().clone().requires_grad_(True)
    kernels = kernels.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = involution_unfold(x, kernels, stride, padding, dilation)
        grad_x, grad_kernels = torch.autograd.grad(out, (x, kernels), grad_out)
    return grad_x.detach(), grad_kernels.detach()


def _backward_mistakes(x: np.ndarray, kernels: np.ndarray, grad_out: np.ndarray, stride: int, padding: int,
                       dilation: int, expected_x: np.ndarray, expected_k: np.ndarray) -> list:
    """(wrong answer, message) pairs for the likely mistakes of the backward exercise, by explicit loops."""
    batch, channels, height, width = x.shape
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    per_group = channels // groups
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    go = grad_out.reshape(batch, groups, per_group, out_h, out_w)
    mistakes = []

    def add(value_x, value_k, message):
        if not (np.allclose(value_x, expected_x, rtol=1e-9, atol=1e-10) and np.allclose(value_k, expected_k, rtol=1e-9, atol=1e-10)):
            mistakes.append(((value_x, value_k), message))

    # kernel gradient summed over ALL channels instead of the channels of its group
    all_channels = np.zeros_like(kernels)
    # kernel gradient with the keras.io grouping c % G
    modulo = np.zeros_like(kernels)
    for u in range(k):
        for v in range(k):
            rows = np.arange(out_h) * stride + u * dilation
            cols = np.arange(out_w) * stride + v * dilation
            view = xp[:, :, rows][:, :, :, cols]  # (B, C, H', W')
            product = grad_out * view
            all_channels[:, :, u, v] = product.sum(axis=1, keepdims=True)
            modulo[:, :, u, v] = np.stack([product[:, g::groups].sum(axis=1) for g in range(groups)], axis=1)
    add(expected_x, all_channels, "grad_kernels[b, g] sums over the C/G channels of group g only, not over all C channels")
    modulo_message = "group g holds channels g*C/G .. (g+1)*C/G - 1 (contiguous), not the channels c with c % G == g"
    add(expected_x, modulo, modulo_message)
    # the same grouping mistake in both gradients: channel c reads the kernels of group c % G
    modulo_x = np.zeros_like(xp)
    for u in range(k):
        for v in range(k):
            rows = np.arange(out_h) * stride + u * dilation
            cols = np.arange(out_w) * stride + v * dilation
            taps = kernels[:, np.arange(channels) % groups, u, v] * grad_out  # (B, C, H', W')
            for i, row in enumerate(rows):
                modulo_x[:, :, row, cols] += taps[:, :, i, :]
    add(modulo_x[:, :, padding : padding + height, padding : padding + width], modulo, modulo_message)

    # input gradient with the kernel flipped (a convolution's transpose taken literally)
    flipped_kernels = kernels[:, :, ::-1, ::-1]
    # input gradient as a gather that forgets to check that the stride divides
    flipped = np.zeros_like(xp)
    no_divisibility = np.zeros_like(x)
    for u in range(k):
        for v in range(k):
            for i in range(out_h):
                for j in range(out_w):
                    h, w = i * stride + u * dilation, j * stride + v * dilation
                    flipped[:, :, h, w] += np.repeat(flipped_kernels[:, :, u, v, i, j], per_group, axis=1) * grad_out[:, :, i, j]
    for h in range(height):
        for w in range(width):
            for u in range(k):
                for v in range(k):
                    i, j = (h + padding - u * dilation) // stride, (w + padding - v * dilation) // stride
                    if 0 <= i < out_h and 0 <= j < out_w:
                        no_divisibility[:, :, h, w] += np.repeat(kernels[:, :, u, v, i, j], per_group, axis=1) * grad_out[:, :, i, j]
    flipped = flipped[:, :, padding : padding + height, padding : padding + width]
    add(flipped, expected_k, "grad_x uses H[b, g, u, v, i, j] at the tap that READ x[h, w]; you flipped the kernel "
                             "(u -> K-1-u, v -> K-1-v) as for a convolution's transpose")
    add(no_divisibility, expected_k, "in the gather form, tap (u, v) reaches input row h only when (h + p - u*d) is a "
                                     "multiple of the stride; you rounded the division instead of skipping that tap")
    del go
    return mistakes


def _backward_case(name: str, why: str, seed: int, batch: int, groups: int, per_group: int, height: int, width: int,
                   k: int, stride: int, padding: int, dilation: int, strided: bool) -> Case:
    x, kernels = random_involution_inputs(100 + seed, batch, groups * per_group, height, width, k, stride, padding,
                                          dilation, groups)
    out_h, out_w = kernels.shape[4], kernels.shape[5]
    grad_out = np.random.default_rng(200 + seed).standard_normal((batch, groups * per_group, out_h, out_w))
    grad_out_t = torch.from_numpy(grad_out)
    if strided:
        grad_out_t = grad_out_t.transpose(2, 3).contiguous().transpose(2, 3)
    x_t, k_t = torch.from_numpy(x), torch.from_numpy(kernels)
    expected_x, expected_k = involution_backward_reference(x_t, k_t, grad_out_t, stride, padding, dilation)
    expected = (expected_x.numpy(), expected_k.numpy())
    mistakes = _backward_mistakes(x, kernels, grad_out, stride, padding, dilation, *expected)
    return Case(name, (x_t.clone(), k_t.clone(), grad_out_t, stride, padding, dilation), expected, why,
                rtol=1e-9, atol=1e-10, mistakes=mistakes)


# (name, why, batch, groups, per_group, height, width, kernel_size, stride, padding, dilation, strided_grad)
_BACKWARD_CASES = [
    ("3x3, one group", "each gradient sums, over every product its variable took part in, the other factor times "
     "dL/dY of that product's output", 1, 1, 2, 5, 5, 3, 1, 1, 1, False),
    ("6 channels in 2 groups, batch 2", "a kernel value of group g multiplies the channels of group g only",
     2, 2, 3, 6, 5, 3, 1, 1, 1, False),
    ("stride 2, odd size 7x7", "with stride 2 an input pixel is read by fewer taps; some pixels by none", 1, 2, 2, 7, 7, 3, 2, 1, 1, False),
    ("dilation 2, not square", "tap (u, v) reads (i*s + u*d - p, j*s + v*d - p)", 1, 1, 2, 9, 8, 3, 1, 2, 2, False),
    ("no padding, K = 5, 3 groups", "padding 0: border pixels are read by fewer windows", 1, 3, 1, 8, 9, 5, 1, 0, 1, False),
    ("even K = 2, stride 2", "an even kernel with stride 2: each input pixel is read by exactly one tap per axis",
     1, 2, 1, 6, 7, 2, 2, 0, 1, False),
    ("K = 5, stride 2, dilation 2, padding 3, 2 groups, not square", "everything at once", 2, 2, 2, 11, 9, 5, 2, 3, 2, False),
    ("a strided grad_out", "grad_out may arrive with other strides (here transposed in memory): the paper's CUDA "
     "backward asserts grad_output.is_contiguous(); use reshape or .contiguous(), not view", 1, 2, 2, 6, 6, 3, 1, 1, 1, True),
]


def _random_backward(rng: np.random.Generator) -> List[Case]:
    cases: List[Case] = []
    while len(cases) < 2:
        k = int(rng.integers(1, 5))
        dilation = int(rng.integers(1, 3))
        stride = int(rng.integers(1, 3))
        height, width = (int(v) for v in rng.integers(3, 9, size=2))
        padding = int(rng.integers(0, dilation * (k - 1) + 1))
        if min(height, width) + 2 * padding < dilation * (k - 1) + 1:
            continue
        groups, per_group = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        cases.append(_backward_case("a random geometry", "dL/dH sums dL/dY times the pixel each tap read over the "
                                    "channels of its group; dL/dX collects H * dL/dY from every tap that read the "
                                    "pixel", int(rng.integers(10**6)), 1, groups, per_group, height, width, k, stride,
                                    padding, dilation, bool(rng.integers(0, 2))))
    return cases


def check_involution_backward(involution_backward_student: Callable[..., object]):
    """Check ``involution_backward_student(x, kernels, grad_out, stride, padding, dilation) -> (grad_x, grad_kernels)``.

    Expected: autograd through the paper's ``unfold`` formulation, in float64. Refused at run time:
    autograd itself (``torch.autograd.grad``, ``.backward``, ``torch.func``, ...), unfold and fold,
    any convolution, and every function of ``involution_edu`` (the oracle
    :func:`involution_backward_reference` included). The learner's own functions (the offset loop of
    exercise 2) are the learner's to reuse.
    """
    what = "the two gradients by hand (the index bookkeeping of the backward pass)"
    cases = [_backward_case(name, why, seed, *rest) for seed, (name, why, *rest) in enumerate(_BACKWARD_CASES)]
    rule = Rule(what, families=["autograd", "unfold", "convolution"])
    return run_cases("involution_backward_student", involution_backward_student, cases, rule=rule,
                     random_cases=_random_backward)


# --- questions ----------------------------------------------------------------------------------

QUESTIONS = {
    "speedup_size": Question(
        "The loops take the same time per output element at every size. The vectorized versions pay a fixed "
        "cost per call (Python, allocation, dispatch) plus a cost per element. Measured on a problem 100 times "
        "bigger than 'tiny', their speed-up over the loops is …",
        answer="b",
        choices={
            "a": "the same: a speed-up is a property of the two implementations",
            "b": "larger, as long as the problem still fits the caches: the fixed cost is spread over more elements",
            "c": "smaller: bigger problems are always harder to vectorize",
            "d": "exactly 100 times larger",
        },
        explanation="Time = fixed + n * per-element. For the loops the fixed part is negligible; for the "
                    "vectorized versions it dominates a tiny problem. So the ratio grows with n until the "
                    "per-element costs dominate both (and falls again when the data leave the caches). That is "
                    "why one problem size gives 'tens of times' and another 'hundreds'.",
        wrong={
            "a": "A speed-up compares two times, each with its own fixed and per-element parts; their ratio "
                 "changes with n.",
            "c": "The vectorized code gets relatively cheaper as n grows, because its fixed cost is shared.",
            "d": "Only the fixed part is spread out; the per-element costs stay, so the ratio grows by less "
                 "than the size and then levels off.",
        },
    ),
    "grad_kernels_sum": Question(
        "dL/dH[b, g, u, v, i, j] is a sum of products dL/dY[b, c, i, j] * X[b, c, ...]. Over what does it sum?",
        answer="b",
        choices={
            "a": "over all C channels",
            "b": "over the C/G channels of group g",
            "c": "over the K x K taps (u, v)",
            "d": "over all output positions (i, j)",
        },
        explanation="H[b, g, u, v, i, j] multiplies exactly one pixel of each channel of group g (and nothing "
                    "else), so its gradient collects one product per channel of the group: C/G terms. That is "
                    "what the paper's CUDA kernel-gradient kernel loops over.",
        wrong={
            "a": "Channels of other groups use other kernels; H[b, g] never touches them.",
            "c": "(u, v) are indices of H itself: each tap has its own gradient.",
            "d": "The kernel is position-specific: (i, j) is an index of H, not summed. A convolution's weight "
                 "gradient sums over positions because its weight is shared by all of them.",
        },
    ),
    "gather_taps": Question(
        "Stride 2, K = 3, dilation 1, padding 1, a large input. In the gather form of dL/dX, how many taps "
        "(u, v) contribute to an interior pixel whose row h and column w are both ODD?",
        answer=4,
        rtol=0,
        explanation="Tap u reaches row h from output row i = (h + p - u*d) / s, which must be a whole number: "
                    "h + 1 - u even. For odd h that is u = 0 and u = 2; the same for the columns: 2 x 2 = 4 taps. "
                    "For even h only u = 1, so an even-even pixel gets 1 tap: the work per input pixel is uneven, "
                    "which is why the CUDA kernel checks divisibility per tap.",
        mistakes=[(9, "9 is K x K: with stride 1 every tap reaches every interior pixel, but stride 2 skips the taps "
                      "whose (h + p - u*d) is odd"),
                  (1, "1 tap is the count for an EVEN row and column (only u = v = 1); the question asks for odd ones"),
                  (2, "2 is the count along ONE axis; the row and the column conditions combine: 2 x 2")],
    ),
    "fused_saved": Question(
        "An involution layer with C = 64 channels, reduction r = 2 (so h has C/r = 32 channels), G = 8 groups, "
        "K = 5, stride 1. Unfused, autograd keeps the kernels tensor for the backward pass; the fused op keeps h "
        "instead. Per output position, how many times more values does the kernels tensor hold than h?",
        answer=6.25,
        rtol=0.01,
        explanation="The kernels hold G * K^2 = 8 * 25 = 200 values per position, h holds C/r = 32: 200 / 32 = 6.25. "
                    "In RedNet (16 channels per group, r = 4, K = 7) the same ratio is (C/16 * 49) / (C/4) = 49/4 "
                    "for every layer, whatever C: the kernels are the largest tensor a layer keeps.",
        mistakes=[(25 / 32, "25 is K^2 for ONE group; the kernels tensor holds K^2 values for each of the G groups"),
                  (200 / 64, "200 / 64 compares the kernels with x (C = 64 channels); the fused op keeps h, which "
                             "has C/r channels"),
                  (200, "200 is the number of kernel values per position; divide by the C/r values h holds there")],
    ),
}
