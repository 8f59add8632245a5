"""Parameter and FLOP counting: the hook rules on small layers, then the paper's table.

Models for the table are built on the meta device (shapes only) and cached: counting never mutates them.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
import torch.nn as nn

from involution_edu import Involution
from involution_edu.counting import FlopReport, count_flops, count_parameters, format_count, meta_copy
from involution_edu.paper import PaperInvolution
from involution_edu.rednet import rednet
from involution_edu.resnet import ImageClassifier, ResNet

# Exact parameter counts from instantiating the official code (FACTS.md): depth -> (3x3 stem, 7x7 stem).
PAPER_PARAMS = {
    26: (9_233_166, 9_233_886),
    38: (12_386_986, 12_387_706),
    50: (15_540_806, 15_541_526),
    101: (25_652_950, 25_653_670),
    152: (33_984_582, 33_985_302),
}
# The paper's table (G, mmcv's counter) and the multiply-adds alone (FACTS.md), 224 x 224, 7x7 stem.
PAPER_GFLOPS_MMCV = {26: 1.735, 38: 2.225, 50: 2.715, 101: 4.744, 152: 6.788}
PAPER_TABLE_GFLOPS = {26: 1.73, 38: 2.22, 50: 2.71, 101: 4.74, 152: 6.79}
PAPER_GFLOPS_MADDS = {26: 1.709, 38: 2.191, 50: 2.673, 101: 4.683, 152: 6.703}
# ResNet baselines implied by the official README (params M, GFLOPs).
RESNET_TABLE = {26: (13.7, 2.4), 38: (19.6, 3.2), 50: (25.6, 4.1), 101: (44.6, 7.9), 152: (60.2, 11.6)}


@lru_cache(maxsize=None)
def _meta_rednet(depth, stem_kernel_size=7):
    with torch.device("meta"):
        return rednet(depth, stem_kernel_size=stem_kernel_size)


@lru_cache(maxsize=None)
def _meta_resnet(depth):
    with torch.device("meta"):
        return ImageClassifier(ResNet(depth))


# ------------------------------------------------------------------ count_parameters
def test_count_parameters_counts_parameters_not_buffers():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    assert count_parameters(model) == 8 * 3 * 9 + 8 + 8 + 8
    model[0].weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 8 + 8 + 8


def test_count_parameters_counts_a_shared_tensor_once():
    layer = nn.Linear(4, 4)
    assert count_parameters(nn.Sequential(layer, layer)) == 20


@pytest.mark.parametrize("depth", sorted(PAPER_PARAMS))
@pytest.mark.parametrize("stem", [3, 7])
def test_rednet_parameters_equal_the_official_code_exactly(depth, stem):
    expected = PAPER_PARAMS[depth][0 if stem == 3 else 1]
    assert count_parameters(_meta_rednet(depth, stem)) == expected


def test_count_parameters_refuses_non_modules():
    with pytest.raises(TypeError, match="model"):
        count_parameters([torch.zeros(3)])


# ------------------------------------------------------------------ the counting rules, layer by layer
def _by_type(model, shape, mode):
    return count_flops(model, shape, mode).by_type


def test_conv_rule_with_groups_stride_and_bias():
    conv = nn.Conv2d(8, 12, kernel_size=3, stride=2, padding=1, groups=4, bias=True)
    out_h, out_w = 5, 4  # from 10 x 7 with stride 2
    positions = 2 * out_h * out_w  # batch 2
    madds = 3 * 3 * (8 // 4) * 12 * positions
    assert _by_type(conv, (2, 8, 10, 7), "madds") == {"conv": madds}
    assert _by_type(conv, (2, 8, 10, 7), "mmcv") == {"conv": madds, "conv bias": 12 * positions}


def test_linear_rule_counts_no_bias_in_either_mode():
    linear = nn.Linear(20, 7)
    for mode in ("madds", "mmcv"):
        assert _by_type(linear, (3, 20), mode) == {"linear": 3 * 20 * 7}


def test_elementwise_rules_only_in_mmcv_mode():
    model = nn.Sequential(
        nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(3, 2, 1), nn.BatchNorm2d(4, affine=False), nn.AdaptiveAvgPool2d(1)
    )
    elements = 4 * 6 * 6
    pooled = 4 * 3 * 3
    assert count_flops(model, (1, 4, 6, 6), "madds").total == 0
    assert _by_type(model, (1, 4, 6, 6), "mmcv") == {
        "batch norm": 2 * elements + pooled,  # affine: 2 per element; without affine: 1
        "relu": elements,
        "pooling": elements + pooled,  # max pool and adaptive pool: 1 per *input* element
    }


def test_a_module_called_three_times_is_counted_three_times():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.relu(self.relu(x)))

    assert count_flops(Twice(), (1, 2, 3, 3), "mmcv").total == 3 * 18


@pytest.mark.parametrize("stride, size, out", [(1, 12, 12), (2, 12, 6), (2, 13, 7)])
def test_involution_rule(stride, size, out):
    channels, k = 32, 5
    layer = Involution(channels, kernel_size=k, stride=stride, reduction_ratio=4, group_channels=8)
    hidden, span = channels // 4, k * k * (channels // 8)
    positions = out * out
    report = count_flops(layer, (1, channels, size, size), "madds")
    assert report.by_type == {
        "conv": (channels * hidden + hidden * span) * positions,  # kernel generation at H' x W'
        "involution aggregation": k * k * channels * positions,  # one K x K dot product per output element
    }
    mmcv = count_flops(layer, (1, channels, size, size), "mmcv").by_type
    assert mmcv["conv bias"] == span * positions
    assert mmcv["batch norm"] == 2 * hidden * positions
    assert mmcv["relu"] == hidden * positions
    assert mmcv.get("pooling", 0) == (channels * size * size if stride > 1 else 0)


def test_involution_in_mmcv_mode_equals_mmcv_on_the_paper_module_plus_the_aggregation():
    """mmcv sees the paper module's leaves (convs, BN, ReLU, its nn.AvgPool2d) but not the aggregation."""
    channels, k, stride, size = 64, 7, 2, 16
    ours = count_flops(Involution(channels, k, stride), (1, channels, size, size), "mmcv").total
    paper = count_flops(PaperInvolution(channels, k, stride), (1, channels, size, size), "mmcv").total
    assert ours == paper + k * k * channels * (size // stride) ** 2


@pytest.mark.parametrize("stride, size", [(1, 9), (2, 12), (2, 13), (3, 10)])
def test_the_shapes_only_involution_used_for_counting_gives_the_real_output_shape(stride, size):
    from involution_edu.counting import _involution_shapes_only

    layer = Involution(32, kernel_size=5, stride=stride, group_channels=8).eval()
    x = torch.randn(2, 32, size, size + 1)
    with torch.no_grad():
        real_out, real_kernels = layer(x, return_kernels=True)
        out, kernels = _involution_shapes_only(layer, x, return_kernels=True)
    assert out.shape == real_out.shape and torch.equal(kernels, real_kernels)


def test_counting_leaves_the_model_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_flops(model, (2, 3, 8, 8), "mmcv")
    assert model.training
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model[0]._forward_hooks


def test_meta_copy_shares_no_data_and_keeps_structure():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    copy = meta_copy(model)
    assert [n for n, _ in copy.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert all(p.is_meta for p in copy.parameters()) and all(b.is_meta for b in copy.buffers())
    assert not any(p.is_meta for p in model.parameters())


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        count_flops(nn.ReLU(), (1, 2), mode="flops")
    with pytest.raises(TypeError, match="model"):
        count_flops("resnet", (1, 3, 8, 8))
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(nn.ReLU(), (1, 0, 4, 4))
    with pytest.raises(TypeError, match="input_shape"):
        count_flops(nn.ReLU(), "1x3x8x8")


def test_report_says_what_it_counts():
    report = count_flops(nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU()), (1, 3, 8, 8), "mmcv")
    assert isinstance(report, FlopReport)
    assert report.not_counted == ("GELU",)
    text = str(report)
    assert "mmcv" in text and "conv bias" in text and "GELU" in text
    assert "involution aggregation" in count_flops(nn.Identity(), (1, 3), "madds").includes
    assert report.gflops == report.total / 1e9
    assert sum(flops for _, _, flops in report.by_module) == report.total
    assert format_count(9_233_886) == "9.23 M" and format_count(1.735e9, "FLOPs") == "1.74 GFLOPs"


# ------------------------------------------------------------------ the paper's table
@pytest.mark.parametrize("depth", sorted(PAPER_PARAMS))
def test_rednet_flops_match_the_paper(depth):
    model = _meta_rednet(depth)
    mmcv = count_flops(model, (1, 3, 224, 224), "mmcv").gflops
    madds = count_flops(model, (1, 3, 224, 224), "madds").gflops
    assert mmcv == pytest.approx(PAPER_TABLE_GFLOPS[depth], rel=0.01)
    assert mmcv == pytest.approx(PAPER_GFLOPS_MMCV[depth], rel=0.001)
    assert madds == pytest.approx(PAPER_GFLOPS_MADDS[depth], rel=0.001)
    assert 0.010 < (mmcv - madds) / mmcv < 0.017  # the element-wise extras are ~1.2-1.6 %


@pytest.mark.parametrize("depth", sorted(RESNET_TABLE))
def test_resnet_baselines_match_the_readme(depth):
    params_m, gflops = RESNET_TABLE[depth]
    model = _meta_resnet(depth)
    assert count_parameters(model) / 1e6 == pytest.approx(params_m, rel=0.01)
    for mode in ("madds", "mmcv"):
        assert count_flops(model, (1, 3, 224, 224), mode).gflops == pytest.approx(gflops, rel=0.03)


def test_rednet_is_lighter_than_resnet_at_every_depth():
    for depth in (26, 50):
        red, res = _meta_rednet(depth), _meta_resnet(depth)
        assert count_parameters(red) < 0.7 * count_parameters(res)
        assert count_flops(red, mode="mmcv").total < 0.75 * count_flops(res, mode="mmcv").total


def test_a_real_model_and_a_meta_built_one_count_the_same():
    real = rednet(26, num_classes=10)
    with torch.device("meta"):
        meta = rednet(26, num_classes=10)
    for mode in ("madds", "mmcv"):
        assert count_flops(real, (1, 3, 64, 64), mode).by_type == count_flops(meta, (1, 3, 64, 64), mode).by_type
