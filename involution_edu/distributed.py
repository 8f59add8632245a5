"""Distributed data-parallel training of RedNet: ``DistributedDataParallel`` + synchronised BatchNorm.

Each process holds a full copy of the network and a slice of every batch.
:class:`torch.nn.parallel.DistributedDataParallel` (DDP) averages the parameter gradients over
the processes after each backward pass, so every copy takes the same optimizer step.
BatchNorm needs one more thing: in training mode it normalises with the statistics of the
batch, and each process only sees its slice. :class:`SyncBatchNorm` computes the mean and
variance over the *whole* batch (all processes) with two all-reduces in the forward pass and
one in the backward pass, so ``world_size`` processes on ``B / world_size`` images each compute
what one process computes on ``B`` images, to float32 rounding.

PyTorch's :class:`torch.nn.SyncBatchNorm` runs on GPUs only (its forward refuses CPU tensors,
and DDP refuses CPU modules that hold one); :class:`SyncBatchNorm` here does the same with
:mod:`torch.distributed` collectives, so it runs on the CPU (``gloo``) as well as on GPUs. Same
buffers and state_dict names as ``BatchNorm2d``, so RedNet checkpoints load into it and back.

Run the example on one machine with 2 processes, or on several machines (see the README,
"Distributed training")::

    torchrun --nproc-per-node 2 -m involution_edu.distributed --steps 5 --size 64
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m involution_edu.distributed --depth 50 --batch 64

``--batch`` is the global batch; each process takes ``batch / world_size`` of it.
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm", "setup", "train", "main"]


def _all_reduce(tensor: torch.Tensor, group) -> torch.Tensor:
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor


class _SyncBatchNormCPU(torch.autograd.Function):
    """Batch norm over the union of every process's batch. ``x: (B_local, C, ...)`` -> same shape.

    Forward: all-reduce the per-channel element count and sum (-> global mean), then the sum of
    squared deviations (-> global variance; two passes, as accurate as one process's BN).
    Backward: all-reduce ``sum(g)`` and ``sum(g * x_hat)`` per channel; the input gradient uses
    those global sums, the weight and bias gradients stay local (DDP averages them).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, group):
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64, device=x.device)
        stats = torch.cat([x.sum(dims, dtype=torch.float64), count])
        stats = _all_reduce(stats, group)
        count = stats[-1]
        mean = (stats[:-1] / count).to(x.dtype)
        centred = x - mean.view(shape)
        squares = _all_reduce(centred.square().sum(dims, dtype=torch.float64), group)
        var = squares / count
        invstd = torch.rsqrt(var + eps).to(x.dtype)
        if running_mean is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
                unbiased = var * (count / (count - 1)) if count > 1 else var
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        x_hat = centred * invstd.view(shape)
        out = x_hat * weight.view(shape) + bias.view(shape) if weight is not None else x_hat
        ctx.save_for_backward(x_hat, weight, invstd)
        ctx.count, ctx.group, ctx.dims, ctx.shape = count, group, dims, shape
        return out

    @staticmethod
    def backward(ctx, grad):
        x_hat, weight, invstd = ctx.saved_tensors
        dims, shape = ctx.dims, ctx.shape
        sum_g = grad.sum(dims)
        sum_gx = (grad * x_hat).sum(dims)
        grad_weight = sum_gx if weight is not None else None
        grad_bias = sum_g.clone() if weight is not None else None
        sums = _all_reduce(torch.cat([sum_g, sum_gx]).to(torch.float64), ctx.group)
        channels = sum_g.shape[0]
        mean_g = (sums[:channels] / ctx.count).to(grad.dtype)
        mean_gx = (sums[channels:] / ctx.count).to(grad.dtype)
        scale = invstd if weight is None else invstd * weight
        grad_x = (grad - mean_g.view(shape) - x_hat * mean_gx.view(shape)) * scale.view(shape)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the whole distributed batch, on the CPU (``gloo``) as on GPUs (NCCL).

    In training mode, with a process group of more than one process initialised, it normalises
    with the statistics of the union of every process's batch (:class:`_SyncBatchNormCPU`,
    written with :func:`torch.distributed.all_reduce`, so any backend and device) and updates the
    running statistics with them, as :class:`torch.nn.SyncBatchNorm` does. Otherwise (eval mode,
    one process, no process group) it is an ordinary BatchNorm. Same parameters, buffers and
    state_dict names as ``BatchNorm2d``.

    It is not a subclass of ``nn.SyncBatchNorm``: that one refuses CPU tensors, and
    ``DistributedDataParallel`` refuses CPU modules holding one.
    Shapes: ``x: (B_local, C, ...) -> (B_local, C, ...)``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group=None, device=None, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (B, C, ...), got {input.dim()}D input")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        group = self.process_group or (dist.group.WORLD if dist.is_available() and dist.is_initialized() else None)
        if not (self.training and group is not None and dist.get_world_size(group) > 1):
            return super().forward(input)
        self._check_input_dim(input)
        momentum = 0.0 if self.momentum is None else self.momentum
        running_mean, running_var = (self.running_mean, self.running_var) if self.track_running_stats else (None, None)
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        return _SyncBatchNormCPU.apply(input, self.weight, self.bias, running_mean, running_var, self.eps, momentum, group)


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """Every ``BatchNorm*d`` of ``module`` replaced by :class:`SyncBatchNorm`, weights and buffers kept.

    Like :meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm`; returns the converted module
    (``module`` itself, changed in place, unless ``module`` is a BatchNorm).
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        converted = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats, process_group)
        if module.affine:
            with torch.no_grad():
                converted.weight = module.weight
                converted.bias = module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in list(module.named_children()):
        module.add_module(name, convert_sync_batchnorm(child, process_group))
    return module


def setup(backend: Optional[str] = None) -> torch.device:
    """Join the process group that ``torchrun`` describes (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``...) and return this process's device: ``cuda:LOCAL_RANK`` with NCCL when
    GPUs exist, else the CPU with ``gloo``."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    return device


def train(depth: int = 26, steps: int = 5, batch: int = 16, size: int = 64, num_classes: int = 10,
          lr: float = 0.05, seed: int = 0, device: Optional[torch.device] = None) -> list:
    """Train RedNet-``depth`` with DDP for ``steps`` SGD steps on seeded random images; return the
    global mean losses. Every process must call it; ``batch`` is the global batch."""
    from .rednet import rednet

    device = device or torch.device("cpu")
    rank, world = dist.get_rank(), dist.get_world_size()
    if batch % world:
        raise ValueError(f"batch={batch} must be divisible by the number of processes ({world})")
    torch.manual_seed(seed)  # the same initial weights in every process (DDP also broadcasts rank 0's)
    model = convert_sync_batchnorm(rednet(depth, num_classes)).to(device)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed + 1)
    losses = []
    local = batch // world
    for _ in range(steps):
        images = torch.randn(batch, 3, size, size, generator=generator)
        labels = torch.randint(0, num_classes, (batch,), generator=generator)
        mine = slice(rank * local, (rank + 1) * local)
        loss = F.cross_entropy(ddp(images[mine].to(device)), labels[mine].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / world)
    return losses


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``torchrun ... -m involution_edu.distributed [--depth 26] [--steps 5] [--batch 16] [--size 64]``."""
    parser = argparse.ArgumentParser(prog="python -m involution_edu.distributed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=26, choices=(26, 38, 50, 101, 152))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16, help="global batch size (divided among the processes)")
    parser.add_argument("--size", type=int, default=64, help="image size")
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args(argv)
    if "RANK" not in os.environ:
        parser.error("start it with torchrun, e.g. torchrun --nproc-per-node 2 -m involution_edu.distributed")
    device = setup()
    try:
        losses = train(args.depth, args.steps, args.batch, args.size, args.classes, device=device)
        if dist.get_rank() == 0:
            print(f"world size {dist.get_world_size()}, device {device}: losses " + " ".join(f"{v:.4f}" for v in losses))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
