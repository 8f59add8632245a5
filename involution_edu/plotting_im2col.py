"""The im2col picture of notebook 03: what ``F.unfold`` copies, and where each copy goes.

One figure, two panels. On the left, every channel of a small input with its zero padding, one
output position's ``K x K`` window outlined on each channel. On the right, the unfolded matrix
``(C*K*K, H'*W')`` that ``F.unfold`` returns for sample 0: the window's values reappear as one
column (outlined), channel-major from top to bottom, taps in reading order. Matplotlib only.
"""

from __future__ import annotations

from typing import Optional, Tuple

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle

__all__ = ["plot_im2col"]


def plot_im2col(x: torch.Tensor, kernel_size: int, position: Tuple[int, int], padding: Optional[int] = None,
                stride: int = 1):
    """Draw ``x`` (sample 0) next to ``F.unfold(x, kernel_size, padding=padding, stride=stride)[0]``.

    Args:
        x: ``(B, C, H, W)`` tensor with small integer values (they are printed in the cells);
            only sample 0 is drawn, with ``C`` at most 4 and ``C*K*K`` at most 36 rows.
        kernel_size: ``K``, odd.
        position: the output position ``(i, j)`` whose window and column are outlined.
        padding: zero padding on each side; ``None`` means ``(K - 1) // 2``.
        stride: the stride of the windows.

    Returns:
        The matplotlib ``Figure`` (end the notebook cell with ``plt.show()``).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise TypeError(f"plot_im2col: x must be a (B, C, H, W) tensor, got {type(x).__name__}")
    channels, height, width = x.shape[1:]
    k = int(kernel_size)
    pad = (k - 1) // 2 if padding is None else int(padding)
    if channels > 4 or channels * k * k > 36:
        raise ValueError(f"plot_im2col: at most 4 channels and 36 rows (C*K*K) fit, got C={channels}, K={k}")
    columns = F.unfold(x[:1].double(), k, padding=pad, stride=stride)[0].numpy()  # (C*K*K, H'*W')
    out_w = (width + 2 * pad - k) // stride + 1
    i, j = position
    column = i * out_w + j
    padded = np.pad(x[0].double().numpy(), ((0, 0), (pad, pad), (pad, pad)))
    vmax = 1.8 * max(float(np.abs(padded).max()), 1.0)  # light colours: the printed values stay readable

    fig = plt.figure(figsize=(9.5, 3.9), layout="constrained")
    grid = fig.add_gridspec(channels, 2, width_ratios=(1.0, 2.6))
    for c in range(channels):
        ax = fig.add_subplot(grid[c, 0])
        ax.imshow(padded[c], cmap="Blues", vmin=0, vmax=vmax)
        for (r, q), value in np.ndenumerate(padded[c]):
            inside = pad <= r < pad + height and pad <= q < pad + width
            ax.text(q, r, f"{value:.0f}" if inside else "0", ha="center", va="center", fontsize=6,
                    color="black" if inside else "0.6")
        ax.add_patch(Rectangle((j * stride - 0.5, i * stride - 0.5), k, k, fill=False, edgecolor="tab:red", lw=2))
        ax.add_patch(Rectangle((pad - 0.5, pad - 0.5), width, height, fill=False, edgecolor="0.3", lw=0.8, ls="--"))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(f"channel {c}", fontsize=8)
        if c == 0:
            ax.set_title(f"x, padded by {pad}: window of ({i}, {j})", fontsize=9)

    ax = fig.add_subplot(grid[:, 1])
    ax.imshow(columns, cmap="Blues", vmin=0, vmax=vmax, aspect="auto")
    for (r, q), value in np.ndenumerate(columns):
        ax.text(q, r, f"{value:.0f}", ha="center", va="center", fontsize=5)
    ax.add_patch(Rectangle((column - 0.5, -0.5), 1, columns.shape[0], fill=False, edgecolor="tab:red", lw=2))
    for c in range(1, channels):
        ax.axhline(c * k * k - 0.5, color="0.3", lw=0.8)
    ax.set_yticks([c * k * k + (k * k - 1) / 2 for c in range(channels)], [f"channel {c}" for c in range(channels)])
    ax.set_xticks(range(0, columns.shape[1], max(1, out_w)))
    ax.set_xlabel(f"column = output position i*W' + j  (W' = {out_w}); the outlined one is {column}")
    ax.set_title(f"F.unfold(x, {k}, padding={pad}): ({columns.shape[0]}, {columns.shape[1]}) = "
                 f"(C*K*K, H'*W'); rows c*K*K + u*K + v", fontsize=9)
    return fig
