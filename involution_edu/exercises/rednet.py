"""Checkers and questions for notebook 06 (RedNet, parameters and FLOPs).

Every expected answer comes from the library: the block or network is built (on the
``meta`` device where only shapes matter) and measured with
:func:`~involution_edu.counting.count_parameters` or a forward pass. Exercises checked here::

    bottleneck_params(in_channels, planes, stride) -> int
        parameters of one RedNet bottleneck (7x7 involution, r = 4, 16 channels per group)
        with inner width ``planes`` and output width ``4 * planes``, shortcut included
    stage_shapes(input_size) -> [(C, H, W)] * 5
        RedNet's feature-map shape after the stem (max pool included) and after layer1..layer4
        for a square ``input_size x input_size`` image
    identify_checkpoint(state_dict) -> (depth, stem_kernel_size)
        which RedNet a checkpoint holds, from its names and shapes alone (a classifier with
        ``backbone.``/``head.`` keys, a bare backbone, or a DDP one with ``module.`` prefixes)

Questions (``QUESTIONS``): ``strided_shortcut``, ``most_parameters``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, Dict, List, Tuple

import torch

from ..counting import count_parameters
from ..rednet import InvolutionBottleneck, RedNet, load_checkpoint, rednet
from ..resnet import EXPANSION, make_res_layer
from .framework import Case, Question, run_cases

__all__ = ["check_bottleneck_params", "check_stage_shapes", "check_identify_checkpoint", "QUESTIONS"]


# ----------------------------------------------------------------------------- bottleneck_params
def _bottleneck_params_expected(in_channels: int, planes: int, stride: int) -> int:
    with torch.device("meta"):
        layer = make_res_layer(InvolutionBottleneck, 1, in_channels, EXPANSION * planes, stride)
    return count_parameters(layer)


def _bottleneck_mistakes(in_channels: int, planes: int, stride: int) -> List[Tuple[int, str]]:
    """The counts the usual slips give for this block, each with the slip named."""
    out = EXPANSION * planes
    hidden, groups = planes // 4, planes // 16
    right = _bottleneck_params_expected(in_channels, planes, stride)
    shortcut = in_channels * out + 2 * out
    has_shortcut = stride != 1 or in_channels != out
    mistakes = [
        (right - 49 * groups, f"you left out the bias of the involution's conv2 (K*K*G = {49 * groups} values)"),
        (right - 2 * planes, f"you left out one BN's two vectors (weight and bias: 2 x {planes} values)"),
        (right - 2 * out, f"you left out bn3's two vectors (2 x {out} values)"),
        (right - 2 * hidden, f"you left out the BN inside the involution's kernel generator (2 x C/r = {2 * hidden} values)"),
        (right + 2 * planes + 2 * planes + 2 * out + 2 * hidden + (2 * out if has_shortcut else 0),
         "you counted the BN running statistics (running_mean, running_var): they are buffers, not parameters"),
        (right - (planes * hidden + 2 * hidden + hidden * 49 * groups + 49 * groups) + 9 * planes * planes,
         "that is the count with a 3x3 convolution in the middle (ResNet's block), not the 7x7 involution"),
    ]
    if has_shortcut:
        if stride != 1 and in_channels == out:
            mistakes.append((right - shortcut, "the channels match but the stride is 2: x cannot be added to a map of "
                                               f"half the size, so this block needs the shortcut conv + BN ({shortcut} values)"))
        else:
            mistakes.append((right - shortcut, f"you left out the shortcut (1x1 conv {in_channels} -> {out} + BN = {shortcut} values)"))
        mistakes.append((right + out, "the shortcut's 1x1 conv has no bias (a BN follows it)"))
    else:
        mistakes.append((right + shortcut, "this block has the same shape in and out: its shortcut is the identity, "
                                           "with no parameters"))
    return mistakes


def check_bottleneck_params(bottleneck_params: Callable[[int, int, int], object]) -> bool:
    """Check ``bottleneck_params(in_channels, planes, stride) -> int`` against a built block."""
    table = [
        ("layer1.0: 64 -> 256", (64, 64, 1), "the first block of layer1 widens 64 -> 256, so it has a shortcut conv + BN even with stride 1"),
        ("layer1.1: 256 -> 256", (256, 64, 1), "same shape in and out: no shortcut parameters at all"),
        ("256 -> 256 with stride 2", (256, 64, 2), "the channels already match, but stride 2 halves the map: the shortcut needs its strided 1x1 conv + BN"),
        ("layer2.0: 256 -> 512, stride 2", (256, 128, 2), "a strided first block: shortcut conv 256 -> 512 + BN; the stride adds no parameters"),
        ("a narrow block: 128 -> 128", (128, 32, 1), "planes = 32: G = 2 groups, C/r = 8 hidden channels"),
        ("layer3.1: 1024 -> 1024", (1024, 256, 1), "a wide block: the involution has G = 256 // 16 = 16 groups and C/r = 64 hidden channels"),
        ("layer4.0: 1024 -> 2048, stride 2", (1024, 512, 2), "the widest block; conv2 of the involution has a bias of K*K*G = 49 * 32 entries"),
    ]
    cases = [Case(name, args, _bottleneck_params_expected(*args), why, mistakes=_bottleneck_mistakes(*args))
             for name, args, why in table]
    return run_cases("bottleneck_params", bottleneck_params, cases,
                     forbidden=[count_parameters, InvolutionBottleneck, make_res_layer, ".numel", ".parameters",
                                ".named_parameters", ".state_dict"],
                     what="the count from the layer shapes")


# ----------------------------------------------------------------------------- stage_shapes
@lru_cache(maxsize=None)
def _stage_shapes_expected(input_size: int) -> Tuple[Tuple[int, int, int], ...]:
    with torch.device("meta"):
        backbone = RedNet(26).eval()
        with torch.no_grad():
            stages = backbone.forward_stages(torch.empty(1, 3, input_size, input_size))
    return tuple(tuple(int(s) for s in out.shape[1:]) for _, out in stages)


def _shapes(input_size: int, halve: Callable[[int], int], stem_halvings: int = 2, layer1_stride: bool = False,
            widths: Tuple[int, ...] = (64, 256, 512, 1024, 2048)) -> List[Tuple[int, int, int]]:
    size = input_size
    for _ in range(stem_halvings):
        size = halve(size)
    shapes = [(widths[0], size, size)]
    if layer1_stride:
        size = halve(size)
    shapes.append((widths[1], size, size))
    for channels in widths[2:]:
        size = halve(size)
        shapes.append((channels, size, size))
    return shapes


def check_stage_shapes(stage_shapes: Callable[[int], object]) -> bool:
    """Check ``stage_shapes(input_size) -> [(C, H, W), ...]`` (stem, layer1 ... layer4) against a forward pass."""
    table = [
        ("224 x 224 (ImageNet)", 224, "the paper's resolution: 56, 56, 28, 14, 7"),
        ("64 x 64", 64, "a small even size: every stride divides it"),
        ("65 x 65", 65, "odd sizes: each stride-2 layer gives ceil(H / 2) rows (padding keeps the last partial window)"),
        ("100 x 100", 100, "100 -> 50 -> 25 -> 25 -> 13 -> 7 -> 4: an odd size appears in the middle"),
        ("33 x 33", 33, "a tiny image: the last stage is 2 x 2, not 1 x 1"),
    ]
    ceil_half = lambda n: (n + 1) // 2  # noqa: E731
    cases = []
    for name, size, why in table:
        mistakes = [
            (_shapes(size, lambda n: n // 2), "you halved with floor (n // 2); a stride-2 layer with padding gives ceil(n / 2)"),
            (_shapes(size, ceil_half, stem_halvings=1), "you forgot the max pool after the stem: it halves the size once more"),
            (_shapes(size, ceil_half, layer1_stride=True), "layer1 has stride 1: only layer2, layer3 and layer4 start with stride 2"),
            (_shapes(size, ceil_half, widths=(64, 64, 128, 256, 512)),
             "those are the inner widths (planes); a stage outputs 4 x planes channels"),
        ]
        cases.append(Case(name, (size,), [tuple(shape) for shape in _stage_shapes_expected(size)], why, mistakes=mistakes))
    return run_cases("stage_shapes", stage_shapes, cases, forbidden=[RedNet, ".forward_stages"],
                     what="the size arithmetic")


# ----------------------------------------------------------------------------- identify_checkpoint
@lru_cache(maxsize=None)
def _meta_state_shapes(depth: int, stem_kernel_size: int) -> Tuple[Tuple[str, Tuple[int, ...]], ...]:
    with torch.device("meta"):
        model = rednet(depth, stem_kernel_size=stem_kernel_size)
    return tuple((name, tuple(t.shape)) for name, t in model.state_dict().items())


def _state_dict(depth: int, stem_kernel_size: int, form: str) -> Dict[str, torch.Tensor]:
    """A meta-tensor state_dict (names and shapes, no data) of RedNet-``depth`` in one of the forms
    checkpoints come in: ``"classifier"`` (backbone.* + head.*), ``"backbone"`` (no prefix, no head),
    ``"ddp"`` (the classifier's keys behind ``module.``)."""
    out: Dict[str, torch.Tensor] = {}
    for name, shape in _meta_state_shapes(depth, stem_kernel_size):
        if form == "backbone":
            if not name.startswith("backbone."):
                continue
            name = name[len("backbone."):]
        elif form == "ddp":
            name = "module." + name
        out[name] = torch.empty(shape, device="meta")
    return out


def check_identify_checkpoint(identify_checkpoint: Callable[[Dict[str, torch.Tensor]], object]) -> bool:
    """Check ``identify_checkpoint(state_dict) -> (depth, stem_kernel_size)``; the state_dicts hold
    meta tensors (shapes, no values) in the three forms checkpoints come in."""
    table = [
        ("RedNet-26, classifier, 7x7 stem", 26, 7, "classifier", "backbone.* and head.* keys; stem.1.conv2 has K*K*G = 49 * 2 outputs"),
        ("RedNet-50, classifier, 3x3 stem", 50, 3, "classifier", "the official ImageNet checkpoints: 3x3 stem, 9 * 2 = 18 kernel values"),
        ("RedNet-101, bare backbone", 101, 7, "backbone", "no 'backbone.' prefix and no head: a backbone saved on its own"),
        ("RedNet-38, DDP, 3x3 stem", 38, 3, "ddp", "saved from DistributedDataParallel: every key starts with 'module.'"),
        ("RedNet-152, backbone, 3x3 stem", 152, 3, "backbone", "the deepest: 3 + 8 + 36 + 3 = 50 blocks"),
    ]
    cases = []
    for name, depth, k, form, why in table:
        blocks = sum({26: (1, 2, 4, 1), 38: (2, 3, 5, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}[depth])
        mistakes = [
            ((blocks, k), f"{blocks} is the number of bottlenecks; the depth counts weighted layers: 3 per block, plus the stem and the classifier"),
            ((3 * blocks, k), "3 per block, plus 2: the stem and the classifier count as one layer each"),
            ((depth, int(math.isqrt(k * k * 2))), "stem.1.conv2 outputs K*K*G values with G = 32 // 16 = 2 groups: divide by G before the square root"),
            ((depth, 7 if k == 3 else 3), "the stem kernel size is read from stem.1.conv2's shape: K*K*G outputs"),
        ]
        cases.append(Case(name, (_state_dict(depth, k, form),), (depth, k), why, mistakes=mistakes))
    return run_cases("identify_checkpoint", identify_checkpoint, cases,
                     forbidden=[load_checkpoint, rednet, RedNet, ".load_state_dict", "involution_edu.rednet.rednet26",
                                "involution_edu.rednet.rednet50"],
                     what="the reading of names and shapes")


# ----------------------------------------------------------------------------- questions
QUESTIONS: Dict[str, Question] = {
    "strided_shortcut": Question(
        prompt=("A RedNet bottleneck with in_channels = 256, planes = 64 (so 256 channels out) and stride 2. "
                "What is its shortcut?"),
        choices={
            "a": "the identity: the channels match",
            "b": "a 1x1 conv with stride 2, then BN",
            "c": "a 1x1 conv with stride 1, then BN",
            "d": "a 2x2 average pool, no parameters",
        },
        answer="b",
        explanation=("The main path halves the map, so x (full size) cannot be added to it; the shortcut must halve "
                     "it too. RedNet (like ResNet v1) does it with a strided 1x1 conv + BN whenever the stride is not 1 "
                     "or the channels change: 256 * 256 + 2 * 256 = 66,048 parameters here."),
        wrong={
            "a": "matching channels are not enough: with stride 2 the output is half the size of x, so x cannot be added.",
            "c": "a stride-1 conv keeps the full size, which still cannot be added to the halved main path.",
            "d": ("some ResNet variants (ResNet-D) pool before the 1x1 conv, but RedNet's downsample is a strided 1x1 "
                  "conv + BN, and a pool alone could not change the number of channels in other blocks."),
        },
    ),
    "most_parameters": Question(
        prompt=("Predict before you run: in RedNet-50 (1000 classes), which of these holds the most parameters?"),
        choices={
            "a": "the 7x7 involutions of the blocks",
            "b": "the 1x1 convolutions of the blocks",
            "c": "the shortcuts (1x1 conv + BN)",
            "d": "the classifier (fc 2048 -> 1000)",
        },
        answer="b",
        explanation=("The 1x1 convs hold about 9.4 M of 15.5 M: each block has two of them, C_in*C and C*4C. The "
                     "involutions hold only about 1.3 M, which is the whole point: the 3x3 convs they replace held "
                     "11.3 M in ResNet-50."),
        wrong={
            "a": ("the involutions are RedNet's cheap part (about 1.3 M in all): their kernels are generated, so only "
                  "the generator's two small 1x1 convs are weights."),
            "c": "the shortcuts hold about 2.8 M: only the first block of each stage has one.",
            "d": "the classifier holds 2048 * 1000 + 1000 = about 2.0 M, large for one layer but not the largest group.",
        },
    ),
}
