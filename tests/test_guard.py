"""The run-time guard, the time limits, random cases and side effects of the checker framework."""

import math
import pydoc
import signal
import sys
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from checker_harness import (assert_accepts, assert_names_side_effect, assert_rejects, assert_times_out, exec_route,
                             module_route)
from involution_edu.exercises import guard
from involution_edu.exercises.framework import Case, Rule, run_cases, short_time_limits

GEN = torch.Generator().manual_seed(0)
X = torch.randn(1, 2, 6, 6, generator=GEN, dtype=torch.float64)
W = torch.randn(3, 2, 3, 3, generator=GEN, dtype=torch.float64)
CONV = [Case("1x2x6x6 -> 3 channels", (X, W), F.conv2d(X, W), rtol=1e-9, atol=1e-9)]
ROWS = torch.randn(3, 5, generator=GEN, dtype=torch.float64)
SOFTMAX = [Case("3 rows", (ROWS,), torch.softmax(ROWS, -1), rtol=1e-9, atol=1e-12)]
GRAD = [Case("x^3", (ROWS,), 3 * ROWS**2, rtol=1e-9, atol=1e-12)]
IMG = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
WINDOWS = [Case("3x3 windows", (IMG,), np.lib.stride_tricks.sliding_window_view(IMG, (3, 3), axis=(2, 3)).copy())]


def check_conv(f):
    return run_cases("conv", f, CONV, rule=Rule("the convolution", families=["convolution"]))


def check_softmax(f):
    return run_cases("softmax", f, SOFTMAX, rule=Rule("the softmax", families=["softmax"]))


def check_grad(f):
    return run_cases("grad", f, GRAD, rule=Rule("the derivative", families=["autograd"]))


def check_windows(f):
    return run_cases("windows", f, WINDOWS, rule=Rule("the windows", families=["unfold"]))


def check_numpy_only(f):
    return run_cases("numpy", f, WINDOWS, rule=Rule("the windows with NumPy", families=["torch", "unfold"]))


def conv_by_hand(x, w):
    windows = x.unfold(2, 3, 1).unfold(3, 3, 1)
    return torch.einsum("bchwuv,ocuv->bohw", windows, w)


def softmax_by_hand(x):
    e = (x - x.max(-1, keepdim=True).values).exp()
    return e / e.sum(-1, keepdim=True)


def windows_by_hand(a):
    h, w = a.shape[2] - 2, a.shape[3] - 2
    out = np.empty(a.shape[:2] + (h, w, 3, 3))
    for i in range(h):
        for j in range(w):
            out[:, :, i, j] = a[:, :, i:i + 3, j:j + 3]
    return out


# ----------------------------------------------------------------------------------------------
# Each family, through every kind of route
# ----------------------------------------------------------------------------------------------
TABLE = {  # route -> (checker, candidate, needle)
    "conv: direct": (check_conv, lambda x, w: F.conv2d(x, w), "conv2d"),
    "conv: torch.convolution": (check_conv, lambda x, w: torch.convolution(x, w, None, [1, 1], [0, 0], [1, 1], False,
                                                                           [0, 0], 1), "convolution"),
    "conv: aten": (check_conv, lambda x, w: torch.ops.aten.convolution(x, w, None, [1, 1], [0, 0], [1, 1], False,
                                                                       [0, 0], 1), "aten.convolution"),
    "conv: conv3d": (check_conv, lambda x, w: F.conv3d(x[:, :, None], w[:, :, None])[:, :, 0], "conv3d"),
    "conv: a module": (check_conv, lambda x, w: nn.Conv2d(2, 3, 3, bias=False).double()(x) * 0, "Conv2d"),
    "conv: name built at run time": (check_conv, lambda x, w: getattr(F, "con" + "v2d")(x, w), "conv2d"),
    "conv: pydoc.locate": (check_conv, lambda x, w: pydoc.locate("torch.nn.functional.conv2d")(x, w), "conv2d"),
    "conv: numpy": (check_conv, lambda x, w: np.correlate(x.numpy().ravel(), w.numpy().ravel()), "correlate"),
    "softmax: direct": (check_softmax, lambda x: torch.softmax(x, -1), "softmax"),
    "softmax: method": (check_softmax, lambda x: x.softmax(-1), "softmax"),
    "softmax: softmin of -x": (check_softmax, lambda x: F.softmin(-x, -1), "softmin"),
    "softmax: LogSoftmax module": (check_softmax, lambda x: nn.LogSoftmax(-1)(x).exp(), "LogSoftmax"),
    "softmax: aten._softmax": (check_softmax, lambda x: torch.ops.aten._softmax(x, -1, False), "_softmax"),
    "softmax: inside a C++ composite": (check_softmax, lambda x: F.cross_entropy(x, x.softmax(-1) * 0) * 0 + x,
                                        "softmax"),
    "autograd: backward": (check_grad, "backward", "backward"),
    "autograd: torch.autograd.grad": (check_grad, "autograd_grad", "grad"),
    "autograd: torch.func.grad_and_value": (check_grad, "grad_and_value", "grad_and_value"),
    "unfold: sliding_window_view": (check_windows, lambda a: np.lib.stride_tricks.sliding_window_view(
        a, (3, 3), axis=(2, 3)).copy(), "sliding_window_view"),
    "unfold: as_strided": (check_windows, "as_strided", "as_strided"),
    "unfold: Tensor.unfold": (check_windows, lambda a: torch.from_numpy(a).unfold(2, 3, 1).unfold(3, 3, 1).numpy(),
                              "unfold"),
    "unfold: im2col": (check_windows, lambda a: torch._C._nn.im2col(torch.from_numpy(a), [3, 3], [1, 1], [0, 0],
                                                                    [1, 1]).numpy(), "im2col"),
    "torch: any torch op in a NumPy exercise": (check_numpy_only, lambda a: torch.from_numpy(a).numpy(), "from_numpy"),
}


def _named(kind):
    if kind == "backward":
        def derivative(x):
            x = x.detach().requires_grad_()
            (x**3).sum().backward()
            return x.grad
        return derivative
    if kind == "autograd_grad":
        return lambda x: torch.autograd.grad((x.detach().requires_grad_() ** 3).sum(), [])[0]
    if kind == "grad_and_value":
        return lambda x: torch.func.grad_and_value(lambda a: (a**3).sum())(x)[0]
    if kind == "as_strided":
        def windows(a):
            s = a.strides
            return np.lib.stride_tricks.as_strided(a, a.shape[:2] + (4, 4, 3, 3), s + s[2:]).copy()
        return windows
    return kind


@pytest.mark.parametrize("route", sorted(TABLE))
def test_each_family_is_refused_at_run_time(route, capsys):
    checker, candidate, needle = TABLE[route]
    out = assert_rejects(checker, _named(candidate), capsys, "yourself", needle)
    assert "Traceback" not in out


@pytest.mark.parametrize("checker, good", [(check_conv, conv_by_hand), (check_softmax, softmax_by_hand),
                                           (check_windows, windows_by_hand), (check_numpy_only, windows_by_hand),
                                           (check_grad, lambda x: 3 * x * x)])
def test_the_honest_solution_passes(checker, good, capsys):
    assert_accepts(checker, good, capsys)


def test_numpy_internals_do_not_trip_the_unfold_family(capsys):
    """np.pad and np.einsum may use strided tricks inside; the learner called np.pad, which is allowed."""
    def padded(a):
        p = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)))
        out = np.empty(a.shape[:2] + (4, 4, 3, 3))
        for i in range(4):
            for j in range(4):
                out[:, :, i, j] = np.einsum("bcuv->bcuv", p[:, :, i + 1:i + 4, j + 1:j + 4])
        return out

    assert_accepts(check_windows, padded, capsys)
    assert_accepts(check_numpy_only, padded, capsys)


# ----------------------------------------------------------------------------------------------
# Routes a name scanner cannot read
# ----------------------------------------------------------------------------------------------
def test_exec_of_a_string_is_refused(capsys):
    candidate = exec_route("def f(x, w):\n    return torch.nn.functional.conv2d(x, w)\n", "f")
    assert_rejects(check_conv, candidate, capsys, "your function call", "conv2d")
    hidden = exec_route("def f(x):\n    return eval('x.soft' + 'max(-1)')\n", "f")
    assert_rejects(check_softmax, hidden, capsys, "softmax")


def test_a_helper_module_in_a_folder_is_refused(tmp_path, capsys):
    candidate = module_route(tmp_path, "import torch.nn.functional as F\n\ndef conv(x, w):\n    return F.conv2d(x, w)\n",
                             "conv")
    assert_rejects(check_conv, candidate, capsys, "conv2d")
    honest = module_route(tmp_path, "import torch\n\ndef conv(x, w):\n"
                                    "    return torch.einsum('bchwuv,ocuv->bohw', x.unfold(2, 3, 1).unfold(3, 3, 1), w)\n",
                          "conv")
    assert_accepts(check_conv, honest, capsys)


def test_a_function_kept_in_a_dict_or_a_tuple_default_is_refused(capsys):
    table = {"op": F.conv2d}

    def from_dict(x, w):
        return table["o" + "p"](x, w)

    def from_default(x, w, ops=(None, F.conv2d)):
        return ops[1](x, w)

    assert_rejects(check_conv, from_dict, capsys, "conv2d")
    assert_rejects(check_conv, from_default, capsys, "conv2d")


REBOUND = {"op": conv_by_hand}


def test_a_global_rebound_after_the_check_starts_is_refused(capsys):
    """The static check sees an honest function; the first case rebinds the global to F.conv2d."""
    state = {"calls": 0}

    def sneaky(x, w):
        state["calls"] += 1
        if state["calls"] > 1:
            globals()["_sneaky_op"] = getattr(F, "con" + "v2d")
        return _sneaky_op(x, w)

    globals()["_sneaky_op"] = conv_by_hand
    cases = CONV * 3
    assert_rejects(lambda f: run_cases("conv", f, cases, rule=Rule("the convolution", families=["convolution"])),
                   sneaky, capsys, "your function called", "conv2d")
    assert state["calls"] == 2  # refused in the second case, the first after the rebinding


def test_the_learners_own_functions_named_like_forbidden_ones_pass(capsys):
    def conv2d(x, w):
        return conv_by_hand(x, w)

    def unfold(x, w):
        return conv2d(x, w)

    def correlate2d(x, w):
        return unfold(x, w)

    legacy = ["torch.nn.functional.conv2d", ".conv2d", ".correlate2d", ".forward", ".involution"]
    assert_accepts(lambda f: run_cases("conv", f, CONV, forbidden=legacy, what="the convolution"),
                   lambda x, w: correlate2d(x, w), capsys)
    assert_rejects(lambda f: run_cases("conv", f, CONV, forbidden=legacy, what="the convolution"),
                   lambda x, w: F.conv2d(x, w), capsys, "conv2d")


def test_allowed_helpers_pass_with_everything_they_run(capsys):
    def helper_the_prompt_allows(x, w):  # e.g. notebook 01's correlate2d, built on F.conv2d here
        return F.conv2d(x, w)

    rule = Rule("the convolution", families=["convolution"], allow=[helper_the_prompt_allows])
    assert_accepts(lambda f: run_cases("conv", f, CONV, rule=rule), lambda x, w: helper_the_prompt_allows(x, w),
                   capsys)
    assert_rejects(lambda f: run_cases("conv", f, CONV, rule=rule), lambda x, w: F.conv2d(x, w), capsys, "conv2d")
    allow_c = Rule("the windows", families=["unfold"], allow=[torch.Tensor.unfold])
    assert_accepts(lambda f: run_cases("conv", f, CONV, rule=allow_c), conv_by_hand, capsys)


def test_the_learner_cannot_catch_the_refusal(capsys):
    def stubborn(x, w):
        try:
            return F.conv2d(x, w)
        except Exception:
            return conv_by_hand(x, w)

    def very_stubborn(x, w):
        try:
            return F.conv2d(x, w)
        except BaseException:
            return conv_by_hand(x, w)

    assert_rejects(check_conv, stubborn, capsys, "conv2d")
    assert_rejects(check_conv, very_stubborn, capsys, "conv2d")


# ----------------------------------------------------------------------------------------------
# The library rule: involution_edu's implementations, oracles and custom ops
# ----------------------------------------------------------------------------------------------
KX = torch.randn(1, 4, 5, 5, generator=GEN, dtype=torch.float64)
KK = torch.randn(1, 2, 3, 3, 5, 5, generator=GEN, dtype=torch.float64)


def _involution_cases():
    from involution_edu.reference import involution_loops

    expected = involution_loops(KX.numpy(), KK.numpy(), 1, 1, 1)
    return [Case("4 channels, 2 groups", (KX, KK), expected, rtol=1e-9, atol=1e-9)]


def _by_hand(x, k):
    b, c, h, w = x.shape
    g = k.shape[1]
    windows = F.pad(x, (1, 1, 1, 1)).unfold(2, 3, 1).unfold(3, 3, 1).reshape(b, g, c // g, h, w, 3, 3)
    return torch.einsum("bgchwuv,bguvhw->bgchw", windows, k).reshape(b, c, h, w)


def check_involution(f, **rule):
    return run_cases("involution", f, _involution_cases(), rule=Rule("the involution", **rule))


def test_library_rule_refuses_implementations_oracles_and_custom_ops(capsys):
    import involution_edu.ops as ops
    from involution_edu.exercises import loops

    routes = {
        "custom op": (lambda x, k: torch.ops.involution_edu.involution(x, k, 1, 1, 1, "eager"), "involution_edu"),
        "private eager forward": (lambda x, k: getattr(ops, "_eager" + "_forward")(x, k, 1, 1, 1), "_eager_forward"),
        "functional": (lambda x, k: pydoc.locate("involution_edu.functional.involution")(x, k, padding=1),
                       "involution"),
        "the reference through a checker module": (lambda x, k: vars(loops)["reference"].involution_loops(
            x.numpy(), k.numpy(), 1, 1, 1), "involution_loops"),
        "a checker's own function": (lambda x, k: getattr(loops, "involution_" + "interleaved")(
            x.numpy(), k.numpy(), 1, 1), "involution_interleaved"),
    }
    for name, (candidate, needle) in routes.items():
        assert_rejects(check_involution, candidate, capsys, "yourself", needle)
    assert_accepts(check_involution, _by_hand, capsys)


def test_involution_family_without_the_library_rule(capsys):
    candidate = lambda x, k: torch.ops.involution_edu.involution(x, k, 1, 1, 1, "eager")  # noqa: E731
    assert_rejects(lambda f: check_involution(f, families=["involution"], library=False), candidate, capsys,
                   "torch.ops.involution_edu.involution")
    assert_accepts(lambda f: check_involution(f, families=["involution"], library=False), _by_hand, capsys)


def test_a_model_the_checker_passes_in_is_the_learners_to_call(capsys):
    from involution_edu.module import Involution

    layer = Involution(4, kernel_size=3, stride=1, reduction_ratio=2, group_channels=2).double().eval()
    with torch.no_grad():
        expected = layer(KX)
    cases = [Case("the given model", (layer, KX), expected, rtol=1e-9, atol=1e-9)]
    assert_accepts(lambda f: run_cases("predict", f, cases, rule=Rule("the prediction")),
                   lambda model, x: model(x).detach(), capsys)


def test_autograd_and_custom_ops_work_under_the_dispatch_mode(monkeypatch):
    import involution_edu.ops as ops

    monkeypatch.setenv("INVOLUTION_EDU_DISPATCH_BUDGET", "10000000")
    compiled = guard.compile_rule(Rule("nothing", families=["convolution", "softmax"], library=False))
    x = KX.clone().requires_grad_()
    k = KK.clone().requires_grad_()

    def differentiate():
        y = ops.involution_op(x, k, 1, 1, 1, "eager")
        gx, gk = torch.autograd.grad(y.sum(), (x, k))
        return torch.autograd.gradcheck(lambda a, b: ops.involution_op(a, b, 1, 1, 1, "eager"), (x, k)), gx, gk

    runner = guard.Guard(compiled)
    ok, gx, gk = runner.call(differentiate, (), {})
    assert ok and runner.refused is None and runner.ops > 0  # the dispatch mode saw the ops
    ref_x, ref_k = torch.autograd.grad(ops.involution_op(x, k, 1, 1, 1, "eager").sum(), (x, k))
    assert torch.allclose(gx, ref_x) and torch.allclose(gk, ref_k)


def test_loop_heavy_tensor_code_runs_again_without_the_dispatch_mode(monkeypatch, capsys):
    monkeypatch.setenv("INVOLUTION_EDU_DISPATCH_BUDGET", "50")

    def loops(x, w):
        out = torch.zeros(1, 3, 4, 4, dtype=x.dtype)
        for o in range(3):
            for i in range(4):
                for j in range(4):
                    out[0, o, i, j] = (x[0, :, i:i + 3, j:j + 3] * w[o]).sum()
        return out

    assert_accepts(check_conv, loops, capsys)
    assert_rejects(check_conv, lambda x, w: loops(x, w) * 0 + F.conv2d(x, w), capsys, "conv2d")


# ----------------------------------------------------------------------------------------------
# Time limits
# ----------------------------------------------------------------------------------------------
def endless_while(x, w):
    k = 0
    while k != 5:
        k + 2  # noqa: B018 - the classic typo for k += 2: no call, no progress
    return x


def endless_calls(x, w):
    while True:
        math.sqrt(2.0)


@pytest.mark.parametrize("candidate", [endless_while, endless_calls])
def test_an_endless_loop_gets_a_time_limit_verdict(candidate, capsys):
    start = time.monotonic()
    out = assert_times_out(check_conv, candidate, capsys, case=0.3, total=1.0)
    assert time.monotonic() - start < 10
    assert "case 1/1 '1x2x6x6 -> 3 channels' ran for more than 0.3 s" in out


def test_the_total_limit_names_the_case_where_it_stopped(capsys):
    def slow(x, w):
        time.sleep(0.15)
        return conv_by_hand(x, w)

    with short_time_limits(case=1.0, total=0.4):
        assert not run_cases("conv", slow, CONV * 5)
    out = capsys.readouterr().out
    assert "in all" in out and "stopped in case" in out and "endless loop" in out


def test_time_limit_in_a_thread_uses_the_watchdog(capsys):
    results = {}

    def worker():
        with short_time_limits(case=0.3, total=1.0):
            results["verdict"] = run_cases("conv", endless_while, CONV)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(20)
    assert not thread.is_alive()
    assert not results["verdict"] and "ran for more than 0.3 s" in results["verdict"].message


def test_nothing_is_left_installed_after_a_check(capsys):
    def sentinel_profile(frame, event, arg):
        return None

    previous_handler = signal.getsignal(signal.SIGALRM)
    sys.setprofile(sentinel_profile)
    try:
        check_conv(conv_by_hand)
        check_conv(lambda x, w: F.conv2d(x, w))
        with short_time_limits(case=0.2, total=0.5):
            check_conv(endless_while)
        assert sys.getprofile() is sentinel_profile
    finally:
        sys.setprofile(None)
    assert signal.getsignal(signal.SIGALRM) is previous_handler
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert not torch.overrides._get_current_function_mode_stack()
    assert torch.is_grad_enabled()


def test_keyboard_interrupt_propagates_and_restores_everything():
    def interrupted(x, w):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        check_conv(interrupted)
    assert sys.getprofile() is None
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert not torch.overrides._get_current_function_mode_stack()


def test_time_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("INVOLUTION_EDU_CASE_TIME_LIMIT", "3")
    monkeypatch.setenv("INVOLUTION_EDU_TOTAL_TIME_LIMIT", "7")
    assert guard.time_limits() == (3.0, 7.0)
    assert guard.time_limits(1.0, 2.0) == (1.0, 2.0)
    with short_time_limits(0.5, 1.5):
        assert guard.time_limits() == (0.5, 1.5)
    monkeypatch.delenv("INVOLUTION_EDU_CASE_TIME_LIMIT")
    monkeypatch.delenv("INVOLUTION_EDU_TOTAL_TIME_LIMIT")
    assert guard.time_limits() == (10.0, 30.0)


# ----------------------------------------------------------------------------------------------
# Random cases
# ----------------------------------------------------------------------------------------------
def _random_doubling(rng):
    n = int(rng.integers(2, 6))
    a = rng.standard_normal(n)
    return [Case("hidden", (a,), 2 * a, why="doubling works for any length")]


FIXED = [Case("three ones", (np.ones(3),), 2 * np.ones(3))]


def test_random_cases_catch_a_memorised_answer_and_name_the_property(capsys):
    def memorised(a):
        return np.full(3, 2.0)

    out = assert_rejects(lambda f: run_cases("double", f, FIXED, random_cases=_random_doubling), memorised, capsys,
                         "a random case failed: doubling works for any length", "with inputs a NumPy array")
    assert "INVOLUTION_EDU_CHECK_SEED=" in out
    out = assert_accepts(lambda f: run_cases("double", f, FIXED, random_cases=_random_doubling), lambda a: 2 * a,
                         capsys)
    assert "1 cases and 1 random cases pass" in out


def test_random_cases_are_fresh_per_call_and_fixed_by_the_seed(monkeypatch):
    seen = []

    def record(rng):
        seen.append(float(rng.random()))
        return []

    for _ in range(3):
        run_cases("double", lambda a: 2 * a, FIXED, random_cases=record)
    assert len(set(seen)) == 3
    seen.clear()
    monkeypatch.setenv("INVOLUTION_EDU_CHECK_SEED", "7")
    for _ in range(2):
        run_cases("double", lambda a: 2 * a, FIXED, random_cases=record)
    assert seen[0] == seen[1]


# ----------------------------------------------------------------------------------------------
# Side effects
# ----------------------------------------------------------------------------------------------
LABELS = np.array([0, 1, 2, 1])


def check_counts(f):
    return run_cases("counts", f, [Case("4 labels", (LABELS.copy(),), np.array([1, 2, 1]))])


def test_an_overwritten_array_is_named(capsys):
    def overwrites(labels):
        counts = np.bincount(labels, minlength=3)
        labels[:] = 0
        return counts

    assert_names_side_effect(check_counts, overwrites, capsys, "labels was overwritten", "3 of 4 entries")
    assert_accepts(check_counts, lambda labels: np.bincount(labels, minlength=3), capsys)


def test_a_tensor_changed_in_place_is_named(capsys):
    def in_place(x):
        return x.sub_(x.max(-1, keepdim=True).values).exp_().div_(x.sum(-1, keepdim=True))

    assert_names_side_effect(lambda f: run_cases("sm", f, [Case("rows", (ROWS.clone(),), torch.softmax(ROWS, -1))]),
                             in_place, capsys, "x was changed in place")


def test_a_flipped_requires_grad_is_named(capsys):
    def freezes(x):
        x.requires_grad_(True)
        return 2 * x.detach()

    assert_names_side_effect(lambda f: run_cases("d", f, [Case("x", (ROWS.clone(),), 2 * ROWS)]), freezes, capsys,
                             "x.requires_grad is now True")


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 2).double()
        self.bn1 = nn.BatchNorm1d(2).double()

    def forward(self, x):
        return self.bn1(self.fc(x))


def _predict_cases():
    torch.manual_seed(0)
    net = _Net().train()
    with torch.no_grad():
        expected = net.eval()(ROWS).argmax(-1)
    net.train()
    return [Case("rows", (net, ROWS), expected)]


def check_predict(f):
    return run_cases("predict", f, _predict_cases())


def good_predict(model, x):
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(x).argmax(-1)
    model.train(was)
    return out


@pytest.mark.parametrize("mistake, needle", [
    ("bn left in eval", "model.bn1 was left in eval mode (it was in training mode)"),
    ("frozen", "model.fc.weight.requires_grad is now False"),
    ("grad mode leaked", "autograd was left switched off"),
    ("default dtype", "the default dtype was left at float64"),
    ("cast", "model.fc.weight is now float32 (it was float64): the model was cast"),
])
def test_side_effects_on_a_model_and_torch_are_named(mistake, needle, capsys):
    def predict(model, x):
        out = good_predict(model, x)
        if mistake == "bn left in eval":
            model.bn1.eval()
        elif mistake == "frozen":
            model.requires_grad_(False)
        elif mistake == "grad mode leaked":
            torch.set_grad_enabled(False)
        elif mistake == "default dtype":
            torch.set_default_dtype(torch.float64)
        elif mistake == "cast":
            model.float()
        return out

    assert_names_side_effect(check_predict, predict, capsys, needle)
    assert torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32  # put back for the notebook
    assert_accepts(check_predict, good_predict, capsys)


def test_check_inputs_false_skips_the_input_check(capsys):
    def overwrites(labels):
        counts = np.bincount(labels, minlength=3)
        labels[:] = 0
        return counts

    cases = [Case("4 labels", (LABELS.copy(),), np.array([1, 2, 1]), check_inputs=False)]
    assert_accepts(lambda f: run_cases("counts", f, cases), overwrites, capsys)
    assert_accepts(lambda f: run_cases("counts", f, [Case("4 labels", (LABELS.copy(),), np.array([1, 2, 1]))],
                                       side_effects=False), overwrites, capsys)
