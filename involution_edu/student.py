"""Student copies of the course notebooks: solutions out, outputs cleared, instructor copies untouched.

The instructor notebooks in ``notebooks/`` are the single source. Every solution region in a
code cell, the lines from ``### BEGIN SOLUTION`` to ``### END SOLUTION`` inclusive, becomes
one stub line, indented like the BEGIN marker::

    def involution_loops(x, kernels):                  def involution_loops(x, kernels):
        ### BEGIN SOLUTION                                 raise NotImplementedError("Loop over b, c, i, j, u, v")
        # HINT: Loop over b, c, i, j, u, v        ->
        out = ...                                      (the rest of the cell is kept)
        ### END SOLUTION

The hint is the text of the ``# HINT:`` comment lines inside the region (joined with a space),
else a generic one. The same markers in a markdown cell become an "answer here" line. All
outputs and execution counts are cleared, cell metadata keeps no run-time keys, and the
notebook metadata keeps only the kernel spec, the language name and a mark saying it is a
generated student copy.

Safety, because a student copy written over an instructor notebook would lose the solutions:

* the output folder may not be the source folder or lie inside it (symlinks resolved);
* a file in the output folder is overwritten only if this tool wrote it and it is unchanged
  since (its name and SHA-256 are in the manifest ``.student_copies.json``); anything else
  (a file of the instructor's, a copy the student has worked in) needs ``force=True``
  (``--force`` on the command line);
* nothing is ever deleted, and nothing is written through a symlink;
* every notebook is transformed in memory before the first file is written, so a notebook
  with unbalanced markers stops the run with nothing written.

Output is deterministic: running it twice gives byte-identical files.

Command line (``make student``)::

    python -m involution_edu.student SRC_DIR OUT_DIR [--force]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import nbformat

__all__ = [
    "BEGIN_MARKER",
    "END_MARKER",
    "HINT_PREFIX",
    "DEFAULT_HINT",
    "MANIFEST_NAME",
    "METADATA_KEY",
    "SolutionMarkerError",
    "UnsafeOutputError",
    "StudentCopy",
    "strip_solutions",
    "make_student_notebook",
    "write_student_notebooks",
    "main",
]

BEGIN_MARKER = "### BEGIN SOLUTION"
END_MARKER = "### END SOLUTION"
HINT_PREFIX = "# HINT:"
DEFAULT_HINT = "Write your solution here (see the exercise above)"
MARKDOWN_STUB = "*Write your answer here.*"
MANIFEST_NAME = ".student_copies.json"
METADATA_KEY = "involution_edu"
GENERATOR = "involution_edu.student"

# Cell metadata keys written by a run of the notebook (timings, UI state), not by the author.
_RUNTIME_CELL_KEYS = ("execution", "ExecuteTime", "collapsed", "scrolled")


class SolutionMarkerError(ValueError):
    """A solution region is not closed, not opened, or nested."""


class UnsafeOutputError(RuntimeError):
    """Writing the student copies would overwrite or endanger files the tool did not generate."""


@dataclass(frozen=True)
class StudentCopy:
    """One student notebook: where it comes from, where it goes, and what was removed."""

    source: Path
    target: Path
    solutions_removed: int
    text: str


def _hint_literal(hint: str) -> str:
    """A double-quoted Python string literal for ``hint``."""
    escaped = hint.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _marker(line: str) -> Optional[str]:
    stripped = line.strip()
    if stripped.startswith(BEGIN_MARKER):
        return "begin"
    if stripped.startswith(END_MARKER):
        return "end"
    return None


def strip_solutions(source: str, where: str = "cell", cell_type: str = "code") -> Tuple[str, int]:
    """Replace every solution region of one cell's source by a stub line.

    Args:
        source: the cell's source text.
        where: how to name the cell in an error, e.g. ``"02_loops.ipynb, cell 14"``.
        cell_type: ``"code"`` (stub ``raise NotImplementedError("<hint>")``) or
            ``"markdown"`` (stub ``*Write your answer here.*``).

    Returns:
        ``(new_source, number_of_regions_removed)``.

    Raises:
        SolutionMarkerError: an END without a BEGIN, a BEGIN inside a region, or a BEGIN never
            closed; the message names ``where`` and the line.
    """
    lines = source.split("\n")
    kept: List[str] = []
    region_start: Optional[int] = None
    indent = ""
    hints: List[str] = []
    removed = 0
    for number, line in enumerate(lines, start=1):
        kind = _marker(line)
        if kind == "begin":
            if region_start is not None:
                raise SolutionMarkerError(
                    f"{where}: line {number} opens a solution region ({BEGIN_MARKER!r}) inside the one "
                    f"opened on line {region_start}; close it first with {END_MARKER!r}"
                )
            region_start = number
            indent = line[: len(line) - len(line.lstrip())]
            hints = []
        elif kind == "end":
            if region_start is None:
                raise SolutionMarkerError(
                    f"{where}: line {number} closes a solution region ({END_MARKER!r}) that was never "
                    f"opened with {BEGIN_MARKER!r}"
                )
            if cell_type == "code":
                hint = " ".join(hints) if hints else DEFAULT_HINT
                kept.append(f"{indent}raise NotImplementedError({_hint_literal(hint)})")
            else:
                kept.append(f"{indent}{MARKDOWN_STUB}")
            region_start = None
            removed += 1
        elif region_start is not None:
            stripped = line.strip()
            if stripped.startswith(HINT_PREFIX):
                hint_text = stripped[len(HINT_PREFIX) :].strip()
                if hint_text:
                    hints.append(hint_text)
        else:
            kept.append(line)
    if region_start is not None:
        raise SolutionMarkerError(
            f"{where}: the solution region opened on line {region_start} ({BEGIN_MARKER!r}) is never "
            f"closed with {END_MARKER!r}"
        )
    return "\n".join(kept), removed


def _clean_notebook_metadata(metadata: dict, source_name: str) -> dict:
    clean: Dict[str, object] = {}
    if "kernelspec" in metadata:
        clean["kernelspec"] = copy.deepcopy(metadata["kernelspec"])
    language = metadata.get("language_info", {}).get("name")
    if language:
        clean["language_info"] = {"name": language}
    clean[METADATA_KEY] = {"student_copy": True, "source": source_name, "generator": GENERATOR}
    return clean


def make_student_notebook(notebook: nbformat.NotebookNode, name: str = "notebook") -> Tuple[nbformat.NotebookNode, int]:
    """Return ``(student_copy, regions_removed)`` for an instructor notebook; the input is not modified.

    ``name`` (the file name) is used in error messages and recorded in the copy's metadata.
    """
    student = copy.deepcopy(notebook)
    removed = 0
    for index, cell in enumerate(student.cells):
        if cell.cell_type in ("code", "markdown"):
            first_line = cell.source.strip().split("\n", 1)[0][:60]
            where = f"{name}, cell {index} ({cell.cell_type}, starting {first_line!r})"
            cell.source, count = strip_solutions(cell.source, where, cell.cell_type)
            removed += count
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in _RUNTIME_CELL_KEYS:
            cell.metadata.pop(key, None)
    student.metadata = nbformat.from_dict(_clean_notebook_metadata(student.metadata, name))
    return student, removed


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
    """True iff ``target`` is a student copy this tool wrote and nobody has edited since."""
    recorded = manifest.get(target.name)
    if recorded is None:
        return False
    try:
        data = target.read_bytes()
    except OSError:
        return False
    if _sha256(data) != recorded:
        return False
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
    src, out = _check_folders(src_dir, out_dir)
    sources = sorted(path for path in src_dir.glob("*.ipynb") if path.is_file())
    if not sources:
        raise FileNotFoundError(f"no *.ipynb notebooks in {src_dir}")

    copies: List[StudentCopy] = []
    for path in sources:
        notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        student, removed = make_student_notebook(notebook, path.name)
        nbformat.validate(student)
        text = nbformat.writes(student)
        if not text.endswith("\n"):
            text += "\n"
        copies.append(StudentCopy(path, out_dir / path.name, removed, text))

    try:
        manifest = _read_manifest(out_dir) if out_dir.is_dir() else {}
    except UnsafeOutputError:
        if not force:
            raise
        manifest = {}  # --force: a foreign manifest file is replaced by ours
    problems = []
    for student_copy in copies:
        target = student_copy.target
        resolved = target.resolve()
        if target.is_symlink() or _is_within(resolved, src) or resolved.parent != out:
            problems.append(f"{target} is a symlink or resolves outside the output folder ({resolved})")
        elif target.exists() and not force and not _was_generated_unchanged(target, manifest):
            problems.append(f"{target} exists and was not written by {GENERATOR} (or was edited since)")
    symlink_problems = [p for p in problems if "symlink" in p]
    if symlink_problems or (problems and not force):
        advice = "" if symlink_problems else "; rerun with --force to overwrite"
        raise UnsafeOutputError("refusing to write student copies:\n  " + "\n  ".join(problems) + advice)

    out_dir.mkdir(parents=True, exist_ok=True)
    for student_copy in copies:
        data = student_copy.text.encode("utf-8")
        _atomic_write(student_copy.target, data)
        manifest[student_copy.target.name] = _sha256(data)
    manifest_text = json.dumps({"generator": GENERATOR, "files": dict(sorted(manifest.items()))}, indent=1, sort_keys=True) + "\n"
    _atomic_write(out_dir / MANIFEST_NAME, manifest_text.encode("utf-8"))
    return copies


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: ``python -m involution_edu.student SRC_DIR OUT_DIR [--force]``. Returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m involution_edu.student",
        description="Write student copies of the course notebooks: solutions replaced by stubs, outputs cleared.",
    )
    parser.add_argument("src_dir", help="folder of instructor notebooks, e.g. notebooks")
    parser.add_argument("out_dir", help="folder for the student copies, e.g. student_notebooks (not inside src_dir)")
    parser.add_argument("--force", action="store_true", help="overwrite files in OUT_DIR that this tool did not write")
    args = parser.parse_args(argv)
    try:
        copies = write_student_notebooks(args.src_dir, args.out_dir, force=args.force)
    except (SolutionMarkerError, UnsafeOutputError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for student_copy in copies:
        plural = "" if student_copy.solutions_removed == 1 else "s"
        print(f"wrote {student_copy.target}  ({student_copy.solutions_removed} solution{plural} removed)")
    print(f"{len(copies)} student notebook(s) in {args.out_dir}; manifest {Path(args.out_dir) / MANIFEST_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
