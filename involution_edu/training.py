"""Training small nets on real (tiny, offline) data: a fair conv vs involution comparison.

Everything notebook 07 needs, small enough to read in one sitting:

* :func:`build_conv_net` / :func:`build_involution_net` — the same skeleton (a 3x3 conv stem,
  three blocks, global average pooling, a linear classifier); the involution net swaps every
  block's 3x3 conv for an :class:`~involution_edu.Involution` followed by a 1x1 conv, which
  mixes channels and changes their number (involution keeps ``C_out = C_in``).
* :func:`build_static_net` — the one-change control: the involution net with the same initial
  weights, whose kernels are learned parameters (:class:`StaticInvolution`) instead of generated.
* :func:`train` — a deterministic loop (seeded init and shuffling, one thread, deterministic
  algorithms) with SGD + momentum, linear warm-up then cosine decay, optional gradient-norm
  clipping, a tqdm progress bar, and a :class:`History` of losses, accuracies and gradient norms.
* :func:`evaluate`, :func:`accuracy`, :func:`confusion_matrix`, :func:`clip_gradients`,
  :func:`learning_rate`, :func:`first_involution_kernels`.

Shapes: images ``x: (N, 1, H, W)``, labels ``y: (N,)`` int64, logits ``(N, num_classes)``.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .module import Involution
from .shapes import check_positive_int

__all__ = [
    "ConvBlock",
    "InvolutionBlock",
    "StaticInvolution",
    "SmallNet",
    "build_conv_net",
    "build_involution_net",
    "build_static_net",
    "deterministic",
    "accuracy",
    "confusion_matrix",
    "clip_gradients",
    "learning_rate",
    "eval_mode",
    "evaluate",
    "History",
    "train",
    "first_involution_kernels",
    "PERTURB_ENV",
    "perturb_rounding",
    "perturb_from_env",
]

#: Environment variable read by :func:`train`: an integer n nudges every floating-point parameter
#: by n units in the last place before training. The mathematics is unchanged, the rounding is
#: not, so after a few hundred steps the exact metrics differ as they would on another CPU.
#: ``tests/test_training.py`` runs notebook 07 under nbval with it set, to prove that every
#: stored output holds on any machine.
PERTURB_ENV = "INVOLUTION_EDU_PERTURB_ULPS"


# ----------------------------------------------------------------------------- models
class ConvBlock(nn.Sequential):
    """3x3 conv (no bias) -> BN -> ReLU: ``(B, C_in, H, W) -> (B, C_out, ceil(H/s), ceil(W/s))``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class InvolutionBlock(nn.Module):
    """Involution -> BN -> ReLU -> 1x1 conv -> BN -> ReLU (the middle of a RedNet bottleneck).

    ``(B, C_in, H, W) -> (B, C_out, ceil(H/s), ceil(W/s))``. The involution is spatial and
    channel-agnostic and keeps ``C_in`` channels; the 1x1 conv mixes channels and maps
    ``C_in -> C_out`` (the answer to "output channels != input channels": add a 1x1 conv).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        reduction_ratio: int = 4,
        group_channels: int = 8,
    ) -> None:
        super().__init__()
        self.involution = Involution(
            in_channels, kernel_size, stride=stride, reduction_ratio=reduction_ratio, group_channels=group_channels
        )
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.involution(x)))
        return self.relu(self.bn2(self.conv(x)))


class StaticInvolution(nn.Module):
    """An involution whose kernels are *learned parameters*: the one-change control for :class:`Involution`.

    The aggregation is the involution's own: output channel ``c`` is the ``K x K`` window of
    input channel ``c`` weighted by the kernel of its group ``g(c) = c // group_channels``, with
    the same stride, padding and dilation. The only difference: the ``(G, K, K)`` kernels are
    weights shared by every position and every image, instead of ``phi(x)`` generated at each
    position. It is a depthwise convolution whose kernels are tied within each group.

    Shapes: ``x: (B, C, H, W) -> (B, C, H', W')``, the same ``H', W'`` as the involution.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        group_channels: int = 8,
        dilation: int = 1,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.stride = check_positive_int("stride", stride)
        self.group_channels = check_positive_int("group_channels", group_channels)
        self.dilation = check_positive_int("dilation", dilation)
        if channels % group_channels != 0:
            raise ValueError(f"channels={channels} must be divisible by group_channels={group_channels}")
        self.groups = channels // group_channels
        self.padding = dilation * (self.kernel_size - 1) // 2
        bound = 1.0 / self.kernel_size  # nn.Conv2d's default for a depthwise kernel: 1 / sqrt(fan_in = K^2)
        weight = torch.rand(self.groups, self.kernel_size, self.kernel_size, generator=generator) * (2 * bound) - bound
        self.weight = nn.Parameter(weight)  # (G, K, K)

    @classmethod
    def like(cls, layer: Involution, generator: Optional[torch.Generator] = None) -> "StaticInvolution":
        """A static-kernel layer with ``layer``'s channels, K, stride, groups and dilation."""
        return cls(layer.channels, layer.kernel_size, layer.stride, layer.group_channels, layer.dilation, generator)

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """The kernels in the involution layout, the same at every position: ``(B, G, K, K, H', W')``."""
        out_h = (x.shape[-2] + 2 * self.padding - self.dilation * (self.kernel_size - 1) - 1) // self.stride + 1
        out_w = (x.shape[-1] + 2 * self.padding - self.dilation * (self.kernel_size - 1) - 1) // self.stride + 1
        return self.weight[None, :, :, :, None, None].expand(x.shape[0], -1, -1, -1, out_h, out_w)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, group_channels={self.group_channels}, dilation={self.dilation}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.repeat_interleave(self.group_channels, dim=0).unsqueeze(1)  # (C, 1, K, K), tied per group
        return F.conv2d(x, weight, stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.channels)


class SmallNet(nn.Module):
    """Stem -> blocks -> global average pool -> linear: ``(B, 1, H, W) -> logits (B, num_classes)``."""

    def __init__(self, stem: nn.Module, blocks: Sequence[nn.Module], features: int, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


def _check_widths(widths: Sequence[int]) -> Tuple[int, int]:
    if not isinstance(widths, (tuple, list)) or len(widths) != 2:
        raise ValueError(f"widths must be a pair (C1, C2), got {widths!r}")
    return check_positive_int("widths[0]", widths[0]), check_positive_int("widths[1]", widths[1])


def _stem(in_channels: int, width: int) -> nn.Module:
    return ConvBlock(in_channels, width)


def build_conv_net(widths: Sequence[int] = (14, 28), in_channels: int = 1, num_classes: int = 10, seed: int = 0) -> SmallNet:
    """Conv net: stem 3x3 conv ``in -> C1``; blocks 3x3 convs ``C1 -> C1``, ``C1 -> C2`` (stride 2),
    ``C2 -> C2``; pool; linear ``C2 -> num_classes``. Weights drawn with ``torch.manual_seed(seed)``."""
    c1, c2 = _check_widths(widths)
    torch.manual_seed(seed)
    blocks = [ConvBlock(c1, c1), ConvBlock(c1, c2, stride=2), ConvBlock(c2, c2)]
    return SmallNet(_stem(in_channels, c1), blocks, c2, num_classes)


def build_involution_net(
    widths: Sequence[int] = (32, 64),
    in_channels: int = 1,
    num_classes: int = 10,
    kernel_size: int = 3,
    reduction_ratio: int = 4,
    group_channels: int = 8,
    seed: int = 0,
) -> SmallNet:
    """Involution net: the conv net's skeleton with each block's 3x3 conv replaced by
    :class:`InvolutionBlock` (involution ``K x K`` + 1x1 conv). The stem stays a 3x3 conv, as
    in RedNet: an involution cannot turn 1 input channel into ``C1``."""
    c1, c2 = _check_widths(widths)
    torch.manual_seed(seed)
    options = dict(kernel_size=kernel_size, reduction_ratio=reduction_ratio, group_channels=group_channels)
    blocks = [
        InvolutionBlock(c1, c1, **options),
        InvolutionBlock(c1, c2, stride=2, **options),
        InvolutionBlock(c2, c2, **options),
    ]
    return SmallNet(_stem(in_channels, c1), blocks, c2, num_classes)


def build_static_net(
    widths: Sequence[int] = (32, 64),
    in_channels: int = 1,
    num_classes: int = 10,
    kernel_size: int = 3,
    reduction_ratio: int = 4,
    group_channels: int = 8,
    seed: int = 0,
) -> SmallNet:
    """The one-change control of :func:`build_involution_net`: the same net, built with the same
    ``seed`` (so the stem, every BN, every 1x1 conv and the head start from the *same* weights),
    with each block's :class:`~involution_edu.Involution` replaced by a :class:`StaticInvolution`
    of the same channels, ``K``, stride and groups. Everything is equal but whether the kernels
    are generated from the input. The static kernels are drawn from a generator seeded with
    ``seed``. The control has fewer parameters: it has no kernel generator phi."""
    model = build_involution_net(widths, in_channels, num_classes, kernel_size, reduction_ratio, group_channels, seed)
    generator = torch.Generator().manual_seed(seed)
    for block in model.blocks:
        block.involution = StaticInvolution.like(block.involution, generator)
    return model


# ----------------------------------------------------------------------------- determinism
@contextlib.contextmanager
def deterministic(threads: int = 1) -> Iterator[None]:
    """Run the body with deterministic algorithms and ``threads`` intra-op threads, then restore.

    On the CPU this makes a seeded training run repeat bit for bit on the same machine and
    PyTorch build (another CPU or build may differ in the last bits, and so after many steps).
    """
    threads = check_positive_int("threads", threads)
    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    old_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_deterministic, warn_only=old_warn_only)
        torch.set_num_threads(old_threads)


@torch.no_grad()
def perturb_rounding(model: nn.Module, ulps: int) -> None:
    """Move every floating-point parameter of ``model`` ``ulps`` steps to the next representable
    value (towards +inf for ``ulps > 0``, -inf for ``ulps < 0``), in place.

    A relative change of about ``2**-23`` (float32): no different model, only different rounding,
    the way another CPU, BLAS or thread count would round the same run.
    """
    if not isinstance(ulps, int) or isinstance(ulps, bool):
        raise TypeError(f"ulps must be an int, got {type(ulps).__name__}")
    for param in model.parameters():
        if param.is_floating_point():
            target = torch.full_like(param, math.inf if ulps > 0 else -math.inf)
            for _ in range(abs(ulps)):
                param.copy_(torch.nextafter(param, target))


def _perturbation_from_env() -> int:
    raw = os.environ.get(PERTURB_ENV, "").strip()
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{PERTURB_ENV} must be an integer number of ulps, got {raw!r}") from None


def perturb_from_env(model: nn.Module) -> int:
    """Apply the rounding perturbation asked for by ``INVOLUTION_EDU_PERTURB_ULPS`` (if any) to
    ``model``; return the number of ulps (0: nothing done). :func:`train` calls it; a notebook
    with its own training loop calls it on its model before training, so that the
    machine-independence test perturbs that run too."""
    ulps = _perturbation_from_env()
    if ulps:
        perturb_rounding(model, ulps)
    return ulps


# ----------------------------------------------------------------------------- metrics
def _check_labels(name: str, labels: torch.Tensor, length: Optional[int] = None) -> None:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"{name} must be a 1-D integer tensor (N,), got dtype {labels.dtype} and shape {tuple(labels.shape)}")
    if length is not None and labels.shape[0] != length:
        raise ValueError(f"{name} has {labels.shape[0]} entries, expected {length}")


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose largest logit is at the true label.

    Args:
        logits: ``(N, num_classes)``; labels: ``(N,)`` integers. Returns a float in ``[0, 1]``.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"logits must be a 2-D tensor (N, num_classes), got {getattr(logits, 'shape', type(logits).__name__)}")
    _check_labels("labels", labels, logits.shape[0])
    if logits.shape[0] == 0:
        raise ValueError("logits is empty (N = 0): accuracy is undefined")
    return float((logits.argmax(dim=1) == labels).double().mean())


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``matrix[t, p]`` = how many samples of true class ``t`` were predicted as ``p``.

    Args:
        predictions, labels: ``(N,)`` integers in ``0 .. num_classes - 1``.
    Returns:
        ``(num_classes, num_classes)`` int64; rows are true classes, columns predictions; the
        diagonal holds the correct answers and the total is ``N``.
    """
    num_classes = check_positive_int("num_classes", num_classes)
    _check_labels("labels", labels)
    _check_labels("predictions", predictions, labels.shape[0])
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.numel() and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must lie in 0..{num_classes - 1}, got values from {int(values.min())} to {int(values.max())}")
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


# ----------------------------------------------------------------------------- optimisation helpers
def clip_gradients(parameters: Union[nn.Module, Iterable[torch.Tensor]], max_norm: Optional[float]) -> float:
    """Scale all gradients together so their global L2 norm is at most ``max_norm``.

    Returns the norm *before* clipping (so it can be logged). ``max_norm=None`` only measures.
    Parameters without a gradient are skipped. A wrapper of ``torch.nn.utils.clip_grad_norm_``.
    """
    params = list(parameters.parameters() if isinstance(parameters, nn.Module) else parameters)
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if max_norm is None:
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in grads])))
    if not isinstance(max_norm, (int, float)) or isinstance(max_norm, bool) or not max_norm > 0:
        raise ValueError(f"max_norm must be a positive number or None, got {max_norm!r}")
    return float(torch.nn.utils.clip_grad_norm_(grads, max_norm))


def learning_rate(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0) -> float:
    """Linear warm-up from ``base_lr / warmup_steps`` to ``base_lr`` over ``warmup_steps``, then
    cosine decay to 0 at ``total_steps``. ``step`` counts from 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# ----------------------------------------------------------------------------- train and evaluate
@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the body, then give every submodule back its *own* mode.

    ``model.train(was_training)`` would set one mode on all submodules and so unfreeze a layer
    kept in eval mode on purpose (a frozen batch norm when fine-tuning); this restores each
    module's flag, even if the body raises.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> Tuple[float, float, torch.Tensor]:
    """Mean cross-entropy, accuracy and predictions ``(N,)`` of ``model`` in eval mode; the mode of
    every submodule is restored afterwards (:func:`eval_mode`)."""
    with eval_mode(model):
        logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    loss = float(F.cross_entropy(logits, y))
    return loss, accuracy(logits, y), logits.argmax(dim=1)


@dataclass
class History:
    """What :func:`train` recorded.

    Attributes:
        train_loss: mean training loss of each epoch (over its steps).
        test_loss, test_accuracy: on the test set after each epoch.
        step_loss, grad_norm, lr: per optimisation step (grad norm before clipping).
        diverged: True if a loss became NaN or infinite; training stopped there.
    """

    train_loss: List[float] = field(default_factory=list)
    test_loss: List[float] = field(default_factory=list)
    test_accuracy: List[float] = field(default_factory=list)
    step_loss: List[float] = field(default_factory=list)
    grad_norm: List[float] = field(default_factory=list)
    lr: List[float] = field(default_factory=list)
    diverged: bool = False


def train(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: Optional[torch.Tensor] = None,
    y_test: Optional[torch.Tensor] = None,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    warmup_steps: int = 0,
    max_grad_norm: Optional[float] = None,
    seed: int = 0,
    max_steps: Optional[int] = None,
    progress: bool = True,
    desc: str = "train",
) -> History:
    """Train ``model`` in place with SGD (Nesterov momentum) and cross-entropy; return a :class:`History`.

    Deterministic: the batch order comes from a ``torch.Generator`` seeded with ``seed``, and
    the loop runs under :func:`deterministic` (one thread, deterministic algorithms). Each
    epoch is a fresh permutation cut into ``N // batch_size`` full batches (the remainder is
    left out, as ``drop_last=True`` does: a tiny last batch would give BatchNorm noisy
    statistics and the gradient a spike). The learning rate follows :func:`learning_rate`
    (warm-up, then cosine); with ``max_grad_norm`` the gradients are clipped by
    :func:`clip_gradients` before each step. A non-finite loss marks the run as diverged and
    stops it. ``max_steps`` stops early (for quick tests). The tqdm bar advances once per epoch.
    If the environment variable ``INVOLUTION_EDU_PERTURB_ULPS`` holds an integer n, the
    parameters are first nudged by n ulps (:func:`perturb_rounding`), to test that results
    stated about a run do not hang on its last bits.

    Args:
        x_train: ``(N, C, H, W)``; y_train: ``(N,)``; x_test, y_test: optional, evaluated
            after every epoch.
    """
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    _check_labels("y_train", y_train, x_train.shape[0])
    if (x_test is None) != (y_test is None):
        raise ValueError("give both x_test and y_test, or neither")
    num_train = x_train.shape[0]
    if num_train < batch_size:
        raise ValueError(f"batch_size={batch_size} is larger than the {num_train} training samples")
    steps_per_epoch = num_train // batch_size
    total_steps = epochs * steps_per_epoch
    if max_steps is not None:
        total_steps = min(total_steps, check_positive_int("max_steps", max_steps))
    perturb_from_env(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    history = History()
    step = 0
    epochs_to_run = math.ceil(total_steps / steps_per_epoch)
    with deterministic(), tqdm(total=epochs_to_run, desc=desc, unit="epoch", disable=not progress) as bar:
        model.train()
        for _ in range(epochs_to_run):
            order = torch.randperm(num_train, generator=generator)
            epoch_losses = []
            for start in range(0, steps_per_epoch * batch_size, batch_size):
                if step >= total_steps:
                    break
                index = order[start : start + batch_size]
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, total_steps, lr, warmup_steps)
                loss = F.cross_entropy(model(x_train[index]), y_train[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = clip_gradients(model, max_grad_norm)
                history.step_loss.append(loss.item())
                history.grad_norm.append(grad_norm)
                history.lr.append(optimizer.param_groups[0]["lr"])
                step += 1
                if not math.isfinite(history.step_loss[-1]):
                    history.diverged = True
                    break
                optimizer.step()
                epoch_losses.append(history.step_loss[-1])
            if epoch_losses:
                history.train_loss.append(sum(epoch_losses) / len(epoch_losses))
            if history.diverged:
                break
            postfix = {"loss": f"{history.train_loss[-1]:.3f}"}
            if x_test is not None:
                test_loss, test_acc, _ = evaluate(model, x_test, y_test)
                history.test_loss.append(test_loss)
                history.test_accuracy.append(test_acc)
                postfix["test_acc"] = f"{test_acc:.3f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
    return history


# ----------------------------------------------------------------------------- looking inside
@torch.no_grad()
def first_involution_kernels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The kernels the model's first :class:`Involution` generates for ``x``: ``(B, G, K, K, H', W')``.

    Runs ``model`` in eval mode with a forward pre-hook that records the layer's input, then
    calls that layer with ``return_kernels=True`` on it.
    """
    layer = next((m for m in model.modules() if isinstance(m, Involution)), None)
    if layer is None:
        raise ValueError(f"model ({type(model).__name__}) contains no Involution layer")
    captured: List[torch.Tensor] = []

    def record_input(module: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> None:
        captured.append(inputs[0])

    with eval_mode(model):
        handle = layer.register_forward_pre_hook(record_input)
        try:
            model(x)
        finally:
            handle.remove()
        _, kernels = layer(captured[0], return_kernels=True)
    return kernels
