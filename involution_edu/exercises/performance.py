"""Checkers and questions for notebook 08 (making it fast, and the backward pass).

Each checker builds a table of :class:`~involution_edu.exercises.framework.Case` whose
expected answers come from independent computations (exact fractions for the intensity,
the loop reference :func:`~involution_edu.reference.involution_loops` for values, autograd
through ``F.unfold`` for gradients) and hands it to
:func:`~involution_edu.exercises.framework.run_cases`, which prints one verdict, names the
likely mistake when a wrong answer matches one, and never raises.

Exercises checked here::

    group_channels_for_intensity(kernel_size, target, dtype_bytes) -> int | None
        the smallest number of channels per group C/G for which a stride-1 involution's
        forward pass reaches an arithmetic intensity >= target FLOP/byte (2 FLOPs per
        multiply-add; bytes: read x and kernels once, write the output once), or None when
        no C/G reaches it.
    involution_offsets_student(x, kernels, stride, padding, dilation)
        x: (B, C, H, W), kernels: (B, G, K, K, H', W') -> (B, C, H', W')   (torch, a loop
        over the K * K kernel offsets; no unfold, no library involution)
    involution_backward_student(x, kernels, grad_out, stride, padding, dilation)
        x: (B, C, H, W), kernels: (B, G, K, K, H', W'), grad_out: (B, C, H', W')
        -> (grad_x: (B, C, H, W), grad_kernels: (B, G, K, K, H', W')), by hand: no autograd,
        no unfold/fold, no library involution.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Callable, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..reference import involution_loops, involution_numpy
from .cases import random_involution_inputs
from .framework import Case, Question, run_cases

__all__ = [
    "intensity_of_group_channels",
    "check_group_channels_for_intensity",
    "check_involution_offsets",
    "check_involution_backward",
    "involution_backward_reference",
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


def _smallest_group_channels(kernel_size: int, target: Fraction, dtype_bytes: int, limit: int = 10**6,
                             **mistake: object) -> Optional[int]:
    """Smallest C/G >= 1 with intensity >= target (intensity grows with C/G), None if none below ``limit``."""
    k2 = kernel_size * kernel_size
    flops = int(mistake.get("flops_per_madd", 2))
    per_out = 2 if mistake.get("outputs_counted", True) else 1
    # flops*cg*k2 >= target*bytes*(per_out*cg + k2)  <=>  cg * (flops*k2 - target*bytes*per_out) >= target*bytes*k2
    slope = flops * k2 - target * dtype_bytes * per_out
    if slope <= 0:
        return None
    need = target * dtype_bytes * k2 / slope
    cg = max(1, -(-need.numerator // need.denominator))  # ceil
    if cg > limit:
        return None
    assert intensity_of_group_channels(kernel_size, cg, dtype_bytes, flops, per_out == 2) >= target
    return cg


# (name, why, kernel_size, target, dtype_bytes)
_INTENSITY_CASES = [
    ("K = 7, float32, target 4", "per position and group: 2*(C/G)*K^2 FLOPs over (2*C/G + K^2)*4 bytes; "
     "solve for C/G and round UP", 7, Fraction(4), 4),
    ("K = 7, float32, target 5.5 (a ridge point)", "the intensity grows with C/G towards K^2/4 = 12.25, "
     "so a ridge of 5.5 is reachable", 7, Fraction(11, 2), 4),
    ("K = 3, float32, target 1", "a small kernel: only 9 kernel values per position", 3, Fraction(1), 4),
    ("K = 3, float32, target 3", "unreachable: the intensity stays below 2*K^2 / (2*4) = 2.25 whatever C/G, "
     "return None", 3, Fraction(3), 4),
    ("K = 7, float16, target 10", "2 bytes per element: twice the intensity of float32", 7, Fraction(10), 2),
    ("K = 5, float64, target 1.5", "8 bytes per element", 5, Fraction(3, 2), 8),
    ("K = 1, float32, target 0.2", "K = 1: one multiply-add per output element", 1, Fraction(1, 5), 4),
    ("K = 7, float32, target 0.01", "a target below the intensity at C/G = 1: the answer is 1, not 0",
     7, Fraction(1, 100), 4),
]


def check_group_channels_for_intensity(group_channels_for_intensity: Callable[..., object]) -> bool:
    """Check ``group_channels_for_intensity(kernel_size, target, dtype_bytes) -> int | None``."""
    cases: List[Case] = []
    for name, why, k, target, dtype_bytes in _INTENSITY_CASES:
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
        k2 = k * k
        if 2 * k2 - 2 * target * dtype_bytes > 0:
            bound = target * dtype_bytes * k2 / (2 * k2 - 2 * target * dtype_bytes)
            if bound.denominator != 1:
                mistakes.append((float(bound), "that is the bound itself: C/G is a whole number of channels, round it UP"))
        if dtype_bytes != 4 and wrong_dtype is not None and wrong_dtype not in (expected, wrong_flops):
            mistakes.append((wrong_dtype, "you assumed 4 bytes per element; use dtype_bytes"))
        cases.append(Case(name, (k, float(target), dtype_bytes), expected, why, rtol=0, atol=0, mistakes=mistakes))
    return run_cases("group_channels_for_intensity", group_channels_for_intensity, cases,
                     what="the bound on C/G from the intensity formula")


# --- exercise 2: the offset loop --------------------------------------------------------------


def _forbidden_library() -> list:
    """The library's own involutions (whatever of them exists in this version), for the shortcut guards."""
    import importlib

    found = []
    for module_name, names in (
        ("functional", ("involution", "involution_unfold", "InvolutionFunction", "NativeInvolutionFunction")),
        ("reference", ("involution_loops", "involution_numpy", "involution_windows")),
        ("ops", ("involution_op", "involution_grad_x", "involution_grad_kernels")),
        ("native", ("native_forward", "native_backward")),
    ):
        try:
            module = importlib.import_module(f"involution_edu.{module_name}")
        except Exception:  # an optional backend (ops, triton) may be absent or unimportable here
            continue
        found.extend(getattr(module, name) for name in names if getattr(module, name, None) is not None)
    return found


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


# (name, why, batch, groups, per_group, height, width, kernel_size, stride, padding, dilation)
_OFFSET_CASES = [
    ("3x3, one group", "the basic case: 9 shifted views, each times its tap", 1, 1, 2, 5, 5, 3, 1, 1, 1),
    ("6 channels in 2 groups", "channel c uses group c // (C // G): contiguous blocks, not c % G", 2, 2, 3, 6, 5, 3, 1, 1, 1),
    ("stride 2, odd size 7x7", "stride steps the view by s: rows u*d, u*d + s, ... up to (H'-1)*s + u*d", 1, 2, 2, 7, 7, 3, 2, 1, 1),
    ("dilation 2, not square", "tap (u, v) is offset by (u*d, v*d) in the padded input", 1, 1, 2, 9, 8, 3, 1, 2, 2),
    ("no padding, K = 5", "padding 0: the output shrinks by K - 1", 2, 2, 1, 8, 9, 5, 1, 0, 1),
    ("K = 1", "a single tap: the output is kernels * x", 1, 3, 2, 4, 6, 1, 1, 0, 1),
    ("K = 7, stride 3, dilation 2, padding 4, 3 groups", "everything at once", 1, 3, 2, 13, 11, 7, 3, 4, 2),
]


def check_involution_offsets(involution_offsets_student: Callable[..., object]) -> bool:
    """Check ``involution_offsets_student(x, kernels, stride, padding, dilation)`` (torch, float64).

    The expected output comes from :func:`involution_edu.reference.involution_loops`. The
    library's involutions, ``F.unfold``/``Tensor.unfold``, ``as_strided`` and ``F.conv2d`` are
    refused: the exercise is the loop over the offsets.
    """
    cases: List[Case] = []
    for seed, (name, why, batch, groups, per_group, height, width, k, stride, padding, dilation) in enumerate(_OFFSET_CASES):
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
        cases.append(Case(name, (torch.from_numpy(x), torch.from_numpy(kernels), stride, padding, dilation), expected,
                          why, rtol=1e-9, atol=1e-10, mistakes=mistakes))
    forbidden = _forbidden_library() + [F.unfold, F.fold, F.conv2d, torch.nn.Unfold, ".unfold", ".as_strided",
                                        np.lib.stride_tricks.sliding_window_view, ".sliding_window_view"]
    return run_cases("involution_offsets_student", involution_offsets_student, cases, forbidden=forbidden,
                     what="the loop over the K*K kernel offsets")


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


# (name, why, batch, groups, per_group, height, width, kernel_size, stride, padding, dilation, strided_grad)
_BACKWARD_CASES = [
    ("3x3, one group", "dL/dH sums dL/dY times the pixel each tap read; dL/dX adds H * dL/dY into every pixel a "
     "tap read", 1, 1, 2, 5, 5, 3, 1, 1, 1, False),
    ("6 channels in 2 groups, batch 2", "dL/dH[b, g] sums over the channels of group g only", 2, 2, 3, 6, 5, 3, 1, 1, 1, False),
    ("stride 2, odd size 7x7", "with stride 2 an input pixel is read by fewer taps; some pixels by none", 1, 2, 2, 7, 7, 3, 2, 1, 1, False),
    ("dilation 2, not square", "tap (u, v) reads (i*s + u*d - p, j*s + v*d - p)", 1, 1, 2, 9, 8, 3, 1, 2, 2, False),
    ("no padding, K = 5, 3 groups", "padding 0: border pixels are read by fewer windows", 1, 3, 1, 8, 9, 5, 1, 0, 1, False),
    ("K = 5, stride 2, dilation 2, padding 3, 2 groups, not square", "everything at once", 2, 2, 2, 11, 9, 5, 2, 3, 2, False),
    ("a strided grad_out", "grad_out may arrive with other strides (here transposed in memory): the paper's CUDA "
     "backward asserts grad_output.is_contiguous(); use reshape or .contiguous(), not view", 1, 2, 2, 6, 6, 3, 1, 1, 1, True),
]


def check_involution_backward(involution_backward_student: Callable[..., object]) -> bool:
    """Check ``involution_backward_student(x, kernels, grad_out, stride, padding, dilation) -> (grad_x, grad_kernels)``.

    Expected: autograd through the paper's ``unfold`` formulation, in float64. Refused:
    autograd itself (``torch.autograd.grad``, ``.backward``, ``torch.func``), ``F.unfold`` and
    ``F.fold``, and the library's involutions.
    """
    cases: List[Case] = []
    for seed, row in enumerate(_BACKWARD_CASES):
        name, why, batch, groups, per_group, height, width, k, stride, padding, dilation, strided = row
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
        cases.append(Case(name, (x_t.clone(), k_t.clone(), grad_out_t, stride, padding, dilation), expected, why,
                          rtol=1e-9, atol=1e-10, mistakes=mistakes))
    forbidden = _forbidden_library() + [
        torch.autograd.grad, torch.autograd.backward, ".backward", torch.func.vjp, torch.func.grad, torch.func.jacrev,
        torch.func.jacfwd, torch.autograd.functional.vjp, torch.autograd.functional.jacobian, F.unfold, F.fold,
        torch.nn.Unfold, torch.nn.Fold, ".unfold",
    ]
    return run_cases("involution_backward_student", involution_backward_student, cases, forbidden=forbidden,
                     what="the two gradients by hand (the index bookkeeping of the backward pass)")


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
}
