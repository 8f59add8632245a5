"""The shared random inputs of the involution checkers: right shapes, float64, reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from involution_edu.exercises.cases import random_involution_inputs
from involution_edu.reference import involution_loops


@pytest.mark.parametrize(
    "batch, channels, height, width, kernel_size, stride, padding, dilation, groups, out_hw",
    [
        (2, 4, 6, 6, 3, 1, None, 1, 2, (6, 6)),  # default "same" padding keeps the size
        (1, 6, 7, 9, 3, 2, None, 1, 3, (4, 5)),  # stride 2 on odd sizes rounds up
        (1, 2, 9, 8, 3, 1, None, 2, 1, (9, 8)),  # padding=None means dilation * (K - 1) // 2
        (2, 2, 8, 9, 5, 1, 0, 1, 1, (4, 5)),  # explicit padding 0 shrinks by K - 1
    ],
)
def test_shapes_follow_the_geometry(batch, channels, height, width, kernel_size, stride, padding, dilation, groups,
                                    out_hw):
    x, kernels = random_involution_inputs(0, batch, channels, height, width, kernel_size, stride, padding, dilation,
                                          groups)
    assert x.shape == (batch, channels, height, width) and x.dtype == np.float64
    assert kernels.shape == (batch, groups, kernel_size, kernel_size) + out_hw and kernels.dtype == np.float64
    involution_loops(x, kernels, stride, padding, dilation)  # the pair is a valid problem for the oracle


def test_same_seed_same_inputs_other_seed_other_inputs():
    first = random_involution_inputs(5, 1, 4, 5, 5, 3, 1, None, 1, 2)
    again = random_involution_inputs(5, 1, 4, 5, 5, 3, 1, None, 1, 2)
    other = random_involution_inputs(6, 1, 4, 5, 5, 3, 1, None, 1, 2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_draws_x_then_kernels_from_one_generator():
    x, kernels = random_involution_inputs(3, 1, 2, 4, 4, 3, 1, None, 1, 1)
    rng = np.random.default_rng(3)
    assert np.array_equal(x, rng.standard_normal(x.shape))
    assert np.array_equal(kernels, rng.standard_normal(kernels.shape))
