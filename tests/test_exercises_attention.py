"""The notebook-09 checkers accept correct solutions, reject plausible wrong ones naming the
mistake, refuse the shortcuts and never raise; the references agree with explicit loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checker_harness import assert_accepts, assert_never_raises, assert_rejects
from involution_edu import involution
from involution_edu.exercises.attention import (
    QUESTIONS,
    attention_as_involution_reference,
    check_attention_as_involution,
    check_local_attention_costs,
    check_window_softmax,
    local_attention_costs_reference,
    local_attention_reference,
    window_softmax_reference,
)

# --------------------------------------------------------------------------- correct solutions


def window_softmax_solution(logits):
    flat = logits.flatten(2, 3)
    flat = flat - flat.amax(dim=2, keepdim=True)
    weights = flat.exp()
    return (weights / weights.sum(dim=2, keepdim=True)).view_as(logits)


def attention_as_involution_solution(x, w_query, w_key, w_value, heads, kernel_size, *, mask=True, scale=True,
                                     project_values=True):
    """Tap by tap with shifted keys; the keyword flags make the plausible mistakes."""
    batch, channels, height, width = x.shape
    per_head, pad = channels // heads, (kernel_size - 1) // 2
    q, k, v = (torch.einsum("oc,bchw->bohw", w, x) for w in (w_query, w_key, w_value))
    values = v if project_values else x
    q = q.reshape(batch, heads, per_head, height, width)
    k_padded = F.pad(k, (pad,) * 4).reshape(batch, heads, per_head, height + 2 * pad, width + 2 * pad)
    inside = F.pad(torch.ones(height, width, dtype=torch.bool), (pad,) * 4)
    logits = x.new_empty(batch, heads, kernel_size, kernel_size, height, width)
    for u in range(kernel_size):
        for s in range(kernel_size):
            tap = (q * k_padded[..., u : u + height, s : s + width]).sum(dim=2)
            if scale:
                tap = tap / math.sqrt(per_head)
            if mask:
                tap = tap.masked_fill(~inside[u : u + height, s : s + width], float("-inf"))
            logits[:, :, u, s] = tap
    return values, window_softmax_solution(logits)


def attention_loops(x, wq, wk, wv, heads, kernel_size):
    """Plain loops over every image, head, position and tap: the oracle for the references."""
    x, wq, wk, wv = (np.asarray(a, dtype=np.float64) for a in (x, wq, wk, wv))
    batch, channels, height, width = x.shape
    q, k, v = (np.einsum("oc,bchw->bohw", w, x) for w in (wq, wk, wv))
    per_head, pad = channels // heads, (kernel_size - 1) // 2
    out = np.zeros_like(x)
    for b in range(batch):
        for h in range(heads):
            block = slice(h * per_head, (h + 1) * per_head)
            for i in range(height):
                for j in range(width):
                    logits, values = [], []
                    for u in range(kernel_size):
                        for s in range(kernel_size):
                            r, c = i + u - pad, j + s - pad
                            if 0 <= r < height and 0 <= c < width:
                                logits.append(q[b, block, i, j] @ k[b, block, r, c] / math.sqrt(per_head))
                                values.append(v[b, block, r, c])
                    weights = np.exp(np.array(logits) - max(logits))
                    out[b, block, i, j] = (weights / weights.sum()) @ np.array(values)
    return out


def local_attention_costs_solution(channels, height, width, kernel_size, heads):
    positions, taps = height * width, kernel_size**2
    return 3 * channels**2, 3 * channels**2 * positions + 2 * positions * taps * channels


def _inputs(batch, channels, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=g, dtype=torch.float64)
    return x, [torch.randn(channels, channels, generator=g, dtype=torch.float64) for _ in range(3)]


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("batch,channels,height,width,kernel_size,heads",
                         [(1, 4, 4, 4, 3, 1), (2, 6, 3, 5, 5, 3), (1, 8, 5, 4, 3, 2), (1, 3, 2, 3, 1, 1)])
def test_references_match_explicit_loops_and_the_involution(batch, channels, height, width, kernel_size, heads):
    x, ws = _inputs(batch, channels, height, width)
    expected = attention_loops(x, *ws, heads, kernel_size)
    np.testing.assert_allclose(local_attention_reference(x, *ws, heads, kernel_size).numpy(), expected, atol=1e-12)
    values, kernels = attention_as_involution_reference(x, *ws, heads, kernel_size)
    np.testing.assert_allclose(involution(values, kernels).numpy(), expected, atol=1e-12)


def test_window_softmax_reference_sums_to_one_and_ignores_minus_infinity():
    logits = torch.randn(1, 2, 3, 3, 2, 2, dtype=torch.float64)
    logits[:, :, 0] = float("-inf")
    weights = window_softmax_reference(logits)
    assert torch.allclose(weights.sum(dim=(2, 3)), torch.ones(1, 2, 2, 2, dtype=torch.float64))
    assert (weights[:, :, 0] == 0).all()


def test_references_reject_bad_input():
    with pytest.raises(ValueError, match="6-dimensional"):
        window_softmax_reference(torch.zeros(2, 3))
    x, ws = _inputs(1, 4, 3, 3)
    with pytest.raises(ValueError, match="heads"):
        attention_as_involution_reference(x, *ws, 3, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        attention_as_involution_reference(x, *ws, 2, 4)
    with pytest.raises(ValueError, match="channels"):
        local_attention_costs_reference(0, 3, 3, 3, 1)


def test_cost_reference_matches_a_module_and_counted_operations():
    """Parameters of the notebook's module layout; multiply-adds counted operation by operation."""
    channels, height, width, k, heads = 16, 5, 6, 3, 4
    params = sum(torch.nn.Conv2d(channels, channels, 1, bias=False).weight.numel() for _ in range(3))
    madds = 0
    madds += 3 * channels * channels * height * width  # q, k, v
    madds += heads * k * k * height * width * (channels // heads)  # q . k per head, tap and position
    madds += channels * k * k * height * width  # weights times values
    assert local_attention_costs_reference(channels, height, width, k, heads) == (params, madds)


# --------------------------------------------------------------------------- window_softmax


def test_window_softmax_accepts_the_solution(capsys):
    assert_accepts(check_window_softmax, window_softmax_solution, capsys)


@pytest.mark.parametrize("wrong,message", [
    (lambda l: (lambda f: (f - f.amax(3, keepdim=True)).exp() / (f - f.amax(3, keepdim=True)).exp().sum(3, keepdim=True))(l),
     "one window axis only"),
    (lambda l: (lambda f: (f - f.amax((4, 5), keepdim=True)).exp() / (f - f.amax((4, 5), keepdim=True)).exp().sum((4, 5), keepdim=True))(l),
     "image positions"),
    (lambda l: l.exp() / l.exp().sum(dim=(2, 3), keepdim=True), "subtract each window's maximum"),
    (lambda l: window_softmax_solution(torch.nan_to_num(l, neginf=0.0)), "replaced -inf by 0"),
    (lambda l: window_softmax_solution(l).transpose(2, 3), "✗"),
    (lambda l: l.flatten(2, 3).exp().view_as(l), "✗"),
    (lambda l: (lambda e: e / e.sum(dim=1, keepdim=True))((l - l.amax(dim=1, keepdim=True)).exp()), "✗"),  # over the heads
])
def test_window_softmax_rejects_wrong_answers(capsys, wrong, message):
    assert_rejects(check_window_softmax, wrong, capsys, message)


def test_window_softmax_refuses_every_library_softmax(capsys):
    import torch.nn.functional as functional
    from torch import softmax as sm

    def helper(flat):
        return flat.softmax(dim=2)

    shortcuts = [
        lambda l: torch.softmax(l.flatten(2, 3), 2).view_as(l),  # direct call
        lambda l: sm(l.flatten(2, 3), 2).view_as(l),  # alias import
        lambda l: torch.nn.functional.softmax(l.flatten(2, 3), dim=2).view_as(l),  # attribute path
        lambda l: functional.softmax(l.flatten(2, 3), dim=2).view_as(l),
        lambda l: helper(l.flatten(2, 3)).view_as(l),  # inside a helper, as a method
        lambda l: torch.nn.Softmax(dim=2)(l.flatten(2, 3)).view_as(l),
        lambda l: window_softmax_reference(l),
    ]
    for shortcut in shortcuts:
        assert_rejects(check_window_softmax, shortcut, capsys, "your function calls")


def test_window_softmax_never_raises():
    assert_never_raises(check_window_softmax)


# --------------------------------------------------------------------------- attention_as_involution


def test_attention_as_involution_accepts_the_solution(capsys):
    assert_accepts(check_attention_as_involution, attention_as_involution_solution, capsys)


def _modulo_heads(x, wq, wk, wv, heads, k):
    channels = x.shape[1]
    order = torch.arange(channels).view(channels // heads, heads).t().reshape(-1)
    return attention_as_involution_solution(x, wq[order], wk[order], wv, heads, k)


@pytest.mark.parametrize("wrong,message", [
    (lambda *a: attention_as_involution_solution(*a, mask=False), "left out of the softmax"),
    (lambda *a: attention_as_involution_solution(*a, scale=False), "scaling"),
    (lambda *a: attention_as_involution_solution(*a, project_values=False), "W_v x"),
    (_modulo_heads, "c % heads"),
    (lambda x, wq, wk, wv, h, k: (lambda v, kern: (v, torch.softmax(torch.log(kern), dim=3)))(
        *attention_as_involution_solution(x, wq, wk, wv, h, k)), "one window axis"),
    # the cheat: the attention output with an identity kernel gives the right involution output
    (lambda x, wq, wk, wv, h, k: (local_attention_reference(x, wq, wk, wv, h, k),
                                  F.pad(torch.ones(x.shape[0], h, 1, 1, *x.shape[2:], dtype=x.dtype),
                                        (0, 0, 0, 0, (k - 1) // 2, (k - 1) // 2, (k - 1) // 2, (k - 1) // 2))), "your function calls"),
    (lambda x, wq, wk, wv, h, k: attention_as_involution_solution(x, wk, wq, wv, h, k), "✗"),  # queries and keys swapped
    (lambda *a: attention_as_involution_solution(*a)[::-1], "✗"),
])
def test_attention_as_involution_rejects_wrong_answers(capsys, wrong, message):
    assert_rejects(check_attention_as_involution, wrong, capsys, message)


def test_attention_as_involution_cheat_without_the_reference_is_rejected(capsys):
    """Right involution output, wrong pair: the checker compares the pair, not only the product."""
    def cheat(x, wq, wk, wv, heads, k):
        values, kernels = attention_as_involution_solution(x, wq, wk, wv, heads, k)
        out = involution(values, kernels)
        identity = torch.zeros_like(kernels)
        identity[:, :, (k - 1) // 2, (k - 1) // 2] = 1.0
        return out, identity

    x, ws = _inputs(1, 4, 4, 4)
    values, kernels = cheat(x, *ws, 1, 3)
    torch.testing.assert_close(involution(values, kernels), involution(*attention_as_involution_reference(x, *ws, 1, 3)))
    assert_rejects(check_attention_as_involution, cheat, capsys, "✗")


def test_attention_as_involution_refuses_the_references_everywhere(capsys):
    from involution_edu.exercises import attention as module
    from involution_edu.exercises.attention import attention_as_involution_reference as alias

    def helper(*a):
        return alias(*a)

    for shortcut in (lambda *a: attention_as_involution_reference(*a), lambda *a: alias(*a),
                     lambda *a: module.attention_as_involution_reference(*a), lambda *a: helper(*a)):
        assert_rejects(check_attention_as_involution, shortcut, capsys, "your function calls")


def test_attention_as_involution_refuses_the_notebooks_attention_module(capsys):
    class LocalSelfAttention2d(torch.nn.Module):  # stands for the module of the notebook's section 3
        def weights(self, x):
            return x

    def shortcut(x, wq, wk, wv, heads, k):
        layer = LocalSelfAttention2d()
        return layer.weights(x), layer.weights(x)

    assert_rejects(check_attention_as_involution, shortcut, capsys, "your function calls", "LocalSelfAttention2d")


def test_attention_as_involution_never_raises():
    assert_never_raises(check_attention_as_involution)
    assert_never_raises(check_attention_as_involution, make_candidate=lambda value: (lambda *a: (value, value)))


# --------------------------------------------------------------------------- local_attention_costs


def test_costs_accept_the_solution(capsys):
    assert_accepts(check_local_attention_costs, local_attention_costs_solution, capsys)


@pytest.mark.parametrize("wrong,message", [
    (lambda c, h, w, k, g: (2 * c * c, 2 * c * c * h * w + 2 * h * w * k * k * c), "value projection"),
    (lambda c, h, w, k, g: (3 * c * c, 3 * c * c * h * w + h * w * k * k * c), "only one of the two window products"),
    (lambda c, h, w, k, g: (3 * c * c, 3 * c * c * h * w + 2 * g * h * w * k * k * c), "not heads times"),
    (lambda c, h, w, k, g: (3 * c * c + 3 * c, 3 * c * c * h * w + 2 * h * w * k * k * c), "no bias"),
    (lambda c, h, w, k, g: (3 * c * c, 3 * c * c * h * w), "only the projections"),
    (lambda c, h, w, k, g: (3 * c * c, 3 * c * c + 2 * h * w * k * k * c), "run at every position"),
    (lambda c, h, w, k, g: (3 * c * c, 3 * c * c * h * w + 2 * h * w * k * k * (c // g)), "✗"),
    (lambda c, h, w, k, g: 3 * c * c, "✗"),
    (lambda c, h, w, k, g: (str(3 * c * c), 3 * c * c * h * w + 2 * h * w * k * k * c), "✗"),
])
def test_costs_reject_wrong_answers(capsys, wrong, message):
    assert_rejects(check_local_attention_costs, wrong, capsys, message)


def test_costs_refuse_the_reference(capsys):
    from involution_edu.exercises.attention import local_attention_costs_reference as count

    assert_rejects(check_local_attention_costs, lambda *a: count(*a), capsys, "your function calls")


def test_costs_never_raise():
    assert_never_raises(check_local_attention_costs)


# --------------------------------------------------------------------------- questions


def test_footprint_answer_is_what_attention_does():
    """Changing the centre pixel changes the attention kernel at exactly K*K positions."""
    from involution_edu.exercises.attention import attention_logits_reference

    size, k = 11, 5
    x, ws = _inputs(1, 4, size, size, seed=3)
    bumped = x.clone()
    bumped[:, :, size // 2, size // 2] += 1.0

    def kernels(t):
        return window_softmax_reference(attention_logits_reference(
            torch.einsum("oc,bchw->bohw", ws[0], t), torch.einsum("oc,bchw->bohw", ws[1], t), k, 1))

    changed = (kernels(bumped) - kernels(x)).abs().flatten(0, 3).amax(0).gt(1e-12).sum().item()
    assert changed == k * k
    assert QUESTIONS["generator_footprint"].answer == 7 * 7
