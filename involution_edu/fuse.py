"""Inference folding: every convolution + BatchNorm pair becomes one convolution.

In eval mode a BatchNorm is a fixed per-channel affine map, ``y = a * x + b`` with
``a = weight / sqrt(running_var + eps)`` and ``b = bias - a * running_mean``. When it follows
a convolution directly, it folds into that convolution's weights and bias::

    BN(conv(x)) = conv'(x),   W' = a[:, None, None, None] * W,   b' = a * b_conv + b

so the network does the same arithmetic minus one full pass over every such feature map.
:func:`fuse_for_inference` applies this to a copy of a model with PyTorch's own fuser
(:func:`torch.ao.quantization.fuse_modules`, which calls
:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`): the convolution gets the folded weights and a
bias, the BatchNorm becomes an ``nn.Identity``.

Which pairs: a ``Conv2d`` child immediately followed by a ``BatchNorm2d`` child of the same
width in the same parent module, the layout of every module in this library (``ConvBNReLU``
``conv``/``bn``, the involution's reduce ``conv1.conv``/``conv1.bn``, a bottleneck's
``conv1``/``bn1``, ``conv3``/``bn3``, ResNet's ``conv2``/``bn2``, a shortcut's
``downsample.0``/``downsample.1``, ResNet's stem ``conv1``/``bn1``) and of torchvision's
ResNets.

A BatchNorm after an involution (RedNet's ``bn2``, ``stem.2``) cannot go into the involution's
weights: its per-group kernels are shared by the group's channels and cannot absorb a
per-channel scale. It folds into the op's *output* instead: :class:`InvolutionBN` runs
:func:`involution_edu.fused.involution_fused_affine`, which scales and shifts each tile of the
output before it is written (``involution_pairs`` lists them). So in a folded RedNet, as in a
folded ResNet, no BatchNorm is left, and both networks get the same treatment.
"""

from __future__ import annotations

import copy
from typing import List, Tuple

import torch
import torch.nn as nn
from torch.ao.quantization import fuse_modules

from .fused import involution_fused_affine
from .module import Involution

__all__ = ["fuse_for_inference", "conv_bn_pairs", "involution_pairs", "InvolutionBN", "batchnorm_affine"]


def batchnorm_affine(bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode BatchNorm as ``(scale, shift)``, ``(C,)`` each: ``bn(x) = scale[c] * x[c] + shift[c]``."""
    if bn.running_var is None or bn.running_mean is None:
        raise ValueError("bn must track running statistics (track_running_stats=True) to be folded")
    inv_std = torch.rsqrt(bn.running_var.detach().double() + bn.eps)
    weight = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(inv_std)
    bias = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(inv_std)
    scale = weight * inv_std
    shift = bias - scale * bn.running_mean.detach().double()
    dtype = bn.running_var.dtype
    return scale.to(dtype), shift.to(dtype)


class InvolutionBN(nn.Module):
    """An :class:`~involution_edu.module.Involution` followed by an eval-mode BatchNorm, in one op.

    ``x (B, C, H, W) -> (B, C, H', W')``: ``scale[c] * involution(x)[c] + shift[c]``, where
    ``(scale, shift)`` is the BatchNorm's affine map (:func:`batchnorm_affine`, buffers here). The
    involution's parameters are kept (``involution.*``); made by :func:`fuse_for_inference`, for
    inference. With gradients it is the differentiable composite (the same numbers).
    """

    def __init__(self, involution: Involution, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        if not isinstance(involution, Involution):
            raise TypeError(f"involution must be an Involution, got {type(involution).__name__}")
        if not isinstance(bn, nn.BatchNorm2d) or bn.num_features != involution.channels:
            raise ValueError(f"bn must be a BatchNorm2d of {involution.channels} channels, got {bn!r}")
        self.involution = involution
        scale, shift = batchnorm_affine(bn)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inv = self.involution
        onnx = not torch.compiler.is_compiling() and torch.onnx.is_in_onnx_export()
        if onnx:  # the legacy exporter gets the plain graph
            return inv(x) * self.scale[None, :, None, None] + self.shift[None, :, None, None]
        inv._check_input(x)
        h = inv._reduce(x)
        span = inv.conv2.conv
        return involution_fused_affine(x, h, span.weight, span.bias, self.scale.to(x.dtype), self.shift.to(x.dtype),
                                       inv.kernel_size, stride=inv.stride, padding=inv.padding, dilation=inv.dilation)


def conv_bn_pairs(model: nn.Module) -> List[List[str]]:
    """The ``[conv_name, bn_name]`` pairs of ``model`` that :func:`fuse_for_inference` folds.

    A pair is a ``Conv2d`` child directly followed (in registration order) by a ``BatchNorm2d``
    child with ``num_features == out_channels``, inside the same parent. Names are full module
    names, e.g. ``["backbone.layer1.0.conv1", "backbone.layer1.0.bn1"]``.
    """
    pairs = []
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        for (first_name, first), (second_name, second) in zip(children, children[1:]):
            if (
                type(first) is nn.Conv2d
                and type(second) is nn.BatchNorm2d
                and second.num_features == first.out_channels
                and second.track_running_stats
            ):
                prefix = f"{parent_name}." if parent_name else ""
                pairs.append([prefix + first_name, prefix + second_name])
    return pairs


def involution_pairs(model: nn.Module) -> List[List[str]]:
    """The ``[involution_name, bn_name]`` pairs that :func:`fuse_for_inference` folds into
    :class:`InvolutionBN`: an :class:`Involution` child directly followed (in registration order)
    by a ``BatchNorm2d`` child of its width that tracks running statistics, in the same parent."""
    pairs = []
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        for (first_name, first), (second_name, second) in zip(children, children[1:]):
            if (type(first) is Involution and type(second) is nn.BatchNorm2d
                    and second.num_features == first.channels and second.track_running_stats):
                prefix = f"{parent_name}." if parent_name else ""
                pairs.append([prefix + first_name, prefix + second_name])
    return pairs


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy of ``model`` with every conv + BatchNorm pair folded (see the module docstring).

    The input model is not changed (neither its weights nor its train/eval mode). The copy
    gives the outputs of ``model.eval()`` to rounding error (float32: about 1e-6 relative), on
    any input size and memory format, and is meant for inference only: its folded
    convolutions carry the BatchNorm's running statistics baked in, so training it would no
    longer update them. Its state_dict differs from the original's (the BatchNorm entries are
    gone, the folded convolutions have a ``bias``, an involution followed by a BatchNorm becomes
    an :class:`InvolutionBN` with ``scale`` and ``shift`` buffers).

    Works on RedNet (:mod:`involution_edu.rednet`), on the ResNet baselines
    (:mod:`involution_edu.resnet`) and on any model whose convolutions and BatchNorms follow
    the pair rule of :func:`conv_bn_pairs`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    folded = copy.deepcopy(model).eval()
    involutions = involution_pairs(folded)  # before the convs: an Involution holds conv + BN pairs of its own
    pairs = conv_bn_pairs(folded)
    if pairs:
        folded = fuse_modules(folded, pairs, inplace=True)
    for involution_name, bn_name in involutions:
        _set(folded, involution_name, InvolutionBN(folded.get_submodule(involution_name), folded.get_submodule(bn_name)))
        _set(folded, bn_name, nn.Identity())
    return folded
