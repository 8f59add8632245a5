"""Checkers and questions for notebook 10 (involution on the GPU with Triton).

Exercises checked here::

    involution_triton(x, kernels, stride=1, padding=0, dilation=1) -> out
        the learner's Python wrapper around the notebook's forward kernel ``involution_forward``:
        contiguous inputs, the output allocated, BLOCK_C and BLOCK_P chosen, the grid
        (B * G, cdiv(H' * W', BLOCK_P)) computed and launched; a ValueError when a tensor has more
        elements than the kernel's int32 offsets can reach (2**31 - 1).

    involution_forward kernel   a @triton.jit kernel with the signature
        (x_ptr, k_ptr, out_ptr, C, H, W, G, CG, OUT_H, OUT_W,
         K: tl.constexpr, STRIDE: tl.constexpr, PADDING: tl.constexpr, DILATION: tl.constexpr,
         BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr)
        launched on the grid (B * G, cdiv(OUT_H * OUT_W, BLOCK_P)) with contiguous float32
        x: (B, C, H, W), kernels: (B, G, K, K, H', W') and out: (B, C, H', W') (the diagnosis
        exercise: a kernel with a load whose mask is incomplete, found and fixed).

    involution_grad_x kernel    (k_ptr, go_ptr, gx_ptr, C, H, W, G, CG, OUT_H, OUT_W, K, STRIDE,
        PADDING, DILATION, BLOCK_C, BLOCK_P) (the last six tl.constexpr), launched on the grid
        (B * G, cdiv(H * W, BLOCK_P)): blocks of *input* pixels, a gather over the taps.

How a kernel is judged. The checker launches it (under Triton's interpreter when the kernel was
defined with ``TRITON_INTERPRET=1``, else on the GPU) on named cases, then on hidden random cases
(shapes, strides, dilations, groups, BLOCK_C and BLOCK_P drawn afresh for every call), and
compares with :func:`~involution_edu.reference.involution_loops` (or loops, for the gradient). Every tensor it
hands over sits in the middle of a buffer three times its size whose two outer thirds are
*poisoned* (NaN), and the output starts as NaN. Under the interpreter a :class:`MemoryWatch`
also checks every load and store before it happens: a lane that the mask lets through and whose
address lies outside its tensor is named ("a load reads past the end of x: is its mask
missing?"), with the learner's line, even when that lane is never stored; a store outside the
output is refused before it writes. A kernel compiled for a GPU runs unwatched: there only the poison
that reaches the output (and stores into the poison) can be seen. The run-time guard (:class:`~.guard.Rule`) refuses the
library's kernels and the checkers' oracles, however they are reached.

Importing this module does not import ``triton``.
"""

from __future__ import annotations

import linecache
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..reference import involution_loops
from ..shapes import output_size
from . import guard as _guard
from .cases import random_involution_inputs
from .framework import Case, Question, Rule, _is_stub_raise, describe_value, find_shortcuts, run_cases

__all__ = [
    "check_involution_wrapper",
    "check_involution_forward_kernel",
    "check_involution_grad_x_kernel",
    "diagnose_forward_kernel",
    "emulate_forward_kernel",
    "emulate_grad_x_kernel",
    "record_accesses",
    "MemoryWatch",
    "StrayAccess",
    "UnwrittenOutput",
    "BLOCK_P",
    "INT32_LIMIT",
    "QUESTIONS",
]

BLOCK_P = 32
"""Pixels per program in the checker's named cases: small, so most cases have several pixel blocks
and a last block that is partly masked (the random cases draw 8, 16 or 32)."""

INT32_LIMIT = 2**31 - 1
"""The largest offset an int32 can hold: a tensor with more elements needs int64 offsets."""


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


# --- watching the interpreter's memory accesses -------------------------------------------------


class StrayAccess(Exception):
    """A lane of a load or store points outside its tensor; raised *before* the access happens."""


class UnwrittenOutput(Exception):
    """Some values of the output tensor were never stored by a Triton kernel."""


@dataclass
class _Region:
    name: str
    start: int      # address of the tensor's first byte
    end: int        # one past its last byte
    writable: bool  # stores may go here (the output)


class MemoryWatch:
    """While active, every load and store that Triton's interpreter performs goes through here.

    ``regions``: the tensors a kernel may touch, as ``(name, tensor, writable)``; a lane that its
    mask lets through and whose address is outside every region (for a store: every *writable*
    region) raises :class:`StrayAccess` before the access, naming the tensor it strayed from and
    the kernel's source line. ``record=True`` keeps every access in :attr:`events` as
    ``(kind, program, addresses, mask, line)`` (kind ``"load"`` or ``"store"``). Interpreter only:
    on a GPU nothing is watched. ``files``: the source files of the kernels whose lines to name.
    """

    def __init__(self, regions: Sequence[Tuple[str, Any, bool]] = (), record: bool = False,
                 files: Sequence[str] = ()):
        self.regions = [_Region(name, int(t.data_ptr()), int(t.data_ptr()) + t.numel() * t.element_size(), bool(w))
                        for name, t, w in regions]
        self.record = record
        self.files = {f for f in files if f}
        self.events: List[Tuple[str, Tuple[int, int, int], np.ndarray, np.ndarray, str]] = []
        self._builder: Any = None

    def __enter__(self) -> "MemoryWatch":
        from triton.runtime import interpreter

        self._builder = interpreter.interpreter_builder
        self._builder.create_masked_load = self._load
        self._builder.create_masked_store = self._store
        return self

    def __exit__(self, *exc: Any) -> None:
        for name in ("create_masked_load", "create_masked_store"):
            self._builder.__dict__.pop(name, None)

    def _load(self, ptrs, mask, other, cache_modifier, eviction_policy, is_volatile):
        self._judge("load", ptrs, mask)
        return type(self._builder).create_masked_load(self._builder, ptrs, mask, other, cache_modifier,
                                                      eviction_policy, is_volatile)

    def _store(self, ptrs, value, mask, cache_modifier, eviction_policy):
        self._judge("store", ptrs, mask)
        return type(self._builder).create_masked_store(self._builder, ptrs, value, mask, cache_modifier,
                                                       eviction_policy)

    def _line(self) -> str:
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_filename in self.files:
                text = linecache.getline(frame.f_code.co_filename, frame.f_lineno, frame.f_globals).strip()
                return text
            frame = frame.f_back
        return ""

    def _judge(self, kind: str, ptrs: Any, mask: Any) -> None:
        addresses = np.asarray(ptrs.data).astype(np.uint64, copy=False)
        lanes = np.broadcast_to(np.asarray(mask.data, dtype=bool), addresses.shape)
        if self.record:
            self.events.append((kind, tuple(self._builder.grid_idx), addresses.copy(), lanes.copy(), self._line()))
        if not self.regions:
            return
        if not lanes.any():
            return
        every = addresses.astype(np.int64)
        size = max(1, ptrs.get_element_ty().primitive_bitwidth // 8)
        targets = [r for r in self.regions if r.writable or kind == "load"]
        valid = ~lanes
        for region in targets:
            valid = valid | ((every >= region.start) & (every + size <= region.end))
        if valid.all():
            return
        first = tuple(int(i) for i in np.argwhere(~valid)[0])
        raise StrayAccess(self._message(kind, int(every[first]), first, tuple(addresses.shape)))

    def _message(self, kind: str, address: int, lane: Tuple[int, ...] = (), shape: Tuple[int, ...] = ()) -> str:
        line = self._line()
        where = f" (your line: `{line}`)" if line else ""
        if lane:
            where += f"; the first such lane is {list(lane)} of the block of shape {list(shape)}"
        inside = [r for r in self.regions if r.start <= address < r.end]
        if kind == "store" and inside:
            return (f"a store writes into {inside[0].name}, which is an input (your kernel would change its "
                    f"input; the checker stopped it before it wrote): a kernel stores into its output only; check "
                    f"the store's pointer{where}")

        def distance(region: _Region) -> int:
            return region.start - address if address < region.start else address - region.end + 1

        nearest = min(self.regions, key=distance)
        verb = "a load reads" if kind == "load" else "a store writes"
        if address < nearest.start:
            return (f"{verb} before the start of {nearest.name}: is its mask missing, or missing a test "
                    f"(a row, column or offset below 0)?{where}")
        return f"{verb} past the end of {nearest.name}: is its mask missing?{where}"


def _interpreted(kernel: Any) -> bool:
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except Exception:
        return False
    return isinstance(kernel, InterpretedFunction)


def _kernel_file(kernel: Any) -> str:
    code = getattr(getattr(kernel, "fn", None), "__code__", None)
    return getattr(code, "co_filename", "") or ""


def _launch_with(kernel: Any, grid: Tuple[int, ...], args: Sequence[Any], kwargs: Dict[str, Any],
                 watch: Optional[MemoryWatch]) -> None:
    """``kernel[grid](*args, **kwargs)`` (under ``watch``); the learner's own exception, not the interpreter's wrapper."""
    try:
        if watch is not None:
            with watch:
                kernel[grid](*args, **kwargs)
        else:
            kernel[grid](*args, **kwargs)
    except Exception as error:
        cause = error.__cause__
        if cause is not None and type(error).__name__ == "InterpreterError":
            raise cause
        raise


def record_accesses(kernel: Any, grid: Tuple[int, ...], *args: Any, **kwargs: Any) -> List[Tuple[str, Tuple[int, int, int], np.ndarray, np.ndarray, str]]:
    """Launch ``kernel[grid](*args, **kwargs)`` under the interpreter and return every load and store it made.

    Each event is ``(kind, program (x, y, z), addresses, mask, source line)``; subtract a tensor's
    ``data_ptr()`` and divide by its element size to get element offsets (for the figures)."""
    if not _interpreted(kernel):
        raise ValueError("record_accesses needs a kernel defined under Triton's interpreter (TRITON_INTERPRET=1); "
                         f"got {describe_value(kernel)}")
    watch = MemoryWatch(record=True, files=[_kernel_file(kernel)])
    _launch_with(kernel, grid, args, kwargs, watch)
    return watch.events


# --- launching the learner's kernel on poisoned memory ------------------------------------------


def _guarded(array: Any, device: str, fill: Optional[np.ndarray] = None):
    """``(buffer, view)``: a float32 copy of ``array`` in the middle third of a buffer whose outer thirds
    are NaN (the poison)."""
    import torch

    n = int(np.prod(array.shape))
    buffer = torch.full((3 * n,), float("nan"), dtype=torch.float32, device=device)
    inner = buffer[n:2 * n]
    if fill is not None:
        inner.copy_(torch.from_numpy(np.ascontiguousarray(fill).reshape(-1)).float())
    return buffer, inner.view(tuple(array.shape))


def _run(kernel: Any, grid, inputs: Sequence[Tuple[str, np.ndarray]], out_name: str, out_shape, sizes,
         k: int, stride: int, padding: int, dilation: int, block_c: int, block_p: int) -> np.ndarray:
    """Launch ``kernel`` on poisoned copies of ``inputs``; the output as float64 NumPy."""
    import torch

    device = "cpu" if _interpreted(kernel) else "cuda"
    tensors = [(name, _guarded(array, device, array)[1]) for name, array in inputs]
    out_buffer, out = _guarded(np.empty(out_shape), device)
    watch = None
    if device == "cpu":
        watch = MemoryWatch([(name, t, False) for name, t in tensors] + [(out_name, out, True)],
                            files=[_kernel_file(kernel)])
    _launch_with(kernel, grid, [t for _, t in tensors] + [out] + list(sizes),
                 dict(K=k, STRIDE=stride, PADDING=padding, DILATION=dilation, BLOCK_C=block_c, BLOCK_P=block_p),
                 watch)
    n = out.numel()
    if not (torch.isnan(out_buffer[:n]).all() and torch.isnan(out_buffer[2 * n:]).all()):
        raise StrayAccess(f"a store wrote outside {out_name} (into the poisoned memory around it): "
                          "check the store's pointer and mask")
    return out.double().cpu().numpy()


def _launch_forward(kernel: Any, x: np.ndarray, kernels: np.ndarray, stride: int, padding: int, dilation: int,
                    block_c: int, block_p: int) -> np.ndarray:
    batch, channels, height, width = x.shape
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    grid = (batch * groups, -(-(out_h * out_w) // block_p))
    return _run(kernel, grid, [("x", x), ("the kernels", kernels)], "the output", (batch, channels, out_h, out_w),
                [channels, height, width, groups, channels // groups, out_h, out_w], k, stride, padding, dilation,
                block_c, block_p)


def _launch_grad_x(kernel: Any, kernels: np.ndarray, grad_out: np.ndarray, height: int, width: int, stride: int,
                   padding: int, dilation: int, block_c: int, block_p: int) -> np.ndarray:
    batch, channels = grad_out.shape[:2]
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    grid = (batch * groups, -(-(height * width) // block_p))
    return _run(kernel, grid, [("the kernels", kernels), ("grad_out", grad_out)], "grad_x",
                (batch, channels, height, width), [channels, height, width, groups, channels // groups, out_h, out_w],
                k, stride, padding, dilation, block_c, block_p)


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


def _kernel_shortcut(kernel: Any) -> List[str]:
    """The obvious routes, by name, before any case: the library's own kernel, or a kernel naming one."""
    fn = getattr(kernel, "fn", None)
    code = getattr(fn, "__code__", None)
    if code is not None and _guard._file_kind(code.co_filename)[0] in (_guard.PACKAGE, _guard.CHECKER):
        return [f"{getattr(fn, '__module__', 'involution_edu')}.{getattr(fn, '__name__', '?')}"]
    return find_shortcuts(fn, [], library=True) if fn is not None else []


def _rule(what: str, allow: Sequence[Any] = ()) -> Rule:
    """No library function, no checker oracle, no convolution, unfold or involution op; the watch's hooks allowed."""
    return Rule(what=what, families=("convolution", "unfold", "involution"),
                allow=(MemoryWatch._load, MemoryWatch._store) + tuple(allow), library=True)


def _not_attempted_or(title: str, kernel: Any) -> Optional[Any]:
    """A verdict for what is not a launchable kernel or is the library's kernel, else ``None``."""
    from .framework import _finish

    problem = _kernel_problem(kernel)
    if problem is not None:
        print(f"✗ {title}: {problem}")
        return _finish(False, [f"✗ {title}: {problem}"])
    hits = _kernel_shortcut(kernel)
    if hits:
        text = (f"✗ {title}: this exercise asks you to write the kernel yourself; your kernel calls or is "
                f"{', '.join(hits)}.")
        print(text)
        return _finish(False, [text])
    return None


# --- the forward kernel -------------------------------------------------------------------------

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
    ("K=5, no padding, 2 samples", "padding 0 ('valid'): every tap is inside; the sample b offsets x, kernels and out",
     2, 1, 2, 6, 6, 5, 1, 0, 1),
    ("K=1, stride 2", "a 1x1 kernel: one tap, no padding",
     1, 2, 1, 5, 6, 1, 2, None, 1),
]


def emulate_forward_kernel(x: np.ndarray, kernels: np.ndarray, stride: int, padding: int, dilation: int,
                           mistake: Optional[str] = None) -> np.ndarray:
    """What the forward kernel computes, right (``mistake=None``) or with a known mistake.

    Loads are emulated on the flat buffers, as the kernel does them: a load outside a tensor
    gives NaN (the poison). ``mistake`` is one of ``"no dilation"``, ``"no stride"``,
    ``"no padding"``, ``"swapped u v"``, ``"no column mask"``, ``"no row mask"``, ``"last tap only"``.
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

_NAN_MESSAGE = ("some outputs are NaN: a lane read the poisoned memory around x or the kernels, or a value was "
                "never written; check each load's mask (taps in the padding, lanes past C/G channels) and the store's")


def _forward_case(name: str, why: str, seed: int, batch: int, groups: int, cg: int, height: int, width: int, k: int,
                  stride: int, padding: Optional[int], dilation: int, block_c: int, block_p: int) -> Case:
    pad = dilation * (k - 1) // 2 if padding is None else padding
    x, kernels = random_involution_inputs(seed, batch, groups * cg, height, width, k, stride, pad, dilation, groups)
    expected = involution_loops(x, kernels, stride, pad, dilation)
    mistakes: List = []
    for mistake, message in _MISTAKES:
        with np.errstate(invalid="ignore"):
            wrong = emulate_forward_kernel(x, kernels, stride, pad, dilation, mistake)
        if not np.allclose(wrong, expected, rtol=1e-4, atol=1e-4, equal_nan=True):
            mistakes.append((wrong, message))
    mistakes.append((_has_nan, _NAN_MESSAGE))
    return Case(name, (x, kernels, stride, pad, dilation, block_c, block_p), expected, why, rtol=1e-4, atol=1e-4,
                mistakes=mistakes)


def _random_geometry(rng: np.random.Generator) -> Tuple[int, ...]:
    """(batch, groups, channels per group, height, width, K, stride, padding, dilation, BLOCK_C, BLOCK_P),
    small enough for the interpreter (it pays per program and tap)."""
    k = int(rng.choice([1, 3, 3, 5]))
    dilation = int(rng.integers(1, 3)) if k < 5 else 1
    stride = int(rng.integers(1, 4))
    padding = int(rng.integers(0, dilation * (k - 1) // 2 + 2))
    least = max(1, dilation * (k - 1) + 1 - 2 * padding)
    height = int(rng.integers(least, least + 5))
    width = int(rng.integers(least, least + 5))
    batch, groups = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)][int(rng.integers(5)) if k < 5 else 0]
    cg = int(rng.integers(1, 6))
    block_c = _next_power_of_2(cg) * int(rng.choice([1, 2]))
    block_p = int(rng.choice([16, 32]))
    return batch, groups, cg, height, width, k, stride, padding, dilation, block_c, block_p


def _describe_geometry(batch, groups, cg, height, width, k, stride, padding, dilation, block_c, block_p) -> str:
    return (f"x of shape ({batch}, {groups * cg}, {height}, {width}) in {groups} group(s), K={k}, stride {stride}, "
            f"padding {padding}, dilation {dilation}, BLOCK_C={block_c}, BLOCK_P={block_p}")


def _random_kernel_cases(rng: np.random.Generator, make_case: Any, what: str, count: int = 2) -> List[Case]:
    """``count`` cases of ``make_case`` on random geometries (shape, groups, K, stride, padding,
    dilation, block sizes), each with a fresh seed for its tensors."""
    cases = []
    for _ in range(count):
        geometry = _random_geometry(rng)
        cases.append(make_case("random", f"{what} on a random shape: {_describe_geometry(*geometry)}",
                               int(rng.integers(2**31)), *geometry))
    return cases


def _random_forward_cases(rng: np.random.Generator) -> List[Case]:
    return _random_kernel_cases(rng, _forward_case, "the forward")


def check_involution_forward_kernel(involution_forward: Any) -> Any:
    """Check a forward kernel (see the module docstring for its signature and grid): named cases, random
    cases, every load and store watched (interpreter)."""
    title = getattr(getattr(involution_forward, "fn", None), "__name__", None) or "involution_forward"
    early = _not_attempted_or(title, involution_forward)
    if early is not None:
        return early
    kernel = involution_forward

    def launch(x, kernels, stride, padding, dilation, block_c, block_p):
        return _launch_forward(kernel, x, kernels, stride, padding, dilation, block_c, block_p)

    cases = [_forward_case(name, why, seed + 10, batch, groups, cg, height, width, k, stride, padding, dilation,
                           _next_power_of_2(cg), BLOCK_P)
             for seed, (name, why, batch, groups, cg, height, width, k, stride, padding, dilation) in enumerate(_CASES)]
    return run_cases(title, launch, cases, rule=_rule("the kernel's index arithmetic and masked loads"),
                     random_cases=_random_forward_cases)


def diagnose_forward_kernel(kernel: Any) -> Any:
    """Run the forward checker on ``kernel`` and show its verdict, never raising (also under nbgrader):
    for a kernel shown in the notebook to be diagnosed, not graded."""
    import os

    if _kernel_problem(kernel) is None and not _interpreted(kernel):
        print("… this kernel is compiled for the GPU: the checker sees only the poison that reaches the output, "
              "not the loads themselves; run the notebook with TRITON_INTERPRET=1 to watch every load.")
    saved = {name: os.environ.pop(name, None) for name in ("NBGRADER_EXECUTION", "INVOLUTION_EDU_RAISE_ON_FAIL")}
    try:
        return check_involution_forward_kernel(kernel)
    finally:
        for name, value in saved.items():
            if value is not None:
                os.environ[name] = value


# --- the grad_x kernel --------------------------------------------------------------------------

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
                        "mask the taps whose (h + p - u*d) is not (and the same for columns)"),
    ("no upper bound", "i = (h + p - u*d) / s must also be a row of the output: mask i >= OUT_H (and j >= OUT_W)"),
    ("no lower bound", "h + p - u*d < 0 means no output row reads h with that tap: mask it (and the same for columns)"),
    ("forward formula", "this is the forward's formula run backwards: output row i reads h = i*s + u*d - p, so "
                        "i*s = h + p - u*d (plus the padding, minus the tap)"),
]


def emulate_grad_x_kernel(kernels: np.ndarray, grad_out: np.ndarray, height: int, width: int, stride: int,
                          padding: int, dilation: int, mistake: Optional[str] = None) -> np.ndarray:
    """What the grad_x kernel computes, right (``mistake=None``) or with a known mistake
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


def _grad_x_expected(x: np.ndarray, kernels: np.ndarray, grad_out: np.ndarray, stride: int, padding: int,
                     dilation: int) -> np.ndarray:
    """grad_x by scattering kernels * grad_out back along the forward's own indexing (float64 loops)."""
    batch, channels, height, width = x.shape
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    cg = channels // groups
    grad_x = np.zeros(x.shape)
    for u in range(k):
        for v in range(k):
            for i in range(out_h):
                h = i * stride + u * dilation - padding
                if not 0 <= h < height:
                    continue
                for j in range(out_w):
                    w = j * stride + v * dilation - padding
                    if 0 <= w < width:
                        for g in range(groups):
                            grad_x[:, g * cg:(g + 1) * cg, h, w] += (kernels[:, g, u, v, i, j][:, None]
                                                                    * grad_out[:, g * cg:(g + 1) * cg, i, j])
    return grad_x


def _grad_x_case(name: str, why: str, seed: int, batch: int, groups: int, cg: int, height: int, width: int, k: int,
                 stride: int, padding: Optional[int], dilation: int, block_c: int, block_p: int) -> Case:
    pad = dilation * (k - 1) // 2 if padding is None else padding
    x, kernels = random_involution_inputs(seed, batch, groups * cg, height, width, k, stride, pad, dilation, groups)
    grad_out = np.random.default_rng(seed + 1).standard_normal((batch, groups * cg) + kernels.shape[4:])
    expected = _grad_x_expected(x, kernels, grad_out, stride, pad, dilation)
    mistakes: List = []
    for mistake, message in _GRAD_X_MISTAKES:
        with np.errstate(invalid="ignore"):
            wrong = emulate_grad_x_kernel(kernels, grad_out, height, width, stride, pad, dilation, mistake)
        if not np.allclose(wrong, expected, rtol=1e-4, atol=1e-4, equal_nan=True):
            mistakes.append((wrong, message))
    mistakes.append((_has_nan, "some values are NaN: a lane read the poisoned memory around the kernels or grad_out, "
                               "or a value was never written: mask every tap whose output position (i, j) is not "
                               "inside the output"))
    return Case(name, (kernels, grad_out, height, width, stride, pad, dilation, block_c, block_p), expected, why,
                rtol=1e-4, atol=1e-4, mistakes=mistakes)


def _random_grad_x_cases(rng: np.random.Generator) -> List[Case]:
    return _random_kernel_cases(rng, _grad_x_case, "the input gradient")


def check_involution_grad_x_kernel(involution_grad_x: Any) -> Any:
    """Check the learner's grad_x kernel (see the module docstring for its signature and grid)."""
    title = getattr(getattr(involution_grad_x, "fn", None), "__name__", None) or "involution_grad_x"
    early = _not_attempted_or(title, involution_grad_x)
    if early is not None:
        return early
    kernel = involution_grad_x

    def launch(kernels, grad_out, height, width, stride, padding, dilation, block_c, block_p):
        return _launch_grad_x(kernel, kernels, grad_out, height, width, stride, padding, dilation, block_c, block_p)

    cases = [_grad_x_case(name, why, seed + 20, batch, groups, cg, height, width, k, stride, padding, dilation,
                          _next_power_of_2(cg), BLOCK_P)
             for seed, (name, why, batch, groups, cg, height, width, k, stride, padding, dilation)
             in enumerate(_GRAD_X_CASES)]
    return run_cases(title, launch, cases, rule=_rule("the gather over the taps"), random_cases=_random_grad_x_cases)


def _has_nan(value: Any) -> bool:
    try:
        return bool(np.isnan(np.asarray(value, dtype=float)).any())
    except Exception:
        return False


# --- the wrapper: the learner's own launch ------------------------------------------------------


def _wrapper_device() -> str:
    """Where the wrapper's inputs live: the CPU under the interpreter (or without a GPU), else the GPU."""
    import torch

    try:
        import triton

        interpret = bool(triton.knobs.runtime.interpret)
    except Exception:
        interpret = True
    return "cuda" if torch.cuda.is_available() and not interpret else "cpu"


def _wrapper_inputs(seed: int, batch: int, groups: int, cg: int, height: int, width: int, k: int, stride: int,
                    padding: int, dilation: int, layout: str):
    """float32 torch ``(x, kernels)``; ``layout`` "contiguous", "x transposed" or "kernels transposed" (a view
    whose strides are not the contiguous ones: same values, other memory order)."""
    import torch

    x, kernels = random_involution_inputs(seed, batch, groups * cg, height, width, k, stride, padding, dilation,
                                          groups)
    device = _wrapper_device()
    xt, kt = torch.from_numpy(x).float().to(device), torch.from_numpy(kernels).float().to(device)
    if layout == "x transposed":
        xt = xt.transpose(2, 3).contiguous().transpose(2, 3)  # same (B, C, H, W) values, column-major planes
    elif layout == "kernels transposed":
        kt = kt.permute(0, 1, 4, 5, 2, 3).contiguous().permute(0, 1, 4, 5, 2, 3)
    elif layout == "x channels last":
        xt = xt.contiguous(memory_format=torch.channels_last)
    return xt, kt, involution_loops(x, kernels, stride, padding, dilation)


def _too_large(got: Any) -> bool:
    return got == "no error"


_TOO_LARGE_MESSAGE = ("the kernel computes its element offsets in int32: a tensor with more than 2**31 - 1 elements "
                      "has offsets it cannot reach. Check x, the kernels and the output before launching, and "
                      "raise ValueError naming the tensor")

# (name, why, batch, groups, channels per group, height, width, K, stride, padding, dilation, layout)
_WRAPPER_CASES = [
    ("K=3, one group of 4 channels, 6x6", "the output shape (B, C, H', W') and one program per (sample, group)",
     1, 1, 4, 6, 6, 3, 1, 1, 1, "contiguous"),
    ("2 groups of 3 channels", "tl.arange needs a power of two: BLOCK_C is the power of two at or above C/G",
     1, 2, 3, 5, 7, 3, 1, 1, 1, "contiguous"),
    ("stride 2 on 9x7: 5 x 4 = 20 outputs", "the grid rounds up: cdiv(H' * W', BLOCK_P) pixel blocks, the last "
     "one partly masked", 1, 1, 2, 9, 7, 3, 2, 1, 1, "contiguous"),
    ("a 12x11 image, 2 samples, 2 groups", "more pixels than one block of 64: the grid's second axis has several "
     "blocks; axis 0 counts B * G programs", 2, 2, 2, 12, 11, 3, 1, 1, 1, "contiguous"),
    ("x is a transposed view", "the kernel's offsets count elements of a contiguous tensor: a view with other "
     "strides must be made contiguous first", 1, 1, 3, 6, 8, 3, 1, 1, 1, "x transposed"),
    ("kernels is a permuted view", "the kernels too must be contiguous for the kernel's offsets",
     1, 2, 2, 7, 5, 3, 1, 2, 2, "kernels transposed"),
]


def _meta_case(name: str, why: str, x_shape: Tuple[int, ...], k_shape: Tuple[int, ...], padding: int) -> Case:
    import torch

    x = torch.empty(x_shape, device="meta")
    kernels = torch.empty(k_shape, device="meta")
    return Case(name, (x, kernels, 1, padding, 1, "error"), "ValueError", why, mistakes=[(_too_large, _TOO_LARGE_MESSAGE)])


def _random_wrapper_cases(rng: np.random.Generator) -> List[Case]:
    cases = []
    for _ in range(2):
        batch, groups, cg, height, width, k, stride, padding, dilation, _, _ = _random_geometry(rng)
        layout = str(rng.choice(["contiguous", "x transposed", "kernels transposed", "x channels last"]))
        x, kernels, expected = _wrapper_inputs(int(rng.integers(2**31)), batch, groups, cg, height, width, k, stride,
                                               padding, dilation, layout)
        why = (f"the wrapper on a random shape: x ({batch}, {groups * cg}, {height}, {width}) in {groups} group(s), "
               f"K={k}, stride {stride}, padding {padding}, dilation {dilation}, layout: {layout}")
        cases.append(Case("random", (x, kernels, stride, padding, dilation, "values"), expected, why,
                          rtol=1e-4, atol=1e-4))
    return cases


def _coverage_problem(result: Any, watch: MemoryWatch) -> Optional[str]:
    """Why the returned tensor was not entirely written by Triton stores during the call, or ``None``."""
    import torch

    if not isinstance(result, torch.Tensor) or result.device.type != "cpu" or result.numel() == 0:
        return None  # the comparison names it
    stores = [(addresses, mask) for kind, _, addresses, mask, _ in watch.events if kind == "store"]
    if not stores:
        if torch.cuda.is_available():
            return None  # compiled kernels on a GPU: nothing is watched
        return ("no Triton kernel stored anything during your function: allocate the output and launch "
                "involution_forward[grid](...) on it, on a grid with at least one program per axis "
                "(the pixel blocks are cdiv(OUT_H * OUT_W, BLOCK_P): it rounds up, where // rounds down, "
                "even to 0)")
    start, size, n = int(result.data_ptr()), result.element_size(), result.numel()
    if not result.is_contiguous():
        return None  # not the tensor the kernel wrote into (the comparison judges the values)
    written = np.zeros(n, dtype=bool)
    for addresses, mask in stores:
        offsets = (addresses[mask].astype(np.int64) - start) // size
        offsets = offsets[(offsets >= 0) & (offsets < n)]
        written[offsets] = True
    if not written.any():
        return None  # a copy of what the kernel wrote (the comparison judges the values)
    if written.all():
        return None
    missing = int((~written).sum())
    return (f"{missing} of {n} output values were never stored by the kernel: does the grid have B * G programs "
            "on axis 0 and cdiv(OUT_H * OUT_W, BLOCK_P) pixel blocks on axis 1 (rounded up, not down)?")


def check_involution_wrapper(involution_triton: Any) -> Any:
    """Check the learner's wrapper ``involution_triton(x, kernels, stride, padding, dilation)`` (see the module
    docstring): named cases (power-of-two channel blocks, a partial last block, several blocks, views that are not
    contiguous, tensors too large for int32 offsets), random cases, every store of its launch recorded."""
    title = "involution_triton"
    if not callable(involution_triton):
        return run_cases(title, involution_triton, [])
    wrapper = involution_triton

    def call(x, kernels, stride, padding, dilation, expect):
        if expect == "error":
            try:
                wrapper(x, kernels, stride, padding, dilation)
            except ValueError:
                return "ValueError"
            except NotImplementedError as error:
                if _is_stub_raise(error):
                    raise
                return f"NotImplementedError: {error}"
            except Exception as error:  # the learner's other errors, named
                return f"{type(error).__name__}: {error}"
            return "no error"
        watch = MemoryWatch(record=True) if _triton_importable() else None
        if watch is None:
            return wrapper(x, kernels, stride, padding, dilation)
        with watch:
            result = wrapper(x, kernels, stride, padding, dilation)
        problem = _coverage_problem(result, watch)
        if problem is not None:
            raise UnwrittenOutput(problem)
        return result

    cases = []
    for seed, (name, why, batch, groups, cg, height, width, k, stride, padding, dilation, layout) in \
            enumerate(_WRAPPER_CASES):
        x, kernels, expected = _wrapper_inputs(seed + 40, batch, groups, cg, height, width, k, stride, padding,
                                               dilation, layout)
        cases.append(Case(name, (x, kernels, stride, padding, dilation, "values"), expected, why, rtol=1e-4, atol=1e-4))
    cases.append(_meta_case("x with 2**31 elements (a meta tensor: shapes, no values)",
                            "int32 offsets reach 2**31 - 1 elements: a larger x must be refused with a ValueError",
                            (1, 64, 5800, 5800), (1, 4, 3, 3, 5800, 5800), 1))
    cases.append(_meta_case("kernels with 2.4e9 elements, x with 3.9e8 (meta tensors)",
                            "the kernels tensor (G*K*K values per pixel) passes the int32 limit before x does",
                            (1, 8, 7000, 7000), (1, 1, 7, 7, 7000, 7000), 3))
    return run_cases(title, call, cases, rule=_rule("the launch", allow=(output_size,)),
                     random_cases=_random_wrapper_cases)


def _triton_importable() -> bool:
    try:
        import triton.runtime.interpreter  # noqa: F401
    except Exception:
        return False
    return True


# --- questions ---------------------------------------------------------------------------------


def eager_bytes_ratio(channels: int = 64, groups: int = 4, kernel_size: int = 7) -> float:
    """Bytes moved by the eager offset loop over bytes of one pass (stride 1, per pixel and sample).

    Eager, per tap: read the shifted view of x (C), the kernel plane (G), read and write the
    output (2C). One pass: read x (C) and the kernels (G K^2), write the output (C).
    """
    taps = kernel_size * kernel_size
    return taps * (3 * channels + groups) / (2 * channels + groups * taps)


def int32_overflow_batch(channels: int = 64, groups: int = 4, kernel_size: int = 7, size: int = 256) -> int:
    """The smallest batch at which one tensor of a stride-1 involution (x, kernels or out, all (size x size))
    has an element offset above 2**31 - 1: the kernels tensor, with G K^2 values per pixel against C."""
    per_sample = max(channels, groups * kernel_size * kernel_size) * size * size
    return (INT32_LIMIT + 1) // per_sample + 1  # the last offset, batch * per_sample - 1, passes 2**31 - 1


QUESTIONS: Dict[str, Question] = {
    "int32_batch": Question(
        "The forward kernel computes every offset in int32, whose largest value is 2**31 - 1. RedNet-50's "
        "first stage on 1024 x 1024 images: its involutions see 256 x 256 pixels, C = 64, G = 4, K = 7, stride 1. "
        "From which batch size on does some element of x, the kernels or the output have an offset the "
        "kernel cannot reach? (a whole number)",
        answer=int32_overflow_batch(),
        rtol=0.0,
        explanation="Per sample, x and the output hold C * 256 * 256 = 4,194,304 values, but the kernels hold "
                    "G * K^2 * 256 * 256 = 12,845,056 (196 values per pixel against 64). 2**31 / 12,845,056 = 167.2, "
                    "so at batch 168 the last kernel values are out of int32's reach, long before x (batch 513). "
                    "The wrapper must refuse such a launch, or the kernel must compute its offsets in int64 "
                    "(`.to(tl.int64)` on the base offset of each (sample, group), as the library's kernels do).",
        mistakes=[
            (513, "that is where x and the output overflow; another tensor holds more values per pixel"),
            (512, "that is about where x overflows (and 512 * C * 256 * 256 = 2**31 still fits: the last offset "
                  "is 2**31 - 1); but another tensor holds more values per pixel than x"),
            (167, "167 * 12,845,056 is still below 2**31: round up, the first batch that does NOT fit"),
        ],
    ),
    "eager_bytes": Question(
        "RedNet-50's first stage: C = 64 channels, G = 4 groups, K = 7, stride 1, float32. On a GPU, the eager "
        "backend runs one `addcmul_` per tap: it reads the shifted view of x, the tap's kernel plane, and reads "
        "and writes the output. A one-pass kernel reads x and the kernels once and writes the output once. "
        "How many times more bytes does the eager loop move? (a number)",
        answer=eager_bytes_ratio(),
        rtol=0.01,
        explanation="Per pixel and sample, eager moves 49 * (64 + 4 + 2 * 64) = 9604 values; one pass moves "
                    "64 + 4 * 49 + 64 = 324: about 29.6 times fewer. Where a kernel's time is set by its "
                    "memory traffic, it follows these bytes: one pass is the first thing to win.",
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
