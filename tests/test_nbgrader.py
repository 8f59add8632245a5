"""The course as an nbgrader course: cell metadata, nbgrader's validator, and an instructor's round trip.

* Every notebook, in nbgrader form (``tools/nbgrader_metadata.py``; a notebook not converted yet is
  converted in memory, a converted one must be up to date), passes nbgrader's own metadata
  validator and nbgrader's release preprocessors, with the points its exercises' stars give.
* ``nbgrader validate`` (its Python API, ``Validator``) passes on the instructor version of notebook 02.
* The round trip: a course folder with its own sqlite gradebook (``--init-course``), then
  ``generate_assignment`` for notebook 02, three submissions (the instructor's solutions, one exercise
  wrong, untouched), ``autograde``, scores equal to the points of the checkers that pass, and
  ``generate_feedback`` writing an HTML file per student.

nbgrader comes with the ``instructor`` extra, which ``make test`` installs.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import nbformat
import pytest
from nbgrader.apps import NbGraderAPI
from nbgrader.api import Gradebook
from nbgrader.nbgraderformat import MetadataValidator
from nbgrader.preprocessors import (
    CheckCellMetadata,
    ClearHiddenTests,
    ClearMarkScheme,
    ClearOutput,
    ComputeChecksums,
    LockCells,
)
from nbgrader.validator import Validator
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from involution_edu import nbgrader_metadata, student
from involution_edu.nbgrader_metadata import convert_files, convert_notebook, read_notebook
from involution_edu.nbgrader_plugin import CourseClearSolutions

REPO = Path(__file__).resolve().parents[1]
COURSE_NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NAMES = [path.name for path in COURSE_NOTEBOOKS] or ["<no notebooks>"]
ROUND_TRIP = "02_involution_loops"  # NumPy only: fast to autograde
V3_KEYS = set(MetadataValidator().schema["properties"])
BIN = str(Path(sys.executable).parent)  # nbgrader runs `alembic` from the PATH


def _is_converted(nb: nbformat.NotebookNode) -> bool:
    return any("nbgrader" in cell.metadata for cell in nb.cells)


def _meta(cell: nbformat.NotebookNode) -> dict:
    return cell.metadata["nbgrader"]


def _role(cell: nbformat.NotebookNode) -> str:
    return cell.metadata.get("involution_edu", {}).get("role", "teaching")


def _release_in_memory(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """nbgrader's GenerateAssignment chain without the gradebook (SaveCells) and header/footer."""
    resources: dict = {}
    nb = copy.deepcopy(nb)
    for preprocessor in (LockCells(), CourseClearSolutions(), ClearOutput(), CheckCellMetadata(), ComputeChecksums(),
                         ClearHiddenTests(), ClearMarkScheme(), ComputeChecksums(), CheckCellMetadata()):
        nb, resources = preprocessor.preprocess(nb, resources)
    return nb


@pytest.fixture(scope="module")
def converted_02(tmp_path_factory) -> Path:
    """A copy of notebook 02 converted by the command-line tool (as the originals are, or will be)."""
    folder = tmp_path_factory.mktemp("converted")
    target = folder / f"{ROUND_TRIP}.ipynb"
    target.write_bytes((REPO / "notebooks" / f"{ROUND_TRIP}.ipynb").read_bytes())
    result = subprocess.run([sys.executable, str(REPO / "tools" / "nbgrader_metadata.py"), str(target)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert str(target) in result.stdout and "points" in result.stdout
    return target


# --------------------------------------------------------------------------- the converter


def test_converter_is_idempotent_and_check_mode_writes_nothing(converted_02, tmp_path, capsys):
    first = converted_02.read_bytes()
    assert nbgrader_metadata.main(["--check", str(converted_02)]) == 0
    _, changed = convert_files([converted_02])
    assert changed == [] and converted_02.read_bytes() == first

    raw = tmp_path / f"{ROUND_TRIP}.ipynb"
    raw.write_bytes((REPO / "notebooks" / f"{ROUND_TRIP}.ipynb").read_bytes())
    before = raw.read_bytes()
    if not _is_converted(read_notebook(raw)):  # before the originals are converted, --check must say so
        assert nbgrader_metadata.main(["--check", str(raw)]) == 1
        assert "not in nbgrader form" in capsys.readouterr().err
    assert raw.read_bytes() == before


def test_question_cells_are_split_into_an_answer_cell_and_a_checker_cell(converted_02):
    nb = read_notebook(converted_02)
    answers = [i for i, cell in enumerate(nb.cells) if _role(cell) == "question"]
    assert len(answers) >= 2
    for index in answers:
        answer, checker = nb.cells[index], nb.cells[index + 1]
        assert "BEGIN SOLUTION" in answer.source and "BEGIN ANSWER" not in answer.source
        assert "check_answer" not in answer.source and answer.source.startswith("answer_q")
        assert checker.source.startswith("check_answer(QUESTIONS[") and checker.id == f"{answer.id}-check"
        assert _meta(answer)["grade_id"] == "q_" + _meta(checker)["grade_id"][len("check_q_"):]
        assert _meta(checker)["points"] == 1 and _meta(checker)["grade"] and _meta(checker)["locked"]
        assert "not answered yet" not in "".join(o.get("text", "") for o in checker.outputs)


def test_grade_ids_survive_edits_of_the_cells_text(converted_02):
    nb = read_notebook(converted_02)
    before = [_meta(cell)["grade_id"] for cell in nb.cells]
    edited = copy.deepcopy(nb)
    for cell in edited.cells:
        if _role(cell) in ("teaching", "exercise"):
            cell.source = cell.source.replace("the", "THE") + "\n"
    after = [_meta(cell)["grade_id"] for cell in convert_notebook(edited, converted_02.name).notebook.cells]
    assert after == before


# --------------------------------------------------------------------------- every notebook


@pytest.mark.parametrize("name", NAMES)
def test_notebook_passes_nbgraders_validator_and_release_chain(name):
    path = REPO / "notebooks" / name
    original = read_notebook(path)
    conversion = convert_notebook(original, name)
    nb = conversion.notebook
    if _is_converted(original):
        text = nbformat.writes(nb)
        assert path.read_text(encoding="utf-8") in (text, text + "\n"), (
            f"{name} is not up to date with tools/nbgrader_metadata.py; run it and re-execute the notebook")
    MetadataValidator().validate_nb(nb)  # nbgrader's own validator: schema v3, grade ids, points

    grade_ids = [_meta(cell)["grade_id"] for cell in nb.cells]
    assert len(set(grade_ids)) == len(grade_ids)
    exercises = questions = 0
    for index, cell in enumerate(nb.cells):
        meta = _meta(cell)
        assert set(meta) <= V3_KEYS, f"{name} cell {index}: keys outside nbgrader's v3 schema {set(meta) - V3_KEYS}"
        role = _role(cell)
        if role == "exercise":
            exercises += 1
            assert meta["solution"] and not meta["grade"] and not meta["locked"]
            assert meta["grade_id"].startswith("ex_") and "BEGIN SOLUTION" in cell.source
        elif role == "question":
            questions += 1
            assert meta["solution"] and not meta["grade"] and not meta["locked"]
        elif role in ("checker", "question_checker"):
            assert meta["grade"] and meta["locked"] and not meta["solution"]
            stars = cell.metadata["involution_edu"].get("stars", 1)
            assert meta["points"] == (stars if role == "checker" else 1) and stars in (1, 2, 3)
        else:
            assert role == "teaching" and meta["locked"] and not meta["solution"] and not meta["grade"], (
                f"{name} cell {index}: {role}")
            assert "BEGIN SOLUTION" not in cell.source
    assert exercises >= 2 and questions >= 2, (exercises, questions)
    assert conversion.points == sum(_meta(c)["points"] for c in nb.cells if _meta(c)["grade"])

    released = _release_in_memory(nb)
    assert len(released.cells) == len(nb.cells)
    text = nbformat.writes(released)
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    # the student copy of `make student` is nbgrader's release, cell for cell (bar the gradebook's checksums)
    ours, _ = student.make_student_notebook(original, name, engine="builtin")
    for index, (mine, theirs) in enumerate(zip(ours.cells, released.cells)):
        theirs_meta = copy.deepcopy(dict(theirs.metadata))
        for key in ("checksum", "cell_type"):
            theirs_meta["nbgrader"].pop(key, None)
        assert (mine.cell_type, mine.source, dict(mine.metadata)) == (theirs.cell_type, theirs.source, theirs_meta), (
            f"{name} cell {index}")


def test_nbgrader_validate_passes_on_the_instructor_version_of_02(converted_02):
    config = Config()
    config.Execute.timeout = 600
    results = Validator(config=config).validate(str(converted_02))
    assert results == {}, results


# --------------------------------------------------------------------------- the round trip


def _without_markers(source: str) -> str:
    return "\n".join(line for line in source.split("\n") if "BEGIN SOLUTION" not in line and "END SOLUTION" not in line)


def _wrong(source: str) -> str:
    """The solution region replaced by ``return None`` (a wrong answer that does not raise)."""
    lines, out, inside = source.split("\n"), [], False
    for line in lines:
        if "BEGIN SOLUTION" in line:
            inside = True
            out.append(line[: len(line) - len(line.lstrip())] + "return None")
        elif "END SOLUTION" in line:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def _submit(course: Path, student_id: str, release: nbformat.NotebookNode, answers: Dict[str, str]) -> None:
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    folder = course / "submitted" / student_id / ROUND_TRIP
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / f"{ROUND_TRIP}.ipynb")
    (folder / "timestamp.txt").write_text("2026-01-15 10:00:00.000000 UTC\n")


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")
def test_instructor_round_trip_generate_autograde_feedback(tmp_path, monkeypatch, converted_02):
    monkeypatch.setenv("PATH", BIN + os.pathsep + os.environ.get("PATH", ""))
    src = tmp_path / "instructor"
    src.mkdir()
    (src / converted_02.name).write_bytes(converted_02.read_bytes())
    course = tmp_path / "course"
    assert student.main(["--init-course", str(course), "--notebooks", str(src), "--course-id", "inv101"]) == 0
    instructor = read_notebook(course / "source" / ROUND_TRIP / f"{ROUND_TRIP}.ipynb")

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(course)
    monkeypatch.chdir(course)
    api = NbGraderAPI(config=config)
    assert api.coursedir.course_id == "inv101"

    result = api.generate_assignment(ROUND_TRIP)
    assert result["success"], result["log"] + str(result.get("error"))
    release = read_notebook(course / "release" / ROUND_TRIP / f"{ROUND_TRIP}.ipynb")
    release_text = nbformat.writes(release)
    assert "BEGIN SOLUTION" not in release_text and student.ANSWER_STUB in release_text
    assert "raise NotImplementedError()" not in release_text, "the course's stub, not nbgrader's default"

    solutions = {_meta(c)["grade_id"]: c.source for c in instructor.cells if _meta(c)["solution"]}
    checkers = [c for c in instructor.cells if _meta(c)["grade"]]
    points = {_meta(c)["grade_id"]: _meta(c)["points"] for c in checkers}
    exercises = [c for c in instructor.cells if _role(c) == "exercise"]
    wrong_exercise = exercises[0]
    wrong_checker = "check_" + _meta(wrong_exercise)["grade_id"][len("ex_"):]
    assert wrong_checker in points

    right = {grade_id: _without_markers(source) for grade_id, source in solutions.items()}
    one_wrong = dict(right, **{_meta(wrong_exercise)["grade_id"]: _wrong(wrong_exercise.source)})
    _submit(course, "alice", release, right)       # all correct: the instructor's solutions
    _submit(course, "bob", release, one_wrong)     # one exercise wrong
    _submit(course, "carol", release, {})          # untouched
    expected = {
        "alice": dict(points),
        "bob": {**points, wrong_checker: 0},
        "carol": {grade_id: 0 for grade_id in points},
    }
    for student_id in expected:
        result = api.autograde(ROUND_TRIP, student_id, create=True)
        assert result["success"], result["log"] + str(result.get("error"))

    scores = {}
    with Gradebook(api.coursedir.db_url) as gradebook:
        for student_id, want in expected.items():
            submission = gradebook.find_submission_notebook(ROUND_TRIP, ROUND_TRIP, student_id)
            got = {grade.name: grade.score for grade in submission.grades}
            assert got == want, f"{student_id}: {got} != {want}"
            assert submission.max_score == sum(points.values())
            scores[student_id] = submission.score
    assert scores == {"alice": sum(points.values()), "bob": sum(points.values()) - points[wrong_checker], "carol": 0}
    print(f"round trip scores (of {sum(points.values()):g}): {scores}")

    for student_id in expected:
        result = api.generate_feedback(ROUND_TRIP, student_id)
        assert result["success"], result["log"] + str(result.get("error"))
        html = course / "feedback" / student_id / ROUND_TRIP / f"{ROUND_TRIP}.html"
        assert html.is_file(), f"no feedback for {student_id}"
        text = html.read_text(encoding="utf-8")
        assert f"{ROUND_TRIP} (Score: {scores[student_id]:.1f} / {sum(points.values()):.1f})" in text, student_id
        assert ("✗" in text) == (student_id != "alice"), "the feedback shows the checkers' verdicts"


# --------------------------------------------------------------------------- the converter's rules, on small notebooks


def _small(*cells: nbformat.NotebookNode, ids: bool = True) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nb.cells = list(cells)
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"c{index}" if ids else None
        if not ids:
            del cell["id"]
    return nb


EXERCISE = "def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"
PROMPT = "### Exercise 1 ★★★ — double it"


def test_points_follow_the_stars_of_the_nearest_prompt_and_stop_at_the_previous_exercise():
    nb = _small(nbformat.v4.new_markdown_cell(PROMPT), nbformat.v4.new_code_cell(EXERCISE),
                nbformat.v4.new_markdown_cell("<details><summary>Hint 1</summary>…</details>"),
                nbformat.v4.new_code_cell("check_f(f)"),
                nbformat.v4.new_markdown_cell("### Exercise 2 ★ — again"), nbformat.v4.new_code_cell(EXERCISE),
                nbformat.v4.new_code_cell("assert check_g(f)"))
    cells = convert_notebook(nb, "t.ipynb").notebook.cells
    assert [_meta(c)["grade_id"] for c in cells] == ["cell-c0", "ex_f", "cell-c2", "check_f", "cell-c4", "ex_g", "check_g"]
    assert _meta(cells[3])["points"] == 3 and _meta(cells[6])["points"] == 1
    unmarked = _small(nbformat.v4.new_markdown_cell(PROMPT), nbformat.v4.new_code_cell(EXERCISE),
                      nbformat.v4.new_code_cell("check_f(f)"), nbformat.v4.new_markdown_cell("Exercise 2, no mark"),
                      nbformat.v4.new_code_cell(EXERCISE), nbformat.v4.new_code_cell("check_g(f)"))
    with pytest.raises(nbgrader_metadata.ConversionError, match=r"t.ipynb, cell 4 .*without a difficulty mark"):
        convert_notebook(unmarked, "t.ipynb")


def test_a_checker_without_an_exercise_is_refused_and_nothing_is_written(tmp_path):
    good = tmp_path / "01_good.ipynb"
    nbformat.write(_small(nbformat.v4.new_markdown_cell(PROMPT), nbformat.v4.new_code_cell(EXERCISE),
                          nbformat.v4.new_code_cell("check_f(f)")), good)
    bad = tmp_path / "02_bad.ipynb"
    nbformat.write(_small(nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("check_f(f)")), bad)
    before = {p: p.read_bytes() for p in (good, bad)}
    assert nbgrader_metadata.main([str(good), str(bad)]) == 1
    assert {p: p.read_bytes() for p in (good, bad)} == before


def test_cells_without_ids_or_with_a_copied_id_get_deterministic_ones():
    nb = _small(nbformat.v4.new_markdown_cell("a"), nbformat.v4.new_code_cell("b"), ids=False)
    nb.nbformat_minor = 4
    first = convert_notebook(nb, "05_x.ipynb").notebook
    assert [c.id for c in first.cells] == ["05_x-0", "05_x-1"] and first.nbformat_minor == 5
    assert nbformat.writes(convert_notebook(nb, "05_x.ipynb").notebook) == nbformat.writes(first)
    copied = _small(nbformat.v4.new_markdown_cell("a"), nbformat.v4.new_markdown_cell("b"))
    copied.cells[1]["id"] = "c0"
    assert [c.id for c in convert_notebook(copied, "05_x.ipynb").notebook.cells] == ["c0", "05_x-1"]


def test_written_answers_in_markdown_are_graded_by_hand_and_raw_regions_are_solution_cells():
    nb = _small(nbformat.v4.new_markdown_cell("Why?\n### BEGIN SOLUTION\nbecause\n### END SOLUTION"),
                nbformat.v4.new_raw_cell("### BEGIN SOLUTION\nraw\n### END SOLUTION"))
    converted = convert_notebook(nb, "t.ipynb").notebook
    MetadataValidator().validate_nb(converted)
    written, raw = (_meta(c) for c in converted.cells)
    assert written["grade"] and written["solution"] and written["points"] == 1 and not written["locked"]
    assert raw["solution"] and not raw["grade"]
