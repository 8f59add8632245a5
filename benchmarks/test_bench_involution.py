"""On-demand speed benchmarks (pytest-benchmark); not part of the test suite or CI.

Run from the repository root::

    python -m pytest benchmarks/ --benchmark-group-by=group --benchmark-columns=min,median,max,rounds
    python -m pytest benchmarks/ -k "native or depthwise"          # a subset
    python -m pytest benchmarks/ --benchmark-json=bench.json         # save for comparison

Each benchmark times one implementation at one RedNet-50 involution shape (batch 8, K = 7,
16 channels per group, float32), forward or forward + backward; the group is the shape and
pass, so every table compares the implementations with the depthwise convolution of the same
shape. ``python -m involution_edu.bench`` measures the same things in one run and adds
memory and the roofline.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from involution_edu.bench import REDNET50_SHAPES
from involution_edu.functional import available_backends, involution, involution_unfold

OPS = {
    "unfold": lambda x, k, w, c: involution_unfold(x, k),
    **{backend: (lambda x, k, w, c, b=backend: involution(x, k, backend=b)) for backend in available_backends()},
    "depthwise": lambda x, k, w, c: F.conv2d(x, w, padding=3, groups=c),
}


@pytest.mark.parametrize("shape", REDNET50_SHAPES, ids=lambda s: s.name)
@pytest.mark.parametrize("pass_", ["forward", "forward_backward"])
@pytest.mark.parametrize("name", list(OPS))
def test_speed(benchmark, name, pass_, shape):
    generator = torch.Generator().manual_seed(0)
    b, c, n, k, g = shape.batch, shape.channels, shape.size, shape.kernel_size, shape.groups
    x = torch.randn(b, c, n, n, generator=generator, requires_grad=True)
    kernels = torch.randn(b, g, k, k, n, n, generator=generator, requires_grad=True)
    weight = torch.randn(c, 1, k, k, generator=generator, requires_grad=True)
    grad_out = torch.randn(b, c, n, n, generator=generator)
    op = OPS[name]

    def forward():
        with torch.no_grad():
            return op(x, kernels, weight, c)

    def forward_backward():
        out = op(x, kernels, weight, c)
        out.backward(grad_out)
        x.grad = kernels.grad = weight.grad = None
        return out

    benchmark.group = f"{shape.name} {pass_}"
    rounds = 3 if name == "unfold" else 10
    out = benchmark.pedantic(forward if pass_ == "forward" else forward_backward, rounds=rounds, warmup_rounds=1)
    assert out.shape == (b, c, n, n)
