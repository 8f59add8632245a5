"""RedNet and the ResNet baseline: the paper's layout, shapes, initialisation, forward/backward, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from involution_edu import Involution
from involution_edu.paper import ConvModule, PaperInvolution
from involution_edu.rednet import (
    CheckpointMismatchError,
    InvolutionBottleneck,
    RedNet,
    load_checkpoint,
    rednet,
    rednet26,
    rednet38,
)
from involution_edu.resnet import Bottleneck, ResNet, resnet26

DEPTHS = {26: (1, 2, 4, 1), 38: (2, 3, 5, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


# ------------------------------------------------------------------ the paper's key layout, from FACTS.md's rules
def expected_backbone_shapes(stage_blocks, stem_kernel_size):
    """name -> shape of every backbone state_dict entry, written from the naming rules alone."""
    shapes = {}

    def bn(prefix, channels):
        for key in BN_KEYS:
            shapes[f"{prefix}.{key}"] = () if key == "num_batches_tracked" else (channels,)

    def involution(prefix, channels, k):
        hidden, groups = channels // 4, channels // 16
        shapes[f"{prefix}.conv1.conv.weight"] = (hidden, channels, 1, 1)
        bn(f"{prefix}.conv1.bn", hidden)
        shapes[f"{prefix}.conv2.conv.weight"] = (k * k * groups, hidden, 1, 1)
        shapes[f"{prefix}.conv2.conv.bias"] = (k * k * groups,)

    shapes["stem.0.conv.weight"] = (32, 3, 3, 3)
    bn("stem.0.bn", 32)
    involution("stem.1", 32, stem_kernel_size)
    bn("stem.2", 32)
    shapes["stem.4.conv.weight"] = (64, 32, 3, 3)
    bn("stem.4.bn", 64)
    in_channels = 64
    for stage, (blocks, planes) in enumerate(zip(stage_blocks, (64, 128, 256, 512)), start=1):
        out_channels = 4 * planes
        for i in range(blocks):
            p = f"layer{stage}.{i}"
            block_in = in_channels if i == 0 else out_channels
            shapes[f"{p}.conv1.weight"] = (planes, block_in, 1, 1)
            bn(f"{p}.bn1", planes)
            involution(f"{p}.conv2", planes, 7)
            bn(f"{p}.bn2", planes)
            shapes[f"{p}.conv3.weight"] = (out_channels, planes, 1, 1)
            bn(f"{p}.bn3", out_channels)
            if i == 0:
                shapes[f"{p}.downsample.0.weight"] = (out_channels, in_channels, 1, 1)
                bn(f"{p}.downsample.1", out_channels)
        in_channels = out_channels
    return shapes


@pytest.mark.parametrize("stem_kernel_size", [3, 7])
def test_rednet26_backbone_state_dict_is_exactly_the_papers(stem_kernel_size):
    backbone = RedNet(26, stem_kernel_size=stem_kernel_size)
    got = {name: tuple(t.shape) for name, t in backbone.state_dict().items()}
    expected = expected_backbone_shapes(DEPTHS[26], stem_kernel_size)
    assert set(got) - set(expected) == set(), "keys the paper's checkpoints do not have"
    assert set(expected) - set(got) == set(), "keys of the paper's checkpoints we lack"
    assert got == expected


@pytest.mark.parametrize("depth", [38, 50, 101, 152])
def test_deeper_backbones_follow_the_same_layout(depth):
    with torch.device("meta"):
        backbone = RedNet(depth)
    got = {name: tuple(t.shape) for name, t in backbone.state_dict().items()}
    assert got == expected_backbone_shapes(DEPTHS[depth], 7)


def test_classifier_layout_is_backbone_plus_head_fc():
    model = rednet26(num_classes=10)
    keys = set(model.state_dict())
    backbone_keys = {f"backbone.{k}" for k in expected_backbone_shapes(DEPTHS[26], 7)}
    assert keys == backbone_keys | {"head.fc.weight", "head.fc.bias"}
    assert model.head.fc.weight.shape == (10, 2048)
    assert rednet38().head.fc.weight.shape == (1000, 2048)


# ------------------------------------------------------------------ equivalence with the paper's code structure
class PaperStyleBottleneck(nn.Module):
    """The official Bottleneck's forward, written independently on the paper's own involution module."""

    def __init__(self, in_channels, out_channels, stride, with_downsample):
        super().__init__()
        mid = out_channels // 4
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = PaperInvolution(mid, 7, stride)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))
            if with_downsample
            else None
        )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class PaperStyleRedNet26(nn.Module):
    def __init__(self, stem_kernel_size):
        super().__init__()
        self.stem = nn.Sequential(
            ConvModule(3, 32, 3, stride=2, padding=1, norm_cfg=dict(type="BN")),
            PaperInvolution(32, stem_kernel_size, 1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            ConvModule(32, 64, 3, stride=1, padding=1, norm_cfg=dict(type="BN")),
        )
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_channels = 64
        for stage, (blocks, planes, stride) in enumerate(zip(DEPTHS[26], (64, 128, 256, 512), (1, 2, 2, 2)), start=1):
            layer = [PaperStyleBottleneck(in_channels, 4 * planes, stride, True)]
            layer += [PaperStyleBottleneck(4 * planes, 4 * planes, 1, False) for _ in range(1, blocks)]
            setattr(self, f"layer{stage}", nn.Sequential(*layer))
            in_channels = 4 * planes

    def forward(self, x):
        x = self.maxpool(self.stem(x))
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
        return x


def _randomise_batch_norms(model, generator):
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data = 0.5 + torch.rand(module.weight.shape, generator=generator, dtype=module.weight.dtype)
            module.bias.data = 0.1 * torch.randn(module.bias.shape, generator=generator, dtype=module.bias.dtype)
            module.running_mean.data = 0.1 * torch.randn(module.running_mean.shape, generator=generator, dtype=module.running_mean.dtype)
            module.running_var.data = 0.5 + torch.rand(module.running_var.shape, generator=generator, dtype=module.running_var.dtype)


@pytest.mark.parametrize("stem_kernel_size", [3, 7])
def test_paper_style_weights_load_strictly_and_give_the_same_features(stem_kernel_size):
    torch.manual_seed(0)
    paper = PaperStyleRedNet26(stem_kernel_size).double().eval()
    _randomise_batch_norms(paper, torch.Generator().manual_seed(1))  # non-trivial BN (incl. bn3) so every path matters
    ours = RedNet(26, stem_kernel_size=stem_kernel_size).double().eval()
    ours.load_state_dict(paper.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        expected, got = paper(x), ours(x)
    assert got.shape == (1, 2048, 2, 2)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ structure rules
@pytest.mark.parametrize("depth", sorted(DEPTHS))
def test_downsample_only_on_first_block_of_each_stage(depth):
    with torch.device("meta"):
        backbone = RedNet(depth)
    for stage, (blocks, stride) in enumerate(zip(DEPTHS[depth], (1, 2, 2, 2)), start=1):
        layer = getattr(backbone, f"layer{stage}")
        assert len(layer) == blocks
        first = layer[0]
        assert isinstance(first.downsample, nn.Sequential)  # layer1 too: 64 -> 256 channels
        conv, norm = first.downsample
        assert isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
        assert conv.kernel_size == (1, 1) and conv.stride == (stride, stride) and conv.bias is None
        assert isinstance(first.conv2, Involution) and first.conv2.stride == stride  # stride on the involution
        assert first.conv1.stride == (1, 1)
        for block in list(layer)[1:]:
            assert block.downsample is None
            assert block.conv2.stride == 1


def test_bottleneck_refuses_a_shape_change_without_shortcut():
    with pytest.raises(ValueError, match="downsample"):
        InvolutionBottleneck(64, 256, 1, None)
    with pytest.raises(ValueError, match="downsample"):
        InvolutionBottleneck(256, 256, 2, None)


def test_block_uses_a_7x7_involution_in_place_of_the_3x3_conv():
    backbone = RedNet(26)
    block = backbone.layer2[0]
    assert isinstance(block.conv2, Involution)
    assert (block.conv2.kernel_size, block.conv2.channels, block.conv2.groups) == (7, 128, 8)
    baseline = ResNet(26).layer2[0]
    assert isinstance(baseline.conv2, nn.Conv2d) and baseline.conv2.kernel_size == (3, 3)
    assert baseline.conv2.stride == (2, 2)


@pytest.mark.parametrize("factory", [lambda: RedNet(26), lambda: ResNet(26)])
def test_zero_init_of_the_last_bn_of_every_block(factory):
    backbone = factory()
    blocks = [m for m in backbone.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 8
    for block in blocks:
        assert torch.count_nonzero(block.bn3.weight) == 0
        assert torch.all(block.bn1.weight == 1) and torch.all(block.bn2.weight == 1)
        if block.downsample is not None:
            assert torch.all(block.downsample[1].weight == 1)


def test_zero_init_can_be_switched_off():
    backbone = RedNet(26, zero_init_residual=False)
    assert all(torch.all(m.bn3.weight == 1) for m in backbone.modules() if isinstance(m, Bottleneck))


def test_a_zero_initialised_block_is_the_identity_plus_relu():
    torch.manual_seed(0)
    block = RedNet(26).layer2[1].eval()  # 512 -> 512, no shortcut conv
    x = torch.randn(1, 512, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(x))


# ------------------------------------------------------------------ forward / backward
@pytest.mark.parametrize("factory", [lambda: rednet26(num_classes=10), lambda: resnet26(num_classes=10)])
def test_forward_gives_logits(factory):
    torch.manual_seed(0)
    model = factory().eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 10)
    assert torch.isfinite(logits).all()


def test_odd_input_size_works_with_stride_2():
    model = rednet26(num_classes=5).eval()
    with torch.no_grad():
        stages = model.backbone.forward_stages(torch.randn(1, 3, 65, 65))
    assert [(name, tuple(t.shape[1:])) for name, t in stages] == [
        ("stem", (64, 17, 17)),
        ("layer1", (256, 17, 17)),
        ("layer2", (512, 9, 9)),
        ("layer3", (1024, 5, 5)),
        ("layer4", (2048, 3, 3)),
    ]


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = rednet(26, num_classes=4)
    model.backbone = RedNet(26, zero_init_residual=False)  # with bn3 = 0 the block interiors get zero gradient
    model.train()
    x = torch.randn(2, 3, 32, 32)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 3]))
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


def test_with_zero_init_gradients_still_reach_bn3_and_the_shortcuts():
    torch.manual_seed(0)
    model = rednet26(num_classes=4).train()
    loss = nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2]))
    loss.backward()
    grads = dict(model.named_parameters())
    assert grads["backbone.layer1.0.bn3.weight"].grad.abs().sum() > 0
    assert grads["backbone.layer1.0.downsample.0.weight"].grad.abs().sum() > 0
    assert grads["backbone.stem.1.conv2.conv.weight"].grad.abs().sum() > 0
    assert grads["backbone.layer1.0.conv3.weight"].grad.abs().sum() == 0  # bn3 weight is 0: nothing flows inside


# ------------------------------------------------------------------ checkpoints
def _perturbed(model):
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor))
    return model


@pytest.mark.parametrize("wrap", [lambda sd: sd, lambda sd: {"meta": {"epoch": 100, "note": "mmcls"}, "state_dict": sd}])
def test_checkpoint_round_trip_with_weights_only(tmp_path, wrap):
    torch.manual_seed(0)
    source = _perturbed(rednet26(num_classes=10))
    path = tmp_path / "rednet26.pth"
    torch.save(wrap(source.state_dict()), path)
    target = rednet26(num_classes=10)
    assert load_checkpoint(target, path) is target
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name
    torch.load(path, map_location="cpu", weights_only=True)  # the file is weights-only loadable


def test_backbone_checkpoint_loads_into_the_backbone(tmp_path):
    source = _perturbed(RedNet(26))
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    model = rednet26()
    load_checkpoint(model.backbone, path)
    assert torch.equal(model.backbone.stem[0].conv.weight, source.stem[0].conv.weight)
    with pytest.raises(CheckpointMismatchError, match="model.backbone"):
        load_checkpoint(rednet26(), path)


def test_mismatch_lists_missing_and_unexpected_keys(tmp_path):
    state = rednet26(num_classes=10).state_dict()
    state.pop("head.fc.bias")
    state["head.classifier.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(rednet26(num_classes=10), path)
    message = str(info.value)
    assert "missing keys (1): head.fc.bias" in message
    assert "unexpected keys (1): head.classifier.weight" in message


def test_stem_kernel_mismatch_is_explained(tmp_path):
    path = tmp_path / "cls.pth"
    torch.save(rednet26(stem_kernel_size=3).state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match="stem_kernel_size") as info:
        load_checkpoint(rednet26(stem_kernel_size=7), path)
    assert "backbone.stem.1.conv2.conv.weight: checkpoint (18, 8, 1, 1) vs model (98, 8, 1, 1)" in str(info.value)
    load_checkpoint(rednet26(stem_kernel_size=3), path)


def test_ddp_checkpoint_is_explained_and_loads_with_strip_prefix(tmp_path):
    torch.manual_seed(0)
    source = _perturbed(rednet26(num_classes=10))
    path = tmp_path / "ddp.pth"
    torch.save({f"module.{name}": tensor for name, tensor in source.state_dict().items()}, path)
    with pytest.raises(CheckpointMismatchError, match=r"starts with 'module\.'.*DistributedDataParallel") as info:
        load_checkpoint(rednet26(num_classes=10), path)
    assert "strip_prefix='module.'" in str(info.value)
    assert "backbone-only" not in str(info.value)  # not the misleading hint
    target = load_checkpoint(rednet26(num_classes=10), path, strip_prefix="module.")
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name
    with pytest.raises(TypeError, match="strip_prefix"):
        load_checkpoint(rednet26(num_classes=10), path, strip_prefix=3)


def test_non_state_dict_file_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointMismatchError, match="does not hold a state_dict"):
        load_checkpoint(rednet26(), path)


# ------------------------------------------------------------------ argument checks
def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="depth"):
        RedNet(34)
    with pytest.raises(ValueError, match="depth"):
        ResNet(18)
    with pytest.raises(ValueError, match="kernel_size"):
        RedNet(26, stem_kernel_size=4)
    with pytest.raises(ValueError, match="num_classes"):
        rednet26(num_classes=0)
    with pytest.raises(TypeError, match="num_classes"):
        rednet26(num_classes=10.0)
