"""The shared checker machinery: verdicts for every kind of student mistake, and no raising."""

import numpy as np
import pytest
import torch

from involution_edu.exercises.framework import Case, compare, describe_mismatch, run_cases

CASES = [
    Case("small", (np.arange(6.0).reshape(2, 3),), 2 * np.arange(6.0).reshape(2, 3), why="doubling"),
    Case("negative", (-np.ones((2, 2)),), -2 * np.ones((2, 2)), why="signs"),
]


def double(a):
    return 2 * a


def test_correct_answer_passes_and_says_how_many_cases(capsys):
    assert bool(run_cases("double", double, CASES)) is True
    assert "all 2 cases pass" in capsys.readouterr().out


def test_torch_answers_are_accepted():
    assert bool(run_cases("double", lambda a: 2 * torch.from_numpy(a), CASES)) is True


def test_not_attempted(capsys):
    def stub(a):
        raise NotImplementedError("write me")

    assert bool(run_cases("double", stub, CASES)) is False
    assert "not attempted" in capsys.readouterr().out


def test_exception_reported_with_type_message_and_case_without_traceback(capsys):
    def broken(a):
        return a @ np.ones((7, 7))

    assert bool(run_cases("double", broken, CASES)) is False
    out = capsys.readouterr().out
    assert "ValueError" in out and "'small'" in out and "Traceback" not in out


def test_wrong_shape_names_expected_and_got(capsys):
    assert bool(run_cases("double", lambda a: 2 * a[:1], CASES)) is False
    out = capsys.readouterr().out
    assert "wrong shape" in out and "(2, 3)" in out and "(1, 3)" in out


def test_wrong_values_give_first_index_expected_got_and_why(capsys):
    assert bool(run_cases("double", lambda a: 2 * a + (a > 4), CASES)) is False
    out = capsys.readouterr().out
    assert "index (1, 2)" in out and "expected 10" in out and "got 11" in out and "doubling" in out


def test_second_case_failure_is_named(capsys):
    assert bool(run_cases("double", lambda a: 2 * np.abs(a), CASES)) is False
    assert "case 2/2 'negative'" in capsys.readouterr().out


def test_non_callable_is_refused_without_raising(capsys):
    assert bool(run_cases("double", 42, CASES)) is False
    assert "expected a function" in capsys.readouterr().out


def test_none_returned_is_reported(capsys):
    assert bool(run_cases("double", lambda a: None, CASES)) is False
    assert "forget to `return`" in capsys.readouterr().out


@pytest.mark.parametrize(
    "got, expected, fragment",
    [
        (np.array([1.0, np.nan]), np.array([1.0, 2.0]), "NaN"),
        (3, 4, "off by -1"),
        ("3", 4, "expected a number"),
        ((1, 2), (1, 2, 3), "expected 3 items"),
        ((1, 5), (1, 2), "item 1"),
        (np.array([np.int64(1)]), np.array([2]), "expected 2, got 1"),
    ],
)
def test_describe_mismatch_messages(got, expected, fragment):
    message = describe_mismatch(got, expected)
    assert message is not None and fragment in message


@pytest.mark.parametrize("got, expected", [(np.ones(3), np.ones(3)), (2.0, 2), ((1, (2, 3)), (1, (2, 3))), ("a", "a")])
def test_describe_mismatch_accepts_equal_values(got, expected):
    assert describe_mismatch(got, expected) is None


def test_compare_prints_exact_approx_and_max_diff(capsys):
    assert bool(compare("tiny", np.ones(3) + 1e-12, np.ones(3))) is True
    out = capsys.readouterr().out
    assert "exact: False" in out and "approx: True" in out and "max diff" in out
    assert bool(compare("shape", np.ones(3), np.ones(4))) is False
    assert "shapes differ" in capsys.readouterr().out


# Every checker the course ships, whatever its notebook: a student's unfinished or broken answer
# gives False and a readable verdict, never an exception.
import involution_edu.exercises as exercises  # noqa: E402

ALL_CHECKERS = sorted(name for name in exercises.__all__ if name.startswith("check_") and name != "check_answer")


def _stub(*args, **kwargs):
    raise NotImplementedError("Write your solution here")


def _crash(*args, **kwargs):
    return {}["no such key"]


def _forgot_return(*args, **kwargs):
    pass


def test_every_notebook_exercise_has_an_exported_checker():
    assert len(ALL_CHECKERS) >= 18, ALL_CHECKERS  # 2-4 exercises in each of 9+ notebooks


@pytest.mark.parametrize("name", ALL_CHECKERS)
def test_checker_never_raises_on_a_broken_answer(name, capsys):
    checker = getattr(exercises, name)
    assert bool(checker(_stub)) is False
    out = capsys.readouterr().out
    refused_kind = out.startswith("✗") and "expected" in out  # a checker of e.g. @triton.jit kernels
    assert "not attempted" in out or refused_kind, out
    assert bool(checker(_crash)) is False
    out = capsys.readouterr().out
    assert ("KeyError" in out or refused_kind) and "Traceback" not in out
    assert bool(checker(_forgot_return)) is False
    assert "✗" in capsys.readouterr().out
    assert bool(checker("not a function")) is False
    out = capsys.readouterr().out
    assert "expected a" in out or "'str' object is not callable" in out


@pytest.mark.parametrize("name", ALL_CHECKERS)
def test_checker_gives_a_verdict_on_every_odd_return(name):
    assert_never_raises(getattr(exercises, name))


# ----------------------------------------------------------------------------------------------
# Shortcut guard
# ----------------------------------------------------------------------------------------------
import functools  # noqa: E402
import importlib  # noqa: E402
import sys  # noqa: E402

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from checker_harness import ODD_RETURNS, assert_accepts, assert_never_raises, assert_rejects  # noqa: E402
from involution_edu.exercises.framework import Question, check_answer, find_shortcuts  # noqa: E402

X = torch.randn(1, 2, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
W = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
CONV_CASES = [Case("1x2x5x6 -> 3 channels", (X, W), F.conv2d(X, W), rtol=1e-9, atol=1e-9)]


def conv_clean(x, w):
    """Allowed torch ops only: unfold on the tensor, einsum."""
    windows = x.unfold(2, w.shape[2], 1).unfold(3, w.shape[3], 1)
    return torch.einsum("bchwuv,ocuv->bohw", windows, w)


def conv_direct(x, w):
    return F.conv2d(x, w)


def conv_attribute_path(x, w):
    return torch.nn.functional.conv2d(x, w)


def conv_alias_import(x, w):
    from torch.nn.functional import conv2d as c

    return c(x, w)


def conv_module_import(x, w):
    import torch.nn.functional as G

    return G.conv2d(x, w)


def _my_helper(x, w):
    return F.conv2d(x, w)


def conv_via_helper(x, w):
    return _my_helper(x, w)


def _deeper(x, w):
    return _my_helper(x, w)


def conv_via_two_helpers(x, w):
    return _deeper(x, w)


def conv_nested_def(x, w):
    def inner(a):
        return F.conv2d(a, w)

    return inner(x)


conv_nested_lambda = lambda x, w: (lambda a: torch.nn.functional.conv2d(a, w))(x)  # noqa: E731


def _make_closure():
    op = F.conv2d

    def conv(x, w):
        return op(x, w)

    return conv


def _apply(op, x, w):
    return op(x, w)


def _recursive(x, w, depth=2):
    return conv_clean(x, w) if depth == 0 else _recursive(x, w, depth - 1)


def conv_default_argument(x, w, op=F.conv2d):
    return op(x, w)


def conv_getattr(x, w):
    return getattr(F, "conv2d")(x, w)


class ConvModule(nn.Module):
    def forward(self, x, w):
        return F.conv2d(x, w)


class CleanModule(nn.Module):
    def forward(self, x, w):
        return conv_clean(x, w)


SHORTCUTS = {
    "direct call": conv_direct,
    "attribute path": conv_attribute_path,
    "alias import": conv_alias_import,
    "module import inside": conv_module_import,
    "inside a helper": conv_via_helper,
    "two helpers deep": conv_via_two_helpers,
    "nested def": conv_nested_def,
    "nested lambda": conv_nested_lambda,
    "closure": _make_closure(),
    "functools.partial": functools.partial(_apply, F.conv2d),
    "default argument": conv_default_argument,
    "getattr with a string": conv_getattr,
    "nn.Module instance": ConvModule(),
    "bound method": ConvModule().forward,
    "the forbidden function itself": F.conv2d,
    "module __dict__": lambda x, w: F.__dict__["conv2d"](x, w),
    "vars()": lambda x, w: vars(F)["conv2d"](x, w),
    "eval of a string": lambda x, w: eval("F.conv2d")(x, w),
    "sys.modules": lambda x, w: sys.modules["torch.nn.functional"].conv2d(x, w),
    "globals()": lambda x, w: globals()["F"].conv2d(x, w),
    "importlib": lambda x, w: importlib.import_module("torch.nn.functional").conv2d(x, w),
}


STATIC_ROUTES = {"direct call", "attribute path", "inside a helper", "two helpers deep", "closure",
                 "functools.partial", "default argument", "nn.Module instance", "bound method",
                 "the forbidden function itself", "nested def", "nested lambda"}


@pytest.mark.parametrize("how", sorted(SHORTCUTS))
def test_guard_catches_the_shortcut(how, capsys):
    """Every route is refused: the obvious ones by the static pre-check, the rest at run time."""
    candidate = SHORTCUTS[how]
    ok = run_cases("conv", candidate, CONV_CASES, forbidden=[F.conv2d], what="the convolution")
    out = capsys.readouterr().out
    assert bool(ok) is False
    assert "this exercise asks you to write the convolution yourself; your function call" in out, out
    assert "conv2d" in out
    if how in STATIC_ROUTES:
        assert find_shortcuts(candidate, [F.conv2d]), how
        assert "your function calls" in out  # refused by name, before any case ran


def test_guard_names_the_alias_and_the_helper():
    assert find_shortcuts(conv_direct, [F.conv2d]) == ["F.conv2d"]
    assert find_shortcuts(conv_attribute_path, [F.conv2d]) == ["torch.nn.functional.conv2d"]
    assert any("_my_helper" in hit for hit in find_shortcuts(conv_via_helper, [F.conv2d]))
    assert find_shortcuts(_make_closure(), [F.conv2d]) == ["op (= conv2d)"]


@pytest.mark.parametrize("candidate", [conv_clean, CleanModule(), functools.partial(_apply, conv_clean), _recursive])
def test_guard_has_no_false_positive_on_a_clean_solution(candidate, capsys):
    forbidden = [F.conv2d, torch.conv2d, F.unfold, nn.Conv2d, "torch.nn.functional.conv2d"]
    assert find_shortcuts(candidate, forbidden) == []
    assert_accepts(lambda f: run_cases("conv", f, CONV_CASES, forbidden=forbidden, what="the convolution"),
                   candidate, capsys)


def test_method_names_are_forbidden_by_string_at_run_time(capsys):
    cases = [Case("row", (torch.tensor([[1.0, 2.0]]),), torch.softmax(torch.tensor([[1.0, 2.0]]), -1))]
    assert_rejects(lambda f: run_cases("sm", f, cases, forbidden=[".softmax"], what="softmax"),
                   lambda x: x.softmax(-1), capsys, "your function called", "softmax")
    assert_rejects(lambda f: run_cases("sm", f, cases, forbidden=[torch.softmax], what="softmax"),
                   lambda x: torch.softmax(x, -1), capsys, "torch.softmax")
    assert_accepts(lambda f: run_cases("sm", f, cases, forbidden=[".softmax", torch.softmax], what="softmax"),
                   lambda x: x.exp() / x.exp().sum(-1, keepdim=True), capsys)

    def softmax(x):  # the learner's own function of that name is never refused
        return x.exp() / x.exp().sum(-1, keepdim=True)

    assert_accepts(lambda f: run_cases("sm", f, cases, forbidden=[".softmax"], what="softmax"),
                   lambda x: softmax(x), capsys)


def test_library_implementation_is_caught_under_any_name():
    import involution_edu.reference as reference
    from involution_edu.reference import involution_loops as loops

    assert find_shortcuts(lambda x, k: loops(x, k), [reference.involution_loops]) == ["loops (= involution_loops)"]
    assert find_shortcuts(lambda x, k: reference.involution_loops(x, k), [reference.involution_loops])
    assert find_shortcuts(lambda x, k: reference.involution_loops(x, k),
                          ["involution_edu.reference.involution_loops"])


def test_guard_never_raises_on_odd_candidates():
    for candidate in [42, None, "f", object(), print, len, torch.nn.Linear(2, 2), type, functools.partial(print)]:
        assert isinstance(find_shortcuts(candidate, [F.conv2d, ".softmax"]), list)


# ----------------------------------------------------------------------------------------------
# Verdicts for any return value
# ----------------------------------------------------------------------------------------------
ARRAY_CASES = [Case("2x3", (), np.arange(6.0).reshape(2, 3))]
NUMBER_CASES = [Case("count", (), 42)]
TUPLE_CASES = [Case("shape", (), (2, 3, 4, 4))]
TENSOR_CASES = [Case("tensor", (), torch.full((2, 3, 4, 4), 1 / 3, dtype=torch.float64))]


@pytest.mark.parametrize("cases", [ARRAY_CASES, NUMBER_CASES, TUPLE_CASES, TENSOR_CASES],
                         ids=["array", "number", "tuple", "tensor"])
def test_every_odd_return_gets_a_verdict_without_raising(cases):
    assert_never_raises(lambda f: run_cases("odd", f, cases))


def test_odd_returns_cover_the_contract():
    labels = {label for label, _ in ODD_RETURNS}
    for needed in ["meta tensor", "float16 tensor", "bfloat16 tensor", "huge int", "negative int", "string",
                   "nested list", "ragged list", "object", "generator", "None", "NaN"]:
        assert needed in labels


@pytest.mark.parametrize("value", ["42", "42.0", " 42"])
def test_a_string_is_never_a_number(value, capsys):
    assert_rejects(lambda f: run_cases("count", f, NUMBER_CASES), lambda: value, capsys,
                   "expected a number, got the string")


def test_strings_are_not_arrays(capsys):
    assert_rejects(lambda f: run_cases("grid", f, ARRAY_CASES), lambda: [["0", "1", "2"], ["3", "4", "5"]],
                   capsys, "strings")


def test_verdicts_say_what_was_returned(capsys):
    cases = {
        "meta": (TENSOR_CASES, lambda: torch.empty(2, 3, 4, 4, device="meta"), "has shapes but no values"),
        "meta number": (NUMBER_CASES, lambda: torch.empty((), device="meta"), "no values"),
        "generator": (ARRAY_CASES, lambda: (i for i in range(6)), "generator"),
        "ragged": (ARRAY_CASES, lambda: [[0.0, 1.0, 2.0], [3.0, 4.0]], "ragged"),
        "negative": (NUMBER_CASES, lambda: -42, "cannot be negative"),
        "huge": (NUMBER_CASES, lambda: 10**400, "expected 42"),
        "nan": (NUMBER_CASES, lambda: float("nan"), "NaN"),
        "object": (NUMBER_CASES, lambda: object(), "object"),
        "bool": (NUMBER_CASES, lambda: True, "bool"),
        "shape as tensor": (TUPLE_CASES, lambda: torch.empty(2, 3, 4, 4, device="meta"), "meta"),
    }
    for name, (table, candidate, needle) in cases.items():
        assert_rejects(lambda f: run_cases("odd", f, table), candidate, capsys, needle)


def test_half_and_bfloat16_answers_are_compared_after_upcasting(capsys):
    cases = [Case("ones", (), torch.ones(2, 3, dtype=torch.float64), rtol=1e-2)]
    for dtype in (torch.float16, torch.bfloat16):
        assert_accepts(lambda f: run_cases("half", f, cases), lambda: torch.ones(2, 3, dtype=dtype), capsys)


def test_rounding_only_differences_are_named(capsys):
    exact = torch.linspace(0.1, 1.0, 7, dtype=torch.float64) / 3
    cases = [Case("thirds", (), exact, rtol=1e-12, atol=0)]
    assert_rejects(lambda f: run_cases("r", f, cases), lambda: exact.float(), capsys, "only float32 rounding")
    assert_rejects(lambda f: run_cases("r", f, cases), lambda: exact.half(), capsys, "only float16 rounding")
    assert_rejects(lambda f: run_cases("r", f, cases), lambda: exact.bfloat16(), capsys, "only bfloat16 rounding")
    out = assert_rejects(lambda f: run_cases("r", f, cases), lambda: exact.float() * 1.01, capsys, "wrong values")
    assert "rounding" not in out


def test_huge_ints_compare_exactly(capsys):
    big = 10**30
    assert_accepts(lambda f: run_cases("big", f, [Case("big", (), big)]), lambda: big, capsys)
    assert_rejects(lambda f: run_cases("big", f, [Case("big", (), big, rtol=0, atol=0)]), lambda: big + 1, capsys,
                   "off by 1")


def test_weird_objects_whose_protocols_raise_give_a_verdict(capsys):
    from checker_harness import _Opaque

    for table in (ARRAY_CASES, NUMBER_CASES, TUPLE_CASES, TENSOR_CASES, [Case("str", (), "abc")],
                  [Case("dict", (), {"a": 1})]):
        assert_rejects(lambda f: run_cases("weird", f, table), lambda: _Opaque(), capsys)
    assert describe_mismatch(_Opaque(), {"a": 1}) is not None


# ----------------------------------------------------------------------------------------------
# Mistakes and the unfinished stub
# ----------------------------------------------------------------------------------------------
PARAM_CASES = [Case("bottleneck", (), 1000, why="a block with a shortcut",
                    mistakes=[(936, "you left out the conv bias (64 values)"),
                              (872, "you left out BatchNorm's two vectors (128 values)")])]


@pytest.mark.parametrize("got, needle", [(936, "conv bias"), (872, "BatchNorm")])
def test_a_known_wrong_answer_names_the_mistake(got, needle, capsys):
    out = assert_rejects(lambda f: run_cases("params", f, PARAM_CASES), lambda: got, capsys, needle,
                         "likely mistake")
    assert "this case checks" not in out


def test_an_unknown_wrong_answer_gets_the_generic_line_and_why(capsys):
    out = assert_rejects(lambda f: run_cases("params", f, PARAM_CASES), lambda: 999, capsys, "off by -1",
                         "this case checks: a block with a shortcut")
    assert "likely mistake" not in out


def test_a_mistake_can_be_a_predicate(capsys):
    cases = [Case("shape", (), (2, 3), mistakes=[(lambda got: tuple(got) == (3, 2), "height and width swapped")])]
    assert_rejects(lambda f: run_cases("shape", f, cases), lambda: (3, 2), capsys, "swapped")


def _started_below_the_raise(a):
    raise NotImplementedError("write your solution")
    return 2 * a  # noqa - the learner's code, never reached


def _conditional_raise(a):
    if a is None:
        raise NotImplementedError("not for None")
    raise NotImplementedError("still a stub")


def test_raise_above_code_tells_the_learner_to_delete_it(capsys):
    assert bool(run_cases("double", _started_below_the_raise, CASES)) is False
    out = capsys.readouterr().out
    assert "Delete that line" in out and "raise NotImplementedError" in out


def test_plain_stub_is_not_attempted(capsys):
    assert bool(run_cases("double", _stub, CASES)) is False
    out = capsys.readouterr().out
    assert "not attempted" in out and "Delete" not in out


# ----------------------------------------------------------------------------------------------
# Questions
# ----------------------------------------------------------------------------------------------
CHOICE = Question(
    "Which output positions change when one input pixel changes (K=3, stride 1)?",
    answer="b",
    explanation="the 3x3 neighbourhood: every window containing the pixel.",
    choices={"a": "only the same position", "b": "a 3x3 neighbourhood", "c": "the whole row", "d": "all of them"},
    wrong={"a": "each output reads a KxK window, not one pixel", "c": "windows are local in both directions",
           "d": "involution is local; nothing global here"},
)
NUMERIC = Question("How many weights does a 3x3 conv from 64 to 64 channels have (no bias)?", answer=36864,
                   explanation="64 * 64 * 9", rtol=0, mistakes=[(36928, "that counts the bias too"), (576, "one filter only")])


def test_multiple_choice_right_and_wrong(capsys):
    assert bool(check_answer(CHOICE, "b")) is True
    assert "✓" in capsys.readouterr().out
    for given in ["B", " (b) ", "a 3x3 neighbourhood"]:
        assert bool(check_answer(CHOICE, given)) is True
    capsys.readouterr()
    assert bool(check_answer(CHOICE, "d")) is False
    out = capsys.readouterr().out
    assert "✗" in out and "involution is local" in out and "3x3 neighbourhood: every window" not in out


@pytest.mark.parametrize("given", [None, ...])
def test_not_answered_yet(given, capsys):
    assert bool(check_answer(CHOICE, given)) is False
    assert "not answered yet" in capsys.readouterr().out
    assert bool(check_answer(NUMERIC, given)) is False
    assert "not answered yet" in capsys.readouterr().out


@pytest.mark.parametrize("given", ["e", 2, ["a", "b"], 3.5, object(), True, torch.ones(2)])
def test_odd_choice_answers_are_refused_without_raising(given, capsys):
    assert bool(check_answer(CHOICE, given)) is False
    assert capsys.readouterr().out.startswith("✗")


def test_numeric_right_mistake_and_wrong(capsys):
    assert bool(check_answer(NUMERIC, 36864)) is True
    assert bool(check_answer(NUMERIC, 36864.0)) is True
    assert bool(check_answer(NUMERIC, torch.tensor(36864))) is True
    capsys.readouterr()
    assert bool(check_answer(NUMERIC, 36928)) is False
    assert "counts the bias" in capsys.readouterr().out
    assert bool(check_answer(NUMERIC, 1234)) is False
    assert "not it" in capsys.readouterr().out


@pytest.mark.parametrize("given", ["36864", [36864], float("nan"), 10**400, -5, True, object(), 1j, "b"])
def test_odd_numeric_answers_are_refused_without_raising(given, capsys):
    assert bool(check_answer(NUMERIC, given)) is False
    out = capsys.readouterr().out
    assert out.startswith("✗")
    if given == "36864":
        assert "the string" in out


def test_check_answer_never_raises_on_a_non_question(capsys):
    assert bool(check_answer("not a question", "a")) is False
    assert "✗" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, error", [
    (dict(answer="b", choices={"a": "x", "b": "y"}), ValueError),                    # missing wrong["a"]
    (dict(answer="z", choices={"a": "x", "b": "y"}, wrong={"a": "no"}), ValueError),  # answer not a choice
    (dict(answer="b", choices={"a": "x", "b": "y"}, wrong={"a": "no", "c": "?"}), ValueError),
    (dict(answer="42"), TypeError),                                                   # numeric as a string
    (dict(answer=42, wrong={"a": "no"}), ValueError),
    (dict(answer=42, mistakes=[41]), TypeError),
])
def test_question_is_validated_at_construction(kwargs, error):
    with pytest.raises(error):
        Question("prompt?", explanation="because", **kwargs)


def _checker_wrapper(candidate):
    """What a checker module does to the learner's function (e.g. run it under no_grad)."""
    reference = F.conv2d  # the checker's own oracle, closed over: not the learner's shortcut

    def wrapped(x, w):
        with torch.no_grad():
            _ = reference
            return candidate(x, w)

    wrapped.__module__ = "involution_edu.exercises.some_notebook"
    return wrapped


def test_guard_sees_through_a_checker_wrapper_to_the_learners_function():
    assert find_shortcuts(_checker_wrapper(conv_clean), [F.conv2d]) == []
    assert find_shortcuts(_checker_wrapper(conv_via_helper), [F.conv2d])
    assert find_shortcuts(_checker_wrapper(F.conv2d), [F.conv2d]) == []  # a bare wrapper cannot tell them apart,

    def wraps_wrapper(candidate):  # so a checker that wraps uses functools.wraps (sets __wrapped__)
        @functools.wraps(candidate)
        def wrapped(x, w):
            return candidate(x, w)

        wrapped.__module__ = "involution_edu.exercises.some_notebook"
        return wrapped

    assert find_shortcuts(wraps_wrapper(F.conv2d), [F.conv2d])
    assert find_shortcuts(wraps_wrapper(conv_via_helper), [F.conv2d])
    assert find_shortcuts(wraps_wrapper(conv_clean), [F.conv2d]) == []


def test_not_implemented_from_a_library_op_is_an_error_not_a_stub(capsys):
    def on_meta(x, w):
        return F.conv2d(x.to("meta"), w.to("meta")).cpu()  # torch cannot copy a meta tensor: it raises

    assert bool(run_cases("conv", on_meta, CONV_CASES)) is False
    out = capsys.readouterr().out
    assert "raised NotImplementedError" in out and "not attempted" not in out


def test_guard_catches_a_forbidden_class_its_instances_and_subclasses():
    layer = nn.Conv2d(2, 3, 3, bias=False)

    class MyConv(nn.Conv2d):
        pass

    assert find_shortcuts(lambda x: nn.Conv2d(2, 3, 3)(x), [nn.Conv2d]) == ["nn.Conv2d"]
    assert find_shortcuts(lambda x: layer(x), [nn.Conv2d])
    assert find_shortcuts(lambda x: MyConv(2, 3, 3)(x), [nn.Conv2d])
    assert find_shortcuts(lambda x: nn.Linear(2, 3)(x), [nn.Conv2d]) == []


def test_dicts_are_compared_key_by_key():
    expected = {"weight": np.ones(3), "count": 3}
    assert describe_mismatch({"weight": torch.ones(3), "count": 3}, expected) is None
    assert "key 'weight'" in describe_mismatch({"weight": torch.zeros(3), "count": 3}, expected)
    assert "expected the keys" in describe_mismatch({"weight": np.ones(3)}, expected)


def test_compare_never_raises_on_odd_values(capsys):
    for _, factory in ODD_RETURNS:
        assert bool(compare("odd", factory(), np.full((2, 3, 4, 4), 1 / 3))) is False
    assert "Traceback" not in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# The Verdict: truthy for scripts, silent in a notebook, raising under grading
# ----------------------------------------------------------------------------------------------
from involution_edu.exercises.framework import Verdict  # noqa: E402


def test_verdict_is_truthy_iff_passed_and_keeps_the_message(capsys):
    passed = run_cases("double", double, CASES)
    failed = run_cases("double", lambda a: a, CASES)
    assert isinstance(passed, Verdict) and isinstance(failed, Verdict)
    assert passed and not failed
    assert passed.passed is True and failed.passed is False
    assert "all 2 cases pass" in passed.message and failed.message.startswith("✗ double: case 1/2")
    assert passed == True and failed == False  # noqa: E712 - scripts that compare with a bool
    assert repr(failed) == "<Verdict failed>"
    verdict = check_answer(NUMERIC, 36864)
    assert isinstance(verdict, Verdict) and verdict and "64 * 64 * 9" in verdict.message


def test_a_checker_cell_in_a_jupyter_kernel_stores_only_the_printed_verdict():
    """A cell ending in a checker call: a stream output, and no execute_result (no bare True/False)."""
    from IPython.core.interactiveshell import InteractiveShell
    from ipykernel.inprocess.manager import InProcessKernelManager

    assert InteractiveShell.instance().display_formatter.format(Verdict(False, "x")) == ({}, {})
    InteractiveShell.clear_instance()
    manager = InProcessKernelManager()
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        def run(code):
            client.execute(code)
            messages = []
            while True:
                try:
                    message = client.get_iopub_msg(timeout=0.2)
                except Exception:  # queue.Empty: the cell has finished
                    return messages
                messages.append((message["msg_type"], message["content"]))

        setup = ("from involution_edu.exercises.framework import Case, run_cases\n"
                 "import numpy as np\ncases = [Case('one', (np.ones(2),), 2 * np.ones(2))]")
        assert not [m for m in run(setup) if m[0] == "error"]
        for code, mark in [("run_cases('double', lambda a: a, cases)", "✗ double"),
                           ("run_cases('double', lambda a: 2 * a, cases)", "✓ double")]:
            messages = run(code)
            kinds = [kind for kind, _ in messages]
            assert "execute_result" not in kinds and "error" not in kinds, messages
            text = "".join(content.get("text", "") for kind, content in messages if kind == "stream")
            assert mark in text and "Verdict" not in text and "True" not in text and "False" not in text, text
        assert any(kind == "execute_result" for kind, _ in run("1 + 1"))  # the probe sees results at all
    finally:
        client.stop_channels()
        manager.shutdown_kernel()


@pytest.mark.parametrize("env", [("NBGRADER_EXECUTION", "autograde"), ("NBGRADER_EXECUTION", "validate"),
                                 ("INVOLUTION_EDU_RAISE_ON_FAIL", "1")])
def test_under_grading_a_failure_raises_after_printing(env, monkeypatch, capsys):
    monkeypatch.setenv(*env)
    with pytest.raises(AssertionError, match="case 1/2"):
        run_cases("double", lambda a: a, CASES)
    assert "✗ double: case 1/2" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="not it"):
        check_answer(NUMERIC, 1234)
    assert "✗ 1234 is not it" in capsys.readouterr().out
    assert run_cases("double", double, CASES) and check_answer(NUMERIC, 36864)  # a pass never raises


def test_outside_grading_a_failure_does_not_raise(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "")
    monkeypatch.delenv("INVOLUTION_EDU_RAISE_ON_FAIL", raising=False)
    assert not run_cases("double", lambda a: a, CASES)


# --- the library's own answer handed over as the learner's function ---------------------------
def _library_answers():
    from involution_edu import shapes
    from involution_edu.exercises import module as module_checkers
    from involution_edu.exercises import rednet as rednet_checkers
    from involution_edu.exercises import vectorize as vectorize_checkers

    return [
        (exercises.check_output_size, shapes.output_size, "output_size"),
        (exercises.check_unfold_total_bytes, vectorize_checkers.unfold_total_bytes_reference,
         "unfold_total_bytes_reference"),
        (exercises.check_involution_madds, module_checkers.involution_madds_reference, "involution_madds_reference"),
        (exercises.check_bottleneck_params, rednet_checkers._bottleneck_params_expected, "_bottleneck_params_expected"),
        (exercises.check_involution_madds, functools.partial(module_checkers.involution_madds_reference),
         "involution_madds_reference"),
    ]


@pytest.mark.parametrize("index", range(5))
def test_the_library_answer_itself_is_refused_by_name(index, capsys):
    checker, answer, name = _library_answers()[index]
    assert_rejects(checker, answer, capsys, "yourself", name)


def test_a_broken_function_the_notebook_hands_out_gets_its_teaching_message(capsys):
    from involution_edu.exercises.vectorize import involution_unfold_suspect

    out = assert_rejects(exercises.check_involution_unfold, involution_unfold_suspect, capsys, "c % G")
    assert "the library's own" not in out


def test_a_checker_wrapper_around_the_learner_function_is_not_mistaken_for_the_library(capsys):
    from involution_edu.exercises.framework import _library_answer
    from involution_edu.exercises.module import _without_grad

    def learner(x, module):
        return x

    assert _library_answer(_without_grad(learner)) is None
    assert _library_answer(learner) is None
    assert _library_answer(print) is None


def test_an_oracle_that_passes_every_case_is_refused_at_the_end(capsys):
    from involution_edu.exercises.performance import check_involution_backward, involution_backward_reference

    out = assert_rejects(check_involution_backward, involution_backward_reference, capsys,
                         "your function is", "involution_backward_reference", "the library's own")
    assert "✓" not in out


def test_an_after_check_fails_an_answer_whose_cases_pass(capsys):
    cases = [Case("one", (2,), 4, "doubling")]
    verdict = run_cases("double", lambda n: 2 * n, cases, after=lambda: "it printed a secret")
    out = capsys.readouterr().out
    assert not verdict and "✗ double: it printed a secret" in out and "✓" not in out
    assert run_cases("double", lambda n: 2 * n, cases, after=lambda: None)
    assert not run_cases("double", lambda n: n, cases, after=lambda: pytest.fail("runs only once every case passed"))
