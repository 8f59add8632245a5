"""Exercise checkers, one module per notebook; the shared machinery is in :mod:`.framework`.

In a notebook, call the checker in the cell after the exercise, e.g.::

    from involution_edu.exercises.convolution import check_conv2d_loops
    check_conv2d_loops(conv2d_loops)

Every checker declares what its exercise forbids as a :class:`~.guard.Rule` (the library's own
implementation, ``F.conv2d``, any softmax, ...). The obvious route is refused by name before any
case runs; then the learner's function runs on the named cases and on hidden random cases under
a run-time guard that sees every call it makes ("this exercise asks you to write X yourself;
your function called Y"), with a time limit per case and in all, and a check that it left its
inputs and torch's global modes unchanged. It prints one verdict: what is wrong, for which case,
expected vs got, and the likely mistake when the answer matches a known wrong one. It returns a
:class:`~.framework.Verdict` (truthy iff passed, showing nothing more in a notebook) and never
raises, whatever the function returns (meta or half tensors, strings, generators, ...), except
under nbgrader grading, where a failure raises AssertionError after printing.

Questions that are not code are :class:`~.framework.Question` objects in each module's
``QUESTIONS`` dict, checked with :func:`~.framework.check_answer`::

    answer_q1 = "b"
    check_answer(QUESTIONS["receptive_field"], answer_q1)

Every ``check_*`` function of every module below is also importable from this package
(re-exported automatically, so a module can add checkers without editing this file).

=====================  =========================================================
module                 notebook
=====================  =========================================================
``convolution``        01 · convolution recap and the idea
``loops``              02 · involution as explicit loops
``vectorize``          03 · sliding windows and unfold
``kernel_generation``  04 · kernel generation
``module``             05 · the full module
``rednet``             06 · RedNet
``training``           07 · training on real data
``performance``        08 · making it fast
``attention``          09 · going further
``triton``             10 · a Triton GPU kernel (when present)
=====================  =========================================================
"""

from __future__ import annotations

import importlib

from .framework import (FAMILIES, Case, Question, Rule, Verdict, check_answer, compare, describe_mismatch,
                        find_shortcuts, run_cases, short_time_limits, to_numpy)

#: The checker modules, in course order; ``check_*`` names of each are re-exported here.
CHECKER_MODULES = (
    "convolution",
    "loops",
    "vectorize",
    "kernel_generation",
    "module",
    "rednet",
    "training",
    "performance",
    "attention",
    "triton",
)

#: Modules that could not be imported (name -> the error), e.g. one being rewritten.
IMPORT_ERRORS = {}


def _reexport_checkers() -> None:
    for _module_name in CHECKER_MODULES:
        try:
            _module = importlib.import_module(f"{__name__}.{_module_name}")
        except ModuleNotFoundError as error:
            if error.name == f"{__name__}.{_module_name}":
                continue  # an optional module (e.g. triton) that does not exist yet
            IMPORT_ERRORS[_module_name] = error
            continue
        except ImportError as error:  # pragma: no cover - a module mid-edit
            IMPORT_ERRORS[_module_name] = error
            continue
        for _name in dir(_module):
            if _name.startswith("check_") and callable(getattr(_module, _name)) and _name != "check_answer":
                globals()[_name] = getattr(_module, _name)


_reexport_checkers()

__all__ = sorted(name for name in globals() if name.startswith("check_") and name != "check_answer") + [
    "Case",
    "FAMILIES",
    "Question",
    "Rule",
    "Verdict",
    "short_time_limits",
    "check_answer",
    "compare",
    "describe_mismatch",
    "find_shortcuts",
    "run_cases",
    "to_numpy",
]
