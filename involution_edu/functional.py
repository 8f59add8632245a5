"""Involution in PyTorch: the paper's unfold formulation and the library's op with backends.

Both functions take the same arguments and layout as the NumPy references in
:mod:`involution_edu.reference`::

    x       : (B, C, H, W)
    kernels : (B, G, K, K, H', W')
    result  : (B, C, H', W')       channel c uses group c // (C // G)

* :func:`involution_unfold` is the paper's formulation: ``F.unfold`` copies every
  ``K x K`` window into a tensor ``K^2`` times the size of the output, then one broadcast
  multiply and a sum. Simple, differentiable by autograd, but memory-hungry.
* :func:`involution` never builds that tensor. It calls the custom operator
  ``torch.ops.involution_edu.involution`` (:mod:`involution_edu.ops`), whose backward is two
  more operators, ``involution_grad_x`` and ``involution_grad_kernels``, so forward and
  backward need memory of the order of input + kernels + output only.

Backends of :func:`involution` (choose with ``backend=...`` or :func:`set_default_backend`):

* ``"eager"``: a loop over the ``K^2`` kernel offsets ``(u, v)`` in plain PyTorch that
  accumulates ``kernels[:, :, u, v] * x_shifted(u, v)`` into the output, where ``x_shifted``
  is a strided *view* of the padded input. Works on every device; ``K^2`` passes over memory.
* ``"native"``: a C++ kernel (:mod:`involution_edu.native`) compiled with the system
  compiler on first use (then cached) and run with OpenMP. One pass per output element over
  its ``K x K`` taps, like the paper's CUDA kernel; CPU tensors of dtype float32 or float64.
* ``"triton"``: Triton kernels (:mod:`involution_edu.triton_backend`, needs ``triton``) on
  CUDA tensors, or on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``).
* ``"auto"`` (the default): ``"triton"`` for CUDA tensors when Triton imports, ``"native"``
  for CPU float32/float64 tensors when the kernel is built, otherwise ``"eager"``. The choice
  depends only on the device, the dtype and what is installed, so it is the same in eager
  mode and under ``torch.compile`` / ``torch.export`` (whose fake tensors have no data).
  Results agree to rounding error whichever backend runs.

One operator for PyTorch's tools. Because the op is registered with
:func:`torch.library.custom_op` (with shape-only "fake" implementations that keep symbolic
sizes symbolic), ``torch.compile`` (no graph break, any backend), ``torch.export`` (dynamic
batch and spatial sizes), ``torch.jit.trace``, ``torch.func`` (``vmap``, ``grad``, ``jacrev``)
and ``torch.library.opcheck`` all see one operator. A traced graph replayed at sizes that
do not fit its kernels raises ``ValueError`` instead of reading out of bounds.

Derivatives of every order. The involution is bilinear (linear in ``x`` and linear in the
kernels), so the derivative of each of the three operators is again one of them (see
:mod:`involution_edu.ops`). Gradient penalties (``create_graph=True``), ``gradgradcheck`` and
Hessian-vector products are therefore exact on every backend, native and Triton included.

Half precision and autocast. float16 and bfloat16 inputs are accumulated in float32 on
every backend and the result rounded once to the input dtype. Inside
``torch.autocast(device, dtype=...)`` the op behaves like a convolution: ``x`` and the
kernels (float64 excepted) are cast to the autocast dtype, so a float32 input with
low-precision kernels from an autocast convolution is fine.

Non-finite values. The zero padding takes part in the sum like any other value: a padded
tap multiplies a zero, so an infinite or NaN kernel value on a padded tap gives NaN in that
output, exactly as in the paper's unfold code (``0 * inf = NaN``).

ONNX. During a legacy ONNX export (``torch.onnx.export(..., dynamo=False)``),
:func:`involution` runs :func:`involution_unfold` instead of the op, so the exported graph is
the paper's formulation in standard ONNX operators. Calling the bare operator
``torch.ops.involution_edu.involution`` in an exported model raises the exporter's
``UnsupportedOperatorError`` naming it, never a silently wrong graph.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from . import native as _native
from . import ops as _ops
from .shapes import check_involution_args, check_non_negative_int, check_positive_int, default_padding, output_size

__all__ = [
    "involution",
    "involution_unfold",
    "check_tensors",
    "BACKENDS",
    "available_backends",
    "get_default_backend",
    "set_default_backend",
    "resolve_backend",
]

BACKENDS = ("auto", "eager", "native", "triton")
"""Names accepted by ``involution(..., backend=...)``."""

_default_backend = "auto"


def _is_symbolic(*shapes) -> bool:
    return any(isinstance(size, torch.SymInt) for shape in shapes for size in shape)


def _check_symbolic_shapes(x: torch.Tensor, kernels: torch.Tensor, stride, padding, dilation):
    """:func:`~involution_edu.shapes.check_involution_args` for symbolic sizes (``torch.compile``
    with dynamic shapes, ``torch.export``): relations between sizes become ``torch._check``
    assertions instead of Python ``int`` conversions, which would specialise every size."""
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D (B, C, H, W), got {x.dim()}-D with shape {tuple(x.shape)}")
    if kernels.dim() != 6:
        raise ValueError(f"kernels must be 6-D (B, G, K, K, H', W'), got {kernels.dim()}-D with shape {tuple(kernels.shape)}")
    kernel_size = kernels.shape[2]
    torch._check(kernels.shape[2] == kernels.shape[3], lambda: "kernels must hold square K x K kernels in dims 2 and 3")
    stride = check_positive_int("stride", stride)
    dilation = check_positive_int("dilation", dilation)
    if padding is None:
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd when padding is left to its default, got K={kernel_size}")
        padding = default_padding(kernel_size, dilation)
    else:
        padding = check_non_negative_int("padding", padding)
    out_h = output_size(x.shape[2], kernel_size, stride, padding, dilation)
    out_w = output_size(x.shape[3], kernel_size, stride, padding, dilation)
    torch._check(kernels.shape[0] == x.shape[0], lambda: "kernels batch size must equal x's batch size")
    torch._check(x.shape[1] % kernels.shape[1] == 0, lambda: "x's channels must be divisible by the groups G = kernels.shape[1]")
    torch._check(out_h >= 1, lambda: "x is too small for the window")
    torch._check(out_w >= 1, lambda: "x is too small for the window")
    torch._check(kernels.shape[4] == out_h, lambda: "kernels spatial size must be the output size (H', W')")
    torch._check(kernels.shape[5] == out_w, lambda: "kernels spatial size must be the output size (H', W')")
    return stride, padding, dilation, out_h, out_w


def check_tensors(
    x: torch.Tensor,
    kernels: torch.Tensor,
    stride: object = 1,
    padding: object = None,
    dilation: object = 1,
    *,
    same_dtype: bool = True,
) -> Tuple[int, int, int, int, int]:
    """Validate types, dtypes, devices and shapes; return ``(stride, padding, dilation, H', W')``.

    ``same_dtype=False`` skips the dtype comparison (inside ``torch.autocast`` the op casts both).
    Symbolic sizes (``torch.compile``/``torch.export``) are checked without specialising them.
    """
    for name, value in (("x", x), ("kernels", kernels)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    if same_dtype and x.dtype != kernels.dtype:
        raise TypeError(
            f"kernels must have the same dtype as x ({x.dtype}), got {kernels.dtype}; convert one of them"
        )
    if x.device != kernels.device:
        raise ValueError(f"kernels must be on the same device as x ({x.device}), got {kernels.device}")
    if _is_symbolic(x.shape, kernels.shape):
        return _check_symbolic_shapes(x, kernels, stride, padding, dilation)
    return check_involution_args(x.shape, kernels.shape, stride, padding, dilation)


def involution_unfold(
    x: torch.Tensor,
    kernels: torch.Tensor,
    stride: int = 1,
    padding: Optional[int] = None,
    dilation: int = 1,
) -> torch.Tensor:
    """Involution as in the paper's code: ``F.unfold``, broadcast multiply, sum over the window.

    Args:
        x: ``(B, C, H, W)``.
        kernels: ``(B, G, K, K, H', W')``.
        stride, padding, dilation: as in :func:`involution_edu.reference.involution_loops`.

    Returns:
        ``(B, C, H', W')``. Memory: the unfolded input has ``B * C * K^2 * H' * W'`` elements.
    """
    stride, padding, dilation, out_h, out_w = check_tensors(x, kernels, stride, padding, dilation)
    batch, channels = x.shape[:2]
    groups, kernel_size = kernels.shape[1], int(kernels.shape[2])  # int: ONNX export traces sizes as tensors
    # windows: (B, C * K * K, H' * W'), channel-major then (u, v): viewed as (B, G, C/G, K*K, H', W')
    windows = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)
    windows = windows.view(batch, groups, channels // groups, kernel_size * kernel_size, out_h, out_w)
    taps = kernels.reshape(batch, groups, 1, kernel_size * kernel_size, out_h, out_w)
    return (taps * windows).sum(dim=3).view(batch, channels, out_h, out_w)


@torch.compiler.assume_constant_result
def _native_ready() -> bool:
    """Whether the native kernel is built and loaded (builds it on the first call). A constant for
    ``torch.compile``: decided once, outside the traced graph, like any other configuration."""
    return _native.native_available()


@torch.compiler.assume_constant_result
def _triton_importable() -> bool:
    module = _ops.triton_module()
    return module is not None and module.triton_available()


@torch.compiler.assume_constant_result
def _triton_interpreting() -> bool:
    module = _ops.triton_module()
    return module is not None and "TRITON_INTERPRET" in os.environ and module.triton_interpreting()


def available_backends() -> Tuple[str, ...]:
    """The concrete backends usable in this process, e.g. ``("eager", "native")``.

    Building the native kernel is attempted (once) by this call. ``"triton"`` is listed when
    Triton imports and either a CUDA device is present or its interpreter is on.
    """
    backends = ("eager", "native") if _native.native_available() else ("eager",)
    if _triton_importable() and (torch.cuda.is_available() or _triton_interpreting()):
        backends += ("triton",)
    return backends


def get_default_backend() -> str:
    """The backend :func:`involution` uses when none is passed (``"auto"`` unless changed)."""
    return _default_backend


def _check_backend_name(backend: object) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def set_default_backend(backend: str) -> str:
    """Set the backend :func:`involution` (and so :class:`~involution_edu.module.Involution`) uses
    by default; returns the previous one so that it can be restored."""
    global _default_backend
    previous, _default_backend = _default_backend, _check_backend_name(backend)
    return previous


def _effective_dtype(x: torch.Tensor, kernels: torch.Tensor) -> torch.dtype:
    """The dtype the op computes in: the autocast dtype inside ``torch.autocast`` (float64 excepted)."""
    device = x.device.type
    if device in ("cpu", "cuda") and torch.is_autocast_enabled(device) and x.dtype != torch.float64:
        return torch.get_autocast_dtype(device)
    return x.dtype


def resolve_backend(backend: Optional[str], x: torch.Tensor, kernels: torch.Tensor) -> str:
    """The concrete backend (``"eager"``, ``"native"`` or ``"triton"``) that :func:`involution` will run.

    ``None`` means the default backend. ``"auto"`` looks only at the device, the dtype and
    what is available: CUDA + Triton importable -> ``"triton"``; CPU float32/float64 with the
    native kernel built -> ``"native"``; else ``"eager"``. So under ``torch.compile`` it picks
    what it picks in eager mode. Asking for a backend where it cannot run raises
    ``RuntimeError`` saying why.
    """
    backend = _check_backend_name(_default_backend if backend is None else backend)
    if backend == "eager":
        return "eager"
    device = x.device.type
    dtype = _effective_dtype(x, kernels)
    if backend == "auto":
        if device == "cuda" and _triton_importable():
            return "triton"
        if device == "cpu" and dtype in (torch.float32, torch.float64) and _native_ready():
            return "native"
        return "eager"
    if backend == "native":
        if device != "cpu" or dtype not in (torch.float32, torch.float64):
            raise RuntimeError(
                f"backend='native' needs CPU tensors of dtype float32 or float64, got {dtype} on {x.device}; "
                f"use backend='eager' or 'auto'"
            )
        if not _native_ready():
            raise RuntimeError(f"backend='native' is unavailable here: {_native.native_error()}")
        return "native"
    # backend == "triton"
    if not _triton_importable():
        module = _ops.triton_module()
        why = module.triton_error() if module is not None else "involution_edu.triton_backend failed to import"
        raise RuntimeError(f"backend='triton' is unavailable here: {why}")
    if not (device == "cuda" or (device == "cpu" and _triton_interpreting())):
        raise RuntimeError(
            f"backend='triton' needs CUDA tensors, got tensors on {x.device}; to run the Triton kernels on the "
            f"CPU with Triton's interpreter set TRITON_INTERPRET=1 before importing triton, or use backend='eager'"
        )
    return "triton"


def involution(
    x: torch.Tensor,
    kernels: torch.Tensor,
    stride: int = 1,
    padding: Optional[int] = None,
    dilation: int = 1,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """The library's default involution: same result as :func:`involution_unfold`, lean memory.

    Args:
        x: ``(B, C, H, W)``, floating point.
        kernels: ``(B, G, K, K, H', W')``, same dtype (outside ``torch.autocast``) and device as ``x``.
        stride: step between output positions.
        padding: zeros on every side; ``None`` means ``dilation * (K - 1) // 2``.
        dilation: spacing between kernel taps.
        backend: ``"auto"``, ``"eager"``, ``"native"`` or ``"triton"`` (see the module
            docstring); ``None`` uses :func:`get_default_backend` (``"auto"`` unless changed).

    Returns:
        ``(B, C, H', W')``, contiguous, in ``x``'s dtype (the autocast dtype inside
        ``torch.autocast``). Differentiable in ``x`` and ``kernels`` to any order; forward and
        backward allocate O(input + kernels + output) memory, never the ``K^2``-times-larger
        unfold.
    """
    autocast = isinstance(x, torch.Tensor) and x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)
    stride, padding, dilation, _, _ = check_tensors(x, kernels, stride, padding, dilation, same_dtype=not autocast)
    if not torch.compiler.is_compiling() and torch.onnx.is_in_onnx_export():
        # The legacy ONNX exporter traces PyTorch operators; it gets the paper's formulation.
        return involution_unfold(x, kernels, stride, padding, dilation)
    name = resolve_backend(backend, x, kernels)
    return _ops.call("forward", x, kernels, stride, padding, dilation, name)
