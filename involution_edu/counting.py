"""Counting parameters and FLOPs, the way the paper's table does.

"FLOPs" in the paper (and in most ImageNet tables) means **multiply-adds**: a K x K
convolution from ``C_in`` to ``C_out`` channels producing an ``H' x W'`` map costs
``K^2 * C_in / groups * C_out * H' * W'`` of them, not twice that. The paper's numbers come
from mmcv's ``get_model_complexity_info``, which adds a few cheap element-wise operations on
top. :func:`count_flops` offers both conventions:

``mode="madds"``  multiply-adds only: convolutions (no bias), the involution aggregation,
                  linear layers.
``mode="mmcv"``   mmcv's rules (``mmcv/cnn/utils/flops_counter.py``): the above plus
                  convolution biases (``C_out * H' * W'``), batch norm (2 per element when
                  affine, else 1, on its input), ReLU (1 per output element), pooling
                  (1 per *input* element; max, average and adaptive pooling alike).
                  Linear layers count ``in * out`` per row, without the bias, as mmcv does.

Involution needs one rule mmcv does not have: its aggregation (``kernels * unfold(x)``,
summed over the window) is a functional call, not a leaf module, so no leaf hook sees it.
A hook on :class:`involution_edu.Involution` adds ``K^2 * C * H' * W'`` multiply-adds per
sample (every output element is a K x K dot product); in mmcv mode it also adds the average
pooling of a strided involution (the official module has it as an ``nn.AvgPool2d``, which
mmcv counts: input elements). Its kernel-generating 1x1 convs, BN and ReLU are ordinary
leaf modules and are counted by their own hooks. Residual additions, flatten and reshapes
are counted in neither mode (mmcv ignores them too).

Counting runs the model once on a ``torch.device("meta")`` copy: tensors there have shapes
but no data, so no arithmetic is done and the original model is untouched. On that copy each
involution skips its aggregation loop and only produces an output of the right shape (the
aggregation's cost is known from the shapes), so even RedNet-152 at 224 x 224 counts in well
under a second.
"""

from __future__ import annotations

import copy
import types
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from .module import Involution

__all__ = ["count_parameters", "count_flops", "FlopReport", "MODES", "format_count", "meta_copy"]

MODES = ("madds", "mmcv")

_INCLUDES = {
    "madds": "multiply-adds of convolutions (no bias), of the involution aggregation (K²·C·H'·W') and of linear layers",
    "mmcv": (
        "mmcv's rules: multiply-adds of convolutions, of the involution aggregation (K²·C·H'·W') and of "
        "linear layers (no linear bias), plus convolution biases, batch norm (2 per element), ReLU "
        "(1 per element), pooling (1 per input element, the involution's stride average pool included)"
    ),
}

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_NO_COST = (nn.Identity, nn.Flatten, nn.Dropout)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``model`` (each shared tensor counted once).

    Buffers (BatchNorm running statistics) are not parameters and are not counted.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


def format_count(value: float, unit: str = "") -> str:
    """``9233886 -> '9.23 M'``, ``1.735e9 -> '1.73 G'`` (two decimals, SI prefixes)."""
    for threshold, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}".rstrip()


@dataclass(frozen=True)
class FlopReport:
    """What :func:`count_flops` found.

    Attributes:
        total: FLOPs (multiply-adds plus, in mmcv mode, element-wise ops) for the whole input.
        mode: ``"madds"`` or ``"mmcv"``.
        input_shape: the input it was measured on, ``(B, C, H, W)``; totals are for all B samples.
        by_type: FLOPs per kind of operation (``"conv"``, ``"conv bias"``,
            ``"involution aggregation"``, ``"linear"``, ``"batch norm"``, ``"relu"``, ``"pooling"``).
        by_module: ``(module name, kind, FLOPs)`` per hooked call, in execution order.
        includes: one sentence on what is counted.
        not_counted: type names of leaf modules that ran but have no counting rule.
    """

    total: int
    mode: str
    input_shape: Tuple[int, ...]
    by_type: Dict[str, int]
    by_module: List[Tuple[str, str, int]] = field(repr=False)
    includes: str = ""
    not_counted: Tuple[str, ...] = ()

    @property
    def gflops(self) -> float:
        """``total / 1e9``."""
        return self.total / 1e9

    def __str__(self) -> str:
        lines = [f"FLOPs ({self.mode}) for input {self.input_shape}: {self.total:,} = {format_count(self.total)}"]
        lines.append(f"  counts: {self.includes}")
        width = max((len(kind) for kind in self.by_type), default=4)
        for kind, flops in sorted(self.by_type.items(), key=lambda item: -item[1]):
            share = 100.0 * flops / self.total if self.total else 0.0
            lines.append(f"  {kind:<{width}}  {format_count(flops):>10}  {share:5.1f}%")
        if self.not_counted:
            lines.append(f"  modules with no counting rule (counted as 0): {', '.join(self.not_counted)}")
        return "\n".join(lines)


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers live on the meta device (no data copied)."""
    memo: Dict[int, object] = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        if isinstance(tensor, nn.Parameter):
            meta = nn.Parameter(meta, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = meta
    return copy.deepcopy(model, memo)


def _involution_shapes_only(self: Involution, x: torch.Tensor, return_kernels: bool = False):
    """Stand-in for ``Involution.forward`` on the meta-device copy: generate the kernels (their 1x1
    convs, BN and ReLU run and are counted by their own hooks), then return an empty output of the
    aggregation's shape ``(B, C, H', W')`` instead of running its K*K-step loop, which on the meta
    device would compute nothing but cost time. The hook on the Involution still sees the real
    input and output shapes."""
    kernels = self.generate_kernels(x)  # (B, G, K, K, H', W')
    out = x.new_empty(x.shape[0], x.shape[1], kernels.shape[-2], kernels.shape[-1])
    return (out, kernels) if return_kernels else out


def _numel(tensor: torch.Tensor) -> int:
    return int(tensor.numel())


def _conv_flops(module: nn.Conv2d, inputs: Tuple[torch.Tensor, ...], output: torch.Tensor) -> Tuple[int, int]:
    """``(multiply-adds, bias adds)``: ``K_h*K_w * C_in/groups * C_out * B*H'*W'`` and ``C_out * B*H'*W'``."""
    positions = output.shape[0] * output.shape[2] * output.shape[3]
    kernel_h, kernel_w = module.kernel_size
    madds = kernel_h * kernel_w * (module.in_channels // module.groups) * module.out_channels * positions
    bias = module.out_channels * positions if module.bias is not None else 0
    return int(madds), int(bias)


def _involution_flops(module: Involution, inputs: Tuple[torch.Tensor, ...], output: torch.Tensor) -> Tuple[int, int]:
    """``(aggregation multiply-adds, stride-pooling ops)``: ``K^2 * B*C*H'*W'`` and ``B*C*H*W`` if stride > 1."""
    aggregation = module.kernel_size**2 * _numel(output)
    pooling = _numel(inputs[0]) if module.stride > 1 else 0
    return int(aggregation), int(pooling)


def count_flops(
    model: nn.Module, input_shape: Sequence[int] = (1, 3, 224, 224), mode: str = "madds"
) -> FlopReport:
    """Count the FLOPs of one forward pass of ``model`` on an input of ``input_shape``.

    Forward hooks on the leaf modules (``Conv2d``, ``Linear``, ``BatchNorm*``, ``ReLU``,
    pooling) and on every :class:`involution_edu.Involution` add up the cost of each call;
    a module called three times (a block's shared ReLU) is counted three times. The model runs
    in eval mode under ``torch.no_grad()`` on a meta-device copy, so no arithmetic is done and
    ``model`` itself is unchanged.

    Args:
        model: any ``nn.Module`` taking one tensor.
        input_shape: ``(B, C, H, W)``; the paper's numbers are for ``(1, 3, 224, 224)``.
        mode: ``"madds"`` (multiply-adds only) or ``"mmcv"`` (mmcv's counter, as in the paper).

    Returns:
        a :class:`FlopReport`; ``report.total`` for the whole batch (batch 1: per image).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise TypeError(f"input_shape must be a sequence of integers like (1, 3, 224, 224), got {input_shape!r}") from None
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must hold at least (B, C) positive sizes, got {shape}")

    mmcv = mode == "mmcv"
    by_type: Dict[str, int] = {}
    by_module: List[Tuple[str, str, int]] = []
    not_counted: List[str] = []

    def add(name: str, kind: str, flops: int) -> None:
        if flops:
            by_type[kind] = by_type.get(kind, 0) + flops
            by_module.append((name, kind, flops))

    def make_hook(name: str, module: nn.Module):
        def hook(mod: nn.Module, inputs: Tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if isinstance(mod, Involution):
                aggregation, pooling = _involution_flops(mod, inputs, output)
                add(name, "involution aggregation", aggregation)
                if mmcv:
                    add(name, "pooling", pooling)
            elif isinstance(mod, nn.Conv2d):
                madds, bias = _conv_flops(mod, inputs, output)
                add(name, "conv", madds)
                if mmcv:
                    add(name, "conv bias", bias)
            elif isinstance(mod, nn.Linear):
                add(name, "linear", _numel(inputs[0]) * mod.out_features)
            elif not mmcv:
                return
            elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
                add(name, "batch norm", _numel(inputs[0]) * (2 if mod.affine else 1))
            elif isinstance(mod, nn.ReLU):
                add(name, "relu", _numel(output))
            elif isinstance(mod, _POOLS):
                add(name, "pooling", _numel(inputs[0]))

        return hook

    counted_types = (Involution, nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.ReLU) + _POOLS
    work_model = meta_copy(model).eval()
    handles = []
    for name, module in work_model.named_modules():
        if isinstance(module, Involution):
            module.forward = types.MethodType(_involution_shapes_only, module)  # the copy only
        if isinstance(module, counted_types):
            handles.append(module.register_forward_hook(make_hook(name or type(module).__name__, module)))
        elif not any(True for _ in module.children()) and not isinstance(module, _NO_COST):
            type_name = type(module).__name__
            if type_name not in not_counted:
                not_counted.append(type_name)
    try:
        with torch.no_grad():
            work_model(torch.empty(shape, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return FlopReport(
        total=int(sum(by_type.values())),
        mode=mode,
        input_shape=shape,
        by_type=by_type,
        by_module=by_module,
        includes=_INCLUDES[mode],
        not_counted=tuple(not_counted),
    )
