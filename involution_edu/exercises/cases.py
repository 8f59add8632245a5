"""Random inputs shared by the checkers that run an involution on a table of geometries.

The checkers of notebooks 02 (loops), 03 (vectorize) and 08 (performance) all need the same
thing: a seeded input ``x`` and kernels whose spatial size matches the output of that geometry.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..shapes import default_padding, output_size

__all__ = ["random_involution_inputs"]


def random_involution_inputs(seed: int, batch: int, channels: int, height: int, width: int, kernel_size: int,
                             stride: int, padding: Optional[int], dilation: int,
                             groups: int) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded standard-normal float64 ``x (B, C, H, W)`` and ``kernels (B, G, K, K, H', W')``.

    ``H'`` and ``W'`` are :func:`~involution_edu.shapes.output_size` of the geometry, with
    ``padding=None`` meaning the default ``dilation * (K - 1) // 2``. ``x`` is drawn first, then
    ``kernels``, from ``np.random.default_rng(seed)``, so a seed always gives the same pair.
    """
    rng = np.random.default_rng(seed)
    pad = default_padding(kernel_size, dilation) if padding is None else padding
    out_h = output_size(height, kernel_size, stride, pad, dilation)
    out_w = output_size(width, kernel_size, stride, pad, dilation)
    x = rng.standard_normal((batch, channels, height, width))
    kernels = rng.standard_normal((batch, groups, kernel_size, kernel_size, out_h, out_w))
    return x, kernels
