"""Offline data for the course: nothing here downloads anything.

* :func:`load_photo` — a real photograph bundled with scikit-learn (``china.jpg`` or
  ``flower.jpg``), as a float tensor ``(1, 3, H, W)`` in ``[0, 1]``.
* :func:`load_digits_split` — scikit-learn's bundled 8x8 handwritten digits (1,797 images),
  as tensors, split into train and test sets with a fixed seed.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["load_photo", "load_digits_split"]

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
