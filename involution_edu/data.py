"""Offline data for the course: nothing here downloads anything.

* :func:`load_photo` — a real photograph bundled with scikit-learn (``china.jpg`` or
  ``flower.jpg``), as a float tensor ``(1, 3, H, W)`` in ``[0, 1]``.
* :func:`load_digits_split` — scikit-learn's bundled 8x8 handwritten digits (1,797 images),
  as tensors, split into train and test sets with a fixed seed.
* :func:`bilateral_kernels` and :func:`bilateral_filter` — the bilateral filter, an
  edge-preserving smoothing whose kernel is computed from the image itself: a training target
  for notebook 04, where an involution layer learns to imitate it.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["load_photo", "load_digits_split", "bilateral_kernels", "bilateral_filter"]

PHOTOS = ("china.jpg", "flower.jpg")


def load_photo(name: str = "china.jpg", size: Optional[int] = 128) -> torch.Tensor:
    """A photograph shipped with scikit-learn, as ``(1, 3, H, W)`` float32 in ``[0, 1]``.

    Args:
        name: ``"china.jpg"`` or ``"flower.jpg"``.
        size: if given, the shorter side is resized to ``size`` pixels (bilinear, antialiased)
            and the longer side is centre-cropped to ``size`` too, giving a square image.
    """
    if name not in PHOTOS:
        raise ValueError(f"name must be one of {PHOTOS}, got {name!r}")
    from sklearn.datasets import load_sample_image

    image = torch.from_numpy(np.array(load_sample_image(name), copy=True)).permute(2, 0, 1).float() / 255.0
    image = image.unsqueeze(0)  # (1, 3, H, W)
    if size is not None:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer or None, got {size!r}")
        height, width = image.shape[-2:]
        scale = size / min(height, width)
        new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
        image = F.interpolate(image, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        image = image[..., top : top + size, left : left + size].clamp(0.0, 1.0).contiguous()
    return image


def load_digits_split(
    test_fraction: float = 0.25, seed: int = 0, upsample: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's handwritten digits as ``(x_train, y_train, x_test, y_test)``.

    Images are ``(N, 1, 8, 8)`` float32 scaled to ``[0, 1]`` (or ``(N, 1, upsample, upsample)``
    if ``upsample`` is given, bilinear); labels are ``(N,)`` int64 in ``0..9``. The split is a
    fixed random permutation drawn with ``seed``, stratified by class so each class keeps
    the same share in both sets.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    if upsample is not None:
        images = F.interpolate(images, size=(upsample, upsample), mode="bilinear", align_corners=False)
    rng = np.random.default_rng(seed)
    test_idx, train_idx = [], []
    for cls in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == cls))
        n_test = int(round(len(idx) * test_fraction))
        test_idx.extend(idx[:n_test])
        train_idx.extend(idx[n_test:])
    train_idx = torch.from_numpy(rng.permutation(np.array(train_idx)))
    test_idx = torch.from_numpy(np.sort(np.array(test_idx)))
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


def _check_bilateral_args(image: torch.Tensor, kernel_size: int, sigma_space: float, sigma_range: float) -> None:
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or not image.is_floating_point():
        got = f"{image.dim()}-D {image.dtype}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a floating-point tensor (B, C, H, W), got {got}")
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
    for name, value in (("sigma_space", sigma_space), ("sigma_range", sigma_range)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")


def bilateral_kernels(
    image: torch.Tensor, kernel_size: int = 7, sigma_space: float = 2.5, sigma_range: float = 0.15
) -> torch.Tensor:
    """The bilateral filter's kernels, one per pixel, in the involution layout ``(B, 1, K, K, H, W)``.

    The weight of tap ``(u, v)`` at pixel ``(i, j)``, with offsets ``du = u - K//2``, ``dv = v - K//2``
    and the neighbour ``n = (i + du, j + dv)``::

        w = exp(-(du^2 + dv^2) / (2 sigma_space^2)) * exp(-|I[n] - I[i, j]|^2 / (2 sigma_range^2))

    where ``|.|^2`` sums the squared differences over the channels. Taps outside the image get
    weight 0, and the weights of each pixel are divided by their sum (so they add up to 1). All
    channels share the kernel: the bilateral filter is an involution with one group whose kernels
    come from a fixed formula instead of a learned generator.

    Args:
        image: ``(B, C, H, W)``, floating point (e.g. a grey photo ``(1, 1, H, W)`` in ``[0, 1]``).
        kernel_size: ``K``, odd.
        sigma_space: width of the spatial Gaussian, in pixels.
        sigma_range: width of the range (intensity) Gaussian, in the image's units.

    Returns:
        ``(B, 1, K, K, H, W)``, non-negative, summing to 1 over the ``K x K`` taps of each pixel.
    """
    _check_bilateral_args(image, kernel_size, sigma_space, sigma_range)
    batch, channels, height, width = image.shape
    k, half = kernel_size, kernel_size // 2
    windows = F.unfold(image, k, padding=half).view(batch, channels, k * k, height, width)  # neighbours I[n]
    inside = F.unfold(torch.ones_like(image[:, :1]), k, padding=half).view(batch, k * k, height, width)
    offsets = torch.arange(k, dtype=image.dtype, device=image.device) - half
    distance2 = (offsets[:, None] ** 2 + offsets[None, :] ** 2).reshape(k * k, 1, 1)  # du^2 + dv^2, row-major taps
    range2 = (windows - image[:, :, None]).pow(2).sum(dim=1)  # (B, K*K, H, W)
    weights = torch.exp(-distance2 / (2 * sigma_space**2) - range2 / (2 * sigma_range**2)) * inside
    weights = weights / weights.sum(dim=1, keepdim=True)
    return weights.view(batch, 1, k, k, height, width)


def bilateral_filter(
    image: torch.Tensor, kernel_size: int = 7, sigma_space: float = 2.5, sigma_range: float = 0.15
) -> torch.Tensor:
    """Apply the bilateral filter: ``image (B, C, H, W) -> (B, C, H, W)``, each output pixel the
    weighted mean of its ``K x K`` neighbourhood with the weights of :func:`bilateral_kernels`."""
    kernels = bilateral_kernels(image, kernel_size, sigma_space, sigma_range)  # (B, 1, K, K, H, W)
    batch, channels, height, width = image.shape
    k = kernel_size
    windows = F.unfold(image, k, padding=k // 2).view(batch, channels, k * k, height, width)
    return (windows * kernels.view(batch, 1, k * k, height, width)).sum(dim=2)
