"""Every notebook's "predict, then run" questions, judged both ways by :func:`check_answer`.

Each exercises module keeps its questions in a ``QUESTIONS`` dict. For every question: the right
answer is accepted with its explanation; every wrong choice (multiple choice) and every listed
likely mistake (numeric) is rejected with the explanation of that very mistake; an unanswered
question says so; and answers of the wrong kind get a verdict, never a traceback. Questions whose
answer is a computed fact (a count, a ratio) are also checked against the computation in the
notebook's own test file.
"""

from __future__ import annotations

import importlib
from typing import List, Tuple

import pytest

from involution_edu.exercises import CHECKER_MODULES
from involution_edu.exercises.framework import Question, check_answer

MIN_QUESTIONS_PER_NOTEBOOK = 2


def _questions() -> List[Tuple[str, str, Question]]:
    found = []
    for module_name in CHECKER_MODULES:
        module = importlib.import_module(f"involution_edu.exercises.{module_name}")
        for key, question in sorted(getattr(module, "QUESTIONS", {}).items()):
            found.append((module_name, key, question))
    return found


QUESTIONS = _questions()
IDS = [f"{module}:{key}" for module, key, _ in QUESTIONS]


@pytest.mark.parametrize("module_name", CHECKER_MODULES)
def test_every_notebook_asks_questions(module_name):
    module = importlib.import_module(f"involution_edu.exercises.{module_name}")
    questions = getattr(module, "QUESTIONS", {})
    assert len(questions) >= MIN_QUESTIONS_PER_NOTEBOOK, f"{module_name} has {len(questions)} questions"
    assert all(isinstance(q, Question) for q in questions.values())


@pytest.mark.parametrize("module_name, key, question", QUESTIONS, ids=IDS)
def test_the_answer_is_accepted_with_its_explanation(module_name, key, question, capsys):
    assert bool(check_answer(question, question.answer)) is True
    out = capsys.readouterr().out
    assert "✓" in out
    assert question.explanation[:30] in out


@pytest.mark.parametrize("module_name, key, question", QUESTIONS, ids=IDS)
def test_every_wrong_choice_and_named_mistake_is_explained(module_name, key, question, capsys):
    if question.choices:
        assert set(question.wrong) == set(question.choices) - {question.answer}
    wrong_answers = list(question.wrong.items()) + list(question.mistakes)
    assert wrong_answers, f"{module_name}:{key} names no wrong answer"
    for answer, explanation in wrong_answers:
        assert bool(check_answer(question, answer)) is False
        assert explanation[:40] in capsys.readouterr().out


@pytest.mark.parametrize("module_name, key, question", QUESTIONS, ids=IDS)
@pytest.mark.parametrize("unanswered", [None, ...])
def test_an_unanswered_question_says_so(module_name, key, question, unanswered, capsys):
    assert bool(check_answer(question, unanswered)) is False
    assert "not answered yet" in capsys.readouterr().out


ODD_ANSWERS = ["zzz", "42", [1, 2], object(), float("nan"), 10**30, -1]
ODD_CASES = [(m, k, q, odd) for m, k, q in QUESTIONS for odd in ODD_ANSWERS if not (isinstance(odd, type(q.answer)) and odd == q.answer)]


@pytest.mark.parametrize("module_name, key, question, odd", ODD_CASES)
def test_answers_of_the_wrong_kind_get_a_verdict(module_name, key, question, odd, capsys):
    assert bool(check_answer(question, odd)) is False
    out = capsys.readouterr().out.strip()
    assert out.startswith("✗") or out.startswith("…"), out
