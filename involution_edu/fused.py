"""The fused kernel-generating involution: the kernels are computed per tile and used at once.

An :class:`~involution_edu.module.Involution` layer computes ``kernels = conv2(h)`` with
``h = ReLU(BN(conv1(pool(x))))``, writes that ``(B, G*K*K, H', W')`` tensor to memory (about
3x the size of ``x`` for 16 channels per group and ``K = 7``), reads it back for the
aggregation and keeps it for the backward pass. The fused operator takes ``h`` and the span
weights instead::

    involution_edu::involution_fused(x, h, weight, bias, kernel_size, stride, padding, dilation, backend)
        x (B, C, H, W), h (B, C_r, H', W'), weight (G*K*K, C_r), bias (G*K*K,)   -> y (B, C, H', W')

    kernels[b, t, i, j] = bias[t] + sum_r weight[t, r] * h[b, r, i, j]       (t = (g, u, v), group-major)
    y = involution(x, kernels.view(B, G, K, K, H', W'))

It saves only ``x``, ``h``, ``weight`` and ``bias`` for the backward pass, which *recomputes*
the kernels (as FlashAttention recomputes the attention matrix)::

    involution_edu::involution_fused_backward(grad_out, x, h, weight, bias, kernel_size, stride, padding,
                                              dilation, backend) -> (dx, dh, dweight, dbias)
    dK = Gk(grad_out, x)              (the kernels' gradient, (B, G*K*K, H', W'))
    dx = Gx(grad_out, kernels)        dh = weight^T dK        dweight = sum dK h^T        dbias = sum dK

Backends: ``"native"`` (C++, :mod:`involution_edu.native`): each tile of 16 output pixels
computes its ``G*K*K x 16`` kernel values into a small buffer in cache, applies them, and the
backward pass does the same with ``dK``, so neither tensor is ever written whole. ``"triton"``
(:mod:`involution_edu.triton_backend`): the same per block of pixels in registers.
``"eager"``: the reference composite (it builds the kernels inside the op and drops them when
the op returns, so the saved tensors are the same as the other backends', not the peak).

Derivatives of every order. The backward op has its own autograd rule, written in the three
unfused involution ops of :mod:`involution_edu.ops` and 1x1 convolutions (which have theirs),
so ``gradgradcheck`` and higher derivatives work on every backend. The double backward
materialises the kernels (it is not the memory-critical path).

For inference, ``involution_edu::involution_fused_affine`` also applies a folded eval-mode
BatchNorm, ``scale[c] * y[c] + shift[c]``, to each tile before it is written
(:class:`involution_edu.fuse.InvolutionBN`; no autograd of its own).

Like the other ops: a fake implementation (symbolic sizes stay symbolic), autograd with
``setup_context`` (``torch.func`` works), ``vmap`` rules, and autocast (cast like a convolution,
accumulate in float32).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import native as _native
from . import ops as _ops
from .shapes import check_involution_args, check_kernel_size, check_non_negative_int, check_positive_int, default_padding

__all__ = ["involution_fused", "involution_fused_op", "involution_fused_backward", "fused_kernels",
           "involution_fused_affine", "involution_fused_affine_op"]


# --- shapes ---------------------------------------------------------------------------------


def _groups(weight_rows: int, kernel_size: int) -> int:
    taps = kernel_size * kernel_size
    if weight_rows % taps != 0 or weight_rows == 0:
        raise ValueError(
            f"weight must have G*K*K rows (a positive multiple of kernel_size**2 = {taps}), got {weight_rows}"
        )
    return weight_rows // taps


def _validate(x: Tensor, h: Tensor, weight: Tensor, bias: Tensor, kernel_size: int, stride: int, padding: int,
              dilation: int) -> Tuple[int, int, int]:
    """Concrete checks inside the op (a traced graph replayed at other sizes raises here).
    Returns ``(G, H', W')``."""
    for name, value in (("x", x), ("h", h), ("weight", weight), ("bias", bias)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    for name, value in (("h", h), ("weight", weight), ("bias", bias)):
        _ops._check_pair("x", x, name, value)
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D (B, C, H, W), got shape {tuple(x.shape)}")
    if h.dim() != 4:
        raise ValueError(f"h must be 4-D (B, C_r, H', W'), got shape {tuple(h.shape)}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (G*K*K, C_r), got shape {tuple(weight.shape)}")
    if bias.dim() != 1 or bias.shape[0] != weight.shape[0]:
        raise ValueError(f"bias must have shape ({weight.shape[0]},) (one per row of weight), got {tuple(bias.shape)}")
    if h.shape[1] != weight.shape[1]:
        raise ValueError(f"h must have weight.shape[1] = {weight.shape[1]} channels (C_r), got {h.shape[1]}")
    if h.shape[0] != x.shape[0]:
        raise ValueError(f"h must have x's batch size {x.shape[0]}, got {h.shape[0]}")
    groups = _groups(weight.shape[0], kernel_size)
    kernels_shape = (x.shape[0], groups, kernel_size, kernel_size, h.shape[2], h.shape[3])
    _, _, _, out_h, out_w = check_involution_args(x.shape, kernels_shape, stride, padding, dilation)
    return groups, out_h, out_w


def fused_kernels(h: Tensor, weight: Tensor, bias: Tensor, kernel_size: int) -> Tensor:
    """The kernels the fused op never stores: ``(B, C_r, H', W') -> (B, G, K, K, H', W')``
    (a 1x1 convolution, as ``conv2`` of the module). Used by the reference path and the double backward."""
    flat = F.conv2d(h, weight[:, :, None, None], bias)
    batch, rows, out_h, out_w = flat.shape
    return flat.reshape(batch, rows // (kernel_size * kernel_size), kernel_size, kernel_size, out_h, out_w)


def _flat(kernels: Tensor) -> Tensor:
    """``(B, G, K, K, H', W') -> (B, G*K*K, H', W')``."""
    return kernels.reshape(kernels.shape[0], -1, kernels.shape[4], kernels.shape[5])


def _span_adjoint(weight: Tensor, flat_grad: Tensor) -> Tensor:
    """``weight^T g``: ``(G*K*K, C_r), (B, G*K*K, H', W') -> (B, C_r, H', W')``."""
    return F.conv2d(flat_grad, weight.t()[:, :, None, None])


def _span_weight_grad(flat_grad: Tensor, h: Tensor) -> Tensor:
    """``sum_{b,i,j} g[b, t, i, j] h[b, r, i, j]``: ``-> (G*K*K, C_r)``."""
    return torch.einsum("btij,brij->tr", flat_grad, h)


# --- backends -------------------------------------------------------------------------------


def _eager_forward(x, h, weight, bias, kernel_size, stride, padding, dilation):
    x32, h32, w32, b32 = _ops._upcast(x, h, weight, bias)
    kernels = fused_kernels(h32, w32, b32, kernel_size)
    return _ops._eager_forward(x32, kernels, stride, padding, dilation)


def _eager_backward(grad_out, x, h, weight, bias, kernel_size, stride, padding, dilation):
    g32, x32, h32, w32, b32 = _ops._upcast(grad_out, x, h, weight, bias)
    kernels = fused_kernels(h32, w32, b32, kernel_size)
    groups = kernels.shape[1]
    dx = _ops._eager_grad_x(g32, kernels, x.shape[2], x.shape[3], stride, padding, dilation)
    dk = _flat(_ops._eager_grad_kernels(g32, x32, groups, kernel_size, stride, padding, dilation))
    return dx, _span_adjoint(w32, dk), _span_weight_grad(dk, h32), dk.sum(dim=(0, 2, 3))


def _layout(x: Tensor, backend: str):
    return torch.channels_last if _ops._channels_last_output(x, backend) else torch.contiguous_format


def _run_forward(x, h, weight, bias, kernel_size, stride, padding, dilation, backend) -> Tensor:
    if backend == "eager":
        out = _eager_forward(x, h, weight, bias, kernel_size, stride, padding, dilation)
    elif backend == "native":
        _ops._needs_native(x, h, weight, bias)
        x32, h32, w32, b32 = _ops._upcast(x, h, weight, bias)
        out = _native.native_fused_forward(x32, h32, w32, b32, kernel_size, stride, padding, dilation)
    else:
        module = _ops._needs_triton()
        out = module.triton_fused_forward(x, h, weight, bias, kernel_size, stride, padding, dilation)
    return out.to(x.dtype).contiguous(memory_format=_layout(x, backend))


def _run_backward(grad_out, x, h, weight, bias, kernel_size, stride, padding, dilation, backend):
    if backend == "eager":
        grads = _eager_backward(grad_out, x, h, weight, bias, kernel_size, stride, padding, dilation)
    elif backend == "native":
        _ops._needs_native(grad_out, x, h, weight, bias)
        g32, x32, h32, w32, b32 = _ops._upcast(grad_out, x, h, weight, bias)
        grads = _native.native_fused_backward(g32, x32, h32, w32, b32, kernel_size, stride, padding, dilation)
    else:
        module = _ops._needs_triton()
        grads = module.triton_fused_backward(grad_out, x, h, weight, bias, kernel_size, stride, padding, dilation)
    dx, dh, dw, db = grads
    return (dx.to(x.dtype).contiguous(memory_format=_layout(x, backend)), dh.to(h.dtype).contiguous(),
            dw.to(weight.dtype).contiguous(), db.to(bias.dtype).contiguous())


# --- the two ops ----------------------------------------------------------------------------


@torch.library.custom_op("involution_edu::involution_fused", mutates_args=())
def involution_fused_op(x: Tensor, h: Tensor, weight: Tensor, bias: Tensor, kernel_size: int, stride: int,
                        padding: int, dilation: int, backend: str) -> Tensor:
    """``y = involution(x, span(h))`` without storing the kernels: ``x (B, C, H, W)``,
    ``h (B, C_r, H', W')``, ``weight (G*K*K, C_r)``, ``bias (G*K*K,)`` -> ``(B, C, H', W')``
    (channels last with the native backend for a channels-last ``x``, as the unfused op)."""
    _ops._check_backend(backend)
    _validate(x, h, weight, bias, kernel_size, stride, padding, dilation)
    return _run_forward(x, h, weight, bias, kernel_size, stride, padding, dilation, backend)


@torch.library.custom_op("involution_edu::involution_fused_backward", mutates_args=())
def involution_fused_backward(grad_out: Tensor, x: Tensor, h: Tensor, weight: Tensor, bias: Tensor, kernel_size: int,
                              stride: int, padding: int, dilation: int,
                              backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(dx, dh, dweight, dbias)`` of the fused op for ``grad_out (B, C, H', W')``, the kernels recomputed."""
    _ops._check_backend(backend)
    _, out_h, out_w = _validate(x, h, weight, bias, kernel_size, stride, padding, dilation)
    _ops._check_pair("x", x, "grad_out", grad_out)
    if tuple(grad_out.shape) != (x.shape[0], x.shape[1], out_h, out_w):
        raise ValueError(f"grad_out must have shape {(x.shape[0], x.shape[1], out_h, out_w)}, got {tuple(grad_out.shape)}")
    return _run_backward(grad_out, x, h, weight, bias, kernel_size, stride, padding, dilation, backend)


@involution_fused_op.register_fake
def _(x, h, weight, bias, kernel_size, stride, padding, dilation, backend):
    return torch.empty((x.shape[0], x.shape[1], h.shape[2], h.shape[3]), dtype=x.dtype, device=x.device,
                       memory_format=_layout(x, backend))


@involution_fused_backward.register_fake
def _(grad_out, x, h, weight, bias, kernel_size, stride, padding, dilation, backend):
    dx = torch.empty(tuple(x.shape), dtype=x.dtype, device=x.device, memory_format=_layout(x, backend))
    return dx, h.new_empty(h.shape), weight.new_empty(weight.shape), bias.new_empty(bias.shape)


# --- inference: a BatchNorm folded into the output ------------------------------------------


def _affine(out: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    return out * scale[None, :, None, None] + shift[None, :, None, None]


@torch.library.custom_op("involution_edu::involution_fused_affine", mutates_args=())
def involution_fused_affine_op(x: Tensor, h: Tensor, weight: Tensor, bias: Tensor, scale: Tensor, shift: Tensor,
                               kernel_size: int, stride: int, padding: int, dilation: int, backend: str) -> Tensor:
    """Inference only: ``scale[c] * involution_fused(x, h, weight, bias)[c] + shift[c]``, an eval-mode
    BatchNorm folded into the op (``scale``, ``shift``: ``(C,)``). The native backend applies it to
    each tile of the output before writing it, so the output goes to memory once instead of three
    times (the op's write, then the BatchNorm's read and write). No autograd: :class:`involution_edu.fuse.InvolutionBN` uses the
    differentiable composite when gradients are needed."""
    _ops._check_backend(backend)
    _validate(x, h, weight, bias, kernel_size, stride, padding, dilation)
    for name, value in (("scale", scale), ("shift", shift)):
        _ops._check_pair("x", x, name, value)
        if value.dim() != 1 or value.shape[0] != x.shape[1]:
            raise ValueError(f"{name} must have shape ({x.shape[1]},) (one value per channel of x), got {tuple(value.shape)}")
    if backend == "native":
        _ops._needs_native(x, h, weight, bias, scale, shift)
        x32, h32, w32, b32, s32, t32 = _ops._upcast(x, h, weight, bias, scale, shift)
        out = _native.native_fused_forward(x32, h32, w32, b32, kernel_size, stride, padding, dilation, s32, t32)
    else:
        out = _affine(_run_forward(x, h, weight, bias, kernel_size, stride, padding, dilation, backend), scale, shift)
    return out.to(x.dtype).contiguous(memory_format=_layout(x, backend))


@involution_fused_affine_op.register_fake
def _(x, h, weight, bias, scale, shift, kernel_size, stride, padding, dilation, backend):
    return torch.empty((x.shape[0], x.shape[1], h.shape[2], h.shape[3]), dtype=x.dtype, device=x.device,
                       memory_format=_layout(x, backend))


def involution_fused_affine(x: Tensor, h: Tensor, weight: Tensor, bias: Tensor, scale: Tensor, shift: Tensor,
                            kernel_size: int, stride: int = 1, padding: Optional[int] = None, dilation: int = 1,
                            backend: Optional[str] = None) -> Tensor:
    """``involution_fused(x, h, weight, bias, ...) * scale[c] + shift[c]``: ``(B, C, H', W')``.

    ``scale``, ``shift``: ``(C,)``, an eval-mode BatchNorm after the involution folded into it
    (``scale = gamma / sqrt(running_var + eps)``, ``shift = beta - scale * running_mean``). With
    autograd recording (grad mode on and an input that requires grad) it is the differentiable
    composite, otherwise one op (``involution_edu::involution_fused_affine``).
    """
    tensors = dict(x=x, h=h, weight=weight, bias=bias, scale=scale, shift=shift)
    weight, (kernel_size, stride, padding, dilation), autocast = _prepare_call(tensors, kernel_size, stride, padding,
                                                                             dilation)
    recording = torch.is_grad_enabled() and any(t.requires_grad for t in tensors.values())
    if recording or autocast or _ops._functorch_active():
        out = involution_fused(x, h, weight, bias, kernel_size, stride, padding, dilation, backend)
        return _affine(out, scale.to(out.dtype), shift.to(out.dtype))
    return involution_fused_affine_op(x, h, weight, bias, scale, shift, kernel_size, stride, padding, dilation,
                                      _resolve(backend, x, h))


# --- autograd -------------------------------------------------------------------------------


def _setup_fused(ctx, inputs, output):
    x, h, weight, bias, kernel_size, stride, padding, dilation, backend = inputs
    ctx.save_for_backward(x, h, weight, bias)  # never the kernels
    ctx.params = (kernel_size, stride, padding, dilation, backend)


def _backward_fused(ctx, grad):
    x, h, weight, bias = ctx.saved_tensors
    grads = call("backward", grad, x, h, weight, bias, *ctx.params)
    return (*grads, None, None, None, None, None)


def _setup_fused_backward(ctx, inputs, output):
    grad_out, x, h, weight, bias, kernel_size, stride, padding, dilation, backend = inputs
    ctx.save_for_backward(grad_out, x, h, weight, bias)
    ctx.params = (kernel_size, stride, padding, dilation, backend)


def _backward_fused_backward(ctx, ga, gc, ge, gf):
    """Backward of ``(dx, dh, dW, db)`` for their cotangents ``(a, c, e, f)``, in differentiable ops.

    With ``K = span(h)``, ``dK = Gk(g, x)``: ``dx = Gx(g, K)``, ``dh = W^T dK``, ``dW = dK h^T``,
    ``db = sum dK``. The cotangent of ``dK`` is ``T = W c + e h + f`` and that of ``K`` is
    ``Kc = Gk(g, a)``, so::

        d g = F(a, K) + F(x, T)     d x = Gx(g, T)      d h = W^T Kc + e^T dK
        d W = Kc h^T + dK c^T       d b = sum Kc
    """
    grad_out, x, h, weight, bias = ctx.saved_tensors
    kernel_size, stride, padding, dilation, backend = ctx.params
    groups = weight.shape[0] // (kernel_size * kernel_size)
    shape6 = (x.shape[0], groups, kernel_size, kernel_size, h.shape[2], h.shape[3])
    need_g, need_x, need_h, need_w, need_b = ctx.needs_input_grad[:5]
    d_g = d_x = d_h = d_w = d_b = None

    t_flat = None  # cotangent of dK, (B, G*K*K, H', W')
    if gc is not None:
        t_flat = F.conv2d(gc, weight[:, :, None, None])
    if ge is not None:
        term = F.conv2d(h, ge[:, :, None, None])
        t_flat = term if t_flat is None else t_flat + term
    if gf is not None:
        term = gf[None, :, None, None].expand(x.shape[0], -1, h.shape[2], h.shape[3])
        t_flat = term if t_flat is None else t_flat + term

    dk_flat = None
    if (need_h and ge is not None) or (need_w and gc is not None):
        dk_flat = _flat(_ops.call("grad_kernels", grad_out, x, groups, kernel_size, stride, padding, dilation, backend))
    kc_flat = None
    if ga is not None and (need_h or need_w or need_b):
        kc_flat = _flat(_ops.call("grad_kernels", grad_out, ga, groups, kernel_size, stride, padding, dilation, backend))

    if need_g:
        parts = []
        if ga is not None:
            kernels = fused_kernels(h, weight, bias, kernel_size)
            parts.append(_ops.call("forward", ga, kernels, stride, padding, dilation, backend))
        if t_flat is not None:
            parts.append(_ops.call("forward", x, t_flat.reshape(shape6), stride, padding, dilation, backend))
        d_g = sum(parts[1:], parts[0]) if parts else torch.zeros_like(grad_out)
    if need_x:
        d_x = (_ops.call("grad_x", grad_out, t_flat.reshape(shape6), x.shape[2], x.shape[3], stride, padding,
                         dilation, backend) if t_flat is not None else torch.zeros_like(x))
    if need_h:
        parts = []
        if kc_flat is not None:
            parts.append(_span_adjoint(weight, kc_flat))
        if ge is not None:
            parts.append(_span_adjoint(ge, dk_flat))
        d_h = sum(parts[1:], parts[0]) if parts else torch.zeros_like(h)
    if need_w:
        parts = []
        if kc_flat is not None:
            parts.append(_span_weight_grad(kc_flat, h))
        if gc is not None:
            parts.append(_span_weight_grad(dk_flat, gc))
        d_w = sum(parts[1:], parts[0]) if parts else torch.zeros_like(weight)
    if need_b:
        d_b = kc_flat.sum(dim=(0, 2, 3)) if kc_flat is not None else torch.zeros_like(bias)
    return d_g, d_x, d_h, d_w, d_b, None, None, None, None, None


involution_fused_op.register_autograd(_backward_fused, setup_context=_setup_fused)
involution_fused_backward.register_autograd(_backward_fused_backward, setup_context=_setup_fused_backward)

_FUNCTIONS = {
    "forward": _ops._function("InvolutionFusedFunction", involution_fused_op, _setup_fused, _backward_fused),
    "backward": _ops._function("InvolutionFusedBackwardFunction", involution_fused_backward, _setup_fused_backward,
                               _backward_fused_backward),
}
_OPS = {"forward": involution_fused_op, "backward": involution_fused_backward}


def call(kind: str, *args):
    """Run the fused op ``kind`` (``"forward"`` or ``"backward"``), through its autograd.Function
    when a ``torch.func`` transform is active (see :func:`involution_edu.ops.call`)."""
    return (_FUNCTIONS[kind].apply if _ops._functorch_active() else _OPS[kind])(*args)


# --- vmap -----------------------------------------------------------------------------------


def _select(tensor: Tensor, bdim: Optional[int], index: int) -> Tensor:
    return tensor if bdim is None else tensor.select(bdim, index)


@involution_fused_op.register_vmap
def _(info, in_dims, x, h, weight, bias, kernel_size, stride, padding, dilation, backend):
    n = info.batch_size
    if in_dims[2] is None and in_dims[3] is None:  # shared span weights: fold into the batch
        out = involution_fused_op(_ops._fold(x, in_dims[0], n), _ops._fold(h, in_dims[1], n), weight, bias,
                                  kernel_size, stride, padding, dilation, backend)
        return _ops._unfold(out, n), 0
    outs = [involution_fused_op(*(_select(t, d, i) for t, d in zip((x, h, weight, bias), in_dims[:4])),
                                kernel_size, stride, padding, dilation, backend) for i in range(n)]
    return torch.stack(outs), 0


@involution_fused_backward.register_vmap
def _(info, in_dims, grad_out, x, h, weight, bias, kernel_size, stride, padding, dilation, backend):
    # dweight and dbias sum over the batch, so each vmapped slice is its own call.
    n = info.batch_size
    tensors = (grad_out, x, h, weight, bias)
    results = [involution_fused_backward(*(_select(t, d, i) for t, d in zip(tensors, in_dims[:5])),
                                         kernel_size, stride, padding, dilation, backend) for i in range(n)]
    return tuple(torch.stack(parts) for parts in zip(*results)), (0, 0, 0, 0)


# --- autocast -------------------------------------------------------------------------------

for _op in (involution_fused_op, involution_fused_backward):
    for _device in ("cpu", "cuda"):
        if torch._C._is_autocast_available(_device):
            _op._lib.impl(_op._name, _ops._autocast_kernel(_op, _device),
                          "Autocast" + torch._C._dispatch_key_for_device(_device), with_keyset=True)


# --- the public function --------------------------------------------------------------------


def _resolve(backend: Optional[str], x: Tensor, h: Tensor) -> str:
    from .functional import resolve_backend  # functional imports ops; avoid a cycle at import time

    name = resolve_backend(backend, x, h)
    if name == "triton" and not hasattr(_ops.triton_module(), "triton_fused_forward"):
        return "eager"  # an older Triton backend without the fused kernels: the reference composite
    return name


def involution_fused(
    x: Tensor,
    h: Tensor,
    weight: Tensor,
    bias: Tensor,
    kernel_size: int,
    stride: int = 1,
    padding: Optional[int] = None,
    dilation: int = 1,
    backend: Optional[str] = None,
) -> Tensor:
    """The involution with kernels ``weight @ h + bias`` generated per tile, never stored.

    Args:
        x: ``(B, C, H, W)``, floating point.
        h: ``(B, C_r, H', W')``, the reduced features (``ReLU(BN(conv1(pool(x))))`` in the module).
        weight: ``(G*K*K, C_r)`` (or the 1x1 convolution's ``(G*K*K, C_r, 1, 1)``), rows group-major.
        bias: ``(G*K*K,)``.
        kernel_size: ``K``.
        stride, padding, dilation: as in :func:`involution_edu.functional.involution`
            (``padding=None`` means ``dilation * (K - 1) // 2``).
        backend: ``"auto"``, ``"eager"``, ``"native"`` or ``"triton"``; ``None`` uses the default.

    Returns:
        ``(B, C, H', W')``, equal to ``involution(x, span(h))`` to rounding; differentiable in
        ``x``, ``h``, ``weight`` and ``bias`` to any order. Saved for backward: ``x``, ``h``,
        ``weight``, ``bias`` only.
    """
    weight, params, _ = _prepare_call(dict(x=x, h=h, weight=weight, bias=bias), kernel_size, stride, padding, dilation)
    return call("forward", x, h, weight, bias, *params, _resolve(backend, x, h))


def _prepare_call(tensors: dict, kernel_size, stride, padding, dilation):
    """The public functions' argument checks: ``tensors`` (``x`` first, then ``h``, ``weight``, ...)
    must be floating-point tensors of ``x``'s dtype and device (unless autocast will cast them).
    Returns ``(weight as (G*K*K, C_r), (K, stride, padding, dilation), autocast)``."""
    kernel_size = check_kernel_size(kernel_size, need_odd=padding is None)
    stride = check_positive_int("stride", stride)
    dilation = check_positive_int("dilation", dilation)
    padding = default_padding(kernel_size, dilation) if padding is None else check_non_negative_int("padding", padding)
    for name, value in tensors.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    x, weight = tensors["x"], tensors["weight"]
    if weight.dim() == 4 and tuple(weight.shape[2:]) == (1, 1):
        weight = weight.reshape(weight.shape[0], weight.shape[1])
    autocast = x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)
    if not autocast:
        for name, value in tensors.items():
            if name != "x":
                _ops._check_pair("x", x, name, value)
    return weight, (kernel_size, stride, padding, dilation), autocast
