"""The NumPy references: the loop oracle checked against independent facts, and every
implementation (involution_numpy, involution_unfold, involution) checked against the oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from involution_edu import involution, involution_loops, involution_numpy, involution_unfold
from strategies import Case, involution_backends, involution_cases, make_case, single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

TOL = 1e-10


def _numpy(case: Case) -> np.ndarray:
    return involution_numpy(case.x, case.kernels, **case.kwargs)


def _unfold(case: Case) -> np.ndarray:
    x, kernels = case.tensors()
    return involution_unfold(x, kernels, **case.kwargs).numpy()


def _torch_op(op):
    def run(case: Case) -> np.ndarray:
        x, kernels = case.tensors()
        return op(x, kernels, **case.kwargs).numpy()

    return run


IMPLEMENTATIONS = {
    "involution_numpy": _numpy,
    "involution_unfold": _unfold,
    "involution": _torch_op(involution),  # the default backend
    **{name: _torch_op(op) for name, op in involution_backends().items()},
}

# (B, G, C/G, K, stride, dilation, H, W, padding): odd and even sizes, non-square inputs, K = 1,
# strides and dilations together, explicit paddings (0, larger than "same", even K).
FIXED = [
    (1, 1, 1, 3, 1, 1, 5, 5, None),
    (2, 2, 3, 3, 1, 1, 7, 6, None),
    (2, 4, 2, 7, 1, 1, 9, 9, None),
    (1, 2, 2, 3, 2, 1, 7, 7, None),  # odd size, stride 2
    (2, 1, 3, 5, 2, 1, 8, 11, None),
    (1, 3, 1, 3, 3, 2, 10, 7, None),
    (1, 2, 2, 5, 1, 2, 6, 6, None),
    (3, 1, 2, 1, 1, 1, 4, 3, None),  # K = 1: a per-position scaling
    (1, 1, 2, 1, 2, 1, 5, 5, None),
    (1, 1, 1, 7, 1, 1, 1, 1, None),  # 1 x 1 input, 7 x 7 kernel: only the centre tap sees data
    (2, 2, 1, 3, 1, 1, 6, 6, 0),  # no padding: the output shrinks
    (1, 2, 2, 3, 2, 2, 9, 8, 3),  # padding larger than "same"
    (1, 1, 2, 2, 1, 1, 5, 4, 0),  # even K needs an explicit padding
    (1, 2, 1, 4, 2, 1, 8, 8, 1),
    (2, 1, 1, 5, 3, 2, 12, 12, 0),
]


def fixed_case(params) -> Case:
    b, g, n, k, s, d, h, w, p = params
    return make_case(b, g, n, k, s, d, h, w, p, seed=sum(params[:-1]))


@pytest.mark.parametrize("params", FIXED, ids=lambda p: "B{}G{}n{}K{}s{}d{}_{}x{}_p{}".format(*p))
@pytest.mark.parametrize("name", list(IMPLEMENTATIONS))
def test_fixed_cases_match_loops(name, params):
    case = fixed_case(params)
    expected = involution_loops(case.x, case.kernels, **case.kwargs)
    got = IMPLEMENTATIONS[name](case)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


@settings(max_examples=60, deadline=None)
@given(case=involution_cases())
def test_all_implementations_match_loops(case):
    expected = involution_loops(case.x, case.kernels, **case.kwargs)
    for name, implementation in IMPLEMENTATIONS.items():
        got = implementation(case)
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOL, err_msg=name)


@settings(max_examples=20, deadline=None)
@given(case=involution_cases(explicit_padding=True))
def test_explicit_padding_matches_loops(case):
    expected = involution_loops(case.x, case.kernels, **case.kwargs)
    for name, implementation in IMPLEMENTATIONS.items():
        np.testing.assert_allclose(implementation(case), expected, rtol=0, atol=TOL, err_msg=name)


FLOAT32_OPS = {"involution_unfold": involution_unfold, **involution_backends()}


@pytest.mark.parametrize("name", list(FLOAT32_OPS))
def test_float32_close_to_float64_loops(name):
    case = make_case(2, 2, 3, 5, 2, 1, 11, 9, seed=3)
    x, kernels = case.tensors(torch.float32)
    got = FLOAT32_OPS[name](x, kernels, **case.kwargs)
    assert got.dtype == torch.float32
    expected = involution_loops(case.x, case.kernels, **case.kwargs)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


# --- the oracle itself, against facts that do not use it ---------------------------------


@pytest.mark.parametrize("stride, dilation, padding", [(1, 1, None), (2, 1, None), (1, 2, None), (3, 2, 1), (2, 1, 0)])
def test_loops_with_position_independent_kernels_is_depthwise_conv(stride, dilation, padding):
    """Kernels equal at every position make involution a depthwise convolution whose
    channel c uses the kernel of its group g(c) = c // (C / G)."""
    rng = np.random.default_rng(7)
    batch, groups, per_group, k, height, width = 2, 3, 2, 3, 9, 8
    x = rng.standard_normal((batch, groups * per_group, height, width))
    weights = rng.standard_normal((groups, k, k))
    expected = F.conv2d(
        torch.tensor(x),
        torch.tensor(np.repeat(weights, per_group, axis=0)[:, None]),  # (C, 1, K, K), contiguous groups
        stride=stride,
        padding=dilation * (k - 1) // 2 if padding is None else padding,
        dilation=dilation,
        groups=groups * per_group,
    ).numpy()
    out_h, out_w = expected.shape[2:]
    kernels = np.broadcast_to(weights[None, :, :, :, None, None], (batch, groups, k, k, out_h, out_w)).copy()
    got = involution_loops(x, kernels, stride=stride, padding=padding, dilation=dilation)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


def test_loops_channel_c_uses_group_c_div_channels_per_group():
    """Contiguous channel blocks share a kernel (the paper's layout), not c % G (keras tutorial)."""
    rng = np.random.default_rng(1)
    batch, groups, per_group, size = 1, 3, 2, 4
    x = rng.standard_normal((batch, groups * per_group, size, size))
    kernels = np.zeros((batch, groups, 3, 3, size, size))
    for g in range(groups):
        kernels[:, g, 1, 1] = g + 1.0  # centre tap only: output = (g + 1) * input
    got = involution_loops(x, kernels)
    scale = np.array([c // per_group + 1.0 for c in range(groups * per_group)])
    np.testing.assert_allclose(got, x * scale[None, :, None, None], rtol=0, atol=TOL)


def test_loops_hand_computed_example():
    """A 1x1x3x3 input with a 3x3 kernel at each position: the centre output sums all
    nine pixels weighted by its kernel; the corner output sees only 4 pixels (zero padding)."""
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    kernels = np.ones((1, 1, 3, 3, 3, 3))
    kernels[0, 0, :, :, 1, 1] = np.arange(9.0).reshape(3, 3)
    got = involution_loops(x, kernels)
    assert got[0, 0, 1, 1] == np.sum(np.arange(9.0) * np.arange(1.0, 10.0))  # 240
    assert got[0, 0, 0, 0] == 1 + 2 + 4 + 5
    assert got[0, 0, 2, 2] == 5 + 6 + 8 + 9
    assert got[0, 0, 0, 1] == 1 + 2 + 3 + 4 + 5 + 6


def test_loops_stride_picks_every_stride_th_position():
    """With stride s the output at (i, j) is the stride-1 result at (i*s, j*s) for the same kernels."""
    case = make_case(1, 2, 2, 3, 1, 1, 7, 7, seed=5)
    full = involution_loops(case.x, case.kernels)
    strided_kernels = case.kernels[..., ::2, ::2]
    strided = involution_loops(case.x, strided_kernels, stride=2)
    np.testing.assert_allclose(strided, full[..., ::2, ::2], rtol=0, atol=TOL)


def test_loops_does_not_modify_inputs_and_keeps_float32():
    case = make_case(1, 1, 2, 3, 1, 1, 4, 4, seed=2)
    x, kernels = case.x.astype(np.float32), case.kernels.astype(np.float32)
    x_before, kernels_before = x.copy(), kernels.copy()
    for implementation in (involution_loops, involution_numpy):
        out = implementation(x, kernels)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(x, x_before)
        np.testing.assert_array_equal(kernels, kernels_before)


def test_numpy_refs_accept_integer_arrays():
    x = np.arange(16).reshape(1, 1, 4, 4)
    kernels = np.ones((1, 1, 3, 3, 4, 4), dtype=np.int64)
    expected = involution_loops(x.astype(float), kernels.astype(float))
    np.testing.assert_allclose(involution_loops(x, kernels), expected)
    np.testing.assert_allclose(involution_numpy(x, kernels), expected)
