"""Checker and questions for notebook 10 (involution on the GPU with Triton).

Exercise checked here::

    involution_forward_student  a @triton.jit kernel with the signature
        (x_ptr, k_ptr, out_ptr, C, H, W, G, CG, OUT_H, OUT_W,
         K: tl.constexpr, STRIDE: tl.constexpr, PADDING: tl.constexpr, DILATION: tl.constexpr,
         BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr)
        launched on the grid (B * G, cdiv(OUT_H * OUT_W, BLOCK_P)) with contiguous float32
        x: (B, C, H, W), kernels: (B, G, K, K, H', W') and out: (B, C, H', W'); the learner
        writes the body of its tap loop (input position, mask, two loads, multiply-add).

    involution_grad_x_student   a @triton.jit kernel with the signature
        (k_ptr, go_ptr, gx_ptr, C, H, W, G, CG, OUT_H, OUT_W, K, STRIDE, PADDING, DILATION,
         BLOCK_C, BLOCK_P)   (the last six tl.constexpr)
        launched on the grid (B * G, cdiv(H * W, BLOCK_P)): blocks of *input* pixels; the learner
        writes the tap-loop body that gathers kernels * grad_out over the taps whose output
        position divides by the stride.

The checkers launch the kernel (under Triton's interpreter when the kernel was defined with
``TRITON_INTERPRET=1``, else on the GPU) and compares with the loop reference
:func:`~involution_edu.reference.involution_loops`. Every tensor it hands over sits inside a
buffer filled with NaN on both sides, so a load that strays outside ``x`` or the kernels shows
up as NaN instead of reading someone else's memory, and the output starts as NaN, so a value
the kernel forgets to write shows up too. Known wrong answers (no dilation, no stride, padding
not subtracted, u and v swapped, a missing row or column mask, only the last tap kept) are
computed by emulating the wrong kernel in NumPy and named when the answer matches.

Importing this module does not import ``triton``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..reference import involution_loops, involution_numpy
from .cases import random_involution_inputs
from .framework import Case, Question, describe_value, find_shortcuts, run_cases

__all__ = [
    "check_involution_forward_kernel",
    "check_involution_grad_x_kernel",
    "emulate_forward_kernel",
    "emulate_grad_x_kernel",
    "BLOCK_P",
    "QUESTIONS",
]

BLOCK_P = 16
"""Pixels per program in the checker's launches: small, so every case has several pixel blocks
and a last block that is partly masked."""


# (name, why, batch, groups, channels per group, height, width, K, stride, padding (None = same), dilation)
_CASES = [
    ("K=3, stride 1, one group of 4 channels, 6x6", "the taps at the border read padding: they must be masked",
     1, 1, 4, 6, 6, 3, 1, None, 1),
    ("2 groups of 3 channels, 5x7", "3 channels in a block of 4: the 4th lane must be masked; group g starts at channel g*C/G",
     1, 2, 3, 5, 7, 3, 1, None, 1),
    ("stride 2 on an odd size, 9x7", "output pixel (i, j) reads row i*s + u*d - p: the stride multiplies i",
     1, 1, 2, 9, 7, 3, 2, None, 1),
    ("dilation 2, 8x8", "tap (u, v) sits at (u*d, v*d) from the window's corner",
     1, 1, 2, 8, 8, 3, 1, None, 2),
    ("K=5, no padding, 2 samples, 2 groups", "padding 0 ('valid'): every tap is inside; the sample b offsets x, kernels and out",
     2, 2, 2, 6, 6, 5, 1, 0, 1),
    ("K=1, stride 2", "a 1x1 kernel: one tap, no padding",
     1, 2, 1, 5, 6, 1, 2, None, 1),
]


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def emulate_forward_kernel(x: np.ndarray, kernels: np.ndarray, stride: int, padding: int, dilation: int,
                           mistake: Optional[str] = None) -> np.ndarray:
    """What the exercise's kernel computes, right (``mistake=None``) or with a known mistake.

    Loads are emulated on the flat buffers, as the kernel does them: a load outside a tensor
    gives NaN (the checker's guard zones). ``mistake`` is one of ``"no dilation"``,
    ``"no stride"``, ``"no padding"``, ``"swapped u v"``, ``"no column mask"``,
    ``"no row mask"``, ``"last tap only"``.
    """
    batch, channels, height, width = x.shape
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    cg = channels // groups
    x_flat, k_flat = x.reshape(-1), kernels.reshape(-1)
    s = 1 if mistake == "no stride" else stride
    d = 1 if mistake == "no dilation" else dilation
    p = 0 if mistake == "no padding" else padding
    out = np.zeros((batch, channels, out_h, out_w))
    taps = [(k - 1, k - 1)] if mistake == "last tap only" else [(u, v) for u in range(k) for v in range(k)]
    i = np.arange(out_h)[:, None]
    j = np.arange(out_w)[None, :]
    for b in range(batch):
        for c in range(channels):
            g = c // cg
            for u, v in taps:
                h = i * s + u * d - p
                w = j * s + v * d - p
                row_ok = (h >= 0) & (h < height)
                col_ok = (w >= 0) & (w < width)
                if mistake == "no column mask":
                    inside = row_ok & np.ones_like(col_ok)
                elif mistake == "no row mask":
                    inside = col_ok & np.ones_like(row_ok)
                else:
                    inside = row_ok & col_ok
                index = (b * channels + c) * height * width + h * width + w
                in_buffer = (index >= 0) & (index < x_flat.size)
                xs = np.where(inside, np.where(in_buffer, x_flat[np.clip(index, 0, x_flat.size - 1)], np.nan), 0.0)
                ku, kv = (v, u) if mistake == "swapped u v" else (u, v)
                tap = k_flat[((((b * groups + g) * k + ku) * k + kv) * out_h + i) * out_w + j]
                out[b, c] += tap * xs
    return out


_MISTAKES = [
    ("no dilation", "tap (u, v) reads row i*s + u*d - p and column j*s + v*d - p: you left out the dilation d"),
    ("no stride", "output pixel (i, j) reads around (i*s, j*s): you left out the stride s"),
    ("no padding", "the window of output pixel (0, 0) starts at (-p, -p): subtract the padding p"),
    ("swapped u v", "kernels[b, g, u, v] is row offset u and column offset v: the tap's plane is u*K + v, and u goes "
                    "with the rows (h), v with the columns (w); you swapped them"),
    ("no column mask", "a tap left or right of the image must read 0: mask w < 0 and w >= W too (without it, "
                       "w = -1 reads the last pixel of the row above)"),
    ("no row mask", "a tap above or below the image must read 0: mask h < 0 and h >= H too"),
    ("last tap only", "the output sums all K*K taps: add into acc (acc += ...), do not replace it"),
]


def _device_of(kernel: Any) -> str:
    from triton.runtime.interpreter import InterpretedFunction

    return "cpu" if isinstance(kernel, InterpretedFunction) else "cuda"


def _guarded(array: np.ndarray, device: str):
    """A float32 copy of ``array`` in the middle of a buffer three times its size, NaN around it."""
    import torch

    n = array.size
    buffer = torch.full((3 * n,), float("nan"), dtype=torch.float32, device=device)
    inner = buffer[n:2 * n]
    inner.copy_(torch.from_numpy(np.ascontiguousarray(array).reshape(-1)).float())
    return buffer, inner.view(array.shape)


def _run(kernel: Any, grid, out_shape, inputs, sizes, k: int, stride: int, padding: int, dilation: int,
         channels_per_group: int) -> Any:
    """Launch ``kernel`` on guarded copies of ``inputs``; the output as float64 NumPy, or a string
    when the kernel wrote outside the output tensor."""
    import torch

    device = _device_of(kernel)
    tensors = [_guarded(array, device)[1] for array in inputs]
    out_buffer, out = _guarded(np.full(out_shape, np.nan), device)
    try:
        kernel[grid](*tensors, out, *sizes, K=k, STRIDE=stride, PADDING=padding, DILATION=dilation,
                     BLOCK_C=_next_power_of_2(channels_per_group), BLOCK_P=BLOCK_P)
    except Exception as error:  # the interpreter wraps the learner's exception: report the original
        cause = error.__cause__
        if cause is not None and type(error).__name__ == "InterpreterError":
            raise cause
        raise
    n = out.numel()
    if not (torch.isnan(out_buffer[:n]).all() and torch.isnan(out_buffer[2 * n:]).all()):
        return "the kernel wrote outside the output tensor"
    return out.double().cpu().numpy()


def _launch(kernel: Any, x: np.ndarray, kernels: np.ndarray, stride: int, padding: int, dilation: int) -> Any:
    """Run the learner's forward kernel; returns the output (B, C, H', W') as float64 NumPy."""
    batch, channels, height, width = x.shape
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    grid = (batch * groups, -(-(out_h * out_w) // BLOCK_P))
    return _run(kernel, grid, (batch, channels, out_h, out_w), [x, kernels],
                [channels, height, width, groups, channels // groups, out_h, out_w], k, stride, padding, dilation,
                channels // groups)


def _launch_grad_x(kernel: Any, kernels: np.ndarray, grad_out: np.ndarray, height: int, width: int, stride: int,
                   padding: int, dilation: int) -> Any:
    """Run the learner's grad_x kernel; returns grad_x (B, C, H, W) as float64 NumPy."""
    batch, channels = grad_out.shape[:2]
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    grid = (batch * groups, -(-(height * width) // BLOCK_P))
    return _run(kernel, grid, (batch, channels, height, width), [kernels, grad_out],
                [channels, height, width, groups, channels // groups, out_h, out_w], k, stride, padding, dilation,
                channels // groups)


def _forbidden() -> List[Any]:
    from .. import functional, triton_backend

    return [involution_loops, involution_numpy, functional.involution, functional.involution_unfold,
            triton_backend.triton_forward, triton_backend._forward_kernel]


def _kernel_problem(kernel: Any) -> Optional[str]:
    """Why ``kernel`` cannot be launched here, or ``None``."""
    try:
        import torch
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction
    except Exception as error:
        return f"Triton is unavailable here ({type(error).__name__}: {error})"
    if isinstance(kernel, InterpretedFunction):
        return None
    if isinstance(kernel, JITFunction):
        if torch.cuda.is_available():
            return None
        return ("your kernel was compiled for a GPU, and there is none here: run the set-up cell (it sets "
                "TRITON_INTERPRET=1 before importing triton), then the cell that defines the kernel")
    if callable(kernel) and hasattr(kernel, "__code__"):
        return "expected a @triton.jit kernel, got a plain Python function: put @triton.jit on the line above its def"
    return f"expected a @triton.jit kernel, got {describe_value(kernel)}"


def check_involution_forward_kernel(involution_forward_student: Any) -> bool:
    """Check the learner's forward kernel (see the module docstring for its signature and grid)."""
    title = "involution_forward_student"
    try:
        problem = _kernel_problem(involution_forward_student)
        if problem is not None:
            print(f"✗ {title}: {problem}")
            return False
        hits = find_shortcuts(getattr(involution_forward_student, "fn", None), _forbidden())
        if hits:
            print(f"✗ {title}: this exercise asks you to write the tap loop of the kernel yourself; "
                  f"your kernel calls {', '.join(hits)}.")
            return False
        cases = []
        for seed, (name, why, batch, groups, cg, height, width, k, stride, padding, dilation) in enumerate(_CASES):
            pad = dilation * (k - 1) // 2 if padding is None else padding
            x, kernels = random_involution_inputs(seed + 10, batch, groups * cg, height, width, k, stride, pad,
                                                  dilation, groups)
            expected = involution_loops(x, kernels, stride, pad, dilation)
            mistakes: List = []
            for mistake, message in _MISTAKES:
                with np.errstate(invalid="ignore"):
                    wrong = emulate_forward_kernel(x, kernels, stride, pad, dilation, mistake)
                if not np.allclose(wrong, expected, rtol=1e-4, atol=1e-4, equal_nan=True):
                    mistakes.append((wrong, message))
            mistakes.append((_has_nan, "some outputs are NaN: a load went outside x or the kernels (the checker "
                                       "surrounds them with NaN) or a value was never written; check each load's "
                                       "mask: taps in the padding, and the lanes past C/G channels"))
            cases.append(Case(name, (x, kernels, stride, pad, dilation), expected, why, rtol=1e-4, atol=1e-4,
                              mistakes=mistakes))
        return run_cases(title, functools.partial(_launch, involution_forward_student), cases)
    except Exception as error:  # never raise at the learner
        print(f"✗ {title}: could not run the checker ({type(error).__name__}: {error})")
        return False


# (name, why, batch, groups, channels per group, height, width, K, stride, padding (None = same), dilation)
_GRAD_X_CASES = [
    ("K=3, stride 1, 2 samples, 6x6", "every input pixel is read by the K*K taps around it, fewer at the border",
     2, 1, 4, 6, 6, 3, 1, None, 1),
    ("stride 2 on an odd size, 9x7", "with stride 2, only the taps with (h + p - u*d) divisible by 2 read row h",
     1, 1, 2, 9, 7, 3, 2, None, 1),
    ("dilation 2, 2 groups of 3 channels, 6x7", "the taps sit d apart: i*s = h + p - u*d",
     1, 2, 3, 6, 7, 3, 1, None, 2),
    ("K=5, stride 2, no padding, 8x7", "no padding: the last rows are read by no output (gradient 0)",
     1, 1, 2, 8, 7, 5, 2, 0, 1),
    ("K=1, stride 2", "a 1x1 kernel with stride 2 reads every other pixel; the others get gradient 0",
     1, 2, 1, 5, 6, 1, 2, None, 1),
]

_GRAD_X_MISTAKES = [
    ("no divisibility", "with stride s, tap row u reads input row h only if h + p - u*d is a multiple of s: "
                        "mask the taps with (h + p - u*d) % s != 0 (and the same for columns)"),
    ("no upper bound", "i = (h + p - u*d) / s must also be a row of the output: mask i >= OUT_H (and j >= OUT_W)"),
    ("no lower bound", "h + p - u*d < 0 means no output row reads h with that tap: mask it (and the same for columns)"),
    ("forward formula", "this is the forward's formula run backwards: output row i reads h = i*s + u*d - p, so "
                        "i*s = h + p - u*d (plus the padding, minus the tap)"),
]


def emulate_grad_x_kernel(kernels: np.ndarray, grad_out: np.ndarray, height: int, width: int, stride: int,
                          padding: int, dilation: int, mistake: Optional[str] = None) -> np.ndarray:
    """What the grad_x exercise's kernel computes, right (``mistake=None``) or with a known mistake
    (one of ``"no divisibility"``, ``"no upper bound"``, ``"no lower bound"``, ``"forward formula"``).

    Loads are emulated on the flat buffers (NaN outside them, as in the checker); integer ``//``
    and ``%`` follow Triton (and C): the quotient is truncated towards zero.
    """
    batch, channels = grad_out.shape[:2]
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    cg = channels // groups
    n_out = out_h * out_w
    k_flat, g_flat = kernels.reshape(-1), grad_out.reshape(-1)
    h = np.arange(height)[:, None]
    w = np.arange(width)[None, :]
    grad_x = np.zeros((batch, channels, height, width))

    def read(flat, index):
        inside = (index >= 0) & (index < flat.size)
        return np.where(inside, flat[np.clip(index, 0, flat.size - 1)], np.nan)

    for u in range(k):
        for v in range(k):
            if mistake == "forward formula":
                i_s, j_s = h - padding + u * dilation, w - padding + v * dilation
            else:
                i_s, j_s = h + padding - u * dilation, w + padding - v * dilation
            i, j = np.fix(i_s / stride).astype(int), np.fix(j_s / stride).astype(int)  # Triton's // truncates
            ok = np.ones((height, width), dtype=bool)
            if mistake != "no lower bound":
                ok &= (i_s >= 0) & (j_s >= 0)
            if mistake != "no divisibility":
                ok &= (np.fmod(i_s, stride) == 0) & (np.fmod(j_s, stride) == 0)  # and its % is C's remainder
            if mistake != "no upper bound":
                ok &= (i < out_h) & (j < out_w)
            out_pixel = i * out_w + j
            for b in range(batch):
                for c in range(channels):
                    g = c // cg
                    tap = read(k_flat, ((b * groups + g) * k * k + u * k + v) * n_out + out_pixel)
                    go = read(g_flat, (b * channels + c) * n_out + out_pixel)
                    grad_x[b, c] += np.where(ok, tap * go, 0.0)
    return grad_x


def check_involution_grad_x_kernel(involution_grad_x_student: Any) -> bool:
    """Check the learner's grad_x kernel (see the module docstring for its signature and grid).

    The expected gradient is autograd's, through ``involution_unfold`` in float64.
    """
    title = "involution_grad_x_student"
    try:
        problem = _kernel_problem(involution_grad_x_student)
        if problem is not None:
            print(f"✗ {title}: {problem}")
            return False
        from .. import triton_backend

        forbidden = _forbidden() + [triton_backend.triton_backward, triton_backend._grad_x_kernel]
        hits = find_shortcuts(getattr(involution_grad_x_student, "fn", None), forbidden)
        if hits:
            print(f"✗ {title}: this exercise asks you to write the gather over the taps yourself; "
                  f"your kernel calls {', '.join(hits)}.")
            return False
        import torch

        from ..functional import involution_unfold

        cases = []
        for seed, (name, why, batch, groups, cg, height, width, k, stride, padding, dilation) in enumerate(_GRAD_X_CASES):
            pad = dilation * (k - 1) // 2 if padding is None else padding
            x, kernels = random_involution_inputs(seed + 20, batch, groups * cg, height, width, k, stride, pad,
                                                  dilation, groups)
            grad_out = np.random.default_rng(seed + 30).standard_normal((batch, groups * cg) + kernels.shape[4:])
            x_t = torch.from_numpy(x).requires_grad_()
            with torch.enable_grad():
                out = involution_unfold(x_t, torch.from_numpy(kernels), stride, pad, dilation)
                (expected,) = torch.autograd.grad(out, x_t, torch.from_numpy(grad_out))
            expected = expected.numpy()
            mistakes: List = []
            for mistake, message in _GRAD_X_MISTAKES:
                with np.errstate(invalid="ignore"):
                    wrong = emulate_grad_x_kernel(kernels, grad_out, height, width, stride, pad, dilation, mistake)
                if not np.allclose(wrong, expected, rtol=1e-4, atol=1e-4, equal_nan=True):
                    mistakes.append((wrong, message))
            mistakes.append((_has_nan, "some values are NaN: a load went outside the kernels or grad_out (the checker "
                                       "surrounds them with NaN) or a value was never written: mask every tap whose "
                                       "output position (i, j) is not inside the output"))
            cases.append(Case(name, (kernels, grad_out, height, width, stride, pad, dilation), expected, why,
                              rtol=1e-4, atol=1e-4, mistakes=mistakes))
        return run_cases(title, functools.partial(_launch_grad_x, involution_grad_x_student), cases)
    except Exception as error:  # never raise at the learner
        print(f"✗ {title}: could not run the checker ({type(error).__name__}: {error})")
        return False


def _has_nan(value: Any) -> bool:
    try:
        return bool(np.isnan(np.asarray(value, dtype=float)).any())
    except Exception:
        return False


# --- questions ---------------------------------------------------------------------------------


def eager_bytes_ratio(channels: int = 64, groups: int = 4, kernel_size: int = 7) -> float:
    """Bytes moved by the eager offset loop over bytes of one pass (stride 1, per pixel and sample).

    Eager, per tap: read the shifted view of x (C), the kernel plane (G), read and write the
    output (2C). One pass: read x (C) and the kernels (G K^2), write the output (C).
    """
    taps = kernel_size * kernel_size
    return taps * (3 * channels + groups) / (2 * channels + groups * taps)


QUESTIONS: Dict[str, Question] = {
    "eager_bytes": Question(
        "RedNet-50's first stage: C = 64 channels, G = 4 groups, K = 7, stride 1, float32. On a GPU, the eager "
        "backend runs one `addcmul_` per tap: it reads the shifted view of x, the tap's kernel plane, and reads "
        "and writes the output. A one-pass kernel reads x and the kernels once and writes the output once. "
        "How many times more bytes does the eager loop move? (a number)",
        answer=eager_bytes_ratio(),
        rtol=0.01,
        explanation="Per pixel and sample, eager moves 49 * (64 + 4 + 2 * 64) = 9604 values; one pass moves "
                    "64 + 4 * 49 + 64 = 324: about 29.6 times fewer. A memory-bound kernel's time follows its "
                    "bytes, so one pass is the first thing to win, before any clever arithmetic.",
        mistakes=[
            (49 * (2 * 64 + 4) / 324, "you left out one side of the accumulator: addcmul_ reads the output AND "
                                      "writes it back at every tap (2C values per tap)"),
            (49.0, "K^2 = 49 is the number of passes, but a pass of the eager loop moves 3C + G values per pixel "
                   "while the one-pass kernel moves 2C + G*K^2: compare the bytes"),
            (49 * (3 * 64 + 4) / (2 * 64 + 4), "the one-pass kernel still reads every kernel value once: "
                                               "G*K^2 = 196 values per pixel, not G"),
        ],
    ),
    "programs_mask": Question(
        "A kernel handles BLOCK = 4 elements per program and is launched on the grid (triton.cdiv(10, 4),) "
        "for a vector of n = 10 elements. How many programs run, and how many lanes of the last one does "
        "the mask `offsets < n` switch off?",
        answer="c",
        choices={
            "a": "2 programs, none masked: 10 // 4 = 2",
            "b": "3 programs, 1 lane masked",
            "c": "3 programs, 2 lanes masked",
            "d": "10 programs of one lane each",
        },
        explanation="cdiv(10, 4) = 3 programs cover 12 lanes; the last program's offsets are 8, 9, 10, 11, and "
                    "the mask switches off 10 and 11. Without the mask those lanes would read and write past the "
                    "end of the tensor.",
        wrong={
            "a": "Floor division would leave elements 8 and 9 without a program: the grid rounds up (cdiv).",
            "b": "The last program starts at offset 2 * 4 = 8 and covers 8..11: two of those are past n = 10.",
            "d": "A program handles a block of BLOCK lanes at once (tl.arange(0, BLOCK)), not one element.",
        },
    ),
    "kernel_loads": Question(
        "The paper's CUDA kernel runs one thread per output element (b, c, i, j); our Triton program handles "
        "the C/G channels of a group for a block of pixels. How many times does each kernel value "
        "kernels[b, g, u, v, i, j] get loaded in one forward pass?",
        answer="b",
        choices={
            "a": "CUDA: once; Triton: C/G times",
            "b": "CUDA: C/G times (one load per thread of the group's channels); Triton: once, shared by the channel vector",
            "c": "Both: K*K times",
            "d": "Both: once per output pixel of the whole image",
        },
        explanation="The C/G channels of group g share every kernel value. The CUDA kernel gives each channel its "
                    "own thread, so the value is loaded C/G times (the cache absorbs some of it). The Triton program "
                    "loads the tap's kernel values for its pixels once, as a (BLOCK_P,) vector, and broadcasts "
                    "them over the (BLOCK_C, BLOCK_P) block of channels: `acc += xs * tap[None, :]`.",
        wrong={
            "a": "It is the other way round: the CUDA thread handles ONE channel, the Triton program ALL the group's.",
            "c": "A kernel value belongs to one tap (u, v) at one pixel (i, j): it is used once per channel of "
                 "its group, not once per tap.",
            "d": "kernels[b, g, u, v, i, j] belongs to a single output pixel (i, j), unlike a convolution weight.",
        },
    ),
    "gather_scatter": Question(
        "For grad_x, our Triton kernel runs one program per block of INPUT pixels and gathers, over the taps, "
        "the outputs that read each pixel (the taps whose (h + p - u*d) divides by s). The alternative scatters: "
        "one program per block of output pixels adds kernel * grad_out into the pixels it read. Why gather?",
        answer="b",
        choices={
            "a": "Gather is always faster, whatever the stride",
            "b": "Each program owns the pixels it writes: no two programs add into the same place, so no atomic "
                 "adds, and the result is the same bits on every run",
            "c": "Triton cannot add into memory (there are no atomic operations in Triton)",
            "d": "Scatter would need the unfolded tensor (K^2 times the output) in memory",
        },
        explanation="With scatter, neighbouring output pixels read overlapping windows, so programs would add into "
                    "the same input pixels at the same time: that needs tl.atomic_add, and the order of floating-"
                    "point additions (so the rounding) changes from run to run. Gather writes each grad_x value "
                    "once, from one program: deterministic, like the paper's CUDA backward.",
        wrong={
            "a": "Speed depends on the GPU and the stride (gather tests divisibility for every tap); the decisive "
                 "reason is ownership of the writes.",
            "c": "Triton has tl.atomic_add; scatter with atomics works, but it is not deterministic.",
            "d": "Scatter adds into grad_x directly; it needs no unfolded tensor.",
        },
    ),
}
