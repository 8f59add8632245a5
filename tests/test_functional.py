"""The PyTorch ops: gradients (gradcheck), involution's hand-written backward against
autograd through involution_unfold, and behaviour on awkward tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from torch.autograd import gradcheck

from involution_edu import involution_loops, involution_unfold
from strategies import involution_backends, involution_cases, make_case, single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

OPS = {"involution_unfold": involution_unfold, **involution_backends()}
BACKENDS = involution_backends()

# (B, G, C/G, K, stride, dilation, H, W, padding)
GRAD_CASES = [
    (1, 1, 2, 3, 1, 1, 5, 5, None),
    (2, 2, 1, 3, 2, 1, 5, 6, None),
    (1, 2, 2, 3, 1, 2, 6, 5, None),
    (1, 1, 1, 5, 3, 1, 7, 7, None),
    (2, 3, 1, 3, 2, 2, 7, 6, None),
    (1, 2, 1, 1, 2, 1, 4, 5, None),
    (1, 1, 2, 3, 1, 1, 4, 4, 0),
    (1, 1, 1, 2, 2, 1, 5, 5, 1),  # even K, explicit padding
]


def _ids(params) -> str:
    return "B{}G{}n{}K{}s{}d{}_{}x{}_p{}".format(*params)


@pytest.mark.parametrize("params", GRAD_CASES, ids=_ids)
@pytest.mark.parametrize("name", list(OPS))
def test_gradcheck_x_and_kernels(name, params):
    case = make_case(*params, seed=11)
    x, kernels = case.tensors(requires_grad=True)
    assert gradcheck(lambda a, b: OPS[name](a, b, **case.kwargs), (x, kernels), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("which", ["x", "kernels"])
@pytest.mark.parametrize("name", list(OPS))
def test_gradcheck_only_one_input_requires_grad(name, which):
    case = make_case(2, 2, 2, 3, 2, 1, 6, 5, seed=4)
    x, kernels = case.tensors()
    (x if which == "x" else kernels).requires_grad_(True)
    assert gradcheck(lambda a, b: OPS[name](a, b, **case.kwargs), (x, kernels), eps=1e-6, atol=1e-7)
    out = OPS[name](x, kernels, **case.kwargs)
    out.sum().backward()
    assert (x.grad is not None) == (which == "x")
    assert (kernels.grad is not None) == (which == "kernels")


@pytest.mark.parametrize("name", list(OPS))
def test_no_grad_needed_gives_no_graph(name):
    case = make_case(1, 1, 2, 3, 1, 1, 4, 4)
    x, kernels = case.tensors()
    assert not OPS[name](x, kernels).requires_grad


@settings(max_examples=40, deadline=None)
@given(case=involution_cases(max_work=200_000))
def test_involution_gradients_equal_unfold_gradients(case):
    grads = {}
    for name, op in OPS.items():
        x, kernels = case.tensors(requires_grad=True)
        out = op(x, kernels, **case.kwargs)
        grad_out = torch.from_numpy(np.random.default_rng(0).standard_normal(out.shape))
        out.backward(grad_out)
        grads[name] = (out.detach(), x.grad, kernels.grad)
    for name in BACKENDS:
        for reference, got, label in zip(grads["involution_unfold"], grads[name], ("output", "x.grad", "kernels.grad")):
            torch.testing.assert_close(got, reference, rtol=0, atol=1e-10, msg=f"{name} {label}")


@pytest.mark.parametrize("name", list(OPS))
def test_non_contiguous_inputs_and_grad_output(name):
    case = make_case(2, 2, 2, 3, 1, 1, 6, 6, seed=9)
    expected = involution_loops(case.x, case.kernels)
    # Same values, laid out transposed in memory.
    x = torch.tensor(case.x.transpose(0, 1, 3, 2).copy()).transpose(2, 3).requires_grad_(True)
    kernels = torch.tensor(case.kernels.transpose(0, 1, 2, 3, 5, 4).copy()).transpose(4, 5).requires_grad_(True)
    assert not x.is_contiguous() and not kernels.is_contiguous()
    out = OPS[name](x, kernels)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=0, atol=1e-10)
    grad_out = torch.randn(2, 4, 6, 6, dtype=torch.float64).transpose(2, 3)  # non-contiguous
    out.backward(grad_out)
    x_ref, kernels_ref = case.tensors(requires_grad=True)
    involution_unfold(x_ref, kernels_ref).backward(grad_out.contiguous())
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(kernels.grad, kernels_ref.grad, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", list(OPS))
def test_inputs_not_modified_and_output_fresh(name):
    case = make_case(1, 2, 2, 3, 2, 1, 7, 7, seed=3)
    x, kernels = case.tensors(requires_grad=True)
    x_before, kernels_before = x.detach().clone(), kernels.detach().clone()
    out = OPS[name](x, kernels, stride=2)
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(x.detach(), x_before, rtol=0, atol=0)
    torch.testing.assert_close(kernels.detach(), kernels_before, rtol=0, atol=0)
    assert out.data_ptr() not in (x.data_ptr(), kernels.data_ptr())


@pytest.mark.parametrize("name", list(OPS))
def test_gradients_accumulate_over_two_backward_passes(name):
    case = make_case(1, 1, 2, 3, 1, 1, 5, 5, seed=8)
    x, kernels = case.tensors(requires_grad=True)
    OPS[name](x, kernels).sum().backward()
    first_x, first_k = x.grad.clone(), kernels.grad.clone()
    OPS[name](x, kernels).sum().backward()
    torch.testing.assert_close(x.grad, 2 * first_x)
    torch.testing.assert_close(kernels.grad, 2 * first_k)


@pytest.mark.parametrize("name", list(BACKENDS))
def test_involution_double_backward_equals_unfold(name):
    """Every backend differentiates twice (the op's backward is made of the op's own
    operators): a second derivative matches autograd through unfold, with no error."""
    involution = BACKENDS[name]
    case = make_case(1, 1, 2, 3, 1, 1, 4, 4, seed=6)
    x, kernels = case.tensors(requires_grad=True)
    x_ref, kernels_ref = case.tensors(requires_grad=True)
    (g_ref,) = torch.autograd.grad(involution_unfold(x_ref, kernels_ref).pow(2).sum(), kernels_ref, create_graph=True)
    (gg_ref,) = torch.autograd.grad(g_ref.sum(), x_ref)
    (g,) = torch.autograd.grad(involution(x, kernels).pow(2).sum(), kernels, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), x)
    torch.testing.assert_close(gg, gg_ref, rtol=0, atol=1e-10)
