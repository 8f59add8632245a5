"""fuse_for_inference: every conv + BN pair folded, same outputs, the input model untouched."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import involution_edu
from involution_edu import Involution, fuse_for_inference, rednet26
from involution_edu.fuse import InvolutionBN, batchnorm_affine, conv_bn_pairs, involution_pairs
from involution_edu.functional import available_backends
from involution_edu.resnet import resnet26


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: on a shared, busy machine a second OpenMP thread can make every call far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _trained_statistics(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN affine parameters and running statistics (as after some training)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data = torch.empty_like(module.weight).uniform_(0.5, 1.5, generator=generator)
            module.bias.data = torch.empty_like(module.bias).uniform_(-0.2, 0.2, generator=generator)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, 32, 32, generator=generator))
    return model


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module", params=["rednet26", "resnet26"])
def pair(request):
    torch.manual_seed(0)
    model = _trained_statistics({"rednet26": rednet26, "resnet26": resnet26}[request.param](num_classes=10), seed=1)
    return request.param, model, fuse_for_inference(model)


def test_exported_from_package():
    assert involution_edu.fuse_for_inference is fuse_for_inference
    assert "fuse_for_inference" in involution_edu.__all__


@pytest.mark.parametrize("size", [32, 35])
def test_same_outputs_as_the_unfolded_model_in_eval(pair, size):
    name, model, folded = pair
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    model.eval()
    with torch.no_grad():
        expected, got = model(x), folded(x)
        got_cl = copy.deepcopy(folded).to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    model.train()
    scale = expected.abs().max().item()
    assert scale > 1e-3, "the outputs must not be trivially zero for this comparison to mean something"
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * scale)
    torch.testing.assert_close(got_cl, expected, rtol=1e-4, atol=1e-4 * scale)


def test_every_bn_is_folded(pair):
    name, model, folded = pair
    remaining = [n for n, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert remaining == []  # ResNet: every BN follows a conv; RedNet: the rest follow an involution
    if name == "rednet26":  # the BNs after an involution (stem.2, every bn2) go into InvolutionBN
        involutions = [n for n, m in model.named_modules() if isinstance(m, Involution)]
        assert len(involutions) == 9 and involution_pairs(model) == [
            [n, "backbone.stem.2" if n == "backbone.stem.1" else n[: -len("conv2")] + "bn2"] for n in involutions]
        for n in involutions:
            wrapper = folded.get_submodule(n)
            assert isinstance(wrapper, InvolutionBN)
            inner = wrapper.involution.conv1  # the involution's own reduce conv + BN is folded too
            assert isinstance(inner.bn, nn.Identity) and inner.conv.bias is not None
    assert not folded.training
    original_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert sum(isinstance(m, nn.Conv2d) for m in folded.modules()) == original_convs


def test_input_model_is_untouched(pair):
    _, model, _ = pair
    model.train()
    before = _state(model)
    modules_before = [(n, type(m)) for n, m in model.named_modules()]
    folded = fuse_for_inference(model)
    assert model.training, "the input model's train/eval mode must not change"
    assert [(n, type(m)) for n, m in model.named_modules()] == modules_before
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    # no storage shared: changing the copy leaves the original alone
    for p in folded.parameters():
        p.data.add_(1.0)
    for key in before:
        assert torch.equal(before[key], model.state_dict()[key]), key


def test_pairs_follow_the_rule():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 5, 1), nn.BatchNorm2d(6))
    assert conv_bn_pairs(model) == [["0", "1"]]  # BN after ReLU and a width mismatch are not pairs


def test_refuses_a_non_module():
    with pytest.raises(TypeError, match="model"):
        fuse_for_inference("rednet26")


@pytest.mark.parametrize("backend", [b for b in available_backends() if b != "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels,stride,channels_last", [(32, 1, False), (32, 2, True), (24, 1, True), (16, 3, False)])
def test_involution_bn_equals_the_involution_then_the_bn(backend, dtype, channels, stride, channels_last):
    """The output affine (one op, applied to each tile before it is written) against the two
    modules in a row; 16 channels per group (the specialised float path) and 8 (24 channels)."""
    torch.manual_seed(channels + stride)
    inv = Involution(channels, 7, stride=stride, group_channels=16 if channels % 16 == 0 else 8).to(dtype)
    bn = _trained_statistics(nn.Sequential(nn.Conv2d(3, channels, 3, stride=4, padding=1), nn.BatchNorm2d(channels)), 3)[1]
    bn = bn.to(dtype).eval()
    inv.eval()
    x = torch.randn(2, channels, 11, 9, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fused = InvolutionBN(copy.deepcopy(inv), bn)
    with torch.no_grad():
        expected = bn(inv(x))
        from involution_edu.fused import involution_fused_affine
        h = inv._reduce(x)
        span = inv.conv2.conv
        got = involution_fused_affine(x, h, span.weight, span.bias, fused.scale, fused.shift, 7, stride=stride,
                                      backend=backend)
        got_module = fused(x)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got, expected, **tol)
    torch.testing.assert_close(got_module, expected, **tol)
    assert got.is_contiguous(memory_format=torch.channels_last) == (channels_last and backend == "native")
    # with gradients: the differentiable composite, the same numbers and gradients
    xg = x.detach().clone().requires_grad_(True)
    out = fused(xg)
    torch.testing.assert_close(out.detach(), expected, **tol)
    out.sum().backward()
    xe = x.detach().clone().requires_grad_(True)
    bn(inv(xe)).sum().backward()
    torch.testing.assert_close(xg.grad, xe.grad, **tol)


def test_batchnorm_affine_and_involution_bn_refusals():
    bn = _trained_statistics(nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8)), 4)[1].eval()
    scale, shift = batchnorm_affine(bn)
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(scale[None, :, None, None] * x + shift[None, :, None, None], bn(x))
    with pytest.raises(ValueError, match="running statistics"):
        batchnorm_affine(nn.BatchNorm2d(8, track_running_stats=False))
    with pytest.raises(TypeError, match="involution must be an Involution"):
        InvolutionBN(nn.Conv2d(8, 8, 3), bn)
    with pytest.raises(ValueError, match="BatchNorm2d of 16 channels"):
        InvolutionBN(Involution(16, 3), bn)
    from involution_edu.fused import involution_fused_affine
    inv = Involution(16, 3).eval()
    x = torch.randn(1, 16, 5, 5)
    h = inv._reduce(x)
    w, b = inv.conv2.conv.weight, inv.conv2.conv.bias
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"scale must have shape \(16,\)"):
            involution_fused_affine(x, h, w, b, torch.ones(8), torch.zeros(16), 3)
        with pytest.raises(TypeError, match="shift must be a torch.Tensor"):
            involution_fused_affine(x, h, w, b, torch.ones(16), 0.0, 3)
        with pytest.raises(TypeError, match="scale must have the same dtype"):
            involution_fused_affine(x, h, w, b, torch.ones(16, dtype=torch.float64), torch.zeros(16), 3)


def test_involution_fused_affine_op_passes_opcheck_and_compiles():
    from involution_edu.fused import involution_fused_affine_op

    torch.manual_seed(0)
    inv = Involution(32, 7, stride=2).eval()
    bn = _trained_statistics(nn.Sequential(nn.Conv2d(3, 32, 1), nn.BatchNorm2d(32)), 5)[1].eval()
    fused = InvolutionBN(inv, bn).eval()
    x = torch.randn(2, 32, 9, 8)
    with torch.no_grad():
        h = inv._reduce(x)
    args = (x, h, inv.conv2.conv.weight.detach().flatten(1), inv.conv2.conv.bias.detach(), fused.scale, fused.shift,
            7, 2, 3, 1, "native" if "native" in available_backends() else "eager")
    results = torch.library.opcheck(involution_fused_affine_op, args)
    assert all(result == "SUCCESS" for result in results.values()), results
    with torch.no_grad():
        expected = fused(x)
        compiled = torch.compile(fused, fullgraph=True)
        torch.testing.assert_close(compiled(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(compiled(torch.cat([x, x])), torch.cat([expected, expected]), rtol=1e-5, atol=1e-5)
