"""The involution as three PyTorch custom operators that ``torch.compile``, ``torch.export``,
``torch.jit.trace``, ``torch.func`` and ``torch.autocast`` understand.

Registered with :func:`torch.library.custom_op` in the namespace ``involution_edu``::

    involution_edu::involution(x, kernels, stride, padding, dilation, backend)
        x (B, C, H, W), kernels (B, G, K, K, H', W')                  -> y  (B, C, H', W')
    involution_edu::involution_grad_x(grad_out, kernels, x_height, x_width, stride, padding, dilation, backend)
        grad_out (B, C, H', W'), kernels (B, G, K, K, H', W')         -> dx (B, C, H, W)
    involution_edu::involution_grad_kernels(grad_out, x, groups, kernel_size, stride, padding, dilation, backend)
        grad_out (B, C, H', W'), x (B, C, H, W)                       -> dK (B, G, K, K, H', W')

``backend`` is a concrete name, ``"eager"``, ``"native"`` or ``"triton"``
(:func:`involution_edu.functional.involution` resolves ``"auto"`` before calling the op).

**Every derivative is again one of the three ops.** The involution is *bilinear*: linear in
``x`` for fixed kernels and linear in the kernels for fixed ``x``. So ``grad_x(g, K)`` is
linear in ``g`` and in ``K``, and its adjoints are involutions again::

    y  = F(x, K)          dL/dx = Gx(dL/dy, K)      dL/dK = Gk(dL/dy, x)
    dx = Gx(g, K)         dL/dg = F(dL/ddx, K)      dL/dK = Gk(g, dL/ddx)
    dK = Gk(g, x)         dL/dg = F(x, dL/ddK)      dL/dx = Gx(g, dL/ddK)

Derivatives of any order (gradient penalties, ``gradgradcheck``, ``jacrev`` of ``grad``) are
therefore exact on every backend, native and Triton included: no backend needs a
differentiable backward of its own.

Each op has a *fake* implementation (shapes only, symbolic sizes kept symbolic, for
``torch.compile`` and ``torch.export``), an autograd rule with ``setup_context`` (so
``torch.func.grad``/``vjp`` work), a ``vmap`` rule (the vmapped dimension folds into the batch
dimension ``B``), and an autocast rule: inside ``torch.autocast(device, dtype)`` the floating
inputs (float64 excepted) are cast to the autocast dtype, as for a convolution, and every
backend accumulates in float32 before rounding the result to that dtype.

Non-finite values: a padded tap multiplies a zero of the padding, so an infinite or NaN
kernel value on a padded tap gives NaN, as in the paper's unfold code.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import native as _native
from .shapes import check_involution_args

__all__ = [
    "involution_op",
    "involution_grad_x",
    "involution_grad_kernels",
    "CONCRETE_BACKENDS",
    "triton_module",
    "call",
]

CONCRETE_BACKENDS = ("eager", "native", "triton")
"""The backend names the ops accept (``"auto"`` is resolved before the op is called)."""

LOW_PRECISION = (torch.float16, torch.bfloat16)


# --- backends -------------------------------------------------------------------------------

_triton = None
_triton_tried = False


def triton_module():
    """``involution_edu.triton_backend`` if it exists and imports, else ``None`` (imported lazily, once)."""
    global _triton, _triton_tried
    if not _triton_tried:
        _triton_tried = True
        try:
            if importlib.util.find_spec("involution_edu.triton_backend") is not None:
                _triton = importlib.import_module("involution_edu.triton_backend")
        except Exception:  # a broken optional backend must not break the library
            _triton = None
    return _triton


def _validate(x_shape, kernels_shape, stride: int, padding: int, dilation: int) -> None:
    """Concrete shape check run inside each op's real implementation: a traced or exported graph
    replayed at sizes that do not fit raises here instead of reading out of bounds."""
    check_involution_args(x_shape, kernels_shape, stride, padding, dilation)


def _check_pair(first_name: str, first: Tensor, second_name: str, second: Tensor) -> None:
    if first.dtype != second.dtype:
        raise TypeError(
            f"{second_name} must have the same dtype as {first_name} ({first.dtype}), got {second.dtype}; "
            f"convert one of them"
        )
    if first.device != second.device:
        raise ValueError(f"{second_name} must be on the same device as {first_name} ({first.device}), got {second.device}")


def _check_backend(backend: str) -> None:
    if backend not in CONCRETE_BACKENDS:
        raise ValueError(f"backend must be one of {CONCRETE_BACKENDS} inside the op, got {backend!r}")


def _upcast(*tensors: Tensor) -> Tuple[Tensor, ...]:
    """float16/bfloat16 -> float32 (accumulate in float32); other dtypes unchanged."""
    return tuple(t.float() if t.dtype in LOW_PRECISION else t for t in tensors)


def _shifted(x_padded: Tensor, u: int, v: int, stride: int, dilation: int, out_h: int, out_w: int) -> Tensor:
    """View of the padded input that tap ``(u, v)`` reads at every output position.

    ``x_padded``: ``(..., Hp, Wp)`` -> result ``(..., H', W')`` with
    ``result[..., i, j] = x_padded[..., i*stride + u*dilation, j*stride + v*dilation]``.
    """
    row0, col0 = u * dilation, v * dilation
    return x_padded[..., row0 : row0 + (out_h - 1) * stride + 1 : stride, col0 : col0 + (out_w - 1) * stride + 1 : stride]


def _eager_forward(x: Tensor, kernels: Tensor, stride: int, padding: int, dilation: int) -> Tensor:
    """``y[b, c] = sum_{u,v} kernels[b, g(c), u, v] * shift_{u,v}(x)[b, c]``: ``K^2`` strided
    multiply-adds into the output, no unfolded tensor. ``(B, C, H, W) -> (B, C, H', W')``."""
    batch, channels = x.shape[:2]
    groups, kernel_size, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    x_padded = F.pad(x, (padding,) * 4)
    x_padded = x_padded.reshape(batch, groups, channels // groups, *x_padded.shape[2:])  # (B, G, C/G, Hp, Wp)
    out = x.new_zeros(batch, groups, channels // groups, out_h, out_w)
    for u in range(kernel_size):
        for v in range(kernel_size):
            tap = kernels[:, :, u, v].unsqueeze(2)  # (B, G, 1, H', W'), shared by the group's channels
            out.addcmul_(_shifted(x_padded, u, v, stride, dilation, out_h, out_w), tap)
    return out.view(batch, channels, out_h, out_w)


def _eager_grad_x(grad_out: Tensor, kernels: Tensor, height: int, width: int, stride: int, padding: int, dilation: int) -> Tensor:
    """``dx``: scatter ``grad_out * kernels[:, g, u, v]`` back through every shift (a strided add
    into a zero-padded buffer). ``(B, C, H', W') -> (B, C, H, W)``."""
    batch, channels, out_h, out_w = grad_out.shape
    groups, kernel_size = kernels.shape[1], kernels.shape[2]
    per_group = channels // groups
    grad_out = grad_out.reshape(batch, groups, per_group, out_h, out_w)
    padded = grad_out.new_zeros(batch, groups, per_group, height + 2 * padding, width + 2 * padding)
    for u in range(kernel_size):
        for v in range(kernel_size):
            tap = kernels[:, :, u, v].unsqueeze(2)
            _shifted(padded, u, v, stride, dilation, out_h, out_w).addcmul_(grad_out, tap)
    padded = padded.view(batch, channels, height + 2 * padding, width + 2 * padding)
    return padded[:, :, padding : padding + height, padding : padding + width].contiguous()


def _eager_grad_kernels(grad_out: Tensor, x: Tensor, groups: int, kernel_size: int, stride: int, padding: int, dilation: int) -> Tensor:
    """``dK[b, g, u, v] = sum_{c in g} grad_out[b, c] * shift_{u,v}(x)[b, c]``.
    ``(B, C, H', W'), (B, C, H, W) -> (B, G, K, K, H', W')``."""
    batch, channels, out_h, out_w = grad_out.shape
    per_group = channels // groups
    grad_out = grad_out.reshape(batch, groups, per_group, out_h, out_w)
    x_padded = F.pad(x, (padding,) * 4)
    x_padded = x_padded.reshape(batch, groups, per_group, *x_padded.shape[2:])
    result = grad_out.new_empty(batch, groups, kernel_size, kernel_size, out_h, out_w)
    for u in range(kernel_size):
        for v in range(kernel_size):
            window = _shifted(x_padded, u, v, stride, dilation, out_h, out_w)
            result[:, :, u, v] = (grad_out * window).sum(dim=2)
    return result


def _needs_native(*tensors: Tensor) -> None:
    for t in tensors:
        if t.device.type != "cpu":
            raise RuntimeError(f"backend='native' needs CPU tensors, got a tensor on {t.device}; use backend='eager' or 'auto'")
    if not _native.native_available():
        raise RuntimeError(f"backend='native' is unavailable here: {_native.native_error()}")


def _needs_triton() -> object:
    module = triton_module()
    if module is None:
        raise RuntimeError("backend='triton' is unavailable: involution_edu.triton_backend is missing or failed to import")
    if not module.triton_available():
        raise RuntimeError(f"backend='triton' is unavailable here: {module.triton_error()}")
    return module


def _dummy(like: Tensor, shape) -> Tensor:
    """A tensor of ``shape`` that owns no memory (a broadcast zero): stands for an argument whose
    values a backend kernel does not read (``x`` for ``grad_x``, ``kernels`` for ``grad_kernels``)."""
    return like.new_zeros(()).expand(*shape)


def _channels_last_output(x: Tensor, backend: str) -> bool:
    """The native backend keeps a channels-last ``x`` channels last (one rule, shared by the real
    and the fake implementation, so compiled code sees the strides it was traced with)."""
    return backend == "native" and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _run_forward(x: Tensor, kernels: Tensor, stride: int, padding: int, dilation: int, backend: str) -> Tensor:
    dtype = x.dtype
    out_h, out_w = kernels.shape[4], kernels.shape[5]
    x32, k32 = _upcast(x, kernels)
    if backend == "eager":
        out = _eager_forward(x32, k32, stride, padding, dilation)
    elif backend == "native":
        _needs_native(x, kernels)
        out = _native.native_forward(x32, k32, stride, padding, dilation, out_h, out_w)
    else:
        module = _needs_triton()
        out = module.triton_forward(x, kernels, stride, padding, dilation, out_h, out_w)
    layout = torch.channels_last if _channels_last_output(x, backend) else torch.contiguous_format
    return out.to(dtype).contiguous(memory_format=layout)


def _run_grad_x(grad_out, kernels, height, width, stride, padding, dilation, backend) -> Tensor:
    dtype = grad_out.dtype
    batch, channels = grad_out.shape[:2]
    g32, k32 = _upcast(grad_out, kernels)
    if backend == "eager":
        out = _eager_grad_x(g32, k32, height, width, stride, padding, dilation)
    elif backend == "native":
        _needs_native(grad_out, kernels)
        x = _dummy(g32, (batch, channels, height, width))
        out, _ = _native.native_backward(x, k32, g32, stride, padding, dilation, need_x=True, need_kernels=False)
    else:
        module = _needs_triton()
        x = _dummy(grad_out, (batch, channels, height, width))
        out, _ = module.triton_backward(x, kernels, grad_out.contiguous(), stride, padding, dilation,
                                        need_x=True, need_kernels=False)
    return out.to(dtype).contiguous()


def _run_grad_kernels(grad_out, x, groups, kernel_size, stride, padding, dilation, backend) -> Tensor:
    dtype = grad_out.dtype
    batch, _, out_h, out_w = grad_out.shape
    shape = (batch, groups, kernel_size, kernel_size, out_h, out_w)
    g32, x32 = _upcast(grad_out, x)
    if backend == "eager":
        out = _eager_grad_kernels(g32, x32, groups, kernel_size, stride, padding, dilation)
    elif backend == "native":
        _needs_native(grad_out, x)
        _, out = _native.native_backward(x32, _dummy(g32, shape), g32, stride, padding, dilation,
                                         need_x=False, need_kernels=True)
    else:
        module = _needs_triton()
        _, out = module.triton_backward(x, _dummy(grad_out, shape), grad_out.contiguous(), stride, padding, dilation,
                                        need_x=False, need_kernels=True)
    return out.to(dtype).contiguous()


# --- the three ops --------------------------------------------------------------------------


@torch.library.custom_op("involution_edu::involution", mutates_args=())
def involution_op(x: Tensor, kernels: Tensor, stride: int, padding: int, dilation: int, backend: str) -> Tensor:
    """``y = involution(x, kernels)``: ``x (B, C, H, W)``, ``kernels (B, G, K, K, H', W')`` -> ``(B, C, H', W')``.

    The output has ``x``'s dtype (float16/bfloat16 accumulate in float32) and is contiguous,
    except with the native backend for a channels-last ``x``, where it is channels last too.
    Sizes are checked again here, so a traced graph replayed at other sizes raises ``ValueError``.
    """
    _check_backend(backend)
    _check_pair("x", x, "kernels", kernels)
    _validate(x.shape, kernels.shape, stride, padding, dilation)
    return _run_forward(x, kernels, stride, padding, dilation, backend)


@torch.library.custom_op("involution_edu::involution_grad_x", mutates_args=())
def involution_grad_x(
    grad_out: Tensor, kernels: Tensor, x_height: int, x_width: int, stride: int, padding: int, dilation: int, backend: str
) -> Tensor:
    """``dL/dx`` from ``grad_out (B, C, H', W')`` and ``kernels (B, G, K, K, H', W')``: ``(B, C, x_height, x_width)``."""
    _check_backend(backend)
    _check_pair("grad_out", grad_out, "kernels", kernels)
    batch, channels = grad_out.shape[:2]
    _validate((batch, channels, x_height, x_width), kernels.shape, stride, padding, dilation)
    if tuple(grad_out.shape[2:]) != tuple(kernels.shape[4:]):
        raise ValueError(f"grad_out must have the kernels' output size {tuple(kernels.shape[4:])}, got {tuple(grad_out.shape[2:])}")
    return _run_grad_x(grad_out, kernels, x_height, x_width, stride, padding, dilation, backend)


@torch.library.custom_op("involution_edu::involution_grad_kernels", mutates_args=())
def involution_grad_kernels(
    grad_out: Tensor, x: Tensor, groups: int, kernel_size: int, stride: int, padding: int, dilation: int, backend: str
) -> Tensor:
    """``dL/dkernels`` from ``grad_out (B, C, H', W')`` and ``x (B, C, H, W)``: ``(B, G, K, K, H', W')``."""
    _check_backend(backend)
    _check_pair("grad_out", grad_out, "x", x)
    batch, _, out_h, out_w = grad_out.shape
    _validate(x.shape, (batch, groups, kernel_size, kernel_size, out_h, out_w), stride, padding, dilation)
    if grad_out.shape[1] != x.shape[1]:
        raise ValueError(f"grad_out must have x's {x.shape[1]} channels, got {grad_out.shape[1]}")
    return _run_grad_kernels(grad_out, x, groups, kernel_size, stride, padding, dilation, backend)


# --- fake (meta) implementations: shapes only, symbolic sizes stay symbolic ------------------


@involution_op.register_fake
def _(x, kernels, stride, padding, dilation, backend):
    layout = torch.channels_last if _channels_last_output(x, backend) else torch.contiguous_format
    return torch.empty((x.shape[0], x.shape[1], kernels.shape[4], kernels.shape[5]), dtype=x.dtype, device=x.device,
                       memory_format=layout)


@involution_grad_x.register_fake
def _(grad_out, kernels, x_height, x_width, stride, padding, dilation, backend):
    return grad_out.new_empty(grad_out.shape[0], grad_out.shape[1], x_height, x_width)


@involution_grad_kernels.register_fake
def _(grad_out, x, groups, kernel_size, stride, padding, dilation, backend):
    return grad_out.new_empty(grad_out.shape[0], groups, kernel_size, kernel_size, grad_out.shape[2], grad_out.shape[3])


# --- autograd: each op's derivatives are the other ops (see the module docstring) -------------


def _setup_forward(ctx, inputs, output):
    x, kernels, stride, padding, dilation, backend = inputs
    ctx.save_for_backward(x, kernels)
    ctx.params = (stride, padding, dilation, backend)


def _backward_forward(ctx, grad):
    x, kernels = ctx.saved_tensors
    stride, padding, dilation, backend = ctx.params
    grad_x = grad_kernels = None
    if ctx.needs_input_grad[0]:
        grad_x = call("grad_x", grad, kernels, x.shape[2], x.shape[3], stride, padding, dilation, backend)
    if ctx.needs_input_grad[1]:
        grad_kernels = call("grad_kernels", grad, x, kernels.shape[1], kernels.shape[2], stride, padding, dilation, backend)
    return grad_x, grad_kernels, None, None, None, None


def _setup_grad_x(ctx, inputs, output):
    grad_out, kernels, _, _, stride, padding, dilation, backend = inputs
    ctx.save_for_backward(grad_out, kernels)
    ctx.params = (stride, padding, dilation, backend)


def _backward_grad_x(ctx, grad):
    # dx = Gx(g, K) is linear in g (adjoint: F(., K)) and in K (adjoint: Gk(g, .)).
    grad_out, kernels = ctx.saved_tensors
    stride, padding, dilation, backend = ctx.params
    d_grad_out = d_kernels = None
    if ctx.needs_input_grad[0]:
        d_grad_out = call("forward", grad, kernels, stride, padding, dilation, backend)
    if ctx.needs_input_grad[1]:
        d_kernels = call("grad_kernels", grad_out, grad, kernels.shape[1], kernels.shape[2], stride, padding, dilation, backend)
    return d_grad_out, d_kernels, None, None, None, None, None, None


def _setup_grad_kernels(ctx, inputs, output):
    grad_out, x, _, _, stride, padding, dilation, backend = inputs
    ctx.save_for_backward(grad_out, x)
    ctx.params = (stride, padding, dilation, backend)


def _backward_grad_kernels(ctx, grad):
    # dK = Gk(g, x) is linear in g (adjoint: F(x, .)) and in x (adjoint: Gx(g, .)).
    grad_out, x = ctx.saved_tensors
    stride, padding, dilation, backend = ctx.params
    d_grad_out = d_x = None
    if ctx.needs_input_grad[0]:
        d_grad_out = call("forward", x, grad, stride, padding, dilation, backend)
    if ctx.needs_input_grad[1]:
        d_x = call("grad_x", grad_out, grad, x.shape[2], x.shape[3], stride, padding, dilation, backend)
    return d_grad_out, d_x, None, None, None, None, None, None


involution_op.register_autograd(_backward_forward, setup_context=_setup_forward)
involution_grad_x.register_autograd(_backward_grad_x, setup_context=_setup_grad_x)
involution_grad_kernels.register_autograd(_backward_grad_kernels, setup_context=_setup_grad_kernels)


# torch.func.grad/jacrev/vjp need an autograd.Function with a ``setup_context`` staticmethod,
# and the Function that ``register_autograd`` generates has none (torch 2.13). So while a
# torch.func transform is active, the ops are called through these three Functions, which
# share the setup_context/backward above; otherwise (eager autograd, torch.compile,
# torch.export, torch.jit.trace) the ops are called directly.


def _function(name: str, op, setup, backward) -> type:
    def forward(*args):
        return op(*args)

    return type(name, (torch.autograd.Function,), {
        "forward": staticmethod(forward),
        "setup_context": staticmethod(setup),
        "backward": staticmethod(backward),
        "generate_vmap_rule": True,  # forward and backward are ops with vmap rules
    })


_FUNCTIONS = {
    "forward": _function("InvolutionFunction", involution_op, _setup_forward, _backward_forward),
    "grad_x": _function("InvolutionGradXFunction", involution_grad_x, _setup_grad_x, _backward_grad_x),
    "grad_kernels": _function("InvolutionGradKernelsFunction", involution_grad_kernels, _setup_grad_kernels,
                              _backward_grad_kernels),
}
_OPS = {"forward": involution_op, "grad_x": involution_grad_x, "grad_kernels": involution_grad_kernels}


def _functorch_active() -> bool:
    return not torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active()


def call(kind: str, *args):
    """Run op ``kind`` (``"forward"``, ``"grad_x"`` or ``"grad_kernels"``) on ``args``,
    through its autograd.Function when a ``torch.func`` transform is active."""
    return (_FUNCTIONS[kind].apply if _functorch_active() else _OPS[kind])(*args)


# --- vmap: fold the vmapped dimension into the batch dimension ------------------------------


def _fold(tensor: Tensor, bdim: Optional[int], size: int) -> Tensor:
    """``(N at bdim, B, ...)`` -> ``(N*B, ...)``; an unbatched tensor is repeated ``N`` times."""
    tensor = tensor.movedim(bdim, 0) if bdim is not None else tensor.expand(size, *tensor.shape)
    return tensor.reshape(size * tensor.shape[1], *tensor.shape[2:])


def _unfold(tensor: Tensor, size: int) -> Tensor:
    return tensor.reshape(size, tensor.shape[0] // size, *tensor.shape[1:])


@involution_op.register_vmap
def _(info, in_dims, x, kernels, stride, padding, dilation, backend):
    n = info.batch_size
    out = involution_op(_fold(x, in_dims[0], n), _fold(kernels, in_dims[1], n), stride, padding, dilation, backend)
    return _unfold(out, n), 0


@involution_grad_x.register_vmap
def _(info, in_dims, grad_out, kernels, x_height, x_width, stride, padding, dilation, backend):
    n = info.batch_size
    out = involution_grad_x(_fold(grad_out, in_dims[0], n), _fold(kernels, in_dims[1], n),
                            x_height, x_width, stride, padding, dilation, backend)
    return _unfold(out, n), 0


@involution_grad_kernels.register_vmap
def _(info, in_dims, grad_out, x, groups, kernel_size, stride, padding, dilation, backend):
    n = info.batch_size
    out = involution_grad_kernels(_fold(grad_out, in_dims[0], n), _fold(x, in_dims[1], n),
                                  groups, kernel_size, stride, padding, dilation, backend)
    return _unfold(out, n), 0


# --- autocast: cast to the autocast dtype (like a convolution), accumulate in float32 --------


def _autocast_kernel(op, device_type: str):
    key = getattr(torch._C.DispatchKey, "Autocast" + torch._C._dispatch_key_for_device(device_type))

    def kernel(_keyset, *args):
        dtype = torch.get_autocast_dtype(device_type)

        def cast(value):
            if isinstance(value, Tensor) and value.is_floating_point() and value.device.type == device_type \
                    and value.dtype != torch.float64:
                return value.to(dtype)
            return value

        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
            return op._opoverload(*[cast(a) for a in args])

    return kernel


for _op in (involution_op, involution_grad_x, involution_grad_kernels):
    for _device in ("cpu", "cuda"):
        if torch._C._is_autocast_available(_device):
            _op._lib.impl(_op._name, _autocast_kernel(_op, _device),
                          "Autocast" + torch._C._dispatch_key_for_device(_device), with_keyset=True)
