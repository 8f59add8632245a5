"""The fast involution backends: every backend against the loop oracle and against autograd
through involution_unfold, gradcheck, the float32 fast paths, backend selection and the clean
fallback when the native kernel cannot be built."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

from involution_edu import native
from involution_edu.functional import (
    BACKENDS,
    available_backends,
    get_default_backend,
    involution,
    involution_unfold,
    resolve_backend,
    set_default_backend,
)
from involution_edu.memory import peak_extra_memory, tensor_bytes
from involution_edu.reference import involution_loops
from involution_edu.shapes import default_padding, output_size
from strategies import involution_cases, make_case

CONCRETE = ["eager", "native"]


def test_the_native_kernel_builds_here():
    # CI and the course machines have g++; if this fails, the message says why.
    assert native.native_available(), native.native_error()
    assert available_backends() == ("eager", "native")
    assert get_default_backend() == "auto"


# --- values and gradients against the references (float64) ----------------------------------


@settings(max_examples=50, deadline=None)
@given(case=involution_cases())
def test_every_backend_matches_the_loop_oracle(case):
    expected = involution_loops(case.x, case.kernels, **case.kwargs)
    x, kernels = case.tensors()
    for backend in CONCRETE:
        got = involution(x, kernels, backend=backend, **case.kwargs)
        np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10, err_msg=backend)


@settings(max_examples=50, deadline=None)
@given(case=involution_cases(max_work=200_000), data=st.data())
def test_every_backend_gradients_match_autograd_through_unfold(case, data):
    x_ref, kernels_ref = case.tensors(requires_grad=True)
    out_ref = involution_unfold(x_ref, kernels_ref, **case.kwargs)
    seed = data.draw(st.integers(0, 2**16), label="grad seed")
    grad_out = torch.from_numpy(np.random.default_rng(seed).standard_normal(out_ref.shape))
    out_ref.backward(grad_out)
    for backend in CONCRETE:
        x, kernels = case.tensors(requires_grad=True)
        involution(x, kernels, backend=backend, **case.kwargs).backward(grad_out)
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-10, msg=f"{backend}: x.grad")
        torch.testing.assert_close(kernels.grad, kernels_ref.grad, rtol=0, atol=1e-10, msg=f"{backend}: kernels.grad")


# (B, G, C/G, K, stride, dilation, H, W, padding): general paths, and the specialised
# RedNet path (16 channels per group, stride 1, dilation 1, K = 3 or 7).
GRAD_CASES = [
    (1, 1, 2, 3, 1, 1, 5, 5, None),
    (2, 2, 1, 3, 2, 1, 5, 6, None),
    (1, 2, 3, 5, 3, 2, 7, 8, None),
    (1, 1, 2, 2, 2, 1, 5, 5, 1),
    (1, 1, 16, 3, 1, 1, 4, 5, None),
    (1, 1, 16, 7, 1, 1, 5, 4, None),
    (1, 1, 20, 3, 1, 1, 3, 4, 2),
]


@pytest.mark.parametrize("params", GRAD_CASES, ids=lambda p: "B{}G{}n{}K{}s{}d{}_{}x{}_p{}".format(*p))
@pytest.mark.parametrize("backend", CONCRETE)
def test_gradcheck(backend, params):
    case = make_case(*params, seed=5)
    x, kernels = case.tensors(requires_grad=True)
    assert gradcheck(
        lambda a, b: involution(a, b, backend=backend, **case.kwargs), (x, kernels), eps=1e-6, atol=1e-7
    )


# --- float32: the specialised kernels ----------------------------------------------------------


def _float32_problem(batch, groups, per_group, k, height, width, padding, channels_last, seed):
    pad = default_padding(k) if padding is None else padding
    out_h, out_w = output_size(height, k, 1, pad), output_size(width, k, 1, pad)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, groups * per_group, height, width, generator=generator)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    kernels = torch.randn(batch, groups, k, k, out_h, out_w, generator=generator)
    grad_out = torch.randn(batch, groups * per_group, out_h, out_w, generator=generator)
    return x, kernels, grad_out


@st.composite
def fast_path_cases(draw):
    k = draw(st.sampled_from([3, 7]), label="K")
    height, width = draw(st.integers(1, 20), label="H"), draw(st.integers(1, 20), label="W")
    smallest = max(0, -(-(k - min(height, width)) // 2))
    padding = draw(st.one_of(st.none(), st.integers(smallest, smallest + 4)), label="padding")
    if padding is None and min(height, width) + 2 * default_padding(k) < k:
        padding = smallest
    return dict(
        batch=draw(st.integers(1, 2), label="batch"),
        groups=draw(st.integers(1, 3), label="groups"),
        per_group=draw(st.sampled_from([16, 16, 8, 12, 32]), label="per_group"),
        k=k, height=height, width=width, padding=padding,
        channels_last=draw(st.booleans(), label="channels_last"),
        seed=draw(st.integers(0, 2**16), label="seed"),
    )


@settings(max_examples=40, deadline=None)
@given(params=fast_path_cases())
def test_float32_backends_agree_with_unfold(params):
    x, kernels, grad_out = _float32_problem(**params)
    padding = params["padding"]
    x64 = x.double().requires_grad_(True)
    kernels64 = kernels.double().requires_grad_(True)
    out64 = involution_unfold(x64, kernels64, padding=padding)
    out64.backward(grad_out.double())
    for backend in CONCRETE:
        xb, kb = x.clone().requires_grad_(True), kernels.clone().requires_grad_(True)
        out = involution(xb, kb, padding=padding, backend=backend)
        out.backward(grad_out)
        pairs = (("output", out, out64), ("x.grad", xb.grad, x64.grad), ("kernels.grad", kb.grad, kernels64.grad))
        for label, got, want in ((label, a.detach(), b.detach()) for label, a, b in pairs):
            scale = max(float(want.abs().max()), 1.0)
            error = float((got.double() - want).abs().max()) / scale
            assert error < 1e-5, f"{backend} {label}: relative error {error:.2e}"
        assert out.dtype == torch.float32


def test_float32_rednet_shape_agrees_with_unfold():
    # The shape family the benchmark times (here B=2, C=64, 14x14), forward and backward.
    x, kernels, grad_out = _float32_problem(2, 4, 16, 7, 14, 14, None, False, seed=1)
    x64, k64 = x.double().requires_grad_(True), kernels.double().requires_grad_(True)
    involution_unfold(x64, k64).backward(grad_out.double())
    xb, kb = x.clone().requires_grad_(True), kernels.clone().requires_grad_(True)
    out = involution(xb, kb, backend="native")
    out.backward(grad_out)
    torch.testing.assert_close(out.double(), involution_unfold(x64, k64).detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(xb.grad.double(), x64.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(kb.grad.double(), k64.grad, rtol=1e-5, atol=1e-4)


# --- layouts, threads, dtypes -----------------------------------------------------------------


@pytest.mark.parametrize("backend", CONCRETE)
def test_strided_inputs_expanded_kernels_and_non_contiguous_grad_out(backend):
    case = make_case(2, 2, 16, 3, 1, 1, 6, 7, seed=2)
    x = torch.tensor(case.x).transpose(2, 3).contiguous().transpose(2, 3).requires_grad_(True)  # odd strides
    shared = torch.tensor(case.kernels[:1])
    kernels = shared.expand(2, *shared.shape[1:])  # batch stride 0
    expected = involution_loops(case.x, np.broadcast_to(case.kernels[:1], case.kernels.shape))
    out = involution(x, kernels, backend=backend)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=0, atol=1e-10)
    grad_out = torch.randn(2, 32, 7, 6, dtype=torch.float64).transpose(2, 3)
    out.backward(grad_out)
    x_ref = torch.tensor(case.x, requires_grad=True)
    involution_unfold(x_ref, kernels).backward(grad_out)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-10)


def test_native_keeps_channels_last():
    x, kernels, _ = _float32_problem(2, 2, 16, 7, 9, 9, None, True, seed=3)
    out = involution(x, kernels, backend="native")
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, involution_unfold(x.contiguous(), kernels), rtol=1e-5, atol=1e-5)


def test_native_results_do_not_depend_on_the_thread_count():
    x, kernels, grad_out = _float32_problem(2, 4, 16, 7, 16, 16, None, False, seed=4)
    assert x.numel() * 49 >= native.PARALLEL_MIN_WORK  # big enough to use both threads
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            xb, kb = x.clone().requires_grad_(True), kernels.clone().requires_grad_(True)
            out = involution(xb, kb, backend="native")
            out.backward(grad_out)
            results.append((out.detach(), xb.grad, kb.grad))
    finally:
        torch.set_num_threads(before)
    for one, two in zip(*results):
        assert torch.equal(one, two)  # each (sample, group) is one task: bitwise identical


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_auto_falls_back_to_eager_for_dtypes_native_lacks(dtype):
    x, kernels, _ = _float32_problem(1, 1, 4, 3, 5, 5, None, False, seed=6)
    assert resolve_backend("auto", x.to(dtype), kernels.to(dtype)) == "eager"
    out = involution(x.to(dtype), kernels.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), involution(x, kernels), rtol=0.05, atol=0.1)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        involution(x.to(dtype), kernels.to(dtype), backend="native")


def test_native_second_derivative_equals_unfold():
    # The op's backward is made of the op's own forward/grad ops, so the native backend
    # differentiates twice (H2's ops.py); tests/test_ops.py runs gradgradcheck on it.
    case = make_case(1, 1, 2, 3, 1, 1, 4, 4, seed=6)
    grads = []
    for op in (lambda a, b: involution(a, b, backend="native"), involution_unfold):
        x, kernels = case.tensors(requires_grad=True)
        (g,) = torch.autograd.grad(op(x, kernels).pow(2).sum(), kernels, create_graph=True)
        grads.append(torch.autograd.grad(g.sum(), x)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", CONCRETE)
def test_memory_of_forward_and_backward_is_a_small_multiple_of_the_tensors(backend):
    x = torch.randn(2, 32, 14, 14, requires_grad=True)
    kernels = torch.randn(2, 2, 7, 7, 14, 14, requires_grad=True)
    grad_out = torch.randn(2, 32, 14, 14)

    def step(a, b):
        involution(a, b, backend=backend).backward(grad_out)

    extra = peak_extra_memory(step, x, kernels)
    budget = tensor_bytes(x, kernels, grad_out)  # input + kernels + output
    assert budget <= extra <= 3 * budget  # at least the gradients and the output, at most 3x


# --- choosing a backend -----------------------------------------------------------------------


def test_backend_names_are_checked():
    x, kernels, _ = _float32_problem(1, 1, 4, 3, 5, 5, None, False, seed=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        involution(x, kernels, backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        set_default_backend("fast")
    assert set(BACKENDS) == {"auto", "eager", "native", "triton"}


def test_default_backend_can_be_set_and_restored():
    x, kernels, _ = _float32_problem(1, 1, 4, 3, 5, 5, None, False, seed=0)
    previous = set_default_backend("eager")
    try:
        assert previous == "auto"
        assert get_default_backend() == "eager"
        assert resolve_backend(None, x, kernels) == "eager"
    finally:
        set_default_backend(previous)
    assert resolve_backend(None, x, kernels) == "native"


def test_auto_uses_eager_when_native_is_unavailable(monkeypatch):
    monkeypatch.setattr(native, "_tried", True)
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_error", "no C++ compiler found (simulated)")
    x, kernels, _ = _float32_problem(1, 2, 4, 3, 6, 6, None, False, seed=0)
    assert available_backends() == ("eager",)
    assert resolve_backend("auto", x, kernels) == "eager"
    torch.testing.assert_close(involution(x, kernels), involution_unfold(x, kernels), rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="simulated"):
        involution(x, kernels, backend="native")


def _run_isolated(code: str, **env: str) -> str:
    environment = {**os.environ, **env}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=environment, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


FALLBACK_PROBE = """
    import torch
    from involution_edu import native
    from involution_edu.functional import involution, involution_unfold, resolve_backend
    x, k = torch.randn(1, 4, 6, 6), torch.randn(1, 2, 3, 3, 6, 6)
    print(native.native_available())
    print(resolve_backend("auto", x, k))
    print(torch.allclose(involution(x, k), involution_unfold(x, k), atol=1e-5))
    print(native.native_error())
"""


def test_a_failing_compiler_falls_back_cleanly(tmp_path):
    # "false" exits with status 1: both builds fail, the library still works through eager.
    lines = _run_isolated(FALLBACK_PROBE, CXX="false", INVOLUTION_EDU_CACHE=str(tmp_path)).splitlines()
    assert lines[:3] == ["False", "eager", "True"]
    assert "could not build the native kernel" in lines[3]


def test_disabling_the_native_kernel_by_environment():
    lines = _run_isolated(FALLBACK_PROBE, INVOLUTION_EDU_NATIVE="0").splitlines()
    assert lines == ["False", "eager", "True", "disabled by INVOLUTION_EDU_NATIVE=0"]
