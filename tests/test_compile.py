"""``torch.compile`` and ``torch.export`` of the involution op and module: no graph break,
the same numbers as eager mode, dynamic sizes that stay dynamic, and the same backend as in
eager mode. Small shapes: Inductor compiles C++ for each graph, which is slow on 2 cores, so
only the test that needs Inductor (pytorch/pytorch#198119) uses it; the others use
``aot_eager`` (Dynamo + AOTAutograd with the ops' fake and autograd rules, no code generation).
"""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim, export

from involution_edu import Involution, involution
from involution_edu.functional import resolve_backend, set_default_backend
from strategies import single_thread  # noqa: F401 (fixture)

# These tests exercise torch.jit.trace and the legacy ONNX exporter on purpose (users still call them);
# torch 2.13 marks both as deprecated, which is not this project's warning to act on.
TORCH_DEPRECATIONS = [
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]
pytestmark = [pytest.mark.usefixtures("single_thread"), *TORCH_DEPRECATIONS]


def _fresh():
    torch._dynamo.reset()


def _eager_and_compiled(module, x, backend):
    """Output and input gradient of ``module`` in eager mode and compiled with ``fullgraph=True``."""
    results = []
    grad_out = None
    for run in (module, torch.compile(module, fullgraph=True, backend=backend)):
        xr = x.detach().clone().requires_grad_(True)
        out = run(xr)
        if grad_out is None:
            grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
        (grad_x,) = torch.autograd.grad(out, xr, grad_out)
        results.append((out.detach(), grad_x))
    return results


def test_inductor_gradients_equal_eager_at_odd_sizes_with_stride_2():
    """pytorch/pytorch#198119: Inductor's avg_pool2d(ceil_mode=True) backward divides an overhanging
    window by the full window size; the module's pooling avoids ceil_mode (module.stride_pool)."""
    _fresh()
    torch.manual_seed(0)
    module = Involution(16, 3, stride=2).double()
    x = torch.randn(2, 16, 9, 9, dtype=torch.float64)
    (out, grad_x), (out_c, grad_x_c) = _eager_and_compiled(module, x, "inductor")
    torch.testing.assert_close(out_c, out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad_x_c, grad_x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("channels_last", [True, False])
def test_inductor_trains_a_stride_2_layer_at_a_second_size(channels_last):
    """Regression (issue 18): with automatic dynamic shapes (the default: the second size recompiles
    with symbolic H and W), Inductor raised ``ValueRangeError: Invalid ranges [0:-1]`` on the 6-D view
    of a channels-last ``conv2`` output for a stride-2 layer whose input requires grad; the unfused
    path now applies a contiguous copy under compile (module.py). Forward and backward against eager
    mode: channels last on both paths of the module (the fused default and ``return_kernels=True``,
    where the bug was), contiguous on the default path. Cost: about 20 s per compiled path on a busy
    2-core machine (Inductor compiles C++ for each graph, twice: both sizes); K=3 and 16 channels
    already showed the bug (checked with the copy removed)."""
    torch.manual_seed(0)
    module = Involution(16, 3, stride=2)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    for return_kernels in ((True, False) if channels_last else (False,)):
        _fresh()
        eager = (lambda a: module(a, return_kernels=True)[0]) if return_kernels else module
        compiled = torch.compile(eager)
        for height, width in ((8, 9), (11, 12)):  # the second size is traced with dynamic shapes
            x = torch.randn(2, 16, height, width)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            results = []
            for run in (compiled, eager):
                leaf = x.detach().clone().requires_grad_(True)
                out = run(leaf)
                out.square().sum().backward()
                results.append((out.detach(), leaf.grad, module.conv1.conv.weight.grad.clone()))
                module.zero_grad()
            for got, want in zip(*results):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["auto", "eager", "native"])
def test_compiled_module_with_every_backend_equals_eager(backend):
    _fresh()
    torch.manual_seed(0)
    module = Involution(16, 3, stride=2)
    x = torch.randn(2, 16, 7, 8)
    previous = set_default_backend(backend)
    try:
        (out, grad_x), (out_c, grad_x_c) = _eager_and_compiled(module, x, "aot_eager")
    finally:
        set_default_backend(previous)
    torch.testing.assert_close(out_c, out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad_x_c, grad_x, rtol=1e-6, atol=1e-6)


def _backends_in_graph(fn, *args) -> list:
    """The ``backend`` argument of every involution op in the graph that Dynamo captures."""
    found = []

    def record(graph_module, example_inputs):
        from functorch.compile import make_boxed_func
        from torch._functorch.aot_autograd import aot_module_simplified

        def inner(gm, inputs):
            for node in gm.graph.nodes:
                if node.op == "call_function" and "involution_edu" in str(node.target):
                    found.append((str(node.target), node.args[-1]))
            return make_boxed_func(gm)

        return aot_module_simplified(graph_module, example_inputs, fw_compiler=inner, bw_compiler=inner)

    _fresh()
    out = torch.compile(fn, backend=record, fullgraph=True)(*args)
    if out.requires_grad:
        out.sum().backward()  # compiles the backward graph
    return found


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_auto_picks_the_same_backend_under_compile(dtype):
    x, kernels = torch.randn(1, 4, 6, 6, dtype=dtype), torch.randn(1, 2, 3, 3, 6, 6, dtype=dtype)
    expected = resolve_backend("auto", x, kernels)
    found = _backends_in_graph(lambda a, b: involution(a, b), x, kernels)
    assert found == [("involution_edu.involution.default", expected)]


def test_native_under_compile_does_not_refuse_fake_tensors():
    x, kernels = torch.randn(1, 4, 6, 6), torch.randn(1, 2, 3, 3, 6, 6)
    found = _backends_in_graph(lambda a, b: involution(a, b, backend="native"), x, kernels)
    assert found == [("involution_edu.involution.default", "native")]


def test_backward_graph_is_made_of_the_grad_ops():
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    kernels = torch.randn(1, 2, 3, 3, 6, 6, requires_grad=True)
    found = _backends_in_graph(lambda a, b: involution(a, b, backend="eager").sum(), x, kernels)
    assert found == [
        ("involution_edu.involution.default", "eager"),  # the forward graph
        ("involution_edu.involution_grad_x.default", "eager"),  # the backward graph
        ("involution_edu.involution_grad_kernels.default", "eager"),
    ]


@pytest.mark.parametrize("stride, backend", [(1, "auto"), (2, "auto"), (2, "eager")])
def test_export_keeps_batch_and_spatial_sizes_dynamic(stride, backend):
    torch.manual_seed(0)
    module = Involution(16, 3, stride=stride).eval()
    batch, height, width = Dim("batch", min=1, max=64), Dim("height", min=4, max=512), Dim("width", min=4, max=512)
    previous = set_default_backend(backend)
    try:
        program = export(module, (torch.randn(2, 16, 12, 12),), dynamic_shapes={"x": {0: batch, 2: height, 3: width}})
    finally:
        set_default_backend(previous)
    ops = [node.args[-1] for node in program.graph.nodes if "involution_edu" in str(node.target)]
    assert ops == [resolve_backend(backend, torch.randn(1, 16, 4, 4), torch.randn(1, 1, 3, 3, 4, 4))]
    placeholder = next(node for node in program.graph.nodes if node.op == "placeholder" and node.name == "x")
    assert all(isinstance(size, torch.SymInt) for size in (placeholder.meta["val"].shape[i] for i in (0, 2, 3)))
    for shape in [(3, 16, 9, 13), (1, 16, 5, 4)]:
        x = torch.randn(shape)
        torch.testing.assert_close(program.module()(x), module(x), rtol=1e-6, atol=1e-6)


def test_compile_with_dynamic_shapes_does_not_recompile():
    _fresh()
    torch.manual_seed(0)
    module = Involution(16, 3, stride=2).eval()
    counts = torch._dynamo.utils.counters
    counts.clear()
    compiled = torch.compile(module, fullgraph=True, dynamic=True, backend="aot_eager")
    # distinct H and W: equal sizes would be "duck sized" into one symbol, and batch 1 specialised
    for shape in [(2, 16, 9, 11), (3, 16, 12, 7)]:
        x = torch.randn(shape)
        torch.testing.assert_close(compiled(x), module(x), rtol=1e-6, atol=1e-6)
    assert counts["stats"]["unique_graphs"] == 1


def test_compiled_autocast_bfloat16_equals_eager_autocast():
    _fresh()
    torch.manual_seed(0)
    module = Involution(16, 3, stride=2)
    x = torch.randn(2, 16, 9, 9)

    def run(a):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return module(a)

    eager, compiled = run(x), torch.compile(run, fullgraph=True, backend="aot_eager")(x)
    assert eager.dtype == compiled.dtype == torch.bfloat16
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
