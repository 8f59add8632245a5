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
ResNets. A BatchNorm after an involution (RedNet's ``bn2``, ``stem.2``) stays: the involution
is not a convolution, and its per-group kernels cannot absorb a per-channel scale.
"""

from __future__ import annotations

import copy
from typing import List

import torch.nn as nn
from torch.ao.quantization import fuse_modules

__all__ = ["fuse_for_inference", "conv_bn_pairs"]


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


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy of ``model`` with every conv + BatchNorm pair folded (see the module docstring).

    The input model is not changed (neither its weights nor its train/eval mode). The copy
    gives the outputs of ``model.eval()`` to rounding error (float32: about 1e-6 relative), on
    any input size and memory format, and is meant for inference only: its folded
    convolutions carry the BatchNorm's running statistics baked in, so training it would no
    longer update them. Its state_dict differs from the original's (the BatchNorm entries are
    gone, the folded convolutions have a ``bias``).

    Works on RedNet (:mod:`involution_edu.rednet`), on the ResNet baselines
    (:mod:`involution_edu.resnet`) and on any model whose convolutions and BatchNorms follow
    the pair rule of :func:`conv_bn_pairs`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    folded = copy.deepcopy(model).eval()
    pairs = conv_bn_pairs(folded)
    if pairs:
        folded = fuse_modules(folded, pairs, inplace=True)
    return folded
