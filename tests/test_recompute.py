"""Recomputation in the backward pass (``RedNet(recompute=True)``, ``Involution(recompute=True)``).

RedNet recomputes its stem in backward (on by default) and pools it with
:class:`~involution_edu.rednet.IndexMaxPool2d`, which keeps only the indices of the maxima; an
involution can recompute its reduction ``h = ReLU(BN(conv1(pool(x))))`` (off by default). Checked
here: the same outputs, gradients and BatchNorm running statistics as the plain path (float64),
fewer saved bytes, RedNet-50 keeping fewer than ResNet-50, the fused op used by every layer, no
recomputation where it cannot pay (eval, no_grad, compile), and higher derivatives.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from involution_edu import Involution
from involution_edu.module import recomputed
from involution_edu.netbench import saved_tensor_bytes
from involution_edu.rednet import IndexMaxPool2d, rednet26, rednet50
from involution_edu.resnet import resnet50
from strategies import single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


def _randomise_batch_norms(model: nn.Module) -> nn.Module:
    """BN weights and biases away from 1 and 0, so that a wrong recomputation would show."""
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator, dtype=module.weight.dtype))
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator, dtype=module.bias.dtype))
    return model


def _pair_of_rednets():
    torch.manual_seed(0)
    on = _randomise_batch_norms(rednet26(num_classes=10).double())
    assert on.backbone.recompute and not any(m.recompute for m in on.modules() if isinstance(m, Involution))
    on.backbone.set_recompute(True, layers=True)  # everything recomputed: the stem and every reduction
    off = copy.deepcopy(on)
    off.backbone.set_recompute(False, layers=False)
    off.backbone.maxpool = nn.MaxPool2d(3, 2, 1)  # PyTorch's own pooling, too
    assert all(m.recompute for m in on.modules() if isinstance(m, Involution))
    assert not any(m.recompute for m in off.modules() if isinstance(m, Involution))
    return on, off


def _step(model, x, labels, switch_to_eval_before_backward=False):
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    loss = F.cross_entropy(out, labels)
    if switch_to_eval_before_backward:
        model.eval()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return out.detach(), x.grad, grads, {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same_step(a, b):
    tight = dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a[0], b[0], **tight)
    torch.testing.assert_close(a[1], b[1], **tight)
    assert a[2].keys() == b[2].keys()
    for name in a[2]:
        torch.testing.assert_close(a[2][name], b[2][name], **tight, msg=f"gradient of {name}")
    for name in a[3]:  # running statistics and num_batches_tracked: updated once, in the forward pass
        torch.testing.assert_close(a[3][name], b[3][name], **tight, msg=f"state {name}")


@pytest.mark.parametrize("size", [(32, 32), (35, 33)])
def test_rednet_recompute_gives_the_plain_values_gradients_and_running_stats(size):
    on, off = _pair_of_rednets()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    labels = torch.tensor([1, 7])
    for _ in range(2):  # two steps: the running statistics move twice, by the same amounts
        _assert_same_step(_step(on, x, labels), _step(off, x, labels))
        on.zero_grad()
        off.zero_grad()
    assert int(on.backbone.stem[2].num_batches_tracked) == 2


def test_switching_to_eval_between_forward_and_backward_does_not_change_the_gradients():
    """The recomputation runs the region as it ran in the forward pass (training mode, batch statistics)."""
    on, off = _pair_of_rednets()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    labels = torch.tensor([0, 4])
    a = _step(on, x, labels, switch_to_eval_before_backward=True)
    b = _step(off, x, labels, switch_to_eval_before_backward=True)
    _assert_same_step(a, b)
    assert not on.training and not any(m.training for m in on.modules())  # the eval switch is kept


def test_recompute_saves_fewer_bytes_and_the_layer_keeps_only_x_and_h():
    torch.manual_seed(0)
    layer = Involution(32, 7, stride=2, recompute=True)
    x = torch.randn(2, 32, 16, 16, requires_grad=True)
    params = list(layer.parameters()) + list(layer.buffers())
    with torch.no_grad():
        h = layer.reduced_features(x)
    kept = saved_tensor_bytes(lambda: layer(x), exclude=params)
    assert kept == x.untyped_storage().nbytes() + h.untyped_storage().nbytes()
    layer.recompute = False
    assert saved_tensor_bytes(lambda: layer(x), exclude=params) > kept  # BN's input and the pooled x too


def test_rednet50_saves_no_more_than_resnet50():
    """At batch 2, 96x96 (cheap): RedNet-50 keeps 0.957x ResNet-50's bytes for the backward pass,
    the same ratio as at batch 8, 224x224 (627 MiB against 656 MiB, 0.956x); without the
    recomputation 1.115x at both sizes (731 MiB at 224x224). All activations scale with B*H*W."""
    x = torch.randn(2, 3, 96, 96)
    labels = torch.tensor([3, 5])
    saved = {}
    for name, factory, kwargs in (("rednet", rednet50, {}), ("plain", rednet50, {"recompute": False}),
                                  ("resnet", resnet50, {})):
        torch.manual_seed(0)
        model = factory(num_classes=10, **kwargs)
        params = list(model.parameters()) + list(model.buffers())
        saved[name] = saved_tensor_bytes(lambda: F.cross_entropy(model(x), labels), exclude=params)
    assert saved["rednet"] <= 0.97 * saved["resnet"], saved
    assert saved["plain"] >= 1.1 * saved["resnet"], saved


class _OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_every_layer_runs_the_fused_op_in_a_training_step():
    torch.manual_seed(0)
    model = rednet26(num_classes=10)
    layers = sum(isinstance(m, Involution) for m in model.modules())
    x = torch.randn(2, 3, 32, 32)
    with _OpLog() as forward_log:
        loss = F.cross_entropy(model(x), torch.tensor([1, 2]))
    with _OpLog() as backward_log:
        loss.backward()
    ours = [n for n in forward_log.names + backward_log.names if n.startswith("involution_edu")]
    assert forward_log.names.count("involution_edu.involution_fused") == layers == 9
    assert backward_log.names.count("involution_edu.involution_fused_backward") == layers
    # the recomputed stem runs its involution's fused forward once more; nothing materialises kernels
    assert backward_log.names.count("involution_edu.involution_fused") == 1
    assert set(ours) == {"involution_edu.involution_fused", "involution_edu.involution_fused_backward"}, set(ours)


def test_no_recomputation_in_eval_no_grad_or_compile(monkeypatch):
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    torch.manual_seed(0)
    layer = Involution(16, 3, recompute=True)
    x = torch.randn(1, 16, 6, 6)
    with torch.no_grad():
        layer(x)
    layer.eval()
    layer(x.requires_grad_(True)).sum().backward()
    assert calls == []
    layer.train()
    layer(x).sum().backward()
    assert calls == [1]
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    compiled(x).sum().backward()  # the compiled graph's partitioner decides what it recomputes
    assert calls == [1]


def test_recomputed_region_has_higher_derivatives():
    torch.manual_seed(0)
    layer = Involution(16, 3, stride=2, recompute=True).double()
    x = torch.randn(1, 16, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    assert torch.autograd.gradgradcheck(layer, (x,))
    # and through the recomputed stem of a network: the double backward recomputes it again
    model = rednet26(num_classes=3).double()
    image = torch.randn(2, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(model(image).sum(), image, create_graph=True)
    (second,) = torch.autograd.grad(grad.square().sum(), image)
    plain = copy.deepcopy(model)
    plain.backbone.set_recompute(False)
    (grad_plain,) = torch.autograd.grad(plain(image).sum(), image, create_graph=True)
    (second_plain,) = torch.autograd.grad(grad_plain.square().sum(), image)
    torch.testing.assert_close(second, second_plain, rtol=1e-10, atol=1e-12)


def test_recompute_argument_is_checked():
    with pytest.raises(TypeError, match="recompute must be True or False, got str"):
        Involution(16, 3, recompute="yes")
    with pytest.raises(TypeError, match="stem must be True or False, got int"):
        rednet26(num_classes=10).backbone.set_recompute(1)
    with pytest.raises(TypeError, match="layers must be True or False, got str"):
        rednet26(num_classes=10).backbone.set_recompute(True, layers="all")


def test_recomputed_calls_the_function_directly_outside_training():
    seen = []
    module = nn.Linear(2, 2).eval()
    out = recomputed(lambda t: seen.append(1) or module(t), (module,), torch.randn(3, 2))
    assert out.shape == (3, 2) and seen == [1]


@pytest.mark.parametrize("channels_last", [False, True])
def test_index_max_pool_equals_max_pool_and_keeps_only_int32_indices(channels_last):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 9, 8, generator=generator, dtype=torch.float64)
    x[0, 0, :4, :4] = 0.5  # ties: the first maximum of a window gets the gradient, as in PyTorch
    x = torch.relu(x)  # many zeros, as after the stem's ReLU
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ours, theirs = IndexMaxPool2d(3, 2, 1), nn.MaxPool2d(3, 2, 1)
    grad = torch.randn(2, 4, 5, 4, generator=generator, dtype=torch.float64)
    results = []
    for pool in (ours, theirs):
        leaf = x.detach().clone().requires_grad_(True)
        out = pool(leaf)
        out.backward(grad)
        results.append((out.detach(), leaf.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-15, atol=1e-15)
    assert results[0][1].is_contiguous(memory_format=torch.channels_last) == channels_last or not channels_last
    leaf = x.detach().clone().requires_grad_(True)
    assert saved_tensor_bytes(lambda: ours(leaf)) == 2 * 4 * 5 * 4 * 4  # int32 indices, no input
    assert saved_tensor_bytes(lambda: theirs(leaf)) > 2 * 4 * 9 * 8 * 8
    smooth = torch.randn(1, 2, 7, 6, generator=generator, dtype=torch.float64, requires_grad=True)  # no ties
    assert torch.autograd.gradgradcheck(ours, (smooth,))
