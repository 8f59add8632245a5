"""Measure how much tensor memory a computation needs, deterministically.

The question the course asks of an involution implementation is "how much memory does a
forward + backward pass need on top of what already exists?" The operating system's
resident size and the allocator's caches make that noisy, so this module counts tensor
storages instead, which gives the same number on every run and every machine:

* :func:`peak_extra_memory` runs a function under a
  :class:`~torch.utils._python_dispatch.TorchDispatchMode` that sees every ATen operator
  PyTorch executes, forward and backward alike (including the operators inside a custom
  ``autograd.Function``'s ``backward``). Each time an operator returns a CPU tensor whose
  storage is new, its size in bytes is added to a running total; a ``weakref.finalize`` on
  that storage subtracts it again when the storage is freed. The result is the maximum of
  the running total, in bytes.
* :func:`tensor_bytes` adds up the sizes of given tensors, for comparison
  (e.g. input + kernels + output).

Example (what the benchmark and the tests do)::

    from involution_edu.memory import peak_extra_memory, tensor_bytes

    x = torch.randn(8, 64, 56, 56, requires_grad=True)
    kernels = torch.randn(8, 4, 7, 7, 56, 56, requires_grad=True)
    grad = torch.randn(8, 64, 56, 56)

    def step(x, kernels):
        involution(x, kernels).backward(grad)

    extra = peak_extra_memory(step, x, kernels)          # bytes
    ratio = extra / tensor_bytes(x, kernels, grad)       # grad has the output's size

What is counted, and what is not:

* Counted: every storage created while ``fn`` runs by an operator that returns it:
  results, autograd's saved tensors, gradients (also those left in ``.grad`` when ``fn``
  returns: they were alive at the peak), temporaries that are freed again.
  Views (``view``, slicing, ``transpose``...) share their base's storage and are counted once.
* Not counted: tensors that existed before the call (``fn``'s arguments, parameters), and
  scratch buffers an operator allocates and frees internally without returning them
  (e.g. a matmul's workspace). So the number is a lower bound on what the allocator sees,
  and an exact count of what the Python/autograd level holds.
* Only CPU tensors are counted (``meta`` tensors have no memory; CUDA has
  ``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Dict

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["peak_extra_memory", "tensor_bytes", "StorageTracker", "MB"]

MB = 2**20
"""Bytes in a mebibyte, for printing: ``f"{nbytes / MB:.1f} MB"``."""


def tensor_bytes(*tensors: torch.Tensor) -> int:
    """Total bytes of the elements of ``tensors``: ``sum(t.numel() * t.element_size())``.

    Counts each tensor's own elements (not the rest of a storage it may be a view of).
    """
    total = 0
    for index, tensor in enumerate(tensors):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"tensors[{index}] must be a torch.Tensor, got {type(tensor).__name__}")
        total += tensor.numel() * tensor.element_size()
    return total


def _storages(values: Any):
    """The untyped storages of the CPU tensors found anywhere in ``values`` (nested lists/tuples/dicts)."""
    for leaf in tree_flatten(values)[0]:
        if isinstance(leaf, torch.Tensor) and leaf.device.type == "cpu":
            yield leaf.untyped_storage()


class StorageTracker(TorchDispatchMode):
    """Dispatch mode keeping a live total (``current``) and maximum (``peak``) of new CPU storages, in bytes.

    Storages are identified by their Python object, which PyTorch keeps unique per storage
    while the storage lives, so a view and its base count once and a storage that
    ``resize_`` reallocates keeps its identity. Use as a context manager; prefer
    :func:`peak_extra_memory`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: Dict[int, int] = {}  # id(storage) -> bytes counted for it
        self._finalizers: Dict[int, weakref.finalize] = {}

    def _release(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)
        self._finalizers.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        existing = {id(storage) for storage in _storages((args, kwargs))}  # before the call
        out = func(*args, **kwargs)
        for storage in _storages(out):
            key = id(storage)
            nbytes = storage.nbytes()
            if key in self._live:  # already counted: update if an in-place op resized it
                self.current += nbytes - self._live[key]
                self._live[key] = nbytes
            elif key in existing or nbytes == 0:  # a view of / in-place on an input, or empty
                continue
            else:
                self._live[key] = nbytes
                self.current += nbytes
                self._finalizers[key] = weakref.finalize(storage, self._release, key)
            self.peak = max(self.peak, self.current)
        return out

    def __exit__(self, *exc_info):
        # Storages still alive (e.g. gradients left in .grad) stay counted in `peak`; stop
        # watching them so that this tracker is not kept alive by their finalizers.
        for finalizer in list(self._finalizers.values()):
            finalizer.detach()
        self._finalizers.clear()
        return super().__exit__(*exc_info)


def peak_extra_memory(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Run ``fn(*args, **kwargs)`` and return the peak of extra CPU tensor memory, in bytes.

    "Extra" means allocated during the call: the maximum, over the run, of the total size of
    the storages created by PyTorch operators and still alive at that moment. Tensors that
    existed before (``args``, module parameters) are not counted. Deterministic: it does not
    depend on the allocator, on caching or on other threads (see the module docstring for
    what is and is not counted).

    To measure a training step, let ``fn`` do forward *and* backward, e.g.
    ``lambda x, k: op(x, k).backward(grad)`` with ``x``/``k`` requiring grad and ``grad``
    created beforehand. Gradients left in ``.grad`` were alive at the end, so they are part
    of the peak; reset them (``x.grad = None``) between repeated measurements.

    Args:
        fn: the computation. Its return value is discarded (it is freed before this returns).
        args, kwargs: passed to ``fn``.

    Returns:
        Peak extra bytes (an ``int``; divide by :data:`MB` for mebibytes).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    tracker = StorageTracker()
    with tracker:
        result = fn(*args, **kwargs)
        del result
    return tracker.peak
