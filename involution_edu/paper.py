"""The paper's involution module (d-li14/involution, ``involution_naive.py``), made runnable.

This is the official naive implementation with one change: mmcv's ``ConvModule`` is
replaced by :class:`ConvModule`, a few-line stand-in with the same attribute names and the
same behaviour for the configurations the paper uses (1x1 conv, optional BN, optional ReLU;
a bias only when there is no norm). The course uses it as ground truth: the library's
:class:`involution_edu.Involution` must give identical outputs and gradients with the same
weights, and its checkpoints must load into ours.

Kept as in the original, defects included: it raises a shape error on odd input sizes
with stride 2, and it always uses dilation 1.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

__all__ = ["ConvModule", "PaperInvolution"]


class ConvModule(nn.Module):
    """Stand-in for ``mmcv.cnn.ConvModule``: conv -> (BN) -> (ReLU), mmcv's attribute names."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        conv_cfg: Optional[dict] = None,
        norm_cfg: Optional[dict] = None,
        act_cfg: Optional[dict] = dict(type="ReLU"),
    ) -> None:
        super().__init__()
        self.with_norm = norm_cfg is not None
        self.with_activation = act_cfg is not None
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=not self.with_norm)
        if self.with_norm:
            self.bn = nn.BatchNorm2d(out_channels)
        if self.with_activation:
            self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.with_norm:
            x = self.bn(x)
        if self.with_activation:
            x = self.activate(x)
        return x


class PaperInvolution(nn.Module):
    """The official ``involution`` module (naive unfold version), unchanged apart from imports."""

    def __init__(self, channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.channels = channels
        reduction_ratio = 4
        self.group_channels = 16
        self.groups = self.channels // self.group_channels
        self.conv1 = ConvModule(
            in_channels=channels,
            out_channels=channels // reduction_ratio,
            kernel_size=1,
            conv_cfg=None,
            norm_cfg=dict(type="BN"),
            act_cfg=dict(type="ReLU"),
        )
        self.conv2 = ConvModule(
            in_channels=channels // reduction_ratio,
            out_channels=kernel_size**2 * self.groups,
            kernel_size=1,
            stride=1,
            conv_cfg=None,
            norm_cfg=None,
            act_cfg=None,
        )
        if stride > 1:
            self.avgpool = nn.AvgPool2d(stride, stride)
        self.unfold = nn.Unfold(kernel_size, 1, (kernel_size - 1) // 2, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.conv2(self.conv1(x if self.stride == 1 else self.avgpool(x)))
        b, c, h, w = weight.shape
        weight = weight.view(b, self.groups, self.kernel_size**2, h, w).unsqueeze(2)
        out = self.unfold(x).view(b, self.groups, self.group_channels, self.kernel_size**2, h, w)
        out = (weight * out).sum(dim=3).view(b, self.channels, h, w)
        return out
