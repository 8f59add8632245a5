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
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "Case",
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
    """

    name: str
    args: Tuple[Any, ...]
    expected: Any
    why: str = ""
    kwargs: Dict[str, Any] = field(default_factory=dict)
    rtol: float = 1e-6
    atol: float = 1e-8
    mistakes: List[Tuple[Any, str]] = field(default_factory=list)


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
# The shortcut guard
# --------------------------------------------------------------------------------------------

_LOAD_NAME_OPS = {"LOAD_GLOBAL", "LOAD_NAME"}
# Names through which code can reach an attribute or a global from a string.
_DYNAMIC_ACCESS = {"getattr", "eval", "exec", "compile", "__dict__", "vars", "attrgetter", "methodcaller", "globals",
                   "locals", "import_module", "__import__", "modules", "__getattribute__", "get_attr"}
_ATTR_OPS = {"LOAD_ATTR", "LOAD_METHOD"}
_STORE_OPS = {"STORE_FAST", "STORE_NAME", "STORE_DEREF", "STORE_GLOBAL"}
_MAX_DEPTH = 6


def _static_attr(obj: Any, name: str) -> Any:
    """``getattr`` for modules; ``inspect.getattr_static`` elsewhere (no property code runs)."""
    if isinstance(obj, types.ModuleType):
        return getattr(obj, name)
    value = inspect.getattr_static(obj, name)
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    return value


def _qualified(obj: Any) -> str:
    try:
        if isinstance(obj, types.ModuleType):
            return obj.__name__
        module = getattr(obj, "__module__", None) or ""
        qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or ""
        return f"{module}.{qualname}" if module and qualname else qualname
    except Exception:
        return ""


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


def _same(obj: Any, target: Any) -> bool:
    """Identity, seen through bound methods, partials and ``functools.wraps`` wrappers."""
    try:
        if obj is target:
            return True
        func = getattr(obj, "__func__", None)
        if func is not None and (func is target or func is getattr(target, "__func__", object())):
            self_obj, target_self = getattr(obj, "__self__", None), getattr(target, "__self__", None)
            return func is target or self_obj is target_self
        if isinstance(obj, functools.partial) and obj.func is target:
            return True
        wrapped = getattr(obj, "__wrapped__", None) if isinstance(obj, types.FunctionType) else None
        return wrapped is not None and wrapped is target
    except Exception:
        return False


class _Scanner:
    """Walks the learner's code and the learner's own helpers, collecting forbidden hits."""

    def __init__(self, forbidden: Sequence[Any]):
        self.objects = [f for f in forbidden if not isinstance(f, str)]
        self.attr_names = {f[1:] for f in forbidden if isinstance(f, str) and f.startswith(".")}
        self.dotted = {f for f in forbidden if isinstance(f, str) and not f.startswith(".")}
        self.names = {getattr(o, "__name__", None) for o in self.objects} - {None}
        self.hits: List[str] = []
        self.found: set = set()
        self.seen: set = set()
        self.home_globals: List[Dict[str, Any]] = []

    # -- reporting ------------------------------------------------------------------------
    def _hit(self, written: str, where: str) -> None:
        text = written + (f" (in your helper {where})" if where else "")
        if text not in self.hits:
            self.hits.append(text)

    def check_object(self, obj: Any, written: str, where: str) -> bool:
        for index, target in enumerate(self.objects):
            if _same(obj, target) or _instance_or_subclass(obj, target):
                if (index, where) in self.found:
                    return True
                self.found.add((index, where))
                name = _safe_name(target).split(".")[-1]
                label = written if not name or written.split(".")[-1] == name else f"{written} (= {name})"
                self._hit(label, where)
                return True
        if self.dotted:
            full = _qualified(obj)
            if full in self.dotted or written in self.dotted:
                self._hit(written, where)
                return True
        return False

    # -- walking --------------------------------------------------------------------------
    def is_learners(self, func: Any) -> bool:
        try:
            if getattr(func, "__module__", None) == "__main__":
                return True
            glob = getattr(func, "__globals__", None)
            return any(glob is g for g in self.home_globals)
        except Exception:
            return False

    def scan_callable(self, obj: Any, where: str, depth: int = 0) -> None:
        """Scan a candidate-like object: function, partial, bound method, callable object, module."""
        if depth > _MAX_DEPTH or id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        try:
            if isinstance(obj, functools.partial):
                self.check_object(obj.func, _safe_name(obj.func), where)
                for value in list(obj.args) + list((obj.keywords or {}).values()):
                    self.check_value(value, _safe_name(value), where, depth + 1)
                self.scan_callable(obj.func, where, depth + 1)
                return
            if isinstance(obj, types.MethodType):
                self.check_object(obj.__func__, _safe_name(obj.__func__), where)
                self.scan_callable(obj.__func__, where, depth + 1)
                self.scan_instance(obj.__self__, where, depth + 1)
                return
            if isinstance(obj, types.FunctionType):
                wrapped = getattr(obj, "__wrapped__", None)
                if wrapped is not None:
                    self.check_object(wrapped, _safe_name(wrapped), where)
                    self.scan_callable(wrapped, where, depth + 1)
                if _is_checker_wrapper(obj):
                    self.scan_wrapper(obj, where, depth)
                    return
                self.scan_function(obj, where, depth)
                return
            if isinstance(obj, type):
                self.scan_class(obj, where, depth + 1)
                return
            if callable(obj) and not isinstance(obj, (types.BuiltinFunctionType, types.ModuleType)):
                self.scan_instance(obj, where, depth + 1)
        except Exception:
            pass

    def scan_wrapper(self, func: types.FunctionType, where: str, depth: int) -> None:
        """A checker's own wrapper around the learner's function: only the learner's callables inside count."""
        for cell in func.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if callable(value) and not _is_library(value) and not isinstance(value, type):
                self.check_object(value, _safe_name(value), where)
                self.scan_callable(value, where, depth + 1)

    def scan_class(self, cls: type, where: str, depth: int) -> None:
        if depth > _MAX_DEPTH or id(cls) in self.seen and depth > 1:
            return
        self.seen.add(id(cls))
        for klass in getattr(cls, "__mro__", (cls,)):
            if _is_library(klass) and not self.is_learners_class(klass):
                continue
            for name, value in list(vars(klass).items()):
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                if isinstance(value, types.FunctionType):
                    self.scan_callable(value, where or klass.__name__, depth + 1)

    def scan_instance(self, obj: Any, where: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            return
        self.scan_class(type(obj), where, depth)
        try:
            attributes = dict(vars(obj))
        except Exception:
            return
        modules = attributes.get("_modules")
        if isinstance(modules, dict):
            attributes.update({f"{k}": v for k, v in modules.items()})
        for name, value in attributes.items():
            if name.startswith("__"):
                continue
            self.check_value(value, f"self.{name}", where, depth + 1)

    def check_value(self, value: Any, written: str, where: str, depth: int) -> None:
        """An object the learner's code can reach: forbidden itself, or the learner's own code?"""
        if self.check_object(value, written, where):
            return
        try:
            if isinstance(value, functools.partial) or isinstance(value, types.MethodType):
                self.scan_callable(value, where or written, depth + 1)
            elif isinstance(value, types.FunctionType) and self.is_learners(value):
                self.scan_callable(value, _safe_name(value), depth + 1)
            elif isinstance(value, type) and self.is_learners_class(value):
                self.scan_class(value, _safe_name(value), depth + 1)
            elif (not isinstance(value, (type, types.ModuleType, types.BuiltinFunctionType, types.FunctionType))
                  and self.is_learners_class(type(value))):
                self.scan_instance(value, where or written, depth + 1)
        except Exception:
            pass

    def is_learners_class(self, cls: Any) -> bool:
        try:
            module = cls.__module__
            if module == "__main__":
                return True
            return any(g.get("__name__") == module for g in self.home_globals)
        except Exception:
            return False

    def scan_function(self, func: types.FunctionType, where: str, depth: int) -> None:
        glob = func.__globals__
        if not any(glob is g for g in self.home_globals) and not _is_library(func):
            self.home_globals.append(glob)
        closure = {}
        try:
            for name, cell in zip(func.__code__.co_freevars, func.__closure__ or ()):
                try:
                    closure[name] = cell.cell_contents
                except ValueError:  # empty cell
                    pass
        except Exception:
            pass
        for value in list(func.__defaults__ or ()) + list((func.__kwdefaults__ or {}).values()):
            self.check_value(value, _safe_name(value), where, depth + 1)
        for name, value in closure.items():
            self.check_value(value, name, where, depth + 1)
            if isinstance(value, types.FunctionType) and not self.is_learners(value):
                self.scan_callable(value, where, depth + 1)  # a wrapped candidate: always the learner's
        self.scan_code(func.__code__, glob, closure, where, depth)

    def scan_code(self, code: types.CodeType, glob: Dict[str, Any], closure: Dict[str, Any], where: str,
                  depth: int) -> None:
        if id(code) in self.seen:
            return
        self.seen.add(id(code))
        for name in code.co_names:
            if name in self.attr_names:
                self._hit(f".{name}", where)
        if _DYNAMIC_ACCESS & (set(code.co_names) | set(code.co_varnames)):
            for name in code.co_names:  # e.g. sys.modules["torch.nn.functional"].conv2d, globals()["F"].conv2d
                if name in self.names and name not in _DYNAMIC_ACCESS:
                    self._hit(f".{name} reached by name lookup", where)
            for const in code.co_consts:
                if not isinstance(const, str):
                    continue
                last = const.rsplit(".", 1)[-1]
                if last in self.names or last in self.attr_names or const in self.dotted:
                    self._hit(f"{const!r} looked up by name", where)
        self.scan_instructions(code, glob, closure, where, depth)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self.scan_code(const, glob, closure, where, depth)

    def scan_instructions(self, code: types.CodeType, glob: Dict[str, Any], closure: Dict[str, Any], where: str,
                          depth: int) -> None:
        builtin_ns = glob.get("__builtins__", builtins)
        if isinstance(builtin_ns, types.ModuleType):
            builtin_ns = vars(builtin_ns)
        local: Dict[str, Any] = {}
        current: Any = _MISSING
        written = ""
        import_base: Any = _MISSING
        last_const: Any = None
        previous = ""
        for instruction in dis.get_instructions(code):
            op, arg = instruction.opname, instruction.argval
            if op in _LOAD_NAME_OPS or op in ("LOAD_DEREF", "LOAD_CLASSDEREF", "LOAD_FAST", "LOAD_FAST_CHECK"):
                name = arg if isinstance(arg, str) else ""
                if op in _LOAD_NAME_OPS:
                    current = glob.get(name, builtin_ns.get(name, _MISSING)) if name not in local else local[name]
                elif op in ("LOAD_DEREF", "LOAD_CLASSDEREF"):
                    current = closure.get(name, local.get(name, _MISSING))
                else:
                    current = local.get(name, _MISSING)
                written = name
                if current is not _MISSING:
                    self.check_value(current, written, where, depth)
            elif op in _ATTR_OPS and isinstance(arg, str):
                if current is not _MISSING:
                    try:
                        current = _static_attr(current, arg)
                    except Exception:
                        current = _MISSING
                written = f"{written}.{arg}" if written else f".{arg}"
                if current is not _MISSING:
                    self.check_value(current, written, where, depth)
                elif self.dotted and written in self.dotted:
                    self._hit(written, where)
            elif op == "IMPORT_NAME" and isinstance(arg, str):
                module = sys.modules.get(arg)
                if module is None:
                    try:
                        module = __import__(arg)
                        module = sys.modules.get(arg, module)
                    except Exception:
                        module = None
                if module is not None:
                    self.check_value(module, arg, where, depth)
                top = sys.modules.get(arg.split(".")[0])
                import_base = module if last_const else top
                current, written = import_base, (arg if last_const else arg.split(".")[0])
            elif op == "IMPORT_FROM" and isinstance(arg, str):
                base = import_base
                try:
                    current = getattr(base, arg)
                except Exception:
                    current = _MISSING
                written = f"{getattr(base, '__name__', '?')}.{arg}"
                if current is not _MISSING:
                    self.check_value(current, written, where, depth)
            elif op in ("SWAP", "ROT_TWO") and previous == "IMPORT_FROM":
                import_base = current
            elif op in _STORE_OPS and isinstance(arg, str):
                if previous in ("IMPORT_NAME", "IMPORT_FROM", "POP_TOP", "SWAP", "ROT_TWO") and current is not _MISSING:
                    local[arg] = current
                else:
                    local.pop(arg, None)
                current, written = _MISSING, ""
            else:
                if op == "LOAD_CONST":
                    last_const = arg
                if op not in ("PRECALL", "CACHE", "EXTENDED_ARG", "PUSH_NULL", "POP_TOP", "SWAP", "ROT_TWO",
                              "COPY", "NOP"):
                    current, written = _MISSING, ""
            if op != "LOAD_CONST" and op not in ("PUSH_NULL", "CACHE", "EXTENDED_ARG"):
                previous = op
            if op == "IMPORT_NAME":
                last_const = None


_MISSING = object()
_LIBRARIES = ("torch", "numpy", "involution_edu", "functools", "builtins", "scipy", "triton")


def _is_library(func: Any) -> bool:
    try:
        module = str(getattr(func, "__module__", "") or "")
    except Exception:
        return False
    return module.split(".")[0] in _LIBRARIES


def _is_checker_wrapper(func: Any) -> bool:
    """A function of a checker module (e.g. one that wraps the learner's function in ``no_grad``)."""
    try:
        if str(getattr(func, "__module__", "") or "").startswith(__name__.rsplit(".", 1)[0]):
            return True
        filename = os.path.abspath(func.__code__.co_filename)
        return os.path.dirname(filename) == os.path.dirname(os.path.abspath(__file__))
    except Exception:
        return False


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


def find_shortcuts(candidate: Any, forbidden: Sequence[Any]) -> List[str]:
    """The forbidden names the learner's ``candidate`` uses, as written (e.g. ``["F.conv2d"]``).

    ``forbidden`` holds objects (matched by identity, also through bound methods, partials and
    wrappers) and strings: ``".name"`` for any attribute or method of that name
    (``".softmax"`` catches ``x.softmax(...)`` and ``torch.softmax``), or a dotted full name
    such as ``"torch.nn.functional.conv2d"``.

    Inspected: the candidate itself, the names its bytecode loads from its globals, builtins
    and closure cells, attribute chains on them (``torch.nn.functional.conv2d``), imports
    inside the function (``from torch.nn.functional import conv2d as c``), default arguments,
    nested functions and lambdas, ``functools.partial`` and bound methods, callable objects
    and ``nn.Module`` instances (their class's methods and attributes), and, recursively, the
    learner's own helper functions (same globals or defined in ``__main__``), each visited once.
    Never raises; returns ``[]`` when nothing forbidden is found.
    """
    try:
        forbidden = list(forbidden or ())
        if not forbidden:
            return []
        scanner = _Scanner(forbidden)
        if scanner.check_object(candidate, _safe_name(candidate), ""):
            return scanner.hits
        glob = getattr(candidate, "__globals__", None)
        inner = candidate
        for _ in range(4):
            if isinstance(inner, functools.partial):
                inner = inner.func
            elif isinstance(inner, types.MethodType):
                inner = inner.__func__
            else:
                break
        glob = getattr(inner, "__globals__", glob)
        if isinstance(glob, dict):
            if not _is_library(inner):
                scanner.home_globals.append(glob)
        elif not isinstance(candidate, types.FunctionType):
            module = sys.modules.get(getattr(type(candidate), "__module__", ""), None)
            if module is not None and module.__name__ not in ("builtins",):
                scanner.home_globals.append(vars(module))
        scanner.scan_callable(candidate, "")
        return scanner.hits
    except Exception:
        return []


# --------------------------------------------------------------------------------------------
# Running the cases
# --------------------------------------------------------------------------------------------

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


def run_cases(title: str, candidate: Callable[..., Any], cases: Sequence[Case], *, forbidden: Sequence[Any] = (),
              what: str = "", verbose: bool = False) -> "Verdict":
    """Run ``candidate`` on every case and print one verdict. Returns ``True`` iff all pass.

    Args:
        title: the exercise's name in the verdict line.
        candidate: the learner's function (or partial, bound method, callable object).
        cases: the table of :class:`Case`.
        forbidden: objects and ``".name"``/dotted strings the exercise forbids; see
            :func:`find_shortcuts`. Checked before any case runs.
        what: what the exercise asks the learner to write, for the shortcut message
            ("the convolution loops").
        verbose: print a line for every passing case.

    The first failing case stops the run (the learner fixes one thing at a time); the message
    names the case and the mistake (when a :attr:`Case.mistakes` entry matches) or why the
    case matters. Never raises because of the learner's answer.
    """
    say = _Say()
    try:
        if not callable(candidate):
            say(f"✗ {title}: expected a function, got {describe_value(candidate)}")
            return _finish(False, say.lines)
        if forbidden:
            hits = find_shortcuts(candidate, forbidden)
            if hits:
                say(f"✗ {title}: this exercise asks you to write {what or 'this computation'} yourself; "
                      f"your function calls {', '.join(hits)}.")
                return _finish(False, say.lines)
        for number, case in enumerate(cases, start=1):
            label = f"case {number}/{len(cases)} '{case.name}'"
            try:
                got = candidate(*case.args, **case.kwargs)
            except NotImplementedError as error:
                if not _is_stub_raise(error):  # raised by a library call, e.g. an op without a meta kernel
                    say(f"✗ {title}: {label} raised NotImplementedError: {_first_line(error)}")
                    if case.why:
                        say(f"  this case checks: {case.why}")
                    return _finish(False, say.lines)
                if _raise_above_code(candidate):
                    say(f"… {title}: your code never runs: the `raise NotImplementedError` line sits above it. "
                          "Delete that line and run this cell again.")
                else:
                    say(f"… {title}: not attempted yet (the function raises NotImplementedError). "
                          "Write your solution and run this cell again.")
                return _finish(False, say.lines)
            except Exception as error:  # the learner's bug, reported without a traceback
                say(f"✗ {title}: {label} raised {type(error).__name__}: {_first_line(error)}")
                if case.why:
                    say(f"  this case checks: {case.why}")
                return _finish(False, say.lines)
            problem = describe_mismatch(got, case.expected, case.rtol, case.atol)
            if problem is not None:
                say(f"✗ {title}: {label}: {problem}")
                mistake = _matched_mistake(got, case)
                if mistake:
                    say(f"  likely mistake: {mistake}")
                elif case.why:
                    say(f"  this case checks: {case.why}")
                return _finish(False, say.lines)
            if verbose:
                say(f"  ✓ {label}")
        say(f"✓ {title}: all {len(cases)} cases pass.")
        return _finish(True, say.lines)
    except AssertionError:
        if grading():
            raise
        say(f"✗ {title}: the checker could not judge this answer")
        return _finish(False, say.lines)
    except Exception as error:  # a bug in a checker must not break the learner's notebook
        say(f"✗ {title}: the checker could not judge this answer ({type(error).__name__}: {_first_line(error)})")
        return _finish(False, say.lines)


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
