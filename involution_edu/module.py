"""The involution layer as an ``nn.Module``, compatible with the paper's checkpoints.

Kernel generation follows the paper's code (Li et al., CVPR 2021, Sec. 3.2 and Eq. 6):

    kernels = conv2( ReLU( BN( conv1( pool(x) ) ) ) )      conv1: C -> C/r, conv2: C/r -> K^2 * G

where ``pool`` is average pooling with window and step ``stride`` (identity when
``stride == 1``). The kernels, ``(B, G*K*K, H', W')``, are viewed as ``(B, G, K, K, H', W')``
and applied to ``x`` by :func:`involution_edu.functional.involution`.

The submodule names mirror mmcv's ``ConvModule`` (``conv1.conv``, ``conv1.bn``,
``conv2.conv``), so a state_dict saved from the paper's ``involution`` module loads with
``strict=True`` and gives the same outputs and gradients.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from . import ops as _ops
from .functional import involution
from .fused import involution_fused
from .shapes import check_kernel_size, check_positive_int, default_padding

__all__ = ["Involution", "ConvNormAct", "stride_pool", "recomputed"]

# True while a recomputed region runs (its forward and its recomputation): the regions inside it
# are already recomputed with it, so they do not checkpoint again.
_INSIDE_RECOMPUTED = contextvars.ContextVar("involution_edu_inside_recomputed", default=False)


def _recompute_pays(modules: Sequence[nn.Module], inputs: Sequence[torch.Tensor]) -> bool:
    """Whether a region should be recomputed in backward instead of saving its insides: in
    training mode, with autograd recording (grad enabled and an input or parameter that needs
    it), eagerly. Not under ``torch.compile``/``torch.export`` (the partitioner of the compiled
    graph decides what it recomputes), not under a ``torch.func`` transform (they do not run
    saved-tensor hooks) and not inside another recomputed region."""
    if torch.compiler.is_compiling() or not torch.is_grad_enabled() or _INSIDE_RECOMPUTED.get():
        return False  # is_compiling first: Dynamo does not trace ContextVar.get
    if torch.jit.is_scripting() or torch.jit.is_tracing() or _ops._functorch_active():
        return False
    if not all(module.training for module in modules):
        return False
    return any(t.requires_grad for t in inputs) or any(
        p.requires_grad for module in modules for p in module.parameters())


class _AsInTrainingForward:
    """The recomputation's context: every module in training mode (as in the forward pass, even if
    the model was switched to eval since), and every BatchNorm working on copies of its running
    statistics and ``num_batches_tracked``, dropped afterwards: the forward pass updated them, once;
    the recomputation uses the same batch statistics and saves the same tensors. (Copies, not a
    restore in place, so the real buffers' version counters stay as autograd saw them.) Reusable:
    a double backward recomputes the region again with the same context object."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = tuple(modules)
        self.stack: list = []

    def __enter__(self) -> None:
        changed, buffers = [], []
        for root in self.modules:
            for module in root.modules():
                changed.append((module, module.training))
                module.training = True
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    for name in ("running_mean", "running_var", "num_batches_tracked"):
                        value = module._buffers.get(name)
                        if isinstance(value, torch.Tensor):
                            buffers.append((module, name, value))
                            module._buffers[name] = value.detach().clone()
        self.stack.append((changed, buffers))

    def __exit__(self, *exc) -> None:
        changed, buffers = self.stack.pop()
        for module, name, value in reversed(buffers):
            module._buffers[name] = value
        for module, training in reversed(changed):
            module.training = training


def recomputed(function: Callable[..., torch.Tensor], modules: Sequence[nn.Module], *inputs: torch.Tensor) -> torch.Tensor:
    """``function(*inputs)``, recomputed in the backward pass when that pays (see below) so that
    autograd keeps only ``inputs`` of the region, not the tensors inside it.

    ``modules`` are the modules ``function`` runs. It uses
    :func:`torch.utils.checkpoint.checkpoint` (``use_reentrant=False``; higher derivatives work)
    in training mode with autograd recording, and calls ``function`` directly otherwise (eval,
    ``torch.no_grad``, ``torch.compile``, ``torch.func``, inside another recomputed region).
    The recomputation gives the same values: BatchNorm layers use the same batch statistics and
    update their running statistics only once, in the forward pass.
    """
    def region(*args: torch.Tensor) -> torch.Tensor:
        token = _INSIDE_RECOMPUTED.set(True)
        try:
            return function(*args)
        finally:
            _INSIDE_RECOMPUTED.reset(token)

    if not _recompute_pays(modules, inputs):
        return function(*inputs)
    return torch.utils.checkpoint.checkpoint(
        region, *inputs, use_reentrant=False, preserve_rng_state=False,
        context_fn=lambda: (contextlib.nullcontext(), _AsInTrainingForward(modules)),
    )


class _StridePoolNCHW(torch.autograd.Function):
    """``F.avg_pool2d(x, s, s)`` for a contiguous (NCHW) ``x`` whose sizes ``s`` divides, bit for bit:
    the ``s * s`` strided views of ``x`` added in the window's row-major order, then divided by
    ``s * s``, as ATen's kernel sums a window. About 2-3x faster than ATen's NCHW average pooling on
    the CPU (which walks each window's pixels one by one). The backward, ``g / s**2`` spread over
    each window, is written in differentiable ops, so higher derivatives work."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, stride: int) -> torch.Tensor:
        ctx.stride, ctx.shape = stride, tuple(x.shape)
        out = None
        for u in range(stride):
            for v in range(stride):
                part = x[:, :, u::stride, v::stride]
                out = part.contiguous() if out is None else out.add_(part)
        return out.div_(stride * stride)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        s, (batch, channels, height, width) = ctx.stride, ctx.shape
        spread = (grad / (s * s))[:, :, :, None, :, None].expand(batch, channels, height // s, s, width // s, s)
        return spread.reshape(batch, channels, height, width), None


def stride_pool(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Average pooling with window and step ``stride`` whose last, partial window is averaged over
    the pixels it covers: ``x (B, C, H, W) -> (B, C, ceil(H / stride), ceil(W / stride))``.

    The same values as ``F.avg_pool2d(x, stride, stride, ceil_mode=True)``, computed without
    ``ceil_mode``: zero-pad ``x`` at the bottom and right to a multiple of ``stride``, sum each
    window (``divisor_override=1``) and divide by the number of real pixels in it (the window
    sums of a tensor of ones, padded the same way). Why: Inductor's backward of
    ``avg_pool2d(..., ceil_mode=True)`` divides an overhanging window by the full window size
    (pytorch/pytorch#198119), so ``torch.compile`` gave wrong input gradients at odd sizes.
    When ``stride`` divides ``H`` and ``W`` every count is ``stride**2`` and the result equals
    ``F.avg_pool2d(x, stride, stride)``, the paper's pooling, bit for bit. Traces and exports
    with dynamic sizes: the counts are computed from ``x``'s shape inside the graph.
    """
    # ceil(H / stride) written as (H - 1) // stride + 1, the output size of the "same"-padded
    # involution, so that torch.export can prove both grids equal for symbolic H.
    pad_h = ((x.shape[2] - 1) // stride + 1) * stride - x.shape[2]
    pad_w = ((x.shape[3] - 1) // stride + 1) * stride - x.shape[3]
    # Eagerly, a padded copy only where it is needed (F.pad by zero still copies x, and autograd keeps
    # it). Traced or compiled, always the pad: a test on symbolic sizes would specialise the graph.
    traced = torch.compiler.is_compiling() or torch.jit.is_tracing()
    no_pad = not traced and isinstance(pad_h, int) and isinstance(pad_w, int) and pad_h == 0 and pad_w == 0
    if (no_pad and x.dim() == 4 and x.device.type == "cpu" and x.is_contiguous() and not torch.jit.is_scripting()
            and not _ops._functorch_active()):
        return _StridePoolNCHW.apply(x, stride)  # eager, NCHW, no partial window: the fast path
    sums = F.avg_pool2d(x if no_pad else F.pad(x, (0, pad_w, 0, pad_h)), stride, stride, divisor_override=1)
    ones = torch.ones_like(x[:1, :1])  # (1, 1, H, W)
    counts = F.avg_pool2d(F.pad(ones, (0, pad_w, 0, pad_h)), stride, stride, divisor_override=1)
    return sums / counts


class ConvNormAct(nn.Module):
    """A 1x1 convolution, optionally followed by BatchNorm and ReLU.

    Attribute names (``conv``, ``bn``, ``activate``) match mmcv's ``ConvModule`` so the
    paper's state_dict keys (``conv1.conv.weight``, ``conv1.bn.running_mean``, ...) line up.
    The convolution has a bias only when there is no norm, as in ``ConvModule``.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: bool, act: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=not norm)
        if norm:
            self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True) if act else nn.Identity()
        self.has_norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, C_in, H, W) -> (B, C_out, H, W)``."""
        x = self.conv(x)
        if self.has_norm:
            x = self.bn(x)
        return self.activate(x)


class Involution(nn.Module):
    """Involution layer (Li et al., CVPR 2021): a kernel generated at every position, shared by a group.

    Args:
        channels: input (= output) channels ``C``.
        kernel_size: ``K``, odd.
        stride: output step; when > 1 the kernels are generated from ``x`` average-pooled
            with window and step ``stride``.
        reduction_ratio: ``r``; the kernel generator's hidden width is ``C // r``.
        group_channels: channels per group; ``G = C // group_channels`` groups.
        dilation: spacing of the kernel taps (padding ``dilation * (K - 1) // 2``).
        recompute: in training, recompute the reduction ``h = ReLU(BN(conv1(pool(x))))`` in the
            backward pass instead of keeping its insides (the pooled ``x`` and BN's input), so
            the layer keeps only ``x`` and ``h`` (see :func:`recomputed`). Same values and
            gradients; BN's running statistics are updated once. Off by default: measured on the
            four RedNet-50 layer shapes (batch 8, one thread), it made a training step of the layer
            about 10 % slower (18 % with stride 2) to save the small ``C/4``-channel BN input.

    Shapes:
        input ``(B, C, H, W)`` -> output ``(B, C, ceil(H / stride), ceil(W / stride))``.

    Compatibility with the paper's code: with the same weights, outputs and gradients equal
    those of the official ``involution`` module wherever that module works. It fails on odd
    input sizes with stride 2 (``nn.Unfold`` gives ``ceil(H/2)`` positions while
    ``AvgPool2d(2, 2)`` gives ``floor(H/2)`` kernels); here the pooling (:func:`stride_pool`)
    gives ``ceil(H / stride)`` rows and columns, like ``ceil_mode=True``, and averages the
    last, partial window over the pixels it covers. For sizes divisible by the stride this is
    exactly the paper's pooling. ``torch.compile`` gives the same outputs and gradients as
    eager mode at every size.

    Raises:
        TypeError: ``x`` has another dtype than the parameters (outside ``torch.autocast``).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 7,
        stride: int = 1,
        reduction_ratio: int = 4,
        group_channels: int = 16,
        dilation: int = 1,
        recompute: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(recompute, bool):
            raise TypeError(f"recompute must be True or False, got {type(recompute).__name__} {recompute!r}")
        self.recompute = recompute
        channels = check_positive_int("channels", channels)
        self.kernel_size = check_kernel_size(kernel_size)
        self.stride = check_positive_int("stride", stride)
        reduction_ratio = check_positive_int("reduction_ratio", reduction_ratio)
        group_channels = check_positive_int("group_channels", group_channels)
        self.dilation = check_positive_int("dilation", dilation)
        if channels % group_channels != 0:
            raise ValueError(
                f"channels={channels} must be divisible by group_channels={group_channels} "
                f"(each group holds group_channels channels that share one kernel)"
            )
        hidden = channels // reduction_ratio
        if hidden < 1:
            raise ValueError(
                f"reduction_ratio={reduction_ratio} leaves channels // reduction_ratio = 0 hidden channels "
                f"for channels={channels}; it must be at most {channels}"
            )
        self.channels = channels
        self.reduction_ratio = reduction_ratio
        self.group_channels = group_channels
        self.groups = channels // group_channels
        self.padding = default_padding(self.kernel_size, self.dilation)
        self.conv1 = ConvNormAct(channels, hidden, norm=True, act=True)  # reduce
        self.conv2 = ConvNormAct(hidden, self.kernel_size**2 * self.groups, norm=False, act=False)  # span

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"groups={self.groups}, group_channels={self.group_channels}, "
            f"reduction_ratio={self.reduction_ratio}, dilation={self.dilation}"
        )

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"x must be 4-D (B, C, H, W), got {x.dim()}-D with shape {tuple(x.shape)}")
        if x.shape[1] != self.channels:
            raise ValueError(
                f"x has {x.shape[1]} channels (x.shape[1]) but this Involution was built for "
                f"channels={self.channels}"
            )
        if not x.is_floating_point():
            raise TypeError(f"x must have a floating-point dtype, got {x.dtype}")
        for dim, name in ((2, "height"), (3, "width")):
            size = x.shape[dim]
            if not isinstance(size, torch.SymInt) and size < 1:
                raise ValueError(
                    f"x must have a {name} (x.shape[{dim}]) of at least 1, got shape {tuple(x.shape)}; "
                    f"an involution needs at least one pixel"
                )
        weight = self.conv1.conv.weight
        if x.device != weight.device:
            raise ValueError(
                f"x is on device {x.device} but this Involution's parameters are on {weight.device}; "
                f"move one of them (e.g. module.to(x.device))"
            )
        autocast = x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)
        if x.dtype != weight.dtype and not autocast:
            raise TypeError(
                f"x has dtype {x.dtype} but this Involution's parameters have dtype {weight.dtype}; "
                f"convert one of them (e.g. module.to({x.dtype}) or x.to({weight.dtype})), "
                f"or run inside torch.autocast"
            )

    def reduced_features(self, x: torch.Tensor) -> torch.Tensor:
        """``h = ReLU(BN(conv1(pool(x))))``: ``x (B, C, H, W) -> (B, C // r, H', W')``, what the span
        ``conv2`` turns into kernels."""
        self._check_input(x)
        return self._reduce(x)

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = stride_pool(x, self.stride)
        return self.conv1(x)

    def generate_kernels(self, x: torch.Tensor) -> torch.Tensor:
        """The kernel-generation function phi: ``x (B, C, H, W) -> kernels (B, G, K, K, H', W')``."""
        flat = self.conv2(self.reduced_features(x))  # (B, G*K*K, H', W'), group-major as in the paper
        batch, _, out_h, out_w = flat.shape
        return flat.view(batch, self.groups, self.kernel_size, self.kernel_size, out_h, out_w)

    def forward(
        self, x: torch.Tensor, return_kernels: bool = False
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """``x: (B, C, H, W) -> (B, C, H', W')``; with ``return_kernels=True`` also the kernels
        ``(B, G, K, K, H', W')`` that were applied.

        Without ``return_kernels`` the layer runs the fused op (:mod:`involution_edu.fused`): the
        span ``conv2`` and the aggregation in one, so the kernels tensor is never stored and the
        backward pass recomputes it. Same outputs and gradients as the unfused path, to rounding.
        """
        onnx = not torch.compiler.is_compiling() and torch.onnx.is_in_onnx_export()
        if not return_kernels and not onnx:  # the legacy ONNX exporter gets the unfused graph
            self._check_input(x)
            h = recomputed(self._reduce, (self,), x) if self.recompute else self._reduce(x)
            span = self.conv2.conv
            return involution_fused(x, h, span.weight, span.bias, self.kernel_size, stride=self.stride,
                                    padding=self.padding, dilation=self.dilation)
        kernels = self.generate_kernels(x)
        applied = kernels
        if torch.compiler.is_compiling():
            # Inductor with dynamic shapes fails on the 6-D view of a channels-last conv2 output
            # (ValueRangeError, stride 2 + channels last + grad); a contiguous copy avoids it.
            applied = kernels.contiguous()
        out = involution(x, applied, stride=self.stride, padding=self.padding, dilation=self.dilation)
        return (out, kernels) if return_kernels else out
