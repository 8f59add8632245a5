"""The custom operators of :mod:`involution_edu.ops` under PyTorch's own tools: ``opcheck``,
derivatives of every order, ``torch.func``, autocast and low precision, ``torch.jit.trace``,
legacy ONNX export. (``torch.compile``/``torch.export``: tests/test_compile.py.)"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from involution_edu import Involution, involution, involution_loops, involution_unfold
from involution_edu.functional import available_backends
from involution_edu.ops import involution_grad_kernels, involution_grad_x, involution_op
from strategies import make_case, single_thread  # noqa: F401 (fixture)

# These tests exercise torch.jit.trace and the legacy ONNX exporter on purpose (users still call them);
# torch 2.13 marks both as deprecated, which is not this project's warning to act on.
TORCH_DEPRECATIONS = [
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]
pytestmark = [pytest.mark.usefixtures("single_thread"), *TORCH_DEPRECATIONS]

BACKENDS = [name for name in available_backends() if name != "triton"]  # triton: in a subprocess below

# (B, G, C/G, K, stride, dilation, H, W)
OPCHECK_CASES = [
    (1, 1, 2, 3, 1, 1, 5, 5),
    (2, 2, 2, 3, 2, 1, 7, 6),  # stride 2, odd size, groups > 1
    (1, 2, 1, 3, 1, 2, 6, 7),  # dilation 2
]


def _ids(params) -> str:
    return "B{}G{}n{}K{}s{}d{}_{}x{}".format(*params)


def _problem(params, dtype=torch.float64, requires_grad=False, seed=0):
    batch, groups, per_group, kernel_size, stride, dilation, height, width = params
    case = make_case(batch, groups, per_group, kernel_size, stride, dilation, height, width, seed=seed)
    x, kernels = case.tensors(requires_grad=requires_grad)
    padding = dilation * (kernel_size - 1) // 2
    return x.to(dtype).detach().requires_grad_(requires_grad), kernels.to(dtype).detach().requires_grad_(requires_grad), (
        stride, padding, dilation)


@pytest.mark.parametrize("params", OPCHECK_CASES, ids=_ids)
@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_every_op(backend, params):
    x, kernels, (stride, padding, dilation) = _problem(params, requires_grad=True)
    grad_out = torch.randn(x.shape[0], x.shape[1], kernels.shape[4], kernels.shape[5], dtype=x.dtype, requires_grad=True)
    calls = [
        (involution_op, (x, kernels, stride, padding, dilation, backend)),
        (involution_grad_x, (grad_out, kernels, x.shape[2], x.shape[3], stride, padding, dilation, backend)),
        (involution_grad_kernels, (grad_out, x, kernels.shape[1], kernels.shape[2], stride, padding, dilation, backend)),
    ]
    for op, args in calls:
        results = torch.library.opcheck(op, args)
        assert all(result == "SUCCESS" for result in results.values()), (op, results)


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_with_channels_last_and_non_contiguous_inputs(backend):
    x, kernels, (stride, padding, dilation) = _problem((2, 2, 2, 3, 2, 1, 7, 6), requires_grad=True)
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    k_t = kernels.detach().transpose(4, 5).contiguous().transpose(4, 5).requires_grad_(True)
    results = torch.library.opcheck(involution_op, (x_cl, k_t, stride, padding, dilation, backend))
    assert all(result == "SUCCESS" for result in results.values()), results
    out = involution_op(x_cl, k_t, stride, padding, dilation, backend)
    assert out.is_contiguous(memory_format=torch.channels_last) == (backend == "native")


def test_opcheck_rejects_a_wrong_fake_implementation():
    """opcheck is a real check: an op whose fake shape disagrees with its output fails it."""

    @torch.library.custom_op("involution_edu_test::wrong_shape", mutates_args=())
    def wrong(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @wrong.register_fake
    def _(x):
        return x.new_empty(x.shape[0] + 1)

    with pytest.raises(Exception):
        torch.library.opcheck(wrong, (torch.randn(3),))


GRAD_CASES = [(1, 2, 2, 3, 2, 1, 5, 6), (1, 1, 2, 3, 1, 2, 5, 5)]


@pytest.mark.parametrize("params", GRAD_CASES, ids=_ids)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_and_gradgradcheck(backend, params):
    x, kernels, (stride, padding, dilation) = _problem(params, requires_grad=True, seed=2)

    def op(a, b):
        return involution(a, b, stride, padding, dilation, backend=backend)

    assert gradcheck(op, (x, kernels), eps=1e-6, atol=1e-7)
    assert gradgradcheck(op, (x, kernels), eps=1e-6, atol=1e-7)


def _gradient_penalty(op, x, kernels):
    """WGAN-GP style: loss = mean(y^2) + || d loss0 / dx ||^2, differentiated to x and kernels."""
    out = op(x, kernels)
    (grad_x,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
    loss = out.tanh().sum() + grad_x.pow(2).sum()
    return torch.autograd.grad(loss, (x, kernels))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_penalty_equals_unfold(backend):
    x, kernels, (stride, padding, dilation) = _problem((2, 2, 2, 3, 2, 1, 7, 6), requires_grad=True, seed=5)
    got = _gradient_penalty(lambda a, b: involution(a, b, stride, padding, dilation, backend=backend), x, kernels)
    expected = _gradient_penalty(lambda a, b: involution_unfold(a, b, stride, padding, dilation), x, kernels)
    for g, e, label in zip(got, expected, ("x", "kernels")):
        assert e.abs().max() > 1e-3  # the second-order terms are really there
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10, msg=label)


@pytest.mark.parametrize("backend", BACKENDS)
def test_third_derivative_equals_unfold(backend):
    """Any order: d/dx of a Hessian-vector product is again made of the three ops."""
    x, kernels, _ = _problem((1, 1, 2, 3, 1, 1, 4, 4), requires_grad=True, seed=8)

    def third(op):
        (gk,) = torch.autograd.grad(op(x, kernels).pow(3).sum(), kernels, create_graph=True)
        (gx,) = torch.autograd.grad(gk.pow(2).sum(), x, create_graph=True)
        return torch.autograd.grad(gx.sum(), kernels)[0]

    torch.testing.assert_close(third(lambda a, b: involution(a, b, backend=backend)), third(involution_unfold),
                               rtol=1e-9, atol=1e-9)


# --- torch.func -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_grad_and_jacrev(backend):
    x, kernels, (stride, padding, dilation) = _problem((2, 2, 1, 3, 2, 1, 5, 5), seed=3)

    def op(a, b):
        return involution(a, b, stride, padding, dilation, backend=backend)

    def ref(a, b):
        return involution_unfold(a, b, stride, padding, dilation)

    # vmap over a leading dim of both inputs, and of one input only.
    xs, ks = torch.stack([x, 2 * x, -x]), torch.stack([kernels, kernels.flip(-1), 3 * kernels])
    torch.testing.assert_close(torch.func.vmap(op)(xs, ks), torch.stack([ref(a, b) for a, b in zip(xs, ks)]))
    torch.testing.assert_close(torch.func.vmap(op, in_dims=(None, 0))(x, ks), torch.stack([ref(x, b) for b in ks]))
    # grad, and jacrev (vmap over the backward ops)
    loss = lambda f: (lambda a, b: f(a, b).sin().sum())  # noqa: E731
    torch.testing.assert_close(torch.func.grad(loss(op), argnums=(0, 1))(x, kernels),
                               torch.func.grad(loss(ref), argnums=(0, 1))(x, kernels))
    small_x, small_k, _ = _problem((1, 1, 1, 3, 2, 1, 3, 4), seed=4)  # same stride, tiny
    torch.testing.assert_close(torch.func.jacrev(op, argnums=(0, 1))(small_x, small_k),
                               torch.func.jacrev(ref, argnums=(0, 1))(small_x, small_k))
    # a Hessian-vector product through torch.func: jvp of grad (forward-over-reverse) is not
    # supported by custom ops, so reverse-over-reverse: grad of (grad . v)
    v = torch.randn_like(kernels)
    hvp = lambda f: torch.func.grad(lambda b: (torch.func.grad(loss(f), argnums=1)(x, b) * v).sum())  # noqa: E731
    torch.testing.assert_close(hvp(op)(kernels), hvp(ref)(kernels))


# --- precision and autocast ---------------------------------------------------------------------


def _big_problem(dtype):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 32, 12, 12, generator=generator, dtype=torch.float64)
    kernels = torch.randn(2, 2, 7, 7, 12, 12, generator=generator, dtype=torch.float64)
    return x, kernels


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", ["eager", "native"])
def test_low_precision_accumulates_in_float32(backend, dtype):
    """Inputs rounded to the low-precision dtype, products summed in float32, result rounded
    once: the error against float64 on the rounded inputs is within one rounding of the output."""
    x, kernels = _big_problem(dtype)
    xl, kl = x.to(dtype), kernels.to(dtype)
    exact = involution_unfold(xl.double(), kl.double())  # the same (rounded) inputs, in float64
    got = involution_op(xl, kl, 1, 3, 1, backend)
    assert got.dtype == dtype
    ulp = torch.finfo(dtype).eps * exact.abs().clamp_min(torch.finfo(dtype).tiny)  # one ulp at each output
    assert ((got.double() - exact).abs() <= ulp + 1e-4).all()  # 1e-4: float32 rounding of the sum
    # and float32 accumulation beats accumulating the taps in the low-precision dtype
    naive = sum(
        (kl[:, :, u, v].repeat_interleave(16, 1) * torch.nn.functional.pad(xl, (3,) * 4)[:, :, u:u + 12, v:v + 12])
        for u in range(7) for v in range(7)
    )
    assert (got.double() - exact).abs().max() < (naive.double() - exact).abs().max()


def test_bfloat16_error_against_float64_is_small():
    x, kernels = _big_problem(torch.bfloat16)
    exact = involution_unfold(x, kernels)
    ours = (involution(x.bfloat16(), kernels.bfloat16(), backend="eager").double() - exact).abs().max().item()
    unfold = (involution_unfold(x.bfloat16(), kernels.bfloat16()).double() - exact).abs().max().item()
    print(f"bf16 max error vs float64: involution {ours:.3g}, unfold {unfold:.3g} (outputs up to {exact.abs().max():.3g})")
    assert ours <= unfold * 1.05


@pytest.mark.parametrize("backend", ["auto", "eager"])
def test_involution_module_under_autocast_bfloat16(backend):
    from involution_edu.functional import set_default_backend

    torch.manual_seed(0)
    module = Involution(16, 3).eval()
    x = torch.randn(2, 16, 10, 10)
    reference = module.double()(x.double())
    module.float()
    previous = set_default_backend(backend)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(x)
    finally:
        set_default_backend(previous)
    assert out.dtype == torch.bfloat16
    error = (out.double() - reference).abs().max().item()
    assert error < 0.05 * reference.abs().max().item()


def test_autocast_casts_the_bare_op():
    x, kernels = torch.randn(1, 4, 5, 5), torch.randn(1, 2, 3, 3, 5, 5).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = involution_op(x, kernels, 1, 1, 1, "eager")
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), involution_unfold(x.bfloat16().double(), kernels.double()), rtol=0.01, atol=0.02)
    with pytest.raises(TypeError, match="same dtype"):
        involution_op(x, kernels, 1, 1, 1, "eager")  # outside autocast: refused


# --- tracing and exporting ------------------------------------------------------------------


def test_jit_trace_of_the_module_runs_at_another_size():
    torch.manual_seed(0)
    module = Involution(16, 3).eval()
    traced = torch.jit.trace(module, torch.randn(1, 16, 64, 64), check_trace=False)
    x = torch.randn(2, 16, 8, 8)
    out = traced(x)
    assert out.shape == (2, 16, 8, 8)
    torch.testing.assert_close(out, module(x), rtol=1e-5, atol=1e-5)


def test_jit_trace_with_stride_2_runs_at_odd_sizes():
    torch.manual_seed(0)
    module = Involution(16, 3, stride=2).eval()
    traced = torch.jit.trace(module, torch.randn(1, 16, 64, 64), check_trace=False)
    for shape in [(1, 16, 10, 12), (2, 16, 9, 9)]:  # the pooling's padding is traced from x's size
        x = torch.randn(shape)
        torch.testing.assert_close(traced(x), module(x), rtol=1e-5, atol=1e-5)


def test_traced_op_replayed_at_sizes_that_do_not_fit_refuses_clearly():
    def apply(x, kernels):
        return involution(x, kernels, stride=2)

    traced = torch.jit.trace(apply, (torch.randn(1, 4, 8, 8), torch.randn(1, 2, 3, 3, 4, 4)), check_trace=False)
    with pytest.raises(Exception, match="kernels spatial size must be the output size"):
        traced(torch.randn(1, 4, 9, 9), torch.randn(1, 2, 3, 3, 4, 4))  # 9x9 at stride 2 needs 5x5 kernels


def test_bare_op_checks_sizes():
    x, kernels = torch.randn(1, 4, 8, 8), torch.randn(1, 2, 3, 3, 7, 7)
    with pytest.raises(ValueError, match="kernels spatial size must be the output size"):
        involution_op(x, kernels, 1, 1, 1, "eager")
    with pytest.raises(ValueError, match="backend must be one of"):
        involution_op(x, torch.randn(1, 2, 3, 3, 8, 8), 1, 1, 1, "auto")


def _export_onnx_bytes(model, args) -> bytes:
    """Legacy (TorchScript) ONNX export to bytes. Without the ``onnx`` package the exporter builds
    and serialises the whole graph and fails only in a final step that inserts onnxscript
    functions (none here), so that step is replaced by the identity."""
    from unittest import mock

    from torch.onnx._internal.torchscript_exporter import onnx_proto_utils

    buffer = io.BytesIO()
    try:
        import onnx  # noqa: F401

        patch = mock.patch.object(onnx_proto_utils, "_add_onnxscript_fn", onnx_proto_utils._add_onnxscript_fn)
    except ImportError:
        patch = mock.patch.object(onnx_proto_utils, "_add_onnxscript_fn", lambda model_bytes, custom_opsets: model_bytes)
    with patch:
        torch.onnx.export(model, args, buffer, dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}})
    return buffer.getvalue()


def test_legacy_onnx_export_has_the_input_and_the_unfold_formulation():
    torch.manual_seed(0)
    data = _export_onnx_bytes(Involution(16, 3, stride=2).eval(), (torch.randn(1, 16, 8, 8),))
    # ONNX op types and value names are stored as plain strings in the protobuf
    for needle in (b"Conv", b"Mul", b"ReduceSum", b"AveragePool", b"height"):
        assert needle in data, needle
    assert b"involution_edu" not in data
    try:
        import onnx
    except ImportError:
        return
    model = onnx.load_from_string(data)
    assert [i.name for i in model.graph.input][:1] == ["x"]


def test_legacy_onnx_export_of_the_bare_op_raises_clearly():
    class Bare(torch.nn.Module):
        def forward(self, x, kernels):
            return involution_op(x, kernels, 1, 1, 1, "eager")

    with pytest.raises(Exception, match="involution_edu::involution"):
        _export_onnx_bytes(Bare(), (torch.randn(1, 4, 5, 5), torch.randn(1, 2, 3, 3, 5, 5)))


# --- triton under the interpreter (a subprocess: TRITON_INTERPRET must be set before import) --

TRITON_PROBE = """
    import torch
    from torch.autograd import gradcheck, gradgradcheck
    from involution_edu import involution, involution_unfold
    from involution_edu.functional import available_backends
    assert "triton" in available_backends(), available_backends()
    torch.manual_seed(0)
    x = torch.randn(1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 2, 3, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    op = lambda a, b: involution(a, b, stride=2, backend="triton")
    # fast mode: a few random directions (the interpreter takes ~0.5 s per call)
    assert gradgradcheck(op, (x, k), eps=1e-6, atol=1e-7, fast_mode=True)
    def penalty(f):
        (gx,) = torch.autograd.grad(f(x, k).pow(2).sum(), x, create_graph=True)
        return torch.autograd.grad(gx.pow(2).sum(), (x, k))
    for got, expected in zip(penalty(op), penalty(lambda a, b: involution_unfold(a, b, stride=2))):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    print("ok")
"""


def test_triton_backend_differentiates_twice_under_the_interpreter():
    environment = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(TRITON_PROBE)], capture_output=True, text=True,
                            env=environment, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_loops_reference_agrees_on_the_op():
    """The op (every backend) against the loop oracle, once, at stride 2 and dilation 2."""
    case = make_case(1, 2, 2, 3, 2, 2, 9, 8, seed=12)
    expected = involution_loops(case.x, case.kernels, stride=2, dilation=2)
    x, kernels = case.tensors()
    for backend in BACKENDS:
        got = involution_op(x, kernels, 2, 2, 2, backend)
        torch.testing.assert_close(got, torch.from_numpy(expected), rtol=0, atol=1e-10)
