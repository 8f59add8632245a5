"""Shape arithmetic and argument checks shared by every involution implementation.

This is the bottom layer of the library: it knows nothing about NumPy or PyTorch
beyond "an object with a ``.shape``". Every other module computes output sizes with
:func:`output_size` and validates its arguments with :func:`check_involution_args`,
so an error message reads the same whichever implementation raised it.

Layout conventions used throughout the course::

    x        : (B, C, H, W)              input feature map
    kernels  : (B, G, K, K, H', W')      one K x K kernel per (sample, group, output position)
    output   : (B, C, H', W')            channel c uses the kernels of group c // (C // G)
"""

from __future__ import annotations

import numbers
from typing import Sequence, Tuple

__all__ = [
    "output_size",
    "default_padding",
    "check_positive_int",
    "check_kernel_size",
    "check_involution_args",
    "group_of_channel",
    "MAX_SIZE",
    "MAX_ELEMENTS",
]

MAX_SIZE = 2**31 - 1
"""The largest size, stride, padding or dilation accepted (and the largest dilated kernel span
``dilation * (K - 1) + 1`` and padded side ``H + 2 * padding``): far beyond any real image, and
small enough that no product of sizes in any backend can overflow a 64-bit integer."""

MAX_ELEMENTS = 2**40
"""The largest number of elements of a padded input plane ``C * (H + 2p) * (W + 2p)`` (per
sample) or of the output or kernels tensor: 4 TiB of float32, far beyond any real use."""


def _is_int(value: object) -> bool:
    """True for Python/NumPy integers, False for bools, floats and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_bounded(name: str, value: int) -> int:
    if value > MAX_SIZE:
        raise ValueError(f"{name} must be at most {MAX_SIZE} (2**31 - 1), got {value}")
    return value


def _check_shape(name: str, shape: object) -> Tuple[int, ...]:
    """A shape as a tuple of ints, each in [0, MAX_SIZE] (a ``torch.Size`` or a sequence of ints)."""
    try:
        sizes = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} shape must be a sequence of integers, got {shape!r}") from None
    result = []
    for size in sizes:
        if isinstance(size, bool) or (isinstance(size, numbers.Real) and not isinstance(size, numbers.Integral)):
            raise TypeError(f"{name} shape must hold integers, got {size!r} in {sizes}")
        try:
            size = int(size)  # ints, NumPy ints, torch.SymInt
        except (TypeError, ValueError):
            raise TypeError(f"{name} shape must hold integers, got {size!r} in {sizes}") from None
        if not 0 <= size <= MAX_SIZE:
            raise ValueError(f"{name} sizes must be between 0 and {MAX_SIZE}, got {size} in shape {sizes}")
        result.append(size)
    return tuple(result)


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` as an ``int`` if it is a positive integer, else raise.

    Raises:
        TypeError: ``value`` is not an integer (floats and bools are refused).
        ValueError: ``value`` is an integer below 1.
    """
    if not _is_int(value):
        raise TypeError(f"{name} must be a positive integer, got {value!r} of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value}")
    return int(value)


def check_non_negative_int(name: str, value: object) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 0, else raise TypeError/ValueError."""
    if not _is_int(value):
        raise TypeError(f"{name} must be a non-negative integer, got {value!r} of type {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer (>= 0), got {value}")
    return int(value)


def check_kernel_size(kernel_size: object, *, need_odd: bool = True) -> int:
    """Validate a kernel size: a positive integer, odd when ``need_odd`` (for "same" padding)."""
    k = check_positive_int("kernel_size", kernel_size)
    if need_odd and k % 2 == 0:
        raise ValueError(
            f"kernel_size must be odd so that the window has a centre pixel and the default "
            f"'same' padding dilation*(K-1)//2 is symmetric, got {k}"
        )
    return k


def default_padding(kernel_size: int, dilation: int = 1) -> int:
    """The "same" padding ``dilation * (K - 1) // 2``: this library's default.

    The paper's code has no dilation and pads ``(K - 1) // 2``; this extends that padding to
    dilated windows (equal to it when ``dilation == 1``).

    With stride 1 and odd ``K`` it keeps ``H' = H`` and ``W' = W``.
    """
    return dilation * (kernel_size - 1) // 2


def output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Number of window positions along one axis (the same formula as ``nn.Unfold``/``nn.Conv2d``).

    ``out = floor((size + 2*padding - dilation*(kernel_size - 1) - 1) / stride) + 1``

    Args:
        size: input length along the axis (H or W).
        kernel_size: K.
        stride: step between neighbouring windows.
        padding: zeros added on each side.
        dilation: spacing between the taps of the kernel.

    Returns:
        The output length (H' or W'); may be <= 0 when the padded input is smaller than the
        dilated window, which :func:`check_involution_args` reports as an error.
    """
    span = dilation * (kernel_size - 1) + 1
    return (size + 2 * padding - span) // stride + 1


def check_involution_args(
    x_shape: Sequence[int],
    kernels_shape: Sequence[int],
    stride: object = 1,
    padding: object = None,
    dilation: object = 1,
) -> Tuple[int, int, int, int, int]:
    """Validate the arguments of an involution and return ``(stride, padding, dilation, H', W')``.

    Args:
        x_shape: shape of ``x``, must be ``(B, C, H, W)``.
        kernels_shape: shape of ``kernels``, must be ``(B, G, K, K, H', W')`` with ``C % G == 0``.
        stride, padding, dilation: as in :func:`output_size`; ``padding=None`` means the default
            ``dilation * (K - 1) // 2``, which needs an odd ``K``.

    Raises:
        ValueError / TypeError naming the argument, what it got and what it needs. Integers must be
        Python or NumPy integers (not bools or floats); every size, stride, padding and dilation is
        at most :data:`MAX_SIZE` and the padded input, output and kernels at most
        :data:`MAX_ELEMENTS` elements, so that no backend's size arithmetic can overflow and
        nothing is truncated on its way to compiled code.
    """
    x_shape = _check_shape("x", x_shape)
    kernels_shape = _check_shape("kernels", kernels_shape)
    if len(x_shape) != 4:
        raise ValueError(f"x must be 4-D (B, C, H, W), got {len(x_shape)}-D with shape {x_shape}")
    if len(kernels_shape) != 6:
        raise ValueError(
            f"kernels must be 6-D (B, G, K, K, H', W'), got {len(kernels_shape)}-D with shape {kernels_shape}"
        )
    batch, channels, height, width = x_shape
    k_batch, groups, k_rows, k_cols, k_height, k_width = kernels_shape
    if k_rows != k_cols:
        raise ValueError(
            f"kernels must hold square K x K kernels in dims 2 and 3, got {k_rows} x {k_cols} "
            f"(kernels shape {kernels_shape})"
        )
    kernel_size = k_rows
    if kernel_size < 1:
        raise ValueError(
            f"kernels must have a kernel size K >= 1 in dims 2 and 3, got K={kernel_size} "
            f"(kernels shape {kernels_shape})"
        )
    stride = _check_bounded("stride", check_positive_int("stride", stride))
    dilation = _check_bounded("dilation", check_positive_int("dilation", dilation))
    span = dilation * (kernel_size - 1) + 1
    if span > MAX_SIZE:
        raise ValueError(
            f"dilation * (kernel_size - 1) + 1 = {dilation} * {kernel_size - 1} + 1 = {span} is too large: "
            f"the dilated kernel must span at most {MAX_SIZE} pixels"
        )
    if padding is None:
        if kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd when padding is left to its default dilation*(K-1)//2, "
                f"got K={kernel_size} from kernels shape {kernels_shape}; pass padding explicitly"
            )
        padding = default_padding(kernel_size, dilation)
    else:
        padding = _check_bounded("padding", check_non_negative_int("padding", padding))
    for name, size in (("height", height), ("width", width)):
        if size + 2 * padding > MAX_SIZE:
            raise ValueError(
                f"x's {name} plus twice the padding, {size} + 2 * {padding}, is too large: at most {MAX_SIZE} allowed"
            )
    plane = channels * (height + 2 * padding) * (width + 2 * padding)
    if plane > MAX_ELEMENTS:
        raise ValueError(
            f"the zero-padded input would hold {plane} elements per sample (C={channels}, "
            f"{height}x{width} with padding={padding}), more than the {MAX_ELEMENTS} allowed"
        )
    if k_batch != batch:
        raise ValueError(f"kernels batch size must equal x's batch size {batch}, got {k_batch}")
    if groups < 1 or channels % groups != 0:
        raise ValueError(
            f"x has C={channels} channels, which must be divisible by the number of groups "
            f"G={groups} (kernels.shape[1])"
        )
    out_h = output_size(height, kernel_size, stride, padding, dilation)
    out_w = output_size(width, kernel_size, stride, padding, dilation)
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"x of spatial size {height}x{width} is too small for kernel_size={kernel_size}, "
            f"dilation={dilation}, padding={padding}: the output would be {out_h}x{out_w}"
        )
    for name, count in (("output", batch * channels * out_h * out_w),
                        ("kernels", batch * groups * kernel_size * kernel_size * out_h * out_w)):
        if count > MAX_ELEMENTS:
            raise ValueError(f"the {name} would hold {count} elements, more than the {MAX_ELEMENTS} allowed")
    if (k_height, k_width) != (out_h, out_w):
        raise ValueError(
            f"kernels spatial size must be the output size (H', W') = ({out_h}, {out_w}) for x of size "
            f"{height}x{width} with kernel_size={kernel_size}, stride={stride}, padding={padding}, "
            f"dilation={dilation}; got ({k_height}, {k_width})"
        )
    return stride, padding, dilation, out_h, out_w


def group_of_channel(channel: int, channels: int, groups: int) -> int:
    """The group that channel ``c`` belongs to: ``c // (C // G)`` (contiguous blocks, as in the paper)."""
    return channel // (channels // groups)
