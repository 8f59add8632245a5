"""Shared helpers for the checker tests: odd return values, never-raise, reject and accept.

Routes around a guard (``exec_route``, ``module_route``), the time limit (``assert_times_out``) and
side effects (``assert_names_side_effect``) are here too.

Usage in a checker's test module::

    from checker_harness import ODD_RETURNS, assert_accepts, assert_never_raises, assert_rejects

    def test_never_raises():
        assert_never_raises(check_output_size)

    def test_rejects_floor_mode(capsys):
        assert_rejects(check_output_size, lambda *a: ..., capsys, "floor")
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
import textwrap
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from involution_edu.exercises.guard import short_time_limits  # noqa: F401 - re-exported for the tests

VERDICT_MARKS = ("✓", "✗", "…")


def _generator():
    yield 1
    yield 2


class _Opaque:
    """An arbitrary object whose every protocol method raises."""

    def __eq__(self, other):
        raise RuntimeError("__eq__ raised")

    def __len__(self):
        raise RuntimeError("__len__ raised")

    def __array__(self, *args, **kwargs):
        raise RuntimeError("__array__ raised")

    def __iter__(self):
        raise RuntimeError("__iter__ raised")

    def __float__(self):
        raise RuntimeError("__float__ raised")

    def __repr__(self):
        raise RuntimeError("__repr__ raised")

    __hash__ = object.__hash__


#: (label, zero-argument factory) for every kind of return value a checker must judge without raising.
ODD_RETURNS: List[Tuple[str, Callable[[], Any]]] = [
    ("meta tensor", lambda: torch.empty(2, 3, 4, 4, device="meta")),
    ("meta scalar", lambda: torch.empty((), device="meta")),
    ("float16 tensor", lambda: torch.ones(2, 3, 4, 4, dtype=torch.float16)),
    ("bfloat16 tensor", lambda: torch.ones(2, 3, 4, 4, dtype=torch.bfloat16)),
    ("bfloat16 scalar", lambda: torch.tensor(7.0, dtype=torch.bfloat16)),
    ("huge int", lambda: 10**30),
    ("huger than float int", lambda: 10**400),
    ("negative int", lambda: -7),
    ("string", lambda: "42"),
    ("nested list", lambda: [[1, 2], [3, 4]]),
    ("ragged list", lambda: [[1, 2], [3]]),
    ("list of strings", lambda: ["1", "2"]),
    ("object", lambda: object()),
    ("opaque object", lambda: _Opaque()),
    ("generator", _generator),
    ("None", lambda: None),
    ("NaN", lambda: float("nan")),
    ("inf", lambda: float("inf")),
    ("bool", lambda: True),
    ("complex", lambda: 1 + 2j),
    ("dict", lambda: {"a": 1}),
    ("function", lambda: (lambda: 1)),
]


def _verdict_lines(text: str) -> List[str]:
    return [line for line in text.splitlines() if line.startswith(VERDICT_MARKS)]


def assert_never_raises(checker: Callable[[Any], bool],
                        make_candidate: Callable[[Any], Any] = lambda value: (lambda *a, **k: value)) -> None:
    """Every ODD_RETURN gives ``False`` and a printed ✗/… verdict, without raising.

    ``make_candidate(value)`` builds the learner's answer that returns ``value`` (default: a
    function of any arguments); pass another for checkers that take e.g. a module or a class.
    """
    for label, factory in ODD_RETURNS:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            try:
                result = checker(make_candidate(factory()))
            except Exception as error:  # noqa: BLE001 - the point of the test
                raise AssertionError(f"{getattr(checker, '__name__', checker)} raised {type(error).__name__}: "
                                     f"{error} on the odd return {label!r}") from error
        out = buffer.getvalue()
        assert bool(result) is False, f"{getattr(checker, '__name__', checker)} accepted the odd return {label!r}:\n{out}"
        verdicts = _verdict_lines(out)
        assert verdicts, f"no verdict printed for the odd return {label!r}:\n{out}"
        assert any(line.startswith(("✗", "…")) for line in verdicts), out
        assert "Traceback" not in out, out


def assert_rejects(checker: Callable[[Any], bool], candidate: Any, capsys, *needles: str) -> str:
    """The checker returns ``False`` for ``candidate`` and its output contains every needle; returns the output."""
    capsys.readouterr()
    result = checker(candidate)
    out = capsys.readouterr().out
    assert bool(result) is False, f"accepted a wrong answer:\n{out}"
    assert _verdict_lines(out), f"no verdict line:\n{out}"
    for needle in needles:
        assert needle in out, f"{needle!r} not in the verdict:\n{out}"
    return out


def assert_accepts(checker: Callable[[Any], bool], candidate: Any, capsys) -> str:
    """The checker returns ``True`` for ``candidate`` and prints a ✓ verdict and no ✗; returns the output."""
    capsys.readouterr()
    result = checker(candidate)
    out = capsys.readouterr().out
    assert bool(result) is True, f"rejected the solution:\n{out}"
    assert "✓" in out and "✗" not in out, out
    return out


def exec_route(source: str, name: str, extra_globals: Optional[Dict[str, Any]] = None) -> Callable[..., Any]:
    """The function ``name`` defined by ``exec`` of ``source`` (a route no name scanner can read)."""
    namespace: Dict[str, Any] = {"torch": torch, "__name__": "__exec_route__"}
    namespace.update(extra_globals or {})
    exec(compile(textwrap.dedent(source), "<string>", "exec"), namespace)
    return namespace[name]


_MODULE_COUNTER = [0]


def module_route(tmp_path, source: str, name: str) -> Callable[..., Any]:
    """Write ``source`` as a helper module in ``tmp_path``, import it, return its function ``name``."""
    _MODULE_COUNTER[0] += 1
    module_name = f"learner_helper_{_MODULE_COUNTER[0]}_{abs(hash(source)) % 10**8}"
    path = tmp_path / f"{module_name}.py"
    path.write_text(textwrap.dedent(source))
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.invalidate_caches()
        module = importlib.import_module(module_name)
    finally:
        sys.path.remove(str(tmp_path))
    return getattr(module, name)


def assert_times_out(checker: Callable[[Any], Any], candidate: Any, capsys, case: float = 0.5,
                     total: float = 2.0) -> str:
    """With short limits, the checker gives a time-limit verdict (and returns) well within the total."""
    capsys.readouterr()
    start = time.monotonic()
    with short_time_limits(case=case, total=total):
        result = checker(candidate)
    elapsed = time.monotonic() - start
    out = capsys.readouterr().out
    assert bool(result) is False, f"accepted an endless loop:\n{out}"
    assert "ran for more than" in out and "endless loop" in out, out
    assert elapsed < total + 30, f"the time limit did not stop the run ({elapsed:.1f} s)"
    return out


def assert_names_side_effect(checker: Callable[[Any], Any], candidate: Any, capsys, *needles: str) -> str:
    """The checker refuses ``candidate`` because it changed its input or global state, naming it."""
    capsys.readouterr()
    result = checker(candidate)
    out = capsys.readouterr().out
    assert bool(result) is False, f"accepted a function with a side effect:\n{out}"
    assert "your function changed its input" in out, out
    for needle in needles:
        assert needle in out, f"{needle!r} not in the verdict:\n{out}"
    return out
