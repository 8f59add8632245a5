"""Checkers and questions for notebook 06 (RedNet, parameters and FLOPs).

Every expected answer comes from the library: the block or network is built (on the
``meta`` device where only shapes matter) and measured with
:func:`~involution_edu.counting.count_parameters` or a forward pass. Each checker runs its
named cases, then a few hidden cases drawn at random on every call, so a table of answers
cannot pass. Exercises checked here::

    bottleneck_params(in_channels, planes, stride) -> int
        parameters of one RedNet bottleneck (7x7 involution, r = 4, 16 channels per group)
        with inner width ``planes`` and output width ``4 * planes``, shortcut included
    stage_shapes(height, width, stem_stride, max_pool) -> [(C, H, W)] * 5
        the feature-map shape after the stem (max pool included when there is one) and after
        layer1..layer4 of a RedNet whose stem conv ``stem.0`` has stride ``stem_stride`` (2 in
        the paper) and whose max pool is there or not, for a ``height x width`` image
    identify_checkpoint(state_dict) -> (depth, stem_kernel_size)
        which RedNet a checkpoint holds, from its names and shapes alone (a classifier with
        ``backbone.``/``head.`` keys, a bare backbone, a DDP one with ``module.`` prefixes, or
        a legacy one without ``num_batches_tracked`` entries; any blocks per stage)

Questions (``QUESTIONS``): ``strided_shortcut``, ``most_parameters``.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..counting import count_parameters
from ..rednet import InvolutionBottleneck, RedNet, load_checkpoint, rednet
from ..resnet import EXPANSION, STAGE_BLOCKS, STAGE_PLANES, STAGE_STRIDES, make_res_layer
from .framework import Case, Question, Rule, run_cases

__all__ = ["check_bottleneck_params", "check_stage_shapes", "check_identify_checkpoint", "QUESTIONS"]


def _run(title: str, candidate: Callable[..., object], cases: Sequence[Case], *, what: str,
         forbid: Sequence[object] = (), families: Sequence[str] = (), allow: Sequence[object] = (),
         random_cases: Callable[[np.random.Generator], Sequence[Case]] | None = None):
    """``run_cases`` with this exercise's rule (run-time guard) and hidden random cases."""
    rule = Rule(what=what, forbid=tuple(forbid), families=tuple(families), allow=tuple(allow))
    return run_cases(title, candidate, cases, rule=rule, random_cases=random_cases)


def _cached(function: Callable[..., object]) -> Callable[..., object]:
    """A memo of ``function`` that stays a Python function (``functools.lru_cache`` returns a C object whose
    cache hits the run-time guard cannot see, so a learner calling an oracle would not be refused)."""
    memo: Dict[Tuple[object, ...], object] = {}

    @functools.wraps(function)
    def cached(*args: object) -> object:
        if args not in memo:
            memo[args] = function(*args)
        return memo[args]

    return cached


# ----------------------------------------------------------------------------- bottleneck_params
@_cached
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
        elif in_channels > out:
            mistakes.append((right - shortcut, f"the block narrows {in_channels} channels to {out}: x cannot be added "
                                               f"as it is, so it needs the shortcut conv + BN ({shortcut} values)"))
        else:
            mistakes.append((right - shortcut, f"you left out the shortcut (1x1 conv {in_channels} -> {out} + BN = {shortcut} values)"))
        mistakes.append((right + out, "the shortcut's 1x1 conv has no bias (a BN follows it)"))
    else:
        mistakes.append((right + shortcut, "this block has the same shape in and out: its shortcut is the identity, "
                                           "with no parameters"))
    return [(value, message) for value, message in mistakes if value != right]


def _bottleneck_case(name: str, args: Tuple[int, int, int], why: str) -> Case:
    return Case(name, args, _bottleneck_params_expected(*args), why, rtol=0.0, atol=0.0,
                mistakes=_bottleneck_mistakes(*args))


def _random_bottlenecks(rng: np.random.Generator) -> List[Case]:
    """Three blocks no table holds: one that keeps its width, one that narrows, one of any shape."""
    cases = []
    for kind in ("same width", "narrowing", "any"):
        planes = 16 * int(rng.integers(1, 33))
        stride = int(rng.choice([1, 2]))
        if kind == "same width":
            in_channels = 4 * planes
        elif kind == "narrowing":
            in_channels = 4 * planes + 8 * int(rng.integers(1, 257))
        else:
            in_channels = 8 * int(rng.integers(1, 513))
        cases.append(_bottleneck_case(f"a random {kind} block", (in_channels, planes, stride),
                                      "every weight, bias and BN vector of a block built from these arguments, "
                                      "the shortcut whenever x cannot be added as it is"))
    return cases


def check_bottleneck_params(bottleneck_params: Callable[[int, int, int], object]):
    """Check ``bottleneck_params(in_channels, planes, stride) -> int`` against a built block.

    Pure arithmetic: the run-time guard refuses any torch call and any library function (building
    the block and counting its parameters is the route the exercise closes).
    """
    table = [
        ("layer1.0: 64 -> 256", (64, 64, 1), "the first block of layer1 widens 64 -> 256, so it has a shortcut conv + BN even with stride 1"),
        ("layer1.1: 256 -> 256", (256, 64, 1), "same shape in and out: no shortcut parameters at all"),
        ("256 -> 256 with stride 2", (256, 64, 2), "the channels already match, but stride 2 halves the map: the shortcut needs its strided 1x1 conv + BN"),
        ("layer2.0: 256 -> 512, stride 2", (256, 128, 2), "a strided first block: shortcut conv 256 -> 512 + BN; the stride adds no parameters"),
        ("a narrow block: 128 -> 128", (128, 32, 1), "planes = 32: G = 2 groups, C/r = 8 hidden channels"),
        ("a narrowing block: 1024 -> 256", (1024, 64, 1), "in > out: x has more channels than the output, so the block needs the shortcut conv + BN"),
        ("layer3.1: 1024 -> 1024", (1024, 256, 1), "a wide block: the involution has G = 256 // 16 = 16 groups and C/r = 64 hidden channels"),
        ("layer4.0: 1024 -> 2048, stride 2", (1024, 512, 2), "the widest block; conv2 of the involution has a bias of K*K*G = 49 * 32 entries"),
    ]
    cases = [_bottleneck_case(name, args, why) for name, args, why in table]
    return _run("bottleneck_params", bottleneck_params, cases, what="the count from the layer shapes",
                families=["torch"], random_cases=_random_bottlenecks)


# ----------------------------------------------------------------------------- stage_shapes
@_cached
def _variant_backbone(stem_stride: int, max_pool: bool) -> RedNet:
    """A meta-device RedNet-26 whose stem conv has ``stem_stride`` and whose max pool may be gone. Each stage
    keeps only its first block: the later ones have stride 1 and keep the shape, and a forward pass is faster."""
    with torch.device("meta"):
        backbone = RedNet(26).eval()
        in_channels = 64
        for stage, (planes, stride) in enumerate(zip(STAGE_PLANES, STAGE_STRIDES), start=1):
            setattr(backbone, f"layer{stage}", make_res_layer(InvolutionBottleneck, 1, in_channels, planes * EXPANSION, stride))
            in_channels = planes * EXPANSION
    backbone.eval()
    backbone.stem[0].conv.stride = (stem_stride, stem_stride)
    if not max_pool:
        backbone.maxpool = nn.Identity()
    return backbone


@_cached
def _stage_shapes_expected(height: int, width: int, stem_stride: int, max_pool: bool) -> Tuple[Tuple[int, int, int], ...]:
    backbone = _variant_backbone(stem_stride, max_pool)
    with torch.no_grad():
        stages = backbone.forward_stages(torch.empty(1, 3, height, width, device="meta"))
    return tuple(tuple(int(s) for s in out.shape[1:]) for _, out in stages)


def _ceil_half(n: int) -> int:
    return (n + 1) // 2


def _shapes(height: int, width: int, stem_stride: int, max_pool: bool, halve: Callable[[int], int] = _ceil_half,
            layer1_stride: bool = False, widths: Tuple[int, ...] = (64, 256, 512, 1024, 2048)) -> List[Tuple[int, int, int]]:
    """The shapes with a chosen way of halving (the right one, or a slip)."""
    h, w = height, width
    if stem_stride == 2:
        h, w = halve(h), halve(w)
    if max_pool:
        h, w = halve(h), halve(w)
    shapes = [(widths[0], h, w)]
    if layer1_stride:
        h, w = halve(h), halve(w)
    shapes.append((widths[1], h, w))
    for channels in widths[2:]:
        h, w = halve(h), halve(w)
        shapes.append((channels, h, w))
    return shapes


def _stage_case(name: str, height: int, width: int, stem_stride: int, max_pool: bool, why: str) -> Case:
    args = (height, width, stem_stride, max_pool)
    expected = [tuple(shape) for shape in _stage_shapes_expected(*args)]
    mistakes = [
        (_shapes(*args, halve=lambda n: n // 2), "you halved with floor (n // 2); a stride-2 layer with padding gives ceil(n / 2)"),
        (_shapes(height, width, 2, max_pool), f"stem.0 has stride {stem_stride} here: the stem halves the size only when its stride is 2"),
        (_shapes(height, width, stem_stride, True), "there is no max pool in this stem (max_pool=False): it does not halve the size"),
        (_shapes(height, width, stem_stride, False), "you forgot the max pool after the stem: it halves the size once more"),
        (_shapes(*args, layer1_stride=True), "layer1 has stride 1: only layer2, layer3 and layer4 start with stride 2"),
        (_shapes(*args, widths=(64, 64, 128, 256, 512)), "those are the inner widths (planes); a stage outputs 4 x planes channels"),
        ([(c, w, h) for c, h, w in expected], "height and width are swapped: each tuple is (C, H, W)"),
    ]
    merged: List[Tuple[object, str]] = []  # two slips that give the same shapes here are named together
    for value, message in mistakes:
        if value == expected:
            continue
        same = [k for k, (other, _) in enumerate(merged) if other == value]
        if same:
            merged[same[0]] = (value, f"{merged[same[0]][1]}; or: {message}")
        else:
            merged.append((value, message))
    return Case(name, args, expected, why, mistakes=merged)


def _random_stage_shapes(rng: np.random.Generator) -> List[Case]:
    cases = []
    for _ in range(3):
        height, width = (int(v) for v in rng.integers(1, 401, size=2))
        stem_stride, max_pool = int(rng.choice([1, 2])), bool(rng.integers(0, 2))
        cases.append(_stage_case("a random image and stem", height, width, stem_stride, max_pool,
                                 "each stride-2 layer turns n rows into ceil(n / 2), rows and columns separately"))
    return cases


def check_stage_shapes(stage_shapes: Callable[..., object]):
    """Check ``stage_shapes(height, width, stem_stride, max_pool) -> [(C, H, W), ...]`` (stem, layer1 ... layer4)
    against a meta-device forward pass of RedNet-26 with that stem. Pure arithmetic: the run-time guard refuses
    any torch call and any library function."""
    table = [
        ("224 x 224, the paper's stem", 224, 224, 2, True, "the paper's network: two halvings in the stem, one in each of layer2..4"),
        ("32 x 32, CIFAR stem (stride 1, no max pool)", 32, 32, 1, False, "a small-image stem keeps the full resolution up to layer1"),
        ("65 x 47, the paper's stem", 65, 47, 2, True, "odd, non-square sizes: ceil(n / 2) at every stride-2 layer, rows and columns separately"),
        ("100 x 100, stride-1 stem with max pool", 100, 100, 1, True, "only the max pool halves the size before layer1"),
        ("33 x 20, stride-2 stem, no max pool", 33, 20, 2, False, "only stem.0 halves the size before layer1"),
        ("3 x 5, the paper's stem", 3, 5, 2, True, "a tiny image: a size of 1 stays 1 at every later stride-2 layer"),
    ]
    cases = [_stage_case(*row) for row in table]
    return _run("stage_shapes", stage_shapes, cases, what="the size arithmetic", families=["torch"],
                random_cases=_random_stage_shapes)


# ----------------------------------------------------------------------------- identify_checkpoint
@_cached
def _stage_entries(stage: int) -> Tuple[Tuple[Tuple[str, Tuple[int, ...]], ...], Tuple[Tuple[str, Tuple[int, ...]], ...]]:
    """(name, shape) entries of stage ``stage`` (0-based)'s first block and of one of its later blocks,
    names relative to the block (``conv1.weight``, ...)."""
    in_channels = 64 if stage == 0 else STAGE_PLANES[stage - 1] * EXPANSION
    with torch.device("meta"):
        layer = make_res_layer(InvolutionBottleneck, 2, in_channels, STAGE_PLANES[stage] * EXPANSION, STAGE_STRIDES[stage])
    first, later = [], []
    for name, tensor in layer.state_dict().items():
        index, rest = name.split(".", 1)
        (first if index == "0" else later).append((rest, tuple(tensor.shape)))
    return tuple(first), tuple(later)


@_cached
def _stem_and_head(stem_kernel_size: int) -> Tuple[Tuple[Tuple[str, Tuple[int, ...]], ...], Tuple[Tuple[str, Tuple[int, ...]], ...]]:
    with torch.device("meta"):
        model = rednet(26, stem_kernel_size=stem_kernel_size)
    stem = tuple((name, tuple(t.shape)) for name, t in model.state_dict().items() if name.startswith("backbone.stem."))
    head = tuple((name, tuple(t.shape)) for name, t in model.state_dict().items() if name.startswith("head."))
    return stem, head


def _checkpoint_shapes(blocks: Tuple[int, ...], stem_kernel_size: int) -> List[Tuple[str, Tuple[int, ...]]]:
    """(name, shape) of every state_dict entry of a RedNet classifier with ``blocks`` bottlenecks per stage."""
    stem, head = _stem_and_head(stem_kernel_size)
    entries = list(stem)
    for stage, count in enumerate(blocks):
        first, later = _stage_entries(stage)
        for index in range(count):
            entries += [(f"backbone.layer{stage + 1}.{index}.{rest}", shape) for rest, shape in (first if index == 0 else later)]
    return entries + list(head)


def _state_dict(blocks: Tuple[int, ...], stem_kernel_size: int, form: str) -> Dict[str, torch.Tensor]:
    """A meta-tensor state_dict (names and shapes, no data) in one of the forms checkpoints come in:
    ``"classifier"`` (backbone.* + head.*), ``"backbone"`` (no prefix, no head), ``"ddp"`` (the
    classifier's keys behind ``module.``), ``"legacy"`` (the classifier without ``num_batches_tracked``)."""
    out: Dict[str, torch.Tensor] = {}
    for name, shape in _checkpoint_shapes(tuple(blocks), stem_kernel_size):
        if form == "backbone":
            if not name.startswith("backbone."):
                continue
            name = name[len("backbone."):]
        elif form == "ddp":
            name = "module." + name
        elif form == "legacy" and name.endswith("num_batches_tracked"):
            continue
        out[name] = torch.empty(shape, device="meta")
    return out


def _checkpoint_case(name: str, blocks: Tuple[int, ...], k: int, form: str, why: str) -> Case:
    depth = 3 * sum(blocks) + 2
    mistakes = [
        ((sum(blocks), k), f"{sum(blocks)} is the number of bottlenecks; the depth counts weighted layers: 3 per block, "
                           "plus the stem and the classifier"),
        ((3 * sum(blocks), k), "3 per block, plus 2: the stem and the classifier count as one layer each"),
        ((depth, int(math.isqrt(k * k * 2))), "stem.1.conv2 outputs K*K*G values with G = 32 // 16 = 2 groups: divide "
                                               "by G before the square root"),
    ]
    if k in (3, 7):
        mistakes.append(((depth, 10 - k), "the stem kernel size is read from stem.1.conv2's shape: K*K*G outputs"))
    mistakes = [(value, message) for value, message in mistakes if value != (depth, k)]
    return Case(name, (_state_dict(blocks, k, form),), (depth, k), why, mistakes=mistakes)


def _random_checkpoints(rng: np.random.Generator) -> List[Case]:
    cases = []
    for form in rng.permutation(["classifier", "backbone", "ddp", "legacy"])[:3]:
        blocks = tuple(int(b) for b in rng.integers(1, 7, size=4))
        k = int(rng.choice([1, 3, 5, 7, 9]))
        cases.append(_checkpoint_case(f"a random {form} checkpoint", blocks, k, str(form),
                                      "the blocks of each stage from the layer indices (depth = 3 x blocks + 2) and the "
                                      "stem's K from the shape of stem.1.conv2, in any of the four forms"))
    return cases


def check_identify_checkpoint(identify_checkpoint: Callable[[Dict[str, torch.Tensor]], object]):
    """Check ``identify_checkpoint(state_dict) -> (depth, stem_kernel_size)``; the state_dicts hold
    meta tensors (shapes, no values) in the four forms checkpoints come in, for the five standard
    depths and for other numbers of blocks per stage. The run-time guard refuses the library's models
    and ``load_state_dict`` (trying models until one loads is the route the exercise closes)."""
    table = [
        ("RedNet-26, classifier, 7x7 stem", STAGE_BLOCKS[26], 7, "classifier", "backbone.* and head.* keys; stem.1.conv2 has K*K*G = 49 * 2 outputs"),
        ("RedNet-50, classifier, 3x3 stem", STAGE_BLOCKS[50], 3, "classifier", "the official ImageNet checkpoints: 3x3 stem, 9 * 2 = 18 kernel values"),
        ("RedNet-101, bare backbone", STAGE_BLOCKS[101], 7, "backbone", "no 'backbone.' prefix and no head: a backbone saved on its own"),
        ("RedNet-38, DDP, 3x3 stem", STAGE_BLOCKS[38], 3, "ddp", "saved from DistributedDataParallel: every key starts with 'module.'"),
        ("RedNet-152, backbone, 3x3 stem", STAGE_BLOCKS[152], 3, "backbone", "the deepest: 3 + 8 + 36 + 3 = 50 blocks"),
        ("RedNet-50, legacy (no num_batches_tracked)", STAGE_BLOCKS[50], 7, "legacy",
         "an old release's checkpoint has no num_batches_tracked entries: count blocks, not entries"),
        ("blocks (2, 2, 2, 2), 5x5 stem", (2, 2, 2, 2), 5, "classifier",
         "other blocks per stage: 8 blocks give depth 26 although the stages are not RedNet-26's (1, 2, 4, 1)"),
    ]
    cases = [_checkpoint_case(*row) for row in table]
    return _run("identify_checkpoint", identify_checkpoint, cases, what="the reading of names and shapes",
                forbid=["torch.nn.Module.load_state_dict", load_checkpoint, rednet, RedNet],
                random_cases=_random_checkpoints)


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
