"""No crash, no out-of-bounds access and no silent wrong number from the native path: every size
is bounded before it reaches C++ (and again in C++), non-finite kernel values on padded taps give
NaN in every backend, and a fuzz run (in a subprocess, so a crash fails the test) compares every
backend with the loop reference on random shapes, layouts, values and argument types."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from involution_edu import native
from involution_edu.functional import involution, involution_unfold
from involution_edu.reference import involution_loops, involution_numpy
from involution_edu.shapes import MAX_ELEMENTS, MAX_SIZE, check_involution_args

BACKENDS = ["eager", "native"]


def small_problem(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 4, 5, 5, generator=g, dtype=dtype), torch.randn(1, 2, 3, 3, 5, 5, generator=g, dtype=dtype)


# --- bounds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, needle",
    [
        (dict(dilation=2**64 + 1), ValueError, "dilation must be at most"),  # ctypes would have truncated it to 1
        (dict(dilation=2**30 - 1), ValueError, "too large"),  # overflowed the scratch size: SIGSEGV
        (dict(dilation=2**30 - 1, padding=0), ValueError, "too small"),
        (dict(dilation=2**30, padding=0), ValueError, "too large"),
        (dict(padding=2**40), ValueError, "padding must be at most"),
        (dict(padding=2**62), ValueError, "padding must be at most"),
        (dict(stride=2**63), ValueError, "stride must be at most"),
        (dict(stride=np.uint64(2**64 - 1)), ValueError, "stride must be at most"),
        (dict(stride=True), TypeError, "stride must be a positive integer"),
        (dict(padding=False), TypeError, "padding must be a non-negative integer"),
        (dict(dilation=1.0), TypeError, "dilation must be a positive integer"),
        (dict(stride=np.float64(1)), TypeError, "stride"),
        (dict(padding="1"), TypeError, "padding"),
        (dict(stride=0), ValueError, "stride must be a positive integer"),
        (dict(padding=-1), ValueError, "padding must be a non-negative integer"),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_bad_arguments_raise_the_same_clean_error_in_every_backend(kwargs, error, needle):
    x, kernels = small_problem()
    for backend in BACKENDS:
        with pytest.raises(error, match=needle):
            involution(x, kernels, backend=backend, **kwargs)
    with pytest.raises(error, match=needle):
        involution_loops(x.numpy(), kernels.numpy(), **kwargs)
    args = {"stride": 1, "padding": 1, "dilation": 1, **kwargs}  # padding 1 may make the window too large
    with pytest.raises(error, match=needle + "|too small"):
        native.native_forward(x, kernels, args["stride"], args["padding"], args["dilation"], 5, 5)


def test_huge_padded_planes_are_refused_before_any_allocation():
    with pytest.raises(ValueError, match="elements"):
        check_involution_args((1, 2**20, 3, 3), (1, 1, 3, 3, 2**11 + 1, 2**11 + 1), padding=2**10)
    with pytest.raises(ValueError, match="between 0 and"):
        check_involution_args((1, 4, 2**31, 5), (1, 2, 3, 3, 2**31, 5))
    with pytest.raises(TypeError, match="integers"):
        check_involution_args((1, 4, 5.0, 5), (1, 2, 3, 3, 5, 5))


def test_a_stale_output_size_is_refused_not_read_out_of_bounds():
    # What a torch.jit.trace made at 64x64 would pass when run at 8x8.
    x = torch.randn(1, 4, 8, 8)
    kernels = torch.randn(1, 2, 3, 3, 8, 8)
    with pytest.raises(ValueError, match="out_h=64 does not match the output size 8"):
        native.native_forward(x, kernels, 1, 1, 1, 64, 64)
    with pytest.raises(ValueError, match="grad_out must have shape"):
        native.native_backward(x, kernels, torch.randn(1, 4, 64, 64), 1, 1, 1)
    with pytest.raises(TypeError, match="dtype of x"):
        native.native_forward(x, kernels.double(), 1, 1, 1, 8, 8)
    with pytest.raises(ValueError, match="kernels must be 6-D"):
        native.native_forward(x, kernels[0], 1, 1, 1, 8, 8)


def test_the_compiled_entry_points_check_their_sizes_too():
    library = native.load_native()
    assert library is not None, native.native_error()

    def dims(**change):
        values = dict(B=1, C=4, H=5, W=5, G=2, K=3, Ho=5, Wo=5, s=1, p=1, d=1)
        values.update(change)
        return (ctypes.c_int64 * 11)(*values.values())

    import ctypes

    assert library.involution_scratch_per_thread(dims()) > 0
    null = ctypes.c_void_p(None)
    for bad in (dict(d=2**30 - 1, p=2**30 - 1), dict(Ho=64), dict(G=3), dict(K=0), dict(p=-1), dict(H=2**40),
                dict(s=0), dict(C=2**31 - 1, G=1, H=2**16, W=2**16)):
        assert library.involution_scratch_per_thread(dims(**bad)) == -1, bad
        # Null pointers everywhere: a call that got past the checks would crash, not return.
        code = library.involution_forward_f32(dims(**bad), null, null, null, null, null, null, null, 10**6, 1)
        assert code != 0, bad
        code = library.involution_backward_f64(dims(**bad), *[null] * 11, 10**6, 1)
        assert code != 0, bad
    # Valid sizes with too little scratch, or a nonsense thread count, are refused as well.
    assert library.involution_forward_f32(dims(), null, null, null, null, null, null, null, 1, 1) != 0
    assert library.involution_forward_f32(dims(), null, null, null, null, null, null, null, 10**6, 0) != 0


def test_empty_batches_work_without_calling_the_kernel():
    x = torch.randn(0, 4, 5, 5, requires_grad=True)
    kernels = torch.randn(0, 2, 3, 3, 5, 5, requires_grad=True)
    out = involution(x, kernels, backend="native")
    assert out.shape == (0, 4, 5, 5)
    out.sum().backward()
    assert x.grad.shape == x.shape and kernels.grad.shape == kernels.shape


# --- non-finite kernel values on padded taps ----------------------------------------------------


def nonfinite_problem(channels_per_group, k, stride, dilation, padding, dtype, seed=0):
    rng = np.random.default_rng(seed)
    height, width = 9, 8
    span = dilation * (k - 1) + 1
    out_h = (height + 2 * padding - span) // stride + 1
    out_w = (width + 2 * padding - span) // stride + 1
    x = rng.standard_normal((2, 2 * channels_per_group, height, width))
    kernels = rng.standard_normal((2, 2, k, k, out_h, out_w))
    # Padded taps of output row 0 (kernel row 0), column 0 (kernel column 0), the last row and a
    # corner; plus one non-finite value on an interior tap.
    kernels[0, 0, 0, k // 2, 0, out_w // 2] = np.inf          # a padded row
    kernels[0, 1, k // 2, 0, out_h // 2, 0] = np.nan          # a padded column
    kernels[1, 0, k - 1, k // 2, out_h - 1, out_w // 2] = -np.inf  # the bottom padded row
    kernels[1, 1, 0, 0, 0, 0] = np.inf                         # a padded corner
    kernels[1, 0, k // 2, k // 2, out_h // 2, out_w // 2] = np.inf  # an interior tap: inf or nan
    return x.astype(dtype), kernels.astype(dtype)


@pytest.mark.parametrize(
    "channels_per_group, k, stride, dilation, padding, dtype",
    [
        (2, 3, 1, 1, 1, np.float64),
        (3, 3, 2, 2, 2, np.float64),
        (16, 3, 1, 1, 1, np.float32),  # the specialised float32 paths
        (16, 7, 1, 1, 3, np.float32),
        (16, 7, 1, 1, 4, np.float32),
        (5, 5, 2, 1, 3, np.float32),
    ],
)
def test_non_finite_kernels_on_padded_taps_give_nan_in_every_backend(channels_per_group, k, stride, dilation,
                                                                        padding, dtype):
    x, kernels = nonfinite_problem(channels_per_group, k, stride, dilation, padding, dtype)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    expected = involution_loops(x.astype(np.float64), kernels.astype(np.float64), **kwargs)
    assert np.isnan(expected).any()
    # The padded rows and columns really produce NaN: the first output row of sample 0, group 0.
    assert np.isnan(expected[0, :channels_per_group, 0, kernels.shape[5] // 2]).all()
    results = {"numpy": involution_numpy(x, kernels, **kwargs)}
    xt, kt = torch.from_numpy(x), torch.from_numpy(kernels)
    results["unfold"] = involution_unfold(xt, kt, **kwargs).numpy()
    for backend in BACKENDS:
        results[backend] = involution(xt, kt, backend=backend, **kwargs).numpy()
    tolerance = 1e-9 if dtype == np.float64 else 1e-4
    for name, got in results.items():
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{name}: NaN pattern")
        np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance, equal_nan=True, err_msg=name)


def test_non_finite_kernels_on_padded_taps_backward_agrees_with_unfold():
    x, kernels = nonfinite_problem(16, 3, 1, 1, 1, np.float32)
    grad_out = torch.randn(x.shape[0], x.shape[1], kernels.shape[4], kernels.shape[5])
    grads = {}
    for name in ("unfold", *BACKENDS):
        xt = torch.from_numpy(x).requires_grad_(True)
        kt = torch.from_numpy(kernels).requires_grad_(True)
        out = involution_unfold(xt, kt) if name == "unfold" else involution(xt, kt, backend=name)
        out.backward(grad_out)
        grads[name] = (xt.grad.numpy(), kt.grad.numpy())
    for name in BACKENDS:
        for got, want in zip(grads[name], grads["unfold"]):
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, equal_nan=True, err_msg=name)


# --- fuzz ---------------------------------------------------------------------------------------

FUZZ = r"""
import json, sys
import numpy as np
import torch
from involution_edu.functional import involution, involution_unfold
from involution_edu.reference import involution_loops

rng = np.random.default_rng(int(sys.argv[1]))
BACKENDS = ["eager", "native"]
report = {"cases": 0, "errors": 0, "failures": []}

def values(shape, kind):
    a = rng.standard_normal(shape)
    if kind == "extreme":
        flat = a.reshape(-1)
        for special in (np.inf, -np.inf, np.nan, 1e30, -1e30, 5e-324, 1e-310):
            flat[rng.integers(0, flat.size)] = special
    elif kind == "denormal":
        a *= 1e-310
    return a

def layout(t, kind):
    if kind == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if kind == "non_contiguous":
        big = torch.zeros(*[2 * s for s in t.shape], dtype=t.dtype)
        view = big[tuple(slice(None, None, 2) for _ in t.shape)]
        view.copy_(t)
        return view
    return t

def odd_int(value):
    kind = rng.integers(0, 3)
    return [int(value), np.int64(value), np.int32(value)][kind]

for case in range(int(sys.argv[2])):
    groups = int(rng.integers(1, 4))
    per_group = int(rng.choice([1, 2, 3, 4, 5, 8, 16, 17]))
    k = int(rng.choice([1, 2, 3, 5, 7]))
    stride, dilation = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    span = dilation * (k - 1) + 1
    padding = int(rng.integers(0, span + 1))
    height, width = int(rng.integers(1, 10)), int(rng.integers(1, 10))
    out_h = (height + 2 * padding - span) // stride + 1
    out_w = (width + 2 * padding - span) // stride + 1
    if out_h < 1 or out_w < 1:
        continue
    batch = int(rng.integers(1, 3))
    kind = str(rng.choice(["normal", "normal", "extreme", "denormal"]))
    dtype = torch.float64 if kind != "normal" or rng.random() < 0.5 else torch.float32
    x = values((batch, groups * per_group, height, width), kind)
    kernels = values((batch, groups, k, k, out_h, out_w), kind)
    if rng.random() < 0.25:  # one kernel shared by the batch: a zero batch stride
        kernels = np.broadcast_to(kernels[:1], kernels.shape)
    expected = involution_loops(x, np.ascontiguousarray(kernels), stride, padding, dilation)
    xt = layout(torch.tensor(x, dtype=dtype), str(rng.choice(["plain", "channels_last", "non_contiguous"])))
    kt = torch.tensor(np.ascontiguousarray(kernels), dtype=dtype)
    if kernels.strides[0] == 0:
        kt = kt[:1].expand(batch, *kt.shape[1:])
    else:
        kt = layout(kt, str(rng.choice(["plain", "non_contiguous"])))
    args = dict(stride=odd_int(stride), padding=odd_int(padding), dilation=odd_int(dilation))
    tolerance = 1e-9 if dtype == torch.float64 else 1e-4
    report["cases"] += 1
    for backend in BACKENDS:
        got = involution(xt, kt, backend=backend, **args).double().numpy()
        want = expected if dtype == torch.float64 else involution_loops(
            xt.double().numpy(), kt.double().numpy(), stride, padding, dilation)
        scale = np.nanmax(np.abs(np.where(np.isfinite(want), want, 0)), initial=1.0)
        same_nan = np.array_equal(np.isnan(got), np.isnan(want))
        close = np.allclose(got, want, rtol=tolerance, atol=tolerance * scale, equal_nan=True)
        if not (same_nan and close):
            report["failures"].append(dict(case=case, backend=backend, kind=kind, dtype=str(dtype),
                shape=[batch, groups * per_group, height, width], k=k, stride=stride, padding=padding,
                dilation=dilation))
    # Invalid arguments: every backend raises the same clean error type.
    bad_name = str(rng.choice(["stride", "padding", "dilation"]))
    bad_value = [True, 1.5, 2**64 + 1, -3, np.uint64(2**64 - 1), 2**63, "2", None][int(rng.integers(0, 8))]
    if bad_value is None and bad_name == "padding":
        bad_value = 2**31
    raised = set()
    for backend in BACKENDS:
        try:
            involution(xt, kt, backend=backend, **{**args, bad_name: bad_value})
            raised.add("nothing")
        except (TypeError, ValueError) as error:
            raised.add(type(error).__name__)
    report["errors"] += 1
    if len(raised) != 1 or "nothing" in raised:
        report["failures"].append(dict(case=case, bad=[bad_name, repr(bad_value)], raised=sorted(raised)))
print(json.dumps(report))
"""


@pytest.mark.parametrize("seed", [0])
def test_fuzz_every_backend_against_the_loop_reference_in_a_subprocess(seed):
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FUZZ), str(seed), "60"], capture_output=True, text=True,
        timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert done.returncode == 0, f"the fuzz process died (return code {done.returncode}):\n{done.stderr[-3000:]}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["cases"] >= 35 and report["errors"] >= 35
    assert report["failures"] == [], report["failures"][:5]


def test_the_fused_affine_entry_point_refuses_null_scale_and_bad_sizes():
    """The folded-BatchNorm entry (``involution_fused_forward_affine_*``) checks like the others:
    bad sizes and a missing scale or shift return an error code, never touch memory."""
    import ctypes

    library = native.load_native()
    assert library is not None, native.native_error()
    values = dict(B=1, C=16, H=5, W=5, G=1, K=3, Ho=5, Wo=5, s=1, p=1, d=1, Cr=4)
    dims = (ctypes.c_int64 * 12)(*values.values())
    per_thread = library.involution_fused_scratch_per_thread(dims, 0)
    assert per_thread > 0
    x, h = torch.randn(1, 16, 5, 5), torch.randn(1, 4, 5, 5)
    w, b, scale, shift = torch.randn(1, 4, 9).contiguous(), torch.randn(9), torch.ones(16), torch.zeros(16)
    out, scratch = torch.full((1, 16, 5, 5), 7.0), torch.empty(per_thread)
    strides = lambda t: (ctypes.c_int64 * 4)(*t.stride())  # noqa: E731
    null = ctypes.c_void_p(None)

    def call(dims, scale_ptr, shift_ptr, threads=1):
        return library.involution_fused_forward_affine_f32(
            dims, x.data_ptr(), strides(x), h.data_ptr(), strides(h), w.data_ptr(), b.data_ptr(), scale_ptr,
            shift_ptr, out.data_ptr(), strides(out), scratch.data_ptr(), per_thread, threads)

    assert call(dims, null, shift.data_ptr()) == 9 and call(dims, scale.data_ptr(), null) == 9
    bad = (ctypes.c_int64 * 12)(*{**values, "Ho": 64}.values())
    assert call(bad, scale.data_ptr(), shift.data_ptr()) != 0
    assert call(dims, scale.data_ptr(), shift.data_ptr(), threads=0) != 0
    assert torch.equal(out, torch.full((1, 16, 5, 5), 7.0))  # nothing was written by a refused call
    assert call(dims, scale.data_ptr(), shift.data_ptr()) == 0 and not torch.equal(out, torch.full((1, 16, 5, 5), 7.0))
