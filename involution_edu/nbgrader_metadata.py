"""Give the course notebooks nbgrader's cell metadata (schema version 3), deterministically.

    python tools/nbgrader_metadata.py [notebooks/NN_name.ipynb ...] [--check]

The notebooks are written with the course's markup (see the contributor rules in the README):

* an **exercise** is a markdown prompt with a difficulty mark (★, ★★ or ★★★), a code cell whose
  solution sits between ``### BEGIN SOLUTION`` / ``### END SOLUTION``, and a separate checker
  cell ``check_xxx(...)``;
* a **question** is a code cell ``answer_qN = None  # ...``, the answer between
  ``### BEGIN ANSWER`` / ``### END ANSWER`` (or, once converted, ``BEGIN/END SOLUTION``), and
  ``check_answer(QUESTIONS["key"], answer_qN)``.

This tool turns that markup into what nbgrader needs:

* a question cell that holds both the answer and its ``check_answer`` call (and any code cell whose
  solution region is followed by a top-level ``check_*`` call) is split in two: the answer cell
  keeps the cell's ``id`` and everything up to the last END marker; the checker cell (``id``
  ``<id>-check``) gets the rest and the cell's outputs;
* ``BEGIN ANSWER`` / ``END ANSWER`` become nbgrader's ``BEGIN SOLUTION`` / ``END SOLUTION``;
* every cell gets ``metadata.nbgrader`` with exactly nbgrader's v3 keys:

  ===================================  =====  ========  ======  ===================================
  cell                                 grade  solution  locked  grade_id / points
  ===================================  =====  ========  ======  ===================================
  exercise solution (code)             no     yes       no      ``ex_<checker without check_>``
  question answer (code)               no     yes       no      ``q_<question key>``
  checker (top-level ``check_*(...)``)  yes    no        yes     ``check_<name>`` (``check_q_<key>``
                                                                for ``check_answer``); points: the
                                                                exercise's stars, 1 for a question
  written answer (markdown region)     yes    yes       no      ``written_<cell id>``, points 1
  raw cell with a region               no     yes       no      ``raw_<cell id>``
  any other cell (teaching)            no     no        yes     ``cell-<cell id>``
  ===================================  =====  ========  ======  ===================================

  Our own metadata (the cell's role, the stars) goes under ``metadata.involution_edu``.

Every ``grade_id`` is derived from something that does not change when a cell's text is edited:
the checker's name, the question's key, or the cell's nbformat ``id`` (a cell without one, or with another cell's, is given
``<notebook stem>-<index>`` once, stored, and kept from then on). Running the tool again on its own
output changes nothing (it is idempotent); outputs are kept, except that a split cell's outputs
move to its checker cell (re-execute the notebook after a split to refresh execution counts).

Nothing is written when any notebook is refused: an exercise without a difficulty mark, a checker
with no exercise above it, a region in a checker cell, unbalanced markers.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import nbformat

__all__ = [
    "SCHEMA_VERSION",
    "METADATA_KEY",
    "ConversionError",
    "Conversion",
    "convert_notebook",
    "convert_files",
    "read_notebook",
    "reads_notebook",
    "main",
]

SCHEMA_VERSION = 3
METADATA_KEY = "involution_edu"

_BEGIN_ANSWER = re.compile(r"BEGIN ANSWER")
_END_ANSWER = re.compile(r"END ANSWER")
_STARS = re.compile(r"★+")
_QUESTION_KEY = re.compile(r"""QUESTIONS\[\s*(?P<quote>['"])(?P<key>[^'"]+)(?P=quote)\s*\]""")
_ID_CHARS = re.compile(r"[^a-zA-Z0-9_\-]")


class ConversionError(ValueError):
    """A notebook the tool cannot convert; the message names the notebook and the cell."""


@dataclass
class Conversion:
    """What :func:`convert_notebook` did to one notebook."""

    name: str
    notebook: nbformat.NotebookNode
    split: List[str] = field(default_factory=list)  # ids of the cells that were split
    roles: Dict[str, int] = field(default_factory=dict)  # role -> number of cells
    points: float = 0.0


def _where(name: str, index: int, cell: nbformat.NotebookNode) -> str:
    first_line = cell.source.strip().split("\n", 1)[0][:60]
    return f"{name}, cell {index} ({cell.cell_type}, id {cell.get('id', '?')!r}, starting {first_line!r})"


def _with_solution_markers(source: str) -> str:
    """``BEGIN ANSWER`` / ``END ANSWER`` markers renamed to nbgrader's ``BEGIN SOLUTION`` / ``END SOLUTION``."""
    return _END_ANSWER.sub("END SOLUTION", _BEGIN_ANSWER.sub("BEGIN SOLUTION", source))


def _has_region(source: str) -> bool:
    return "BEGIN SOLUTION" in source


def _code_without_magics(source: str) -> str:
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n"))


def _top_level_checks(source: str) -> List[ast.Call]:
    """The ``check_*(...)`` calls that are statements of the cell (bare, assigned, or asserted)."""
    try:
        tree = ast.parse(_code_without_magics(source))
    except SyntaxError:
        return []
    calls = []
    for statement in tree.body:
        value = None
        if isinstance(statement, (ast.Expr, ast.Assign, ast.AnnAssign)):
            value = statement.value
        elif isinstance(statement, ast.Assert):
            value = statement.test
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id.startswith("check_"):
            calls.append(value)
    return calls


def _split_at_last_end(source: str) -> Optional[Tuple[str, str]]:
    """``(answer_part, checker_part)`` when top-level ``check_*`` code follows the last END marker."""
    lines = source.split("\n")
    ends = [i for i, line in enumerate(lines) if "END SOLUTION" in line]
    if not ends:
        return None
    head, tail = lines[: ends[-1] + 1], lines[ends[-1] + 1:]
    tail_text = "\n".join(tail).strip("\n")
    if not tail_text.strip() or not _top_level_checks(tail_text):
        return None
    return "\n".join(head), tail_text


def _split_cells(nb: nbformat.NotebookNode, name: str) -> List[str]:
    """Split answer-and-checker cells in place; returns the ids of the cells split."""
    split: List[str] = []
    cells: List[nbformat.NotebookNode] = []
    for cell in nb.cells:
        parts = _split_at_last_end(cell.source) if cell.cell_type == "code" else None
        if parts is None:
            cells.append(cell)
            continue
        answer_cell = copy.deepcopy(cell)
        answer_cell.source = parts[0]
        answer_cell.outputs = []
        answer_cell.execution_count = None
        checker = nbformat.v4.new_code_cell(parts[1])
        checker.metadata = copy.deepcopy(cell.metadata)
        checker.metadata.pop("nbgrader", None)
        checker.outputs = copy.deepcopy(cell.outputs)
        checker.execution_count = cell.execution_count
        checker["id"] = f"{cell['id']}-check"[:64]
        cells.extend([answer_cell, checker])
        split.append(cell["id"])
    nb.cells = cells
    return split


def _stars_before(cells: List[nbformat.NotebookNode], index: int) -> Optional[int]:
    """The difficulty mark (number of ★) of the exercise prompt above cell ``index``, if any.

    The search goes up through the cells above, stops at the previous exercise or checker, and
    takes the last line of a markdown cell that has a ★ run (``### Exercise 2 ★★★ — ...``).
    """
    for j in range(index - 1, -1, -1):
        cell = cells[j]
        if cell.cell_type == "code" and (_has_region(cell.source) or _top_level_checks(cell.source)):
            return None
        if cell.cell_type != "markdown":
            continue
        marked = [line for line in cell.source.split("\n") if _STARS.search(line)]
        if marked:
            return max(len(run) for run in _STARS.findall(marked[-1]))
    return None


def _clean_id(text: str) -> str:
    return _ID_CHARS.sub("_", text)


def _ensure_ids(nb: nbformat.NotebookNode, name: str) -> None:
    """Give every cell an nbformat ``id`` (nbformat 4.5); an existing id is never changed."""
    if nb.nbformat == 4 and nb.nbformat_minor < 5:
        nb.nbformat_minor = 5
    stem = _clean_id(Path(name).stem)[:40]
    taken = {cell.get("id") for cell in nb.cells}
    seen: set = set()
    for index, cell in enumerate(nb.cells):
        if cell.get("id") in seen:  # a duplicate (a copied cell): the second one is renamed
            cell["id"] = None
        seen.add(cell.get("id"))
        if not cell.get("id"):
            candidate, n = f"{stem}-{index}", 1
            while candidate in taken:
                candidate, n = f"{stem}-{index}-{n}", n + 1
            cell["id"] = candidate
            taken.add(candidate)


def _metadata(grade: bool, solution: bool, locked: bool, grade_id: str, points: Optional[float]) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": SCHEMA_VERSION,
            "solution": solution, "task": False}
    if grade:
        meta["points"] = points
    return meta


def convert_notebook(notebook: nbformat.NotebookNode, name: str = "notebook") -> Conversion:
    """Return the nbgrader form of an instructor notebook; the input is not modified.

    Raises:
        ConversionError: an exercise without a difficulty mark above it, a checker with no exercise
            or question above it, a checker cell holding a solution region, or a region in a cell
            of a kind nbgrader cannot grade; the message names ``name`` and the cell.
    """
    nb = copy.deepcopy(notebook)
    _ensure_ids(nb, name)
    for cell in nb.cells:
        if cell.cell_type in ("code", "markdown", "raw"):
            cell.source = _with_solution_markers(cell.source)
    split = _split_cells(nb, name)
    cells = nb.cells

    roles: List[str] = []
    for index, cell in enumerate(cells):
        region = _has_region(cell.source)
        checks = _top_level_checks(cell.source) if cell.cell_type == "code" else []
        if region and checks and cell.cell_type == "code":
            raise ConversionError(
                f"{_where(name, index, cell)}: a cell with a solution region calls {checks[0].func.id} before its "
                "END marker; put the checker in a cell of its own after the region")
        if region:
            roles.append({"code": "solution", "markdown": "written", "raw": "raw"}[cell.cell_type])
        elif checks:
            roles.append("checker")
        else:
            roles.append("teaching")

    # Each checker judges the nearest solution cell above it (with no other checker between).
    checker_of: Dict[int, int] = {}
    solution_of: Dict[int, int] = {}
    for index, role in enumerate(roles):
        if role != "checker":
            continue
        for j in range(index - 1, -1, -1):
            if roles[j] == "checker":
                break
            if roles[j] == "solution":
                if j not in checker_of:
                    checker_of[j] = index
                    solution_of[index] = j
                break

    used: Dict[str, int] = {}

    def unique(grade_id: str) -> str:
        grade_id = _clean_id(grade_id)
        used[grade_id] = used.get(grade_id, 0) + 1
        return grade_id if used[grade_id] == 1 else f"{grade_id}_{used[grade_id]}"

    result = Conversion(name, nb, split)
    ids: List[Optional[str]] = [None] * len(cells)
    # checker ids first: the solution cells take their names from their checkers
    for index, role in enumerate(roles):
        if role != "checker":
            continue
        cell = cells[index]
        call = _top_level_checks(cell.source)[0]
        if call.func.id == "check_answer":
            key = _QUESTION_KEY.search(cell.source)
            ids[index] = unique(f"check_q_{key.group('key')}" if key else f"check_answer_{cell['id']}")
        else:
            ids[index] = unique(call.func.id)
    for index, role in enumerate(roles):
        cell = cells[index]
        if role == "solution":
            checker = checker_of.get(index)
            if checker is not None and ids[checker].startswith("check_q_"):
                ids[index] = unique("q_" + ids[checker][len("check_q_"):])
            elif checker is not None and not ids[checker].startswith("check_answer_"):
                ids[index] = unique("ex_" + ids[checker][len("check_"):])
            else:
                ids[index] = unique(f"solution_{cell['id']}")
        elif role == "written":
            ids[index] = unique(f"written_{cell['id']}")
        elif role == "raw":
            ids[index] = unique(f"raw_{cell['id']}")
        elif role == "teaching":
            ids[index] = unique(f"cell-{cell['id']}")

    for index, (cell, role) in enumerate(zip(cells, roles)):
        ours = dict(cell.metadata.get(METADATA_KEY, {}))
        for stale in ("role", "stars", "question"):
            ours.pop(stale, None)
        if role == "checker":
            is_question = ids[index].startswith(("check_q_", "check_answer_"))
            if is_question:
                points, stars = 1, None
            else:
                solution = solution_of.get(index)
                if solution is None:
                    raise ConversionError(
                        f"{_where(name, index, cell)}: checker cell with no exercise above it (a code cell with "
                        "### BEGIN SOLUTION between it and the previous checker)")
                stars = _stars_before(cells, solution)
                if stars is None:
                    raise ConversionError(
                        f"{_where(name, solution, cells[solution])}: exercise without a difficulty mark; its markdown "
                        "prompt above needs ★, ★★ or ★★★ (the points of its checker)")
                points = stars
            meta = _metadata(True, False, True, ids[index], points)
            ours["role"] = "question_checker" if is_question else "checker"
            if stars:
                ours["stars"] = stars
            result.points += points
        elif role == "solution":
            checker = checker_of.get(index)
            is_question = checker is not None and ids[checker].startswith(("check_q_", "check_answer_"))
            meta = _metadata(False, True, False, ids[index], None)
            ours["role"] = "question" if is_question else "exercise"
        elif role == "written":
            meta = _metadata(True, True, False, ids[index], 1)
            ours["role"] = "written"
            result.points += 1
        elif role == "raw":
            meta = _metadata(False, True, False, ids[index], None)
            ours["role"] = "raw"
        else:
            meta = _metadata(False, False, True, ids[index], None)
            ours = {k: v for k, v in ours.items()}
        cell.metadata["nbgrader"] = meta
        if ours:
            cell.metadata[METADATA_KEY] = ours
        else:
            cell.metadata.pop(METADATA_KEY, None)
        result.roles[ours.get("role", "teaching")] = result.roles.get(ours.get("role", "teaching"), 0) + 1
    nbformat.validate(nb)
    return result


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read a notebook without nbformat's repairs: a cell without an ``id`` gets a *random* one from
    ``nbformat.read``; here it keeps none, and :func:`convert_notebook` gives it a deterministic one."""
    text = Path(path).read_text(encoding="utf-8")
    return reads_notebook(text)


def reads_notebook(text: str) -> nbformat.NotebookNode:
    """:func:`read_notebook` from a string."""
    if json.loads(text).get("nbformat") != 4:
        return nbformat.reads(text, as_version=4)
    return nbformat.v4.reads(text)  # rejoins lines, strips transient keys; no validation, no repair


def _text(nb: nbformat.NotebookNode) -> str:
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def convert_files(paths: Sequence[Path], check: bool = False) -> Tuple[List[Conversion], List[Path]]:
    """Convert every notebook in memory, then (unless ``check``) write the changed ones.

    Returns ``(conversions, changed_paths)``. Nothing is written when any notebook is refused.
    """
    conversions, changed, texts = [], [], []
    for path in paths:
        original = path.read_text(encoding="utf-8")
        conversion = convert_notebook(reads_notebook(original), path.name)
        text = _text(conversion.notebook)
        conversions.append(conversion)
        if text != original:
            changed.append(path)
            texts.append(text)
    if not check:
        for path, text in zip(changed, texts):
            path.write_text(text, encoding="utf-8")
    return conversions, changed


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python tools/nbgrader_metadata.py [NOTEBOOK ...] [--check]``: convert (default: every course notebook)."""
    parser = argparse.ArgumentParser(
        prog="python tools/nbgrader_metadata.py",
        description="Give the course notebooks nbgrader's cell metadata (splits answer-and-checker cells).")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to convert in place (default: notebooks/[0-9][0-9]_*.ipynb)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if any notebook is not in nbgrader form yet")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(Path("notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        print("error: no notebooks given and none in notebooks/", file=sys.stderr)
        return 1
    try:
        conversions, changed = convert_files(paths, check=args.check)
    except (ConversionError, OSError, ValueError) as error:
        print(f"error: {error} (nothing written)", file=sys.stderr)
        return 1
    for path, conversion in zip(paths, conversions):
        roles = ", ".join(f"{n} {role}" for role, n in sorted(conversion.roles.items()))
        state = ("would change" if args.check else "converted") if path in changed else "unchanged"
        split = f"; split {len(conversion.split)} cell(s)" if conversion.split else ""
        print(f"{path}: {state} ({roles}; {conversion.points:g} points{split})")
    if args.check and changed:
        print(f"{len(changed)} notebook(s) not in nbgrader form; run python tools/nbgrader_metadata.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
