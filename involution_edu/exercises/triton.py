"""Checker and questions for notebook 10 (involution on the GPU with Triton).

Exercise checked here::

    involution_forward_student  a @triton.jit kernel with the signature
        (x_ptr, k_ptr, out_ptr, C, H, W, G, CG, OUT_H, OUT_W,
         K: tl.constexpr, STRIDE: tl.constexpr, PADDING: tl.constexpr, DILATION: tl.constexpr,
         BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr)
        launched on the grid (B * G, cdiv(OUT_H * OUT_W, BLOCK_P)) with contiguous float32
        x: (B, C, H, W), kernels: (B, G, K, K, H', W') and out: (B, C, H', W'); the learner
        writes the body of its tap loop (input position, mask, two loads, multiply-add).

The checker launches the kernel (under Triton's interpreter when the kernel was defined with
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

__all__ = ["check_involution_forward_kernel", "emulate_forward_kernel", "BLOCK_P", "QUESTIONS"]

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


def _launch(kernel: Any, x: np.ndarray, kernels: np.ndarray, stride: int, padding: int, dilation: int) -> Any:
    """Run the learner's kernel on guarded float32 copies; returns the output as float64 NumPy."""
    import torch
    from triton.runtime.interpreter import InterpretedFunction

    device = "cpu" if isinstance(kernel, InterpretedFunction) else "cuda"

    def guarded(array: np.ndarray):
        n = array.size
        buffer = torch.full((3 * n,), float("nan"), dtype=torch.float32, device=device)
        inner = buffer[n:2 * n]
        inner.copy_(torch.from_numpy(array.reshape(-1)).float())
        return buffer, inner.view(array.shape)

    batch, channels, height, width = x.shape
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    _, x_t = guarded(x)
    _, k_t = guarded(kernels)
    out_buffer, out = guarded(np.full((batch, channels, out_h, out_w), np.nan))
    grid = (batch * groups, -(-(out_h * out_w) // BLOCK_P))
    try:
        kernel[grid](x_t, k_t, out, channels, height, width, groups, channels // groups, out_h, out_w,
                     K=k, STRIDE=stride, PADDING=padding, DILATION=dilation,
                     BLOCK_C=_next_power_of_2(channels // groups), BLOCK_P=BLOCK_P)
    except Exception as error:  # the interpreter wraps the learner's exception: report the original
        cause = error.__cause__
        if cause is not None and type(error).__name__ == "InterpreterError":
            raise cause
        raise
    n = out.numel()
    if not (torch.isnan(out_buffer[:n]).all() and torch.isnan(out_buffer[2 * n:]).all()):
        return "the kernel wrote outside the output tensor"
    return out.double().cpu().numpy()


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
