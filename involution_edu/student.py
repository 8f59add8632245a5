"""Student copies and instructor answer keys of the course notebooks; instructor copies untouched.

The instructor notebooks in ``notebooks/`` are the single source. Two kinds of regions are
marked in them:

* an exercise, in a code cell, from ``### BEGIN SOLUTION`` to ``### END SOLUTION``
  inclusive, becomes ``# YOUR CODE HERE`` plus ``raise NotImplementedError(...)`` with a
  generic message, indented like the BEGIN marker::

    def involution_loops(x, kernels):                  def involution_loops(x, kernels):
        # x: (B, C, H, W) ...                              # x: (B, C, H, W) ...
        ### BEGIN SOLUTION                                 # YOUR CODE HERE
        out = ...                            ->            raise NotImplementedError("...")
        ### END SOLUTION                               (the rest of the cell is kept)

  Any ``# HINT:`` comment inside the region goes with it: hints live in collapsed
  ``<details>`` blocks of the markdown cells, which are copied as they are;
* an answer to a question, in a code cell, from ``### BEGIN ANSWER`` to ``### END ANSWER``,
  becomes ``# YOUR ANSWER HERE`` (no raise: the line above the region sets ``answer_q1 = None``,
  so the copy runs on and ``check_answer`` prints "not answered yet").

Either region in a markdown cell becomes an "answer here" line. All outputs and execution
counts are cleared, cell metadata keeps no run-time keys, and the notebook metadata keeps
only the kernel spec, the language name and a mark saying it is a generated student copy.

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
* every notebook is transformed in memory before the first file is written, so a notebook
  with unbalanced markers stops the run with nothing written.

Output is deterministic: running it twice gives byte-identical files.

Command line (``make student``)::

    python -m involution_edu.student SRC_DIR OUT_DIR [--answer-key KEY_DIR] [--force]
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

__all__ = [
    "BEGIN_MARKER",
    "END_MARKER",
    "BEGIN_ANSWER_MARKER",
    "END_ANSWER_MARKER",
    "HINT_PREFIX",
    "DEFAULT_HINT",
    "STUB_MESSAGE",
    "CODE_STUB_COMMENT",
    "ANSWER_STUB",
    "MANIFEST_NAME",
    "METADATA_KEY",
    "SolutionMarkerError",
    "UnsafeOutputError",
    "StudentCopy",
    "strip_solutions",
    "make_student_notebook",
    "write_student_notebooks",
    "answer_key_markdown",
    "write_answer_key",
    "main",
]

BEGIN_MARKER = "### BEGIN SOLUTION"
END_MARKER = "### END SOLUTION"
BEGIN_ANSWER_MARKER = "### BEGIN ANSWER"
END_ANSWER_MARKER = "### END ANSWER"
HINT_PREFIX = "# HINT:"
STUB_MESSAGE = "Write your solution in place of this line (see the exercise above)"
DEFAULT_HINT = STUB_MESSAGE  # the former name; hints are no longer written into the stub
CODE_STUB_COMMENT = "# YOUR CODE HERE"
ANSWER_STUB = "# YOUR ANSWER HERE"
MARKDOWN_STUB = "*Write your answer here.*"
MANIFEST_NAME = ".student_copies.json"
METADATA_KEY = "involution_edu"
GENERATOR = "involution_edu.student"

# Cell metadata keys written by a run of the notebook (timings, UI state), not by the author.
_RUNTIME_CELL_KEYS = ("execution", "ExecuteTime", "collapsed", "scrolled")
_MARKERS = {
    BEGIN_MARKER: ("begin", "solution"),
    END_MARKER: ("end", "solution"),
    BEGIN_ANSWER_MARKER: ("begin", "answer"),
    END_ANSWER_MARKER: ("end", "answer"),
}


class SolutionMarkerError(ValueError):
    """A solution or answer region is not closed, not opened, nested, or closed by the other kind."""


class UnsafeOutputError(RuntimeError):
    """Writing the student copies would overwrite or endanger files the tool did not generate."""


@dataclass(frozen=True)
class StudentCopy:
    """One generated file: where it comes from, where it goes, and what was removed."""

    source: Path
    target: Path
    solutions_removed: int
    text: str


def _stub_literal(message: str) -> str:
    """A double-quoted Python string literal for ``message``."""
    escaped = message.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _marker(line: str) -> Optional[Tuple[str, str]]:
    """``("begin"|"end", "solution"|"answer")`` for a marker line, else ``None``."""
    stripped = line.strip()
    for text, kind in _MARKERS.items():
        if stripped.startswith(text):
            return kind
    return None


def _marker_text(edge: str, kind: str) -> str:
    return {("begin", "solution"): BEGIN_MARKER, ("end", "solution"): END_MARKER,
            ("begin", "answer"): BEGIN_ANSWER_MARKER, ("end", "answer"): END_ANSWER_MARKER}[(edge, kind)]


def _regions(source: str, where: str) -> List[Tuple[str, int, int, str]]:
    """``(kind, begin_line_index, end_line_index, indent)`` of every region; checks the markers."""
    regions = []
    open_at: Optional[Tuple[str, int, str]] = None
    for index, line in enumerate(source.split("\n")):
        marker = _marker(line)
        if marker is None:
            continue
        edge, kind = marker
        if edge == "begin":
            if open_at is not None:
                raise SolutionMarkerError(
                    f"{where}: line {index + 1} opens a region ({_marker_text('begin', kind)!r}) inside the one "
                    f"opened on line {open_at[1] + 1}; close it first with {_marker_text('end', open_at[0])!r}"
                )
            open_at = (kind, index, line[: len(line) - len(line.lstrip())])
        else:
            if open_at is None:
                raise SolutionMarkerError(
                    f"{where}: line {index + 1} closes a region ({_marker_text('end', kind)!r}) that was never "
                    f"opened with {_marker_text('begin', kind)!r}"
                )
            if open_at[0] != kind:
                raise SolutionMarkerError(
                    f"{where}: line {index + 1} ({_marker_text('end', kind)!r}) closes the region opened on line "
                    f"{open_at[1] + 1} with {_marker_text('begin', open_at[0])!r}; close it with "
                    f"{_marker_text('end', open_at[0])!r}"
                )
            regions.append((kind, open_at[1], index, open_at[2]))
            open_at = None
    if open_at is not None:
        raise SolutionMarkerError(
            f"{where}: the region opened on line {open_at[1] + 1} ({_marker_text('begin', open_at[0])!r}) is never "
            f"closed with {_marker_text('end', open_at[0])!r}"
        )
    return regions


def strip_solutions(source: str, where: str = "cell", cell_type: str = "code") -> Tuple[str, int]:
    """Replace every solution and answer region of one cell's source by its stub.

    Args:
        source: the cell's source text.
        where: how to name the cell in an error, e.g. ``"02_loops.ipynb, cell 14"``.
        cell_type: ``"code"`` (a solution becomes ``# YOUR CODE HERE`` and
            ``raise NotImplementedError("<generic message>")``, an answer becomes
            ``# YOUR ANSWER HERE``) or ``"markdown"`` (either becomes ``*Write your answer here.*``).

    Returns:
        ``(new_source, number_of_regions_removed)``.

    Raises:
        SolutionMarkerError: an END without a BEGIN, a BEGIN inside a region, an END of the
            other kind, or a BEGIN never closed; the message names ``where`` and the line.
    """
    regions = _regions(source, where)
    lines = source.split("\n")
    kept: List[str] = []
    position = 0
    for kind, begin, end, indent in regions:
        kept.extend(lines[position:begin])
        if cell_type != "code":
            kept.append(f"{indent}{MARKDOWN_STUB}")
        elif kind == "solution":
            kept.append(f"{indent}{CODE_STUB_COMMENT}")
            kept.append(f"{indent}raise NotImplementedError({_stub_literal(STUB_MESSAGE)})")
        else:
            kept.append(f"{indent}{ANSWER_STUB}")
        position = end + 1
    kept.extend(lines[position:])
    return "\n".join(kept), len(regions)


def _clean_notebook_metadata(metadata: dict, source_name: str) -> dict:
    clean: Dict[str, object] = {}
    if "kernelspec" in metadata:
        clean["kernelspec"] = copy.deepcopy(metadata["kernelspec"])
    language = metadata.get("language_info", {}).get("name")
    if language:
        clean["language_info"] = {"name": language}
    clean[METADATA_KEY] = {"student_copy": True, "source": source_name, "generator": GENERATOR}
    return clean


def _where(name: str, index: int, cell: nbformat.NotebookNode) -> str:
    first_line = cell.source.strip().split("\n", 1)[0][:60]
    return f"{name}, cell {index} ({cell.cell_type}, starting {first_line!r})"


def make_student_notebook(notebook: nbformat.NotebookNode, name: str = "notebook") -> Tuple[nbformat.NotebookNode, int]:
    """Return ``(student_copy, regions_removed)`` for an instructor notebook; the input is not modified.

    ``name`` (the file name) is used in error messages and recorded in the copy's metadata.
    """
    student = copy.deepcopy(notebook)
    removed = 0
    for index, cell in enumerate(student.cells):
        if cell.cell_type in ("code", "markdown"):
            cell.source, count = strip_solutions(cell.source, _where(name, index, cell), cell.cell_type)
            removed += count
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
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
    return "\n".join(line for line in source.split("\n") if _marker(line) is None)


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
    cells = notebook.cells
    title = next((line.lstrip("# ").strip() for cell in cells if cell.cell_type == "markdown"
                  for line in cell.source.split("\n") if line.startswith("# ")), name)
    all_code = "\n".join(cell.source for cell in cells if cell.cell_type == "code")
    found = _QUESTIONS_IMPORT.search(all_code)
    module_name = found.group("module") if found else None
    out: List[str] = [f"# Answer key: {name}", "", f"*{title}* — for instructors; do not hand this out.", ""]
    exercises = questions = written = 0
    for index, cell in enumerate(cells):
        if cell.cell_type not in ("code", "markdown"):
            continue
        regions = _regions(cell.source, _where(name, index, cell))
        if not regions:
            continue
        prompt = _previous_prompt(cells, index)
        if cell.cell_type == "markdown":
            for kind, begin, end, _ in regions:
                written += 1
                asked = _without_hints("\n".join(cell.source.split("\n")[:begin])) or prompt
                out += [f"## Written answer {written} (cell {index})", "", "**Question**", "", asked, "",
                        "**Answer**", "", _region_text(cell.source, begin, end), ""]
            continue
        solutions = [r for r in regions if r[0] == "solution"]
        answers = [r for r in regions if r[0] == "answer"]
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
            keys = [m.group("key") for m in _QUESTION_KEY.finditer(cell.source)]
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


def _write_files(src: Path, out_dir: Path, copies: List[StudentCopy], force: bool, what: str) -> None:
    """Write ``copies`` into ``out_dir`` under the safety rules, then the manifest; all or nothing refused."""
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

    out_dir.mkdir(parents=True, exist_ok=True)
    for item in copies:
        data = item.text.encode("utf-8")
        _atomic_write(item.target, data)
        manifest[item.target.name] = _sha256(data)
    manifest_text = json.dumps({"generator": GENERATOR, "files": dict(sorted(manifest.items()))}, indent=1, sort_keys=True) + "\n"
    _atomic_write(out_dir / MANIFEST_NAME, manifest_text.encode("utf-8"))


def write_student_notebooks(src_dir: os.PathLike, out_dir: os.PathLike, force: bool = False) -> List[StudentCopy]:
    """Write a student copy of every ``*.ipynb`` in ``src_dir`` into ``out_dir``.

    Args:
        src_dir: folder of instructor notebooks (not searched recursively).
        out_dir: folder for the student copies; created if missing. Must not be ``src_dir``
            or lie inside it.
        force: overwrite files in ``out_dir`` that this tool did not write (or that were
            edited since). Never allows writing into ``src_dir``.

    Returns:
        The copies written, sorted by file name.

    Raises:
        FileNotFoundError: ``src_dir`` missing or without notebooks.
        UnsafeOutputError: a refused output folder or file (nothing written).
        SolutionMarkerError: unbalanced markers in some notebook (nothing written).
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    src, _ = _check_folders(src_dir, out_dir)
    copies: List[StudentCopy] = []
    for path in _notebooks(src_dir):
        notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        student, removed = make_student_notebook(notebook, path.name)
        nbformat.validate(student)
        text = nbformat.writes(student)
        if not text.endswith("\n"):
            text += "\n"
        copies.append(StudentCopy(path, out_dir / path.name, removed, text))
    _write_files(src, out_dir, copies, force, "student copies")
    return copies


def write_answer_key(src_dir: os.PathLike, key_dir: os.PathLike, force: bool = False,
                     student_dir: Optional[os.PathLike] = None) -> List[StudentCopy]:
    """Write ``NN_name.md``, the answer key of every notebook in ``src_dir``, into ``key_dir``.

    The same safety rules as :func:`write_student_notebooks`; in addition ``key_dir`` may not
    be ``student_dir`` (when given) or lie inside it, so the answers never reach students.
    Returns the files written (``solutions_removed`` counts the exercises and questions).
    """
    src_dir, key_dir = Path(src_dir), Path(key_dir)
    src, key = _check_folders(src_dir, key_dir)
    if student_dir is not None:
        students = Path(student_dir).resolve()
        if key == students or _is_within(key, students) or _is_within(students, key):
            raise UnsafeOutputError(
                f"answer-key folder {key_dir} and student folder {student_dir} overlap: the answers would reach "
                "the students; choose a separate folder, e.g. answer_key"
            )
    keys: List[StudentCopy] = []
    for path in _notebooks(src_dir):
        notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        text, items = answer_key_markdown(notebook, path.name)
        keys.append(StudentCopy(path, key_dir / f"{path.stem}.md", items, text))
    _write_files(src, key_dir, keys, force, "the answer key")
    return keys


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: ``python -m involution_edu.student SRC_DIR OUT_DIR [--answer-key DIR] [--force]``."""
    parser = argparse.ArgumentParser(
        prog="python -m involution_edu.student",
        description="Write student copies of the course notebooks (solutions replaced by stubs, outputs cleared) "
                    "and, optionally, an instructor answer key.",
    )
    parser.add_argument("src_dir", help="folder of instructor notebooks, e.g. notebooks")
    parser.add_argument("out_dir", help="folder for the student copies, e.g. student_notebooks (not inside src_dir)")
    parser.add_argument("--answer-key", metavar="KEY_DIR", default=None,
                        help="also write one Markdown answer key per notebook into KEY_DIR, e.g. answer_key "
                             "(not inside src_dir or out_dir)")
    parser.add_argument("--force", action="store_true", help="overwrite files in OUT_DIR that this tool did not write")
    args = parser.parse_args(argv)
    try:
        if args.answer_key is not None:  # check before writing anything: a refusal writes nothing
            students, key = Path(args.out_dir).resolve(), Path(args.answer_key).resolve()
            if key == students or _is_within(key, students) or _is_within(students, key):
                raise UnsafeOutputError(
                    f"answer-key folder {args.answer_key} and student folder {args.out_dir} overlap: the answers "
                    "would reach the students; choose a separate folder, e.g. answer_key"
                )
            for path in _notebooks(Path(args.src_dir)) if Path(args.src_dir).is_dir() else []:
                answer_key_markdown(nbformat.read(path, as_version=nbformat.NO_CONVERT), path.name)
        copies = write_student_notebooks(args.src_dir, args.out_dir, force=args.force)
        keys = (write_answer_key(args.src_dir, args.answer_key, force=args.force, student_dir=args.out_dir)
                if args.answer_key is not None else [])
    except (SolutionMarkerError, UnsafeOutputError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
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
