"""Shared hypothesis strategies and helpers for the involution tests.

:func:`involution_cases` draws a complete, valid problem: shapes, stride, dilation, padding
(default or explicit) and float64 data whose kernels have the right output grid. The
ranges are those the issue asks for: batch 1-3, groups 1-4, channels per group 1-4,
K in {1, 3, 5, 7}, stride 1-3, dilation 1-2, sizes 1-12 (odd ones included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest
import torch
from hypothesis import strategies as st

from involution_edu.shapes import default_padding, output_size

# Bound on the work of the explicit-loop oracle (B * C * H' * W' * K^2 inner iterations),
# so that one example costs at most ~0.1 s.
MAX_LOOP_WORK = 60_000


@dataclass(frozen=True)
class Case:
    """One involution problem (arrays are float64 NumPy; use :meth:`tensors` for torch)."""

    x: np.ndarray  # (B, C, H, W)
    kernels: np.ndarray  # (B, G, K, K, H', W')
    stride: int
    padding: Optional[int]  # None = the default dilation * (K - 1) // 2
    dilation: int

    @property
    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation)

    def tensors(self, dtype: torch.dtype = torch.float64, requires_grad: bool = False):
        x = torch.tensor(self.x, dtype=dtype, requires_grad=requires_grad)
        kernels = torch.tensor(self.kernels, dtype=dtype, requires_grad=requires_grad)
        return x, kernels

    def __repr__(self) -> str:  # short, so hypothesis' falsifying example is readable
        return (
            f"Case(x{tuple(self.x.shape)}, kernels{tuple(self.kernels.shape)}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation})"
        )


def make_case(
    batch: int,
    groups: int,
    per_group: int,
    kernel_size: int,
    stride: int,
    dilation: int,
    height: int,
    width: int,
    padding: Optional[int] = None,
    seed: int = 0,
) -> Case:
    """A :class:`Case` with standard-normal data of the given sizes (kernels fitted to the output grid)."""
    pad = default_padding(kernel_size, dilation) if padding is None else padding
    out_h = output_size(height, kernel_size, stride, pad, dilation)
    out_w = output_size(width, kernel_size, stride, pad, dilation)
    assert out_h >= 1 and out_w >= 1, "make_case got sizes with an empty output"
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, groups * per_group, height, width))
    kernels = rng.standard_normal((batch, groups, kernel_size, kernel_size, out_h, out_w))
    return Case(x, kernels, stride, padding, dilation)


def loop_work(case: Case) -> int:
    batch, channels = case.x.shape[:2]
    k, out_h, out_w = case.kernels.shape[2], case.kernels.shape[4], case.kernels.shape[5]
    return batch * channels * out_h * out_w * k * k


@st.composite
def involution_cases(draw, max_work: int = MAX_LOOP_WORK, explicit_padding: Optional[bool] = None) -> Case:
    """Draw a valid :class:`Case`.

    ``explicit_padding``: ``None`` draws both kinds, ``True`` only explicit paddings (from the
    smallest that leaves a non-empty output up to 3 more), ``False`` only the default.
    The sizes are shrunk (batch first, then channels per group) until the oracle's work is
    at most ``max_work``, so no example is rejected.
    """
    batch = draw(st.integers(1, 3), label="batch")
    groups = draw(st.integers(1, 4), label="groups")
    per_group = draw(st.integers(1, 4), label="per_group")
    kernel_size = draw(st.sampled_from([1, 3, 5, 7]), label="K")
    stride = draw(st.integers(1, 3), label="stride")
    dilation = draw(st.integers(1, 2), label="dilation")
    height = draw(st.integers(1, 12), label="H")
    width = draw(st.integers(1, 12), label="W")
    use_explicit = draw(st.booleans()) if explicit_padding is None else explicit_padding
    padding = None
    if use_explicit:
        span = dilation * (kernel_size - 1) + 1
        smallest = max(0, -(-(span - min(height, width)) // 2))  # ceil((span - size) / 2)
        padding = draw(st.integers(smallest, smallest + 3), label="padding")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    case = make_case(batch, groups, per_group, kernel_size, stride, dilation, height, width, padding, seed)
    while loop_work(case) > max_work and (batch > 1 or per_group > 1):
        if batch > 1:
            batch -= 1
        else:
            per_group -= 1
        case = make_case(batch, groups, per_group, kernel_size, stride, dilation, height, width, padding, seed)
    return case


@pytest.fixture(scope="module")
def single_thread():
    """Run a test module's tiny tensor ops on one intra-op thread, restoring the setting after.

    The tests here run thousands of operators on tensors of a few hundred elements (gradcheck,
    hypothesis). Some CPU kernels (batch norm, convolution) open an OpenMP parallel region
    whatever the size; on a busy machine each region can wait a whole scheduler time slice for
    its second thread, which made gradcheck 10-40x slower. Results do not depend on it.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def involution_backends() -> dict:
    """``{"involution[eager]": op, "involution[native]": op}``: :func:`involution_edu.involution`
    with each backend usable in this process (native only where it compiled), so that every
    test of ``involution`` runs on each of them."""
    from functools import partial

    from involution_edu import involution
    from involution_edu.functional import available_backends

    return {f"involution[{backend}]": partial(involution, backend=backend) for backend in available_backends()}
