"""RedNet (Li et al., CVPR 2021): a bottleneck ResNet whose 3x3 convolutions are 7x7 involutions.

Built from :class:`involution_edu.Involution` and the ResNet scaffolding of
:mod:`involution_edu.resnet`, with the paper's module names, so the official checkpoints load
with ``strict=True``:

* **Block** (:class:`InvolutionBottleneck`): ``conv1`` 1x1 -> ``bn1`` -> ReLU ->
  ``conv2`` = Involution(C, 7, stride) -> ``bn2`` -> ReLU -> ``conv3`` 1x1 (x4) -> ``bn3``,
  plus the shortcut (``downsample.0`` 1x1 conv with the stride, ``downsample.1`` BN).
* **Stem** (``stem``, an ``nn.Sequential``): ``0`` 3x3 conv 3 -> 32 stride 2 + BN + ReLU,
  ``1`` Involution(32, ``stem_kernel_size``), ``2`` BN(32), ``3`` ReLU, ``4`` 3x3 conv 32 -> 64
  + BN + ReLU; then ``maxpool`` 3x3 stride 2 (no parameters).
* **Classifier** (:class:`involution_edu.resnet.ImageClassifier`): ``backbone.*`` + global
  average pooling + ``head.fc`` (2048 -> num_classes).

``stem_kernel_size``: the paper's classification code uses a 3x3 stem involution, its
detection and segmentation code a 7x7 one. The published ImageNet table (9.23 M ... 33.99 M
parameters, 1.73 ... 6.79 GFLOPs) matches the 7x7 stem (RedNet-152: 33,985,302 parameters
rounds to 33.99 M; the 3x3 stem gives 33,984,582 = 33.98 M), so **7 is the default here**.
Pass ``stem_kernel_size=3`` to load a classification checkpoint of the official repository.

``recompute`` (on by default): in training, the stem is recomputed in the backward pass
(:func:`involution_edu.module.recomputed`) instead of keeping the tensors inside it, and its max
pool (:class:`IndexMaxPool2d`) keeps only the int32 indices of the maxima. The stem works at
112x112 with 32 and 64 channels, so without this RedNet keeps more tensors for the backward pass
than ResNet: measured at batch 8, 224², RedNet-50 731 MiB against ResNet-50's 656 MiB (1.11x);
with it 627 MiB (0.96x), for about 3.5 % more time per training step (the stem's forward again;
one thread, interleaved with the plain model). Same outputs, gradients and BN running
statistics; ``recompute=False`` gives the plain path. The involutions' own ``recompute`` (their
reduction ``h``) stays off: it saves only about 19 MiB of RedNet-50's for about 10 % more time
per layer.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .module import Involution, recomputed
from .resnet import STAGE_BLOCKS, Bottleneck, ConvBNReLU, ImageClassifier, ResidualBackbone, init_weights
from .shapes import check_kernel_size

__all__ = [
    "InvolutionBottleneck",
    "IndexMaxPool2d",
    "RedNet",
    "rednet",
    "rednet26",
    "rednet38",
    "rednet50",
    "rednet101",
    "rednet152",
    "load_checkpoint",
    "CheckpointMismatchError",
    "CheckpointFileError",
    "STAGE_BLOCKS",
]

#: Kernel size of the involution inside every bottleneck.
BLOCK_KERNEL_SIZE = 7


class InvolutionBottleneck(Bottleneck):
    """RedNet's block: a bottleneck whose spatial layer is ``Involution(C, 7, stride)``.

    ``(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))``; inner width
    ``C = C_out // 4``, ``G = C // 16`` kernel groups.
    """

    def make_spatial(self, channels: int, stride: int) -> nn.Module:
        return Involution(channels, kernel_size=BLOCK_KERNEL_SIZE, stride=stride)


class _MaxPoolSavingIndices(torch.autograd.Function):
    """``F.max_pool2d`` whose backward keeps only the indices of the maxima (int32), not the input."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        out, indices = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
        plane = x.shape[-2] * x.shape[-1]
        ctx.shape, ctx.channels_last = tuple(x.shape), x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            and not x.is_contiguous()
        ctx.save_for_backward(indices.to(torch.int32) if plane < 2**31 else indices)
        ctx.mark_non_differentiable(indices)
        return out, indices

    @staticmethod
    def backward(ctx, grad_out, _grad_indices):
        (indices,) = ctx.saved_tensors
        batch, channels = ctx.shape[0], ctx.shape[1]
        flat_index = indices.long().reshape(batch, channels, -1)
        grad = grad_out.new_zeros((batch, channels, ctx.shape[2] * ctx.shape[3]))
        # each input position receives the sum of the gradients of the outputs it is the maximum of
        # (in place: the out-of-place scatter_add would copy the zeros once more)
        grad = grad.scatter_add_(2, flat_index, grad_out.reshape(batch, channels, -1)).view(ctx.shape)
        if ctx.channels_last:
            grad = grad.contiguous(memory_format=torch.channels_last)
        return grad, None, None, None, None, None


class IndexMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that, in an eager training step, keeps only the indices of the maxima for the
    backward pass (int32, half the bytes of PyTorch's int64 indices), never its input.

    Same outputs and gradients as ``nn.MaxPool2d`` (the gradient is scattered to the maxima). It
    saves memory only when nothing else keeps the input: in RedNet with ``recompute``, the stem
    before it is recomputed, so its 112x112 output is freed after the forward pass. (In a plain
    stem the ReLU before the pool keeps that tensor anyway, so ResNet would gain nothing from it.)
    Under ``torch.compile``, ``torch.func`` transforms, ``no_grad`` or for 3-D inputs it is
    ``nn.MaxPool2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eager = not torch.compiler.is_compiling() and not torch._C._are_functorch_transforms_active()
        if (not eager or not torch.is_grad_enabled() or not x.requires_grad or x.dim() != 4 or self.return_indices
                or torch.jit.is_scripting() or torch.jit.is_tracing()):
            return super().forward(x)
        out, _ = _MaxPoolSavingIndices.apply(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
        return out


class RedNet(ResidualBackbone):
    """RedNet backbone with the paper's state_dict layout.

    Args:
        depth: 26, 38, 50, 101 or 152 (stages :data:`STAGE_BLOCKS`).
        stem_kernel_size: kernel size of the stem involution (7: detection/segmentation code and
            the published counts; 3: the classification code). Odd.
        zero_init_residual: start every block's ``bn3`` weight at 0 (the paper's default).
        recompute: recompute the stem in the backward pass of a training step (see the module
            docstring). An attribute: change it at any time with :meth:`set_recompute`, which also
            switches the involutions' own ``recompute``.

    Shapes: ``x: (B, 3, H, W) -> (B, 2048, ceil(H/32), ceil(W/32))``.
    """

    block = InvolutionBottleneck

    def __init__(self, depth: int = 50, stem_kernel_size: int = 7, zero_init_residual: bool = True,
                 recompute: bool = True) -> None:
        super().__init__()
        self.stem_kernel_size = check_kernel_size(stem_kernel_size)
        stem_channels = 64
        self.stem = nn.Sequential(
            ConvBNReLU(3, stem_channels // 2, kernel_size=3, stride=2, padding=1),
            Involution(stem_channels // 2, kernel_size=self.stem_kernel_size, stride=1),
            nn.BatchNorm2d(stem_channels // 2),
            nn.ReLU(inplace=True),
            ConvBNReLU(stem_channels // 2, stem_channels, kernel_size=3, stride=1, padding=1),
        )
        self.maxpool = IndexMaxPool2d(kernel_size=3, stride=2, padding=1)
        self._make_stages(depth, stem_channels)
        init_weights(self, zero_init_residual)
        self.set_recompute(recompute)

    def set_recompute(self, stem: bool, layers: Optional[bool] = None) -> "RedNet":
        """Recompute the stem in the backward pass (``stem``) and, if ``layers`` is given, set every
        involution's ``recompute`` (the reduction ``h``; off by default: it saves about 19 MiB of
        RedNet-50's 737 MiB at batch 8, 224², for about 10 % more time per layer). Returns self."""
        for name, value in (("stem", stem), ("layers", layers)):
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
        self.recompute = stem
        if layers is not None:
            for module in self.modules():
                if isinstance(module, Involution):
                    module.recompute = layers
        return self

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, 64, ceil(H/4), ceil(W/4))``; the stem recomputed in backward with ``recompute``."""
        features = recomputed(self.stem, (self.stem,), x) if self.recompute else self.stem(x)
        return self.maxpool(features)


def rednet(depth: int, num_classes: int = 1000, stem_kernel_size: int = 7, recompute: bool = True) -> ImageClassifier:
    """RedNet classifier of the given depth: ``(B, 3, H, W) -> logits (B, num_classes)``.

    State_dict keys: ``backbone.stem.0.conv.weight``, ..., ``head.fc.weight``, ``head.fc.bias``.
    ``recompute``: see :class:`RedNet`.
    """
    return ImageClassifier(RedNet(depth, stem_kernel_size=stem_kernel_size, recompute=recompute), num_classes)


def rednet26(num_classes: int = 1000, stem_kernel_size: int = 7, recompute: bool = True) -> ImageClassifier:
    """RedNet-26, stages (1, 2, 4, 1): 9,233,886 parameters (9,233,166 with the 3x3 stem)."""
    return rednet(26, num_classes, stem_kernel_size, recompute)


def rednet38(num_classes: int = 1000, stem_kernel_size: int = 7, recompute: bool = True) -> ImageClassifier:
    """RedNet-38, stages (2, 3, 5, 2): 12,387,706 parameters (12,386,986 with the 3x3 stem)."""
    return rednet(38, num_classes, stem_kernel_size, recompute)


def rednet50(num_classes: int = 1000, stem_kernel_size: int = 7, recompute: bool = True) -> ImageClassifier:
    """RedNet-50, stages (3, 4, 6, 3): 15,541,526 parameters (15,540,806 with the 3x3 stem)."""
    return rednet(50, num_classes, stem_kernel_size, recompute)


def rednet101(num_classes: int = 1000, stem_kernel_size: int = 7, recompute: bool = True) -> ImageClassifier:
    """RedNet-101, stages (3, 4, 23, 3): 25,653,670 parameters (25,652,950 with the 3x3 stem)."""
    return rednet(101, num_classes, stem_kernel_size, recompute)


def rednet152(num_classes: int = 1000, stem_kernel_size: int = 7, recompute: bool = True) -> ImageClassifier:
    """RedNet-152, stages (3, 8, 36, 3): 33,985,302 parameters (33,984,582 with the 3x3 stem)."""
    return rednet(152, num_classes, stem_kernel_size, recompute)


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose keys or shapes do not match the model; the message lists them."""


class CheckpointFileError(ValueError):
    """A checkpoint file that cannot be read: empty, truncated, or not written by ``torch.save``.

    The message names the file, its size and what went wrong (the reader's own error is
    chained as ``__cause__``).
    """


def _check_load_arguments(model: Any, path: Any) -> str:
    """``path`` as a string, after checking the types of ``model`` and ``path``."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module (e.g. rednet50()), got {type(model).__name__} {model!r:.60}; "
            f"the argument order is load_checkpoint(model, path)"
        )
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or os.PathLike), got {type(path).__name__} {path!r:.60}")
    return os.fspath(path)


def _read_checkpoint(path: str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors that name the file.

    A missing file, a directory or a permission problem keep their ``OSError`` (which names
    the file); an empty, truncated or foreign file raises :class:`CheckpointFileError`.
    """
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise CheckpointFileError(f"checkpoint file {path} is empty (0 bytes): it was not written completely, or not at all")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as error:  # truncated zip, not a torch.save file, pickled objects other than tensors
        size = os.path.getsize(path) if os.path.isfile(path) else None
        text = str(error).split("\n")[0].strip()
        if isinstance(error, (OSError, EOFError)) or "central directory" in text:
            # a seek past the end (OSError EINVAL), or miniz finding no zip directory at the end
            reason = "the file ends early (its zip archive has no complete central directory)"
        else:
            reason = f"{type(error).__name__}: {text or 'no message'}"
        raise CheckpointFileError(
            f"checkpoint file {path} ({size} bytes) cannot be read by torch.load: {reason[:300]}. "
            f"It may be truncated (an interrupted download or save: compare its size with the original) "
            f"or not a file written by torch.save"
        ) from error


def _extract_state_dict(checkpoint: Any, path: str) -> Mapping[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
        checkpoint = checkpoint["state_dict"]  # mmcls: {"meta": ..., "state_dict": ...}
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise CheckpointMismatchError(
            f"{path} does not hold a state_dict (a mapping of names to tensors) nor "
            f"{{'state_dict': state_dict}}; got {type(checkpoint).__name__}"
        )
    return checkpoint


def _list(names: Any, limit: int = 20) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def load_checkpoint(
    model: nn.Module, path: Union[str, "os.PathLike[str]"], strip_prefix: Optional[str] = None
) -> nn.Module:
    """Load a checkpoint file into ``model`` with ``strict=True`` and return the model.

    The file is read with ``torch.load(path, map_location="cpu", weights_only=True)`` (tensors
    and plain containers only, no code is run). It may hold a raw state_dict or an mmcls-style
    ``{"state_dict": ..., "meta": ...}``.

    Args:
        model: the network to load into.
        path: the checkpoint file.
        strip_prefix: removed from the start of every key that has it before matching, e.g.
            ``"module."`` for a checkpoint saved from a ``DistributedDataParallel`` or
            ``DataParallel`` wrapper (``model.module.state_dict()`` would not have it).

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``path`` is not a str / ``os.PathLike``.
        FileNotFoundError: there is no file at ``path``.
        CheckpointFileError: the file is empty, truncated or not written by ``torch.save``
            (the message names the file and its size).
        CheckpointMismatchError: the keys differ (the message lists the missing and the
            unexpected keys) or some shapes differ (listed with both shapes). A common cause:
            a classification checkpoint of the official code needs ``stem_kernel_size=3``;
            a backbone-only checkpoint loads into ``model.backbone``; keys that all start
            with ``module.`` come from a DDP wrapper (pass ``strip_prefix="module."``).
    """
    path = _check_load_arguments(model, path)
    state_dict = _extract_state_dict(_read_checkpoint(path), path)
    if strip_prefix is not None:
        if not isinstance(strip_prefix, str) or not strip_prefix:
            raise TypeError(f"strip_prefix must be a non-empty string such as 'module.', got {strip_prefix!r}")
        state_dict = {(k[len(strip_prefix):] if k.startswith(strip_prefix) else k): v for k, v in state_dict.items()}
    expected = model.state_dict()
    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    wrong_shapes = [
        f"{name}: checkpoint {tuple(state_dict[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in sorted(set(expected) & set(state_dict))
        if state_dict[name].shape != expected[name].shape
    ]
    if missing or unexpected or wrong_shapes:
        lines = [f"checkpoint {os.fspath(path)} does not match {type(model).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_list(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_list(unexpected)}")
        if wrong_shapes:
            lines.append(f"  shape mismatches ({len(wrong_shapes)}): " + "; ".join(wrong_shapes[:10]))
        wrapped = bool(state_dict) and all(name.startswith("module.") for name in state_dict)
        if wrapped and not any(name.startswith("module.") for name in expected):
            lines.append(
                "  hint: every key of this checkpoint starts with 'module.': it was saved from a "
                "DistributedDataParallel (or DataParallel) wrapper; load it with "
                "load_checkpoint(model, path, strip_prefix='module.')"
            )
        elif any(name.startswith("backbone.") for name in missing) and not any(n.startswith("backbone.") for n in state_dict):
            lines.append("  hint: this looks like a backbone-only checkpoint; load it into model.backbone")
        if any("stem.1.conv2" in line for line in wrong_shapes):
            lines.append("  hint: the stem involution's kernel size differs; try stem_kernel_size=3 or 7")
        raise CheckpointMismatchError("\n".join(lines))
    model.load_state_dict(state_dict, strict=True)
    return model
