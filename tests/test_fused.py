"""The fused kernel-generating involution (:mod:`involution_edu.fused`): the loop reference,
derivatives of every order, ``opcheck``, ``torch.func``, compile/export, the module, what it saves
for the backward pass, and clear errors. (Triton under the interpreter: the end of this file.)"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from involution_edu import Involution, involution_loops
from involution_edu.functional import available_backends, involution
from involution_edu.fused import fused_kernels, involution_fused, involution_fused_backward, involution_fused_op
from involution_edu.shapes import output_size
from strategies import single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

BACKENDS = [name for name in available_backends() if name != "triton"]  # triton: in a subprocess below

# (B, C, C_r, G, K, stride, dilation, H, W)
CASES = [
    (2, 32, 8, 2, 7, 1, 1, 9, 10),   # the specialised float path: 16 channels per group, K = 7
    (2, 32, 5, 2, 3, 1, 1, 5, 21),   # K = 3, a row longer than a tile, C_r not a multiple of 8
    (1, 32, 8, 2, 3, 2, 1, 7, 6),    # stride 2, odd size
    (2, 16, 5, 2, 3, 1, 2, 6, 7),    # dilation 2, 8 channels per group
    (2, 12, 3, 3, 5, 2, 1, 8, 9),    # 4 channels per group, K = 5
    (1, 48, 12, 1, 3, 1, 1, 1, 1),   # one pixel, 48 channels in one group
    (1, 36, 17, 2, 3, 3, 2, 9, 4),   # 18 channels per group (two vectors), stride 3
]


def _ids(case) -> str:
    return "B{}C{}r{}G{}K{}s{}d{}_{}x{}".format(*case)


def _problem(case, dtype=torch.float64, seed=0):
    batch, channels, reduced, groups, k, stride, dilation, height, width = case
    padding = dilation * (k - 1) // 2
    out_h = output_size(height, k, stride, padding, dilation)
    out_w = output_size(width, k, stride, padding, dilation)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=g, dtype=dtype)
    h = torch.randn(batch, reduced, out_h, out_w, generator=g, dtype=dtype)
    weight = torch.randn(groups * k * k, reduced, generator=g, dtype=dtype) / reduced**0.5
    bias = torch.randn(groups * k * k, generator=g, dtype=dtype)
    return (x, h, weight, bias), (k, stride, padding, dilation)


def _loop_reference(x, h, weight, bias, k, stride, padding, dilation) -> np.ndarray:
    """The oracle: kernels from the span weights in NumPy, then the explicit loops."""
    kernels = np.einsum("tr,brij->btij", weight.numpy(), h.numpy()) + bias.numpy()[None, :, None, None]
    kernels = kernels.reshape(h.shape[0], -1, k, k, h.shape[2], h.shape[3])
    return involution_loops(x.numpy(), kernels, stride=stride, padding=padding, dilation=dilation)


def _unfused(x, h, weight, bias, k, stride, padding, dilation):
    """The same function written with the unfused op (autograd through the kernels tensor)."""
    return involution(x, fused_kernels(h, weight, bias, k), stride, padding, dilation, backend="eager")


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("backend", BACKENDS)
def test_value_and_gradients_match_the_loop_reference_and_the_unfused_op(backend, case):
    tensors, (k, stride, padding, dilation) = _problem(case, seed=hash(case) % 1000)
    out = involution_fused(*tensors, k, stride, padding, dilation, backend=backend)
    np.testing.assert_allclose(out.numpy(), _loop_reference(*tensors, k, stride, padding, dilation), rtol=1e-10, atol=1e-10)
    grad_out = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(3))
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    ours = torch.autograd.grad(involution_fused(*leaves, k, stride, padding, dilation, backend=backend), leaves, grad_out)
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    theirs = torch.autograd.grad(_unfused(*leaves, k, stride, padding, dilation), leaves, grad_out)
    for name, mine, expected in zip(("x", "h", "weight", "bias"), ours, theirs):
        torch.testing.assert_close(mine, expected, rtol=1e-10, atol=1e-10, msg=f"d{name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_agrees_with_float64_on_the_specialised_paths(backend):
    for case in CASES[:3]:
        tensors, params = _problem(case)
        expected = involution_fused(*tensors, *params, backend="eager")
        out = involution_fused(*(t.float() for t in tensors), *params, backend=backend)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)


def _channels_last(t):
    return t.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("backend", BACKENDS)
def test_channels_last_inputs_give_the_contiguous_results(backend, case, dtype):
    """x, h and grad_out channels last, one at a time and together (the native code copies
    channels-last pixels whole): the same values and gradients as contiguous inputs."""
    tensors, params = _problem(case, dtype=dtype, seed=7)
    x, h, weight, bias = tensors
    grad_out = torch.randn(involution_fused(*tensors, *params, backend="eager").shape, dtype=dtype,
                           generator=torch.Generator().manual_seed(5))
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)

    def run(x, h, grad_out):
        leaves = [x.clone().requires_grad_(True), h.clone().requires_grad_(True)]
        out = involution_fused(leaves[0], leaves[1], weight, bias, *params, backend=backend)
        return (out, *torch.autograd.grad(out, leaves, grad_out))

    expected = run(x, h, grad_out)
    for layouts in ((True, False, False), (False, True, False), (False, False, True), (True, True, True)):
        args = [_channels_last(t) if cl else t for t, cl in zip((x, h, grad_out), layouts)]
        for name, mine, theirs in zip(("out", "dx", "dh"), run(*args), expected):
            torch.testing.assert_close(mine, theirs, **tol, msg=f"{name} with channels last x, h, grad_out = {layouts}")


GRAD_CASES = [(1, 4, 2, 2, 3, 2, 1, 4, 3), (1, 2, 1, 1, 3, 1, 2, 4, 4)]  # stride 2 + groups; dilation 2


@pytest.mark.parametrize("case", GRAD_CASES, ids=_ids)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_and_gradgradcheck_in_float64(backend, case):
    tensors, (k, stride, padding, dilation) = _problem(case)
    leaves = [t.requires_grad_(True) for t in tensors]

    def fn(*args):
        return involution_fused(*args, k, stride, padding, dilation, backend=backend)

    assert gradcheck(fn, leaves)
    assert gradgradcheck(fn, leaves)


@pytest.mark.parametrize("backend", BACKENDS)
def test_third_derivative_through_the_double_backward(backend):
    """The double backward is written in ops with autograd rules, so it is differentiable again."""
    tensors, (k, stride, padding, dilation) = _problem(GRAD_CASES[0])
    x, h, weight, bias = [t.requires_grad_(True) for t in tensors]
    out = involution_fused(x, h, weight, bias, k, stride, padding, dilation, backend=backend)
    (gx,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
    (gh,) = torch.autograd.grad(gx.pow(2).sum(), h, create_graph=True)
    (gw,) = torch.autograd.grad(gh.sum(), weight)
    x2, h2, w2, b2 = [t.detach().requires_grad_(True) for t in (x, h, weight, bias)]
    out2 = _unfused(x2, h2, w2, b2, k, stride, padding, dilation)
    (gx2,) = torch.autograd.grad(out2.pow(2).sum(), x2, create_graph=True)
    (gh2,) = torch.autograd.grad(gx2.pow(2).sum(), h2, create_graph=True)
    (gw2,) = torch.autograd.grad(gh2.sum(), w2)
    torch.testing.assert_close(gw, gw2, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_both_ops(backend):
    tensors, (k, stride, padding, dilation) = _problem((2, 2, 1, 2, 3, 2, 1, 3, 4))
    leaves = [t.requires_grad_(True) for t in tensors]
    out = involution_fused_op(*leaves, k, stride, padding, dilation, backend)
    grad_out = torch.randn(out.shape, dtype=out.dtype, requires_grad=True)
    for op, args in ((involution_fused_op, (*leaves, k, stride, padding, dilation, backend)),
                     (involution_fused_backward, (grad_out, *leaves, k, stride, padding, dilation, backend))):
        results = torch.library.opcheck(op, args)
        assert all(result == "SUCCESS" for result in results.values()), (op, results)
    x_cl = tensors[0].detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    results = torch.library.opcheck(involution_fused_op, (x_cl, *leaves[1:], k, stride, padding, dilation, backend))
    assert all(result == "SUCCESS" for result in results.values()), results
    out = involution_fused_op(x_cl, *leaves[1:], k, stride, padding, dilation, backend)
    assert out.is_contiguous(memory_format=torch.channels_last) == (backend == "native")


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_and_per_sample_gradients(backend):
    tensors, (k, stride, padding, dilation) = _problem((3, 4, 2, 2, 3, 1, 1, 4, 5))
    x, h, weight, bias = tensors

    def layer(xi, hi, w, b):  # one sample: (C, H, W), (C_r, H', W')
        return involution_fused(xi[None], hi[None], w, b, k, stride, padding, dilation, backend=backend)[0]

    batched = torch.func.vmap(layer, in_dims=(0, 0, None, None))(x, h, weight, bias)
    torch.testing.assert_close(batched, involution_fused(*tensors, k, stride, padding, dilation, backend=backend))

    def loss(w, b, xi, hi):
        return layer(xi, hi, w, b).pow(2).sum()

    per_sample = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)), in_dims=(None, None, 0, 0))(weight, bias, x, h)
    for n in range(x.shape[0]):
        w, b = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
        expected = torch.autograd.grad(_unfused(x[n:n + 1], h[n:n + 1], w, b, k, stride, padding, dilation).pow(2).sum(), (w, b))
        torch.testing.assert_close(per_sample[0][n], expected[0])
        torch.testing.assert_close(per_sample[1][n], expected[1])
    # per-sample span weights (vmapped weight): one call per slice
    weights = torch.stack([weight, 2 * weight])
    out = torch.func.vmap(lambda w: involution_fused(x, h, w, bias, k, stride, padding, dilation, backend=backend))(weights)
    torch.testing.assert_close(out[1], involution_fused(x, h, 2 * weight, bias, k, stride, padding, dilation, backend=backend))


def test_autocast_runs_in_bfloat16_and_accumulates_in_float32():
    tensors, params = _problem(CASES[0], dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = involution_fused(*tensors, *params)
    assert out.dtype == torch.bfloat16
    expected = involution_fused(*(t.bfloat16().float() for t in tensors), *params)
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=5e-2)


# --- the module ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stride,dilation,channels_last", [(1, 1, False), (2, 1, True), (1, 2, True), (3, 1, False)])
def test_module_fused_path_equals_the_unfused_path(stride, dilation, channels_last):
    torch.manual_seed(0)
    module = Involution(32, 3, stride=stride, dilation=dilation, reduction_ratio=4, group_channels=8).double()
    x = torch.randn(2, 32, 9, 7, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    results = []
    for return_kernels in (False, True):
        module.zero_grad()
        xr = x.detach().clone().requires_grad_(True)
        out = module(xr, return_kernels=return_kernels)
        if return_kernels:
            out, kernels = out
            assert kernels.shape == (2, 4, 3, 3, out.shape[2], out.shape[3])
        out.pow(2).sum().backward()
        grads = [xr.grad] + [p.grad.clone() for p in module.parameters()]
        results.append((out, grads))
        if channels_last and "native" in available_backends():
            assert out.is_contiguous(memory_format=torch.channels_last)
    (out_f, grads_f), (out_u, grads_u) = results
    torch.testing.assert_close(out_f, out_u, rtol=1e-10, atol=1e-10)
    for mine, theirs in zip(grads_f, grads_u):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-9)


def test_module_state_dict_names_are_unchanged():
    module = Involution(32, 7)
    assert sorted(module.state_dict()) == sorted([
        "conv1.conv.weight", "conv1.bn.weight", "conv1.bn.bias", "conv1.bn.running_mean", "conv1.bn.running_var",
        "conv1.bn.num_batches_tracked", "conv2.conv.weight", "conv2.conv.bias",
    ])


def _saved_bytes(fn) -> int:
    """Bytes of distinct storages autograd saves for backward while ``fn`` runs."""
    seen = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def test_the_fused_layer_does_not_save_the_kernels():
    torch.manual_seed(0)
    module = Involution(64, 7)
    x = torch.randn(2, 64, 14, 14, requires_grad=True)
    fused = _saved_bytes(lambda: module(x))
    unfused = _saved_bytes(lambda: module(x, return_kernels=True))
    kernels_bytes = 2 * 4 * 49 * 14 * 14 * 4  # (B, G*K*K, H', W') float32
    bias_bytes = module.conv2.conv.bias.numel() * 4  # the fused op saves the bias, conv2 does not
    assert unfused - fused >= kernels_bytes - bias_bytes  # the kernels are not kept
    assert fused <= x.numel() * 4 * 2  # x, conv1's output, h (C/4 channels each) and the weights


# --- compile and export ---------------------------------------------------------------------------


# --- errors -----------------------------------------------------------------------------------------


def test_clear_errors():
    tensors, (k, stride, padding, dilation) = _problem(CASES[0])
    x, h, weight, bias = tensors
    with pytest.raises(ValueError, match="G\\*K\\*K rows"):
        involution_fused(x, h, weight[:-1], bias[:-1], k)
    with pytest.raises(ValueError, match="bias must have shape"):
        involution_fused(x, h, weight, bias[:-1], k)
    with pytest.raises(ValueError, match="h must have weight.shape\\[1\\]"):
        involution_fused(x, h[:, :-1], weight, bias, k)
    with pytest.raises(ValueError, match="kernels spatial size|output size"):
        involution_fused(x, h[:, :, :-1], weight, bias, k)
    with pytest.raises(TypeError, match="same dtype"):
        involution_fused(x, h.float(), weight, bias, k)
    with pytest.raises(TypeError, match="h must be a torch.Tensor"):
        involution_fused(x, "h", weight, bias, k)


@pytest.mark.parametrize("shape,name", [((1, 32, 0, 5), "height"), ((1, 32, 5, 0), "width")])
def test_empty_spatial_input_names_the_argument(shape, name):
    with pytest.raises(ValueError, match=f"x must have a {name} .* at least 1, got shape {tuple(shape)}".replace("(", "\\(").replace(")", "\\)")):
        Involution(32, 3)(torch.randn(shape))


@pytest.mark.skipif("native" not in available_backends(), reason="the native kernel is not built here")
def test_native_entry_points_refuse_inconsistent_sizes():
    from involution_edu import native

    tensors, (k, stride, padding, dilation) = _problem(CASES[0], dtype=torch.float32)
    x, h, weight, bias = tensors
    with pytest.raises(ValueError, match="h must have shape"):
        native.native_fused_forward(x, h[:, :-1], weight, bias, k, stride, padding, dilation)
    with pytest.raises(ValueError, match="kernels spatial size|output size"):
        native.native_fused_forward(x, h[:, :, 1:], weight, bias, k, stride, padding, dilation)
    with pytest.raises(ValueError, match="grad_out must have shape"):
        native.native_fused_backward(x[:, :, :-1], x, h, weight, bias, k, stride, padding, dilation)
    library = native.load_native()
    bad = native._longs([2, 32, 9, 10, 2, 7, 9, 10, 1, 3, 1, 0])  # C_r = 0
    assert library.involution_fused_scratch_per_thread(bad, 0) == -1
    bad = native._longs([2, 32, 9, 10, 2, 7, 8, 10, 1, 3, 1, 8])  # H' inconsistent
    assert library.involution_fused_scratch_per_thread(bad, 1) == -1
    out = torch.empty(2, 32, 9, 10)
    code = library.involution_fused_forward_f32(bad, x.data_ptr(), native._longs(x.stride()), h.data_ptr(),
                                                native._longs(h.stride()), weight.data_ptr(), bias.data_ptr(),
                                                out.data_ptr(), native._longs(out.stride()), out.data_ptr(), 1 << 30, 1)
    assert code != 0


# --- Triton, under the interpreter (a subprocess: TRITON_INTERPRET is read when triton is imported) ---

TRITON_PROBE = """
    import torch
    from torch.autograd import gradcheck, gradgradcheck
    from involution_edu.fused import involution_fused
    from involution_edu.functional import involution
    from involution_edu.fused import fused_kernels
    torch.manual_seed(0)
    for (b, c, r, g, k, s, d, hh, ww) in [(1, 8, 3, 2, 3, 1, 1, 5, 4), (2, 6, 4, 3, 3, 2, 1, 5, 6), (1, 4, 2, 1, 3, 1, 2, 5, 5)]:
        p = d * (k - 1) // 2
        oh, ow = (hh + 2 * p - d * (k - 1) - 1) // s + 1, (ww + 2 * p - d * (k - 1) - 1) // s + 1
        args = [torch.randn(b, c, hh, ww, dtype=torch.float64), torch.randn(b, r, oh, ow, dtype=torch.float64),
                torch.randn(g * k * k, r, dtype=torch.float64), torch.randn(g * k * k, dtype=torch.float64)]
        go = torch.randn(b, c, oh, ow, dtype=torch.float64)
        grads = {}
        for backend in ("eager", "triton"):
            leaves = [t.clone().requires_grad_(True) for t in args]
            out = involution_fused(*leaves, k, s, p, d, backend=backend)
            grads[backend] = [out, *torch.autograd.grad(out, leaves, go)]
        for mine, ref in zip(grads["triton"], grads["eager"]):
            torch.testing.assert_close(mine, ref, rtol=1e-10, atol=1e-10)
        out32 = involution_fused(*(t.float() for t in args), k, s, p, d, backend="triton")
        torch.testing.assert_close(out32.double(), grads["eager"][0], rtol=1e-4, atol=1e-4)
    # the smallest case, and fast mode (random directions): each call interprets a few programs
    b, c, r, g, k, s, p, d = 1, 2, 1, 1, 3, 1, 1, 1
    leaves = [torch.randn(shape, dtype=torch.float64, requires_grad=True) for shape in ((b, c, 3, 3), (b, r, 3, 3), (9, r), (9,))]
    fn = lambda *a: involution_fused(*a, k, s, p, d, backend="triton")
    assert gradcheck(fn, leaves, fast_mode=True)
    assert gradgradcheck(fn, leaves, fast_mode=True)
    print("TRITON FUSED OK")
"""


def test_triton_fused_kernels_under_the_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(TRITON_PROBE)], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0 and "TRITON FUSED OK" in result.stdout, result.stderr[-3000:]
