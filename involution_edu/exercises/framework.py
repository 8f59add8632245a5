"""The machinery every exercise checker shares: a table of cases, a shortcut guard, one clear verdict.

A checker is data: a list of :class:`Case` (a name, the arguments, the expected answer, why
the case matters, and the wrong answers a learner plausibly gives with the mistake each one
reveals). :func:`run_cases` first inspects the learner's function for the shortcuts the
exercise forbids, then calls it on each case and prints one verdict:

* a forbidden call (``F.conv2d``, the library's own implementation, ``.softmax``, ...)
  -> "this exercise asks you to write X yourself; your function calls Y"
* ``NotImplementedError``  -> "not attempted yet", or "delete the ``raise NotImplementedError``
  line" when that line sits above code the learner has written
* any other exception      -> its type, message and the case, without a traceback
* a known wrong answer     -> the mistake it reveals ("you left out the conv bias")
* wrong type or shape      -> what was returned and what was expected, for which case
* wrong values             -> the case, the first mismatching index, expected vs got, the
  largest difference, and whether it is only float32/half rounding

It returns ``True`` when every case passes, ``False`` otherwise, and never raises, whatever
the learner's function returns: tensors on the ``meta`` device, half and bfloat16 tensors,
huge or negative ints, strings (never accepted as numbers), nested or ragged lists,
generators, arbitrary objects, NaN, objects whose ``__eq__``/``__len__``/``__array__`` raise.

Questions that are not code (predict, then run; inline questions) are :class:`Question`
objects checked by :func:`check_answer`: multiple choice with an explanation for every wrong
choice, or numeric with a tolerance and named likely mistakes.
"""

from __future__ import annotations

import builtins
import dis
import functools
import inspect
import linecache
import math
import numbers
import os
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import guard as _guard
from .guard import FAMILIES, Rule, short_time_limits

__all__ = [
    "Case",
    "FAMILIES",
    "Rule",
    "grading",
    "short_time_limits",
    "Verdict",
    "Question",
    "check_answer",
    "compare",
    "describe_mismatch",
    "describe_value",
    "find_shortcuts",
    "run_cases",
    "to_numpy",
]


@dataclass
class Case:
    """One test case of a checker.

    Attributes:
        name: short label shown to the learner, e.g. ``"stride 2, groups 2"``.
        args: positional arguments for the learner's function.
        expected: the correct answer (array, tensor, number, tuple, ...).
        why: one line on what this case catches (shown when the answer is wrong and no
            known mistake matches).
        kwargs: keyword arguments for the learner's function.
        rtol, atol: tolerances for numeric comparison.
        mistakes: ``[(wrong_value, message), ...]``: when the answer is wrong and matches a
            ``wrong_value`` (within the same tolerances), ``message`` names the mistake, e.g.
            ``(n - 64, "you left out the conv bias (64 values)")``. A ``wrong_value`` may
            also be a one-argument predicate (a plain function) called with the answer.
        check_inputs: check that the learner's function leaves this case's inputs (arrays,
            tensors, models: values, flags, modes) and torch's global modes unchanged.
    """

    name: str
    args: Tuple[Any, ...]
    expected: Any
    why: str = ""
    kwargs: Dict[str, Any] = field(default_factory=dict)
    rtol: float = 1e-6
    atol: float = 1e-8
    mistakes: List[Tuple[Any, str]] = field(default_factory=list)
    check_inputs: bool = True


# --------------------------------------------------------------------------------------------
# The verdict
# --------------------------------------------------------------------------------------------

def grading() -> bool:
    """True under nbgrader's autograde/validate, or with ``INVOLUTION_EDU_RAISE_ON_FAIL=1``."""
    if os.environ.get("NBGRADER_EXECUTION", "").strip().lower() in ("autograde", "validate"):
        return True
    return os.environ.get("INVOLUTION_EDU_RAISE_ON_FAIL", "").strip().lower() in ("1", "true", "yes", "on")


class Verdict:
    """The result of a checker: truthy iff the answer passed.

    ``passed`` is a bool and ``message`` the text the checker printed. In a notebook a checker
    cell shows only that printed text: :meth:`_ipython_display_` displays nothing, so the cell's
    last value adds no ``True``/``False`` line. In a script, ``if check_x(f): ...`` works.
    Compared with a bool (``verdict == True``) it compares :attr:`passed`.
    """

    __slots__ = ("passed", "message")

    def __init__(self, passed: bool, message: str = "") -> None:
        self.passed = bool(passed)
        self.message = str(message)

    def __bool__(self) -> bool:
        return self.passed

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, Verdict):
            return self.passed == other.passed
        if isinstance(other, (bool, np.bool_)):
            return self.passed == bool(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.passed)

    def __repr__(self) -> str:
        return f"<Verdict {'passed' if self.passed else 'failed'}>"

    def _ipython_display_(self) -> None:  # the verdict is already printed; show nothing more
        return None

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython terminal: nothing either
        return None


def _finish(passed: bool, lines: Sequence[str]) -> Verdict:
    """The Verdict for printed ``lines``; under grading a failure raises AssertionError (already printed)."""
    verdict = Verdict(passed, "\n".join(lines))
    if not verdict.passed and grading():
        raise AssertionError(verdict.message or "the checker refused this answer")
    return verdict


class _Say:
    """Prints the checker's lines and keeps them for the Verdict's message."""

    def __init__(self) -> None:
        self.lines: List[str] = []

    def __call__(self, text: str) -> None:
        self.lines.append(text)
        print(text)


# --------------------------------------------------------------------------------------------
# Describing and converting values (never raising)
# --------------------------------------------------------------------------------------------

def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _is_meta(value: Any) -> bool:
    try:
        return _is_tensor(value) and bool(value.is_meta)
    except Exception:
        return False


def _safe_repr(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shape_str(shape: Any) -> str:
    try:
        return str(tuple(int(s) for s in shape))
    except Exception:
        return _safe_repr(shape)


def describe_value(value: Any) -> str:
    """A short phrase for what a learner returned: "a float16 tensor of shape (2, 3)", "the string '42'"."""
    try:
        if value is None:
            return "None"
        if value is Ellipsis:
            return "... (Ellipsis)"
        if isinstance(value, bool) or isinstance(value, np.bool_):
            return f"the bool {bool(value)}"
        if isinstance(value, str):
            return f"the string {_safe_repr(value, 40)}"
        if isinstance(value, bytes):
            return f"the bytes {_safe_repr(value, 40)}"
        if _is_tensor(value):
            dtype = str(value.dtype).replace("torch.", "")
            where = "" if value.device.type == "cpu" else f" on the {value.device.type} device"
            if value.dim() == 0 and not _is_meta(value):
                return f"a 0-d {dtype} tensor ({_fmt(value.detach().cpu().float().item() if value.is_floating_point() else value.item())})"
            return f"a {dtype} tensor of shape {_shape_str(value.shape)}{where}"
        if isinstance(value, np.ndarray):
            return f"a NumPy array of shape {value.shape} and dtype {value.dtype}"
        if isinstance(value, (np.integer, np.floating)):
            return f"the number {_fmt(value)} ({type(value).__name__})"
        if isinstance(value, int):
            text = str(value) if abs(value) < 10**15 else f"{value:.3e}"
            return f"the int {text}"
        if isinstance(value, float):
            return "NaN" if math.isnan(value) else f"the float {_fmt(value)}"
        if isinstance(value, complex):
            return f"the complex number {value}"
        if isinstance(value, types.GeneratorType):
            return "a generator (wrap it in list(...) or torch.stack(...), or return instead of yield)"
        if isinstance(value, (list, tuple)):
            return f"a {type(value).__name__} of {len(value)} items {_safe_repr(value, 50)}"
        if isinstance(value, dict):
            return f"a dict with {len(value)} keys"
        if callable(value):
            return f"a function or callable ({_safe_repr(value, 40)}): did you return the function instead of calling it?"
        return f"an object of type {type(value).__name__}"
    except Exception:
        return f"an object of type {type(value).__name__}"


def to_numpy(value: Any) -> Any:
    """Convert torch tensors (detached, on the CPU) to NumPy; leave other values alone.

    Half and bfloat16 tensors are upcast to float32 first (NumPy has no bfloat16). A tensor
    on the ``meta`` device has no values and is returned unchanged.
    """
    if _is_tensor(value):
        if _is_meta(value):
            return value
        tensor = value.detach()
        if tensor.layout != sys.modules["torch"].strided:
            tensor = tensor.to_dense()
        tensor = tensor.cpu()
        if tensor.dtype in (sys.modules["torch"].float16, sys.modules["torch"].bfloat16):
            tensor = tensor.float()
        return tensor.numpy()
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return value


def _fmt(value: Any) -> str:
    try:
        if isinstance(value, (float, np.floating)):
            return f"{float(value):.6g}"
        if isinstance(value, (np.integer, np.bool_)):
            return repr(value.item())
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
            return f"{value:.3e}"
        return _safe_repr(value)
    except Exception:
        return _safe_repr(value)


_EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23}


def _dtype_name(value: Any) -> str:
    try:
        if _is_tensor(value):
            return str(value.dtype).replace("torch.", "")
        if isinstance(value, (np.ndarray, np.generic)):
            return str(value.dtype)
    except Exception:
        pass
    return ""


def _as_number(value: Any) -> Tuple[Optional[Any], Optional[str]]:
    """``(number, None)`` for a learner's scalar, or ``(None, why it is not a number)``."""
    if isinstance(value, bool) or isinstance(value, np.bool_):
        return None, f"expected a number, got the bool {bool(value)}"
    if isinstance(value, str):
        return None, f"expected a number, got the string {_safe_repr(value, 40)} (write the number without quotes)"
    if _is_tensor(value):
        if _is_meta(value):
            return None, (f"expected a number, got a tensor of shape {_shape_str(value.shape)} on the meta device: "
                          "it has shapes but no values")
        try:
            if value.numel() != 1:
                return None, f"expected a single number, got {describe_value(value)}"
            value = value.detach().cpu()
            value = value.float().item() if value.dtype in (sys.modules["torch"].float16, sys.modules["torch"].bfloat16) else value.item()
        except Exception:
            return None, f"expected a number, got {describe_value(value)}"
    if isinstance(value, np.ndarray):
        if value.size != 1 or not np.issubdtype(value.dtype, np.number):
            return None, f"expected a single number, got {describe_value(value)}"
        value = value.reshape(()).item()
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, bool):
        return None, f"expected a number, got the bool {value}"
    if isinstance(value, complex):
        return None, f"expected a real number, got the complex number {value}"
    if isinstance(value, int):
        return value, None
    if isinstance(value, numbers.Real):
        try:
            number = float(value)
        except Exception:
            return None, f"expected a number, got {describe_value(value)}"
        if math.isnan(number):
            return None, "expected a number, got NaN (a 0/0, or a log or sqrt of a negative value?)"
        return number, None
    return None, f"expected a number, got {describe_value(value)}"


def _numbers_close(got: Any, expected: Any, rtol: float, atol: float) -> bool:
    if isinstance(got, int) and isinstance(expected, int):
        return abs(got - expected) <= atol + rtol * abs(expected)
    try:
        g, e = float(got), float(expected)
    except OverflowError:
        return False
    if math.isinf(g) or math.isinf(e):
        return g == e
    return abs(g - e) <= atol + rtol * abs(e)


def _describe_number(got: Any, expected: Any, rtol: float, atol: float) -> Optional[str]:
    number, problem = _as_number(got)
    if problem is not None:
        return problem
    if _numbers_close(number, expected, rtol, atol):
        return None
    if isinstance(number, float) and math.isinf(number):
        return f"expected {_fmt(expected)}, got {number} (an overflow or a division by zero?)"
    try:
        diff = number - expected
    except Exception:
        diff = None
    text = f"expected {_fmt(expected)}, got {_fmt(number)}"
    if diff is not None:
        text += f" (off by {_fmt(diff)})"
    try:
        if expected >= 0 > number:
            text += "; a count or size cannot be negative"
    except Exception:
        pass
    return text


def _array_from(got: Any, expected: np.ndarray) -> Tuple[Optional[np.ndarray], Optional[str], str]:
    """The learner's answer as an ndarray, or a reason it cannot be one; plus its dtype name."""
    shape = expected.shape
    want = f"expected an array of shape {shape}"
    if _is_meta(got):
        where = "" if tuple(got.shape) == shape else f" (and shape {_shape_str(got.shape)}, not {shape})"
        return None, (f"{want}, got a tensor on the meta device{where}: it has shapes but no values. "
                      "Compute on real (CPU) tensors for this exercise"), ""
    dtype = _dtype_name(got)
    if isinstance(got, (str, bytes)):
        return None, f"{want}, got {describe_value(got)}", ""
    if isinstance(got, types.GeneratorType):
        return None, f"{want}, got {describe_value(got)}", ""
    try:
        converted = to_numpy(got)
    except Exception as error:
        return None, f"{want}, got {describe_value(got)} that could not be read ({type(error).__name__})", ""
    if isinstance(converted, (numbers.Number, np.generic)) and expected.ndim > 0:
        return None, f"{want}, got a single number: {describe_value(got)}", ""
    if not isinstance(converted, np.ndarray):
        if isinstance(converted, (list, tuple)) or isinstance(converted, numbers.Number):
            try:
                converted = np.asarray(converted)
            except Exception:
                return None, f"{want}, got a ragged {type(got).__name__} (rows of different lengths)", ""
        else:
            return None, f"{want}, got {describe_value(got)}", ""
    if converted.dtype == object:
        if isinstance(got, (list, tuple)):
            return None, f"{want}, got a {type(got).__name__} that is not a grid of numbers (ragged, or holding non-numbers)", ""
        return None, f"{want}, got {describe_value(got)}", ""
    if converted.dtype.kind in "USa":
        return None, f"{want}, got strings ({describe_value(got)}); strings are never numbers here", ""
    return converted, None, dtype


def _describe_array(got: Any, expected: np.ndarray, rtol: float, atol: float) -> Optional[str]:
    array, problem, dtype = _array_from(got, expected)
    if problem is not None:
        return problem
    assert array is not None
    if array.shape != expected.shape:
        return f"wrong shape: expected {expected.shape}, got {array.shape}"
    if expected.dtype == np.bool_:
        if array.dtype != np.bool_:
            return f"expected booleans, got an array of dtype {array.dtype}"
        wrong = array != expected
        if not wrong.any():
            return None
        first = tuple(int(i) for i in np.argwhere(wrong)[0])
        return f"wrong values at {int(wrong.sum())} of {wrong.size} entries; first at index {first}: expected {expected[first]!r}, got {array[first]!r}"
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating) and not np.issubdtype(expected.dtype, np.complexfloating):
        return f"expected numbers, got an array of dtype {array.dtype}"
    if array.size == 0:
        return None
    with np.errstate(all="ignore"):
        g = array.astype(np.complex128 if np.iscomplexobj(array) or np.iscomplexobj(expected) else np.float64)
        e = expected.astype(g.dtype)
        close = np.isclose(g, e, rtol=rtol, atol=atol, equal_nan=False)
        close |= np.isnan(g) & np.isnan(e)
        if close.all():
            return None
        first = tuple(int(i) for i in np.argwhere(~close)[0])
        diff = np.abs(g - e)
        n_nan = int(np.isnan(g).sum() - np.isnan(e).sum())
        largest = f"{n_nan} entries are NaN" if n_nan > 0 else f"largest difference {np.nanmax(diff):.3g}"
        text = (f"wrong values at {int((~close).sum())} of {close.size} entries; first at index {first}: "
                f"expected {_fmt(expected[first])}, got {_fmt(array[first])} ({largest})")
        rounding = dtype if dtype in _EPS else ("float32" if array.dtype == np.float32 else "")
        if rounding and n_nan <= 0 and np.isfinite(g).all():
            eps = _EPS[rounding]
            scale = float(np.max(np.abs(e))) if e.size else 1.0
            if np.all(diff <= 64 * eps * max(scale, 1e-30)):
                text += (f"; the differences are only {rounding} rounding: compute in float64 "
                         "(the inputs are float64), or keep the input dtype")
    return text


def _describe_sequence(got: Any, expected: Sequence[Any], rtol: float, atol: float) -> Optional[str]:
    kind = type(expected).__name__
    if _is_tensor(got) or isinstance(got, np.ndarray):
        if _is_meta(got):
            return f"expected a {kind} like {_safe_repr(tuple(expected))}, got a meta tensor (it has shapes but no values)"
        try:
            got = to_numpy(got).tolist()
        except Exception:
            return f"expected a {kind} like {_safe_repr(tuple(expected))}, got {describe_value(got)}"
        if not isinstance(got, list):
            return f"expected a {kind} like {_safe_repr(tuple(expected))}, got a single number {_fmt(got)}"
    if not isinstance(got, (tuple, list)):
        return f"expected a {kind} like {_safe_repr(tuple(expected))}, got {describe_value(got)}"
    if len(got) != len(expected):
        return f"expected {len(expected)} items {_safe_repr(tuple(expected))}, got {len(got)}: {_safe_repr(tuple(got))}"
    for index, (g, e) in enumerate(zip(got, expected)):
        problem = describe_mismatch(g, e, rtol, atol)
        if problem is not None:
            return f"item {index}: {problem}"
    return None


def _describe(got: Any, expected: Any, rtol: float, atol: float) -> Optional[str]:
    if got is None and expected is not None:
        return "got None: did the function forget to `return` its result?"
    if _is_tensor(expected):
        expected = to_numpy(expected)
    if isinstance(expected, np.ndarray) and expected.ndim == 0 and np.issubdtype(expected.dtype, np.number):
        expected = expected.item()
    if isinstance(expected, np.ndarray):
        return _describe_array(got, expected, rtol, atol)
    if isinstance(expected, (tuple, list)):
        return _describe_sequence(got, expected, rtol, atol)
    if isinstance(expected, (np.integer, np.floating)):
        expected = expected.item()
    if isinstance(expected, (bool, np.bool_)):
        if isinstance(got, (bool, np.bool_)):
            return None if bool(got) == bool(expected) else f"expected {bool(expected)}, got {bool(got)}"
        return f"expected a bool ({bool(expected)}), got {describe_value(got)}"
    if isinstance(expected, numbers.Real):
        return _describe_number(got, expected, rtol, atol)
    if expected is None:
        return None if got is None else f"expected None, got {describe_value(got)}"
    if isinstance(expected, str):
        if isinstance(got, str):
            return None if got == expected else f"expected {expected!r}, got {_safe_repr(got)}"
        return f"expected the string {expected!r}, got {describe_value(got)}"
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"expected a dict with keys {_safe_repr(sorted(map(str, expected)))}, got {describe_value(got)}"
        missing = [k for k in expected if k not in got]
        extra = [k for k in got if k not in expected]
        if missing or extra:
            return f"expected the keys {_safe_repr(list(expected))}, got {_safe_repr(list(got))}"
        for key in expected:
            problem = describe_mismatch(got[key], expected[key], rtol, atol)
            if problem is not None:
                return f"key {key!r}: {problem}"
        return None
    if type(got) is not type(expected) and not isinstance(got, type(expected)):
        return f"expected {describe_value(expected)}, got {describe_value(got)}"
    try:
        equal = bool(got == expected)
    except Exception as error:
        return f"could not compare your {type(got).__name__} with the expected answer ({type(error).__name__})"
    return None if equal else f"expected {_safe_repr(expected)}, got {_safe_repr(got)}"


def describe_mismatch(got: Any, expected: Any, rtol: float = 1e-6, atol: float = 1e-8) -> Optional[str]:
    """Return ``None`` when ``got`` matches ``expected``, else a one-line description of how it differs.

    Never raises: a value that cannot be compared at all is described, not trusted.
    """
    try:
        return _describe(got, expected, rtol, atol)
    except Exception as error:  # a weird object whose __len__/__array__/__eq__ raised
        return (f"expected {describe_value(expected)}, got {describe_value(got)} "
                f"that could not be compared ({type(error).__name__})")


def _matched_mistake(got: Any, case: Case) -> Optional[str]:
    for wrong, message in case.mistakes or ():
        try:
            if isinstance(wrong, types.FunctionType):
                hit = bool(wrong(got))
            else:
                hit = describe_mismatch(got, wrong, case.rtol, case.atol) is None
        except Exception:
            hit = False
        if hit:
            return message
    return None


# --------------------------------------------------------------------------------------------
# The static pre-check: the obvious route, refused by name before any case runs
# --------------------------------------------------------------------------------------------

_LIBRARIES = ("torch", "numpy", "involution_edu", "functools", "builtins", "scipy", "triton")


def _is_library(func: Any) -> bool:
    try:
        module = str(getattr(func, "__module__", "") or "")
    except Exception:
        return False
    return module.split(".")[0] in _LIBRARIES


def _safe_name(obj: Any) -> str:
    try:
        if isinstance(obj, types.BuiltinFunctionType):
            return str(obj.__name__)
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        if name:
            return str(name)
    except Exception:
        pass
    return type(obj).__name__


def _same(obj: Any, target: Any) -> bool:
    """Identity, seen through bound methods, partials and ``functools.wraps`` wrappers."""
    try:
        if obj is target:
            return True
        func = getattr(obj, "__func__", None)
        if func is not None and (func is target or func is getattr(target, "__func__", object())):
            return func is target or getattr(obj, "__self__", None) is getattr(target, "__self__", None)
        if isinstance(obj, functools.partial) and obj.func is target:
            return True
        if obj is not None and (getattr(obj, "_implementation", None) is target
                                or getattr(target, "_implementation", None) is obj):
            return True  # numpy's dispatcher and the function it wraps
        wrapped = getattr(obj, "__wrapped__", None) if isinstance(obj, types.FunctionType) else None
        return wrapped is not None and wrapped is target
    except Exception:
        return False


def _instance_or_subclass(obj: Any, target: Any) -> bool:
    """``obj`` is an instance of the forbidden class ``target`` (``conv = nn.Conv2d(...)``) or a subclass of it."""
    try:
        if not isinstance(target, type) or target in (object, type):
            return False
        if isinstance(obj, type):
            return obj is not target and issubclass(obj, target)
        return isinstance(obj, target)
    except Exception:
        return False


def _learner_function(obj: Any) -> bool:
    code = getattr(obj, "__code__", None)
    return isinstance(obj, types.FunctionType) and isinstance(code, types.CodeType) and \
        _guard._file_kind(code.co_filename)[0] == _guard.LEARNER


def _checker_function(obj: Any) -> bool:
    code = getattr(obj, "__code__", None)
    if isinstance(obj, types.FunctionType) and str(getattr(obj, "__module__", "") or "").startswith(
            __name__.rsplit(".", 1)[0] + "."):
        return True
    return isinstance(code, types.CodeType) and _guard._file_kind(code.co_filename)[0] in (_guard.CHECKER,
                                                                                           _guard.INTERNAL)


def _codes(code: types.CodeType) -> List[types.CodeType]:
    found, todo = [], [code]
    while todo and len(found) < 64:
        current = todo.pop()
        found.append(current)
        todo.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return found


class _Static:
    """Objects the learner's function names (globals, attribute chains on modules, closure, defaults)."""

    def __init__(self, targets: Sequence[Any], library: bool, allowed: Sequence[Any]):
        self.targets = list(targets)
        self.library = library
        self.allowed = list(allowed)
        self.hits: List[str] = []
        self.seen: set = set()

    def _is_target(self, value: Any) -> Optional[Any]:
        for target in self.targets:
            if _same(value, target) or _instance_or_subclass(value, target):
                return target
        if self.library and callable(value) and not isinstance(value, types.ModuleType):
            module = str(getattr(value, "__module__", "") or getattr(type(value), "__module__", "") or "")
            if module.startswith("involution_edu") and module not in (__name__, _guard.__name__) and \
                    not any(_same(value, a) or value is a for a in self.allowed):
                code = getattr(_guard._unwrap(value), "__code__", None)
                if not isinstance(code, types.CodeType) or \
                        _guard._file_kind(code.co_filename)[0] != _guard.INTERNAL:
                    return value
        return None

    def check(self, value: Any, written: str, where: str) -> bool:
        target = self._is_target(value)
        if target is None:
            return False
        name = _safe_name(target).split(".")[-1]
        label = written if not name or written.split(".")[-1] == name else f"{written} (= {name})"
        label += f" (in your helper {where})" if where else ""
        if label not in self.hits:
            self.hits.append(label)
        return True

    def scan(self, obj: Any, where: str = "", depth: int = 0) -> None:
        """One learner callable: its names, closure and defaults; one level into learner helpers."""
        if depth > 2 or id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        if any(obj is a or _same(obj, a) for a in self.allowed):
            return  # a helper the exercise allows: whatever it uses is allowed
        if isinstance(obj, functools.partial):
            self.check(obj.func, _safe_name(obj.func), where)
            for value in list(obj.args) + list((obj.keywords or {}).values()):
                self.check(value, _safe_name(value), where)
            self.scan(obj.func, where, depth)
            return
        if isinstance(obj, types.MethodType):
            self.check(obj.__func__, _safe_name(obj.__func__), where)
            self.scan(obj.__func__, where, depth)
            self.scan_instance(obj.__self__, where, depth)
            return
        if isinstance(obj, type):
            for klass in obj.__mro__:
                for value in list(vars(klass).values()):
                    value = _guard._unwrap(value)
                    if _learner_function(value):
                        self.scan(value, where, depth + 1)
            return
        if not isinstance(obj, types.FunctionType):
            if callable(obj) and not isinstance(obj, (types.BuiltinFunctionType, types.ModuleType)):
                self.scan_instance(obj, where, depth)
            return
        wrapped = getattr(obj, "__wrapped__", None)
        if wrapped is not None:
            self.check(wrapped, _safe_name(wrapped), where)
            self.scan(wrapped, where, depth)
        if _checker_function(obj):  # a checker's wrapper: only the learner's callables inside count
            for cell in obj.__closure__ or ():
                try:
                    value = cell.cell_contents
                except ValueError:
                    continue
                if callable(value) and not isinstance(value, type) and not _is_library(value):
                    self.check(value, _safe_name(value), where)
                    self.scan(value, where, depth)
            return
        if not _learner_function(obj):
            return
        self.scan_function(obj, where, depth)

    def scan_instance(self, obj: Any, where: str, depth: int) -> None:
        self.scan(type(obj), where, depth)
        try:
            attributes = dict(vars(obj))
        except Exception:
            return
        attributes.update(attributes.get("_modules") or {})
        for name, value in attributes.items():
            if not name.startswith("__"):
                self.check(value, f"self.{name}", where)

    def scan_function(self, func: types.FunctionType, where: str, depth: int) -> None:
        glob = func.__globals__
        builtin_ns = glob.get("__builtins__", builtins)
        if isinstance(builtin_ns, types.ModuleType):
            builtin_ns = vars(builtin_ns)
        helpers: List[Tuple[Any, str]] = []
        for value in list(func.__defaults__ or ()) + list((func.__kwdefaults__ or {}).values()):
            self.check(value, _safe_name(value), where)
            if isinstance(value, (tuple, list, dict)):
                for item in (value.values() if isinstance(value, dict) else value):
                    self.check(item, _safe_name(item), where)
        closure: Dict[str, Any] = {}
        for name, cell in zip(func.__code__.co_freevars, func.__closure__ or ()):
            try:
                value = closure[name] = cell.cell_contents
            except ValueError:
                continue
            if not self.check(value, name, where) and _learner_function(value):
                helpers.append((value, name))
        for code in _codes(func.__code__):
            current: Any = None
            written = ""
            for instruction in dis.get_instructions(code):
                op, arg = instruction.opname, instruction.argval
                if op in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(arg, str):
                    current = glob.get(arg, builtin_ns.get(arg)) if arg in glob or arg in builtin_ns else None
                    written = arg
                    if current is not None and not self.check(current, written, where):
                        if _learner_function(current) or isinstance(current, (functools.partial, type)) and \
                                not _is_library(current):
                            helpers.append((current, arg))
                        elif not isinstance(current, types.ModuleType):
                            current = None
                elif op == "LOAD_DEREF" and isinstance(arg, str) and isinstance(closure.get(arg), types.ModuleType):
                    current, written = closure[arg], arg
                elif op in ("LOAD_ATTR", "LOAD_METHOD") and isinstance(arg, str) and \
                        isinstance(current, types.ModuleType):
                    current = getattr(current, arg, None)
                    written = f"{written}.{arg}"
                    if current is not None and self.check(current, written, where):
                        current = None
                    elif not isinstance(current, types.ModuleType):
                        current = None
                elif op not in ("CACHE", "EXTENDED_ARG", "PRECALL", "PUSH_NULL", "NOP"):
                    current = None
        for helper, name in helpers:
            self.scan(helper, _safe_name(helper) if not where else where, depth + 1)


def _static_targets(compiled: Optional[_guard.CompiledRule]) -> List[Any]:
    if compiled is None:
        return []
    return [obj for obj in compiled.keep if not isinstance(obj, types.CodeType)]


def find_shortcuts(candidate: Any, forbidden: Sequence[Any], *, library: bool = False,
                   allow: Sequence[Any] = ()) -> List[str]:
    """The forbidden objects the learner's ``candidate`` names, as written (e.g. ``["F.conv2d"]``).

    A small static pre-check, run before any case so the obvious route is refused by name: the
    objects the function's code loads from its globals and builtins (also along a module
    attribute chain such as ``torch.nn.functional.conv2d``), its closure and defaults, and the
    same one level into the learner's own helpers. ``forbidden`` holds objects (matched by
    identity, also instances and subclasses of a forbidden class) and dotted names; ``".name"``
    strings are left to the run-time guard. It never refuses a learner-defined function because
    of its name. With ``library=True`` any ``involution_edu`` callable except ``allow`` counts.
    Everything else (names built at run time, ``exec``, ...) is the run-time guard's job
    (:mod:`.guard`). Never raises; returns ``[]`` when nothing forbidden is found.
    """
    try:
        targets = []
        for item in forbidden or ():
            if isinstance(item, str):
                if item.startswith("."):
                    continue
                item = _guard.resolve(item)
                if item is None:
                    continue
            targets.append(item)
        if not targets and not library:
            return []
        static = _Static(targets, library, [_guard.resolve(a) if isinstance(a, str) else a for a in allow])
        if not _checker_function(candidate) and static.check(candidate, _safe_name(candidate), ""):
            return static.hits
        static.scan(candidate)
        return static.hits
    except Exception:
        return []


# --------------------------------------------------------------------------------------------
# Running the cases
# --------------------------------------------------------------------------------------------

def _library_answer(candidate: Any, allowed: Sequence[Any] = ()) -> Optional[str]:
    """The name of the ``involution_edu`` function that ``candidate`` is (the library's answer or a
    checker's oracle handed over as the learner's function), seen through partials, bound methods
    and the checkers' own ``functools.wraps`` wrappers; ``None`` for anything else, and for what the
    exercise allows (a broken function it hands out to be fixed is judged by the cases)."""
    target = candidate
    for _ in range(8):
        inner = getattr(target, "func", None) if isinstance(target, functools.partial) else \
            getattr(target, "__func__", None) or getattr(target, "__wrapped__", None)
        if inner is None or inner is target:
            break
        target = inner
    module = str(getattr(target, "__module__", "") or "")
    qualname = str(getattr(target, "__qualname__", None) or getattr(target, "__name__", "?"))
    if not isinstance(target, (types.FunctionType, types.BuiltinFunctionType, type)) or \
            not (module == "involution_edu" or module.startswith("involution_edu.")):
        return None
    if "<locals>" in qualname and module.startswith(__name__.rsplit(".", 1)[0] + "."):
        return None  # a wrapper a checker made around the learner's function (the guard watches inside it)
    code = getattr(target, "__code__", None)
    if any(target is a or _same(target, a) or (code is not None and code is a) for a in allowed):
        return None
    return f"{module}.{qualname}"


def _raise_above_code(candidate: Any) -> bool:
    """True when the candidate's source has ``raise NotImplementedError`` above more code."""
    try:
        func = candidate
        for _ in range(4):
            if isinstance(func, functools.partial):
                func = func.func
            elif isinstance(func, types.MethodType):
                func = func.__func__
            elif getattr(func, "__wrapped__", None) is not None:
                func = func.__wrapped__
            else:
                break
        if not isinstance(func, types.FunctionType):
            func = getattr(type(func), "forward", None) or getattr(type(func), "__call__", None)
        lines = inspect.getsource(func).splitlines()
    except Exception:
        return False
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("raise NotImplementedError"):
            indent = len(line) - len(line.lstrip())
            for after in lines[index + 1:]:
                code = after.strip()
                if not code or code.startswith("#"):
                    continue
                return len(after) - len(after.lstrip()) >= indent
            return False
    return False


def _is_stub_raise(error: BaseException) -> bool:
    """True when ``raise NotImplementedError`` was written in the learner's (or a stub's) code.

    False when the innermost Python frame is library code, or its source line does not raise
    NotImplementedError (a C++ op, e.g. "Could not run 'aten::...' with arguments from the
    'Meta' backend", raised under the learner's call). Unknown source counts as a stub.
    """
    try:
        tb = error.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is None:
            return True
        frame = tb.tb_frame
        if _is_library(types.SimpleNamespace(__module__=frame.f_globals.get("__name__", ""))) and \
                not str(frame.f_globals.get("__name__", "")).startswith(__name__.rsplit(".", 1)[0]):
            return False
        line = linecache.getline(frame.f_code.co_filename, tb.tb_lineno, frame.f_globals)
        return not line.strip() or "NotImplementedError" in line
    except Exception:
        return True


def _first_line(error: BaseException) -> str:
    try:
        text = str(error).strip()
    except Exception:
        return ""
    return text.splitlines()[0] if text else ""


def _argument_names(candidate: Any, case: "Case") -> Tuple[List[str], List[Any]]:
    """Names for the case's arguments (the learner's parameter names when they can be read)."""
    values = list(case.args) + list(case.kwargs.values())
    names = [f"argument {i + 1}" for i in range(len(case.args))] + [str(k) for k in case.kwargs]
    try:
        parameters = list(inspect.signature(candidate).parameters.values())
        positional = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        for i in range(min(len(case.args), len(positional))):
            names[i] = positional[i]
    except Exception:
        pass
    return names, values


def _describe_inputs(case: "Case") -> str:
    parts = []
    for value in list(case.args) + [v for v in case.kwargs.values()]:
        if isinstance(value, (bool, int, float, str)) or value is None:
            parts.append(_safe_repr(value, 30))
        elif isinstance(value, (tuple, list)) and len(value) <= 8 and all(isinstance(v, (int, float, bool)) for v in value):
            parts.append(_safe_repr(value, 40))
        else:
            parts.append(describe_value(value))
    keys = [f"{k}=" for k in case.kwargs]
    labels = [""] * len(case.args) + keys
    return ", ".join(f"{label}{part}" for label, part in zip(labels, parts)) or "no arguments"


_OK, _ERROR, _REFUSED, _TIMEOUT = "ok", "error", "refused", "timeout"


def _from_dispatch(error: BaseException) -> bool:
    """True when the error passed through the guard's dispatch mode (worth a run without it)."""
    tb = error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name in ("__torch_dispatch__", "dispatch_slow") and code.co_filename == _guard.__file__:
            return True
        tb = tb.tb_next
    return False


def _call_guarded(candidate: Callable[..., Any], case: "Case", compiled: Optional[_guard.CompiledRule],
                  seconds: float) -> Tuple[str, Any]:
    """Run one case: ``(kind, value)`` with kind ok/error/refused/timeout. Never leaves a profiler,
    a mode or a timer installed (also on KeyboardInterrupt, which propagates)."""
    end = time.monotonic() + seconds
    use_dispatch = True
    for attempt in range(2):
        guard = _guard.Guard(compiled, use_dispatch=use_dispatch) if compiled is not None else None
        left = end - time.monotonic()
        if left <= 0:
            return _TIMEOUT, None
        try:
            with _guard.deadline(left):
                if guard is None:
                    result = candidate(*case.args, **case.kwargs)
                else:
                    result = guard.call(candidate, case.args, case.kwargs)
        except _guard.DispatchBudgetExceeded:
            if guard is not None and guard.refused:
                return _REFUSED, guard.refused
            use_dispatch = False  # loop-heavy tensor code: the function mode and the profiler only
            continue
        except _guard.ForbiddenCall as error:
            return _REFUSED, (guard.refused if guard is not None and guard.refused else error.label)
        except _guard.TimeLimitExceeded:
            if guard is not None and guard.refused:
                return _REFUSED, guard.refused
            return _TIMEOUT, None
        except (Exception, SystemExit) as error:
            if guard is not None and guard.refused:
                return _REFUSED, guard.refused
            if attempt == 0 and use_dispatch and compiled is not None and compiled.needs_torch_modes and \
                    _from_dispatch(error):
                use_dispatch = False  # never let the dispatch mode itself fail a case
                continue
            return _ERROR, error
        if guard is not None and guard.refused:
            return _REFUSED, guard.refused
        return _OK, result
    return _ERROR, RuntimeError("the case could not be run")


def _time_message(title: str, label: str, seconds: float, total: bool) -> str:
    if total:
        head = f"✗ {title}: the check ran for more than {seconds:g} s in all (stopped in {label})"
    else:
        head = f"✗ {title}: {label} ran for more than {seconds:g} s"
    return (head + ": an endless loop? Check that every loop ends (a `while` whose condition never changes, "
            "`k + 2` where `k += 2` was meant), or make the code faster, and run the cell again.")


def _build_rule(rule: Optional[_guard.Rule], forbidden: Sequence[Any], what: str) -> Optional[_guard.Rule]:
    forbidden = tuple(forbidden or ())
    if rule is None and not forbidden:
        return None
    if rule is None:
        return _guard.Rule(what=what or "this computation", forbid=forbidden, library=False)
    if forbidden or (what and not rule.what):
        return _guard.Rule(what=rule.what or what or "this computation", forbid=tuple(rule.forbid) + forbidden,
                           families=tuple(rule.families), allow=tuple(rule.allow), library=rule.library)
    return rule


def run_cases(title: str, candidate: Callable[..., Any], cases: Sequence[Case], *,
              rule: Optional[_guard.Rule] = None,
              random_cases: Optional[Callable[[np.random.Generator], Sequence[Case]]] = None,
              time_limit: Optional[float] = None, total_time_limit: Optional[float] = None,
              side_effects: bool = True, forbidden: Sequence[Any] = (), what: str = "",
              verbose: bool = False, after: Optional[Callable[[], Optional[str]]] = None) -> Verdict:
    """Run ``candidate`` on every case and print one verdict; returns a :class:`Verdict`.

    Args:
        title: the exercise's name in the verdict line.
        candidate: the learner's function (or partial, bound method, callable object).
        cases: the fixed, named cases (their messages teach).
        rule: what the exercise forbids and allows (:class:`~.guard.Rule`), enforced at run time on
            every call the learner's function makes, after a static pre-check of the obvious route.
        random_cases: ``rng -> [Case, ...]``: hidden cases drawn afresh for each call (env
            ``INVOLUTION_EDU_CHECK_SEED`` fixes the seed); a failure names the property
            (``case.why``) and the inputs, never a value to copy.
        time_limit, total_time_limit: seconds per case and in all (default 10 and 30, env
            ``INVOLUTION_EDU_CASE_TIME_LIMIT`` / ``INVOLUTION_EDU_TOTAL_TIME_LIMIT``).
        side_effects: check that the inputs, torch's grad mode and default dtype are unchanged.
        forbidden, what: the old API, mapped onto ``Rule(what, forbid=forbidden, library=False)``.
        verbose: print a line for every passing case.
        after: a last check once every case has passed (a memory measurement, a side effect the
            exercise explains in its own words): it returns ``None``, or the problem, which fails the
            answer with "✗ title: problem".

    The first failing case stops the run. Never raises because of the learner's answer (under
    grading, see :func:`grading`, a failure raises AssertionError after printing).
    """
    say = _Say()
    try:
        passed = _run(say, title, candidate, cases, rule, random_cases, time_limit, total_time_limit,
                      side_effects, forbidden, what, verbose, after)
    except AssertionError:
        if grading():
            raise
        say(f"✗ {title}: the checker could not judge this answer")
        passed = False
    except Exception as error:  # a bug in a checker must not break the learner's notebook
        say(f"✗ {title}: the checker could not judge this answer ({type(error).__name__}: {_first_line(error)})")
        passed = False
    return _finish(passed, say.lines)


def _run(say: _Say, title: str, candidate: Any, cases: Sequence[Case], rule: Optional[_guard.Rule],
         random_cases: Any, time_limit: Optional[float], total_time_limit: Optional[float], side_effects: bool,
         forbidden: Sequence[Any], what: str, verbose: bool,
         after: Optional[Callable[[], Optional[str]]] = None) -> bool:
    if not callable(candidate):
        say(f"✗ {title}: expected a function, got {describe_value(candidate)}")
        return False
    rule = _build_rule(rule, forbidden, what)
    compiled = _guard.compile_rule(rule)
    if compiled is not None:
        # The library's own function handed over whole: judged by the cases first (a broken function
        # the notebook hands out to be fixed gets its teaching message), refused by name if it passes.
        own = _library_answer(candidate, compiled.allowed_keep) if compiled.library else None
        hits = find_shortcuts(candidate, _static_targets(compiled), library=compiled.library,
                              allow=compiled.allowed_keep)
        if hits:
            say(f"✗ {title}: this exercise asks you to write {compiled.what} yourself; "
                f"your function calls {', '.join(hits)}.")
            return False
    case_limit, total_limit = _guard.time_limits(time_limit, total_time_limit)
    started = time.monotonic()
    fixed = list(cases)
    hidden: List[Case] = []
    seed: Optional[int] = None
    for number, case, is_random in _all_cases(fixed, lambda: hidden):
        label = (f"random case {number}/{len(hidden)}" if is_random else f"case {number}/{len(fixed)} '{case.name}'")
        left = total_limit - (time.monotonic() - started)
        if left <= 0:
            say(_time_message(title, label, total_limit, total=True))
            return False
        seconds = min(case_limit, left)
        snapshot = None
        if side_effects and getattr(case, "check_inputs", True):
            names, values = _argument_names(candidate, case)
            snapshot = _guard.Snapshot(names, values)
        if compiled is not None:
            compiled.allow_arguments(list(case.args) + list(case.kwargs.values()))
        try:
            kind, value = _call_guarded(candidate, case, compiled, seconds)
        finally:
            if snapshot is not None:
                change = snapshot.changes()
                snapshot.restore_globals()
        if kind == _REFUSED:
            say(f"✗ {title}: this exercise asks you to write {compiled.what if compiled else 'this'} yourself; "
                f"your function called {value}.")
            return False
        if kind == _TIMEOUT:
            say(_time_message(title, label, seconds if seconds < case_limit else case_limit,
                              total=seconds < case_limit))
            return False
        if kind == _ERROR:
            error = value
            if isinstance(error, NotImplementedError) and _is_stub_raise(error):
                if _raise_above_code(candidate):
                    say(f"… {title}: your code never runs: the `raise NotImplementedError` line sits above it. "
                        "Delete that line and run this cell again.")
                else:
                    say(f"… {title}: not attempted yet (the function raises NotImplementedError). "
                        "Write your solution and run this cell again.")
                return False
            say(f"✗ {title}: {label} raised {type(error).__name__}: {_first_line(error)}")
            if is_random:
                say(f"  with inputs {_describe_inputs(case)}")
            if case.why:
                say(f"  this case checks: {case.why}")
            return False
        got = value
        problem = describe_mismatch(got, case.expected, case.rtol, case.atol)
        if problem is not None:
            mistake = _matched_mistake(got, case)
            if is_random:
                say(f"✗ {title}: a random case failed: {case.why or case.name} with inputs {_describe_inputs(case)}")
                say(f"  {problem}" if not mistake else f"  likely mistake: {mistake}")
                if seed is not None:
                    say(f"  (replay it with INVOLUTION_EDU_CHECK_SEED={seed})")
            else:
                say(f"✗ {title}: {label}: {problem}")
                if mistake:
                    say(f"  likely mistake: {mistake}")
                elif case.why:
                    say(f"  this case checks: {case.why}")
            return False
        if snapshot is not None and change:
            say(f"✗ {title}: your function changed its input: {change}")
            return False
        if verbose:
            say(f"  ✓ {label}")
        if not is_random and number == len(fixed) and random_cases is not None:
            seed = _seed()
            drawn = random_cases(np.random.default_rng(seed))
            hidden.extend(drawn or ())
    extra = f" and {len(hidden)} random cases" if hidden else ""
    if compiled is not None and own is not None:
        say(f"✗ {title}: this exercise asks you to write {compiled.what} yourself; your function is {own}, "
            "the library's own.")
        return False
    problem = after() if after is not None else None
    if problem:
        say(f"✗ {title}: {problem}")
        return False
    say(f"✓ {title}: all {len(fixed)} cases{extra} pass.")
    return True


def _all_cases(fixed: List[Case], hidden: Callable[[], List[Case]]):
    for number, case in enumerate(fixed, start=1):
        yield number, case, False
    number = 0
    while number < len(hidden()):
        number += 1
        yield number, hidden()[number - 1], True


def _seed() -> int:
    text = os.environ.get("INVOLUTION_EDU_CHECK_SEED", "").strip()
    if text:
        try:
            return int(text)
        except ValueError:
            pass
    return int(np.random.SeedSequence().entropy % (2**32))


def compare(label: str, got: Any, expected: Any, rtol: float = 1e-6, atol: float = 1e-8) -> bool:
    """Self-check in the style of nn-zero-to-hero's ``cmp``: exact, approximate, or how far off.

    Prints one line such as ``loops vs reference | exact: True | approx: True | max diff: 0.0``.
    Never raises: a value that is not an array of numbers is reported as such.
    """
    try:
        if _is_meta(got) or _is_meta(expected):
            print(f"{label:<28} | a meta tensor has shapes but no values; nothing to compare")
            return False
        got_np, expected_np = np.asarray(to_numpy(got)), np.asarray(to_numpy(expected))
        if got_np.shape != expected_np.shape:
            print(f"{label:<28} | shapes differ: got {got_np.shape}, expected {expected_np.shape}")
            return False
        exact = bool(np.array_equal(got_np, expected_np))
        approx = bool(np.allclose(got_np, expected_np, rtol=rtol, atol=atol))
        max_diff = float(np.max(np.abs(got_np - expected_np))) if got_np.size else 0.0
        print(f"{label:<28} | exact: {str(exact):5} | approx: {str(approx):5} | max diff: {max_diff:.1e}")
        return approx
    except Exception as error:
        print(f"{label:<28} | could not compare {describe_value(got)} with {describe_value(expected)} "
              f"({type(error).__name__})")
        return False


# --------------------------------------------------------------------------------------------
# Questions that are not code
# --------------------------------------------------------------------------------------------

@dataclass
class Question:
    """A predict-then-run or inline question, checked by :func:`check_answer`.

    Multiple choice: ``choices`` maps keys (``"a"``, ``"b"``, ...) to the choice text,
    ``answer`` is the right key and ``wrong`` explains every other key (all required).
    Numeric: ``choices`` is empty, ``answer`` is a number, ``rtol`` the relative tolerance
    and ``mistakes`` lists ``(value, message)`` for likely wrong numbers.
    ``explanation`` is shown when the answer is right.
    """

    prompt: str
    answer: Any
    explanation: str
    choices: Dict[str, str] = field(default_factory=dict)
    wrong: Dict[str, str] = field(default_factory=dict)
    rtol: float = 0.02
    mistakes: List[Tuple[Any, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError(f"Question: prompt must be a non-empty string, got {self.prompt!r}")
        if not isinstance(self.explanation, str) or not self.explanation.strip():
            raise ValueError(f"Question {self.prompt[:40]!r}: explanation must be a non-empty string")
        if self.choices:
            if self.answer not in self.choices:
                raise ValueError(f"Question {self.prompt[:40]!r}: answer {self.answer!r} is not one of the "
                                 f"choices {sorted(self.choices)}")
            missing = [key for key in self.choices if key != self.answer and not str(self.wrong.get(key, "")).strip()]
            if missing:
                raise ValueError(f"Question {self.prompt[:40]!r}: every wrong choice needs an explanation in "
                                 f"`wrong`; missing for {missing}")
            extra = [key for key in self.wrong if key not in self.choices or key == self.answer]
            if extra:
                raise ValueError(f"Question {self.prompt[:40]!r}: `wrong` has keys {extra} that are not wrong choices")
            if self.mistakes:
                raise ValueError(f"Question {self.prompt[:40]!r}: `mistakes` is for numeric questions; "
                                 "use `wrong` for choices")
        else:
            if self.wrong:
                raise ValueError(f"Question {self.prompt[:40]!r}: `wrong` needs `choices`")
            if isinstance(self.answer, (bool, str)) or not isinstance(self.answer, numbers.Real):
                raise TypeError(f"Question {self.prompt[:40]!r}: a question without choices needs a numeric "
                                f"answer, got {self.answer!r}")
            if not (isinstance(self.rtol, numbers.Real) and self.rtol >= 0):
                raise ValueError(f"Question {self.prompt[:40]!r}: rtol must be a number >= 0, got {self.rtol!r}")
            for item in self.mistakes:
                if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], str)):
                    raise TypeError(f"Question {self.prompt[:40]!r}: mistakes must be (value, message) pairs, "
                                    f"got {item!r}")


def _normalise_choice(answer: str) -> str:
    return answer.strip().strip("()[].:'\" ").strip().lower()


def _check_choice(question: Question, answer: Any, say: Callable[[str], None] = print) -> bool:
    keys = list(question.choices)
    options = ", ".join(repr(k) for k in keys)
    if not isinstance(answer, str):
        say(f"✗ expected one of {options} (a string), got {describe_value(answer)}")
        return False
    picked = _normalise_choice(answer)
    by_key = {str(k).lower(): k for k in keys}
    key = by_key.get(picked)
    if key is None:
        by_text = {str(text).strip().lower(): k for k, text in question.choices.items()}
        key = by_text.get(answer.strip().lower())
    if key is None:
        say(f"✗ {_safe_repr(answer, 30)} is not one of the choices {options}")
        return False
    if key == question.answer:
        say(f"✓ Right ({key}). {question.explanation}")
        return True
    say(f"✗ Not ({key}): {question.wrong.get(key, 'think again')}")
    return False


def _check_number(question: Question, answer: Any, say: Callable[[str], None] = print) -> bool:
    number, problem = _as_number(answer)
    if problem is not None:
        say(f"✗ {problem}")
        return False
    if _numbers_close(number, question.answer, question.rtol, 0.0 if question.answer else 1e-12):
        say(f"✓ Right ({_fmt(number)}). {question.explanation}")
        return True
    for value, message in question.mistakes:
        try:
            if _numbers_close(number, value, question.rtol, 0.0 if value else 1e-12):
                say(f"✗ {_fmt(number)} is not it: {message}")
                return False
        except Exception:
            continue
    say(f"✗ {_fmt(number)} is not it. Check your reasoning and try again.")
    return False


def check_answer(question: Question, answer: Any) -> Verdict:
    """Print a verdict on the learner's ``answer`` to ``question``; ``True`` iff it is right.

    ``None`` or ``...`` -> "not answered yet". A right answer prints ✓ and the explanation;
    a wrong choice prints ✗ and the explanation of that choice; a wrong number names the
    mistake when it matches one. Never raises (strings for numbers, unknown keys, lists, ...),
    except under grading (see :func:`grading`), where a wrong answer raises AssertionError after
    the verdict is printed. Returns a :class:`Verdict`.
    """
    say = _Say()
    try:
        passed = _judge_answer(question, answer, say)
    except Exception as error:
        say(f"✗ could not judge this answer ({type(error).__name__})")
        passed = False
    return _finish(passed, say.lines)


def _judge_answer(question: Any, answer: Any, say: Callable[[str], None]) -> bool:
    if not isinstance(question, Question):
        say(f"✗ check_answer needs a Question, got {describe_value(question)}")
        return False
    if answer is None or answer is Ellipsis:
        hint = f"one of {', '.join(repr(k) for k in question.choices)}" if question.choices else "a number"
        say(f"… not answered yet: replace None with your answer ({hint}) and run this cell again.")
        return False
    if question.choices:
        return _check_choice(question, answer, say)
    return _check_number(question, answer, say)
