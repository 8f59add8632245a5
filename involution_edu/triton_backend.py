r"""Involution on the GPU with Triton: forward and backward kernels (optional, needs ``triton``).

Why Triton? On a GPU the eager op in :mod:`involution_edu.functional` launches one PyTorch
operation per kernel tap: for ``K = 7`` that is 49 launches and 49 passes over the output.
The paper's CUDA kernel (CuPy, in the official code) instead gives every output element a
thread that loops over its ``K x K`` taps, so each value is read once and written once.
A Triton program does the same work for a whole *block* of outputs at once::

    one program per (sample b, group g, block of BLOCK_P output pixels):
        acc[0:C/G, 0:BLOCK_P] = 0                       # in registers, float32
        for each tap (u, v):                            # K*K iterations
            rows = i*s + u*d - p;  cols = j*s + v*d - p  # input pixel of every output pixel
            inside = 0 <= rows < H and 0 <= cols < W     # the mask replaces zero padding
            w  = kernels[b, g, u, v, pixels]             # (BLOCK_P,): shared by the group
            xs = x[b, group g channels, rows, cols]      # (BLOCK_C, BLOCK_P), 0 where outside
            acc += xs * w[None, :]
        out[b, group g channels, pixels] = acc

The group's channels are the first axis of the block (``tl.arange(0, BLOCK_C)``, the next
power of two above ``C/G``, masked beyond ``C/G``); pixels are the second, contiguous in
memory so that neighbouring lanes read neighbouring addresses. The backward has the same
shape:

* ``grad_kernels[b, g, u, v, i, j] = sum_{c in g} grad_out[b, c, i, j] * x[b, c, rows, cols]``:
  one program per (b, g, block of output pixels), a dot product over the group's channels
  per tap (``tl.sum(..., axis=0)``);
* ``grad_x[b, c, h, w] = sum_{u, v} kernels[b, g, u, v, i, j] * grad_out[b, c, i, j]`` over
  the taps whose output position ``i = (h + p - u*d) / s`` (and likewise ``j``) is an integer
  inside the output: one program per (b, g, block of *input* pixels) *gathers* its
  contributions, so no two programs write the same value: no atomics, and the result is
  deterministic (the same bits on every run).

Half and bfloat16 inputs are read as they are and accumulated in float32 (float64 inputs in
float64); results come back in the input dtype.

Where it runs. On CUDA tensors with ``triton`` installed (``pip install
'involution_edu[triton]'`` on Linux). Triton's *interpreter* runs the very same kernels on
the CPU with NumPy when the environment variable ``TRITON_INTERPRET=1`` is set: slow, but
exact enough to test every mask, and it is how the tests and notebook 10 run without a GPU.
The interpreter has no bfloat16, so bfloat16 CPU tensors are converted to float32 before the
launch and the result back to bfloat16 (the accumulation is float32 either way).

Importing this module never imports ``triton``: the kernels are compiled (``@triton.jit``)
on first use, once for the compiler and once for the interpreter, so the rest of the library
works where Triton is not installed, and :func:`triton_available` / :func:`triton_error` say
whether and why not.
"""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace
from typing import Optional, Tuple

import torch

__all__ = [
    "INSTALL_HINT",
    "SUPPORTED_DTYPES",
    "triton_available",
    "triton_error",
    "triton_interpreting",
    "triton_supports",
    "triton_forward",
    "triton_backward",
    "triton_fused_forward",
    "triton_fused_backward",
    "block_sizes",
]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
"""Dtypes the kernels accept (half and bfloat16 accumulate in float32)."""

INSTALL_HINT = "install it with `pip install 'involution_edu[triton]'` (Linux; it pins the Triton release that matches torch)"

_lock = threading.Lock()
_triton = None  # the imported module, once imported
_tried = False
_error: Optional[str] = None
_kernels: dict = {}  # interpret (bool) -> SimpleNamespace of the three jitted kernels

# ``tl`` is bound on first use (see _load); the kernel bodies below refer to it as a global,
# and their ``tl.constexpr`` annotations are strings (``from __future__ import annotations``),
# which Triton reads as such.
#
# Interpreter or compiler? Triton decides when a function is wrapped by ``@triton.jit``: it
# reads TRITON_INTERPRET then. Its own library functions written in Triton (``tl.zeros``,
# ``tl.sum``, ...) are wrapped when ``triton`` is first imported, and torch imports triton
# early (``import torch.library`` does), so in a test suite they may be wrapped for the
# compiler even though the interpreter runs our kernels. The kernels therefore use only
# Triton's built-in operations: ``tl.full(shape, 0.0, dtype)`` for ``tl.zeros`` and
# ``tl.reduce(v, 0, tl.standard._sum_combine)``, which is what ``tl.sum(v, axis=0)`` runs,
# without its wrapper (the interpreter turns it into ``np.sum``). In a notebook that sets
# TRITON_INTERPRET=1 before importing anything, ``tl.zeros`` and ``tl.sum`` work as usual.
tl = None


def _load():
    """Import triton once; return the module or ``None`` (then :data:`_error` says why)."""
    global _triton, _tried, _error, tl
    if _tried:
        return _triton
    with _lock:
        if not _tried:
            try:
                import triton
                import triton.language as language
            except Exception as error:  # ImportError, or a broken install raising anything else
                _error = f"cannot import triton ({type(error).__name__}: {error}); {INSTALL_HINT}"
            else:
                _triton, tl = triton, language
            _tried = True
    return _triton


def triton_available() -> bool:
    """Whether ``triton`` can be imported in this process (says nothing about a GPU being present)."""
    return _load() is not None


def triton_error() -> Optional[str]:
    """Why Triton is unavailable (``None`` when it imports)."""
    _load()
    return _error


def triton_interpreting() -> bool:
    """Whether Triton's interpreter is switched on (``TRITON_INTERPRET=1``): kernels then run on the CPU."""
    if "TRITON_INTERPRET" not in os.environ:
        return False
    triton = _load()
    if triton is None:
        return False
    return bool(triton.knobs.runtime.interpret)


def _device_ok(device: torch.device) -> bool:
    if device.type == "cuda":
        return True
    return device.type == "cpu" and triton_interpreting()


def triton_supports(x: torch.Tensor, kernels: torch.Tensor) -> bool:
    """Whether the Triton kernels handle these tensors.

    True for floating tensors of one supported dtype (float16, bfloat16, float32, float64) on
    one CUDA device with Triton importable, or on the CPU when ``TRITON_INTERPRET=1`` is set.
    """
    if not (isinstance(x, torch.Tensor) and isinstance(kernels, torch.Tensor)):
        return False
    if x.dtype not in SUPPORTED_DTYPES or kernels.dtype != x.dtype or x.device != kernels.device:
        return False
    if x.layout != torch.strided or kernels.layout != torch.strided:
        return False
    if x.device.type not in ("cuda", "cpu") or not triton_available():
        return False
    return _device_ok(x.device)


def _check(name: str, tensor: torch.Tensor, reference: torch.Tensor) -> None:
    """Clear errors for what the kernels cannot take (shapes are validated by the caller)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d) for d in SUPPORTED_DTYPES)
        raise TypeError(f"the Triton backend needs {name} of dtype {names}; got {tensor.dtype}")
    if tensor.dtype != reference.dtype:
        raise TypeError(f"{name} must have the same dtype as x ({reference.dtype}), got {tensor.dtype}")
    if tensor.device != reference.device:
        raise ValueError(f"{name} must be on the same device as x ({reference.device}), got {tensor.device}")
    if tensor.layout != torch.strided:
        raise TypeError(f"the Triton backend needs dense (strided) tensors; {name} has layout {tensor.layout}")


def _check_all(x: torch.Tensor, *others: Tuple[str, torch.Tensor]) -> None:
    if _load() is None:
        raise RuntimeError(f"the Triton backend is unavailable: {_error}")
    _check("x", x, x)
    for name, tensor in others:
        _check(name, tensor, x)
    if not _device_ok(x.device):
        raise ValueError(
            f"the Triton backend needs CUDA tensors, got x on {x.device}; to run the kernels on the CPU "
            "with Triton's interpreter, set the environment variable TRITON_INTERPRET=1 (before importing triton)"
        )


# ----------------------------------------------------------------------------------------------
# The kernels. Plain Python functions here; _jitted() wraps them with @triton.jit on first use.
# Index names: b sample, g group, u/v tap row/column, i/j output row/column, h/w input row/column.
# ----------------------------------------------------------------------------------------------


def _forward_kernel(
    x_ptr, k_ptr, out_ptr,
    C, H, W, G, CG, OUT_H, OUT_W, N_CBLOCKS,
    K: tl.constexpr, STRIDE: tl.constexpr, PADDING: tl.constexpr, DILATION: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr,
):
    """out[b, c, i, j] = sum_{u,v} kernels[b, g, u, v, i, j] * x[b, c, i*s+u*d-p, j*s+v*d-p].

    Grid: (B * G * N_CBLOCKS, cdiv(OUT_H * OUT_W, BLOCK_P)). All tensors contiguous.
    """
    pid = tl.program_id(0)
    cblock = pid % N_CBLOCKS
    bg = pid // N_CBLOCKS  # = b * G + g
    b = bg // G
    g = bg % G
    n_out = OUT_H * OUT_W
    pixels = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)  # flat output positions (i, j)
    pixel_ok = pixels < n_out
    top = (pixels // OUT_W) * STRIDE - PADDING  # input row of tap u = 0
    left = (pixels % OUT_W) * STRIDE - PADDING  # input column of tap v = 0
    chans = cblock * BLOCK_C + tl.arange(0, BLOCK_C)  # channels within the group
    chan_ok = chans < CG
    first_channel = (b * C + g * CG).to(tl.int64)
    x_rows = x_ptr + first_channel * H * W + chans[:, None] * (H * W)  # (BLOCK_C, 1) channel planes
    tap_ptrs = k_ptr + bg.to(tl.int64) * K * K * n_out + pixels  # kernels[b, g, 0, 0, pixels]
    acc = tl.full((BLOCK_C, BLOCK_P), 0.0, ACC)
    for u in range(K):
        h = top + u * DILATION
        row_ok = pixel_ok & (h >= 0) & (h < H)
        x_row = x_rows + (h * W)[None, :]
        for v in range(K):
            w = left + v * DILATION
            inside = row_ok & (w >= 0) & (w < W)  # the mask is the zero padding (the tap still
            # multiplies that zero, so inf/NaN kernel values on padded taps give NaN, as in every backend)
            tap = tl.load(tap_ptrs, mask=pixel_ok, other=0.0).to(ACC)  # (BLOCK_P,)
            xs = tl.load(x_row + w[None, :], mask=chan_ok[:, None] & inside[None, :], other=0.0).to(ACC)
            acc += xs * tap[None, :]  # one kernel value per pixel, shared by the group's channels
            tap_ptrs += n_out  # next tap: kernels[b, g, u, v + 1, pixels]
    out_ptrs = out_ptr + first_channel * n_out + chans[:, None] * n_out + pixels[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=chan_ok[:, None] & pixel_ok[None, :])


def _grad_kernels_kernel(
    x_ptr, go_ptr, gk_ptr,
    C, H, W, G, CG, OUT_H, OUT_W,
    K: tl.constexpr, STRIDE: tl.constexpr, PADDING: tl.constexpr, DILATION: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr,
):
    """grad_kernels[b, g, u, v, i, j] = sum_{c in g} grad_out[b, c, i, j] * x[b, c, i*s+u*d-p, j*s+v*d-p].

    Grid: (B * G, cdiv(OUT_H * OUT_W, BLOCK_P)). The group's channels come in chunks of
    BLOCK_C; after the first chunk each tap adds to what the previous chunks stored (the
    program owns these values, so no atomics; the host gives a float32 buffer when there are
    several chunks of half-precision values).
    """
    bg = tl.program_id(0)
    b = bg // G
    g = bg % G
    n_out = OUT_H * OUT_W
    pixels = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    pixel_ok = pixels < n_out
    top = (pixels // OUT_W) * STRIDE - PADDING
    left = (pixels % OUT_W) * STRIDE - PADDING
    first_channel = (b * C + g * CG).to(tl.int64)
    gk_first = gk_ptr + bg.to(tl.int64) * K * K * n_out + pixels  # grad_kernels[b, g, 0, 0, pixels]
    for c0 in range(0, CG, BLOCK_C):
        chans = c0 + tl.arange(0, BLOCK_C)
        chan_ok = chans < CG
        go = tl.load(  # grad_out of this chunk at the block's pixels: read once, used by every tap
            go_ptr + first_channel * n_out + chans[:, None] * n_out + pixels[None, :],
            mask=chan_ok[:, None] & pixel_ok[None, :],
            other=0.0,
        ).to(ACC)
        x_rows = x_ptr + first_channel * H * W + chans[:, None] * (H * W)
        gk_ptrs = gk_first
        for u in range(K):
            h = top + u * DILATION
            row_ok = pixel_ok & (h >= 0) & (h < H)
            x_row = x_rows + (h * W)[None, :]
            for v in range(K):
                w = left + v * DILATION
                inside = row_ok & (w >= 0) & (w < W)
                xs = tl.load(x_row + w[None, :], mask=chan_ok[:, None] & inside[None, :], other=0.0).to(ACC)
                # (BLOCK_P,): a dot product over the channels, = tl.sum(go * xs, axis=0) (see the note at `tl = None`)
                total = tl.reduce(go * xs, 0, tl.standard._sum_combine)
                if c0 > 0:
                    total += tl.load(gk_ptrs, mask=pixel_ok, other=0.0).to(ACC)
                tl.store(gk_ptrs, total.to(gk_ptr.dtype.element_ty), mask=pixel_ok)
                gk_ptrs += n_out


def _grad_x_kernel(
    k_ptr, go_ptr, gx_ptr,
    C, H, W, G, CG, OUT_H, OUT_W, N_CBLOCKS,
    K: tl.constexpr, STRIDE: tl.constexpr, PADDING: tl.constexpr, DILATION: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr,
):
    """grad_x[b, c, h, w] = sum over taps (u, v) with i = (h + p - u*d) / s and j = (w + p - v*d) / s
    integers inside the output of kernels[b, g, u, v, i, j] * grad_out[b, c, i, j] (a gather).

    Grid: (B * G * N_CBLOCKS, cdiv(H * W, BLOCK_P)): blocks of *input* pixels.
    """
    pid = tl.program_id(0)
    cblock = pid % N_CBLOCKS
    bg = pid // N_CBLOCKS
    b = bg // G
    g = bg % G
    n_in = H * W
    n_out = OUT_H * OUT_W
    pixels = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)  # flat input positions (h, w)
    pixel_ok = pixels < n_in
    h_pad = pixels // W + PADDING  # = i * s + u * d for every (i, u) that reads row h
    w_pad = pixels % W + PADDING
    chans = cblock * BLOCK_C + tl.arange(0, BLOCK_C)
    chan_ok = chans < CG
    first_channel = (b * C + g * CG).to(tl.int64)
    go_rows = go_ptr + first_channel * n_out + chans[:, None] * n_out
    k_first = k_ptr + bg.to(tl.int64) * K * K * n_out
    acc = tl.full((BLOCK_C, BLOCK_P), 0.0, ACC)
    for u in range(K):
        i_s = h_pad - u * DILATION  # i * s
        if STRIDE == 1:
            i = i_s
            row_ok = pixel_ok & (i_s >= 0) & (i < OUT_H)
        else:
            i = tl.where(i_s >= 0, i_s, 0) // STRIDE  # (clamped: // and % stay away from negatives)
            row_ok = pixel_ok & (i_s >= 0) & (i_s % STRIDE == 0) & (i < OUT_H)
        for v in range(K):
            j_s = w_pad - v * DILATION
            if STRIDE == 1:
                j = j_s
                ok = row_ok & (j_s >= 0) & (j < OUT_W)
            else:
                j = tl.where(j_s >= 0, j_s, 0) // STRIDE
                ok = row_ok & (j_s >= 0) & (j_s % STRIDE == 0) & (j < OUT_W)
            out_pixel = i * OUT_W + j
            tap = tl.load(k_first + (u * K + v) * n_out + out_pixel, mask=ok, other=0.0).to(ACC)
            go = tl.load(go_rows + out_pixel[None, :], mask=chan_ok[:, None] & ok[None, :], other=0.0).to(ACC)
            acc += go * tap[None, :]
    gx_ptrs = gx_ptr + first_channel * n_in + chans[:, None] * n_in + pixels[None, :]
    tl.store(gx_ptrs, acc.to(gx_ptr.dtype.element_ty), mask=chan_ok[:, None] & pixel_ok[None, :])


INDEX_LIMIT = 2**31 - 1
"""Offsets inside one (sample, group) are computed in int32 (the base of each group in int64)."""


def _check_sizes(channels_per_group: int, height: int, width: int, kernel_size: int, out_h: int, out_w: int) -> None:
    for what, size in (
        ("one group's input (C/G * H * W)", channels_per_group * height * width),
        ("one group's output (C/G * H' * W')", channels_per_group * out_h * out_w),
        ("one group's kernels (K * K * H' * W')", kernel_size * kernel_size * out_h * out_w),
    ):
        if size > INDEX_LIMIT:
            raise ValueError(
                f"the Triton backend indexes within a group with 32-bit integers; {what} has {size} elements, "
                f"more than {INDEX_LIMIT}: use more groups, smaller images, or backend='eager'"
            )


def _grid(programs: int, blocks: int, interpret: bool) -> Tuple[int, int]:
    """The launch grid; CUDA allows at most 65535 programs along its second axis."""
    if blocks > 65535 and not interpret:
        raise ValueError(
            f"the Triton backend would launch {blocks} pixel blocks per group, more than CUDA's 65535; "
            "the image is too large for it: use backend='eager'"
        )
    return programs, blocks


def _jitted(interpret: bool) -> SimpleNamespace:
    """The three kernels wrapped by ``triton.jit``, for the compiler or the interpreter.

    Triton decides at decoration time whether a kernel is compiled or interpreted (it reads
    ``TRITON_INTERPRET`` then), so each mode gets its own wrapped copy, made while the
    environment says that mode (``interpret`` is :func:`triton_interpreting` at the call).
    """
    triton = _load()
    if triton is None:
        raise RuntimeError(f"the Triton backend is unavailable: {_error}")
    with _lock:
        if interpret not in _kernels:
            _kernels[interpret] = SimpleNamespace(
                forward=triton.jit(_forward_kernel),
                grad_kernels=triton.jit(_grad_kernels_kernel),
                grad_x=triton.jit(_grad_x_kernel),
            )
    return _kernels[interpret]


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def block_sizes(channels_per_group: int, pixels: int, interpret: bool = False) -> Tuple[int, int]:
    """``(BLOCK_C, BLOCK_P)``: channels and pixels one program handles.

    ``BLOCK_C`` is the power of two at or above ``C/G`` (at most 64; bigger groups are split
    over several programs); ``BLOCK_P`` keeps a block near 4096 values on a GPU (a
    ``16 x 256`` float32 accumulator is 32 registers per thread with 4 warps). The interpreter
    pays per program, not per value, so it takes whole images (up to 1024 pixels) at once.
    """
    block_c = min(_next_power_of_2(channels_per_group), 64)
    budget = 1 << 14 if interpret else 4096
    block_p = max(16, min(budget // block_c, 1024 if interpret else 256))
    block_p = min(block_p, max(16, _next_power_of_2(pixels)))
    return block_c, block_p


def _prepare(tensor: torch.Tensor, interpret: bool) -> torch.Tensor:
    """Contiguous, and float32 instead of bfloat16 under the interpreter (NumPy has no bfloat16)."""
    if interpret and tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.contiguous()


def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def triton_forward(
    x: torch.Tensor, kernels: torch.Tensor, stride: int, padding: int, dilation: int, out_h: int, out_w: int
) -> torch.Tensor:
    """Forward pass with the Triton kernel; shapes already validated (see ``check_tensors``).

    ``x``: ``(B, C, H, W)``, ``kernels``: ``(B, G, K, K, H', W')``, any strides, same dtype
    (float16, bfloat16, float32 or float64) and device. Returns ``(B, C, H', W')``, contiguous,
    in ``x``'s dtype (half and bfloat16 accumulate in float32).
    """
    _check_all(x, ("kernels", kernels))
    interpret = triton_interpreting()  # then Triton interprets even CUDA tensors (copied to the host)
    dtype = x.dtype
    xc, kc = _prepare(x, interpret), _prepare(kernels, interpret)
    batch, channels, height, width = xc.shape
    groups, kernel_size = kc.shape[1], kc.shape[2]
    cg = channels // groups
    _check_sizes(cg, height, width, kernel_size, out_h, out_w)
    out = torch.empty((batch, channels, out_h, out_w), dtype=xc.dtype, device=xc.device)
    if out.numel() == 0:
        return out.to(dtype)
    block_c, block_p = block_sizes(cg, out_h * out_w, interpret)
    n_cblocks = -(-cg // block_c)
    grid = _grid(batch * groups * n_cblocks, -(-(out_h * out_w) // block_p), interpret)
    _jitted(interpret).forward[grid](
        xc, kc, out,
        channels, height, width, groups, cg, out_h, out_w, n_cblocks,
        K=kernel_size, STRIDE=stride, PADDING=padding, DILATION=dilation,
        BLOCK_C=block_c, BLOCK_P=block_p, ACC=_acc_dtype(xc.dtype),
    )
    return out.to(dtype)


def triton_backward(
    x: torch.Tensor,
    kernels: torch.Tensor,
    grad_out: torch.Tensor,
    stride: int,
    padding: int,
    dilation: int,
    need_x: bool = True,
    need_kernels: bool = True,
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Gradients ``(grad_x, grad_kernels)`` with the Triton kernels (``None`` where not needed).

    ``grad_out``: ``(B, C, H', W')``, any strides, the dtype of ``x``. ``grad_x`` has ``x``'s
    shape and ``grad_kernels`` ``kernels``' shape, both contiguous, in ``x``'s dtype.
    """
    _check_all(x, ("kernels", kernels), ("grad_out", grad_out))
    interpret = triton_interpreting()  # then Triton interprets even CUDA tensors (copied to the host)
    dtype = x.dtype
    batch, channels, height, width = x.shape
    groups, kernel_size, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    if tuple(grad_out.shape) != (batch, channels, out_h, out_w):
        raise ValueError(
            f"grad_out must have shape {(batch, channels, out_h, out_w)} (the output's), got {tuple(grad_out.shape)}"
        )
    cg = channels // groups
    _check_sizes(cg, height, width, kernel_size, out_h, out_w)
    kernels_fn = _jitted(interpret)
    go = _prepare(grad_out, interpret)
    grad_x = grad_kernels = None
    if need_kernels:
        xc = _prepare(x, interpret)
        block_c, block_p = block_sizes(cg, out_h * out_w, interpret)
        several_chunks = cg > block_c  # then partial sums are stored between chunks: keep them in float32
        low_precision = xc.dtype in (torch.float16, torch.bfloat16)
        buffer_dtype = torch.float32 if several_chunks and low_precision else xc.dtype
        grad_kernels = torch.empty(kernels.shape, dtype=buffer_dtype, device=xc.device)
        if grad_kernels.numel() > 0:
            if go.numel() == 0:
                grad_kernels.zero_()
            else:
                grid = _grid(batch * groups, -(-(out_h * out_w) // block_p), interpret)
                kernels_fn.grad_kernels[grid](
                    xc, go, grad_kernels,
                    channels, height, width, groups, cg, out_h, out_w,
                    K=kernel_size, STRIDE=stride, PADDING=padding, DILATION=dilation,
                    BLOCK_C=block_c, BLOCK_P=block_p, ACC=_acc_dtype(xc.dtype),
                )
        grad_kernels = grad_kernels.to(dtype)
    if need_x:
        kc = _prepare(kernels, interpret)
        grad_x = torch.empty(x.shape, dtype=kc.dtype, device=kc.device)
        if grad_x.numel() > 0:
            if go.numel() == 0:
                grad_x.zero_()
            else:
                block_c, block_p = block_sizes(cg, height * width, interpret)
                n_cblocks = -(-cg // block_c)
                grid = _grid(batch * groups * n_cblocks, -(-(height * width) // block_p), interpret)
                kernels_fn.grad_x[grid](
                    kc, go, grad_x,
                    channels, height, width, groups, cg, out_h, out_w, n_cblocks,
                    K=kernel_size, STRIDE=stride, PADDING=padding, DILATION=dilation,
                    BLOCK_C=block_c, BLOCK_P=block_p, ACC=_acc_dtype(kc.dtype),
                )
        grad_x = grad_x.to(dtype)
    return grad_x, grad_kernels


# ----------------------------------------------------------------------------------------------
# The fused kernel-generating involution (involution_edu.fused): the kernels are never stored.
# Each program computes its block's tap values from h in registers,
#     tap[t, pixels] = bias[t] + sum_r weight[t, r] * h[b, r, pixels]     (t = g*K*K + u*K + v)
# and uses them at once. The backward recomputes them the same way; dx, dh, dweight and dbias
# are summed with atomic adds into float32/float64 buffers (dx and dh: several programs touch the
# same values; dweight, dbias: a sum over the whole batch).
# ----------------------------------------------------------------------------------------------


def _fused_forward_kernel(
    x_ptr, h_ptr, w_ptr, bias_ptr, out_ptr,
    C, H, W, G, CG, CR, OUT_H, OUT_W, N_CBLOCKS,
    K: tl.constexpr, STRIDE: tl.constexpr, PADDING: tl.constexpr, DILATION: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr,
):
    """out[b, c, i, j] = sum_{u,v} tap[g*K*K + u*K + v, (i, j)] * x[b, c, i*s+u*d-p, j*s+v*d-p].

    Grid: (B * G * N_CBLOCKS, cdiv(OUT_H * OUT_W, BLOCK_P)). All tensors contiguous;
    weight is (G*K*K, CR), h is (B, CR, OUT_H, OUT_W).
    """
    pid = tl.program_id(0)
    cblock = pid % N_CBLOCKS
    bg = pid // N_CBLOCKS
    b = bg // G
    g = bg % G
    n_out = OUT_H * OUT_W
    pixels = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    pixel_ok = pixels < n_out
    top = (pixels // OUT_W) * STRIDE - PADDING
    left = (pixels % OUT_W) * STRIDE - PADDING
    chans = cblock * BLOCK_C + tl.arange(0, BLOCK_C)
    chan_ok = chans < CG
    reds = tl.arange(0, BLOCK_R)
    red_ok = reds < CR
    hs = tl.load(h_ptr + b.to(tl.int64) * CR * n_out + reds[:, None] * n_out + pixels[None, :],
                 mask=red_ok[:, None] & pixel_ok[None, :], other=0.0).to(ACC)  # (BLOCK_R, BLOCK_P)
    first_channel = (b * C + g * CG).to(tl.int64)
    x_rows = x_ptr + first_channel * H * W + chans[:, None] * (H * W)
    row0 = g * K * K
    acc = tl.full((BLOCK_C, BLOCK_P), 0.0, ACC)
    for u in range(K):
        hh = top + u * DILATION
        row_ok = pixel_ok & (hh >= 0) & (hh < H)
        x_row = x_rows + (hh * W)[None, :]
        for v in range(K):
            t = row0 + u * K + v
            wt = tl.load(w_ptr + t * CR + reds, mask=red_ok, other=0.0).to(ACC)  # (BLOCK_R,)
            tap = tl.reduce(wt[:, None] * hs, 0, tl.standard._sum_combine) + tl.load(bias_ptr + t).to(ACC)
            ww = left + v * DILATION
            inside = row_ok & (ww >= 0) & (ww < W)
            xs = tl.load(x_row + ww[None, :], mask=chan_ok[:, None] & inside[None, :], other=0.0).to(ACC)
            acc += xs * tap[None, :]
    out_ptrs = out_ptr + first_channel * n_out + chans[:, None] * n_out + pixels[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=chan_ok[:, None] & pixel_ok[None, :])


def _fused_backward_kernel(
    x_ptr, h_ptr, w_ptr, bias_ptr, go_ptr, gx_ptr, gh_ptr, gw_ptr, gb_ptr,
    C, H, W, G, CG, CR, OUT_H, OUT_W,
    K: tl.constexpr, STRIDE: tl.constexpr, PADDING: tl.constexpr, DILATION: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr,
):
    """Per tap t of the program's group: tap = recomputed kernel values, dk = sum_c go * x (the
    kernels' gradient, kept in registers), then dx += tap * go (scattered), dh += weight[t] dk,
    dweight[t] += dk h^T, dbias[t] += sum dk. Grid: (B * G, cdiv(OUT_H * OUT_W, BLOCK_P))."""
    bg = tl.program_id(0)
    b = bg // G
    g = bg % G
    n_out = OUT_H * OUT_W
    pixels = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    pixel_ok = pixels < n_out
    top = (pixels // OUT_W) * STRIDE - PADDING
    left = (pixels % OUT_W) * STRIDE - PADDING
    reds = tl.arange(0, BLOCK_R)
    red_ok = reds < CR
    h_tile = h_ptr + b.to(tl.int64) * CR * n_out + reds[:, None] * n_out + pixels[None, :]
    tile_ok = red_ok[:, None] & pixel_ok[None, :]
    hs = tl.load(h_tile, mask=tile_ok, other=0.0).to(ACC)
    first_channel = (b * C + g * CG).to(tl.int64)
    dh = tl.full((BLOCK_R, BLOCK_P), 0.0, ACC)
    row0 = g * K * K
    for u in range(K):
        hh = top + u * DILATION
        row_ok = pixel_ok & (hh >= 0) & (hh < H)
        for v in range(K):
            t = row0 + u * K + v
            wt = tl.load(w_ptr + t * CR + reds, mask=red_ok, other=0.0).to(ACC)
            tap = tl.reduce(wt[:, None] * hs, 0, tl.standard._sum_combine) + tl.load(bias_ptr + t).to(ACC)
            ww = left + v * DILATION
            inside = row_ok & (ww >= 0) & (ww < W)
            offset = hh * W + ww
            dk = tl.full((BLOCK_P,), 0.0, ACC)
            for c0 in range(0, CG, BLOCK_C):
                chans = c0 + tl.arange(0, BLOCK_C)
                chan_ok = chans < CG
                go = tl.load(go_ptr + first_channel * n_out + chans[:, None] * n_out + pixels[None, :],
                             mask=chan_ok[:, None] & pixel_ok[None, :], other=0.0).to(ACC)
                plane = first_channel * H * W + chans[:, None] * (H * W) + offset[None, :]
                mask = chan_ok[:, None] & inside[None, :]
                xs = tl.load(x_ptr + plane, mask=mask, other=0.0).to(ACC)
                dk += tl.reduce(go * xs, 0, tl.standard._sum_combine)
                tl.atomic_add(gx_ptr + plane, go * tap[None, :], mask=mask)
            dh += wt[:, None] * dk[None, :]
            tl.atomic_add(gw_ptr + t * CR + reds, tl.reduce(hs * dk[None, :], 1, tl.standard._sum_combine), mask=red_ok)
            tl.atomic_add(gb_ptr + t, tl.reduce(dk, 0, tl.standard._sum_combine))
    tl.atomic_add(gh_ptr + b.to(tl.int64) * CR * n_out + reds[:, None] * n_out + pixels[None, :], dh, mask=tile_ok)


def _fused_jitted(interpret: bool) -> SimpleNamespace:
    triton = _load()
    if triton is None:
        raise RuntimeError(f"the Triton backend is unavailable: {_error}")
    key = ("fused", interpret)
    with _lock:
        if key not in _kernels:
            _kernels[key] = SimpleNamespace(forward=triton.jit(_fused_forward_kernel),
                                            backward=triton.jit(_fused_backward_kernel))
    return _kernels[key]


def _fused_blocks(cg: int, reduced: int, pixels: int, interpret: bool) -> Tuple[int, int, int]:
    """``(BLOCK_C, BLOCK_R, BLOCK_P)``: the h tile (BLOCK_R x BLOCK_P) shares the budget."""
    block_c, block_p = block_sizes(cg, pixels, interpret)
    block_r = _next_power_of_2(reduced)
    budget = 1 << 14 if interpret else 4096
    block_p = max(16, min(block_p, _next_power_of_2(max(1, budget // max(block_r, block_c)))))
    return block_c, block_r, block_p


def triton_fused_forward(x, h, weight, bias, kernel_size: int, stride: int, padding: int, dilation: int) -> torch.Tensor:
    """Fused forward with Triton: ``x (B, C, H, W)``, ``h (B, C_r, H', W')``, ``weight (G*K*K, C_r)``,
    ``bias (G*K*K,)`` (shapes validated by the caller) -> ``(B, C, H', W')`` in ``x``'s dtype."""
    _check_all(x, ("h", h), ("weight", weight), ("bias", bias))
    interpret = triton_interpreting()
    dtype = x.dtype
    xc, hc, wc, bc = (_prepare(t, interpret) for t in (x, h, weight, bias))
    batch, channels, height, width = xc.shape
    reduced, out_h, out_w = hc.shape[1], hc.shape[2], hc.shape[3]
    groups = wc.shape[0] // (kernel_size * kernel_size)
    cg = channels // groups
    _check_sizes(cg, height, width, kernel_size, out_h, out_w)
    out = torch.empty((batch, channels, out_h, out_w), dtype=xc.dtype, device=xc.device)
    if out.numel() == 0:
        return out.to(dtype)
    block_c, block_r, block_p = _fused_blocks(cg, reduced, out_h * out_w, interpret)
    n_cblocks = -(-cg // block_c)
    grid = _grid(batch * groups * n_cblocks, -(-(out_h * out_w) // block_p), interpret)
    _fused_jitted(interpret).forward[grid](
        xc, hc, wc, bc, out,
        channels, height, width, groups, cg, reduced, out_h, out_w, n_cblocks,
        K=kernel_size, STRIDE=stride, PADDING=padding, DILATION=dilation,
        BLOCK_C=block_c, BLOCK_R=block_r, BLOCK_P=block_p, ACC=_acc_dtype(xc.dtype),
    )
    return out.to(dtype)


def triton_fused_backward(grad_out, x, h, weight, bias, kernel_size: int, stride: int, padding: int, dilation: int):
    """Fused backward with Triton: ``(dx, dh, dweight, dbias)`` in the inputs' dtypes, the kernels
    recomputed per block (sums in float32, float64 for float64 inputs)."""
    _check_all(x, ("grad_out", grad_out), ("h", h), ("weight", weight), ("bias", bias))
    interpret = triton_interpreting()
    dtype = x.dtype
    xc, hc, wc, bc, go = (_prepare(t, interpret) for t in (x, h, weight, bias, grad_out))
    batch, channels, height, width = xc.shape
    reduced, out_h, out_w = hc.shape[1], hc.shape[2], hc.shape[3]
    groups = wc.shape[0] // (kernel_size * kernel_size)
    cg = channels // groups
    _check_sizes(cg, height, width, kernel_size, out_h, out_w)
    acc = torch.float64 if xc.dtype == torch.float64 else torch.float32
    grads = [torch.zeros(t.shape, dtype=acc, device=xc.device) for t in (xc, hc, wc, bc)]
    if go.numel() > 0 and xc.numel() > 0:
        block_c, block_r, block_p = _fused_blocks(cg, reduced, out_h * out_w, interpret)
        grid = _grid(batch * groups, -(-(out_h * out_w) // block_p), interpret)
        _fused_jitted(interpret).backward[grid](
            xc, hc, wc, bc, go, *grads,
            channels, height, width, groups, cg, reduced, out_h, out_w,
            K=kernel_size, STRIDE=stride, PADDING=padding, DILATION=dilation,
            BLOCK_C=block_c, BLOCK_R=block_r, BLOCK_P=block_p, ACC=_acc_dtype(xc.dtype),
        )
    return tuple(grad.to(dtype) for grad in grads)
