"""Student copies and instructor answer keys of the course notebooks; instructor copies untouched.

The instructor notebooks in ``notebooks/`` are the single source, in nbgrader's form: every cell
carries nbgrader's metadata (``tools/nbgrader_metadata.py`` writes it; a notebook without it is
converted in memory first, see :mod:`involution_edu.nbgrader_metadata`). The solution regions are
nbgrader's, ``### BEGIN SOLUTION`` to ``### END SOLUTION``, and a student copy is what nbgrader's
``generate_assignment`` would release, cell for cell:

* a region in a function body (indented) becomes ``# YOUR CODE HERE`` plus
  ``raise NotImplementedError(...)`` with a generic message, indented like the BEGIN marker::

    def involution_loops(x, kernels):                  def involution_loops(x, kernels):
        # x: (B, C, H, W) ...                              # x: (B, C, H, W) ...
        ### BEGIN SOLUTION                                 # YOUR CODE HERE
        out = ...                            ->            raise NotImplementedError("...")
        ### END SOLUTION                               (the rest of the cell is kept)

* a region at the top level of a cell (a question's answer, ``answer_q1 = "c"``) becomes
  ``# YOUR ANSWER HERE`` and does not raise: the line above it sets ``answer_q1 = None``, so "Run
  All" runs on and ``check_answer`` prints "not answered yet" (nbgrader's own stub would raise
  there; :class:`involution_edu.nbgrader_plugin.CourseClearSolutions` is the course's fix);
* a region in a markdown or raw cell becomes ``*Write your answer here.*``;
* ``BEGIN HIDDEN TESTS`` / ``BEGIN MARK SCHEME`` regions are removed, markers included;
* outputs and execution counts are cleared, cells get nbgrader's lock flags (``deletable`` /
  ``editable``), no run-time keys are kept, and the notebook metadata keeps only the kernel spec,
  the language name and a mark saying it is a generated student copy.

Two engines do this and give the same copy (a test compares them cell for cell): ``nbgrader``,
nbgrader's own preprocessors (``LockCells``, ``ClearSolutions``, ``ClearOutput``,
``ClearHiddenTests``, ``ClearMarkScheme``), used when nbgrader is installed (the ``instructor``
extra); and ``builtin``, the same algorithm without the dependency, for self-learners.

Markers are matched the way nbgrader matches them: ``BEGIN SOLUTION`` (upper case) anywhere in a
line, so ``## BEGIN SOLUTION`` and ``###BEGIN SOLUTION`` are markers too. Before either engine
runs, every cell (code, markdown, raw) is checked and the notebook is refused, naming the notebook,
the cell and the line, when a region is unbalanced or nested, when a line holds two markers, or
when a line *looks* like a marker that nbgrader would not see (``### begin solution``,
``BEGIN  SOLUTION``, ``BEGIN_SOLUTION``, a leftover ``BEGIN ANSWER``): nbgrader would copy such a
region into the student version, solution and all.

The answer key (``--answer-key DIR``) is one Markdown file per notebook for instructors:
for each exercise its prompt (the markdown before it), the solution code, and its hints; for
each question its prompt, the answer, and, when the notebook's ``QUESTIONS`` entry can be
found, the explanation of the answer and of every wrong choice.

Safety, because a student copy written over an instructor notebook would lose the solutions:

* the output folder may not be the source folder or lie inside it (symlinks resolved); the
  answer key may not go into the source folder, the student folder, or inside either;
* a file in an output folder is overwritten only if this tool wrote it and it is unchanged
  since (its name and SHA-256 are in the manifest ``.student_copies.json``); anything else
  (a file of the instructor's, a copy the student has worked in) needs ``force=True``
  (``--force`` on the command line);
* nothing is ever deleted, and nothing is written through a symlink;
* every notebook and every answer key is made in memory and every target checked before the
  first file is written, so any refusal (a marker, a folder, a file) leaves everything untouched.

Output is deterministic: running it twice gives byte-identical files.

Command line (``make student``, ``make answer-key``)::

    python -m involution_edu.student SRC_DIR OUT_DIR [--answer-key KEY_DIR] [--force] [--engine auto|nbgrader|builtin]
    python -m involution_edu.student --init-course COURSE_DIR [--course-id ID] [--notebooks SRC_DIR] [--force]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import nbformat

from .nbgrader_metadata import ConversionError, _with_solution_markers, convert_notebook, read_notebook

__all__ = [
    "BEGIN_MARKER",
    "END_MARKER",
    "BEGIN_ANSWER_MARKER",
    "END_ANSWER_MARKER",
    "DELIMITERS",
    "HINT_PREFIX",
    "DEFAULT_HINT",
    "STUB_MESSAGE",
    "CODE_STUB_COMMENT",
    "CODE_STUB",
    "ANSWER_STUB",
    "MARKDOWN_STUB",
    "MANIFEST_NAME",
    "METADATA_KEY",
    "ENGINES",
    "SolutionMarkerError",
    "UnsafeOutputError",
    "StudentCopy",
    "nbgrader_available",
    "check_markers",
    "instructor_form",
    "strip_solutions",
    "make_student_notebook",
    "write_student_notebooks",
    "answer_key_markdown",
    "write_answer_key",
    "write_course_files",
    "nbgrader_config_text",
    "init_course",
    "main",
]

BEGIN_MARKER = "### BEGIN SOLUTION"
END_MARKER = "### END SOLUTION"
# The course's former question markers; tools/nbgrader_metadata.py renames them to BEGIN/END SOLUTION.
BEGIN_ANSWER_MARKER = "### BEGIN ANSWER"
END_ANSWER_MARKER = "### END ANSWER"
HINT_PREFIX = "# HINT:"
STUB_MESSAGE = "Write your solution in place of this line (see the exercise above)"
DEFAULT_HINT = STUB_MESSAGE  # the former name; hints are no longer written into the stub
CODE_STUB_COMMENT = "# YOUR CODE HERE"
CODE_STUB = f'{CODE_STUB_COMMENT}\nraise NotImplementedError("{STUB_MESSAGE}")'
ANSWER_STUB = "# YOUR ANSWER HERE"
MARKDOWN_STUB = "*Write your answer here.*"
MANIFEST_NAME = ".student_copies.json"
METADATA_KEY = "involution_edu"
GENERATOR = "involution_edu.student"
ENGINES = ("auto", "nbgrader", "builtin")

# nbgrader's delimiters (ClearSolutions, ClearHiddenTests, ClearMarkScheme), matched as substrings of a line.
DELIMITERS = {
    "solution": ("BEGIN SOLUTION", "END SOLUTION"),
    "hidden tests": ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS"),
    "mark scheme": ("BEGIN MARK SCHEME", "END MARK SCHEME"),
}
# What a marker that nbgrader would miss looks like: any case, any separator, ANSWER for SOLUTION.
_LOOKALIKE = re.compile(
    r"\b(?:begin|end)[\s_\-]*(?:solutions?|answers?|hidden[\s_\-]*tests?|mark[\s_\-]*schemes?)\b", re.I)
# Cell metadata keys written by a run of the notebook (timings, UI state), not by the author.
_RUNTIME_CELL_KEYS = ("execution", "ExecuteTime", "collapsed", "scrolled")


class SolutionMarkerError(ValueError):
    """A region is not closed, not opened, nested, or marked in a way nbgrader would not see."""


class UnsafeOutputError(RuntimeError):
    """Writing the files would overwrite or endanger files the tool did not generate."""


@dataclass(frozen=True)
class StudentCopy:
    """One generated file: where it comes from, where it goes, and what was removed."""

    source: Path
    target: Path
    solutions_removed: int
    text: str


def nbgrader_available() -> bool:
    """True when nbgrader (the ``instructor`` extra) can be imported."""
    try:
        importlib.import_module("nbgrader.preprocessors")
    except Exception:  # not installed, or broken: the builtin engine needs nothing
        return False
    return True


def _line_markers(line: str) -> List[Tuple[str, str]]:
    """``[(edge, kind), ...]`` of nbgrader's delimiters in one line (``edge`` is ``"begin"``/``"end"``)."""
    found = []
    for kind, (begin, end) in DELIMITERS.items():
        found += [("begin", kind)] * line.count(begin) + [("end", kind)] * line.count(end)
    return found


def _regions(source: str, where: str) -> List[Tuple[str, int, int, str]]:
    """``(kind, begin_line_index, end_line_index, indent)`` of every region; refuses doubtful markers."""
    regions = []
    open_at: Optional[Tuple[str, int, str]] = None
    for index, line in enumerate(source.split("\n")):
        here = f"{where}: line {index + 1} ({line.strip()[:60]!r})"
        markers = _line_markers(line)
        if len(_LOOKALIKE.findall(line)) > len(markers):
            raise SolutionMarkerError(
                f"{here} looks like a region marker but is not one nbgrader recognises, so its region would reach "
                f"the students; write the marker exactly as {BEGIN_MARKER!r} / {END_MARKER!r} (upper case, one space)")
        if len(markers) > 1:
            raise SolutionMarkerError(f"{here} holds {len(markers)} markers; put each marker on a line of its own")
        if not markers:
            continue
        edge, kind = markers[0]
        begin, end = DELIMITERS[kind]
        if edge == "begin":
            if open_at is not None:
                raise SolutionMarkerError(
                    f"{here} opens a region ({begin!r}) inside the one opened on line {open_at[1] + 1}; "
                    f"close it first with {DELIMITERS[open_at[0]][1]!r}")
            open_at = (kind, index, line[: len(line) - len(line.lstrip())])
        else:
            if open_at is None:
                raise SolutionMarkerError(f"{here} closes a region ({end!r}) that was never opened with {begin!r}")
            if open_at[0] != kind:
                raise SolutionMarkerError(
                    f"{here} ({end!r}) closes the region opened on line {open_at[1] + 1} with "
                    f"{DELIMITERS[open_at[0]][0]!r}; close it with {DELIMITERS[open_at[0]][1]!r}")
            regions.append((kind, open_at[1], index, open_at[2]))
            open_at = None
    if open_at is not None:
        raise SolutionMarkerError(
            f"{where}: the region opened on line {open_at[1] + 1} ({DELIMITERS[open_at[0]][0]!r}) is never closed "
            f"with {DELIMITERS[open_at[0]][1]!r}")
    return regions


def _where(name: str, index: int, cell: nbformat.NotebookNode) -> str:
    first_line = cell.source.strip().split("\n", 1)[0][:60]
    return f"{name}, cell {index} ({cell.cell_type}, starting {first_line!r})"


def _nbgrader_flags(cell: nbformat.NotebookNode) -> Dict[str, bool]:
    meta = cell.metadata.get("nbgrader", {})
    return {key: bool(meta.get(key, False)) for key in ("solution", "grade", "locked", "task")}


def check_markers(notebook: nbformat.NotebookNode, name: str = "notebook") -> int:
    """Check every cell's regions; return how many solution regions the notebook has.

    Raises:
        SolutionMarkerError: an unbalanced, nested or doubtful marker (see the module docstring),
            or a region in a cell whose nbgrader metadata does not allow it (a solution region
            outside a solution cell, hidden tests outside a grade cell, a mark scheme outside a
            task cell); the message names ``name``, the cell and the line.
    """
    count = 0
    for index, cell in enumerate(notebook.cells):
        where = _where(name, index, cell)
        flags = _nbgrader_flags(cell)
        for kind, begin, _, _ in _regions(cell.source, where):
            needs = {"solution": "solution", "hidden tests": "grade", "mark scheme": "task"}[kind]
            if not flags[needs]:
                raise SolutionMarkerError(
                    f"{where}: line {begin + 1} opens a {kind} region in a cell that is not an nbgrader {needs} cell; "
                    "run python tools/nbgrader_metadata.py on the notebook, or mark the cell in nbgrader's toolbar")
            count += kind == "solution"
    return count


def _strip_cell_source(source: str, cell_type: str, where: str, solution_cell: bool) -> Tuple[str, int]:
    """The builtin engine for one cell: nbgrader's ClearSolutions + ClearHiddenTests + ClearMarkScheme."""
    regions = _regions(source, where)
    lines = source.split("\n")
    kept: List[str] = []
    position = 0
    removed = 0
    for kind, begin, end, indent in regions:
        kept.extend(lines[position:begin])
        if kind == "solution":
            removed += 1
            if cell_type != "code":
                stub = MARKDOWN_STUB
            elif indent:
                stub = CODE_STUB
            else:
                stub = ANSWER_STUB
            kept.extend(indent + stub_line for stub_line in stub.split("\n"))
        position = end + 1
    kept.extend(lines[position:])
    if solution_cell and not any(kind == "solution" for kind, *_ in regions):
        # nbgrader replaces a solution cell without a region by the stub as a whole
        return (CODE_STUB if cell_type == "code" else MARKDOWN_STUB), 1
    return "\n".join(kept), removed


def strip_solutions(source: str, where: str = "cell", cell_type: str = "code") -> Tuple[str, int]:
    """Replace every solution region of one cell's source by its stub (the builtin engine).

    Args:
        source: the cell's source text (the former ``BEGIN/END ANSWER`` markers are read as
            ``BEGIN/END SOLUTION``, as :mod:`involution_edu.nbgrader_metadata` renames them).
        where: how to name the cell in an error, e.g. ``"02_loops.ipynb, cell 14"``.
        cell_type: ``"code"`` (an indented region becomes ``# YOUR CODE HERE`` and
            ``raise NotImplementedError("<generic message>")``, a top-level one ``# YOUR ANSWER HERE``)
            or ``"markdown"`` / ``"raw"`` (a region becomes ``*Write your answer here.*``).
            Hidden-test and mark-scheme regions are removed.

    Returns:
        ``(new_source, number_of_solution_regions_removed)``.

    Raises:
        SolutionMarkerError: an END without a BEGIN, a BEGIN inside a region, an END of the
            other kind, a BEGIN never closed, or a doubtful marker; the message names ``where`` and the line.
    """
    return _strip_cell_source(_with_solution_markers(source), cell_type, where, solution_cell=False)


def _lock(cell: nbformat.NotebookNode) -> None:
    """nbgrader's LockCells with its defaults."""
    flags = _nbgrader_flags(cell)
    if flags["solution"]:
        cell.metadata["deletable"] = False
    elif flags["grade"] or flags["locked"]:
        cell.metadata["deletable"] = False
        cell.metadata["editable"] = False


def _builtin_engine(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    for index, cell in enumerate(nb.cells):
        _lock(cell)
        cell.source, _ = _strip_cell_source(cell.source, cell.cell_type, _where(name, index, cell),
                                            _nbgrader_flags(cell)["solution"])
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def _nbgrader_engine(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    from .nbgrader_plugin import student_preprocessors

    resources: dict = {}
    for preprocessor in student_preprocessors():
        nb, resources = preprocessor.preprocess(nb, resources)
    return nb


def _clean_notebook_metadata(metadata: dict, source_name: str) -> dict:
    clean: Dict[str, object] = {}
    if "kernelspec" in metadata:
        clean["kernelspec"] = copy.deepcopy(metadata["kernelspec"])
    language = metadata.get("language_info", {}).get("name")
    if language:
        clean["language_info"] = {"name": language}
    clean[METADATA_KEY] = {"student_copy": True, "source": source_name, "generator": GENERATOR}
    return clean


def _resolve_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        return "nbgrader" if nbgrader_available() else "builtin"
    if engine == "nbgrader" and not nbgrader_available():
        raise ValueError("engine 'nbgrader' needs nbgrader: pip install -e \".[instructor]\"")
    return engine


def instructor_form(notebook: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The notebook in nbgrader form (converted in memory if it is not yet), its markers checked."""
    for index, cell in enumerate(notebook.cells):  # markers first: a cell is named as the author numbers it
        _regions(_with_solution_markers(cell.source), _where(name, index, cell))
    try:
        converted = convert_notebook(notebook, name).notebook
    except ConversionError as error:
        raise SolutionMarkerError(str(error)) from None
    check_markers(converted, name)
    return converted


def make_student_notebook(notebook: nbformat.NotebookNode, name: str = "notebook",
                          engine: str = "auto") -> Tuple[nbformat.NotebookNode, int]:
    """Return ``(student_copy, regions_removed)`` for an instructor notebook; the input is not modified.

    ``name`` (the file name) is used in error messages and recorded in the copy's metadata;
    ``engine`` is ``"nbgrader"``, ``"builtin"`` or ``"auto"`` (nbgrader when installed).
    """
    engine = _resolve_engine(engine)
    student = instructor_form(notebook, name)
    removed = check_markers(student, name)
    student = _nbgrader_engine(student, name) if engine == "nbgrader" else _builtin_engine(student, name)
    for cell in student.cells:
        for key in _RUNTIME_CELL_KEYS:
            cell.metadata.pop(key, None)
    student.metadata = nbformat.from_dict(_clean_notebook_metadata(student.metadata, name))
    return student, removed


# --------------------------------------------------------------------------- the answer key

_DETAILS = re.compile(r"<details>\s*<summary>(?P<summary>.*?)</summary>(?P<body>.*?)</details>", re.S | re.I)
_QUESTION_KEY = re.compile(r"""QUESTIONS\[\s*(?P<quote>['"])(?P<key>[^'"]+)(?P=quote)\s*\]""")
_QUESTIONS_IMPORT = re.compile(
    r"from\s+involution_edu\.exercises\.(?P<module>\w+)\s+import\s+(?:\([^)]*\bQUESTIONS\b[^)]*\)|[^\n(]*\bQUESTIONS\b)")


def _hints_in(markdown: str) -> List[Tuple[str, str]]:
    return [(m.group("summary").strip(), m.group("body").strip()) for m in _DETAILS.finditer(markdown)]


def _without_hints(markdown: str) -> str:
    return _DETAILS.sub("", markdown).strip()


def _demoted(markdown: str) -> str:
    """The prompt's headings two levels down, below the key's own ``##`` headings (not inside code fences)."""
    lines, fenced = [], False
    for line in markdown.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        lines.append("##" + line if not fenced and re.match(r"#{1,4}\s", line) else line)
    return "\n".join(lines)


def _region_text(source: str, begin: int, end: int) -> str:
    lines = source.split("\n")[begin + 1:end]
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(indents) if indents else 0
    return "\n".join(line[cut:] for line in lines).strip("\n")


def _without_markers(source: str) -> str:
    return "\n".join(line for line in source.split("\n") if not _line_markers(line))


def _fence(text: str, language: str = "") -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}{language}\n{text}\n{ticks}"


def _question_details(module_name: Optional[str], key: str) -> Optional[object]:
    """The ``Question`` named ``key`` in the notebook's exercises module, or ``None`` if not found."""
    if not module_name:
        return None
    try:
        module = importlib.import_module(f"involution_edu.exercises.{module_name}")
        return getattr(module, "QUESTIONS", {}).get(key)
    except Exception:  # a module being rewritten must not stop the key: the answer is still shown
        return None


def _format_question(question: object) -> List[str]:
    lines: List[str] = []
    choices = getattr(question, "choices", None) or {}
    answer = getattr(question, "answer", None)
    for key, text in choices.items():
        mark = "**(right)**" if key == answer else f"wrong: {getattr(question, 'wrong', {}).get(key, '')}"
        lines.append(f"- `{key}` {text} — {mark}")
    if not choices:
        lines.append(f"- answer: `{answer!r}` (relative tolerance {getattr(question, 'rtol', '?')})")
        for value, message in getattr(question, "mistakes", None) or []:
            lines.append(f"- likely mistake `{value!r}`: {message}")
    lines.append("")
    lines.append(f"Explanation: {getattr(question, 'explanation', '')}")
    return lines


def _previous_prompt(cells: List[nbformat.NotebookNode], index: int) -> str:
    """The nearest markdown cell above ``index`` that says more than hints, without its hints."""
    for j in range(index - 1, -1, -1):
        if cells[j].cell_type == "code":
            return ""
        text = _without_hints(cells[j].source)
        if text:
            return _demoted(text)
    return ""


def _hints_for(cells: List[nbformat.NotebookNode], index: int) -> List[Tuple[str, str]]:
    """Hint ``<details>`` blocks in the markdown right after the exercise, else right before it."""
    after: List[Tuple[str, str]] = []
    for j in range(index + 1, len(cells)):
        if cells[j].cell_type == "code":
            break
        after.extend(_hints_in(cells[j].source))
    if after:
        return after
    before: List[Tuple[str, str]] = []
    for j in range(index - 1, -1, -1):
        if cells[j].cell_type == "code":
            break
        before = _hints_in(cells[j].source) + before
    return before


def answer_key_markdown(notebook: nbformat.NotebookNode, name: str = "notebook") -> Tuple[str, int]:
    """``(markdown_text, items)``: the instructor's answer key of one notebook.

    For every exercise (a code cell with a solution region): the prompt (the markdown cell
    above it), the full cell with its solution, and the hints (``<details>`` blocks around it,
    and any ``# HINT:`` lines in the region). For every question (an answer region): the
    prompt, the answer, and the choices with their explanations when the notebook's
    ``QUESTIONS`` entry can be imported. Markdown answer regions are listed as written answers.
    """
    notebook = instructor_form(notebook, name)
    cells = notebook.cells
    title = next((line.lstrip("# ").strip() for cell in cells if cell.cell_type == "markdown"
                  for line in cell.source.split("\n") if line.startswith("# ")), name)
    all_code = "\n".join(cell.source for cell in cells if cell.cell_type == "code")
    found = _QUESTIONS_IMPORT.search(all_code)
    module_name = found.group("module") if found else None
    out: List[str] = [f"# Answer key: {name}", "", f"*{title}* — for instructors; do not hand this out.", ""]
    exercises = questions = written = 0
    for index, cell in enumerate(cells):
        regions = [r for r in _regions(cell.source, _where(name, index, cell)) if r[0] == "solution"]
        if not regions:
            continue
        prompt = _previous_prompt(cells, index)
        if cell.cell_type != "code":
            for kind, begin, end, _ in regions:
                written += 1
                asked = _without_hints("\n".join(cell.source.split("\n")[:begin])) or prompt
                out += [f"## Written answer {written} (cell {index})", "", "**Question**", "", asked, "",
                        "**Answer**", "", _region_text(cell.source, begin, end), ""]
            continue
        is_question = cell.metadata.get(METADATA_KEY, {}).get("role") == "question"
        solutions = [] if is_question else regions
        answers = regions if is_question else []
        checker = next((c for c in cells[index + 1:] if c.cell_type == "code"), None)
        key_source = cell.source + "\n" + (checker.source if checker is not None else "")
        if solutions:
            exercises += 1
            out += [f"## Exercise {exercises} (cell {index})", ""]
            if prompt:
                out += ["**Prompt**", "", prompt, ""]
            out += ["**Solution**", "", _fence(_without_markers(cell.source), "python"), ""]
            hints = _hints_for(cells, index)
            hint_lines = [line.strip()[len(HINT_PREFIX):].strip() for kind, begin, end, _ in solutions
                          for line in cell.source.split("\n")[begin + 1:end] if line.strip().startswith(HINT_PREFIX)]
            if hints or hint_lines:
                out += ["**Hints**", ""]
                out += [f"{number}. *{summary}* — {' '.join(body.split())}"
                        for number, (summary, body) in enumerate(hints, start=1)]
                out += [f"- (in the code) {line}" for line in hint_lines]
                out.append("")
        for kind, begin, end, _ in answers:
            questions += 1
            out += [f"## Question {questions} (cell {index})", ""]
            if prompt:
                out += ["**Prompt**", "", prompt, ""]
            out += ["**Answer**", "", _fence(_region_text(cell.source, begin, end), "python"), ""]
            keys = list(dict.fromkeys(m.group("key") for m in _QUESTION_KEY.finditer(key_source)))
            for key in keys:
                question = _question_details(module_name, key)
                if question is not None:
                    out += [f"`QUESTIONS[{key!r}]` in `involution_edu.exercises.{module_name}`:", ""]
                    out += _format_question(question)
                    out.append("")
    summary = f"{exercises} exercise(s), {questions} question(s)" + (f", {written} written answer(s)" if written else "")
    out.insert(4, summary)
    out.insert(5, "")
    text = "\n".join(out).rstrip("\n") + "\n"
    return text, exercises + questions + written


# --------------------------------------------------------------------------- writing safely


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _read_manifest(out_dir: Path) -> Dict[str, str]:
    """Files this tool wrote in ``out_dir`` and their SHA-256 when written; ``{}`` if none."""
    path = out_dir / MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UnsafeOutputError(f"{path} is not a manifest written by {GENERATOR} ({error}); move it away or use --force") from None
    if not isinstance(data, dict) or data.get("generator") != GENERATOR or not isinstance(data.get("files"), dict):
        raise UnsafeOutputError(f"{path} is not a manifest written by {GENERATOR}; move it away or use --force")
    return {str(k): str(v) for k, v in data["files"].items()}


def _was_generated_unchanged(target: Path, manifest: Dict[str, str]) -> bool:
    """True iff ``target`` is a file this tool wrote and nobody has edited since."""
    recorded = manifest.get(target.name)
    if recorded is None:
        return False
    try:
        data = target.read_bytes()
    except OSError:
        return False
    if _sha256(data) != recorded:
        return False
    if target.suffix != ".ipynb":
        return True
    try:
        metadata = json.loads(data.decode("utf-8")).get("metadata", {})
    except ValueError:
        return False
    return bool(metadata.get(METADATA_KEY, {}).get("student_copy"))


def _check_folders(src_dir: Path, out_dir: Path) -> Tuple[Path, Path]:
    if not src_dir.is_dir():
        raise FileNotFoundError(f"source folder {src_dir} does not exist or is not a folder")
    src = src_dir.resolve()
    out = out_dir.resolve()
    if out == src:
        raise UnsafeOutputError(
            f"output folder {out_dir} is the source folder {src_dir}: the student copies would overwrite "
            "the instructor notebooks; choose another folder, e.g. student_notebooks"
        )
    if _is_within(out, src):
        raise UnsafeOutputError(
            f"output folder {out_dir} lies inside the source folder {src_dir} (resolved: {out} in {src}); "
            "choose a folder outside it, e.g. student_notebooks"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise UnsafeOutputError(f"output path {out_dir} exists and is not a folder")
    return src, out


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a fresh temporary file in the same folder, then rename (replaces a link, never follows it)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _notebooks(src_dir: Path) -> List[Path]:
    sources = sorted(path for path in src_dir.glob("*.ipynb") if path.is_file())
    if not sources:
        raise FileNotFoundError(f"no *.ipynb notebooks in {src_dir}")
    return sources


@dataclass
class _Batch:
    """Files for one output folder, made in memory and checked, not yet written."""

    out_dir: Path
    copies: List[StudentCopy]
    manifest: Dict[str, str]


def _check_batch(src: Path, out_dir: Path, copies: List[StudentCopy], force: bool, what: str) -> _Batch:
    """Check that ``copies`` may be written into ``out_dir`` under the safety rules; writes nothing."""
    out = out_dir.resolve()
    try:
        manifest = _read_manifest(out_dir) if out_dir.is_dir() else {}
    except UnsafeOutputError:
        if not force:
            raise
        manifest = {}  # --force: a foreign manifest file is replaced by ours
    problems = []
    for item in copies:
        target = item.target
        resolved = target.resolve()
        if target.is_symlink() or _is_within(resolved, src) or resolved.parent != out:
            problems.append(f"{target} is a symlink or resolves outside the output folder ({resolved})")
        elif target.exists() and not force and not _was_generated_unchanged(target, manifest):
            problems.append(f"{target} exists and was not written by {GENERATOR} (or was edited since)")
    symlink_problems = [p for p in problems if "symlink" in p]
    if symlink_problems or (problems and not force):
        advice = "" if symlink_problems else "; rerun with --force to overwrite"
        raise UnsafeOutputError(f"refusing to write {what}:\n  " + "\n  ".join(problems) + advice)
    return _Batch(out_dir, copies, manifest)


def _commit(batch: _Batch) -> None:
    """Write a checked batch, then its manifest."""
    batch.out_dir.mkdir(parents=True, exist_ok=True)
    for item in batch.copies:
        data = item.text.encode("utf-8")
        _atomic_write(item.target, data)
        batch.manifest[item.target.name] = _sha256(data)
    manifest_text = json.dumps({"generator": GENERATOR, "files": dict(sorted(batch.manifest.items()))},
                               indent=1, sort_keys=True) + "\n"
    _atomic_write(batch.out_dir / MANIFEST_NAME, manifest_text.encode("utf-8"))


def _student_copies(src_dir: Path, out_dir: Path, engine: str) -> List[StudentCopy]:
    copies: List[StudentCopy] = []
    for path in _notebooks(src_dir):
        notebook = read_notebook(path)
        student, removed = make_student_notebook(notebook, path.name, engine=engine)
        nbformat.validate(student)
        text = nbformat.writes(student)
        if not text.endswith("\n"):
            text += "\n"
        copies.append(StudentCopy(path, out_dir / path.name, removed, text))
    return copies


def _answer_keys(src_dir: Path, key_dir: Path) -> List[StudentCopy]:
    keys: List[StudentCopy] = []
    for path in _notebooks(src_dir):
        notebook = read_notebook(path)
        text, items = answer_key_markdown(notebook, path.name)
        keys.append(StudentCopy(path, key_dir / f"{path.stem}.md", items, text))
    return keys


def _check_key_folder(key_dir: Path, student_dir: Optional[Path]) -> None:
    if student_dir is None:
        return
    key, students = key_dir.resolve(), Path(student_dir).resolve()
    if key == students or _is_within(key, students) or _is_within(students, key):
        raise UnsafeOutputError(
            f"answer-key folder {key_dir} and student folder {student_dir} overlap: the answers would reach "
            "the students; choose a separate folder, e.g. answer_key")


def write_course_files(src_dir: os.PathLike, out_dir: Optional[os.PathLike], key_dir: Optional[os.PathLike] = None,
                       force: bool = False, engine: str = "auto") -> Tuple[List[StudentCopy], List[StudentCopy]]:
    """Write the student copies (into ``out_dir``) and the answer key (into ``key_dir``), all or nothing.

    Every notebook is read, converted, checked and stripped, every answer key made, and every folder
    and target checked, before the first file is written: any refusal writes nothing at all.
    Returns ``(student_copies, answer_keys)``.
    """
    src_dir = Path(src_dir)
    out = Path(out_dir) if out_dir is not None else None
    key = Path(key_dir) if key_dir is not None else None
    engine = _resolve_engine(engine)
    batches: List[_Batch] = []
    copies: List[StudentCopy] = []
    keys: List[StudentCopy] = []
    if out is not None:
        src, _ = _check_folders(src_dir, out)
    if key is not None:
        src, _ = _check_folders(src_dir, key)
        _check_key_folder(key, out)
    if out is not None:
        copies = _student_copies(src_dir, out, engine)
        batches.append(_check_batch(src, out, copies, force, "student copies"))
    if key is not None:
        keys = _answer_keys(src_dir, key)
        batches.append(_check_batch(src, key, keys, force, "the answer key"))
    for batch in batches:
        _commit(batch)
    return copies, keys


def write_student_notebooks(src_dir: os.PathLike, out_dir: os.PathLike, force: bool = False,
                            engine: str = "auto") -> List[StudentCopy]:
    """Write a student copy of every ``*.ipynb`` in ``src_dir`` into ``out_dir``.

    Args:
        src_dir: folder of instructor notebooks (not searched recursively).
        out_dir: folder for the student copies; created if missing. Must not be ``src_dir``
            or lie inside it.
        force: overwrite files in ``out_dir`` that this tool did not write (or that were
            edited since). Never allows writing into ``src_dir``.
        engine: ``"nbgrader"`` (nbgrader's preprocessors), ``"builtin"`` (no dependency) or
            ``"auto"`` (nbgrader when installed); both give the same copies.

    Returns:
        The copies written, sorted by file name.

    Raises:
        FileNotFoundError: ``src_dir`` missing or without notebooks.
        UnsafeOutputError: a refused output folder or file (nothing written).
        SolutionMarkerError: unbalanced or doubtful markers in some notebook (nothing written).
    """
    return write_course_files(src_dir, out_dir, None, force=force, engine=engine)[0]


def write_answer_key(src_dir: os.PathLike, key_dir: os.PathLike, force: bool = False,
                     student_dir: Optional[os.PathLike] = None) -> List[StudentCopy]:
    """Write ``NN_name.md``, the answer key of every notebook in ``src_dir``, into ``key_dir``.

    The same safety rules as :func:`write_student_notebooks`; in addition ``key_dir`` may not
    be ``student_dir`` (when given) or lie inside it, so the answers never reach students.
    Returns the files written (``solutions_removed`` counts the exercises and questions).
    """
    src_dir, key_dir = Path(src_dir), Path(key_dir)
    src, _ = _check_folders(src_dir, key_dir)
    _check_key_folder(key_dir, Path(student_dir) if student_dir is not None else None)
    keys = _answer_keys(src_dir, key_dir)
    _commit(_check_batch(src, key_dir, keys, force, "the answer key"))
    return keys


# --------------------------------------------------------------------------- an nbgrader course

NBGRADER_CONFIG_TEMPLATE = '''\
# nbgrader configuration of an involution_edu course; written by
#     python -m involution_edu.student --init-course {course_dir}
# Run every nbgrader command from this folder (the course root). Needs: pip install "involution_edu[instructor]"
# in the environment where nbgrader runs, and involution_edu in the kernel that autogrades.
from involution_edu.nbgrader_plugin import generate_assignment_preprocessors

c = get_config()  # noqa: F821  (nbgrader provides it)

c.CourseDirectory.course_id = {course_id!r}
# c.CourseDirectory.db_url = "sqlite:///gradebook.db"   # the default, in this folder

# Release: nbgrader's own chain, except that ClearSolutions is the course's CourseClearSolutions
# (involution_edu/nbgrader_plugin.py): a region inside a function body becomes the raising stub
# below, a region at the top level of a cell (a question's answer_qN = ...) becomes
# "# YOUR ANSWER HERE", which does not raise, so "Run All" in a student copy runs to the end.
c.GenerateAssignment.preprocessors = generate_assignment_preprocessors()
c.ClearSolutions.code_stub = {{"python": {code_stub!r}}}
c.CourseClearSolutions.top_level_code_stub = {{"python": {answer_stub!r}}}
c.ClearSolutions.text_stub = {text_stub!r}

# Autograde and validate: a checker cell loses its points when its verdict is a fail (the checkers
# raise AssertionError after printing when nbgrader sets NBGRADER_EXECUTION). Each checker has its
# own time limits (INVOLUTION_EDU_TOTAL_TIME_LIMIT, 30 s by default); training cells need more than
# nbgrader's default of 30 s per cell.
c.Execute.timeout = 600
'''


def nbgrader_config_text(course_id: str = "involution_edu", course_dir: str = "COURSE_DIR") -> str:
    """The ``nbgrader_config.py`` of a course (see :data:`NBGRADER_CONFIG_TEMPLATE`)."""
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", course_id):
        raise ValueError(f"course_id must be letters, digits, '_' or '-', got {course_id!r}")
    return NBGRADER_CONFIG_TEMPLATE.format(course_dir=course_dir, course_id=course_id, code_stub=CODE_STUB,
                                           answer_stub=ANSWER_STUB, text_stub=MARKDOWN_STUB)


def init_course(course_dir: os.PathLike, src_dir: os.PathLike = "notebooks", course_id: str = "involution_edu",
                force: bool = False) -> List[Path]:
    """Create an nbgrader course folder: ``nbgrader_config.py`` and one assignment per notebook.

    ``COURSE_DIR/source/<NN_name>/<NN_name>.ipynb`` is the instructor notebook in nbgrader form
    (converted in memory if needed, markers checked). Refuses, writing nothing, when the course
    folder lies inside ``src_dir`` or a file to write exists (unless ``force``). Returns the files written.
    """
    course, src_dir = Path(course_dir), Path(src_dir)
    src, root = _check_folders(src_dir, course)
    files: List[Tuple[Path, str]] = [(course / "nbgrader_config.py", nbgrader_config_text(course_id, str(course_dir)))]
    for path in _notebooks(src_dir):
        notebook = instructor_form(read_notebook(path), path.name)
        text = nbformat.writes(notebook)
        files.append((course / "source" / path.stem / path.name, text if text.endswith("\n") else text + "\n"))
    existing = [str(target) for target, _ in files if target.exists() or target.is_symlink()]
    if existing and not force:
        raise UnsafeOutputError("refusing to overwrite (rerun with --force):\n  " + "\n  ".join(existing))
    links = [str(target) for target, _ in files if target.is_symlink()]
    if links:
        raise UnsafeOutputError("refusing to write through a symlink:\n  " + "\n  ".join(links))
    for target, text in files:
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(target, text.encode("utf-8"))
    return [target for target, _ in files]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line, see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m involution_edu.student",
        description="Write student copies of the course notebooks (solutions replaced by stubs, outputs cleared) "
                    "and, optionally, an instructor answer key; or create an nbgrader course folder.",
    )
    parser.add_argument("src_dir", nargs="?", help="folder of instructor notebooks, e.g. notebooks")
    parser.add_argument("out_dir", nargs="?",
                        help="folder for the student copies, e.g. student_notebooks (not inside src_dir)")
    parser.add_argument("--answer-key", metavar="KEY_DIR", default=None,
                        help="also write one Markdown answer key per notebook into KEY_DIR, e.g. answer_key "
                             "(not inside src_dir or out_dir)")
    parser.add_argument("--force", action="store_true", help="overwrite files in OUT_DIR that this tool did not write")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="nbgrader's preprocessors, the builtin copy of them, or nbgrader when installed (default)")
    parser.add_argument("--init-course", metavar="COURSE_DIR", default=None,
                        help="create an nbgrader course folder: nbgrader_config.py and source/<notebook>/ per notebook")
    parser.add_argument("--course-id", default="involution_edu", help="the nbgrader course id (with --init-course)")
    parser.add_argument("--notebooks", default="notebooks", help="instructor notebooks for --init-course")
    args = parser.parse_args(argv)
    try:
        if args.init_course is not None:
            if args.src_dir or args.out_dir:
                parser.error("--init-course takes no SRC_DIR/OUT_DIR (use --notebooks SRC_DIR)")
            written = init_course(args.init_course, args.notebooks, args.course_id, force=args.force)
            for path in written:
                print(f"wrote {path}")
            print(f"nbgrader course in {args.init_course}: cd {args.init_course} && nbgrader generate_assignment "
                  f"{written[1].parent.name if len(written) > 1 else 'ASSIGNMENT'}")
            return 0
        if not args.src_dir or not args.out_dir:
            parser.error("SRC_DIR and OUT_DIR are required (or --init-course COURSE_DIR)")
        copies, keys = write_course_files(args.src_dir, args.out_dir, args.answer_key, force=args.force,
                                          engine=args.engine)
    except (SolutionMarkerError, UnsafeOutputError, FileNotFoundError, ValueError) as error:
        print(f"error: {error} (nothing written)", file=sys.stderr)
        return 1
    for student_copy in copies:
        plural = "" if student_copy.solutions_removed == 1 else "s"
        print(f"wrote {student_copy.target}  ({student_copy.solutions_removed} solution{plural} removed)")
    print(f"{len(copies)} student notebook(s) in {args.out_dir}; manifest {Path(args.out_dir) / MANIFEST_NAME}")
    for key in keys:
        print(f"wrote {key.target}  ({key.solutions_removed} exercises and questions)")
    if keys:
        print(f"{len(keys)} answer key(s) in {args.answer_key} (for instructors; do not hand out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
