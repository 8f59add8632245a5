"""The run-time guard of the exercise checkers: what the learner's code *does*, not what it is named.

A :class:`Rule` says what an exercise forbids and allows. While the learner's function runs on a
case, :class:`Guard` watches every call it makes, however the call was reached (an alias, a
name built at run time, ``exec`` of a string, ``pydoc.locate``, a function kept in a dict or a
default, a helper in the learner's own ``.py`` file, a global rebound after the check began):

* ``sys.setprofile`` sees every Python function call and every call of a C function;
* a ``TorchFunctionMode`` sees every torch function and Tensor method (``torch.ops.*`` too);
* a ``TorchDispatchMode`` sees every aten op and custom op (``torch.ops.involution_edu.*``),
  also those a C++ function runs inside (``F.scaled_dot_product_attention`` -> ``aten._softmax``).
  Autograd sits above the dispatch mode and keeps working; if a case fails with the dispatch
  mode on, the framework runs it again with the function mode only (never a crash).

A forbidden call raises :class:`ForbiddenCall` (a ``BaseException``, so the learner's
``except Exception`` cannot swallow it) and is recorded, so the verdict is a refusal even if
the learner's code catches it anyway.

Which calls are judged (the policy)
-----------------------------------
Every Python frame is one of: *learner* code (a notebook cell, ``<string>`` from ``exec``, a
test file, a helper module in any folder that is not an installed library), *library* code
(the standard library and site-packages: numpy, scipy, torch, ...), *package* code
(``involution_edu``), *checker* code (``involution_edu.exercises``), *transparent* frames
(``nn.Module.__call__``, ``functools``, ``contextlib``, torch's decorator and override shims:
they only pass a call on) and the framework's *internal* frames (this module and
``framework.py``: never judged, and invisible in the walk).

1. A call is judged only if it is **reached from the learner's code**: walking up the stack from
   the call towards the checker (skipping library, package, transparent and internal frames),
   the first learner-or-checker frame is the learner's (or the walk reaches the candidate call
   itself). What a checker's own wrapper does before or after calling the learner's function is
   never judged.
2. It is not judged if an **allowed** call is on the stack between the learner and it (a helper
   the prompt says to reuse, and everything that helper runs), nor inside a torch or C function
   listed as allowed.
3. Calls into **numpy, scipy, the standard library and other libraries** are judged at the
   learner's *boundary* only: the function the learner's code called (through transparent
   frames). What a library does inside is the library's business: ``np.pad`` or
   ``np.einsum`` may use ``as_strided`` internally without tripping the ``"unfold"`` family.
4. Calls into **torch or involution_edu** are judged at any depth below the learner's code:
   ``model(x)`` reaches ``Conv2d.forward -> F.conv2d`` through ``nn.Module.__call__``, and a
   custom op or an oracle reached through torch machinery is still the learner's call. Torch's
   own Python functions hide their internals (a function mode is off inside the function it is
   handling), and at the aten level ``as_strided`` is not judged (autograd uses it for views);
   ``torch.as_strided`` and ``Tensor.as_strided`` are judged as functions.
5. Old-style ``".name"`` strings forbid calls of *non-learner* functions and methods with that
   ``__name__`` made **directly** by learner code, so a learner's own ``correlate2d``,
   ``unfold`` or ``forward`` is never refused.
6. ``library=True`` forbids every function whose code lives in ``involution_edu`` and every
   ``involution_edu`` custom op, except the allowed ones, the framework's own internals, and the
   methods of objects the checker passes in as arguments (an ``nn.Module`` to evaluate is the
   learner's to call).

Cost: the profiler does one dict lookup per call event (verdicts are cached per code object and
per C function); the modes one dict lookup per torch function or aten op. The stack is walked
only when a lookup matches.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import os
import re
import signal
import sys
import sysconfig
import threading
import time
import types
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

__all__ = [
    "FAMILIES",
    "DispatchBudgetExceeded",
    "ForbiddenCall",
    "Guard",
    "Rule",
    "TimeLimitExceeded",
    "compile_rule",
    "deadline",
    "resolve",
    "short_time_limits",
    "time_limits",
]


@dataclass(frozen=True)
class Rule:
    """What an exercise forbids and allows, enforced at RUN TIME on every call the learner's function makes.

    Attributes:
        what: what the learner must write themselves, for the message: ``"the convolution loops"``.
        forbid: objects (functions, classes, methods, modules) or dotted names
            (``"torch.nn.functional.conv2d"``); ``".name"`` strings forbid direct calls of non-learner
            functions with that ``__name__`` (the old API).
        families: names from :data:`FAMILIES` (``"convolution"``, ``"unfold"``, ``"softmax"``,
            ``"autograd"``, ``"torch"``, ``"involution"``, ``"grad_clip"``).
        allow: objects or dotted names the learner may call although the rule covers them; everything
            executed inside an allowed call is allowed too.
        library: forbid every function defined in ``involution_edu`` (library and checkers, private
            oracles included) except ``allow``.
    """

    what: str
    forbid: Sequence[Any] = ()
    families: Sequence[str] = ()
    allow: Sequence[Any] = ()
    library: bool = True


class ForbiddenCall(BaseException):
    """Raised inside the learner's code at a forbidden call; ``label`` names it."""

    def __init__(self, label: str):
        super().__init__(label)
        self.label = label


class DispatchBudgetExceeded(BaseException):
    """The case ran more aten ops than the dispatch mode's budget: run it again with the function mode only."""


#: aten ops one case may run under the TorchDispatchMode (a Python call each, ~10-25 us) before the
#: framework runs it again without it (loop-heavy tensor code; env INVOLUTION_EDU_DISPATCH_BUDGET).
def dispatch_budget() -> int:
    try:
        return max(0, int(os.environ.get("INVOLUTION_EDU_DISPATCH_BUDGET", "10000")))
    except ValueError:
        return 10000


class TimeLimitExceeded(BaseException):
    """Raised inside the learner's code when a time limit runs out."""


# --------------------------------------------------------------------------------------------
# Resolving names and the families
# --------------------------------------------------------------------------------------------

def resolve(dotted: str, import_modules: bool = True) -> Any:
    """The object a dotted name refers to (``"torch.nn.functional.conv2d"``), or ``None``.

    ``import_modules=False`` looks only in modules already imported (nothing is loaded).
    """
    parts = [p for p in str(dotted).split(".") if p]
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        if not import_modules:
            obj = sys.modules.get(module_name)
            if obj is None:
                continue
        else:
            try:
                obj = importlib.import_module(module_name)
            except Exception:
                continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
            return obj
        except Exception:
            return None
    return None


_CONV_NAMES = re.compile(r"convolution|(^|_)conv(\d|_t|_depthwise|$)|slow_conv|thnn_conv")
_UNFOLD_NAMES = re.compile(r"im2col|col2im|(^|_)unfold|(^|_)fold($|_)")
_SOFTMAX_NAMES = re.compile(r"softmax|scaled_dot_product|flash_attention|efficient_attention|multi_head_attention")
_UNFOLD_FUNCTION_NAMES = re.compile(r"im2col|col2im|(^|_)unfold|(^|_)fold($|_)|as_strided")

#: family -> (dotted names of the Python/C callables, aten-name pattern at the function level,
#: aten-name pattern at the dispatch level). Names that do not resolve here are skipped.
FAMILIES: Dict[str, Tuple[Tuple[str, ...], Optional["re.Pattern[str]"], Optional["re.Pattern[str]"]]] = {
    "convolution": (
        tuple(f"torch.nn.functional.{n}" for n in ("conv1d", "conv2d", "conv3d", "conv_transpose1d",
                                                   "conv_transpose2d", "conv_transpose3d", "conv_tbc")) +
        tuple(f"torch.{n}" for n in ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                                     "conv_transpose3d", "conv_tbc", "convolution", "_convolution",
                                     "mkldnn_convolution", "cudnn_convolution")) +
        tuple(f"torch.nn.{n}" for n in ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
                                        "ConvTranspose3d", "LazyConv1d", "LazyConv2d", "LazyConv3d")) +
        ("numpy.convolve", "numpy.correlate") +
        tuple(f"scipy.signal.{n}" for n in ("convolve", "correlate", "oaconvolve", "fftconvolve", "convolve2d",
                                            "correlate2d", "choose_conv_method")) +
        tuple(f"scipy.ndimage.{n}" for n in ("convolve", "correlate", "convolve1d", "correlate1d")),
        _CONV_NAMES, _CONV_NAMES),
    "unfold": (
        ("torch.nn.functional.unfold", "torch.nn.functional.fold", "torch.nn.Unfold", "torch.nn.Fold",
         "torch.Tensor.unfold", "torch._C._nn.im2col", "torch._C._nn.col2im", "torch.as_strided",
         "torch.Tensor.as_strided", "torch.Tensor.as_strided_", "torch.as_strided_copy",
         "numpy.lib.stride_tricks.sliding_window_view", "numpy.lib.stride_tricks.as_strided"),
        _UNFOLD_FUNCTION_NAMES, _UNFOLD_NAMES),
    "softmax": (
        tuple(f"torch.nn.functional.{n}" for n in ("softmax", "log_softmax", "softmin", "gumbel_softmax")) +
        ("torch.softmax", "torch.log_softmax", "torch._softmax", "torch._log_softmax", "torch.special.softmax",
         "torch.special.log_softmax", "torch.Tensor.softmax", "torch.Tensor.log_softmax", "torch.sparse.softmax",
         "torch.sparse.log_softmax", "torch.nn.Softmax", "torch.nn.LogSoftmax", "torch.nn.Softmin",
         "torch.nn.Softmax2d", "scipy.special.softmax", "scipy.special.log_softmax",
         "torch.nn.functional.scaled_dot_product_attention", "torch.nn.functional.multi_head_attention_forward",
         "torch.nn.MultiheadAttention"),
        _SOFTMAX_NAMES, _SOFTMAX_NAMES),
    "autograd": (
        ("torch.autograd.grad", "torch.autograd.backward", "torch.Tensor.backward", "torch.func.grad",
         "torch.func.grad_and_value", "torch.func.vjp", "torch.func.jvp", "torch.func.jacrev", "torch.func.jacfwd",
         "torch.func.hessian", "torch.func.linearize", "torch.autograd.functional.jacobian",
         "torch.autograd.functional.hessian", "torch.autograd.functional.vjp", "torch.autograd.functional.jvp",
         "torch.autograd.functional.hvp", "torch.autograd.functional.vhp", "torch.autograd.forward_ad.make_dual",
         "torch.autograd.forward_ad.unpack_dual", "torch._C._EngineBase.run_backward"),
        None, None),
    "torch": ((), None, None),  # everything torch: handled specially
    "involution": ((), None, None),  # involution_edu's operator modules and custom ops: handled specially
    "grad_clip": (
        tuple(f"torch.nn.utils.{n}" for n in ("clip_grad_norm_", "clip_grad_norm", "clip_grad_value_",
                                              "get_total_norm", "clip_grads_with_norm_")) +
        tuple(f"torch.nn.utils.clip_grad.{n}" for n in ("clip_grad_norm_", "clip_grad_norm", "clip_grad_value_",
                                                        "get_total_norm", "clip_grads_with_norm_")),
        None, None),
}

_INVOLUTION_MODULES = ("ops", "functional", "reference", "module", "native", "triton_backend")

# --------------------------------------------------------------------------------------------
# Where code lives
# --------------------------------------------------------------------------------------------

LEARNER, LIBRARY, TRANSPARENT, PACKAGE, CHECKER, INTERNAL = range(6)

_HERE = os.path.dirname(os.path.abspath(__file__))
_PACKAGE_DIR = os.path.dirname(_HERE) + os.sep
_EXERCISES_DIR = _HERE + os.sep
_INTERNAL_FILES = {os.path.join(_HERE, "guard.py"), os.path.join(_HERE, "framework.py")}


def _library_prefixes() -> Tuple[str, ...]:
    prefixes: Set[str] = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            prefixes.add(os.path.abspath(path) + os.sep)
    for path in sys.path:
        if path and ("site-packages" in path or "dist-packages" in path):
            prefixes.add(os.path.abspath(path) + os.sep)
    for name in ("os", "numpy", "torch", "scipy", "triton"):
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if file:
            base = os.path.dirname(os.path.abspath(file))
            prefixes.add((base if name == "os" else os.path.dirname(base)) + os.sep)
    prefixes.discard(_PACKAGE_DIR)
    return tuple(sorted(p for p in prefixes if not _PACKAGE_DIR.startswith(p) or "site-packages" in p))


_TRANSPARENT_TAILS = (
    os.path.join("torch", "nn", "modules", "module.py"),
    os.path.join("torch", "utils", "_contextlib.py"),
    os.path.join("torch", "overrides.py"),
    os.path.join("torch", "autograd", "function.py"),
    os.sep + "functools.py",
    os.sep + "contextlib.py",
)
_FILE_KINDS: Dict[str, Tuple[int, bool]] = {}
_PREFIXES: Tuple[str, ...] = ()
_TORCH_DIR = ""


def _file_kind(filename: str) -> Tuple[int, bool]:
    """``(kind, is_torch)`` of the code in ``filename`` (cached)."""
    try:
        return _FILE_KINDS[filename]
    except KeyError:
        pass
    global _PREFIXES, _TORCH_DIR
    if not _PREFIXES:
        _PREFIXES = _library_prefixes()
        torch = sys.modules.get("torch")
        if torch is not None and getattr(torch, "__file__", None):
            _TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
    path = os.path.abspath(filename) if filename and not filename.startswith("<") else filename
    is_torch = bool(_TORCH_DIR) and path.startswith(_TORCH_DIR)
    if path in _INTERNAL_FILES:
        kind = INTERNAL
    elif path.startswith(_EXERCISES_DIR):
        kind = CHECKER
    elif path.startswith(_PACKAGE_DIR):
        kind = PACKAGE
    elif path.endswith(_TRANSPARENT_TAILS) and (is_torch or path.startswith(_PREFIXES)):
        kind = TRANSPARENT
    elif path.startswith("<frozen") or path.startswith(_PREFIXES):
        kind = LIBRARY
    else:
        kind = LEARNER  # a notebook cell, exec'd text, a test file, the learner's own module
    if len(_FILE_KINDS) > 100_000:
        _FILE_KINDS.clear()
    _FILE_KINDS[filename] = (kind, is_torch)
    return kind, is_torch


def _frame_kind(frame: types.FrameType) -> int:
    return _file_kind(frame.f_code.co_filename)[0]


# --------------------------------------------------------------------------------------------
# A rule, compiled for fast lookups
# --------------------------------------------------------------------------------------------

def _unwrap(obj: Any) -> Any:
    for _ in range(8):
        if isinstance(obj, functools.partial):
            obj = obj.func
        elif isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        elif isinstance(obj, types.MethodType):
            obj = obj.__func__
        elif isinstance(obj, property) and obj.fget is not None:
            obj = obj.fget
        else:
            break
    return obj


def _qualname(obj: Any) -> str:
    try:
        torch = sys.modules.get("torch")
        if torch is not None and not isinstance(obj, (type, types.FunctionType, types.ModuleType)):
            try:
                name = torch.overrides.resolve_name(obj)
                if name:
                    return str(name)
            except Exception:
                pass
        if isinstance(obj, types.ModuleType):
            return obj.__name__
        module = getattr(obj, "__module__", None) or ""
        if module == "torch._C._VariableFunctions":
            module = "torch"
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__
        return f"{module}.{name}" if module and module != "builtins" else str(name)
    except Exception:
        return type(obj).__name__


def _nice(label: str) -> str:
    """Shorter public spellings: ``torch.nn.functional`` stays, ``torch._C._VariableFunctions`` goes."""
    for long, short in (("torch._C._VariableFunctions.", "torch."), ("torch._C.TensorBase.", "torch.Tensor."),
                        ("torch._tensor.Tensor.", "torch.Tensor."), ("torch.nn.modules.conv.", "torch.nn."),
                        ("torch.nn.modules.activation.", "torch.nn."), ("torch.nn.modules.fold.", "torch.nn."),
                        ("numpy.lib._stride_tricks_impl.", "numpy.lib.stride_tricks."),
                        ("numpy._core.numeric.", "numpy."), ("scipy.signal._signaltools.", "scipy.signal."),
                        ("scipy.ndimage._filters.", "scipy.ndimage.")):
        if label.startswith(long):
            return short + label[len(long):]
    return label


_ALLOWED = "<allowed>"


class CompiledRule:
    """A :class:`Rule` as lookup tables: code objects, C callables, torch functions, op-name patterns."""

    def __init__(self, rule: Rule, extra_allow: Iterable[Any] = ()):
        self.what = str(rule.what or "this computation")
        self.library = bool(rule.library)
        self.codes: Dict[int, Tuple[Any, str]] = {}      # id(code) -> (code, label)
        self.c_ids: Dict[int, Tuple[Any, str]] = {}      # id(C callable) -> (obj, label)
        self.method_names: Dict[str, List[Tuple[Any, str]]] = {}  # C method name -> [(descriptor, label)]
        self.torch_funcs: Dict[Any, str] = {}             # torch function -> label
        self.dot_names: Set[str] = set()
        self.allowed_codes: Set[int] = set()
        self.allowed_keep: List[Any] = []
        self.allowed_c: Set[int] = set()
        self.allowed_torch: Set[Any] = set()
        self.function_ops: List["re.Pattern[str]"] = []
        self.dispatch_ops: List["re.Pattern[str]"] = []
        self.torch_all = False
        self.involution_ops = bool(rule.library)
        self.involution_codes = False
        self.needs_torch_modes = False
        self.keep: List[Any] = []
        self.unknown: List[str] = []
        self.pending: List[str] = []  # family names whose module is not imported yet (never imported here)
        self._modules_seen = -1
        families = [str(f) for f in (rule.families or ())]
        for family in families:
            if family not in FAMILIES:
                raise ValueError(f"Rule: unknown family {family!r}; the families are {sorted(FAMILIES)}")
            names, function_ops, dispatch_ops = FAMILIES[family]
            self.pending.extend(names)
            if function_ops is not None:
                self.function_ops.append(function_ops)
            if dispatch_ops is not None:
                self.dispatch_ops.append(dispatch_ops)
            if family == "torch":
                self.torch_all = True
            if family == "involution":
                self.involution_ops = True
                self.involution_codes = True
        for item in rule.forbid or ():
            if isinstance(item, str):
                if item.startswith("."):
                    if item[1:]:
                        self.dot_names.add(item[1:])
                    continue
                obj = resolve(item)
                if obj is None:
                    self.unknown.append(item)
                    continue
                self._forbid(obj, _nice(item))
            else:
                self._forbid(item, None)
        for item in list(rule.allow or ()) + list(extra_allow):
            obj = resolve(item) if isinstance(item, str) else item
            if obj is not None:
                self._allow(obj)
        self.needs_torch_modes = "torch" in sys.modules
        self.resolve_pending()

    def resolve_pending(self) -> bool:
        """Forbid the family members whose module has been imported since; True if any was added."""
        if not self.pending or len(sys.modules) == self._modules_seen:
            return False
        self._modules_seen = len(sys.modules)
        added, still = False, []
        for dotted in self.pending:
            top = dotted.split(".")[0]
            obj = resolve(dotted, import_modules=False) if top in sys.modules else None
            if obj is None:
                still.append(dotted)
            else:
                self._forbid(obj, _nice(dotted))
                added = True
        self.pending = still
        return added

    # -- building ---------------------------------------------------------------------------
    def _forbid(self, obj: Any, label: Optional[str]) -> None:
        label = label or _nice(_qualname(obj))
        self.keep.append(obj)
        if isinstance(obj, types.ModuleType):
            for value in list(vars(obj).values()):
                if (isinstance(value, (types.FunctionType, type)) or callable(value)) and \
                        getattr(value, "__module__", None) == obj.__name__:
                    self._forbid(value, _nice(f"{obj.__name__}.{getattr(value, '__name__', '?')}"))
            return
        if isinstance(obj, type):
            seen = set()
            for klass in obj.__mro__:
                if klass is object or klass.__module__ in ("builtins", "torch.nn.modules.module"):
                    continue
                if klass is not obj and not (klass.__module__ or "").startswith(obj.__module__.split(".")[0]):
                    continue
                for name, value in vars(klass).items():
                    if name in seen or name in ("__repr__", "__str__", "__getattr__", "__setattr__", "__dir__",
                                                "__setstate__", "__getstate__", "extra_repr", "__init_subclass__"):
                        continue
                    seen.add(name)
                    value = _unwrap(value)
                    if isinstance(value, types.FunctionType):
                        self._add_code(value.__code__, label)
            return
        target = _unwrap(obj)
        code = getattr(target, "__code__", None)
        if isinstance(code, types.CodeType):
            self._add_code(code, label)
            wrapped = getattr(target, "__wrapped__", None)
            if wrapped is not None and wrapped is not target:
                self._forbid(wrapped, label)
            return
        self._add_c(target, label)
        for attribute in ("_implementation", "__wrapped__"):  # numpy's C dispatchers wrap a Python function
            inner = getattr(target, attribute, None)
            if isinstance(inner, types.FunctionType):
                self._forbid(inner, label)
                break
        call = getattr(type(target), "__call__", None)  # a callable object of a Python class
        if isinstance(call, types.FunctionType) and not isinstance(target, types.BuiltinFunctionType):
            self._add_code(call.__code__, label)

    def _add_code(self, code: types.CodeType, label: str) -> None:
        self.keep.append(code)
        self.codes.setdefault(id(code), (code, label))

    def _add_c(self, obj: Any, label: str) -> None:
        self.c_ids.setdefault(id(obj), (obj, label))
        try:
            hash(obj)
            self.torch_funcs.setdefault(obj, label)
        except Exception:
            pass
        if isinstance(obj, (types.MethodDescriptorType, types.WrapperDescriptorType)) or \
                type(obj).__name__ in ("method_descriptor", "wrapper_descriptor"):
            name = getattr(obj, "__name__", None)
            if name:
                self.method_names.setdefault(name, []).append((obj, label))

    def _allow(self, obj: Any, unless_forbidden: bool = False) -> None:
        """Allow ``obj`` (with a class: all its methods; with ``unless_forbidden``, all but those the
        rule names, so a model handed to the learner does not unlock its own forbidden forward)."""
        self.allowed_keep.append(obj)
        if isinstance(obj, type):
            for klass in obj.__mro__:
                if klass is object:
                    continue
                for value in vars(klass).values():
                    value = _unwrap(value)
                    if isinstance(value, types.FunctionType):
                        if unless_forbidden and id(value.__code__) in self.codes:
                            continue
                        self.allowed_keep.append(value.__code__)
                        self.allowed_codes.add(id(value.__code__))
            return
        target = _unwrap(obj)
        code = getattr(target, "__code__", None)
        if isinstance(code, types.CodeType):
            self.allowed_keep.append(code)
            self.allowed_codes.add(id(code))
            wrapped = getattr(target, "__wrapped__", None)
            if wrapped is not None and wrapped is not target:
                self._allow(wrapped)
            return
        self.allowed_c.add(id(target))
        for attribute in ("_implementation", "__wrapped__"):
            inner = getattr(target, attribute, None)
            if isinstance(inner, types.FunctionType):
                self._allow(inner)
                break
        try:
            hash(target)
            self.allowed_torch.add(target)
        except Exception:
            pass
        call = getattr(type(target), "__call__", None)
        if isinstance(call, types.FunctionType):
            self.allowed_codes.add(id(call.__code__))
            self.allowed_keep.append(call.__code__)
        if hasattr(target, "forward") and hasattr(target, "_modules"):  # an nn.Module instance
            self._allow(type(target))

    def allow_arguments(self, values: Iterable[Any]) -> None:
        """The methods of what the checker passes in (models and their submodules) are the learner's to call."""
        torch = sys.modules.get("torch")
        for value in values:
            try:
                if torch is not None and isinstance(value, torch.nn.Module):
                    for module in value.modules():
                        if type(module).__module__.startswith("involution_edu"):
                            self._allow(type(module), unless_forbidden=True)
            except Exception:
                continue


def compile_rule(rule: Optional[Rule], extra_allow: Iterable[Any] = ()) -> Optional[CompiledRule]:
    """``rule`` as lookup tables (``None`` for no rule)."""
    if rule is None:
        return None
    return CompiledRule(rule, extra_allow)


# --------------------------------------------------------------------------------------------
# The guard
# --------------------------------------------------------------------------------------------

def _op_parts(func: Any) -> Tuple[str, str]:
    """``(namespace, name without overload)`` of an OpOverload/OpOverloadPacket, or ``("", "")``."""
    try:
        namespace = getattr(func, "namespace", "") or ""
        name = getattr(func, "_opname", None) or getattr(func, "__name__", "") or ""
        name = str(name).split(".")[0]
        if not namespace:
            text = str(func)
            if text.count(".") >= 1 and not text.startswith("<"):
                namespace, name = text.split(".")[0], text.split(".")[1]
        return str(namespace), name
    except Exception:
        return "", ""


_UNKNOWN = object()


class Guard:
    """Runs one call of the learner's function under the compiled rule; see the module docstring.

    ``use_dispatch=False`` leaves the TorchDispatchMode out (the fallback when a case fails with it).
    After :meth:`call`, ``refused`` holds the label of the first forbidden call, or ``None``.
    """

    def __init__(self, compiled: CompiledRule, use_dispatch: bool = True):
        self.rule = compiled
        self.use_dispatch = use_dispatch
        self.refused: Optional[str] = None
        self.root: Optional[types.FrameType] = None
        self._code_cache: Dict[int, Tuple[Any, Any]] = {}
        self._c_cache: Dict[Any, Tuple[Any, Any]] = {}
        _file_kind(__file__)  # the library prefixes, computed once outside the profiler
        self._torch_cache: Dict[Any, Any] = {}
        self._op_cache: Dict[Any, Any] = {}
        self.allowed_depth = 0
        self.ops = 0
        self.budget = dispatch_budget()
        self.over_budget = False
        self.current_torch: Any = None
        self._allowed_c_stack: List[Any] = []

    # -- judging -------------------------------------------------------------------------------
    def _walk_reaches_learner(self, frame: Optional[types.FrameType], mode: str) -> bool:
        """Is a call made in ``frame`` reached from the learner's code, and not under an allowed call?

        ``mode``: ``"deep"`` skips library and package frames, and the first learner-or-checker
        frame decides; ``"boundary"`` (a numpy/scipy/stdlib callee) needs the first frame that is
        not transparent to be the learner's; ``"direct"`` (old ``".name"`` strings) needs the
        calling frame itself to be the learner's (transparent frames such as
        ``nn.Module.__call__`` count as not the learner's).
        """
        if self.allowed_depth > 0:
            return False
        allowed = self.rule.allowed_codes
        root = self.root
        decided: Optional[bool] = None
        while frame is not None:
            if frame is root:
                if decided is None:
                    decided = True  # the candidate itself made the call
                break
            if allowed and id(frame.f_code) in allowed:
                return False
            if decided is None:
                kind = _frame_kind(frame)
                if kind == INTERNAL or (kind == TRANSPARENT and mode != "direct"):
                    pass
                elif kind == LEARNER:
                    decided = True
                elif kind == CHECKER or mode != "deep":
                    decided = False
                if decided is not None and not allowed:
                    break
            frame = frame.f_back
        return bool(decided)

    def _refuse(self, label: str) -> None:
        if self.refused is None:
            self.refused = label
        raise ForbiddenCall(label)

    # -- Python-level calls ---------------------------------------------------------------------
    def _classify_code(self, code: types.CodeType) -> Any:
        """``None`` (harmless), or ``(label, mode, kind)`` with mode "deep", "boundary" or "direct"."""
        if self.rule.pending and self.rule.resolve_pending():  # e.g. scipy.signal imported by the learner
            self._c_cache.clear()
            self._torch_cache.clear()
        kind, is_torch = _file_kind(code.co_filename)
        if kind == INTERNAL or id(code) in self.rule.allowed_codes:
            return None
        hit = self.rule.codes.get(id(code))
        deep = kind in (PACKAGE, CHECKER) or is_torch
        if hit is not None and hit[0] is code:
            return (hit[1], "deep" if deep else "boundary", kind)
        if kind in (PACKAGE, CHECKER):
            if self.rule.library:
                return (None, "deep", kind)
            if self.rule.involution_codes and kind == PACKAGE and \
                    os.path.splitext(os.path.basename(code.co_filename))[0] in _INVOLUTION_MODULES:
                return (None, "deep", kind)
        if self.rule.torch_all and is_torch and kind == LIBRARY:
            return (None, "boundary", kind)
        if self.rule.dot_names and kind != LEARNER and code.co_name in self.rule.dot_names:
            return (f".{code.co_name}", "direct", kind)
        return None

    def _label_for_frame(self, frame: types.FrameType, label: Optional[str]) -> str:
        if label:
            return label
        module = frame.f_globals.get("__name__", "") if isinstance(frame.f_globals, dict) else ""
        name = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
        return _nice(f"{module}.{name}" if module else name)

    def _on_python_call(self, frame: types.FrameType) -> None:
        code = frame.f_code
        entry = self._code_cache.get(id(code))
        if entry is None or entry[0] is not code:
            entry = (code, self._classify_code(code))
            self._code_cache[id(code)] = entry
        verdict = entry[1]
        if verdict is None:
            return
        label, mode, kind = verdict
        caller = frame.f_back
        if caller is self.root and kind == CHECKER and label is None:
            return  # the checker's own wrapper around the learner's function
        if self._walk_reaches_learner(caller, mode):
            self._refuse(self._label_for_frame(frame, label))

    def _classify_c(self, func: Any) -> Any:
        rule = self.rule
        if id(func) in rule.allowed_c:
            return _ALLOWED
        hit = rule.c_ids.get(id(func))
        if hit is not None and hit[0] is func:
            return (hit[1], "boundary")
        owner = getattr(func, "__self__", None)
        name = getattr(func, "__name__", None)
        if owner is not None and not isinstance(owner, types.ModuleType) and name:
            if rule.allowed_c:
                try:
                    if id(getattr(type(owner), name, None)) in rule.allowed_c:
                        return _ALLOWED
                except Exception:
                    pass
            for descriptor, label in rule.method_names.get(name, ()):
                try:
                    if getattr(type(owner), name, None) is descriptor:
                        return (label, "boundary")
                except Exception:
                    pass
            if rule.allowed_c:
                try:
                    if id(getattr(type(owner), name, None)) in rule.allowed_c:
                        return _ALLOWED
                except Exception:
                    pass
        if rule.dot_names and name in rule.dot_names:
            return (f".{name}", "direct")
        if rule.torch_all:
            module = str(getattr(func, "__module__", None) or getattr(type(owner), "__module__", "") or "")
            if module.startswith("torch"):
                return (_nice(_qualname(func)), "boundary")
        return None

    def _on_c_call(self, frame: types.FrameType, func: Any) -> None:
        owner = getattr(func, "__self__", None)
        if owner is None or isinstance(owner, (types.ModuleType, type)):
            entry = self._c_cache.get(id(func))
            if entry is None or entry[0] is not func:
                entry = self._c_cache[id(func)] = (func, self._classify_c(func))
        else:  # a method bound to an instance: a new object at every access
            key = (type(owner), getattr(func, "__name__", None))
            entry = self._c_cache.get(key)
            if entry is None:
                entry = self._c_cache[key] = (None, self._classify_c(func))
        verdict = entry[1]
        if verdict is None:
            return
        if verdict is _ALLOWED:
            self._allowed_c_stack.append(func)
            self.allowed_depth += 1
            return
        label, mode = verdict
        if self._walk_reaches_learner(frame, mode):
            self._refuse(label)

    def make_profile(self) -> Callable[[types.FrameType, str, Any], None]:
        """The ``sys.setprofile`` function: one cached dict lookup per event on the fast path."""
        code_cache = self._code_cache
        c_cache = self._c_cache
        allowed_c_stack = self._allowed_c_stack
        on_python_call = self._on_python_call
        on_c_call = self._on_c_call

        def profile(frame: types.FrameType, event: str, arg: Any) -> None:
            if event == "call":
                code = frame.f_code
                entry = code_cache.get(id(code))
                if entry is not None and entry[0] is code and entry[1] is None:
                    return
                on_python_call(frame)
            elif event == "c_call":
                entry = c_cache.get(id(arg))
                if entry is not None and entry[0] is arg and entry[1] is None:
                    return
                on_c_call(frame, arg)
            elif allowed_c_stack and event in ("c_return", "c_exception") and arg is allowed_c_stack[-1]:
                allowed_c_stack.pop()
                self.allowed_depth -= 1

        return profile

    # -- torch functions and ops ----------------------------------------------------------------
    def _classify_torch(self, func: Any) -> Any:
        rule = self.rule
        if func in rule.allowed_torch:
            return _ALLOWED
        label = rule.torch_funcs.get(func)
        if label is not None:
            return (label, "deep")
        namespace, name = _op_parts(func) if type(func).__name__ in ("OpOverloadPacket", "OpOverload") else ("", "")
        if name:
            if namespace == "involution_edu" and rule.involution_ops:
                return (f"torch.ops.involution_edu.{name}", "deep")
            for pattern in rule.function_ops:
                if pattern.search(name):
                    return (f"torch.ops.{namespace}.{name}", "deep")
        if rule.torch_all:
            return (_nice(_qualname(func)), "deep")
        if rule.dot_names:
            fname = getattr(func, "__name__", None)
            if fname in rule.dot_names:
                module = str(getattr(func, "__module__", "") or "")
                if module.split(".")[0] in ("torch", "builtins", "") or _is_non_learner(func):
                    return (f".{fname}", "direct")
        return None

    def torch_function_slow(self, func: Any, verdict: Any, args: Tuple, kwargs: Dict) -> Any:
        """A torch function whose verdict is not "harmless": allowed, or judged."""
        if verdict is _UNKNOWN:
            try:
                verdict = self._torch_cache[func] = self._classify_torch(func)
            except TypeError:  # unhashable
                verdict = self._classify_torch(func)
        if verdict is None:
            self.current_torch = func
            return func(*args, **kwargs)
        if verdict is _ALLOWED:
            self.allowed_depth += 1
            try:
                return func(*args, **kwargs)
            finally:
                self.allowed_depth -= 1
        label, mode = verdict
        if self._walk_reaches_learner(sys._getframe(1), mode):
            self._refuse(label)
        self.current_torch = func
        return func(*args, **kwargs)

    def dispatch_slow(self, func: Any, args: Tuple, kwargs: Dict) -> Any:
        try:
            label = self._op_cache[func] = self._classify_op(func)
        except TypeError:
            label = self._classify_op(func)
        if label is not None:
            self.judge_op(label)
        return func(*args, **kwargs)

    def judge_op(self, label: str) -> None:
        if self._walk_reaches_learner(sys._getframe(1), "deep"):
            outer = self.current_torch
            if outer is not None:
                outer_name = _nice(_qualname(outer))
                if outer_name.split(".")[-1] != label.split(".")[-1]:
                    label = f"{outer_name} (which runs {label})"
            self._refuse(label)

    def _classify_op(self, func: Any) -> Any:
        namespace, name = _op_parts(func)
        rule = self.rule
        if namespace == "involution_edu" and rule.involution_ops:
            return f"torch.ops.involution_edu.{name}"
        if rule.torch_all:
            return f"torch.ops.{namespace}.{name}"
        for pattern in rule.dispatch_ops:
            if pattern.search(name):
                return f"torch.ops.{namespace}.{name}"
        return None

    # -- running ------------------------------------------------------------------------------
    def call(self, function: Callable[..., Any], args: Sequence[Any], kwargs: Dict[str, Any]) -> Any:
        """``function(*args, **kwargs)`` under the guard; restores the previous profiler and modes."""
        modes = []
        if self.rule.needs_torch_modes:
            modes = _make_modes(self, self.use_dispatch)
        previous = sys.getprofile()
        entered = []
        try:
            for mode in modes:
                mode.__enter__()
                entered.append(mode)
            self.root = sys._getframe()
            sys.setprofile(self.make_profile())
            try:
                return function(*args, **kwargs)
            finally:
                _restore_profile(previous)
        finally:
            self.root = None
            self._allowed_c_stack.clear()
            self.allowed_depth = 0
            for mode in reversed(entered):
                try:
                    mode.__exit__(None, None, None)
                except Exception:
                    pass


def _restore_profile(previous: Any) -> None:
    """Put back the profiler that was there (a Python function, or cProfile's C profiler)."""
    try:
        sys.setprofile(previous)
        return
    except TypeError:
        sys.setprofile(None)
    enable = getattr(previous, "enable", None)
    if callable(enable):  # cProfile.Profile: switch it back on
        try:
            enable()
        except Exception:
            pass


def _is_non_learner(func: Any) -> bool:
    code = getattr(_unwrap(func), "__code__", None)
    if isinstance(code, types.CodeType):
        return _file_kind(code.co_filename)[0] != LEARNER
    return True


_MODE_CLASSES: List[Any] = []


def _make_modes(guard: Guard, use_dispatch: bool) -> List[Any]:
    if not _MODE_CLASSES:
        from torch.overrides import TorchFunctionMode
        from torch.utils._python_dispatch import TorchDispatchMode

        class _FunctionMode(TorchFunctionMode):
            def __init__(self, owner: Guard):
                super().__init__()
                self.owner = owner
                self.cache = owner._torch_cache

            def __torch_function__(self, func, types, args=(), kwargs=None):
                try:
                    verdict = self.cache.get(func, _UNKNOWN)
                except TypeError:
                    verdict = _UNKNOWN
                if verdict is None:
                    self.owner.current_torch = func
                    return func(*args, **(kwargs or {}))
                return self.owner.torch_function_slow(func, verdict, args, kwargs or {})

        class _DispatchMode(TorchDispatchMode):
            def __init__(self, owner: Guard):
                super().__init__()
                self.owner = owner
                self.cache = owner._op_cache

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                try:
                    label = self.cache.get(func, _UNKNOWN)
                except TypeError:
                    label = _UNKNOWN
                if label is None:
                    owner = self.owner
                    owner.ops += 1
                    if owner.ops > owner.budget:
                        owner.over_budget = True
                        raise DispatchBudgetExceeded()
                    return func(*args, **(kwargs or {}))
                if label is _UNKNOWN:
                    return self.owner.dispatch_slow(func, args, kwargs or {})
                self.owner.judge_op(label)
                return func(*args, **(kwargs or {}))

        _MODE_CLASSES[:] = [_FunctionMode, _DispatchMode]
    function_mode, dispatch_mode = _MODE_CLASSES
    return [function_mode(guard)] + ([dispatch_mode(guard)] if use_dispatch else [])


# --------------------------------------------------------------------------------------------
# Time limits
# --------------------------------------------------------------------------------------------

_DEFAULT_CASE_LIMIT = 10.0
_DEFAULT_TOTAL_LIMIT = 30.0
_LIMIT_OVERRIDES: List[Tuple[float, float]] = []


def _env_seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, ""))
        return value if value > 0 else default
    except ValueError:
        return default


def time_limits(case: Optional[float] = None, total: Optional[float] = None) -> Tuple[float, float]:
    """``(per case, in all)`` in seconds: the arguments, else :func:`short_time_limits`, else the env
    (``INVOLUTION_EDU_CASE_TIME_LIMIT``, ``INVOLUTION_EDU_TOTAL_TIME_LIMIT``), else 10 s and 30 s."""
    if _LIMIT_OVERRIDES:
        default_case, default_total = _LIMIT_OVERRIDES[-1]
    else:
        default_case = _env_seconds("INVOLUTION_EDU_CASE_TIME_LIMIT", _DEFAULT_CASE_LIMIT)
        default_total = _env_seconds("INVOLUTION_EDU_TOTAL_TIME_LIMIT", _DEFAULT_TOTAL_LIMIT)
    case_limit = float(case) if case is not None and case > 0 else default_case
    total_limit = float(total) if total is not None and total > 0 else default_total
    return case_limit, max(total_limit, 1e-3)


class short_time_limits:
    """Context manager (tests): every checker inside uses these limits unless given its own."""

    def __init__(self, case: float = 0.5, total: float = 2.0):
        self.limits = (float(case), float(total))

    def __enter__(self) -> "short_time_limits":
        _LIMIT_OVERRIDES.append(self.limits)
        return self

    def __exit__(self, *exc: Any) -> None:
        _LIMIT_OVERRIDES.remove(self.limits)


def _async_raise(thread_id: int, exception: Optional[type]) -> None:
    try:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                                   ctypes.py_object(exception) if exception else None)
    except Exception:
        pass


class deadline:
    """Raise :class:`TimeLimitExceeded` in this thread after ``seconds``; restores everything on exit.

    In the main thread (a Jupyter kernel runs cells there) with ``signal.setitimer``: a SIGALRM
    timer, the previous handler and timer restored on exit. Elsewhere: a watchdog thread that
    raises the exception asynchronously in this thread (``PyThreadState_SetAsyncExc``). Both
    interrupt a ``while`` loop that makes no call at all; a long C call is interrupted when it
    returns. ``how`` says which one is in use (``"signal"``, ``"watchdog"`` or ``"none"``).
    """

    def __init__(self, seconds: float):
        self.seconds = max(float(seconds), 1e-3)
        self.fired = False
        self.active = False
        self.how = "none"
        self._previous_handler: Any = None
        self._previous_timer: Tuple[float, float] = (0.0, 0.0)
        self._start = 0.0
        self._stop: Optional[threading.Event] = None
        self._lock = threading.Lock()

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self.active:
            self.active = False
            self.fired = True
            raise TimeLimitExceeded()

    def __enter__(self) -> "deadline":
        self._start = time.monotonic()
        use_signal = hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM") and \
            threading.current_thread() is threading.main_thread()
        if use_signal:
            try:
                self._previous_handler = signal.signal(signal.SIGALRM, self._on_alarm)
                self.active = True
                self._previous_timer = signal.setitimer(signal.ITIMER_REAL, self.seconds)
                self.how = "signal"
                return self
            except (ValueError, OSError):
                self.active = False
                if self._previous_handler is not None:
                    try:
                        signal.signal(signal.SIGALRM, self._previous_handler)
                    except Exception:
                        pass
        thread_id = threading.get_ident()
        self._stop = threading.Event()
        self.active = True

        def watchdog() -> None:
            assert self._stop is not None
            if not self._stop.wait(self.seconds):
                with self._lock:
                    if self.active:
                        self.active = False
                        self.fired = True
                        _async_raise(thread_id, TimeLimitExceeded)

        threading.Thread(target=watchdog, name="involution_edu-deadline", daemon=True).start()
        self.how = "watchdog"
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.how == "signal":
            self.active = False
            try:
                signal.setitimer(signal.ITIMER_REAL, 0)
            finally:
                signal.signal(signal.SIGALRM, self._previous_handler if self._previous_handler is not None
                              else signal.SIG_DFL)
                remaining, interval = self._previous_timer
                if remaining > 0:  # someone else's timer was running: give it back what is left
                    left = max(remaining - (time.monotonic() - self._start), 1e-3)
                    signal.setitimer(signal.ITIMER_REAL, left, interval)
        elif self.how == "watchdog":
            with self._lock:
                was_active = self.active
                self.active = False
            if self._stop is not None:
                self._stop.set()
            if not was_active and self.fired and exc_type is not TimeLimitExceeded:
                _async_raise(threading.get_ident(), None)  # fired too late to matter: cancel it


# --------------------------------------------------------------------------------------------
# Side effects: what the learner's function must leave as it found it
# --------------------------------------------------------------------------------------------

_MAX_COPY = 50_000_000  # elements; larger inputs are compared by shape, dtype and version only


def _tensor_record(tensor: Any) -> Dict[str, Any]:
    record: Dict[str, Any] = {"shape": tuple(tensor.shape), "dtype": tensor.dtype, "device": str(tensor.device),
                              "requires_grad": bool(tensor.requires_grad), "version": getattr(tensor, "_version", None),
                              "grad": None if tensor.grad is None else ("set", tuple(tensor.grad.shape))}
    try:
        if not tensor.is_meta and tensor.numel() <= _MAX_COPY and tensor.layout == sys.modules["torch"].strided:
            record["values"] = tensor.detach().clone()
    except Exception:
        pass
    return record


def _array_record(array: Any) -> Dict[str, Any]:
    record: Dict[str, Any] = {"shape": array.shape, "dtype": array.dtype}
    if array.size <= _MAX_COPY:
        record["values"] = array.copy()
    return record


def _module_record(module: Any) -> Dict[str, Any]:
    tensors = {}
    for name, value in list(module.named_parameters(recurse=True)) + list(module.named_buffers(recurse=True)):
        tensors[name] = _tensor_record(value)
    return {"tensors": tensors, "modes": {name or "": bool(m.training) for name, m in module.named_modules()}}


def _record(value: Any, depth: int = 0) -> Any:
    torch = sys.modules.get("torch")
    np = sys.modules.get("numpy")
    try:
        if torch is not None and isinstance(value, torch.Tensor):
            return ("tensor", _tensor_record(value))
        if np is not None and isinstance(value, np.ndarray):
            return ("array", _array_record(value))
        if torch is not None and isinstance(value, torch.nn.Module):
            return ("module", _module_record(value))
        if depth < 3 and isinstance(value, list):
            return ("list", len(value), [_record(v, depth + 1) for v in value[:64]])
        if depth < 3 and isinstance(value, dict):
            return ("dict", list(value.keys())[:64], [_record(v, depth + 1) for v in list(value.values())[:64]])
        if depth < 3 and isinstance(value, tuple):
            return ("tuple", len(value), [_record(v, depth + 1) for v in value[:64]])
    except Exception:
        return None
    return None


def _global_state() -> Dict[str, Any]:
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    return {"grad": torch.is_grad_enabled(), "dtype": torch.get_default_dtype(),
            "inference": torch.is_inference_mode_enabled()}


def _fmt_dtype(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


def _tensor_change(name: str, before: Dict[str, Any], tensor: Any, kind: str) -> Optional[str]:
    if tuple(tensor.shape) != before["shape"]:
        return f"{name} now has shape {tuple(tensor.shape)} (it had {before['shape']}): it was resized in place"
    if tensor.dtype != before["dtype"]:
        return (f"{name} is now {_fmt_dtype(tensor.dtype)} (it was {_fmt_dtype(before['dtype'])}): "
                f"the {kind} was cast to another dtype")
    if str(tensor.device) != before["device"]:
        return f"{name} is now on {tensor.device} (it was on {before['device']})"
    if bool(tensor.requires_grad) != before["requires_grad"]:
        now = bool(tensor.requires_grad)
        hint = " (a requires_grad_(False) that froze it?)" if not now else " (a requires_grad_() on the input?)"
        return f"{name}.requires_grad is now {now} (it was {before['requires_grad']}){hint}"
    values = before.get("values")
    changed = False
    if values is not None:
        try:
            changed = not bool(sys.modules["torch"].equal(values, tensor.detach()))
            if changed and values.is_floating_point():
                both_nan = values.isnan() & tensor.detach().isnan()
                changed = bool(((values != tensor.detach()) & ~both_nan).any())
        except Exception:
            changed = False
    elif before.get("version") is not None and getattr(tensor, "_version", None) != before["version"]:
        changed = True
    if changed:
        return f"{name} was changed in place (its values differ after the call)"
    grad = None if tensor.grad is None else ("set", tuple(tensor.grad.shape))
    if grad != before["grad"]:
        return f"{name}.grad was {'set' if grad else 'cleared'} by your function (a backward() or zero_grad on the input?)"
    return None


def _change(name: str, before: Any, value: Any) -> Optional[str]:
    if before is None:
        return None
    torch = sys.modules.get("torch")
    kind = before[0]
    try:
        if kind == "tensor":
            return _tensor_change(name, before[1], value, "tensor")
        if kind == "array":
            record = before[1]
            if value.shape != record["shape"]:
                return f"{name} now has shape {value.shape} (it had {record['shape']})"
            if value.dtype != record["dtype"]:
                return f"{name} now has dtype {value.dtype} (it had {record['dtype']})"
            old = record.get("values")
            if old is not None:
                import numpy as np
                with np.errstate(all="ignore"):
                    differ = ~((old == value) | (np.isnan(old) & np.isnan(value)) if old.dtype.kind in "fc"
                               else (old == value))
                if differ.any():
                    return (f"{name} was overwritten: {int(differ.sum())} of {differ.size} entries changed "
                            "(work on a copy, e.g. x = x.copy(), or build a new array)")
            return None
        if kind == "module":
            record = before[1]
            tensors = dict(list(value.named_parameters(recurse=True)) + list(value.named_buffers(recurse=True)))
            modules = {n or "": m for n, m in value.named_modules()}
            for sub, was_training in record["modes"].items():
                module = modules.get(sub)
                label = f"{name}.{sub}" if sub else name
                if module is None:
                    return f"{label} was removed from the model"
                if bool(module.training) != was_training:
                    now = "training" if module.training else "eval"
                    then = "training" if was_training else "eval"
                    return f"{label} was left in {now} mode (it was in {then} mode)"
            for tname, trecord in record["tensors"].items():
                tensor = tensors.get(tname)
                if tensor is None:
                    return f"{name}.{tname} was removed"
                problem = _tensor_change(f"{name}.{tname}", trecord, tensor, "model")
                if problem:
                    return problem
            return None
        if kind in ("list", "tuple"):
            if len(value) != before[1]:
                return f"{name} now has {len(value)} items (it had {before[1]})"
            for index, (item_before, item) in enumerate(zip(before[2], value)):
                problem = _change(f"{name}[{index}]", item_before, item)
                if problem:
                    return problem
            return None
        if kind == "dict":
            if list(value.keys())[:64] != before[1]:
                return f"{name} has other keys after the call"
            for key, item_before in zip(before[1], before[2]):
                problem = _change(f"{name}[{key!r}]", item_before, value[key])
                if problem:
                    return problem
            return None
    except Exception:
        return None
    return None


class Snapshot:
    """What the learner's function must leave unchanged: its inputs and torch's global modes.

    ``names`` label the arguments (``"x"``, ``"model"``); :meth:`changes` returns the first change
    as a sentence, or ``None``; :meth:`restore_globals` puts grad mode and the default dtype back.
    """

    def __init__(self, names: Sequence[str], values: Sequence[Any]):
        self.names = list(names)
        self.values = list(values)
        self.records = [_record(v) for v in self.values]
        self.state = _global_state()

    def changes(self) -> Optional[str]:
        state = _global_state()
        if state.get("grad") != self.state.get("grad"):
            if self.state.get("grad"):
                return ("autograd was left switched off after your function returned "
                        "(a torch.set_grad_enabled(False) or no_grad().__enter__() that leaked out? "
                        "use `with torch.no_grad():` instead)")
            return "autograd was left switched on after your function returned (it was off)"
        if state.get("dtype") != self.state.get("dtype"):
            return (f"the default dtype was left at {_fmt_dtype(state.get('dtype'))} "
                    f"(it was {_fmt_dtype(self.state.get('dtype'))}): torch.set_default_dtype leaked out")
        if state.get("inference") != self.state.get("inference"):
            return "inference mode was left switched on after your function returned"
        for name, record, value in zip(self.names, self.records, self.values):
            problem = _change(name, record, value)
            if problem:
                return problem
        return None

    def restore_globals(self) -> None:
        torch = sys.modules.get("torch")
        if torch is None or not self.state:
            return
        try:
            if torch.is_grad_enabled() != self.state["grad"]:
                torch.set_grad_enabled(self.state["grad"])
            if torch.get_default_dtype() != self.state["dtype"]:
                torch.set_default_dtype(self.state["dtype"])
            if torch.is_inference_mode_enabled() != self.state["inference"]:
                torch._C._set_inference_mode(self.state["inference"]) if hasattr(torch._C, "_set_inference_mode") \
                    else None
        except Exception:
            pass
