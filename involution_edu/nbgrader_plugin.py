"""nbgrader preprocessors for this course (needs nbgrader: ``pip install -e ".[instructor]"``).

nbgrader replaces every solution region by one code stub, ``raise NotImplementedError()`` by
default. Inside a function body that is what we want: the cell still runs (it only defines the
function) and the checker says "not attempted". A *top-level* region is a question's answer,
``answer_q1 = "c"``: a raising stub there would stop "Run All" at the first question. So
:class:`CourseClearSolutions` picks the stub by where the region sits:

* indented region (a function body): ``# YOUR CODE HERE`` + ``raise NotImplementedError("...")``;
* top-level region: ``# YOUR ANSWER HERE`` (the line above it sets ``answer_qN = None``, so the
  checker prints "not answered yet" and, under autograding, the checker cell fails);
* markdown and raw regions: ``*Write your answer here.*``.

It matches markers exactly as nbgrader's ``ClearSolutions`` does (``BEGIN SOLUTION`` anywhere in
a line, upper case) and raises the same errors. The course's ``nbgrader_config.py`` (written by
``python -m involution_edu.student --init-course DIR``) puts it in place of ``ClearSolutions`` in
``GenerateAssignment.preprocessors``; :func:`student_preprocessors` is the chain that
``python -m involution_edu.student`` runs to write a student copy.
"""

from __future__ import annotations

import re
from typing import List

from nbformat.notebooknode import NotebookNode
from nbgrader.converters import GenerateAssignment
from nbgrader.preprocessors import ClearHiddenTests, ClearMarkScheme, ClearOutput, ClearSolutions, LockCells
from traitlets import Dict, Unicode

from .student import ANSWER_STUB, CODE_STUB, MARKDOWN_STUB

__all__ = ["CourseClearSolutions", "student_preprocessors", "generate_assignment_preprocessors"]


class CourseClearSolutions(ClearSolutions):
    """``ClearSolutions`` whose stub for a top-level (unindented) code region does not raise."""

    code_stub = Dict(dict(python=CODE_STUB), help="The stub for an indented code region (a function body)").tag(config=True)
    text_stub = Unicode(MARKDOWN_STUB, help="The stub for a markdown or raw region").tag(config=True)
    top_level_code_stub = Dict(
        dict(python=ANSWER_STUB), help="The stub for a code region at the top level of a cell (a question's answer)"
    ).tag(config=True)

    def _replace_solution_region(self, cell: NotebookNode, language: str) -> bool:
        # nbgrader's own algorithm (nbgrader/preprocessors/clearsolutions.py), with the stub chosen per region
        lines = cell.source.split("\n")
        new_lines: List[str] = []
        in_solution = False
        replaced_solution = False
        for line in lines:
            if self.begin_solution_delimeter in line:
                if in_solution:
                    self.log.error("Encountered nested begin solution statements. Cell contents are: \n%s", cell.source)
                    raise RuntimeError("encountered nested begin solution statements")
                in_solution = True
                replaced_solution = True
                indent = re.match(r"\s*", line).group(0)
                if cell.cell_type != "code":
                    stub = self.text_stub
                elif indent:
                    stub = self.code_stub[language]
                else:
                    stub = self.top_level_code_stub.get(language, self.code_stub[language])
                new_lines.extend(indent + stub_line for stub_line in stub.split("\n"))
            elif self.end_solution_delimeter in line:
                in_solution = False
            elif not in_solution:
                new_lines.append(line)
        if in_solution:
            self.log.error("No end solution statement found. Cell contents are: \n%s", cell.source)
            raise RuntimeError("no end solution statement found")
        cell.source = "\n".join(new_lines)
        return replaced_solution


def student_preprocessors() -> list:
    """The preprocessors, in nbgrader's release order, that turn an instructor notebook into a student copy.

    (``generate_assignment`` also runs ``ComputeChecksums``, ``SaveCells`` and ``CheckCellMetadata``,
    which talk to the gradebook or check; they change no cell's source.)
    """
    return [
        LockCells(),
        CourseClearSolutions(),
        ClearOutput(),
        ClearHiddenTests(),
        ClearMarkScheme(),
    ]


def generate_assignment_preprocessors() -> list:
    """nbgrader's ``GenerateAssignment.preprocessors`` with :class:`CourseClearSolutions` for ``ClearSolutions``."""
    default = GenerateAssignment.class_traits()["preprocessors"].default()
    return [CourseClearSolutions if pp is ClearSolutions else pp for pp in default]
