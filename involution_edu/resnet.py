"""Bottleneck ResNets (He et al., 2016): the baseline RedNet is compared with, and its scaffolding.

RedNet (:mod:`involution_edu.rednet`) is this network with the 3x3 convolution of every
bottleneck swapped for a 7x7 involution and a different stem. The pieces both share live
here:

* :class:`ConvBNReLU`  a convolution + BatchNorm (+ ReLU) with mmcv ``ConvModule`` names
  (``conv``, ``bn``, ``activate``), used by RedNet's stem;
* :class:`Bottleneck`  1x1 reduce -> spatial layer (stride here, "pytorch" style) -> 1x1
  expand (x4), with a residual connection; subclasses choose the spatial layer;
* :func:`make_res_layer`  one stage: the first block changes stride/width and gets a
  1x1 conv + BN shortcut, the others keep the shape;
* :class:`ClassifierHead`, :class:`ImageClassifier`  global average pooling + ``fc``, with the
  mmcls checkpoint layout ``backbone.*``, ``head.fc.*``.

Shapes (224 x 224 input, batch ``B``)::

    stem (conv 7x7 s2 + max pool s2)   (B,   64, 56, 56)
    layer1 (stride 1)                  (B,  256, 56, 56)
    layer2 (stride 2)                  (B,  512, 28, 28)
    layer3 (stride 2)                  (B, 1024, 14, 14)
    layer4 (stride 2)                  (B, 2048,  7,  7)
    head                               (B, num_classes)
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .shapes import check_positive_int

__all__ = [
    "STAGE_BLOCKS",
    "EXPANSION",
    "ConvBNReLU",
    "Bottleneck",
    "make_res_layer",
    "ResNet",
    "ClassifierHead",
    "ImageClassifier",
    "ResidualBackbone",
    "init_weights",
    "check_depth",
    "resnet26",
    "resnet38",
    "resnet50",
    "resnet101",
    "resnet152",
]

#: Blocks per stage for each depth (the paper's Table / mmcls ``arch_settings``).
STAGE_BLOCKS: Dict[int, Tuple[int, int, int, int]] = {
    26: (1, 2, 4, 1),
    38: (2, 3, 5, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}

#: Output width of a bottleneck = EXPANSION x its inner width ``planes``.
EXPANSION = 4

#: Stride of the first block of each stage.
STAGE_STRIDES = (1, 2, 2, 2)

#: Inner width ``planes`` of the bottlenecks of each stage.
STAGE_PLANES = (64, 128, 256, 512)


def check_depth(depth: object) -> int:
    """Return ``depth`` if it is one of :data:`STAGE_BLOCKS`' keys, else raise ValueError."""
    if depth not in STAGE_BLOCKS:
        raise ValueError(f"depth must be one of {sorted(STAGE_BLOCKS)}, got {depth!r}")
    return int(depth)  # type: ignore[arg-type]


class ConvBNReLU(nn.Module):
    """``Conv2d(bias=False) -> BatchNorm2d -> ReLU`` with mmcv ``ConvModule`` attribute names.

    ``x: (B, C_in, H, W) -> (B, C_out, H', W')`` with ``H' = floor((H + 2p - K) / s) + 1``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Bottleneck block: ``1x1 conv -> BN -> ReLU -> spatial -> BN -> ReLU -> 1x1 conv -> BN``, plus shortcut.

    The spatial layer (a 3x3 convolution here; a 7x7 involution in RedNet, see
    :meth:`make_spatial`) carries the stride ("pytorch" style). The output is
    ``ReLU(main(x) + shortcut(x))`` where the shortcut is ``x`` itself or, when given,
    ``downsample(x)`` (1x1 conv with the stride + BN).

    Args:
        in_channels: ``C_in`` of the input.
        out_channels: ``C_out`` = ``EXPANSION * planes``; the inner width is ``out_channels // 4``.
        stride: step of the spatial layer (and of the shortcut conv).
        downsample: the shortcut module, required when ``stride != 1`` or ``C_in != C_out``.

    Shapes: ``(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))``.
    """

    expansion = EXPANSION

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("stride", stride)
        if out_channels % self.expansion != 0:
            raise ValueError(f"out_channels must be a multiple of {self.expansion}, got {out_channels}")
        if downsample is None and (stride != 1 or in_channels != out_channels):
            raise ValueError(
                f"a block with stride={stride}, in_channels={in_channels}, out_channels={out_channels} "
                f"changes the shape, so it needs a downsample shortcut (got downsample=None)"
            )
        mid_channels = out_channels // self.expansion
        self.in_channels, self.out_channels, self.mid_channels, self.stride = in_channels, out_channels, mid_channels, stride
        self.conv1 = nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = self.make_spatial(mid_channels, stride)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def make_spatial(self, channels: int, stride: int) -> nn.Module:
        """The layer that looks at neighbours: a 3x3 convolution ``(B, C, H, W) -> (B, C, H', W')``."""
        return nn.Conv2d(channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, C_in, H, W) -> (B, C_out, H', W')``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_res_layer(
    block: Callable[..., Bottleneck], num_blocks: int, in_channels: int, out_channels: int, stride: int
) -> nn.Sequential:
    """One stage of ``num_blocks`` blocks; only the first changes stride and width.

    The first block gets a shortcut ``Sequential(Conv2d(C_in, C_out, 1, stride, bias=False),
    BatchNorm2d(C_out))`` (state_dict ``downsample.0.weight``, ``downsample.1.*``) whenever
    ``stride != 1`` or ``C_in != C_out`` (so layer1's first block has one too: 64 -> 256).
    """
    check_positive_int("num_blocks", num_blocks)
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )
    blocks = [block(in_channels, out_channels, stride, downsample)]
    blocks += [block(out_channels, out_channels, 1, None) for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)


def init_weights(model: nn.Module, zero_init_residual: bool = True) -> None:
    """mmcls-style initialisation, in place.

    Convolutions: Kaiming normal (fan_out, ReLU), biases 0. BatchNorm: weight 1, bias 0.
    Linear: normal(0, 0.01), bias 0. With ``zero_init_residual`` the last BN of every
    bottleneck (``bn3``) starts at weight 0, so each block starts as the identity map.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)
    if zero_init_residual:
        for module in model.modules():
            if isinstance(module, Bottleneck):
                nn.init.zeros_(module.bn3.weight)


class ResidualBackbone(nn.Module):
    """Four stages of bottlenecks after a stem; subclasses define the stem (``forward_stem``) and ``block``."""

    block: Callable[..., Bottleneck] = Bottleneck

    def _make_stages(self, depth: int, in_channels: int) -> None:
        self.depth = check_depth(depth)
        self.stage_blocks = STAGE_BLOCKS[self.depth]
        for index, (num_blocks, planes, stride) in enumerate(zip(self.stage_blocks, STAGE_PLANES, STAGE_STRIDES)):
            out_channels = planes * EXPANSION
            self.add_module(f"layer{index + 1}", make_res_layer(self.block, num_blocks, in_channels, out_channels, stride))
            in_channels = out_channels
        self.out_channels = in_channels  # 2048

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem and its max pool ``(B, 3, H, W) -> (B, 64, ceil(H/4), ceil(W/4))``; defined by subclasses."""
        raise NotImplementedError(f"{type(self).__name__} must define forward_stem")

    def forward_stages(self, x: torch.Tensor) -> List[Tuple[str, torch.Tensor]]:
        """The feature map after the stem (max pool included) and after each stage.

        ``x: (B, 3, H, W)`` -> ``[("stem", (B, 64, H/4, W/4)), ("layer1", (B, 256, H/4, W/4)),
        ("layer2", (B, 512, H/8, W/8)), ("layer3", (B, 1024, H/16, W/16)),
        ("layer4", (B, 2048, H/32, W/32))]`` (each division rounded up).
        """
        x = self.forward_stem(x)
        stages = [("stem", x)]
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            stages.append((name, x))
        return stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 3, H, W) -> (B, 2048, ceil(H/32), ceil(W/32))``."""
        x = self.forward_stem(x)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
        return x


class ResNet(ResidualBackbone):
    """Bottleneck ResNet backbone: 7x7 conv (3 -> 64, stride 2) + BN + ReLU + 3x3 max pool, four stages.

    ``x: (B, 3, H, W) -> (B, 2048, ceil(H/32), ceil(W/32))``.
    """

    def __init__(self, depth: int = 50, zero_init_residual: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._make_stages(depth, 64)
        init_weights(self, zero_init_residual)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, 64, ceil(H/4), ceil(W/4))``."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


class ClassifierHead(nn.Module):
    """Global average pooling + ``fc``: ``(B, C, H, W) -> (B, num_classes)`` (mmcls ``head.fc.*``)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(features), 1))


class ImageClassifier(nn.Module):
    """``backbone`` + ``head``: ``(B, 3, H, W) -> logits (B, num_classes)``.

    The state_dict keys are ``backbone.*``, ``head.fc.weight``, ``head.fc.bias``: the layout of
    the mmcls classifier checkpoints, so they load with ``strict=True``.
    """

    def __init__(self, backbone: nn.Module, num_classes: int = 1000) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = ClassifierHead(backbone.out_channels, num_classes)
        nn.init.normal_(self.head.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _resnet(depth: int, num_classes: int) -> ImageClassifier:
    return ImageClassifier(ResNet(depth), num_classes)


def resnet26(num_classes: int = 1000) -> ImageClassifier:
    """ResNet-26, stages (1, 2, 4, 1): 13.70 M parameters for 1000 classes."""
    return _resnet(26, num_classes)


def resnet38(num_classes: int = 1000) -> ImageClassifier:
    """ResNet-38, stages (2, 3, 5, 2): 19.63 M parameters for 1000 classes."""
    return _resnet(38, num_classes)


def resnet50(num_classes: int = 1000) -> ImageClassifier:
    """ResNet-50, stages (3, 4, 6, 3): 25.56 M parameters for 1000 classes."""
    return _resnet(50, num_classes)


def resnet101(num_classes: int = 1000) -> ImageClassifier:
    """ResNet-101, stages (3, 4, 23, 3): 44.55 M parameters for 1000 classes."""
    return _resnet(101, num_classes)


def resnet152(num_classes: int = 1000) -> ImageClassifier:
    """ResNet-152, stages (3, 8, 36, 3): 60.19 M parameters for 1000 classes."""
    return _resnet(152, num_classes)

