"""How fast *could* an involution be? Bytes, FLOPs, arithmetic intensity and the roofline.

The roofline model bounds the speed of a computation by two numbers of the machine:

* the **memory bandwidth** ``beta`` (bytes per second that a large copy achieves), and
* the **compute peak** ``pi`` (FLOP per second that a large matrix product achieves),

and one number of the computation, its **arithmetic intensity** ``I = FLOPs / bytes moved``:
``attainable = min(pi, I * beta)``. When ``I * beta < pi`` the computation is
*memory-bound*: no amount of clever arithmetic makes it faster than reading its inputs and
writing its outputs once.

Counting conventions used here (and in the course notebooks):

* FLOPs count a multiply-add as **2** (the convention of GFLOP/s figures; the paper's
  tables and :mod:`involution_edu.counting` count multiply-adds, i.e. half of this).
* "Bytes moved" is the least traffic any implementation needs: read every input once, write
  every output once. For one involution layer (stride ``s``, padding ``(K - 1) // 2``)::

      x        : B * C * H * W
      kernels  : B * G * K^2 * H' * W'
      out      : B * C * H' * W'           (elements; times dtype_bytes for bytes)

  Its backward reads ``grad_out``, ``x`` and ``kernels`` and writes ``grad_x`` and
  ``grad_kernels``.

The kernels are the point: a convolution's weights are shared by every position, so they
are tiny; an involution's are not, and for ``K = 7`` and 16 channels per group they are
``49 / 16 ~ 3`` times the size of the feature map. Each kernel value is used for only
``C / G`` multiply-adds, so the arithmetic intensity is low.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .shapes import check_kernel_size, check_positive_int, output_size

__all__ = [
    "involution_output_size",
    "involution_bytes",
    "involution_flops",
    "involution_intensity",
    "conv_bytes",
    "conv_flops",
    "conv_intensity",
    "attainable_gflops",
    "measure_copy_bandwidth",
    "measure_matmul_gflops",
    "RooflinePoint",
    "plot_roofline",
]


def _check_layer(batch, channels, height, width, kernel_size, stride, dtype_bytes):
    for name, value in (("batch", batch), ("channels", channels), ("height", height), ("width", width),
                        ("stride", stride), ("dtype_bytes", dtype_bytes)):
        check_positive_int(name, value)
    check_kernel_size(kernel_size)


def involution_output_size(size: int, kernel_size: int, stride: int = 1) -> int:
    """``H'`` for an involution with the default padding ``(K - 1) // 2`` and dilation 1."""
    return output_size(size, kernel_size, stride, (kernel_size - 1) // 2, 1)


def involution_bytes(
    batch: int,
    channels: int,
    height: int,
    width: int,
    kernel_size: int,
    groups: int,
    stride: int = 1,
    dtype_bytes: int = 4,
    backward: bool = False,
) -> int:
    """Least bytes one involution layer must move: read ``x`` and ``kernels``, write ``out``.

    With ``backward=True``: the traffic of the backward pass instead (read ``grad_out``,
    ``x``, ``kernels``; write ``grad_x``, ``grad_kernels``).
    """
    _check_layer(batch, channels, height, width, kernel_size, stride, dtype_bytes)
    check_positive_int("groups", groups)
    out_h, out_w = involution_output_size(height, kernel_size, stride), involution_output_size(width, kernel_size, stride)
    x = batch * channels * height * width
    kernels = batch * groups * kernel_size**2 * out_h * out_w
    out = batch * channels * out_h * out_w
    elements = (out + x + kernels + x + kernels) if backward else (x + kernels + out)
    return elements * dtype_bytes


def involution_flops(batch: int, channels: int, height: int, width: int, kernel_size: int, stride: int = 1,
                     backward: bool = False) -> int:
    """FLOPs of one involution layer (2 per multiply-add): ``2 * B * C * H' * W' * K^2``.

    The backward pass does twice that (one product sum for ``grad_x``, one for ``grad_kernels``).
    """
    _check_layer(batch, channels, height, width, kernel_size, stride, 1)
    out_h, out_w = involution_output_size(height, kernel_size, stride), involution_output_size(width, kernel_size, stride)
    flops = 2 * batch * channels * out_h * out_w * kernel_size**2
    return 2 * flops if backward else flops


def involution_intensity(batch: int, channels: int, height: int, width: int, kernel_size: int, groups: int,
                         stride: int = 1, dtype_bytes: int = 4) -> float:
    """Arithmetic intensity of an involution's forward pass, in FLOPs per byte."""
    return involution_flops(batch, channels, height, width, kernel_size, stride) / involution_bytes(
        batch, channels, height, width, kernel_size, groups, stride, dtype_bytes
    )


def conv_bytes(batch: int, in_channels: int, out_channels: int, height: int, width: int, kernel_size: int,
               stride: int = 1, groups: int = 1, dtype_bytes: int = 4, backward: bool = False) -> int:
    """Least bytes of a ``K x K`` convolution (padding ``(K - 1) // 2``): input, weights, output.

    ``groups = in_channels = out_channels`` is a depthwise convolution. With ``backward=True``
    the backward pass (read ``grad_out``, input, weights; write their gradients).
    """
    _check_layer(batch, in_channels, height, width, kernel_size, stride, dtype_bytes)
    check_positive_int("out_channels", out_channels)
    check_positive_int("groups", groups)
    out_h, out_w = involution_output_size(height, kernel_size, stride), involution_output_size(width, kernel_size, stride)
    x = batch * in_channels * height * width
    weights = out_channels * (in_channels // groups) * kernel_size**2
    out = batch * out_channels * out_h * out_w
    elements = (out + x + weights + x + weights) if backward else (x + weights + out)
    return elements * dtype_bytes


def conv_flops(batch: int, in_channels: int, out_channels: int, height: int, width: int, kernel_size: int,
               stride: int = 1, groups: int = 1, backward: bool = False) -> int:
    """FLOPs of a convolution (2 per multiply-add): ``2 * B * C_out * H' * W' * K^2 * C_in / groups``."""
    _check_layer(batch, in_channels, height, width, kernel_size, stride, 1)
    out_h, out_w = involution_output_size(height, kernel_size, stride), involution_output_size(width, kernel_size, stride)
    flops = 2 * batch * out_channels * out_h * out_w * kernel_size**2 * (in_channels // groups)
    return 2 * flops if backward else flops


def conv_intensity(batch: int, in_channels: int, out_channels: int, height: int, width: int, kernel_size: int,
                   stride: int = 1, groups: int = 1, dtype_bytes: int = 4) -> float:
    """Arithmetic intensity (FLOPs per byte) of a convolution's forward pass."""
    return conv_flops(batch, in_channels, out_channels, height, width, kernel_size, stride, groups) / conv_bytes(
        batch, in_channels, out_channels, height, width, kernel_size, stride, groups, dtype_bytes
    )


def attainable_gflops(intensity: float, bandwidth_gbs: float, peak_gflops: float) -> float:
    """The roofline: ``min(peak, intensity * bandwidth)`` in GFLOP/s (intensity in FLOP/byte, GB/s)."""
    return min(peak_gflops, intensity * bandwidth_gbs)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])


def measure_copy_bandwidth(megabytes: int = 64, repeats: int = 5) -> float:
    """Memory bandwidth in GB/s (1e9 bytes/s) of ``dst.copy_(src)`` on a large float32 tensor.

    A copy reads and writes every byte, so the bytes moved are ``2 * size``. The tensor is
    much larger than the caches, so this is the bandwidth of main memory. Median of ``repeats``.
    """
    check_positive_int("megabytes", megabytes)
    check_positive_int("repeats", repeats)
    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch the pages once
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        seconds.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / _median(seconds) / 1e9


def measure_matmul_gflops(size: int = 1024, repeats: int = 5) -> float:
    """Compute peak in GFLOP/s, as reached by a ``size x size`` float32 matrix product (2 n^3 FLOPs)."""
    check_positive_int("size", size)
    check_positive_int("repeats", repeats)
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=generator), torch.randn(size, size, generator=generator)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / _median(seconds) / 1e9


@dataclass
class RooflinePoint:
    """One measured computation on the roofline plot."""

    label: str
    intensity: float  # FLOP / byte
    gflops: float  # achieved GFLOP/s
    marker: str = "o"


def plot_roofline(ax, points: Sequence[RooflinePoint], bandwidth_gbs: float, peak_gflops: float,
                  title: Optional[str] = None):
    """Draw the roofline ``min(peak, I * bandwidth)`` on log-log axes and the measured points.

    Returns ``ax``; the caller ends the cell with ``plt.show()``.
    """
    intensities = [p.intensity for p in points] + [peak_gflops / bandwidth_gbs]
    low, high = min(intensities) / 4, max(intensities) * 4
    grid = [low * (high / low) ** (k / 200) for k in range(201)]
    ax.plot(grid, [attainable_gflops(i, bandwidth_gbs, peak_gflops) for i in grid], color="black", lw=1.5,
            label=f"roof: {bandwidth_gbs:.0f} GB/s, {peak_gflops:.0f} GFLOP/s")
    ax.axvline(peak_gflops / bandwidth_gbs, color="gray", ls=":", lw=1)
    for point in points:
        ax.scatter([point.intensity], [point.gflops], marker=point.marker, s=40, label=point.label, zorder=3)
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.set_title(title or "Roofline")
    ax.legend(fontsize=7, loc="lower right")
    return ax
