"""Every question comes before the text that answers it.

A "predict, then run" question teaches only if the learner has not just read its answer. For every
``check_answer(QUESTIONS["key"], ...)`` cell of every notebook, this test reads all the cells above
it (markdown and code sources, and the stored text outputs) and checks, where it can be checked
mechanically:

* a **numeric** answer does not appear there as a number (its plain, rounded and thousands-separated
  spellings); integers below 100 and numbers the question itself states are too common to test this way;
* the **distinctive wording of the right choice** (a choice of four or more words) does not appear
  there, except in the cell that lists the choices themselves (a cell that also holds a wrong
  choice's wording);
* the learning goals (the notebook's first markdown cell) do not contain the right choice's wording
  or the numeric answer either.
"""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import nbformat
import pytest

from involution_edu.exercises.framework import Question

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
QUESTION_CALL = re.compile(r"check_answer\(\s*QUESTIONS\[\s*[\"']([A-Za-z0-9_]+)[\"']\s*\]")
IMPORT = re.compile(r"from\s+involution_edu\.exercises\.([a-z_]+)\s+import\s+(\([^)]*\)|[^\n]*)")
MIN_CHOICE_WORDS = 4
SMALL_INTEGER = 100


def _source(cell) -> str:
    return cell.source if isinstance(cell.source, str) else "".join(cell.source)


def _outputs(cell) -> str:
    texts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            texts.append(output.get("text", "") if isinstance(output.get("text"), str) else "".join(output["text"]))
        else:
            plain = output.get("data", {}).get("text/plain", "")
            texts.append(plain if isinstance(plain, str) else "".join(plain))
    return "\n".join(texts)


def _normalise(text: str) -> str:
    text = re.sub(r"[*_`$\\]", "", text)  # markdown emphasis, code and math delimiters
    return re.sub(r"\s+", " ", text).strip().lower()


def _question_cells() -> Iterator[Tuple[str, int, str, Question]]:
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        modules = set()
        for cell in nb.cells:
            if cell.cell_type == "code":
                modules.update(module for module, names in IMPORT.findall(_source(cell))
                               if re.search(r"\bQUESTIONS\b", names))
        questions: Dict[str, Question] = {}
        for module_name in sorted(modules):
            questions.update(getattr(importlib.import_module(f"involution_edu.exercises.{module_name}"), "QUESTIONS", {}))
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            for key in QUESTION_CALL.findall(_source(cell)):
                assert key in questions, f"{path.name} cell {index} checks QUESTIONS[{key!r}], which no imported module defines"
                yield path.name, index, key, questions[key]


def _above(name: str, index: int) -> List[Tuple[int, str]]:
    """(cell index, text) for every cell above ``index``: its source, and for code cells its text outputs.

    The instructor's answers (solution regions, e.g. the answer cell just above a ``check_answer`` cell
    in nbgrader form) are left out: the learner never sees them.
    """
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    texts = []
    for number, cell in enumerate(nb.cells[:index]):
        text = re.sub(r"[^\n]*BEGIN (?:SOLUTION|ANSWER).*?END (?:SOLUTION|ANSWER)[^\n]*", "", _source(cell), flags=re.S)
        if cell.cell_type == "code":
            text += "\n" + _outputs(cell)
        texts.append((number, text))
    return texts


def _spellings(value: float) -> List[str]:
    """Ways a number is written in prose or printed: 200768, 200,768, 2.6, 2.60, 0.25 ..."""
    spellings = set()
    if float(value).is_integer():
        whole = int(value)
        spellings.update({str(whole), f"{whole:,}", f"{whole:,}".replace(",", " "), f"{whole:,}".replace(",", "\u202f")})
    else:
        for digits in range(1, 5):
            rounded = round(float(value), digits)
            if rounded != 0 and math.isclose(rounded, value, rel_tol=0.02):
                spellings.add(f"{rounded:.{digits}f}")
        spellings.add(repr(float(value)))
    return sorted(spellings)


def _number_pattern(spelling: str) -> re.Pattern:
    # not part of a longer number: no digit (or decimal point followed by a digit) on either side
    return re.compile(r"(?<![\d.,])" + re.escape(spelling) + r"(?![\d]|[.,]\d)")


CASES = list(_question_cells())


def _is_small_integer(question: Question) -> bool:
    """Integers below 100 (K = 3, 16 channels, 49 taps) appear everywhere: not checkable by search; nor is a
    number the question itself states as a given."""
    value = float(question.answer)
    if value.is_integer() and abs(value) < SMALL_INTEGER:
        return True
    return any(_number_pattern(spelling).search(question.prompt) for spelling in _spellings(value))


NUMERIC = [case for case in CASES if not case[3].choices and not _is_small_integer(case[3])]
CHOICE = [case for case in CASES if case[3].choices
          and len(_normalise(str(case[3].choices[case[3].answer])).split()) >= MIN_CHOICE_WORDS]


def test_there_are_questions_to_check():
    assert len(CASES) >= 2 * len(NOTEBOOKS), f"only {len(CASES)} question cells found in {len(NOTEBOOKS)} notebooks"
    assert NUMERIC and CHOICE, "both kinds of question must be checked"


@pytest.mark.parametrize("name, index, key, question", CASES, ids=[f"{n}:{k}" for n, _, k, _ in CASES])
def test_the_learning_goals_do_not_give_the_answer_away(name, index, key, question):
    goals = _normalise(next(text for _, text in _above(name, 1)))
    if question.choices:
        right = _normalise(str(question.choices[question.answer]))
        assert len(right.split()) < MIN_CHOICE_WORDS or right not in goals, (
            f"{name}: the learning goals contain the right choice of QUESTIONS[{key!r}]")
    elif not _is_small_integer(question):
        hits = [s for s in _spellings(float(question.answer)) if _number_pattern(s).search(goals)]
        assert not hits, f"{name}: the learning goals state the answer to QUESTIONS[{key!r}]: {hits}"


@pytest.mark.parametrize("name, index, key, question", NUMERIC, ids=[f"{n}:{k}" for n, _, k, _ in NUMERIC])
def test_a_numeric_answer_is_not_given_above_its_question(name, index, key, question):
    value = float(question.answer)
    found = []
    for number, text in _above(name, index):
        for spelling in _spellings(value):
            if _number_pattern(spelling).search(text):
                found.append(f"cell {number} has {spelling!r}")
    assert not found, (f"{name}: the answer to QUESTIONS[{key!r}] ({question.answer}) is written above the question "
                       f"(cell {index}): {'; '.join(found)}. Ask the question before the text that answers it.")


@pytest.mark.parametrize("name, index, key, question", CHOICE, ids=[f"{n}:{k}" for n, _, k, _ in CHOICE])
def test_the_right_choice_is_not_worded_above_its_question(name, index, key, question):
    right = _normalise(str(question.choices[question.answer]))
    wrong = [_normalise(str(text)) for key_, text in question.choices.items() if key_ != question.answer]
    found = []
    for number, text in _above(name, index):
        flat = _normalise(text)
        if right in flat and not any(other in flat for other in wrong if len(other.split()) >= 2):
            found.append(number)
    assert not found, (f"{name}: the right choice of QUESTIONS[{key!r}] ({question.choices[question.answer]!r}) is "
                       f"written in cell(s) {found} above the question (cell {index}). Ask it before the text that "
                       "answers it.")


def test_the_number_search_finds_the_spellings_prose_uses_and_not_parts_of_other_numbers():
    assert any(_number_pattern(s).search("200,768 parameters") for s in _spellings(200768))
    assert any(_number_pattern(s).search("it is 2.60 GiB") for s in _spellings(2.6))
    assert any(_number_pattern(s).search("ratio 4.84.") for s in _spellings(4.84))
    assert not any(_number_pattern(s).search("1200768 and 2200,7680") for s in _spellings(200768))
    assert not any(_number_pattern(s).search("12.6 or 2.65") for s in _spellings(2.6))
