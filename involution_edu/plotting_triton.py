"""Figures of notebook 10: which program handles which pixel, and which memory a kernel's loads touch.

The data come from real launches under Triton's interpreter (the program ids a kernel stored, the
addresses :func:`~involution_edu.exercises.triton.record_accesses` recorded); these helpers only
draw them. Each returns its ``Axes``; the notebook ends the cell with ``plt.show()``.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

__all__ = ["plot_program_grid", "plot_tap_loads", "element_offsets"]


def _colours(n: int):
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def plot_program_grid(program_of_pixel: np.ndarray, block_p: int, axes=None):
    """Left: the output plane of one (sample, group), each pixel coloured by the program (along grid axis 1)
    that stored it, with its flat index ``i * W' + j``. Right: the lanes of every program, the lanes past
    the last pixel greyed out (their mask is off).

    Args:
        program_of_pixel: ``(H', W')`` integers, the ``tl.program_id(1)`` each pixel was stored by.
        block_p: lanes per program (``BLOCK_P``).
    """
    program_of_pixel = np.asarray(program_of_pixel)
    out_h, out_w = program_of_pixel.shape
    n = out_h * out_w
    programs = -(-n // block_p)
    colours = _colours(programs)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9.5, 3.2), layout="constrained",
                               gridspec_kw={"width_ratios": [out_w, block_p * 0.9]})
    left, right = axes
    for i in range(out_h):
        for j in range(out_w):
            program = int(program_of_pixel[i, j])
            left.add_patch(Rectangle((j, i), 1, 1, facecolor=colours[program], edgecolor="white", alpha=0.8))
            left.text(j + 0.5, i + 0.5, str(i * out_w + j), ha="center", va="center", fontsize=7)
    left.set_xlim(0, out_w)
    left.set_ylim(out_h, 0)
    left.set_aspect("equal")
    left.set_xticks(np.arange(out_w) + 0.5, range(out_w))
    left.set_yticks(np.arange(out_h) + 0.5, range(out_h))
    left.set_xlabel("output column j")
    left.set_ylabel("output row i")
    left.set_title(f"one (b, g): {out_h} x {out_w} pixels, flat index")
    for program in range(programs):
        for lane in range(block_p):
            pixel = program * block_p + lane
            live = pixel < n
            right.add_patch(Rectangle((lane, program), 1, 1, facecolor=colours[program] if live else "0.85",
                                      edgecolor="white", alpha=0.8, hatch=None if live else "//"))
            if live:
                right.text(lane + 0.5, program + 0.5, str(pixel), ha="center", va="center", fontsize=6)
    right.set_xlim(0, block_p)
    right.set_ylim(programs, 0)
    right.set_aspect("equal")
    right.set_xticks([0.5, block_p - 0.5], ["0", str(block_p - 1)])
    right.set_yticks(np.arange(programs) + 0.5, [f"program_id(1)={p}" for p in range(programs)])
    right.set_xlabel("lane (tl.arange(0, BLOCK_P))")
    right.set_title(f"BLOCK_P = {block_p}: grey lanes are masked off")
    return axes


def element_offsets(events: Sequence[Tuple], tensor, kind: str = "load", program: Tuple[int, ...] = (0, 0, 0),
                    ndim: Optional[int] = None, line_contains: str = "") -> List[np.ndarray]:
    """The element offsets into ``tensor`` of the active lanes of each recorded access, in order.

    ``events`` as returned by ``record_accesses``; only accesses of ``kind`` made by ``program`` whose
    block has ``ndim`` axes (any, if ``None``) and whose source line contains ``line_contains`` are kept, and
    of those only the lanes that point inside ``tensor``."""
    start, size, numel = int(tensor.data_ptr()), tensor.element_size(), tensor.numel()
    found = []
    for event_kind, event_program, addresses, mask, line in events:
        if event_kind != kind or tuple(event_program) != tuple(program) or line_contains not in line:
            continue
        if ndim is not None and addresses.ndim != ndim:
            continue
        offsets = (addresses[mask].astype(np.int64) - start) // size
        found.append(np.unique(offsets[(offsets >= 0) & (offsets < numel)]))
    return found


def plot_tap_loads(reads: Dict[Tuple[int, int], np.ndarray], out_shape: Tuple[int, int], kernel_size: int,
                   title: str = "", axes=None):
    """A ``K x K`` grid of small panels, one per tap ``(u, v)``: the output plane, with the pixels whose
    value that tap loaded (active lanes only) filled in.

    Args:
        reads: ``(u, v) -> flat output offsets`` loaded at that tap (within one channel plane).
        out_shape: ``(H', W')``.
    """
    out_h, out_w = out_shape
    if axes is None:
        _, axes = plt.subplots(kernel_size, kernel_size, figsize=(1.3 * kernel_size + 1.2, 1.3 * kernel_size + 0.4),
                               layout="constrained", squeeze=False)
    for u in range(kernel_size):
        for v in range(kernel_size):
            ax = axes[u][v]
            grid = np.zeros(out_h * out_w)
            offsets = np.asarray(reads.get((u, v), []), dtype=int)
            grid[offsets[(offsets >= 0) & (offsets < grid.size)]] = 1
            ax.imshow(grid.reshape(out_h, out_w), cmap="Blues", vmin=0, vmax=1.3)
            ax.set_xticks(np.arange(-0.5, out_w, 1), minor=True)
            ax.set_yticks(np.arange(-0.5, out_h, 1), minor=True)
            ax.grid(which="minor", color="0.8", linewidth=0.5)
            ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
            ax.set_title(f"tap ({u}, {v}): {len(offsets)}", fontsize=8)
    if title:
        axes[0][0].figure.suptitle(title, fontsize=10)
    return axes
