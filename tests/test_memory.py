"""Peak-memory measurement: validated on known allocations, then used to show that the
default involution needs a small multiple of input + kernels + output, far below unfold.

Run with ``-s`` to see the measured numbers."""

from __future__ import annotations

import pytest
import torch

from involution_edu import involution, involution_unfold
from involution_edu.memory import MB, peak_extra_memory, tensor_bytes
from strategies import involution_backends


# --- the measuring tool -------------------------------------------------------------------


def test_allocating_and_dropping_one_megabyte():
    def allocate():
        block = torch.empty(MB // 4)  # 2**18 float32 = 1 MB
        del block

    assert peak_extra_memory(allocate) == MB


def test_freed_memory_is_reused_in_the_count():
    def sequential():
        for _ in range(3):
            block = torch.ones(MB // 4)
            del block

    def simultaneous():
        blocks = [torch.ones(MB // 4) for _ in range(3)]
        del blocks

    assert peak_extra_memory(sequential) == MB
    assert peak_extra_memory(simultaneous) == 3 * MB


def test_views_and_in_place_ops_are_not_counted_twice():
    def views():
        base = torch.zeros(MB // 4)
        grid = base.view(512, 512)
        grid.t()[::2].add_(1.0)
        grid.mul_(2.0)

    assert peak_extra_memory(views) == MB


def test_existing_tensors_and_their_views_are_not_counted():
    existing = torch.zeros(MB // 4)

    def touch(t):
        t.view(512, 512).t().add_(1.0)
        return t[::2]

    assert peak_extra_memory(touch, existing) == 0


def test_dtype_sizes_and_kwargs():
    assert peak_extra_memory(lambda n, dtype: torch.empty(n, dtype=dtype), 1000, dtype=torch.float64) == 8000
    assert peak_extra_memory(torch.empty, 1000, dtype=torch.int16) == 2000


def test_backward_ops_and_gradients_are_counted():
    y = torch.randn(MB // 4, requires_grad=True)  # 1 MB
    # forward: y * 2 (1 MB, freed after sum); backward: the gradient (1 MB, kept in y.grad)
    peak = peak_extra_memory(lambda y: (y * 2).sum().backward(), y)
    assert y.grad is not None
    assert MB <= peak < MB + 1024


def test_custom_function_backward_is_counted():
    class Double(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t * 2

        @staticmethod
        def backward(ctx, grad):
            scratch = torch.zeros(2, *grad.shape)  # 2 MB that only the backward allocates
            scratch[0] = grad
            return scratch[0] * 2

    y = torch.randn(MB // 4, requires_grad=True)
    grad = torch.ones(MB // 4)
    # forward output 1 MB is still alive in the backward: 1 + 2 + 1 (result) = 4 MB
    assert peak_extra_memory(lambda y: Double.apply(y).backward(grad), y) == 4 * MB


def test_deterministic():
    x = torch.randn(2, 8, 12, 12, requires_grad=True)
    kernels = torch.randn(2, 2, 3, 3, 12, 12, requires_grad=True)
    grad = torch.randn(2, 8, 12, 12)

    def step(x, kernels):
        x.grad = kernels.grad = None
        involution_unfold(x, kernels).backward(grad)

    assert len({peak_extra_memory(step, x, kernels) for _ in range(3)}) == 1


def test_tensor_bytes():
    assert tensor_bytes(torch.zeros(10), torch.zeros(3, dtype=torch.float64)) == 40 + 24
    assert tensor_bytes(torch.zeros(10, 10)[::2]) == 200  # the view's own elements
    assert tensor_bytes() == 0
    with pytest.raises(TypeError, match=r"tensors\[1\] must be a torch.Tensor, got list"):
        tensor_bytes(torch.zeros(1), [1.0])


def test_fn_must_be_callable():
    with pytest.raises(TypeError, match="fn must be callable, got int"):
        peak_extra_memory(3)


# --- the claim of the library: involution is memory-lean ------------------------------------


def test_involution_peak_memory_is_small_and_far_below_unfold():
    batch, channels, size, kernel_size, groups = 8, 64, 56, 7, 4  # group_channels 16
    torch.manual_seed(0)
    x = torch.randn(batch, channels, size, size, requires_grad=True)
    kernels = torch.randn(batch, groups, kernel_size, kernel_size, size, size, requires_grad=True)
    grad_out = torch.randn(batch, channels, size, size)  # the output's size
    baseline = tensor_bytes(x, kernels, grad_out)  # input + kernels + output

    def step(op):
        def run(x, kernels):
            out = op(x, kernels)
            out.backward(grad_out)

        x.grad = kernels.grad = None
        return peak_extra_memory(run, x, kernels)

    unfold = step(involution_unfold)
    lean = {name: step(op) for name, op in {"involution": involution, **involution_backends()}.items()}
    lines = [
        f"\npeak extra memory, forward+backward, B={batch} C={channels} {size}x{size} K={kernel_size} "
        f"G={groups} float32, {torch.get_num_threads()} threads:",
        f"  input + kernels + output : {baseline / MB:8.1f} MB",
    ]
    for name, peak in lean.items():
        lines.append(f"  {name:<25}: {peak / MB:8.1f} MB  ({peak / baseline:.2f}x input+kernels+output)")
    lines.append(f"  involution_unfold        : {unfold / MB:8.1f} MB  ({unfold / baseline:.2f}x input+kernels+output)")
    print("\n".join(lines))
    for name, peak in lean.items():
        assert peak <= 4 * baseline, name
        assert unfold >= 5 * peak, name
