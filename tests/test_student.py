"""Tests for the student-copy tool (``involution_edu.student``, ``make student``).

Synthetic notebooks in ``tmp_path`` pin down the transformation, the answer key and the
safety rules; the real course notebooks (``notebooks/*.ipynb``) are turned into student copies
that must hold no solution code or answer (nor a hint in the stub), regenerate byte for byte,
and run top to bottom with every checker reporting "not attempted" and every question "not
answered yet"; their answer key must hold every solution and every answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import nbformat
import pytest
from nbclient import NotebookClient

from involution_edu import student
from involution_edu.student import (
    ANSWER_STUB,
    BEGIN_ANSWER_MARKER,
    BEGIN_MARKER,
    CODE_STUB_COMMENT,
    END_ANSWER_MARKER,
    END_MARKER,
    MANIFEST_NAME,
    STUB_MESSAGE,
    SolutionMarkerError,
    UnsafeOutputError,
    answer_key_markdown,
    make_student_notebook,
    strip_solutions,
    write_answer_key,
    write_student_notebooks,
)

REPO = Path(__file__).resolve().parents[1]
COURSE_NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 180


# --------------------------------------------------------------------------- helpers

EXERCISE_SOURCE = """def add(a, b):
    \"\"\"Return a + b.\"\"\"
    ### BEGIN SOLUTION
    # HINT: use the + operator
    total = a + b
    return total
    ### END SOLUTION"""

CHECKER_SOURCE = """from involution_edu.exercises.framework import Case, run_cases


def check_add(candidate):
    return run_cases("add", candidate, [Case("small numbers", (1, 2), 3)])


check_add(add)"""

HINTS_SOURCE = """<details><summary>Hint 1 (a nudge)</summary>

Python has an operator for this.
</details>
<details><summary>Hint 2 (the method)</summary>

Add the two arguments and return the sum.
</details>"""

QUESTION_SOURCE = f"""from involution_edu.exercises.framework import Question, check_answer
QUESTION = Question("What is 6 * 7?", answer=42, explanation="six sevens are forty-two", rtol=0)
answer_q1 = None   # a number
{BEGIN_ANSWER_MARKER}
answer_q1 = 42
{END_ANSWER_MARKER}
check_answer(QUESTION, answer_q1)"""


def make_notebook(exercise_source: str = EXERCISE_SOURCE, run: bool = True) -> nbformat.NotebookNode:
    """A small instructor notebook: title, set-up, exercise, checker, a cell after it, a markdown answer."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python", "version": "3.11.0"},
        "widgets": {"state": {}},
    }
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A tiny notebook\n\nYou will learn to add."),
        nbformat.v4.new_code_cell("x = 40\nprint(x)"),
        nbformat.v4.new_markdown_cell("### Exercise 1 ★ — write `add`\n\nReturn the sum of two numbers."),
        nbformat.v4.new_code_cell(exercise_source),
        nbformat.v4.new_markdown_cell(HINTS_SOURCE),
        nbformat.v4.new_code_cell(CHECKER_SOURCE),
        nbformat.v4.new_code_cell("print(x + 2)"),
        nbformat.v4.new_markdown_cell(f"Why?\n\n{BEGIN_MARKER}\nBecause 40 + 2 = 42.\n{END_MARKER}"),
        nbformat.v4.new_markdown_cell("**Question 1.** Predict: what is 6 * 7?"),
        nbformat.v4.new_code_cell(QUESTION_SOURCE),
    ]
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{index}"
    if run:  # pretend the instructor ran it: outputs, counts, timing metadata
        count = 0
        for cell in nb.cells:
            if cell.cell_type == "code":
                count += 1
                cell.execution_count = count
                cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="something\n")]
                cell.metadata["execution"] = {"iopub.execute_input": "2024-01-01T00:00:00.000000Z"}
    return nb


def write_notebook(folder: Path, name: str, nb: nbformat.NotebookNode) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    nbformat.write(nb, path)
    return path


BEGINS, ENDS = (BEGIN_MARKER, BEGIN_ANSWER_MARKER), (END_MARKER, END_ANSWER_MARKER)


def solution_lines(source: str, comments: bool = False) -> List[str]:
    """The lines inside solution and answer regions (not blank; not comments unless asked), stripped."""
    lines, inside = [], False
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped.startswith(BEGINS):
            inside = True
        elif stripped.startswith(ENDS):
            inside = False
        elif inside and stripped and (comments or not stripped.startswith("#")):
            lines.append(stripped)
    return lines


def outside_lines(source: str) -> List[str]:
    """The lines outside solution and answer regions, stripped."""
    lines, inside = [], False
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped.startswith(BEGINS):
            inside = True
        elif stripped.startswith(ENDS):
            inside = False
        elif not inside:
            lines.append(stripped)
    return lines


def output_text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(str(output.get("data", {}).get("text/plain", "")))
        elif output.output_type == "error":
            parts.append(f"{output.ename}: {output.evalue}")
    return "".join(parts)


def execute(nb: nbformat.NotebookNode, folder: Path) -> nbformat.NotebookNode:
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(folder)}},
    )
    return client.execute()


def question_cells(instructor: nbformat.NotebookNode) -> List[int]:
    """Indices of the ``check_answer`` cells (each after its question's answer cell) of a notebook in nbgrader form."""
    return [i for i, cell in enumerate(instructor.cells)
            if cell.metadata.get("involution_edu", {}).get("role") == "question_checker"]


def exercise_and_checker_cells(instructor: nbformat.NotebookNode) -> List[Tuple[int, int]]:
    """(exercise cell index, index of the next code cell) for every cell with a solution region."""
    pairs = []
    cells = instructor.cells
    for index, cell in enumerate(cells):
        if cell.cell_type == "code" and cell.metadata.get("involution_edu", {}).get("role") == "exercise":
            following = next((j for j in range(index + 1, len(cells)) if cells[j].cell_type == "code"), None)
            assert following is not None, f"cell {index} is an exercise without a checker cell after it"
            pairs.append((index, following))
    return pairs


# --------------------------------------------------------------------------- the transformation


STUB = f'raise NotImplementedError("{STUB_MESSAGE}")'


def test_region_becomes_your_code_here_and_a_generic_raise_indented_like_the_marker():
    new_source, removed = strip_solutions(EXERCISE_SOURCE, "nb, cell 2")
    assert removed == 1
    assert new_source.split("\n") == [
        "def add(a, b):",
        '    """Return a + b."""',
        f"    {CODE_STUB_COMMENT}",
        f"    {STUB}",
    ]
    assert "+" not in STUB_MESSAGE and "operator" not in new_source  # the hint went with the region


def test_several_regions_code_outside_kept_and_hints_never_reach_the_stub():
    source = "\n".join(
        [
            "def f(x):",
            "    ### BEGIN SOLUTION",
            "    y = x * 2",
            "    ### END SOLUTION",
            "    return y",
            "",
            "def g(x):",
            "        ### BEGIN SOLUTION",
            "        # HINT: first line of the hint",
            "        # HINT: second line",
            "        return -x",
            "        ### END SOLUTION",
        ]
    )
    new_source, removed = strip_solutions(source)
    assert removed == 2
    assert new_source.split("\n") == [
        "def f(x):",
        f"    {CODE_STUB_COMMENT}",
        f"    {STUB}",
        "    return y",
        "",
        "def g(x):",
        f"        {CODE_STUB_COMMENT}",
        f"        {STUB}",
    ]
    assert "HINT" not in new_source and "first line" not in new_source


def test_the_stub_is_valid_python_that_raises_not_implemented():
    source = f'def f():\n    {BEGIN_MARKER}\n    # HINT: use "np.pad" and a \\ backslash\n    return 1\n    {END_MARKER}'
    new_source, _ = strip_solutions(source)
    namespace: dict = {}
    exec(compile(new_source, "<student>", "exec"), namespace)
    with pytest.raises(NotImplementedError, match="Write your solution"):
        namespace["f"]()
    assert "np.pad" not in new_source


def test_top_level_region_becomes_your_answer_here_without_a_raise():
    new_source, removed = strip_solutions(QUESTION_SOURCE, "nb, cell 9")
    assert removed == 1
    lines = new_source.split("\n")
    assert ANSWER_STUB in lines and "answer_q1 = 42" not in lines and "NotImplementedError" not in new_source
    assert lines[lines.index(ANSWER_STUB) - 1].startswith("answer_q1 = None")
    top_level, _ = strip_solutions(f"a = None\n{BEGIN_MARKER}\na = 1\n{END_MARKER}")
    assert top_level.split("\n") == ["a = None", ANSWER_STUB]
    # the indentation decides, not the marker's name: an indented region raises, like nbgrader's stub
    indented, _ = strip_solutions(f"if True:\n    {BEGIN_ANSWER_MARKER}\n    a = 1\n    {END_ANSWER_MARKER}")
    assert indented.split("\n") == ["if True:", f"    {CODE_STUB_COMMENT}", f"    {STUB}"]
    for cell_type in ("markdown", "raw"):
        text, _ = strip_solutions(f"Why?\n{BEGIN_ANSWER_MARKER}\nbecause\n{END_ANSWER_MARKER}", cell_type=cell_type)
        assert text == "Why?\n*Write your answer here.*"


@pytest.mark.parametrize(
    "source, message",
    [
        (f"def f():\n    {BEGIN_MARKER}\n    return 1", "never closed"),
        (f"def f():\n    return 1\n    {END_MARKER}", "never opened"),
        (f"def f():\n    {BEGIN_MARKER}\n    {BEGIN_MARKER}\n    return 1\n    {END_MARKER}", "inside the one opened on line 2"),
        (f"def f():\n    {BEGIN_MARKER}\n    return 1\n    ### END HIDDEN TESTS", "closes the region opened on line 2"),
        (f"def f():\n    {BEGIN_MARKER}  {END_MARKER}\n    return 1", "holds 2 markers"),
        (f"a = None\n{BEGIN_ANSWER_MARKER}\na = 1", "never closed"),
    ],
    ids=["begin-without-end", "end-without-begin", "nested", "mixed-kinds", "two-on-a-line", "answer-never-closed"],
)
def test_unbalanced_markers_raise_an_error_naming_notebook_and_cell(tmp_path, source, message):
    src = tmp_path / "src"
    write_notebook(src, "01_good.ipynb", make_notebook())
    write_notebook(src, "02_broken.ipynb", make_notebook(exercise_source=source))
    out = tmp_path / "out"
    with pytest.raises(SolutionMarkerError) as info:
        write_student_notebooks(src, out)
    text = str(info.value)
    assert "02_broken.ipynb" in text and "cell 3" in text and message in text
    assert not out.exists(), "nothing may be written when a notebook is broken"


def test_student_notebook_has_no_solutions_outputs_counts_or_runtime_metadata():
    instructor = make_notebook()
    before = nbformat.writes(instructor)
    copy, removed = make_student_notebook(instructor, "01_tiny.ipynb")
    assert nbformat.writes(instructor) == before, "the instructor notebook object must not be modified"
    assert removed == 3  # one code region, one markdown region, one answer
    nbformat.validate(copy)
    text = nbformat.writes(copy)
    for forbidden in (BEGIN_MARKER, END_MARKER, BEGIN_ANSWER_MARKER, END_ANSWER_MARKER, "total = a + b",
                      "return total", "Because 40 + 2", "something", "answer_q1 = 42", "use the + operator"):
        assert forbidden not in text
    assert "*Write your answer here.*" in copy.cells[7].source
    assert copy.cells[4].source == HINTS_SOURCE, "the hints in <details> blocks reach the student unchanged"
    for cell in copy.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
        assert "execution" not in cell.metadata
    assert dict(copy.metadata) == {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "involution_edu": {"student_copy": True, "source": "01_tiny.ipynb", "generator": "involution_edu.student"},
    }
    converted = student.instructor_form(instructor, "01_tiny.ipynb")
    assert [cell["id"] for cell in copy.cells] == [cell["id"] for cell in converted.cells]
    assert [cell["id"] for cell in copy.cells][-2:] == ["cell-9", "cell-9-check"], "the question cell was split"


# --------------------------------------------------------------------------- writing and safety


def test_writes_marked_copies_and_a_manifest_and_regenerates_identical_bytes(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write_notebook(src, "01_tiny.ipynb", make_notebook())
    write_notebook(src, "02_tiny.ipynb", make_notebook())
    source_bytes = {p.name: p.read_bytes() for p in src.iterdir()}

    copies = write_student_notebooks(src, out)
    assert [c.target.name for c in copies] == ["01_tiny.ipynb", "02_tiny.ipynb"]
    assert [c.solutions_removed for c in copies] == [3, 3]
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(first) == {"01_tiny.ipynb", "02_tiny.ipynb", MANIFEST_NAME}
    manifest = json.loads(first[MANIFEST_NAME])
    assert manifest["generator"] == "involution_edu.student"
    assert set(manifest["files"]) == {"01_tiny.ipynb", "02_tiny.ipynb"}
    assert json.loads(first["01_tiny.ipynb"])["metadata"]["involution_edu"]["student_copy"] is True

    write_student_notebooks(src, out)  # regenerate over its own files: allowed, identical
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert {p.name: p.read_bytes() for p in src.iterdir()} == source_bytes


def test_refuses_output_folder_equal_to_source(tmp_path):
    src = tmp_path / "notebooks"
    path = write_notebook(src, "01_tiny.ipynb", make_notebook())
    before = path.read_bytes()
    with pytest.raises(UnsafeOutputError, match="is the source folder"):
        write_student_notebooks(src, src)
    with pytest.raises(UnsafeOutputError, match="is the source folder"):
        write_student_notebooks(src, tmp_path / "notebooks" / ".." / "notebooks", force=True)
    assert path.read_bytes() == before and sorted(p.name for p in src.iterdir()) == ["01_tiny.ipynb"]


def test_refuses_output_folder_inside_source_also_through_a_symlink(tmp_path):
    src = tmp_path / "notebooks"
    write_notebook(src, "01_tiny.ipynb", make_notebook())
    with pytest.raises(UnsafeOutputError, match="inside the source folder"):
        write_student_notebooks(src, src / "student", force=True)
    link = tmp_path / "sneaky"
    link.symlink_to(src, target_is_directory=True)
    with pytest.raises(UnsafeOutputError, match="is the source folder"):
        write_student_notebooks(src, link, force=True)
    with pytest.raises(UnsafeOutputError, match="inside the source folder"):
        write_student_notebooks(src, link / "student", force=True)
    assert sorted(p.name for p in src.iterdir()) == ["01_tiny.ipynb"]


def test_refuses_to_overwrite_a_file_it_did_not_write_unless_forced(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write_notebook(src, "01_tiny.ipynb", make_notebook())
    write_notebook(src, "02_tiny.ipynb", make_notebook())
    out.mkdir()
    foreign = out / "02_tiny.ipynb"
    foreign.write_text("my own notes\n")
    with pytest.raises(UnsafeOutputError, match="02_tiny.ipynb exists and was not written"):
        write_student_notebooks(src, out)
    assert foreign.read_text() == "my own notes\n"
    assert sorted(p.name for p in out.iterdir()) == ["02_tiny.ipynb"], "refusal must write nothing"

    write_student_notebooks(src, out, force=True)
    assert json.loads(foreign.read_text())["metadata"]["involution_edu"]["student_copy"] is True
    write_student_notebooks(src, out)  # now it is ours: no force needed


def test_refuses_to_overwrite_a_student_copy_that_was_edited(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write_notebook(src, "01_tiny.ipynb", make_notebook())
    write_student_notebooks(src, out)
    target = out / "01_tiny.ipynb"
    worked_on = nbformat.read(target, as_version=4)
    worked_on.cells[3].source = "def add(a, b):\n    return a + b  # my answer"
    nbformat.write(worked_on, target)
    edited = target.read_bytes()
    with pytest.raises(UnsafeOutputError, match="or was edited since"):
        write_student_notebooks(src, out)
    assert target.read_bytes() == edited
    write_student_notebooks(src, out, force=True)
    assert b"my answer" not in target.read_bytes()


def test_never_writes_through_a_symlink_even_with_force(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    instructor = write_notebook(src, "01_tiny.ipynb", make_notebook())
    before = instructor.read_bytes()
    out.mkdir()
    (out / "01_tiny.ipynb").symlink_to(instructor)
    for force in (False, True):
        with pytest.raises(UnsafeOutputError, match="symlink"):
            write_student_notebooks(src, out, force=force)
    assert instructor.read_bytes() == before


def test_missing_or_empty_source_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_student_notebooks(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.ipynb"):
        write_student_notebooks(tmp_path / "empty", tmp_path / "out")


def test_command_line_lists_what_it_wrote_and_reports_refusals(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    write_notebook(src, "01_tiny.ipynb", make_notebook())
    assert student.main([str(src), str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / '01_tiny.ipynb'}" in printed and "3 solutions removed" in printed

    assert student.main([str(src), str(src)]) == 1
    assert "error:" in capsys.readouterr().err

    (out / "01_tiny.ipynb").write_text("not ours\n")
    assert student.main([str(src), str(out)]) == 1
    assert "--force" in capsys.readouterr().err
    assert student.main([str(src), str(out), "--force"]) == 0


def test_python_dash_m_entry_point(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write_notebook(src, "01_tiny.ipynb", make_notebook())
    result = subprocess.run(
        [sys.executable, "-m", "involution_edu.student", str(src), str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and (out / "01_tiny.ipynb").is_file()


def test_synthetic_student_copy_runs_and_the_checker_says_not_attempted(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write_notebook(src, "01_tiny.ipynb", make_notebook())
    write_student_notebooks(src, out)
    executed = execute(nbformat.read(out / "01_tiny.ipynb", as_version=4), out)
    assert "not attempted" in output_text(executed.cells[5])
    assert output_text(executed.cells[6]) == "42\n"
    assert output_text(executed.cells[9]) == "", "the answer cell runs without a word"
    assert "not answered yet" in output_text(executed.cells[10])


def test_synthetic_student_copy_with_code_below_the_raise_is_told_to_delete_it(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write_notebook(src, "01_tiny.ipynb", make_notebook())
    write_student_notebooks(src, out)
    worked_on = nbformat.read(out / "01_tiny.ipynb", as_version=4)
    worked_on.cells[3].source += "\n    return a + b"  # the learner wrote below the stub's raise
    executed = execute(worked_on, out)
    assert "Delete that line" in output_text(executed.cells[5])


# --------------------------------------------------------------------------- the answer key


def test_answer_key_holds_prompt_solution_hints_and_answers():
    text, items = answer_key_markdown(make_notebook(), "01_tiny.ipynb")
    assert items == 3  # an exercise, a question, a written answer
    assert text.startswith("# Answer key: 01_tiny.ipynb\n")
    for needle in ("Return the sum of two numbers.", "total = a + b", "return total", "Hint 1 (a nudge)",
                   "Python has an operator for this.", "Hint 2 (the method)", "use the + operator",
                   "Predict: what is 6 * 7?", "answer_q1 = 42", "Because 40 + 2 = 42."):
        assert needle in text, needle
    assert BEGIN_MARKER not in text and END_ANSWER_MARKER not in text
    assert text.index("Hint 1") < text.index("Hint 2") < text.index("answer_q1 = 42")


def test_answer_key_is_written_safely_and_regenerates_identically(tmp_path):
    src, key, out = tmp_path / "src", tmp_path / "answer_key", tmp_path / "out"
    write_notebook(src, "01_tiny.ipynb", make_notebook())
    written = write_answer_key(src, key, student_dir=out)
    assert [k.target.name for k in written] == ["01_tiny.md"]
    first = {p.name: p.read_bytes() for p in key.iterdir()}
    assert set(first) == {"01_tiny.md", MANIFEST_NAME}
    write_answer_key(src, key, student_dir=out)
    assert {p.name: p.read_bytes() for p in key.iterdir()} == first
    (key / "01_tiny.md").write_text("my notes\n")
    with pytest.raises(UnsafeOutputError, match="was not written"):
        write_answer_key(src, key)
    assert (key / "01_tiny.md").read_text() == "my notes\n"
    for bad in (src, src / "key"):
        with pytest.raises(UnsafeOutputError, match="source folder"):
            write_answer_key(src, bad, force=True)
    for bad in (out, out / "key"):
        with pytest.raises(UnsafeOutputError, match="overlap"):
            write_answer_key(src, bad, force=True, student_dir=out)
    assert not out.exists()


def test_command_line_answer_key(tmp_path, capsys):
    src, out, key = tmp_path / "src", tmp_path / "out", tmp_path / "key"
    write_notebook(src, "01_tiny.ipynb", make_notebook())
    assert student.main([str(src), str(out), "--answer-key", str(key)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {key / '01_tiny.md'}" in printed and (out / "01_tiny.ipynb").is_file()
    assert "answer_q1 = 42" in (key / "01_tiny.md").read_text()
    assert student.main([str(src), str(tmp_path / "s2"), "--answer-key", str(tmp_path / "s2" / "key")]) == 1
    assert "overlap" in capsys.readouterr().err and not (tmp_path / "s2").exists()


# --------------------------------------------------------------------------- the real course


@pytest.fixture(scope="module")
def course_copies(tmp_path_factory) -> Path:
    assert COURSE_NOTEBOOKS, "no course notebooks notebooks/NN_name.ipynb found"
    out = tmp_path_factory.mktemp("student_notebooks")
    write_student_notebooks(REPO / "notebooks", out)
    return out


def test_course_copies_hold_no_solution_code(course_copies):
    for path in COURSE_NOTEBOOKS:
        instructor = student.instructor_form(nbformat.read(path, as_version=4), path.name)
        copy = nbformat.read(course_copies / path.name, as_version=4)
        assert len(copy.cells) == len(instructor.cells)
        assert copy.metadata["involution_edu"]["student_copy"] is True
        stubs = 0
        for index, (theirs, ours) in enumerate(zip(instructor.cells, copy.cells)):
            assert BEGIN_MARKER not in ours.source and END_MARKER not in ours.source, f"{path.name} cell {index}"
            if ours.cell_type == "code":
                assert ours.outputs == [] and ours.execution_count is None
            legit = set(outside_lines(theirs.source))  # a line may also appear outside the region
            student_lines = {line.strip() for line in ours.source.split("\n")}
            leaked = [line for line in solution_lines(theirs.source) if line in student_lines and line not in legit]
            assert not leaked, f"{path.name} cell {index} still holds solution lines {leaked}"
            if any(line.startswith(BEGINS) for line in (l.strip() for l in theirs.source.split("\n"))):
                hints = [line for line in solution_lines(theirs.source, comments=True) if line.startswith("# HINT")]
                assert not any(h in student_lines for h in hints), f"{path.name} cell {index}: a hint in the stub"
                assert "HINT" not in ours.source or "HINT" in "\n".join(outside_lines(theirs.source))
            stubs += ours.source.count(CODE_STUB_COMMENT) - theirs.source.count(CODE_STUB_COMMENT)
        assert stubs >= 2, f"{path.name}: expected at least 2 exercises turned into stubs, found {stubs}"


def test_course_answer_key_holds_every_solution_and_answer(course_copies, tmp_path):
    key_dir = tmp_path / "answer_key"
    write_answer_key(REPO / "notebooks", key_dir, student_dir=course_copies)
    for path in COURSE_NOTEBOOKS:
        instructor = nbformat.read(path, as_version=4)
        key = (key_dir / f"{path.stem}.md").read_text(encoding="utf-8")
        key_lines = {line.strip() for line in key.split("\n")}
        for index, cell in enumerate(instructor.cells):
            missing = [line for line in solution_lines(cell.source, comments=True) if line not in key_lines]
            assert not missing, f"{path.name} cell {index}: the answer key lacks {missing[:3]}"
        assert key.count("## Exercise ") >= 2, path.name
    again = tmp_path / "again"
    write_answer_key(REPO / "notebooks", again)
    for path in COURSE_NOTEBOOKS:
        assert (again / f"{path.stem}.md").read_bytes() == (key_dir / f"{path.stem}.md").read_bytes()


def test_course_copies_regenerate_identically(course_copies, tmp_path):
    write_student_notebooks(REPO / "notebooks", tmp_path)
    for path in COURSE_NOTEBOOKS:
        assert (tmp_path / path.name).read_bytes() == (course_copies / path.name).read_bytes(), path.name


@pytest.mark.parametrize("name", [p.name for p in COURSE_NOTEBOOKS] or ["<no notebooks>"])
def test_course_student_copy_runs_and_every_checker_says_not_attempted(course_copies, name):
    instructor = student.instructor_form(nbformat.read(REPO / "notebooks" / name, as_version=4), name)
    copy = nbformat.read(course_copies / name, as_version=4)
    executed = execute(copy, course_copies)
    pairs = exercise_and_checker_cells(instructor)
    assert len(pairs) >= 2, f"{name}: expected at least 2 exercises"
    for exercise_index, checker_index in pairs:
        text = output_text(executed.cells[checker_index])
        assert "not attempted" in text, f"{name} cell {checker_index}: checker printed {text!r}"
    for index in question_cells(instructor):
        text = output_text(executed.cells[index])
        assert "not answered yet" in text, f"{name} cell {index}: check_answer printed {text!r}"
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


def test_answer_key_explains_questions_from_the_notebooks_questions_dict(monkeypatch):
    import types

    from involution_edu.exercises.framework import Question

    fake = types.ModuleType("involution_edu.exercises.fake_for_test")
    fake.QUESTIONS = {"which": Question("Which?", answer="b", explanation="b because it is right",
                                        choices={"a": "first", "b": "second"}, wrong={"a": "a is the trap"})}
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    nb = make_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell("## 3. A section heading\n\n**Question 2.** Which one? (a) or (b)"))
    nb.cells.append(nbformat.v4.new_code_cell(
        "from involution_edu.exercises.fake_for_test import (\n    QUESTIONS,\n)\n"
        f"answer_q2 = None\n{BEGIN_ANSWER_MARKER}\nanswer_q2 = \"b\"\n{END_ANSWER_MARKER}\n"
        "check_answer(QUESTIONS[\"which\"], answer_q2)"))
    text, items = answer_key_markdown(nb, "01_tiny.ipynb")
    assert items == 4
    for needle in ("answer_q2 = \"b\"", "b because it is right", "a is the trap", "second", "#### 3. A section heading"):
        assert needle in text, needle
    assert "\n## 3. A section heading" not in text  # prompt headings sit below the key's own


# --------------------------------------------------------------------------- markers as nbgrader reads them

needs_nbgrader = pytest.mark.skipif(not student.nbgrader_available(), reason="needs nbgrader (the instructor extra)")


@pytest.mark.parametrize("begin, end", [
    ("## BEGIN SOLUTION", "## END SOLUTION"),
    ("###BEGIN SOLUTION", "###END SOLUTION"),
    ("# BEGIN SOLUTION (write it here)", "# END SOLUTION"),
    ("pass  ### BEGIN SOLUTION", "### END SOLUTION"),
    ("### BEGIN SOLUTIONS", "### END SOLUTIONS"),
], ids=["two-hashes", "no-space", "one-hash-and-words", "after-code", "plural"])
@pytest.mark.parametrize("engine", ["builtin", pytest.param("nbgrader", marks=needs_nbgrader)])
def test_any_line_holding_begin_solution_is_a_marker_as_for_nbgrader(begin, end, engine):
    nb = make_notebook(exercise_source=f"def add(a, b):\n    {begin}\n    total = a + b\n    return total\n    {end}")
    copy, removed = make_student_notebook(nb, "01_tiny.ipynb", engine=engine)
    assert removed == 3
    text = nbformat.writes(copy)
    assert "total = a + b" not in text and "return total" not in text and "SOLUTION" not in text
    assert copy.cells[3].source.split("\n") == ["def add(a, b):", f"    {CODE_STUB_COMMENT}", f"    {STUB}"]


@pytest.mark.parametrize("marker", [
    "### begin solution", "### Begin Solution", "### BEGIN  SOLUTION", "### BEGIN_SOLUTION", "### BEGIN-SOLUTION",
    "### begin answer", "### BEGIN HIDDEN TEST", "### begin hidden tests",
])
@pytest.mark.parametrize("cell_type", ["code", "markdown", "raw"])
def test_a_marker_nbgrader_would_miss_is_refused_and_nothing_is_written(tmp_path, marker, cell_type):
    src, out, key = tmp_path / "src", tmp_path / "out", tmp_path / "key"
    write_notebook(src, "01_good.ipynb", make_notebook())
    nb = make_notebook()
    new = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
           "raw": nbformat.v4.new_raw_cell}[cell_type](f"intro\n{marker}\nthe secret answer\n### END SOLUTION")
    new["id"] = "sneaky"
    nb.cells.insert(2, new)
    write_notebook(src, "02_sneaky.ipynb", nb)
    with pytest.raises(SolutionMarkerError) as info:
        write_student_notebooks(src, out)
    message = str(info.value)
    assert "02_sneaky.ipynb" in message and "cell 2" in message and "line 2" in message, message
    assert student.main([str(src), str(out), "--answer-key", str(key)]) == 1
    assert not out.exists() and not key.exists()


def test_regions_in_raw_and_markdown_cells_are_replaced_by_a_stub():
    nb = make_notebook()
    nb.cells.insert(2, nbformat.v4.new_raw_cell(f"keep\n{BEGIN_MARKER}\nraw secret\n{END_MARKER}\nkeep too"))
    nb.cells[2]["id"] = "raw-cell"
    copy, removed = make_student_notebook(nb, "01_tiny.ipynb", engine="builtin")
    assert removed == 4
    assert copy.cells[2].source == "keep\n*Write your answer here.*\nkeep too"
    assert "raw secret" not in nbformat.writes(copy) and "Because 40 + 2" not in nbformat.writes(copy)


def test_hidden_tests_are_removed_from_the_student_copy():
    nb = make_notebook()
    nb.cells[5].source += "\n### BEGIN HIDDEN TESTS\nassert add(10, 20) == 30  # a case the student never sees\n### END HIDDEN TESTS"
    for engine in ["builtin"] + (["nbgrader"] if student.nbgrader_available() else []):
        copy, _ = make_student_notebook(nb, "01_tiny.ipynb", engine=engine)
        assert copy.cells[5].source == CHECKER_SOURCE, engine
    nb.cells[1].source += "\n### BEGIN HIDDEN TESTS\nx = 1\n### END HIDDEN TESTS"  # not a grade cell
    with pytest.raises(SolutionMarkerError, match="not an nbgrader grade cell"):
        make_student_notebook(nb, "01_tiny.ipynb", engine="builtin")


def test_answer_key_inside_the_source_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    write_notebook(src, "01_tiny.ipynb", make_notebook())
    for key in (src / "answer_key", src):
        assert student.main([str(src), str(out), "--answer-key", str(key)]) == 1
        assert "source folder" in capsys.readouterr().err
        assert not out.exists(), "the student copies must not be written when the answer key is refused"
        assert sorted(p.name for p in src.iterdir()) == ["01_tiny.ipynb"]
        with pytest.raises(UnsafeOutputError, match="source folder"):
            student.write_course_files(src, out, key)
        assert not out.exists()


def test_an_unwritable_answer_key_file_stops_the_student_copies_too(tmp_path):
    src, out, key = tmp_path / "src", tmp_path / "out", tmp_path / "key"
    write_notebook(src, "01_tiny.ipynb", make_notebook())
    key.mkdir()
    (key / "01_tiny.md").write_text("my notes\n")
    with pytest.raises(UnsafeOutputError, match="01_tiny.md exists"):
        student.write_course_files(src, out, key)
    assert not out.exists() and (key / "01_tiny.md").read_text() == "my notes\n"


@needs_nbgrader
def test_nbgrader_and_builtin_engines_give_the_same_synthetic_copy():
    nb = make_notebook()
    nb.cells.insert(2, nbformat.v4.new_raw_cell(f"keep\n{BEGIN_MARKER}\nraw secret\n{END_MARKER}"))
    nb.cells[2]["id"] = "raw-cell"
    ours, _ = make_student_notebook(nb, "01_tiny.ipynb", engine="builtin")
    theirs, _ = make_student_notebook(nb, "01_tiny.ipynb", engine="nbgrader")
    assert nbformat.writes(ours) == nbformat.writes(theirs)


@needs_nbgrader
@pytest.mark.parametrize("name", [p.name for p in COURSE_NOTEBOOKS] or ["<no notebooks>"])
def test_nbgrader_and_builtin_engines_give_the_same_course_copy_cell_for_cell(name):
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    ours, removed_ours = make_student_notebook(nb, name, engine="builtin")
    theirs, removed_theirs = make_student_notebook(nb, name, engine="nbgrader")
    assert removed_ours == removed_theirs >= 4
    assert len(ours.cells) == len(theirs.cells)
    for index, (a, b) in enumerate(zip(ours.cells, theirs.cells)):
        assert a == b, f"{name} cell {index}: the engines differ"
    assert ours.metadata == theirs.metadata


def _region_lines(nb: nbformat.NotebookNode) -> Tuple[set, set]:
    """(stripped lines inside any region, stripped lines outside every region) of a notebook in nbgrader form."""
    inside, outside = set(), set()
    for cell in nb.cells:
        state = False
        for line in cell.source.split("\n"):
            if any(marker in line for pair in student.DELIMITERS.values() for marker in pair):
                state = any(pair[0] in line for pair in student.DELIMITERS.values())
                continue
            (inside if state else outside).add(line.strip())
    return {line for line in inside if line}, outside


def test_no_solution_line_of_any_instructor_notebook_is_in_its_student_copy(course_copies):
    """Greps every student copy (the whole file) for every line inside a region of the instructor version."""
    for path in COURSE_NOTEBOOKS:
        instructor = student.instructor_form(nbformat.read(path, as_version=4), path.name)
        inside, outside = _region_lines(instructor)
        assert inside, f"{path.name}: no solution lines found"
        copy = nbformat.read(course_copies / path.name, as_version=4)
        copy_lines = {line.strip() for cell in copy.cells for line in cell.source.split("\n")}
        raw = (course_copies / path.name).read_text(encoding="utf-8")
        leaked = sorted(line for line in inside - outside if line in copy_lines)
        assert not leaked, f"{path.name}: solution lines in the student copy: {leaked[:5]}"
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN ANSWER", "HIDDEN TESTS"):
            assert marker not in raw, f"{path.name}: {marker!r} reached the student copy"
