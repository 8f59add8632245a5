"""The Involution module: equal to the paper's module (outputs, gradients, state_dict,
checkpoints), odd sizes with stride 2, generate_kernels, dilation, gradcheck."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck
from torch.func import functional_call

from involution_edu import Involution, involution, involution_loops
from involution_edu.functional import set_default_backend
from involution_edu.paper import PaperInvolution
from strategies import involution_backends, single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

PAPER_KEYS = {
    "conv1.conv.weight",
    "conv1.bn.weight",
    "conv1.bn.bias",
    "conv1.bn.running_mean",
    "conv1.bn.running_var",
    "conv1.bn.num_batches_tracked",
    "conv2.conv.weight",
    "conv2.conv.bias",
}

BACKEND_NAMES = [name[len("involution[") : -1] for name in involution_backends()]


@pytest.fixture(params=BACKEND_NAMES)
def backend(request):
    """Run the test with each backend of ``involution`` as the module's default, then restore it."""
    previous = set_default_backend(request.param)
    yield request.param
    set_default_backend(previous)


TOLERANCES = {torch.float64: 1e-10, torch.float32: 1e-5}


def assert_close_scaled(got: torch.Tensor, expected: torch.Tensor, tolerance: float, label: str = "") -> None:
    """``max |got - expected| <= tolerance * max(1, max |expected|)``: a tolerance relative to the
    tensor's scale (gradients here reach a few hundred, where float32 rounding alone is ~1e-5)."""
    assert got.shape == expected.shape, f"{label}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    scale = max(1.0, expected.abs().max().item())
    difference = (got - expected).abs().max().item()
    assert difference <= tolerance * scale, f"{label}: max difference {difference:.3g} > {tolerance:g} * {scale:.3g}"


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial BN statistics and affine parameters, so eval mode differs from train mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype)
                if name.endswith("running_var") or name.endswith("bn.weight"):
                    tensor.copy_(0.5 + values)
                else:
                    tensor.copy_(values - 0.5)


def _pair(channels: int, kernel_size: int, stride: int, dtype: torch.dtype, train: bool, paper_first: bool = True):
    """(paper module, our module) holding the same weights, copied with strict=True in either direction."""
    torch.manual_seed(0)
    paper = PaperInvolution(channels, kernel_size, stride).to(dtype)
    ours = Involution(channels, kernel_size, stride).to(dtype)
    if paper_first:
        _randomize(paper, seed=1)
        ours.load_state_dict(paper.state_dict(), strict=True)
    else:
        _randomize(ours, seed=1)
        paper.load_state_dict(ours.state_dict(), strict=True)
    paper.train(train)
    ours.train(train)
    return paper, ours


def _run(module, x, grad_out):
    x = x.clone().requires_grad_(True)
    out = module(x)
    out.backward(grad_out)
    return out.detach(), x.grad, {name: p.grad for name, p in module.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel_size", [3, 7])
def test_equals_paper_module(kernel_size, stride, train, dtype, backend):
    channels = 32 if kernel_size == 7 else 64
    paper, ours = _pair(channels, kernel_size, stride, dtype, train, paper_first=(kernel_size == 3))
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, channels, 10, 8, generator=generator, dtype=dtype)
    out_shape = (2, channels, 10 // stride, 8 // stride)
    grad_out = torch.randn(out_shape, generator=generator, dtype=dtype)
    out_paper, gx_paper, grads_paper = _run(paper, x, grad_out)
    out_ours, gx_ours, grads_ours = _run(ours, x, grad_out)
    tol = TOLERANCES[dtype]
    assert out_ours.shape == out_shape
    assert_close_scaled(out_ours, out_paper, tol, "output")
    assert_close_scaled(gx_ours, gx_paper, tol, "x.grad")
    assert grads_ours.keys() == grads_paper.keys()
    for name in grads_paper:
        assert_close_scaled(grads_ours[name], grads_paper[name], tol, name)
    # train mode updates the BN running statistics identically
    for name, value in paper.state_dict().items():
        assert_close_scaled(ours.state_dict()[name].double(), value.double(), tol, name)


@pytest.mark.parametrize("stride", [1, 2])
def test_state_dict_keys_are_the_papers(stride):
    ours = Involution(32, 7, stride)
    assert set(ours.state_dict()) == PAPER_KEYS
    assert set(PaperInvolution(32, 7, stride).state_dict()) == PAPER_KEYS
    for name, value in PaperInvolution(32, 7, stride).state_dict().items():
        assert ours.state_dict()[name].shape == value.shape, name


@pytest.mark.parametrize("direction", ["paper_to_ours", "ours_to_paper"])
def test_checkpoint_round_trip_with_weights_only(direction):
    paper, ours = _pair(32, 7, 2, torch.float32, train=False, paper_first=(direction == "paper_to_ours"))
    source, target_class = (paper, Involution) if direction == "paper_to_ours" else (ours, PaperInvolution)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    target = target_class(32, 7, 2).eval()
    target.load_state_dict(state, strict=True)
    x = torch.randn(2, 32, 8, 8)
    torch.testing.assert_close(target(x), source(x), rtol=1e-5, atol=1e-5)


def test_checkpoint_with_a_missing_key_fails_strict_loading():
    state = PaperInvolution(32, 3, 1).state_dict()
    del state["conv2.conv.bias"]
    with pytest.raises(RuntimeError, match="conv2.conv.bias"):
        Involution(32, 3, 1).load_state_dict(state, strict=True)


@pytest.mark.parametrize("size", [(7, 7), (9, 5), (5, 8), (3, 3)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kernel_size", [3, 7])
def test_odd_sizes_with_stride_2(kernel_size, size, backend):
    height, width = size
    paper, ours = _pair(32, kernel_size, 2, torch.float64, train=False)
    x = torch.randn(2, 32, height, width, dtype=torch.float64)
    with pytest.raises(RuntimeError):
        paper(x)
    out, kernels = ours(x, return_kernels=True)
    out_h, out_w = -(-height // 2), -(-width // 2)
    assert out.shape == (2, 32, out_h, out_w)
    assert kernels.shape == (2, 2, kernel_size, kernel_size, out_h, out_w)
    torch.testing.assert_close(ours.generate_kernels(x), kernels, rtol=0, atol=0)
    expected = involution_loops(x.numpy(), kernels.detach().numpy(), stride=2)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=0, atol=1e-10)


def test_odd_size_kernels_come_from_ceil_mode_pooling():
    """The last, partial pooling window averages the pixels it covers."""
    ours = Involution(16, 3, 2, group_channels=8).double().eval()
    x = torch.randn(1, 16, 5, 5, dtype=torch.float64)
    pooled = torch.empty(1, 16, 3, 3, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            pooled[..., i, j] = x[..., 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(dim=(2, 3))
    expected = ours.conv2(ours.conv1(pooled)).view(1, 2, 3, 3, 3, 3)
    torch.testing.assert_close(ours.generate_kernels(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_generate_kernels_shape_and_forward_uses_them(stride):
    module = Involution(16, 5, stride, reduction_ratio=2, group_channels=4).double().eval()
    x = torch.randn(2, 16, 9, 12, dtype=torch.float64)
    kernels = module.generate_kernels(x)
    out_h, out_w = -(-9 // stride), -(-12 // stride)
    assert kernels.shape == (2, 4, 5, 5, out_h, out_w)
    expected = involution(x, kernels, stride=stride)
    # The default path is the fused op (kernels computed per tile): equal to rounding, not bit for bit.
    torch.testing.assert_close(module(x), expected, rtol=1e-12, atol=1e-12)
    out, returned = module(x, return_kernels=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(returned, kernels, rtol=0, atol=0)


@pytest.mark.parametrize("stride", [1, 2])
def test_dilation_2_equals_loops_with_module_kernels(stride):
    module = Involution(8, 3, stride, reduction_ratio=2, group_channels=4, dilation=2).double().eval()
    x = torch.randn(2, 8, 9, 8, dtype=torch.float64)
    out, kernels = module(x, return_kernels=True)
    assert out.shape == (2, 8, -(-9 // stride), 8 // stride)
    expected = involution_loops(x.numpy(), kernels.detach().numpy(), stride=stride, dilation=2)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=0, atol=1e-10)
    # dilation changes the result (the taps read other pixels)
    undilated = Involution(8, 3, stride, reduction_ratio=2, group_channels=4).double().eval()
    undilated.load_state_dict(module.state_dict())
    assert not torch.allclose(undilated(x), out)


@settings(max_examples=25, deadline=None)
@given(
    stride=st.integers(1, 3),
    kernel_size=st.sampled_from([1, 3, 5]),
    dilation=st.integers(1, 2),
    height=st.integers(1, 10),
    width=st.integers(1, 10),
    train=st.booleans(),
)
def test_module_equals_loops_with_its_kernels(stride, kernel_size, dilation, height, width, train):
    module = Involution(8, kernel_size, stride, reduction_ratio=2, group_channels=4, dilation=dilation).double()
    module.train(train)
    x = torch.randn(2, 8, height, width, dtype=torch.float64)
    out, kernels = module(x, return_kernels=True)
    out_h, out_w = -(-height // stride), -(-width // stride)
    assert out.shape == (2, 8, out_h, out_w)
    assert kernels.shape == (2, 2, kernel_size, kernel_size, out_h, out_w)
    expected = involution_loops(x.numpy(), kernels.detach().numpy(), stride=stride, dilation=dilation)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("stride", [1, 2])
def test_module_gradcheck(stride, train, backend):
    torch.manual_seed(3)
    module = Involution(4, 3, stride, reduction_ratio=2, group_channels=2).double()
    _randomize(module, seed=5)
    module.train(train)
    names = [name for name, _ in module.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in module.parameters())
    x = torch.randn(2, 4, 5, 4, dtype=torch.float64, requires_grad=True)

    def forward(x, *params):
        return functional_call(module, dict(zip(names, params)), (x,))

    assert gradcheck(forward, (x, *params), eps=1e-6, atol=1e-6)


def test_defaults_match_the_paper():
    module = Involution(64)
    assert (module.kernel_size, module.stride, module.groups, module.group_channels) == (7, 1, 4, 16)
    assert module.conv1.conv.out_channels == 16  # reduction_ratio 4
    assert module.conv2.conv.out_channels == 7 * 7 * 4
    assert module.conv1.conv.bias is None and module.conv2.conv.bias is not None


@pytest.mark.parametrize("stride", [2, 3])
@pytest.mark.parametrize("size", [(8, 9), (9, 9), (6, 12), (7, 5)])
def test_stride_pool_averages_partial_windows_and_equals_avg_pool_when_divisible(stride, size):
    from involution_edu.module import stride_pool

    x = torch.randn(2, 3, *size, dtype=torch.float64)
    pooled = stride_pool(x, stride)
    torch.testing.assert_close(pooled, torch.nn.functional.avg_pool2d(x, stride, stride, ceil_mode=True), rtol=1e-14, atol=1e-14)
    # the last window by hand: the mean of the pixels it covers
    row, col = (size[0] - 1) // stride, (size[1] - 1) // stride
    corner = x[:, :, row * stride :, col * stride :].mean(dim=(2, 3))
    torch.testing.assert_close(pooled[:, :, -1, -1], corner, rtol=1e-14, atol=1e-14)
    if size[0] % stride == 0 and size[1] % stride == 0:  # the paper's pooling, bit for bit
        assert torch.equal(pooled, torch.nn.functional.avg_pool2d(x, stride, stride))


@pytest.mark.parametrize("stride", [2, 3])
def test_stride_pool_fast_nchw_path_is_avg_pool_bit_for_bit_with_its_gradients(stride):
    """The eager NCHW path (strided views added in the window's order) against ATen's avg_pool2d:
    the same bits forward and backward, float32 at a RedNet size; gradgradcheck in float64."""
    from torch.autograd import gradcheck, gradgradcheck

    from involution_edu.module import _StridePoolNCHW, stride_pool

    x = torch.randn(2, 8, 12 * stride, 6 * stride, requires_grad=True)
    grad = torch.randn(2, 8, 12, 6)
    ours = stride_pool(x, stride)
    assert ours.grad_fn is not None and "StridePoolNCHW" in type(ours.grad_fn).__name__  # the fast path ran
    theirs = torch.nn.functional.avg_pool2d(x, stride, stride)
    assert torch.equal(ours, theirs)
    assert torch.equal(torch.autograd.grad(ours, x, grad)[0], torch.autograd.grad(theirs, x, grad)[0])
    x_cl = x.detach().contiguous(memory_format=torch.channels_last)
    assert torch.equal(stride_pool(x_cl, stride), theirs.detach())  # channels last: ATen's pooling
    small = torch.randn(1, 2, 2 * stride, 2 * stride, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: _StridePoolNCHW.apply(t, stride), (small,))
    assert gradgradcheck(lambda t: _StridePoolNCHW.apply(t, stride), (small,))
