"""The figures of notebook 10 draw what they are given: the program of every pixel, and the loads per tap."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from involution_edu.plotting_triton import element_offsets, plot_program_grid, plot_tap_loads  # noqa: E402


def test_program_grid_draws_every_pixel_and_every_lane():
    program_of_pixel = (np.arange(35) // 16).reshape(5, 7)
    left, right = plot_program_grid(program_of_pixel, 16)
    assert len(left.patches) == 35                      # one square per output pixel
    assert len(right.patches) == 3 * 16                 # cdiv(35, 16) programs of 16 lanes
    masked = [p for p in right.patches if p.get_hatch() == "//"]
    assert len(masked) == 3 * 16 - 35                   # the lanes past the last pixel
    plt.close("all")


def test_tap_loads_fill_the_pixels_read():
    reads = {(0, 0): np.array([0, 5]), (1, 1): np.array([19])}
    axes = plot_tap_loads(reads, (5, 4), 2, title="t")
    image = axes[0][0].images[0].get_array()
    assert image[0, 0] == 1 and image[1, 1] == 1 and image.sum() == 2
    assert axes[1][1].images[0].get_array()[4, 3] == 1 and axes[0][1].images[0].get_array().sum() == 0
    plt.close("all")


def test_element_offsets_keeps_the_active_lanes_inside_the_tensor():
    tensor = torch.zeros(10)
    base = tensor.data_ptr()
    addresses = np.array([base, base + 4, base + 40, base - 4], dtype=np.uint64)  # offsets 0, 1, 10 (past), -1
    events = [("load", (0, 0, 0), addresses, np.array([True, False, True, True]), "xs = tl.load(...)"),
              ("store", (0, 0, 0), addresses, np.ones(4, dtype=bool), "tl.store(...)"),
              ("load", (1, 0, 0), addresses, np.ones(4, dtype=bool), "xs = tl.load(...)")]
    (offsets,) = element_offsets(events, tensor)
    assert offsets.tolist() == [0]
    assert element_offsets(events, tensor, kind="store")[0].tolist() == [0, 1]
    assert element_offsets(events, tensor, ndim=2) == []
    assert element_offsets(events, tensor, program=(1, 0, 0))[0].tolist() == [0, 1]
