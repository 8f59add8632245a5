"""Involution in PyTorch: the paper's unfold formulation and a memory-lean default op.

Both functions take the same arguments and layout as the NumPy references in
:mod:`involution_edu.reference`::

    x       : (B, C, H, W)
    kernels : (B, G, K, K, H', W')
    result  : (B, C, H', W')       channel c uses group c // (C // G)

* :func:`involution_unfold` is the paper's formulation: ``F.unfold`` copies every
  ``K x K`` window into a tensor ``K^2`` times the size of the output, then one broadcast
  multiply and a sum. Simple, differentiable by autograd, but memory-hungry.
* :func:`involution` never builds that tensor. It loops over the ``K^2`` kernel offsets
  ``(u, v)`` and accumulates ``kernels[:, :, u, v] * x_shifted(u, v)`` into the output,
  where ``x_shifted`` is a strided *view* of the padded input. Its backward, written by hand
  in :class:`InvolutionFunction`, does the same in reverse, so forward and backward need
  memory of the order of input + kernels + output only.

Backends of :func:`involution` (choose with ``backend=...`` or :func:`set_default_backend`):

* ``"eager"``: the offset loop above, in plain PyTorch. Works on every device and dtype,
  supports double backward, but makes ``K^2`` passes over memory.
* ``"native"``: a C++ kernel (:mod:`involution_edu.native`) compiled with the system
  compiler on first use (a few seconds, then cached) and run with OpenMP. One pass per
  output element over its ``K x K`` taps, like the paper's CUDA kernel; CPU, float32 and
  float64, first-order gradients only.
* ``"auto"`` (the default): ``"native"`` when it is available and supports the tensors,
  otherwise ``"eager"``. Results agree to rounding error whichever is used.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import native as _native
from .shapes import check_involution_args

__all__ = [
    "involution",
    "involution_unfold",
    "check_tensors",
    "InvolutionFunction",
    "NativeInvolutionFunction",
    "BACKENDS",
    "available_backends",
    "get_default_backend",
    "set_default_backend",
    "resolve_backend",
]

BACKENDS = ("auto", "eager", "native")
"""Names accepted by ``involution(..., backend=...)``."""

_default_backend = "auto"


def check_tensors(
    x: torch.Tensor,
    kernels: torch.Tensor,
    stride: object = 1,
    padding: object = None,
    dilation: object = 1,
) -> Tuple[int, int, int, int, int]:
    """Validate types, dtypes, devices and shapes; return ``(stride, padding, dilation, H', W')``."""
    for name, value in (("x", x), ("kernels", kernels)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    if x.dtype != kernels.dtype:
        raise TypeError(
            f"kernels must have the same dtype as x ({x.dtype}), got {kernels.dtype}; convert one of them"
        )
    if x.device != kernels.device:
        raise ValueError(f"kernels must be on the same device as x ({x.device}), got {kernels.device}")
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
    groups, kernel_size = kernels.shape[1], kernels.shape[2]
    # windows: (B, C * K * K, H' * W'), channel-major then (u, v): viewed as (B, G, C/G, K*K, H', W')
    windows = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)
    windows = windows.view(batch, groups, channels // groups, kernel_size * kernel_size, out_h, out_w)
    taps = kernels.reshape(batch, groups, 1, kernel_size * kernel_size, out_h, out_w)
    return (taps * windows).sum(dim=3).view(batch, channels, out_h, out_w)


def _shifted(x_padded: torch.Tensor, u: int, v: int, stride: int, dilation: int, out_h: int, out_w: int) -> torch.Tensor:
    """View of the padded input that tap ``(u, v)`` reads at every output position.

    ``x_padded``: ``(..., Hp, Wp)`` -> result ``(..., H', W')`` with
    ``result[..., i, j] = x_padded[..., i*stride + u*dilation, j*stride + v*dilation]``.
    """
    row0, col0 = u * dilation, v * dilation
    return x_padded[..., row0 : row0 + (out_h - 1) * stride + 1 : stride, col0 : col0 + (out_w - 1) * stride + 1 : stride]


def _forward(x: torch.Tensor, kernels: torch.Tensor, stride: int, padding: int, dilation: int, out_h: int, out_w: int) -> torch.Tensor:
    batch, channels = x.shape[:2]
    groups, kernel_size = kernels.shape[1], kernels.shape[2]
    x_padded = F.pad(x, (padding,) * 4)
    x_padded = x_padded.view(batch, groups, channels // groups, *x_padded.shape[2:])  # (B, G, C/G, Hp, Wp)
    out = x.new_zeros(batch, groups, channels // groups, out_h, out_w)
    for u in range(kernel_size):
        for v in range(kernel_size):
            tap = kernels[:, :, u, v].unsqueeze(2)  # (B, G, 1, H', W'), shared by the group's channels
            out.addcmul_(_shifted(x_padded, u, v, stride, dilation, out_h, out_w), tap)
    return out.view(batch, channels, out_h, out_w)


class InvolutionFunction(torch.autograd.Function):
    """Memory-lean involution with a hand-written backward.

    Forward:  ``y = sum_{u,v} K[:, g, u, v] * shift_{u,v}(x)``.
    Backward: ``dL/dK[:, g, u, v] = sum_{c in g} dL/dy[:, c] * shift_{u,v}(x)[:, c]`` and
    ``dL/dx`` scatters ``dL/dy * K[:, g, u, v]`` back through each shift (a strided add into a
    zero-padded buffer). No tensor bigger than the padded input is ever allocated.
    """

    @staticmethod
    def forward(ctx, x, kernels, stride, padding, dilation, out_h, out_w):  # type: ignore[override]
        ctx.save_for_backward(x, kernels)
        ctx.params = (stride, padding, dilation, out_h, out_w)
        return _forward(x, kernels, stride, padding, dilation, out_h, out_w)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, kernels = ctx.saved_tensors
        stride, padding, dilation, out_h, out_w = ctx.params
        batch, channels, height, width = x.shape
        groups, kernel_size = kernels.shape[1], kernels.shape[2]
        per_group = channels // groups
        grad_out = grad_out.reshape(batch, groups, per_group, out_h, out_w)
        need_x, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        padded_shape = (batch, groups, per_group, height + 2 * padding, width + 2 * padding)
        grad_x_padded = x.new_zeros(padded_shape) if need_x else None
        grad_kernels = torch.empty_like(kernels) if need_k else None
        x_padded = F.pad(x, (padding,) * 4).view(padded_shape) if need_k else None
        for u in range(kernel_size):
            for v in range(kernel_size):
                if need_k:
                    window = _shifted(x_padded, u, v, stride, dilation, out_h, out_w)
                    grad_kernels[:, :, u, v] = (grad_out * window).sum(dim=2)
                if need_x:
                    tap = kernels[:, :, u, v].unsqueeze(2)
                    _shifted(grad_x_padded, u, v, stride, dilation, out_h, out_w).addcmul_(grad_out, tap)
        grad_x = None
        if need_x:
            grad_x = grad_x_padded.view(batch, channels, height + 2 * padding, width + 2 * padding)
            grad_x = grad_x[:, :, padding : padding + height, padding : padding + width]
        return grad_x, grad_kernels, None, None, None, None, None


class NativeInvolutionFunction(torch.autograd.Function):
    """Involution with the native C++ kernel (:mod:`involution_edu.native`), forward and backward.

    Same results as :class:`InvolutionFunction`; ``grad_out`` may have any strides. Memory:
    the output, the gradients and one group's channels-last planes per thread. The backward
    is not itself differentiable (a second derivative raises ``RuntimeError``).
    """

    @staticmethod
    def forward(ctx, x, kernels, stride, padding, dilation, out_h, out_w):  # type: ignore[override]
        ctx.save_for_backward(x, kernels)
        ctx.params = (stride, padding, dilation)
        return _native.native_forward(x, kernels, stride, padding, dilation, out_h, out_w)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        x, kernels = ctx.saved_tensors
        stride, padding, dilation = ctx.params
        grad_x, grad_kernels = _native.native_backward(
            x, kernels, grad_out, stride, padding, dilation,
            need_x=ctx.needs_input_grad[0], need_kernels=ctx.needs_input_grad[1],
        )
        return grad_x, grad_kernels, None, None, None, None, None


def available_backends() -> Tuple[str, ...]:
    """The concrete backends usable in this process, e.g. ``("eager", "native")``.

    Building the native kernel is attempted (once) by this call.
    """
    return ("eager", "native") if _native.native_available() else ("eager",)


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


def resolve_backend(backend: Optional[str], x: torch.Tensor, kernels: torch.Tensor) -> str:
    """The concrete backend (``"eager"`` or ``"native"``) that :func:`involution` will run.

    ``None`` means the default backend; ``"auto"`` picks ``"native"`` when it is built and
    supports the tensors (CPU, float32/float64), else ``"eager"``. Asking for ``"native"``
    where it cannot run raises ``RuntimeError`` saying why.
    """
    backend = _check_backend_name(_default_backend if backend is None else backend)
    if backend == "eager":
        return "eager"
    supported = _native.native_supports(x, kernels)
    if backend == "auto":
        return "native" if supported and _native.native_available() else "eager"
    if not supported:
        raise RuntimeError(
            f"backend='native' needs CPU tensors of dtype float32 or float64, got {x.dtype} on {x.device}; "
            f"use backend='eager' or 'auto'"
        )
    if not _native.native_available():
        raise RuntimeError(f"backend='native' is unavailable here: {_native.native_error()}")
    return "native"


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
        kernels: ``(B, G, K, K, H', W')``, same dtype and device as ``x``.
        stride: step between output positions.
        padding: zeros on every side; ``None`` means ``dilation * (K - 1) // 2``.
        dilation: spacing between kernel taps.
        backend: ``"auto"``, ``"eager"`` or ``"native"`` (see the module docstring);
            ``None`` uses :func:`get_default_backend` (``"auto"`` unless changed).

    Returns:
        ``(B, C, H', W')``. Differentiable in ``x`` and ``kernels``; forward and backward
        allocate O(input + kernels + output) memory, never the ``K^2``-times-larger unfold.
        With the native backend the output is channels last when ``x`` is.
    """
    stride, padding, dilation, out_h, out_w = check_tensors(x, kernels, stride, padding, dilation)
    if resolve_backend(backend, x, kernels) == "native":
        return NativeInvolutionFunction.apply(x, kernels, stride, padding, dilation, out_h, out_w)
    return InvolutionFunction.apply(x.contiguous(), kernels, stride, padding, dilation, out_h, out_w)
