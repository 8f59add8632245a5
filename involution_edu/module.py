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

from typing import Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .functional import involution
from .fused import involution_fused
from .shapes import check_kernel_size, check_positive_int, default_padding

__all__ = ["Involution", "ConvNormAct", "stride_pool"]


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
    sums = F.avg_pool2d(F.pad(x, (0, pad_w, 0, pad_h)), stride, stride, divisor_override=1)
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
    ) -> None:
        super().__init__()
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
            h = self.reduced_features(x)
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
