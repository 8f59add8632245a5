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
    assert run_cases("double", double, CASES) is True
    assert "all 2 cases pass" in capsys.readouterr().out


def test_torch_answers_are_accepted():
    assert run_cases("double", lambda a: 2 * torch.from_numpy(a), CASES) is True


def test_not_attempted(capsys):
    def stub(a):
        raise NotImplementedError("write me")

    assert run_cases("double", stub, CASES) is False
    assert "not attempted" in capsys.readouterr().out


def test_exception_reported_with_type_message_and_case_without_traceback(capsys):
    def broken(a):
        return a @ np.ones((7, 7))

    assert run_cases("double", broken, CASES) is False
    out = capsys.readouterr().out
    assert "ValueError" in out and "'small'" in out and "Traceback" not in out


def test_wrong_shape_names_expected_and_got(capsys):
    assert run_cases("double", lambda a: 2 * a[:1], CASES) is False
    out = capsys.readouterr().out
    assert "wrong shape" in out and "(2, 3)" in out and "(1, 3)" in out


def test_wrong_values_give_first_index_expected_got_and_why(capsys):
    assert run_cases("double", lambda a: 2 * a + (a > 4), CASES) is False
    out = capsys.readouterr().out
    assert "index (1, 2)" in out and "expected 10" in out and "got 11" in out and "doubling" in out


def test_second_case_failure_is_named(capsys):
    assert run_cases("double", lambda a: 2 * np.abs(a), CASES) is False
    assert "case 2/2 'negative'" in capsys.readouterr().out


def test_non_callable_is_refused_without_raising(capsys):
    assert run_cases("double", 42, CASES) is False
    assert "expected a function" in capsys.readouterr().out


def test_none_returned_is_reported(capsys):
    assert run_cases("double", lambda a: None, CASES) is False
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
    assert compare("tiny", np.ones(3) + 1e-12, np.ones(3)) is True
    out = capsys.readouterr().out
    assert "exact: False" in out and "approx: True" in out and "max diff" in out
    assert compare("shape", np.ones(3), np.ones(4)) is False
    assert "shapes differ" in capsys.readouterr().out


# Every checker the course ships, whatever its notebook: a student's unfinished or broken answer
# gives False and a readable verdict, never an exception.
import involution_edu.exercises as exercises  # noqa: E402

ALL_CHECKERS = sorted(name for name in exercises.__all__ if name.startswith("check_"))


def _stub(*args, **kwargs):
    raise NotImplementedError("Write your solution here")


def _crash(*args, **kwargs):
    return {}["no such key"]


def _forgot_return(*args, **kwargs):
    pass


def test_every_notebook_exercise_has_an_exported_checker():
    assert len(ALL_CHECKERS) >= 27, ALL_CHECKERS


@pytest.mark.parametrize("name", ALL_CHECKERS)
def test_checker_never_raises_on_a_broken_answer(name, capsys):
    checker = getattr(exercises, name)
    assert checker(_stub) is False
    assert "not attempted" in capsys.readouterr().out
    assert checker(_crash) is False
    out = capsys.readouterr().out
    assert "KeyError" in out and "Traceback" not in out
    assert checker(_forgot_return) is False
    assert "✗" in capsys.readouterr().out
    assert checker("not a function") is False
    out = capsys.readouterr().out
    assert "expected a function" in out or "'str' object is not callable" in out
