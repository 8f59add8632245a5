"""The Triton kernels, run on the CPU by Triton's interpreter (``TRITON_INTERPRET=1``).

Shapes are small (the interpreter runs every block operation through NumPy) and chosen to hit
every mask: odd sizes, stride 2 and 3, dilation 2, padding other than "same", groups > 1,
group sizes that are not powers of two, more than 64 channels per group (several channel
blocks), K = 1, 3 and 7. Values are compared with the loop reference, gradients with autograd
through ``involution_unfold`` in float64, half and bfloat16 with a bound that only float32
accumulation meets.

The environment variable is set by a fixture for this module's tests only (other modules'
tests must not see it: with it, CPU tensors count as Triton-capable). The backend decides
compiler-or-interpreter at each call and jit-wraps the kernels once per mode, so it does not
matter whether ``triton`` was imported earlier in the process; a subprocess test checks the
first-import path a user takes (variable set, then ``import triton``).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from involution_edu import triton_backend as tb
from involution_edu.functional import involution, involution_unfold
from involution_edu.reference import involution_loops
from involution_edu.shapes import default_padding, output_size

ROOT = Path(__file__).resolve().parent.parent
TRITON_PLATFORM = platform.system() == "Linux" and platform.machine() in ("x86_64", "aarch64")


@pytest.fixture(scope="module", autouse=True)
def interpreter():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        yield


def test_triton_is_installed_and_interprets():
    # `make test` installs the triton extra; Triton has wheels for Linux (x86_64, aarch64) only.
    assert TRITON_PLATFORM, "Triton (and so this module) needs Linux on x86_64 or aarch64"
    assert tb.triton_available(), tb.triton_error()
    assert tb.triton_error() is None
    assert tb.triton_interpreting()


# --- cases -----------------------------------------------------------------------------------

# (B, C, H, W, G, K, stride, padding (None = same), dilation)
CASES = [
    pytest.param(2, 6, 7, 9, 2, 3, 1, None, 1, id="odd-sizes-G2-3ch"),
    pytest.param(1, 6, 9, 8, 3, 3, 2, None, 1, id="stride2-G3-2ch"),
    pytest.param(1, 5, 8, 7, 1, 3, 1, None, 2, id="dilation2-5ch"),
    pytest.param(1, 3, 9, 8, 1, 7, 2, None, 1, id="K7-stride2"),
    pytest.param(1, 4, 5, 6, 2, 1, 2, None, 1, id="K1-stride2"),
    pytest.param(1, 6, 10, 9, 2, 3, 3, 0, 2, id="stride3-dilation2-no-padding"),
    pytest.param(1, 4, 6, 5, 1, 3, 2, 3, 1, id="padding-larger-than-same"),
    pytest.param(1, 80, 5, 4, 1, 3, 1, None, 1, id="80ch-two-channel-blocks"),
]


def make(b, c, h, w, g, k, stride, padding, dilation, seed=0):
    padding = default_padding(k, dilation) if padding is None else padding
    out_h, out_w = output_size(h, k, stride, padding, dilation), output_size(w, k, stride, padding, dilation)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64)
    kernels = torch.randn(b, g, k, k, out_h, out_w, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(b, c, out_h, out_w, generator=gen, dtype=torch.float64)
    return x, kernels, grad_out, dict(stride=stride, padding=padding, dilation=dilation), (out_h, out_w)


def unfold_grads(x, kernels, grad_out, args):
    """Gradients by autograd through the paper's unfold formulation (float64)."""
    x, kernels = x.detach().double().clone().requires_grad_(), kernels.detach().double().clone().requires_grad_()
    involution_unfold(x, kernels, **args).backward(grad_out.double())
    return x.grad, kernels.grad


def forward(x, kernels, args, out_size):
    return tb.triton_forward(x, kernels, args["stride"], args["padding"], args["dilation"], *out_size)


def backward(x, kernels, grad_out, args, **need):
    return tb.triton_backward(x, kernels, grad_out, args["stride"], args["padding"], args["dilation"], **need)


# --- float32: values and gradients -----------------------------------------------------------


@pytest.mark.parametrize("b, c, h, w, g, k, stride, padding, dilation", CASES)
def test_float32_forward_and_backward_match_the_references(b, c, h, w, g, k, stride, padding, dilation):
    x, kernels, grad_out, args, out_size = make(b, c, h, w, g, k, stride, padding, dilation)
    expected = involution_loops(x.numpy(), kernels.numpy(), **args)
    got = forward(x.float(), kernels.float(), args, out_size)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-5, atol=1e-5)

    grad_x, grad_kernels = backward(x.float(), kernels.float(), grad_out.float(), args)
    want_x, want_kernels = unfold_grads(x, kernels, grad_out, args)
    assert grad_x.dtype == grad_kernels.dtype == torch.float32
    torch.testing.assert_close(grad_x.double(), want_x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_kernels.double(), want_kernels, rtol=1e-5, atol=1e-5)


def test_float64_is_exact_to_rounding():
    x, kernels, grad_out, args, out_size = make(1, 6, 7, 8, 2, 3, 2, None, 2, seed=1)
    got = forward(x, kernels, args, out_size)
    np.testing.assert_allclose(got.numpy(), involution_loops(x.numpy(), kernels.numpy(), **args), rtol=0, atol=1e-12)
    grad_x, grad_kernels = backward(x, kernels, grad_out, args)
    want_x, want_kernels = unfold_grads(x, kernels, grad_out, args)
    torch.testing.assert_close(grad_x, want_x, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_kernels, want_kernels, rtol=0, atol=1e-12)


def test_only_the_requested_gradients_are_computed():
    x, kernels, grad_out, args, _ = make(1, 4, 5, 5, 2, 3, 1, None, 1)
    want_x, want_kernels = unfold_grads(x, kernels, grad_out, args)
    grad_x, none = backward(x, kernels, grad_out, args, need_kernels=False)
    assert none is None
    torch.testing.assert_close(grad_x, want_x)
    none, grad_kernels = backward(x, kernels, grad_out, args, need_x=False)
    assert none is None
    torch.testing.assert_close(grad_kernels, want_kernels)


def test_any_strides_are_accepted():
    x, kernels, grad_out, args, out_size = make(2, 6, 5, 7, 2, 3, 1, None, 1, seed=2)
    x_cl = x.to(memory_format=torch.channels_last)
    kernels_t = kernels.transpose(4, 5).contiguous().transpose(4, 5)  # same values, other strides
    grad_out_t = grad_out.transpose(2, 3).contiguous().transpose(2, 3)
    assert not x_cl.is_contiguous() and not kernels_t.is_contiguous() and not grad_out_t.is_contiguous()
    torch.testing.assert_close(forward(x_cl, kernels_t, args, out_size), forward(x, kernels, args, out_size))
    for got, want in zip(backward(x_cl, kernels_t, grad_out_t, args), backward(x, kernels, grad_out, args)):
        torch.testing.assert_close(got, want)


def test_empty_batch():
    x, kernels, grad_out, args, out_size = make(0, 4, 5, 5, 2, 3, 1, None, 1)
    assert forward(x, kernels, args, out_size).shape == (0, 4, 5, 5)
    grad_x, grad_kernels = backward(x, kernels, grad_out, args)
    assert grad_x.shape == x.shape and grad_kernels.shape == kernels.shape


def test_non_finite_kernels_on_padded_taps_give_nan_like_the_reference():
    x, kernels, _, args, out_size = make(1, 2, 4, 4, 1, 3, 1, None, 1)
    kernels[0, 0, 0, :, 0, :] = float("inf")  # tap row u = 0 at output row 0 reads the padding
    expected = involution_loops(x.numpy(), kernels.numpy(), **args)
    with np.errstate(invalid="ignore"):  # the interpreter computes inf * 0 with NumPy
        got = forward(x, kernels, args, out_size).numpy()
    assert np.isnan(expected[:, :, 0]).all() and np.isfinite(expected[:, :, 1:]).all()  # inf * padding 0
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12, equal_nan=True)


# --- half and bfloat16: float32 accumulation -------------------------------------------------

# Largest relative rounding error of one value: half an ulp (2**-11 for float16, 2**-8 for bfloat16).
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def _bound(dtype, reference, magnitude):
    """What a float32 accumulator rounded once to ``dtype`` can be off by: one rounding of the
    result plus float32 rounding on the way (at most about n * 2**-24 * the sum of |terms| for n terms;
    ``magnitude`` = that sum, 1e-5 covers n up to 160), plus the
    smallest subnormal step."""
    return UNIT_ROUNDOFF[dtype] * reference.abs() + 1e-5 * magnitude + 2.0**-24


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_low_precision_accumulates_in_float32(dtype):
    x, kernels, grad_out, args, out_size = make(1, 6, 9, 8, 2, 7, 2, None, 1, seed=3)
    x_low, kernels_low, grad_low = x.to(dtype), kernels.to(dtype), grad_out.to(dtype)
    # The exact answer for the rounded inputs, and the sum of |terms| for the error bound.
    x64, k64, g64 = x_low.double(), kernels_low.double(), grad_low.double()
    expected = torch.from_numpy(involution_loops(x64.numpy(), k64.numpy(), **args))
    magnitude = involution_unfold(x64.abs(), k64.abs(), **args)

    got = forward(x_low, kernels_low, args, out_size)
    assert got.dtype == dtype
    error = (got.double() - expected).abs()
    assert (error <= _bound(dtype, expected, magnitude)).all(), f"max error {error.max():.3g}"

    # The bound is tight enough to catch an accumulator in the low-precision type.
    windows = torch.nn.functional.unfold(x_low.float(), 7, dilation=1, padding=args["padding"], stride=2)
    windows = windows.view(1, 2, 3, 49, *out_size).to(dtype)
    taps = kernels_low.reshape(1, 2, 1, 49, *out_size)
    low_acc = torch.zeros(1, 2, 3, *out_size, dtype=dtype)
    for t in range(49):
        low_acc = low_acc + taps[:, :, :, t] * windows[:, :, :, t]
    low_error = (low_acc.reshape(expected.shape).double() - expected).abs()
    assert not (low_error <= _bound(dtype, expected, magnitude)).all()

    grad_x, grad_kernels = backward(x_low, kernels_low, grad_low, args)
    assert grad_x.dtype == grad_kernels.dtype == dtype
    want_x, want_kernels = unfold_grads(x64, k64, g64, args)
    mag_x, mag_kernels = unfold_grads(x64.abs(), k64.abs(), g64.abs(), args)  # sums of |terms| (linear maps)
    assert ((grad_x.double() - want_x).abs() <= _bound(dtype, want_x, mag_x)).all()
    assert ((grad_kernels.double() - want_kernels).abs() <= _bound(dtype, want_kernels, mag_kernels)).all()


def test_half_with_several_channel_blocks_keeps_float32_partial_sums():
    x, kernels, grad_out, args, _ = make(1, 80, 4, 3, 1, 3, 1, None, 1, seed=4)
    x_low, kernels_low, grad_low = x.half(), kernels.half(), grad_out.half()
    _, grad_kernels = backward(x_low, kernels_low, grad_low, args, need_x=False)
    _, want = unfold_grads(x_low.double(), kernels_low.double(), grad_low.double(), args)
    _, magnitude = unfold_grads(x_low.double().abs(), kernels_low.double().abs(), grad_low.double().abs(), args)
    assert ((grad_kernels.double() - want).abs() <= _bound(torch.float16, want, magnitude)).all()


# --- the public op with backend="triton" (H2's custom op) -----------------------------------


def test_involution_backend_triton_on_cpu_under_the_interpreter():
    x, kernels, grad_out, args, _ = make(2, 6, 7, 6, 2, 3, 2, None, 1, seed=5)
    x32, k32 = x.float().requires_grad_(), kernels.float().requires_grad_()
    y = involution(x32, k32, backend="triton", **args)
    np.testing.assert_allclose(y.detach().double().numpy(), involution_loops(x.numpy(), kernels.numpy(), **args), rtol=1e-5, atol=1e-5)
    y.backward(grad_out.float())
    want_x, want_kernels = unfold_grads(x, kernels, grad_out, args)
    torch.testing.assert_close(x32.grad.double(), want_x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k32.grad.double(), want_kernels, rtol=1e-5, atol=1e-5)


# --- what it accepts, and clear errors -------------------------------------------------------


def test_supports():
    x, kernels = torch.randn(1, 2, 3, 3), torch.randn(1, 1, 3, 3, 3, 3)
    assert tb.triton_supports(x, kernels)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        assert tb.triton_supports(x.to(dtype), kernels.to(dtype))
    assert not tb.triton_supports(x, kernels.double())  # mixed dtypes
    assert not tb.triton_supports(x.int(), kernels.int())
    assert not tb.triton_supports(x.to("meta"), kernels.to("meta"))
    assert not tb.triton_supports(x, "kernels")


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    x, kernels = torch.randn(1, 2, 3, 3), torch.randn(1, 1, 3, 3, 3, 3)
    assert not tb.triton_supports(x, kernels)
    with pytest.raises(ValueError, match="needs CUDA tensors, got x on cpu.*TRITON_INTERPRET=1"):
        tb.triton_forward(x, kernels, 1, 1, 1, 3, 3)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        tb.triton_backward(x, kernels, torch.randn(1, 2, 3, 3), 1, 1, 1)


def test_clear_errors_for_dtypes_devices_and_shapes():
    x, kernels = torch.randn(1, 2, 3, 3), torch.randn(1, 1, 3, 3, 3, 3)
    with pytest.raises(TypeError, match="dtype .*float16.*got torch.int32"):
        tb.triton_forward(x.int(), kernels.int(), 1, 1, 1, 3, 3)
    with pytest.raises(TypeError, match="kernels must have the same dtype as x \\(torch.float32\\), got torch.float64"):
        tb.triton_forward(x, kernels.double(), 1, 1, 1, 3, 3)
    with pytest.raises(ValueError, match="kernels must be on the same device as x"):
        tb.triton_forward(x, kernels.to("meta"), 1, 1, 1, 3, 3)
    with pytest.raises(TypeError, match="grad_out must be a torch.Tensor, got list"):
        tb.triton_backward(x, kernels, [1.0], 1, 1, 1)
    with pytest.raises(ValueError, match="grad_out must have shape \\(1, 2, 3, 3\\).*got \\(1, 2, 4, 4\\)"):
        tb.triton_backward(x, kernels, torch.randn(1, 2, 4, 4), 1, 1, 1)


def test_sizes_beyond_32_bit_indexing_are_refused():
    with pytest.raises(ValueError, match="32-bit integers; one group's input"):
        tb._check_sizes(2**16, 2**8, 2**8, 3, 4, 4)
    with pytest.raises(ValueError, match="one group's kernels"):
        tb._check_sizes(1, 4, 4, 7, 2**13, 2**13)
    tb._check_sizes(16, 56, 56, 7, 56, 56)  # RedNet-50's largest group is far below


def test_block_sizes_cover_the_group_in_powers_of_two():
    for channels, pixels, interpret in [(1, 1, False), (3, 81, True), (16, 3136, False), (80, 25, False), (512, 49, True)]:
        block_c, block_p = tb.block_sizes(channels, pixels, interpret)
        assert block_c & (block_c - 1) == 0 and block_p & (block_p - 1) == 0
        assert block_c >= min(channels, 64) and block_c <= max(64, channels)
        assert block_c * block_p <= (1 << 14 if interpret else 4096) or block_p == 16
        assert block_p <= max(16, 2 * pixels)


def test_unavailable_triton_is_reported(monkeypatch):
    monkeypatch.setattr(tb, "_tried", True)
    monkeypatch.setattr(tb, "_triton", None)
    monkeypatch.setattr(tb, "_error", "cannot import triton (ImportError: no module); " + tb.INSTALL_HINT)
    x, kernels = torch.randn(1, 2, 3, 3), torch.randn(1, 1, 3, 3, 3, 3)
    assert not tb.triton_available() and not tb.triton_interpreting() and not tb.triton_supports(x, kernels)
    with pytest.raises(RuntimeError, match="Triton backend is unavailable: cannot import triton.*pip install"):
        tb.triton_forward(x, kernels, 1, 1, 1, 3, 3)


def _run(code: str, env_extra: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )


def test_the_library_imports_without_triton_and_says_why_it_is_missing():
    code = """
        import sys
        sys.modules["triton"] = None  # as if it were not installed: `import triton` raises ImportError
        import torch
        import involution_edu, involution_edu.triton_backend as tb
        from involution_edu.functional import available_backends, involution
        assert not tb.triton_available()
        assert "cannot import triton" in tb.triton_error() and "pip install" in tb.triton_error(), tb.triton_error()
        x, kernels = torch.randn(1, 2, 5, 5), torch.randn(1, 1, 3, 3, 5, 5)
        assert not tb.triton_supports(x, kernels) and "triton" not in available_backends()
        assert involution(x, kernels).shape == (1, 2, 5, 5)
        try:
            involution(x, kernels, backend="triton")
        except RuntimeError as error:
            assert "pip install" in str(error), error
        else:
            raise AssertionError("backend='triton' without triton did not raise")
        print("ok")
    """
    result = _run(code, {"INVOLUTION_EDU_NATIVE": "0", "TRITON_INTERPRET": "1"})
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def _gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_script_has_help_and_exits_clearly_without_cuda(monkeypatch, capsys):
    gpu_check = _gpu_check_module()
    with pytest.raises(SystemExit) as exit_help:
        gpu_check.main(["--help"])
    assert exit_help.value.code == 0 and "--json" in capsys.readouterr().out
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this test is about the machine without a GPU
    with pytest.raises(SystemExit) as exit_no_gpu:
        gpu_check.main(["--quick", "--json", "unused.json"])
    assert exit_no_gpu.value.code == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "TRITON_INTERPRET" in err
    assert gpu_check.REDNET50_SHAPES == [(64, 56), (128, 28), (256, 14), (512, 7)]
