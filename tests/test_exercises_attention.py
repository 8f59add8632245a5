"""The notebook-09 checkers accept a correct solution and reject plausible wrong ones with a helpful message."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from involution_edu.exercises.attention import (
    attention_kernels_reference,
    check_attention_kernels,
    check_window_softmax,
    window_softmax_reference,
)

# --------------------------------------------------------------------------- correct solutions


def window_softmax_solution(logits):
    flat = logits.flatten(2, 3)
    flat = flat - flat.amax(dim=2, keepdim=True)
    weights = flat.exp()
    return (weights / weights.sum(dim=2, keepdim=True)).view_as(logits)


def attention_kernels_loops(q, k, kernel_size, heads):
    """Plain loops over every head, position and window tap: the oracle for the reference."""
    batch, dims, height, width = q.shape
    head_dims, pad = dims // heads, (kernel_size - 1) // 2
    out = torch.zeros(batch, heads, kernel_size, kernel_size, height, width, dtype=q.dtype)
    for b in range(batch):
        for h in range(heads):
            block = slice(h * head_dims, (h + 1) * head_dims)
            for i in range(height):
                for j in range(width):
                    taps, logits = [], []
                    for u in range(kernel_size):
                        for v in range(kernel_size):
                            r, s = i + u - pad, j + v - pad
                            if 0 <= r < height and 0 <= s < width:
                                taps.append((u, v))
                                logits.append(float(q[b, block, i, j] @ k[b, block, r, s]) / math.sqrt(head_dims))
                    top = max(logits)
                    exps = [math.exp(value - top) for value in logits]
                    for (u, v), e in zip(taps, exps):
                        out[b, h, u, v, i, j] = e / sum(exps)
    return out


def attention_kernels_solution(q, k, kernel_size, heads):
    batch, dims, height, width = q.shape
    head_dims, pad = dims // heads, (kernel_size - 1) // 2
    keys = F.unfold(k, kernel_size, padding=pad).view(batch, heads, head_dims, kernel_size, kernel_size, height, width)
    inside = F.unfold(torch.ones(1, 1, height, width, dtype=q.dtype), kernel_size, padding=pad)
    inside = inside.view(1, 1, kernel_size, kernel_size, height, width) > 0
    logits = (q.view(batch, heads, head_dims, 1, 1, height, width) * keys).sum(2) / math.sqrt(head_dims)
    return window_softmax_solution(logits.masked_fill(~inside, float("-inf")))


# --------------------------------------------------------------------------- wrong answers


def softmax_over_one_window_axis(logits):
    return torch.softmax(logits, dim=3)


def softmax_over_the_image(logits):
    batch, groups, k1, k2, height, width = logits.shape
    return torch.softmax(logits.reshape(batch, groups, k1, k2, height * width), dim=-1).view_as(logits)


def softmax_without_max_subtraction(logits):
    weights = logits.flatten(2, 3).exp()
    return (weights / weights.sum(dim=2, keepdim=True)).view_as(logits)


def softmax_that_zeroes_infinities(logits):
    return window_softmax_solution(torch.nan_to_num(logits, neginf=0.0))


def kernels_without_scaling(q, k, kernel_size, heads):
    head_dims = q.shape[1] // heads
    return attention_kernels_solution(q * math.sqrt(head_dims), k, kernel_size, heads)


def kernels_scaled_by_all_channels(q, k, kernel_size, heads):
    scale = math.sqrt(q.shape[1] // heads) / math.sqrt(q.shape[1])
    return attention_kernels_solution(q * scale, k, kernel_size, heads)


def kernels_with_zero_keys_outside(q, k, kernel_size, heads):
    batch, dims, height, width = q.shape
    head_dims, pad = dims // heads, (kernel_size - 1) // 2
    keys = F.unfold(k, kernel_size, padding=pad).view(batch, heads, head_dims, kernel_size, kernel_size, height, width)
    logits = (q.view(batch, heads, head_dims, 1, 1, height, width) * keys).sum(2) / math.sqrt(head_dims)
    return window_softmax_solution(logits)


def kernels_with_interleaved_heads(q, k, kernel_size, heads):
    batch, dims, height, width = q.shape
    order = torch.arange(dims).view(dims // heads, heads).t().reshape(-1)  # channel c -> head c % heads
    return attention_kernels_solution(q[:, order], k[:, order], kernel_size, heads)


def kernels_with_swapped_window_axes(q, k, kernel_size, heads):
    return attention_kernels_solution(q, k, kernel_size, heads).transpose(2, 3)


def not_attempted(*args):
    raise NotImplementedError("Write your solution here")


def crashes(*args):
    raise RuntimeError("shape mismatch in my code")


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("batch, dims, height, width, kernel_size, heads", [
    (1, 2, 4, 4, 3, 1), (1, 3, 3, 4, 5, 1), (2, 4, 4, 3, 3, 2), (1, 6, 2, 3, 1, 3), (1, 8, 5, 6, 5, 4), (1, 2, 2, 2, 7, 2),
])  # fmt: skip
def test_reference_matches_explicit_loops(batch, dims, height, width, kernel_size, heads):
    generator = torch.Generator().manual_seed(batch * 100 + dims * 10 + kernel_size)
    q = torch.randn(batch, dims, height, width, generator=generator, dtype=torch.float64)
    k = torch.randn(batch, dims, height, width, generator=generator, dtype=torch.float64)
    expected = attention_kernels_loops(q, k, kernel_size, heads)
    got = attention_kernels_reference(q, k, kernel_size, heads)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.sum(dim=(2, 3)), torch.ones(batch, heads, height, width, dtype=torch.float64))


def test_window_softmax_reference_sums_to_one_and_ignores_minus_infinity():
    logits = torch.randn(2, 3, 3, 3, 4, 5, dtype=torch.float64)
    logits[..., 0, 0, :, :] = float("-inf")
    weights = window_softmax_reference(logits)
    assert torch.all(weights[..., 0, 0, :, :] == 0)
    torch.testing.assert_close(weights.sum(dim=(2, 3)), torch.ones(2, 3, 4, 5, dtype=torch.float64))


def test_references_reject_bad_input():
    with pytest.raises(ValueError, match="6 dimensions"):
        window_softmax_reference(torch.zeros(1, 3, 3, 2, 2))
    q = torch.zeros(1, 4, 3, 3)
    with pytest.raises(ValueError, match="odd"):
        attention_kernels_reference(q, q, 4, 1)
    with pytest.raises(ValueError, match="heads must divide"):
        attention_kernels_reference(q, q, 3, 3)
    with pytest.raises(ValueError, match="same shape"):
        attention_kernels_reference(q, torch.zeros(1, 4, 3, 2), 3, 1)


def test_check_window_softmax_accepts_the_solution(capsys):
    assert check_window_softmax(window_softmax_solution) is True
    assert "all 4 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (softmax_over_one_window_axis, "BOTH window axes"),
    (softmax_over_the_image, "BOTH window axes"),
    (softmax_without_max_subtraction, "maximum before exp"),
    (softmax_that_zeroes_infinities, "weight exactly 0"),
])  # fmt: skip
def test_check_window_softmax_rejects_wrong_answers(capsys, wrong, message):
    assert check_window_softmax(wrong) is False
    printed = capsys.readouterr().out
    assert "✗ window_softmax" in printed and message in printed


def test_check_attention_kernels_accepts_the_solution(capsys):
    assert check_attention_kernels(attention_kernels_solution) is True
    assert "all 5 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (kernels_without_scaling, "scaled dot products"),
    (kernels_scaled_by_all_channels, "scales by sqrt(D/G)"),
    (kernels_with_zero_keys_outside, "taps outside the image"),
    (kernels_with_interleaved_heads, "contiguous channel block"),
    (kernels_with_swapped_window_axes, "u = row, v = column"),
])  # fmt: skip
def test_check_attention_kernels_rejects_wrong_answers(capsys, wrong, message):
    assert check_attention_kernels(wrong) is False
    printed = capsys.readouterr().out
    assert "✗ attention_kernels" in printed and message in printed


@pytest.mark.parametrize("checker", [check_window_softmax, check_attention_kernels])
def test_checkers_report_not_attempted_and_crashes_without_raising(capsys, checker):
    assert checker(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out
    assert checker(crashes) is False
    printed = capsys.readouterr().out
    assert "RuntimeError" in printed and "shape mismatch in my code" in printed
