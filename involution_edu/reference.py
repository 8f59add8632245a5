r"""NumPy references for involution: explicit loops first, then a vectorized version.

The operator (Li et al., CVPR 2021, Eq. 4), for a sample ``b``, channel ``c`` and output
position ``(i, j)``:

.. math::

    Y_{b,c,i,j} = \sum_{u=0}^{K-1} \sum_{v=0}^{K-1}
        \mathcal{H}_{b,\,g(c),\,u,\,v,\,i,\,j}\;
        X_{b,\,c,\,i s + u d - p,\; j s + v d - p}

with stride ``s``, dilation ``d``, zero padding ``p`` and ``g(c) = c // (C // G)``.

Shapes::

    x       : (B, C, H, W)
    kernels : (B, G, K, K, H', W')
    result  : (B, C, H', W')

:func:`involution_loops` is the oracle every other implementation in this package is
tested against. It is slow on purpose: one Python loop per index, so each line can be
read against the formula above.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .shapes import check_involution_args

__all__ = ["involution_loops", "involution_numpy"]


def _as_float_array(name: str, value: object) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(value).__name__}")
    if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers (a float or int dtype), got dtype {value.dtype}")
    return value


def involution_loops(
    x: np.ndarray,
    kernels: np.ndarray,
    stride: int = 1,
    padding: Optional[int] = None,
    dilation: int = 1,
) -> np.ndarray:
    """Involution written as explicit loops: the reference implementation.

    Args:
        x: input, shape ``(B, C, H, W)``.
        kernels: one ``K x K`` kernel per sample, group and output position,
            shape ``(B, G, K, K, H', W')``; ``C`` must be divisible by ``G``.
        stride: step ``s`` between output positions.
        padding: zeros ``p`` on every side; ``None`` means ``dilation * (K - 1) // 2``.
        dilation: spacing ``d`` between kernel taps.

    Returns:
        ``y`` of shape ``(B, C, H', W')`` with
        ``y[b, c, i, j] = sum_{u, v} kernels[b, c // (C // G), u, v, i, j]
        * x[b, c, i*s + u*d - p, j*s + v*d - p]`` (zero outside ``x``).

    Padded taps are not skipped: the kernel value multiplies the padding's zero, so an infinite
    or NaN kernel value on a padded tap makes that output NaN (``inf * 0``), exactly as the
    paper's unfold formulation and every backend of :func:`involution_edu.functional.involution`.
    """
    x = _as_float_array("x", x)
    kernels = _as_float_array("kernels", kernels)
    stride, padding, dilation, out_h, out_w = check_involution_args(
        x.shape, kernels.shape, stride, padding, dilation
    )
    batch, channels, height, width = x.shape
    groups, kernel_size = kernels.shape[1], kernels.shape[2]
    channels_per_group = channels // groups

    # Zero padding, written out: every one of the K x K taps multiplies a pixel, a padding zero
    # included, as in the paper's unfold code (so an inf or NaN kernel value on a padded tap gives
    # NaN, in every backend of this package).
    x_padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    y = np.zeros((batch, channels, out_h, out_w), dtype=np.result_type(x, kernels, np.float32))
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 = NaN is the intended result
        for b in range(batch):
            for c in range(channels):
                g = c // channels_per_group  # contiguous channel blocks share one kernel
                for i in range(out_h):
                    for j in range(out_w):
                        total = 0.0
                        for u in range(kernel_size):
                            for v in range(kernel_size):
                                row = i * stride + u * dilation - padding  # in x's coordinates
                                col = j * stride + v * dilation - padding
                                total += kernels[b, g, u, v, i, j] * x_padded[b, c, row + padding, col + padding]
                        y[b, c, i, j] = total
    return y


def involution_numpy(
    x: np.ndarray,
    kernels: np.ndarray,
    stride: int = 1,
    padding: Optional[int] = None,
    dilation: int = 1,
) -> np.ndarray:
    """Involution without a Python loop over positions: sliding windows + ``einsum``.

    Same arguments, shapes and result as :func:`involution_loops`.

    ``sliding_window_view`` gives every window of the padded input as a view (no copy)
    of shape ``(B, C, H'', W'', K_span, K_span)``; stepping by ``stride`` over positions
    and by ``dilation`` over the taps selects exactly the pixels of the formula. The
    ``einsum`` then multiplies each window by the kernel of its position and group and
    sums over the taps.
    """
    x = _as_float_array("x", x)
    kernels = _as_float_array("kernels", kernels)
    stride, padding, dilation, out_h, out_w = check_involution_args(
        x.shape, kernels.shape, stride, padding, dilation
    )
    batch, channels = x.shape[:2]
    groups, kernel_size = kernels.shape[1], kernels.shape[2]
    span = dilation * (kernel_size - 1) + 1

    x_padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = np.lib.stride_tricks.sliding_window_view(x_padded, (span, span), axis=(2, 3))
    # windows: (B, C, Hp - span + 1, Wp - span + 1, span, span) -> keep strided positions, dilated taps
    windows = windows[:, :, : (out_h - 1) * stride + 1 : stride, : (out_w - 1) * stride + 1 : stride, ::dilation, ::dilation]
    windows = windows.reshape(batch, groups, channels // groups, out_h, out_w, kernel_size, kernel_size)
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 = NaN on padded taps, as in the loops
        y = np.einsum("bgnijuv,bguvij->bgnij", windows, kernels, optimize=True)
    return y.reshape(batch, channels, out_h, out_w).astype(np.result_type(x, kernels, np.float32), copy=False)
