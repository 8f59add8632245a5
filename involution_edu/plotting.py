"""Plotting helpers for the course notebooks (matplotlib only, small PNG figures).

Each helper draws on a given or new ``Axes``, sets a title and axis labels, and returns the
``Axes``; the notebook ends the cell with ``plt.show()`` so no figure repr is stored.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

__all__ = ["use_course_style"]


def use_course_style(dpi: int = 72) -> None:
    """Small, readable figures: modest dpi, a tidy grid, PNG output."""
    plt.rcParams.update(
        {
            "figure.dpi": dpi,
            "savefig.dpi": dpi,
            "figure.figsize": (6.0, 3.5),
            "axes.grid": False,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "font.size": 9,
        }
    )


def plot_kernels_at_positions(image, kernels, positions, group: int = 0, stride: int = 1, title: str = ""):
    """The photo with lettered markers, then the ``K x K`` kernel that involution applies at each.

    Args:
        image: ``(1, 3, H, W)`` or ``(3, H, W)`` tensor/array in ``[0, 1]``.
        kernels: ``(B, G, K, K, H', W')`` as returned by ``Involution(...)(x, return_kernels=True)``;
            sample 0 and group ``group`` are shown.
        positions: output positions ``(i, j)`` on the ``H' x W'`` grid; the marker is drawn at
            the input pixel ``(i * stride, j * stride)``.
        group, stride: which group's kernels, and the layer's stride (for the markers).
        title: title of the photo panel.

    Returns:
        The array of ``Axes`` (photo first, then one panel per position, sharing one colour
        scale centred on 0: red positive, blue negative).
    """
    import numpy as np

    image = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if image.ndim == 4:
        image = image[0]
    kernels = np.asarray(kernels.detach().cpu() if hasattr(kernels, "detach") else kernels)[0, group]
    chosen = [kernels[:, :, i, j] for i, j in positions]
    limit = max(float(np.abs(k).max()) for k in chosen)
    fig, axes = plt.subplots(
        1, len(positions) + 1, figsize=(min(8.0, 1.7 * (len(positions) + 1) + 0.8), 2.6), layout="constrained"
    )
    axes[0].imshow(np.clip(image.transpose(1, 2, 0), 0.0, 1.0))
    axes[0].set_title(title or "input")
    axes[0].set_xlabel("column")
    axes[0].set_ylabel("row")
    for index, ((i, j), kernel) in enumerate(zip(positions, chosen)):
        letter = chr(ord("A") + index)
        axes[0].plot(j * stride, i * stride, "o", markersize=6, markerfacecolor="none", markeredgecolor="yellow")
        axes[0].annotate(letter, (j * stride, i * stride), xytext=(4, 4), textcoords="offset points", color="yellow")
        shown = axes[index + 1].imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes[index + 1].set_title(f"{letter}: ({i}, {j})")
        axes[index + 1].set_xlabel("v")
        axes[index + 1].set_ylabel("u")
        axes[index + 1].set_xticks([])
        axes[index + 1].set_yticks([])
    fig.colorbar(shown, ax=list(axes[1:]), shrink=0.8, label="kernel weight")
    return axes


__all__.append("plot_kernels_at_positions")


def _kernel_mosaic(tiles, shape, kernel_size: int, gaps):
    """Place ``K x K`` tiles on a NaN canvas. ``tiles``: {(row, col): array}; ``gaps``: (gap_rows, gap_cols) lists.

    Returns the canvas and, per tile, the (top, left) pixel of its upper-left corner.
    """
    import numpy as np

    rows, cols = shape
    row_gaps, col_gaps = gaps
    tops = [r * kernel_size + sum(row_gaps[:r]) for r in range(rows)]
    lefts = [c * kernel_size + sum(col_gaps[:c]) for c in range(cols)]
    canvas = np.full((tops[-1] + kernel_size, lefts[-1] + kernel_size), np.nan)
    corners = {}
    for (r, c), tile in tiles.items():
        canvas[tops[r] : tops[r] + kernel_size, lefts[c] : lefts[c] + kernel_size] = tile
        corners[(r, c)] = (tops[r], lefts[c])
    return canvas, corners


def draw_conv_vs_involution(channels: int = 4, groups: int = 2, positions: int = 3, kernel_size: int = 3,
                            seed: int = 0, axes=None):
    """Where the kernels live: convolution (left) vs involution (right), as grids of small heat maps.

    Left: a ``K x K`` kernel for every (output channel, input channel) pair; the same kernels
    are used at every position. Right: ``G`` kernels at every output position ``(i, j)`` of a
    ``positions x positions`` grid, outlined in the colour of their group; all ``C / G``
    channels of a group share it. Values are random (the point is where kernels live).

    Returns:
        The two ``Axes``.
    """
    import numpy as np
    from matplotlib.patches import Patch, Rectangle

    rng = np.random.default_rng(seed)
    k = kernel_size
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(8, 3.8), gridspec_kw={"width_ratios": [1, 1.5]})
    cmap = plt.get_cmap("RdBu_r").copy()
    cmap.set_bad("white")
    colours = plt.get_cmap("tab10")

    conv_tiles = {(o, c): rng.standard_normal((k, k)) for o in range(channels) for c in range(channels)}
    canvas, corners = _kernel_mosaic(conv_tiles, (channels, channels), k, ([1] * channels, [1] * channels))
    ax = axes[0]
    ax.imshow(canvas, cmap=cmap, vmin=-2.5, vmax=2.5)
    for top, left in corners.values():
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), k, k, fill=False, edgecolor="0.4", linewidth=1))
    centres = [corners[(0, c)][1] + (k - 1) / 2 for c in range(channels)]
    ax.set_xticks(centres, [str(c) for c in range(channels)])
    ax.set_yticks(centres, [str(o) for o in range(channels)])
    ax.set_xlabel("input channel c")
    ax.set_ylabel("output channel o")
    ax.set_title(f"convolution: {channels}x{channels} kernels,\nthe same at every position")

    per_group = channels // groups
    inv_tiles = {(i, j * groups + g): rng.standard_normal((k, k))
                 for i in range(positions) for j in range(positions) for g in range(groups)}
    col_gaps = [1 if (c + 1) % groups else 3 for c in range(positions * groups)]
    canvas, corners = _kernel_mosaic(inv_tiles, (positions, positions * groups), k, ([3] * positions, col_gaps))
    ax = axes[1]
    ax.imshow(canvas, cmap=cmap, vmin=-2.5, vmax=2.5)
    for (i, column), (top, left) in corners.items():
        g = column % groups
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), k, k, fill=False, edgecolor=colours(g), linewidth=2))
    x_centres = [(corners[(0, j * groups)][1] + corners[(0, j * groups + groups - 1)][1] + k - 1) / 2
                 for j in range(positions)]
    y_centres = [corners[(i, 0)][0] + (k - 1) / 2 for i in range(positions)]
    ax.set_xticks(x_centres, [str(j) for j in range(positions)])
    ax.set_yticks(y_centres, [str(i) for i in range(positions)])
    ax.set_xlabel("output column j")
    ax.set_ylabel("output row i")
    ax.set_title(f"involution: {groups} kernels per position,\none per group, different at every (i, j)")
    handles = [Patch(facecolor="none", edgecolor=colours(g), linewidth=2,
                     label=f"group {g}: channels {g * per_group}..{(g + 1) * per_group - 1}")
               for g in range(groups)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return axes


def draw_window(height: int, width: int, kernel, position, stride: int = 1, padding: int = 0,
                dilation: int = 1, axes=None):
    """The pixels one output position reads: padded input (left), kernel (middle), output grid (right).

    Args:
        height, width: input size ``H x W``.
        kernel: the ``K x K`` kernel used at ``position`` (e.g. ``kernels[b, g, :, :, i, j]``).
        position: the output position ``(i, j)``.
        stride, padding, dilation: ``s``, ``p``, ``d``; output ``(i, j)`` reads input pixel
            ``(i*s + u*d - p, j*s + v*d - p)`` for tap ``(u, v)``, a zero when it falls in the padding.

    Returns:
        The three ``Axes``. Input cells: grey = zero padding, white = input pixel, coloured =
        read by this position (the colour is the kernel weight it is multiplied by, the label
        the tap ``u,v``); the dashed square is the window's span ``d(K-1)+1``.
    """
    import numpy as np
    from matplotlib.patches import Rectangle

    from .shapes import output_size

    kernel = np.asarray(kernel.detach().cpu() if hasattr(kernel, "detach") else kernel, dtype=float)
    k = kernel.shape[0]
    i, j = position
    out_h = output_size(height, k, stride, padding, dilation)
    out_w = output_size(width, k, stride, padding, dilation)
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(8, 3.2), gridspec_kw={"width_ratios": [1.4, 1, 1]})
    limit = float(np.abs(kernel).max()) or 1.0
    cmap = plt.get_cmap("RdBu_r")

    def text_colour(value: float) -> str:
        return "white" if abs(value) > 0.6 * limit else "black"

    def draw_grid(ax, rows, cols, first_row, first_col):
        for r in range(rows + 1):
            ax.plot([first_col - 0.5, first_col + cols - 0.5], [first_row + r - 0.5] * 2, color="0.55", linewidth=0.5)
        for c in range(cols + 1):
            ax.plot([first_col + c - 0.5] * 2, [first_row - 0.5, first_row + rows - 0.5], color="0.55", linewidth=0.5)

    ax = axes[0]
    background = np.full((height + 2 * padding, width + 2 * padding), 0.8)
    background[padding : padding + height, padding : padding + width] = 1.0
    ax.imshow(background, cmap="gray", vmin=0, vmax=1,
              extent=(-padding - 0.5, width + padding - 0.5, height + padding - 0.5, -padding - 0.5))
    draw_grid(ax, height + 2 * padding, width + 2 * padding, -padding, -padding)
    ax.add_patch(Rectangle((-0.5, -0.5), width, height, fill=False, edgecolor="black", linewidth=1.5))
    span = dilation * (k - 1) + 1
    top, left = i * stride - padding, j * stride - padding
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), span, span, fill=False, edgecolor="tab:green",
                           linestyle="--", linewidth=1.5))
    for u in range(k):
        for v in range(k):
            row, col = top + u * dilation, left + v * dilation
            ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, facecolor=cmap(0.5 + 0.5 * kernel[u, v] / limit),
                                   edgecolor="black", linewidth=1))
            ax.text(col, row, f"{u},{v}", ha="center", va="center", fontsize=7, color=text_colour(kernel[u, v]))
    ax.set_xticks(range(-padding, width + padding))
    ax.set_yticks(range(-padding, height + padding))
    ax.tick_params(labelsize=7)
    ax.set_xlabel("input column (grey: zero padding)")
    ax.set_ylabel("input row")
    ax.set_title(f"input {height}x{width}, p={padding}, s={stride}, d={dilation}")

    ax = axes[1]
    ax.imshow(kernel, cmap=cmap, vmin=-limit, vmax=limit)
    for u in range(k):
        for v in range(k):
            ax.text(v, u, f"{kernel[u, v]:.2f}", ha="center", va="center", fontsize=8, color=text_colour(kernel[u, v]))
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("tap v")
    ax.set_ylabel("tap u")
    ax.set_title(f"kernel at ({i}, {j}), {k}x{k}")

    ax = axes[2]
    ax.imshow(np.ones((out_h, out_w)), cmap="gray", vmin=0, vmax=1)
    draw_grid(ax, out_h, out_w, 0, 0)
    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="gold", edgecolor="black"))
    ax.set_xticks(range(out_w))
    ax.set_yticks(range(out_h))
    ax.set_xlabel("output column j")
    ax.set_ylabel("output row i")
    ax.set_title(f"output {out_h}x{out_w}: ({i}, {j})")
    return axes


__all__ += ["draw_conv_vs_involution", "draw_window"]


def draw_involution_pipeline(channels: int = 6, groups: int = 2, kernel_size: int = 3, seed: int = 0, ax=None):
    """The involution of one output pixel, left to right, in the spirit of the paper's Fig. 1.

    ``X`` (a ``C x H x W`` stack, pixel ``(i, j)`` in red, its ``K x K`` window dashed) ->
    the feature vector ``X_ij`` (``C`` values, coloured by group) -> ``phi`` (two 1x1 convs)
    -> ``K^2 G`` numbers -> reshaped into ``G`` kernels of ``K x K`` -> each kernel multiplies
    the window of every channel of its group (broadcast over the ``C / G`` channels) -> sum
    over the window -> ``Y_ij`` (``C`` values). Values are random; the figure shows the flow.

    Returns:
        The ``Axes``.
    """
    import numpy as np
    from matplotlib.patches import FancyArrowPatch, Rectangle

    if channels % groups:
        raise ValueError(f"channels must be divisible by groups; got channels={channels}, groups={groups}")
    rng = np.random.default_rng(seed)
    k, per_group = kernel_size, channels // groups
    colours = plt.get_cmap("tab10")
    cmap = plt.get_cmap("RdBu_r")
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 3.4))
    ax.set_xlim(-0.3, 20.6)
    ax.set_ylim(-0.9, 7.3)
    ax.set_aspect("equal")
    ax.axis("off")

    def arrow(x0, x1, y, label=""):
        ax.add_patch(FancyArrowPatch((x0, y), (x1, y), arrowstyle="-|>", mutation_scale=14, color="0.25", lw=1.4))
        if label:
            ax.text((x0 + x1) / 2, y + 0.25, label, ha="center", va="bottom", fontsize=7.5)

    def column(x, y_top, values_colours, cell=0.5):
        for n, colour in enumerate(values_colours):
            ax.add_patch(Rectangle((x, y_top - (n + 1) * cell), cell, cell, facecolor=colour, edgecolor="0.3", lw=0.8))

    def caption(x, text):
        ax.text(x, 0.75, text, ha="center", va="top", fontsize=8)

    # 1. the input stack with the pixel (i, j) and its window
    grid, cell = 6, 0.55
    for layer in (2, 1, 0):
        dx, dy = 0.25 * layer, 0.25 * layer
        for r in range(grid):
            for q in range(grid):
                ax.add_patch(Rectangle((q * cell + dx, (grid - 1 - r) * cell + dy + 1.0), cell, cell,
                                       facecolor="0.93" if layer else "0.97", edgecolor="0.6", lw=0.5))
    pr, pq = 2, 3
    ax.add_patch(Rectangle((pq * cell, (grid - 1 - pr) * cell + 1.0), cell, cell, facecolor="tab:red", alpha=0.8))
    half = k // 2
    ax.add_patch(Rectangle(((pq - half) * cell, (grid - 1 - pr - half) * cell + 1.0), k * cell, k * cell,
                           fill=False, edgecolor="tab:red", lw=1.5, ls="--"))
    caption(1.8, "input X (C x H x W);\npixel (i, j) and\nits K x K window")

    # 2. the feature vector X_ij
    group_colour = [colours(c // per_group) for c in range(channels)]
    x_vec = 5.0
    column(x_vec, 5.0, [(*colour[:3], 0.55) for colour in group_colour])
    arrow(4.0, 4.9, 3.4)
    caption(x_vec + 0.25, "$X_{ij}$\n(C values)")

    # 3. phi -> K^2 G numbers
    arrow(5.7, 8.9, 3.4, "$\\phi$: 1x1 conv,\nBN, ReLU,\n1x1 conv")
    n_values = k * k * groups
    small = min(0.5, 4.8 / n_values)
    values = rng.standard_normal(n_values)
    column(9.1, 3.4 + n_values * small / 2, [cmap(0.5 + 0.2 * v) for v in values], cell=small)
    caption(9.1 + small / 2, "$K^2 G$\nnumbers")

    # 4. reshape into G kernels of K x K
    arrow(9.6, 10.8, 3.4, "re-\nshape")
    tile = 0.4
    kernel_tops = []
    for g in range(groups):
        top = 3.4 + (groups * (k * tile + 0.35)) / 2 - g * (k * tile + 0.35)
        kernel_tops.append(top)
        kernel = values[g * k * k:(g + 1) * k * k].reshape(k, k)
        for u in range(k):
            for v in range(k):
                ax.add_patch(Rectangle((11.0 + v * tile, top - (u + 1) * tile), tile, tile,
                                       facecolor=cmap(0.5 + 0.2 * kernel[u, v]), edgecolor="0.5", lw=0.5))
        ax.add_patch(Rectangle((11.0, top - k * tile), k * tile, k * tile, fill=False, edgecolor=colours(g), lw=2))
    ax.text(11.0 + k * tile / 2, kernel_tops[0] + 0.25, "G kernels $\\mathcal{H}_{ij}$\n(K x K each)", ha="center", va="bottom", fontsize=8.5)

    # 5. multiply: each group's kernel with the windows of its channels
    ax.text(13.0, 3.4, "$\\otimes$", fontsize=20, ha="center", va="center")
    x_win, win_tile = 13.6, 0.22
    for c in range(channels):
        top = 5.6 - c * (k * win_tile + 0.18)
        window = rng.standard_normal((k, k))
        for u in range(k):
            for v in range(k):
                ax.add_patch(Rectangle((x_win + v * win_tile, top - (u + 1) * win_tile), win_tile, win_tile,
                                       facecolor=str(0.55 + 0.1 * np.tanh(window[u, v])), edgecolor="none"))
        ax.add_patch(Rectangle((x_win, top - k * win_tile), k * win_tile, k * win_tile, fill=False,
                               edgecolor=colours(c // per_group), lw=1.5))
        ax.text(x_win + k * win_tile + 0.1, top - k * win_tile / 2, f"c={c}", fontsize=7, va="center")
    caption(x_win + 0.6, "C windows; kernel g\nmultiplies every\nchannel of group g")

    # 6. sum over the window -> Y_ij
    arrow(15.5, 17.1, 3.4, "$\\oplus$ sum\nover the\nK x K taps")
    column(17.3, 5.0, [(*colour[:3], 0.55) for colour in group_colour])
    caption(17.55, "$Y_{ij}$\n(C values)")
    for g in range(groups):
        ax.text(17.95, 5.0 - (g * per_group + per_group / 2) * 0.5, f"group {g}", color=colours(g),
                fontsize=8, va="center")
    ax.set_title(f"Involution at one pixel: C = {channels} channels, G = {groups} groups, K = {k}", fontsize=11)
    return ax
__all__.append("draw_involution_pipeline")


def plot_kernels_over_image(image, kernel_sets, positions, window: int = 15, title: str = ""):
    """Kernels drawn over the image where they act, one row per pixel, one column per kernel source.

    In the style of keras.io's involution heat maps: each panel shows a ``window x window`` crop of
    the grey image around the chosen pixel, with the ``K x K`` kernel laid over the pixels it
    weighs (a heat overlay; colour = weight) and the pixel itself outlined. Each kernel is scaled by
    the largest weight of its off-centre taps, so the shape of the neighbourhood it averages shows
    even when the centre tap is much larger (the centre then saturates).

    Args:
        image: ``(1, 1, H, W)`` or ``(H, W)`` grey image (tensor or array) in ``[0, 1]``.
        kernel_sets: ``{name: kernels}`` where ``kernels`` is ``(B, 1, K, K, H, W)`` (a kernel per
            pixel, sample 0 shown) or ``(K, K)`` (one static kernel, the same at every pixel).
        positions: ``{label: (row, col)}``, pixels at least ``window // 2`` from the border.
        window: side of the crop shown around each pixel.
        title: the figure title.

    Returns:
        The ``(len(positions), len(kernel_sets))`` array of ``Axes``.
    """
    import numpy as np

    def as_array(value):
        return np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=float)

    grey = as_array(image)
    grey = grey.reshape(grey.shape[-2:])
    sets = {name: as_array(kernels) for name, kernels in kernel_sets.items()}
    half = window // 2
    fig, axes = plt.subplots(len(positions), len(sets), figsize=(1.9 * len(sets) + 0.6, 1.9 * len(positions)),
                             squeeze=False, layout="constrained")
    for row, (label, (i, j)) in enumerate(positions.items()):
        crop = grey[i - half : i + half + 1, j - half : j + half + 1]
        for col, (name, kernels) in enumerate(sets.items()):
            kernel = kernels if kernels.ndim == 2 else kernels[0, 0, :, :, i, j]
            k = kernel.shape[0]
            ax = axes[row, col]
            ax.imshow(crop, cmap="gray", vmin=0.0, vmax=1.0)
            off_centre = np.abs(kernel).copy()
            if k > 1:
                off_centre[k // 2, k // 2] = 0.0
            limit = max(float(off_centre.max()), 1e-12)
            extent = (half - k / 2, half + k / 2, half + k / 2, half - k / 2)  # centred on the pixel
            shown = ax.imshow(np.clip(kernel / limit, 0.0, 1.0), cmap="inferno", alpha=0.65, extent=extent,
                              vmin=0.0, vmax=1.0)
            ax.add_patch(plt.Rectangle((half - 0.5, half - 0.5), 1, 1, fill=False, edgecolor="cyan", linewidth=1.2))
            ax.set_xlim(-0.5, window - 0.5)
            ax.set_ylim(window - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{label}\n({i}, {j})", fontsize=9)
    fig.colorbar(shown, ax=axes[:, -1].tolist(), shrink=0.7, label="weight / largest off-centre weight")
    if title:
        fig.suptitle(title, fontsize=10)
    return axes


__all__.append("plot_kernels_over_image")
