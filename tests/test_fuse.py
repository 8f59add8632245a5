"""fuse_for_inference: every conv + BN pair folded, same outputs, the input model untouched."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import involution_edu
from involution_edu import Involution, fuse_for_inference, rednet26
from involution_edu.fuse import conv_bn_pairs
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


def test_every_conv_bn_pair_is_folded(pair):
    name, model, folded = pair
    remaining = [n for n, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if name == "resnet26":
        assert remaining == []  # every BN of a ResNet follows a convolution
    else:  # only the BNs after an involution stay: stem.2 and every block's bn2
        involutions = [n for n, m in model.named_modules() if isinstance(m, Involution)]
        assert len(remaining) == len(involutions) == 9
        assert all(n == "backbone.stem.2" or n.endswith(".bn2") for n in remaining)
        # the involution's own reduce conv + BN is folded
        for n in involutions:
            inner = folded.get_submodule(n).conv1
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
