"""The notebook-09 checkers accept correct solutions, reject plausible wrong ones naming the
mistake, refuse the shortcuts and never raise; the references agree with explicit loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checker_harness import (
    assert_accepts,
    assert_names_side_effect,
    assert_never_raises,
    assert_rejects,
    assert_times_out,
    exec_route,
    module_route,
)
from involution_edu import involution
from involution_edu.exercises.attention import (
    QUESTIONS,
    attention_as_involution_reference,
    check_attention_as_involution,
    check_kernel_footprint,
    check_local_attention_costs,
    check_window_softmax,
    kernel_footprint_reference,
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
        assert_rejects(check_window_softmax, shortcut, capsys, "your function call")


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
                                        (0, 0, 0, 0, (k - 1) // 2, (k - 1) // 2, (k - 1) // 2, (k - 1) // 2))), "your function call"),
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
        assert_rejects(check_attention_as_involution, shortcut, capsys, "your function call")


def test_attention_as_involution_refuses_the_notebooks_attention_module(capsys):
    class LocalSelfAttention2d(torch.nn.Module):  # stands for the module of the notebook's section 3
        def weights(self, x):
            return x

    def shortcut(x, wq, wk, wv, heads, k):
        layer = LocalSelfAttention2d()
        return layer.weights(x), layer.weights(x)

    assert_rejects(check_attention_as_involution, shortcut, capsys, "your function call", "LocalSelfAttention2d")


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

    assert_rejects(check_local_attention_costs, lambda *a: count(*a), capsys, "your function call")


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


def test_madds_ratio_answer_is_the_counted_ratio():
    """The ratio question's answer from the counts of the notebook's section 5."""
    channels, size, k, groups, r = 64, 28, 7, 4, 4
    _, attention = local_attention_costs_reference(channels, size, size, k, groups)
    involution_madds = size * size * (channels * channels // r + (channels // r) * k * k * groups + k * k * channels)
    assert QUESTIONS["madds_ratio"].answer == pytest.approx(attention / involution_madds, rel=1e-12)


# --------------------------------------------------------------------------- run-time routes, limits, side effects


def test_window_softmax_refuses_run_time_routes(capsys, tmp_path):
    routes = [
        exec_route("def f(l):\n    import torch\n    return torch.softmax(l.flatten(2, 3), 2).view_as(l)", "f"),
        exec_route("def f(l):\n    import torch.nn.functional as F\n    return getattr(F, 'soft' + 'min')(-l.flatten(2, 3), dim=2).view_as(l)", "f"),
        exec_route("def f(l):\n    import torch\n    return torch.ops.aten._softmax(l.flatten(2, 3), 2, False).view_as(l)", "f"),
        exec_route("def f(l):\n    import torch\n    return torch.nn.LogSoftmax(dim=2)(l.flatten(2, 3)).exp().view_as(l)", "f"),
        module_route(tmp_path, "import torch\n\ndef f(l):\n    return l.flatten(2, 3).softmax(2).view_as(l)\n", "f"),
    ]
    for route in routes:
        assert_rejects(check_window_softmax, route, capsys, "✗", "softmax")


def test_attention_as_involution_refuses_a_reference_reached_at_run_time(capsys, tmp_path):
    route = module_route(tmp_path, "import importlib\n\ndef f(*a):\n    m = importlib.import_module("
                                   "'involution_edu.exercises.' + 'attention')\n"
                                   "    return getattr(m, 'attention_as_involution_' + 'reference')(*a)\n", "f")
    assert_rejects(check_attention_as_involution, route, capsys, "✗", "attention_as_involution_reference")


def test_costs_refuse_a_table_of_the_fixed_answers(capsys):
    """Memorised answers pass the fixed cases and fail the random ones, which never print a fixed value."""
    from involution_edu.exercises.attention import _COST_CASES

    table = {args[2:]: local_attention_costs_reference(*args[2:]) for args in _COST_CASES}
    out = assert_rejects(check_local_attention_costs, lambda *a: table.get(a, (0, 0)), capsys, "random")
    assert "all 5" not in out


@pytest.mark.parametrize("checker,make", [
    (check_window_softmax, lambda: exec_route("def f(l):\n    while True:\n        pass", "f")),
    (check_attention_as_involution, lambda: exec_route("def f(*a):\n    k = 0\n    while k < 10:\n        k + 2", "f")),
    (check_local_attention_costs, lambda: exec_route("def f(*a):\n    while True:\n        pass", "f")),
    (check_kernel_footprint, lambda: exec_route("def f(*a, **k):\n    while True:\n        pass", "f")),
])
def test_every_checker_gives_a_time_limit_verdict_for_an_endless_loop(checker, make, capsys):
    assert_times_out(checker, make(), capsys)


def test_side_effects_on_the_inputs_are_named(capsys):
    def mutating_softmax(logits):
        out = window_softmax_solution(logits.clone())
        logits.zero_()
        return out

    assert_names_side_effect(check_window_softmax, mutating_softmax, capsys)

    def mutating_mapping(x, wq, wk, wv, heads, k):
        result = attention_as_involution_solution(x, wq, wk, wv, heads, k)
        wq.mul_(2.0)
        return result

    assert_names_side_effect(check_attention_as_involution, mutating_mapping, capsys)


# --------------------------------------------------------------------------- kernel_footprint


def kernel_footprint_solution(kind, height, width, kernel_size, row, col, stride=1):
    if kind == "involution":
        return {(row // stride, col // stride)}
    if kind == "dynamic":
        return {(i, j) for i in range(height) for j in range(width)}
    pad = (kernel_size - 1) // 2
    return {(i, j) for i in range(max(0, row - pad), min(height, row + pad + 1))
            for j in range(max(0, col - pad), min(width, col + pad + 1))}


def kernel_footprint_by_distance(kind, height, width, kernel_size, row, col, stride=1):
    """A natural alternative: test every output position, return a list of tuples."""
    out_h, out_w = (-(-height // stride), -(-width // stride)) if kind == "involution" else (height, width)
    found = []
    for i in range(out_h):
        for j in range(out_w):
            if kind == "dynamic" or (kind == "attention" and max(abs(i - row), abs(j - col)) <= kernel_size // 2) \
                    or (kind == "involution" and (i, j) == (row // stride, col // stride)):
                found.append((i, j))
    return set(found)


@pytest.mark.parametrize("solution", [kernel_footprint_solution, kernel_footprint_by_distance])
def test_footprint_accepts_the_solution_and_an_alternative(solution, capsys):
    assert_accepts(check_kernel_footprint, solution, capsys)


@pytest.mark.parametrize("wrong,message", [
    (lambda kind, h, w, k, r, c, stride=1: {(r, c)}, "only the pixel itself"),
    (lambda kind, h, w, k, r, c, stride=1: kernel_footprint_solution(kind, h, w, k, r, c, stride) if kind != "attention"
     else {(i, j) for i in range(r - k // 2, r + k // 2 + 1) for j in range(c - k // 2, c + k // 2 + 1)}, "outside the image"),
    (lambda kind, h, w, k, r, c, stride=1: kernel_footprint_solution("dynamic", h, w, k, r, c), "dynamic convolution"),
    (lambda kind, h, w, k, r, c, stride=1: kernel_footprint_solution(kind, h, w, k, r, c, 1), "✗"),  # stride ignored
    (lambda kind, h, w, k, r, c, stride=1: kernel_footprint_solution(kind, h, w, k, r, c, stride) if kind != "attention"
     else {(i, j) for i in range(max(0, r - k + 1), min(h, r + k)) for j in range(max(0, c - k + 1), min(w, c + k))},
     "not K - 1"),
])
def test_footprint_rejects_wrong_answers(wrong, message, capsys):
    assert_rejects(check_kernel_footprint, wrong, capsys, message)


def test_footprint_refuses_running_the_layers_and_the_reference(capsys, tmp_path):
    def measured(kind, h, w, k, r, c, stride=1):  # runs a real layer: torch is forbidden here
        x = torch.zeros(1, 1, h, w)
        torch.nn.functional.avg_pool2d(x, 1)
        return kernel_footprint_solution(kind, h, w, k, r, c, stride)

    assert_rejects(check_kernel_footprint, measured, capsys, "✗", "torch")
    assert_rejects(check_kernel_footprint, lambda *a, **k: kernel_footprint_reference(*a, **k), capsys, "✗",
                   "kernel_footprint_reference")
    route = exec_route("def f(*a, **k):\n    import involution_edu.exercises.attention as m\n"
                       "    return getattr(m, 'kernel_footprint_' + 'reference')(*a, **k)", "f")
    assert_rejects(check_kernel_footprint, route, capsys, "✗")


def test_footprint_reference_matches_the_layers():
    """The reference equals what perturbing a real Involution (eval, stride 2) and the attention weights shows."""
    from involution_edu import Involution
    from involution_edu.exercises.attention import attention_logits_reference

    torch.manual_seed(0)
    layer = Involution(8, kernel_size=3, stride=2, group_channels=4).double().eval()
    for parameter in layer.parameters():  # the span conv starts at zero: give every kernel a dependence on x
        torch.nn.init.normal_(parameter)
    x = torch.randn(1, 8, 7, 7, dtype=torch.float64)
    for row, col in [(0, 0), (6, 3), (3, 5)]:
        bumped = x.clone()
        bumped[:, :, row, col] += 1.0
        with torch.no_grad():
            change = (layer.generate_kernels(bumped) - layer.generate_kernels(x)).abs().flatten(0, -3).amax(0) > 1e-12
        assert {tuple(p) for p in change.nonzero().tolist()} == kernel_footprint_reference("involution", 7, 7, 3, row, col, 2)
    x, ws = _inputs(1, 4, 6, 9, seed=4)
    for row, col in [(0, 0), (5, 3), (2, 8)]:
        bumped = x.clone()
        bumped[:, :, row, col] += 1.0

        def kernels(t):
            return window_softmax_reference(attention_logits_reference(
                torch.einsum("oc,bchw->bohw", ws[0], t), torch.einsum("oc,bchw->bohw", ws[1], t), 5, 1))

        change = (kernels(bumped) - kernels(x)).abs().flatten(0, 3).amax(0) > 1e-12
        assert {tuple(p) for p in change.nonzero().tolist()} == kernel_footprint_reference("attention", 6, 9, 5, row, col)


def test_footprint_reference_rejects_bad_input():
    with pytest.raises(ValueError, match="kind"):
        kernel_footprint_reference("conv", 4, 4, 3, 0, 0)
    with pytest.raises(ValueError, match="stride"):
        kernel_footprint_reference("attention", 4, 4, 3, 0, 0, stride=2)
    with pytest.raises(ValueError, match="inside"):
        kernel_footprint_reference("involution", 4, 4, 3, 4, 0)


def test_footprint_never_raises():
    assert_never_raises(check_kernel_footprint)
