"""The machinery every exercise checker shares: a table of cases, one loop, a clear verdict.

A checker is data: a list of :class:`Case` (a name, the arguments, the expected answer,
and why the case matters). :func:`run_cases` calls the student's function on each case and
prints a short verdict. It never raises because of the student's mistake:

* ``NotImplementedError``  -> "not attempted yet"
* any other exception      -> its type, message and the case, without a traceback
* wrong type or shape      -> expected vs got, for which case
* wrong values             -> the case, the first mismatching index, expected vs got,
                              and the largest difference

It returns ``True`` when every case passes, ``False`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Case", "run_cases", "compare", "describe_mismatch", "to_numpy"]


@dataclass
class Case:
    """One test case of a checker.

    Attributes:
        name: short label shown to the student, e.g. ``"stride 2, groups 2"``.
        args: positional arguments for the student's function.
        expected: the correct answer (array, number, tuple, ...).
        why: one line on what this case catches.
        kwargs: keyword arguments for the student's function.
        rtol, atol: tolerances for numeric comparison.
    """

    name: str
    args: Tuple[Any, ...]
    expected: Any
    why: str = ""
    kwargs: Dict[str, Any] = field(default_factory=dict)
    rtol: float = 1e-6
    atol: float = 1e-8


def to_numpy(value: Any) -> Any:
    """Convert torch tensors (detached, on the CPU) to NumPy; leave other values alone."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    if isinstance(value, (np.integer, np.bool_)):
        return repr(value.item())
    return repr(value)


def describe_mismatch(got: Any, expected: Any, rtol: float = 1e-6, atol: float = 1e-8) -> Optional[str]:
    """Return ``None`` when ``got`` matches ``expected``, else a one-line description of how it differs."""
    got, expected = to_numpy(got), to_numpy(expected)
    if got is None and expected is not None:
        return "got None: did the function forget to `return` its result?"
    if isinstance(expected, np.ndarray):
        if not isinstance(got, np.ndarray):
            try:
                got = np.asarray(got, dtype=float)
            except (TypeError, ValueError):
                return f"expected an array of shape {expected.shape}, got {type(got).__name__}"
            if got.dtype == object:
                return f"expected an array of shape {expected.shape}, got {type(got).__name__}"
        if got.shape != expected.shape:
            return f"wrong shape: expected {expected.shape}, got {got.shape}"
        if not np.issubdtype(got.dtype, np.number):
            return f"expected numbers, got an array of dtype {got.dtype}"
        close = np.isclose(got, expected, rtol=rtol, atol=atol)
        if close.all():
            return None
        first = tuple(int(i) for i in np.argwhere(~close)[0])
        diff = np.abs(got.astype(float) - expected.astype(float))
        n_nan = int(np.isnan(got.astype(float)).sum() - np.isnan(expected.astype(float)).sum())
        largest = f"{n_nan} entries are NaN" if n_nan > 0 else f"largest difference {np.nanmax(diff):.3g}"
        return (
            f"wrong values at {int((~close).sum())} of {close.size} entries; first at index {first}: "
            f"expected {_fmt(expected[first])}, got {_fmt(got[first])} ({largest})"
        )
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return f"expected a {type(expected).__name__} like {expected!r}, got {got!r}"
        if len(got) != len(expected):
            return f"expected {len(expected)} items {tuple(expected)!r}, got {len(got)}: {tuple(got)!r}"
        for index, (g, e) in enumerate(zip(got, expected)):
            problem = describe_mismatch(g, e, rtol, atol)
            if problem is not None:
                return f"item {index}: {problem}"
        return None
    if isinstance(expected, (int, float, np.integer, np.floating)) and not isinstance(expected, bool):
        got = to_numpy(got)
        if isinstance(got, np.ndarray) and got.size == 1:
            got = got.item()
        if not isinstance(got, (int, float, np.integer, np.floating)) or isinstance(got, bool):
            return f"expected a number {_fmt(expected)}, got {got!r}"
        if np.isclose(float(got), float(expected), rtol=rtol, atol=atol):
            return None
        return f"expected {_fmt(expected)}, got {_fmt(got)} (off by {_fmt(float(got) - float(expected))})"
    return None if got == expected else f"expected {expected!r}, got {got!r}"


def run_cases(title: str, candidate: Callable[..., Any], cases: Sequence[Case], *, verbose: bool = False) -> bool:
    """Run ``candidate`` on every case and print a verdict. Returns ``True`` iff all pass.

    The first failing case stops the run (the student fixes one thing at a time); the message
    names the case and why it matters.
    """
    if not callable(candidate):
        print(f"✗ {title}: expected a function, got {type(candidate).__name__}")
        return False
    for number, case in enumerate(cases, start=1):
        label = f"case {number}/{len(cases)} '{case.name}'"
        try:
            got = candidate(*case.args, **case.kwargs)
        except NotImplementedError:
            print(f"… {title}: not attempted yet (the function raises NotImplementedError). Write your solution and run this cell again.")
            return False
        except Exception as error:  # the student's bug, reported without a traceback
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            print(f"✗ {title}: {label} raised {type(error).__name__}: {message}")
            if case.why:
                print(f"  this case checks: {case.why}")
            return False
        problem = describe_mismatch(got, case.expected, case.rtol, case.atol)
        if problem is not None:
            print(f"✗ {title}: {label}: {problem}")
            if case.why:
                print(f"  this case checks: {case.why}")
            return False
        if verbose:
            print(f"  ✓ {label}")
    print(f"✓ {title}: all {len(cases)} cases pass.")
    return True


def compare(label: str, got: Any, expected: Any, rtol: float = 1e-6, atol: float = 1e-8) -> bool:
    """Self-check in the style of nn-zero-to-hero's ``cmp``: exact, approximate, or how far off.

    Prints one line such as ``loops vs reference | exact: True | approx: True | max diff: 0.0``.
    """
    got_np, expected_np = np.asarray(to_numpy(got)), np.asarray(to_numpy(expected))
    if got_np.shape != expected_np.shape:
        print(f"{label:<28} | shapes differ: got {got_np.shape}, expected {expected_np.shape}")
        return False
    exact = bool(np.array_equal(got_np, expected_np))
    approx = bool(np.allclose(got_np, expected_np, rtol=rtol, atol=atol))
    max_diff = float(np.max(np.abs(got_np - expected_np))) if got_np.size else 0.0
    print(f"{label:<28} | exact: {str(exact):5} | approx: {str(approx):5} | max diff: {max_diff:.1e}")
    return approx
