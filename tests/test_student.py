"""Tests for the student-copy tool (``involution_edu.student``, ``make student``).

Synthetic notebooks in ``tmp_path`` pin down the transformation and the safety rules; the
real course notebooks (``notebooks/*.ipynb``) are turned into student copies that must hold
no solution code, regenerate byte for byte, and run top to bottom with every checker
reporting "not attempted".
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
    BEGIN_MARKER,
    DEFAULT_HINT,
    END_MARKER,
    MANIFEST_NAME,
    SolutionMarkerError,
    UnsafeOutputError,
    make_student_notebook,
    strip_solutions,
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
check_ok = run_cases("add", add, [Case("small numbers", (1, 2), 3)])"""


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
        nbformat.v4.new_code_cell(exercise_source),
        nbformat.v4.new_code_cell(CHECKER_SOURCE),
        nbformat.v4.new_code_cell("print(x + 2)"),
        nbformat.v4.new_markdown_cell(f"Why?\n\n{BEGIN_MARKER}\nBecause 40 + 2 = 42.\n{END_MARKER}"),
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


def solution_lines(source: str) -> List[str]:
    """The code lines inside solution regions (not blank, not comments), stripped."""
    lines, inside = [], False
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped.startswith(BEGIN_MARKER):
            inside = True
        elif stripped.startswith(END_MARKER):
            inside = False
        elif inside and stripped and not stripped.startswith("#"):
            lines.append(stripped)
    return lines


def outside_lines(source: str) -> List[str]:
    """The lines outside solution regions, stripped."""
    lines, inside = [], False
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped.startswith(BEGIN_MARKER):
            inside = True
        elif stripped.startswith(END_MARKER):
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


def exercise_and_checker_cells(instructor: nbformat.NotebookNode) -> List[Tuple[int, int]]:
    """(exercise cell index, index of the next code cell) for every cell with a solution region."""
    pairs = []
    cells = instructor.cells
    for index, cell in enumerate(cells):
        if cell.cell_type == "code" and BEGIN_MARKER in cell.source:
            following = next((j for j in range(index + 1, len(cells)) if cells[j].cell_type == "code"), None)
            assert following is not None, f"cell {index} is an exercise without a checker cell after it"
            pairs.append((index, following))
    return pairs


# --------------------------------------------------------------------------- the transformation


def test_region_becomes_one_stub_indented_like_the_marker_with_the_hint():
    new_source, removed = strip_solutions(EXERCISE_SOURCE, "nb, cell 2")
    assert removed == 1
    assert new_source.split("\n") == [
        "def add(a, b):",
        '    """Return a + b."""',
        '    raise NotImplementedError("use the + operator")',
    ]


def test_default_hint_and_several_regions_and_code_outside_kept():
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
        f'    raise NotImplementedError("{DEFAULT_HINT}")',
        "    return y",
        "",
        "def g(x):",
        '        raise NotImplementedError("first line of the hint second line")',
    ]


def test_hint_with_quotes_and_backslashes_gives_valid_python():
    source = f'def f():\n    {BEGIN_MARKER}\n    # HINT: use "np.pad" and a \\ backslash\n    return 1\n    {END_MARKER}'
    new_source, _ = strip_solutions(source)
    namespace: dict = {}
    exec(compile(new_source, "<student>", "exec"), namespace)
    with pytest.raises(NotImplementedError, match=r'use "np.pad" and a \\ backslash'):
        namespace["f"]()


@pytest.mark.parametrize(
    "source, message",
    [
        (f"def f():\n    {BEGIN_MARKER}\n    return 1", "never closed"),
        (f"def f():\n    return 1\n    {END_MARKER}", "never opened"),
        (f"def f():\n    {BEGIN_MARKER}\n    {BEGIN_MARKER}\n    return 1\n    {END_MARKER}", "inside the one opened on line 2"),
    ],
    ids=["begin-without-end", "end-without-begin", "nested"],
)
def test_unbalanced_markers_raise_an_error_naming_notebook_and_cell(tmp_path, source, message):
    src = tmp_path / "src"
    write_notebook(src, "01_good.ipynb", make_notebook())
    write_notebook(src, "02_broken.ipynb", make_notebook(exercise_source=source))
    out = tmp_path / "out"
    with pytest.raises(SolutionMarkerError) as info:
        write_student_notebooks(src, out)
    text = str(info.value)
    assert "02_broken.ipynb" in text and "cell 2" in text and message in text
    assert not out.exists(), "nothing may be written when a notebook is broken"


def test_student_notebook_has_no_solutions_outputs_counts_or_runtime_metadata():
    instructor = make_notebook()
    before = nbformat.writes(instructor)
    copy, removed = make_student_notebook(instructor, "01_tiny.ipynb")
    assert nbformat.writes(instructor) == before, "the instructor notebook object must not be modified"
    assert removed == 2  # one code region, one markdown region
    nbformat.validate(copy)
    text = nbformat.writes(copy)
    for forbidden in (BEGIN_MARKER, END_MARKER, "total = a + b", "return total", "Because 40 + 2", "something"):
        assert forbidden not in text
    assert "*Write your answer here.*" in copy.cells[5].source
    for cell in copy.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
        assert "execution" not in cell.metadata
    assert dict(copy.metadata) == {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "involution_edu": {"student_copy": True, "source": "01_tiny.ipynb", "generator": "involution_edu.student"},
    }
    assert [cell["id"] for cell in copy.cells] == [cell["id"] for cell in instructor.cells]


# --------------------------------------------------------------------------- writing and safety


def test_writes_marked_copies_and_a_manifest_and_regenerates_identical_bytes(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write_notebook(src, "01_tiny.ipynb", make_notebook())
    write_notebook(src, "02_tiny.ipynb", make_notebook())
    source_bytes = {p.name: p.read_bytes() for p in src.iterdir()}

    copies = write_student_notebooks(src, out)
    assert [c.target.name for c in copies] == ["01_tiny.ipynb", "02_tiny.ipynb"]
    assert [c.solutions_removed for c in copies] == [2, 2]
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
    worked_on.cells[2].source = "def add(a, b):\n    return a + b  # my answer"
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
    assert f"wrote {out / '01_tiny.ipynb'}" in printed and "2 solutions removed" in printed

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
    assert "not attempted" in output_text(executed.cells[3])
    assert output_text(executed.cells[4]) == "42\n"


# --------------------------------------------------------------------------- the real course


@pytest.fixture(scope="module")
def course_copies(tmp_path_factory) -> Path:
    assert COURSE_NOTEBOOKS, "no course notebooks notebooks/NN_name.ipynb found"
    out = tmp_path_factory.mktemp("student_notebooks")
    write_student_notebooks(REPO / "notebooks", out)
    return out


def test_course_copies_hold_no_solution_code(course_copies):
    for path in COURSE_NOTEBOOKS:
        instructor = nbformat.read(path, as_version=4)
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
            stubs += ours.source.count("raise NotImplementedError(")
            stubs -= theirs.source.count("raise NotImplementedError(")
        assert stubs >= 2, f"{path.name}: expected at least 2 exercises turned into stubs, found {stubs}"


def test_course_copies_regenerate_identically(course_copies, tmp_path):
    write_student_notebooks(REPO / "notebooks", tmp_path)
    for path in COURSE_NOTEBOOKS:
        assert (tmp_path / path.name).read_bytes() == (course_copies / path.name).read_bytes(), path.name


@pytest.mark.parametrize("name", [p.name for p in COURSE_NOTEBOOKS] or ["<no notebooks>"])
def test_course_student_copy_runs_and_every_checker_says_not_attempted(course_copies, name):
    instructor = nbformat.read(REPO / "notebooks" / name, as_version=4)
    copy = nbformat.read(course_copies / name, as_version=4)
    executed = execute(copy, course_copies)
    pairs = exercise_and_checker_cells(instructor)
    assert len(pairs) >= 2, f"{name}: expected at least 2 exercises"
    for exercise_index, checker_index in pairs:
        text = output_text(executed.cells[checker_index])
        assert "not attempted" in text, f"{name} cell {checker_index}: checker printed {text!r}"
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
