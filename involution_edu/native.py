r"""A native (C++) involution kernel, compiled on first use and called through ``ctypes``.

Why a native kernel? The eager op in :mod:`involution_edu.functional` launches one PyTorch
operation per kernel tap, so every one of the ``K^2`` taps reads and writes the whole output
again (``K^2 = 49`` passes over memory for ``K = 7``). A compiled loop can do what the
paper's CUDA kernel does: visit each output element once and loop over its ``K x K``
taps while the data sit in registers and cache.

Layout trick. Inside one group, the ``C/G`` channels share every kernel value. So the
kernel works "channels last": the innermost operation multiplies one kernel value by the
vector of the group's channels at one pixel (16 floats = one AVX-512 register for the
default ``group_channels=16``)::

    for each (b, g)                                  # in parallel (OpenMP), one task each
        xs = x[b, group g] as (H, W, C/G)            # a transposing copy, with a zero border
        for each output pixel (i, j)
            acc[0:C/G] = 0                           # in registers
            for each tap (u, v)
                acc += kernels[b, g, u, v, i, j] * xs[i*s + u*d - p, j*s + v*d - p, :]
            out[b, group g, i, j] = acc              # transposed back to the caller's layout

The zero border means no tap needs a bounds check. For the RedNet case (stride 1,
dilation 1, 16 channels per group, K = 3 or 7) specialised loops fix K at compile time,
work on 8 neighbouring pixels at once (8 independent accumulators that share the x vectors
they read) and prefetch the kernel rows. The backward pass has the same shape:

* ``grad_kernels[b, g, u, v, i, j] = sum_{c in g} grad_out[b, c, i, j] * x[b, c, i*s+u*d-p, j*s+v*d-p]``:
  a dot product over the group's channels per tap (8 pixels' dot products are summed
  together with a shuffle tree);
* ``grad_x[b, c, h, w]`` gathers over the taps whose output pixel ``i = (h + p - u*d) / s``
  is an integer inside the output (or, in the general case, each output pixel adds its
  contributions into the task's private scratch: no atomics, each task owns its group).

Memory: forward + backward allocate the output, ``grad_x``, ``grad_kernels`` and, per
thread, one group's padded planes (allocated as torch tensors so that
:func:`involution_edu.memory.peak_extra_memory` counts them), nothing else. Any strides
are accepted, ``grad_out`` included; channels-last inputs give channels-last outputs.

The source lives in ``involution_edu/csrc/involution.cpp`` (package data; also
:data:`KERNEL_SOURCE`). It is compiled with the system C++ compiler (``$CXX``, else ``g++``,
else ``c++``; flags ``-O2 -march=native -fopenmp``; if that build fails or times out, once more
without the last two, and :func:`native_error` then says that the slower build is in use and
why). ``$INVOLUTION_EDU_NATIVE_FLAGS`` replaces the optimisation flags (the tests use ``-O0`` for
quick builds). A build takes about 3 s of CPU time (g++ 12, measured: ``-O2`` instead of
``-O3``, which took 40 s for no measurable speed, and shuffles with compile-time lane indices);
on a busy machine the wall time is longer. The process that compiles prints one line saying so,
with an estimate taken from the last build in the same cache.

The cache. The library is built into and loaded from a private directory:
``$INVOLUTION_EDU_CACHE``, else ``$XDG_CACHE_HOME/involution_edu`` or ``~/.cache/involution_edu``,
created with mode 0700. Before using it the directory must be a real directory (no symbolic
link), owned by the current user and not writable by anyone else; otherwise the native kernel is
refused and :func:`native_error` names the directory and the problem (on a shared machine
another user could otherwise plant a library there). If the directory cannot be created at all
(a read-only home), a fresh ``tempfile.mkdtemp`` directory of this process is used, never a
predictable path in a shared temporary directory. A library is loaded only after checking the
open file: a regular file of ours, not writable by others, with the size and SHA-256 recorded in
a ``.sha256`` file written after its build completed, then the ABI version; a truncated or
corrupted library is rebuilt, never loaded. The file name is a hash of the source, the flags,
the compiler and the CPU, so a later process loads it in milliseconds.

One build at a time. An inter-process lock (``fcntl.flock`` on ``build.lock`` in the cache)
is held around check-build-install: a process that finds a build in progress waits for it and
loads its result, so 30 students opening the same notebook on one server compile once. A failed
or timed-out build (``$INVOLUTION_EDU_BUILD_TIMEOUT`` seconds, default 900) is recorded in a
``.failed`` file next to it (the cause, the time, the compiler's and torch's versions) and
reported by :func:`native_error`. Whether a later process tries again depends on the cause
(:func:`_retry_reason`): a failure of the environment (disk full, quota, out of memory, a
compiler killed by a signal; :data:`RETRY_TRANSIENT_SECONDS`) is retried a minute later; a
timeout once the time limit is raised or a day later; a genuine compile error (the compiler
rejected the source or the flags) stays cached until the compiler or torch changes version or a
week has passed (:data:`MAX_RECORD_AGE_SECONDS`). Deleting the ``.failed`` file retries at once.

If there is no compiler or the build fails (the source uses GCC's vector extensions),
:func:`native_available` returns ``False``, :func:`native_error` says why, and
:func:`involution_edu.functional.involution` with ``backend="auto"`` uses the eager op instead.
``INVOLUTION_EDU_NATIVE=0`` turns the native kernel off. Calls with less than
:data:`PARALLEL_MIN_WORK` multiply-adds run on one thread.

Every size and argument is validated before it reaches C++ (:func:`involution_edu.shapes.check_involution_args`,
then again in C++, whose entry points return an error code instead of computing on nonsense
sizes); nothing is silently truncated on its way through ``ctypes``.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import hashlib
import numbers
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Optional, Tuple

import torch

from .shapes import check_involution_args

try:
    import fcntl
except ImportError:  # Windows: the native kernel is not built there
    fcntl = None

__all__ = [
    "KERNEL_SOURCE",
    "native_available",
    "native_error",
    "native_compile_seconds",
    "native_build_info",
    "native_supports",
    "load_native",
    "native_forward",
    "native_backward",
    "native_fused_forward",
    "native_fused_backward",
]

ABI_VERSION = 6
"""The value of ``involution_abi_version()`` this module expects from the library."""


def _read_source() -> str:
    """The C++ source, shipped as package data in ``involution_edu/csrc/involution.cpp``."""
    return resources.files(__package__).joinpath("csrc", "involution.cpp").read_text(encoding="utf-8")


KERNEL_SOURCE = _read_source()
"""The text of ``involution_edu/csrc/involution.cpp`` (what gets compiled)."""

_BASE_FLAGS = ["-shared", "-fPIC", "-std=c++17", "-Wno-psabi"]
_FLAGS = ["-O2", "-march=native", "-fopenmp", *_BASE_FLAGS]
_FALLBACK_FLAGS = ["-O2", *_BASE_FLAGS]  # no OpenMP, no -march=native: one thread, generic vectors
FLAGS_ENV = "INVOLUTION_EDU_NATIVE_FLAGS"
"""Environment variable: if set, these flags (split like a shell would) replace the optimisation
flags of the build (``-shared -fPIC -std=c++17`` are always added) and no fallback build is tried.
The test suite uses ``-O0`` for its fresh-cache builds, which compile in a few seconds."""

BUILD_TIMEOUT_ENV = "INVOLUTION_EDU_BUILD_TIMEOUT"
DEFAULT_BUILD_TIMEOUT = 900.0
"""Seconds a build may take before it is stopped and recorded as failed (a build takes a few
seconds on an idle 2-core machine, and several times that on a busy one)."""

RETRY_TRANSIENT_SECONDS = 60.0
"""A build that failed because of its environment (disk full, quota, memory) is retried by a process
that starts at least this long after it (not at once, so that 30 notebooks starting together on a
full disk do not rebuild 30 times)."""

RETRY_TIMEOUT_SECONDS = 24 * 3600.0
"""A timed-out build is retried after a day, or at once by a process with a longer time limit."""

MAX_RECORD_AGE_SECONDS = 7 * 24 * 3600.0
"""Any failure record, a genuine compile error included, is retried after a week."""

FAILED_RECORD_VERSION = 1

# Compiler messages of a failure of the machine, not of the source (GCC and Clang wording).
_TRANSIENT_MESSAGES = (
    "no space left on device", "disk quota exceeded", "cannot allocate memory", "out of memory",
    "virtual memory exhausted", "memory exhausted", "resource temporarily unavailable", "killed signal terminated program",
    "too many open files", "input/output error", "read-only file system", "error writing to", "text file busy",
)
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "ENOMEM", "EAGAIN", "EINTR", "EMFILE", "ENFILE", "EIO",
                                      "EROFS", "ETXTBSY", "EBUSY") if hasattr(errno, name)
)

_ESTIMATE_SECONDS = 10.0  # a first guess when no build was timed in this cache yet (3-4 s idle, 15 s busy)

_lock = threading.Lock()
_library: Optional[ctypes.CDLL] = None
_error: Optional[str] = None
_compile_seconds: Optional[float] = None
_info: dict = {}
_tried = False


class _Unsafe(Exception):
    """The cache directory or a file in it must not be trusted (message says why)."""


def _expected_uid() -> int:
    """The owner every cache directory and library must have (a function so tests can change it)."""
    return os.geteuid()


def _default_cache_dir() -> Tuple[Path, bool]:
    """``(directory, explicit)``: ``$INVOLUTION_EDU_CACHE``, else ``$XDG_CACHE_HOME/involution_edu``
    or ``~/.cache/involution_edu``."""
    explicit = os.environ.get("INVOLUTION_EDU_CACHE")
    if explicit:
        return Path(explicit).expanduser(), True
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "involution_edu", False


def _cache_dir() -> Path:
    return _default_cache_dir()[0]


def _describe_mode(mode: int) -> str:
    return oct(stat.S_IMODE(mode))


def _open_private_dir(directory: Path, create: bool = True) -> int:
    """Open ``directory`` (creating it with mode 0700) and return a file descriptor for it, after
    checking that it is a real directory (no symbolic link), owned by the current user and that
    nobody else can write to it. Read/execute bits for others are removed (mode 0700).

    Raises:
        _Unsafe: the directory exists but must not be trusted.
        OSError: it cannot be created or opened.
    """
    if create:
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(directory, flags)
    except OSError as error:
        if os.path.islink(directory):
            raise _Unsafe(f"the cache directory {directory} is a symbolic link (to {os.readlink(directory)!r})") from None
        if error.errno == errno.ENOTDIR:
            raise _Unsafe(f"the cache path {directory} is not a directory") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISDIR(info.st_mode):
            raise _Unsafe(f"the cache path {directory} is not a directory")
        if info.st_uid != _expected_uid():
            raise _Unsafe(
                f"the cache directory {directory} belongs to user id {info.st_uid}, not to you "
                f"(user id {_expected_uid()})"
            )
        if info.st_mode & 0o022:
            raise _Unsafe(
                f"the cache directory {directory} has mode {_describe_mode(info.st_mode)}: other users can write to it"
            )
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.fchmod(fd, 0o700)  # ours and not writable by others: make it private
    except BaseException:
        os.close(fd)
        raise
    return fd


def _advice(directory: Path) -> str:
    return (
        f"; the native kernel is off in this process. Remove or fix {directory} "
        f"(it must be yours, mode 0700: `chmod 700 {directory}`), or point $INVOLUTION_EDU_CACHE "
        f"to a private directory"
    )


def _cpu_signature() -> str:
    """The CPU model and flags, so that a cache shared between machines never loads a foreign build."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            lines = [line for line in handle if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _open_in(dir_fd: int, name: str, flags: int, mode: int = 0o600) -> int:
    return os.open(name, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), mode, dir_fd=dir_fd)


def _read_small(dir_fd: int, name: str) -> Optional[str]:
    """The text of a small file of ours in the cache, or ``None`` if missing or not ours."""
    try:
        fd = _open_in(dir_fd, name, os.O_RDONLY)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != _expected_uid() or info.st_mode & 0o022:
            return None
        return os.read(fd, 1 << 16).decode("utf-8", errors="replace")
    finally:
        os.close(fd)


def _write_atomic(dir_fd: int, name: str, text: str) -> None:
    """Write ``text`` to ``name`` in the cache: a temporary file, fsync, then an atomic rename."""
    tmp = f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = _open_in(dir_fd, tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _checksum_fd(fd: int) -> str:
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)


def _open_verified(dir_fd: int, name: str) -> Tuple[Optional[int], str]:
    """Open the library ``name`` for loading if it is a regular file of ours that nobody else can
    write, whose size and SHA-256 match the sidecar ``name.sha256`` written after its build.

    Returns ``(fd, "")`` or ``(None, why not)``. The check and the load use the same open file,
    so the file cannot be swapped in between.
    """
    record = _read_small(dir_fd, name + ".sha256")
    if record is None:
        return None, "no checksum record (missing, or an unfinished build)"
    try:
        want_digest, want_size = record.split()[:2]
        want_size = int(want_size)
    except ValueError:
        return None, "an unreadable checksum record"
    try:
        fd = _open_in(dir_fd, name, os.O_RDONLY)
    except OSError as error:
        return None, f"cannot open it ({error.strerror})"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            problem = "not a regular file"
        elif info.st_uid != _expected_uid():
            problem = f"owned by user id {info.st_uid}, not by you"
        elif info.st_mode & 0o022:
            problem = f"writable by other users (mode {_describe_mode(info.st_mode)})"
        elif info.st_size != want_size:
            problem = f"{info.st_size} bytes instead of {want_size} (truncated or replaced)"
        elif _checksum_fd(fd) != want_digest:
            problem = "its SHA-256 checksum does not match the record (corrupted or replaced)"
        else:
            return fd, ""
    except OSError as error:
        problem = f"cannot read it ({error.strerror})"
    os.close(fd)
    return None, problem


def _dlopen_fd(fd: int, directory: Path, name: str) -> ctypes.CDLL:
    """``dlopen`` the already verified open file ``fd`` (through ``/proc/self/fd`` where there is one)."""
    proc_path = f"/proc/self/fd/{fd}"
    path = proc_path if os.path.exists(proc_path) else str(directory / name)
    library = ctypes.CDLL(path)
    version = library.involution_abi_version()
    if version != ABI_VERSION:
        raise OSError(f"{directory / name} has ABI version {version}, expected {ABI_VERSION}")
    _declare(library)
    return library


def _library_name(compiler: str, flags: list) -> str:
    """The cache file name of a build: a hash of the source, the compiler, the flags and the CPU."""
    key = hashlib.sha256("\0".join([KERNEL_SOURCE, compiler, *flags, _cpu_signature()]).encode()).hexdigest()[:16]
    return f"involution_kernels_{key}.so"


def _compiler() -> Optional[str]:
    requested = os.environ.get("CXX")
    if requested:
        return shutil.which(requested)
    return shutil.which("g++") or shutil.which("c++")


def _flag_sets() -> list:
    custom = os.environ.get(FLAGS_ENV)
    if custom is not None and custom.strip():
        return [("custom", [*shlex.split(custom), *_BASE_FLAGS])]
    return [("optimised", _FLAGS), ("fallback", _FALLBACK_FLAGS)]


def _build_timeout() -> float:
    try:
        return max(1.0, float(os.environ.get(BUILD_TIMEOUT_ENV, DEFAULT_BUILD_TIMEOUT)))
    except ValueError:
        return DEFAULT_BUILD_TIMEOUT


def _estimate(dir_fd: int, kind: str) -> float:
    """Seconds the last build in this cache took (an honest estimate for the next one)."""
    text = _read_small(dir_fd, f"last_build_seconds.{kind}")
    try:
        return float(text) if text else _ESTIMATE_SECONDS
    except ValueError:
        return _ESTIMATE_SECONDS


def _failure_cause(returncode: Optional[int] = None, stderr: str = "", error: Optional[BaseException] = None) -> str:
    """``"transient"`` (the machine: disk, quota, memory, a signal), ``"timeout"`` or ``"compile"``
    (the compiler rejected the source or the flags) for a failed build."""
    if isinstance(error, subprocess.TimeoutExpired):
        return "timeout"
    if isinstance(error, OSError):
        return "transient" if error.errno in _TRANSIENT_ERRNOS else "compile"
    if returncode is not None and returncode < 0:  # killed by a signal (the OOM killer, a user)
        return "transient"
    text = stderr.lower()
    if any(message in text for message in _TRANSIENT_MESSAGES):
        return "transient"
    return "compile"


def _build(dir_fd: int, directory: Path, compiler: str, kind: str, flags: list, name: str) -> Tuple[Optional[str], float, str]:
    """Compile the source into ``name`` in the cache and record its checksum;
    ``(error or None, seconds, cause)`` with the cause of a failure (:func:`_failure_cause`).

    Called with the cache's build lock held. The library appears under its name only when complete
    (atomic rename), and the checksum record is written after it.
    """
    stem = f".build.{os.getpid()}.{threading.get_ident()}"
    source, output = stem + ".cpp", stem + ".so"
    start = time.perf_counter()
    try:
        fd = _open_in(dir_fd, source, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            data = KERNEL_SOURCE.encode("utf-8")
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write (disk full?)")
        finally:
            os.close(fd)
    except OSError as error:  # a full disk fails here already
        try:
            os.unlink(source, dir_fd=dir_fd)
        except OSError:
            pass
        return f"writing the source {directory / source} failed: {error}", time.perf_counter() - start, _failure_cause(error=error)
    command = [compiler, *flags, str(directory / source), "-o", str(directory / output)]
    timeout = _build_timeout()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as error:
        return (f"`{' '.join(command)}` timed out after {timeout:.0f} s (${BUILD_TIMEOUT_ENV} sets the limit)", timeout,
                _failure_cause(error=error))
    except OSError as error:
        return f"`{' '.join(command)}` failed to run: {error}", time.perf_counter() - start, _failure_cause(error=error)
    finally:
        os.unlink(source, dir_fd=dir_fd)
        seconds = time.perf_counter() - start
    try:
        if result.returncode != 0:
            return (f"`{' '.join(command)}` failed (exit status {result.returncode}):\n{result.stderr.strip()[-2000:]}",
                    seconds, _failure_cause(result.returncode, result.stderr))
        fd = _open_in(dir_fd, output, os.O_RDONLY)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != _expected_uid():
                return f"the compiler's output {directory / output} is not a file of yours", seconds, "compile"
            os.fchmod(fd, 0o600)
            record = f"{_checksum_fd(fd)} {info.st_size}\n"
        finally:
            os.close(fd)
        os.replace(output, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)  # atomic: whole file or nothing
        _write_atomic(dir_fd, name + ".sha256", record)  # after the library is in place
        _write_atomic(dir_fd, f"last_build_seconds.{kind}", f"{seconds:.1f}\n")
        return None, seconds, ""
    finally:
        try:
            os.unlink(output, dir_fd=dir_fd)
        except FileNotFoundError:
            pass


def _toolchain_fingerprint(compiler: str) -> str:
    """What a failure record is tied to beyond the library's name (which hashes the compiler's path):
    the compiler's real file (resolved through symbolic links) with its size and modification time,
    so an upgrade in place counts as a different compiler, and the torch and Python versions. Read
    with ``os.stat``: running the compiler for its version would cost a process per check."""
    try:
        real = os.path.realpath(compiler)
        info = os.stat(real)
        compiler_id = f"{real} ({info.st_size} bytes, modified {int(info.st_mtime)})"
    except OSError:
        compiler_id = f"{compiler} (not found)"
    return f"{compiler_id} | torch {torch.__version__} | python {platform.python_version()}"


def _failure_record(problem: str, cause: str, fingerprint: str, timeout: float, now: Optional[float] = None) -> str:
    """The text of a ``.failed`` file: a JSON header line (cause, time, fingerprint, time limit), then the message."""
    import json

    header = dict(record=FAILED_RECORD_VERSION, cause=cause, time=time.time() if now is None else now,
                  fingerprint=fingerprint, timeout=timeout)
    return json.dumps(header) + "\n" + problem.strip() + "\n"


def _parse_failure_record(text: str, mtime: float) -> dict:
    """``{"cause", "time", "fingerprint", "timeout", "message"}`` of a ``.failed`` file. A record of an
    older version (the message alone) gets its cause from the message and its time from the file."""
    import json

    first, _, rest = text.partition("\n")
    try:
        header = json.loads(first) if first.startswith("{") else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("record") != FAILED_RECORD_VERSION:
        cause = "timeout" if "timed out after" in text else _failure_cause(stderr=text)
        return dict(cause=cause, time=mtime, fingerprint=None, timeout=None, message=text.strip())
    return dict(cause=str(header.get("cause", "compile")), time=float(header.get("time", mtime)),
                fingerprint=header.get("fingerprint"), timeout=header.get("timeout"), message=rest.strip())


def _retry_reason(record: dict, now: float, fingerprint: str, timeout: float) -> Optional[str]:
    """Why a recorded failure should be tried again now, or ``None`` to keep it (see the module docstring)."""
    age = max(0.0, now - record["time"])
    if record["fingerprint"] is not None and record["fingerprint"] != fingerprint:
        return f"the toolchain changed since (was: {record['fingerprint']}; now: {fingerprint})"
    if age >= MAX_RECORD_AGE_SECONDS:
        return f"the record is {age / 86400:.0f} days old"
    if record["cause"] == "transient" and age >= RETRY_TRANSIENT_SECONDS:
        return "it failed because of the machine (disk, memory), not the source"
    if record["cause"] == "timeout":
        if record["timeout"] is not None and timeout > float(record["timeout"]):
            return f"the time limit is now {timeout:.0f} s (it was {float(record['timeout']):.0f} s)"
        if age >= RETRY_TIMEOUT_SECONDS:
            return f"it timed out {age / 3600:.0f} hours ago"
    return None


def _when_retried(record: dict, now: float) -> str:
    age = max(0.0, now - record["time"])
    if record["cause"] == "transient":
        return f"a failure of the machine: retried {max(0.0, RETRY_TRANSIENT_SECONDS - age):.0f} s from now"
    if record["cause"] == "timeout":
        return f"a timeout: retried with a longer ${BUILD_TIMEOUT_ENV} or {max(0.0, RETRY_TIMEOUT_SECONDS - age) / 3600:.0f} h from now"
    return "a compile error: retried when the compiler or torch changes version, or after a week"


def _record_mtime(dir_fd: int, name: str) -> float:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mtime
    except OSError:
        return time.time()


class _BuildLock:
    """An inter-process lock (``fcntl.flock``) on ``build.lock`` in the cache directory."""

    def __init__(self, dir_fd: int, timeout: float):
        self.dir_fd, self.timeout, self.fd, self.waited = dir_fd, timeout, None, False

    def __enter__(self) -> "_BuildLock":
        self.fd = _open_in(self.dir_fd, "build.lock", os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if not self.waited:
                    self.waited = True
                    print("waiting for another process that is compiling the involution kernel…", file=sys.stderr, flush=True)
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise TimeoutError(f"another process held the build lock for more than {self.timeout:.0f} s")
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _declare(library: ctypes.CDLL) -> None:
    p, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for name in ("involution_forward_f32", "involution_forward_f64"):
        function = getattr(library, name)
        function.argtypes = [p, p, p, p, p, p, p, p, i64, c_int]
        function.restype = c_int
    for name in ("involution_backward_f32", "involution_backward_f64"):
        function = getattr(library, name)
        function.argtypes = [p, p, p, p, p, p, p, p, p, p, p, p, i64, c_int]
        function.restype = c_int
    library.involution_scratch_per_thread.argtypes = [p]
    library.involution_scratch_per_thread.restype = i64
    for name in ("involution_fused_forward_f32", "involution_fused_forward_f64"):
        function = getattr(library, name)
        function.argtypes = [p, p, p, p, p, p, p, p, p, p, i64, c_int]
        function.restype = c_int
    for name in ("involution_fused_forward_affine_f32", "involution_fused_forward_affine_f64"):
        function = getattr(library, name)
        function.argtypes = [p, p, p, p, p, p, p, p, p, p, p, p, i64, c_int]
        function.restype = c_int
    for name in ("involution_fused_backward_f32", "involution_fused_backward_f64"):
        function = getattr(library, name)
        function.argtypes = [p, p, p, p, p, p, p, p, p, p, p, p, p, p, p, p, i64, c_int]
        function.restype = c_int
    library.involution_fused_scratch_per_thread.argtypes = [p, c_int]
    library.involution_fused_scratch_per_thread.restype = i64
    library.involution_fused_padded_rank.argtypes = [p]
    library.involution_fused_padded_rank.restype = i64


def load_native() -> Optional[ctypes.CDLL]:
    """Compile (first time) and load the kernel library; ``None`` if that is impossible here.

    Thread-safe and tried once per process; the reason for a failure is kept in
    :func:`native_error`. Set ``INVOLUTION_EDU_NATIVE=0`` to disable the native kernel.
    """
    global _library, _error, _compile_seconds, _tried, _info
    if _tried:
        return _library
    with _lock:
        if _tried:
            return _library
        info: dict = {}
        try:
            _library, _error, _compile_seconds = _load(info)
        except Exception as error:  # never let a broken toolchain break the library
            _library, _error = None, f"{type(error).__name__}: {error}"
        _info = info
        _tried = True
    return _library


def _private_tempdir() -> Path:
    """A fresh private directory (``mkdtemp``: mode 0700, unpredictable name), removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="involution_edu_"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _load(info: dict) -> Tuple[Optional[ctypes.CDLL], Optional[str], Optional[float]]:
    if os.environ.get("INVOLUTION_EDU_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None, "disabled by INVOLUTION_EDU_NATIVE=0", None
    if not sys.platform.startswith(("linux", "darwin")):
        return None, f"the native kernel is only built on Linux and macOS, not {sys.platform}", None
    compiler = _compiler()
    if compiler is None:
        return None, "no C++ compiler found (set $CXX or install g++)", None
    directory, explicit = _default_cache_dir()
    try:
        dir_fd = _open_private_dir(directory)
    except _Unsafe as unsafe:
        return None, f"refusing the kernel cache: {unsafe}{_advice(directory)}", None
    except OSError as error:
        # The cache cannot be created here (read-only home, no home...): a private directory of
        # this process instead, never a predictable path in a shared temporary directory.
        unusable = f"{directory} is unusable ({error.strerror or error})"
        directory = _private_tempdir()
        dir_fd = _open_private_dir(directory, create=False)
        info["note"] = f"{unusable}; compiling into the private temporary directory {directory}"
    try:
        return _load_from(info, dir_fd, directory, compiler)
    finally:
        os.close(dir_fd)


def _load_from(info: dict, dir_fd: int, directory: Path, compiler: str):
    info.update(directory=str(directory), compiler=compiler)
    timeout = _build_timeout()
    errors = []
    with _BuildLock(dir_fd, 2 * timeout + 120.0):  # one build at a time; waiters then load its result
        for kind, flags in _flag_sets():
            name = _library_name(compiler, flags)
            failed = _read_small(dir_fd, name + ".failed")
            if failed is not None:
                now = time.time()
                record = _parse_failure_record(failed, _record_mtime(dir_fd, name + ".failed"))
                reason = _retry_reason(record, now, _toolchain_fingerprint(compiler), timeout)
                if reason is None:
                    errors.append(f"the {kind} build failed earlier (recorded in {directory / (name + '.failed')}; "
                                  f"delete it to retry; {_when_retried(record, now)}): {record['message']}")
                    continue
                info.setdefault("retried", []).append(f"{directory / (name + '.failed')}: {reason}")
            seconds = None
            fd, why = _open_verified(dir_fd, name)
            if fd is None:
                if why != "no checksum record (missing, or an unfinished build)" or os.path.lexists(directory / name):
                    info.setdefault("rebuilt", []).append(f"{directory / name}: {why}")
                estimate = _estimate(dir_fd, kind)
                print(f"compiling the involution kernel (first use, ~{estimate:.0f} s)…", file=sys.stderr, flush=True)
                problem, seconds, cause = _build(dir_fd, directory, compiler, kind, flags, name)
                if problem is not None:
                    try:
                        _write_atomic(dir_fd, name + ".failed",
                                      _failure_record(problem, cause, _toolchain_fingerprint(compiler), timeout))
                    except OSError:  # the disk is full even for the record: the next process simply tries again
                        pass
                    errors.append(f"the {kind} build failed: {problem}")
                    continue
                fd, why = _open_verified(dir_fd, name)
                if fd is None:
                    errors.append(f"{directory / name} was just built but fails its check: {why}")
                    continue
            if failed is not None:  # a retried record, now built (or found built by another process)
                try:
                    os.unlink(name + ".failed", dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
            try:
                library = _dlopen_fd(fd, directory, name)
            finally:
                os.close(fd)
            info.update(library=str(directory / name), flags=" ".join(flags), kind=kind, compile_seconds=seconds)
            if kind == "fallback":
                message = (
                    "the native kernel runs the slower fallback build (one thread, no -march=native) because "
                    + " | ".join(errors)
                )
                info["note"] = message
                print(f"involution_edu: {message.splitlines()[0]}", file=sys.stderr, flush=True)
                return library, message, seconds
            return library, None, seconds
    return None, "could not build the native kernel: " + " | ".join(errors), None


def native_available() -> bool:
    """Whether the native kernel can be used in this process (compiles it on the first call)."""
    return load_native() is not None


def native_error() -> Optional[str]:
    """Why the native kernel is unavailable or degraded, else ``None`` (tries to load it first).

    "Degraded" means the optimised build failed (or timed out) and the slower fallback build is
    in use: the message then says so and why, while :func:`native_available` is ``True``.
    """
    load_native()
    return _error


def native_compile_seconds() -> Optional[float]:
    """Seconds this process spent compiling the kernel (``None`` if it was loaded from the cache)."""
    load_native()
    return _compile_seconds


def native_build_info() -> dict:
    """How the kernel was obtained in this process: ``directory`` (the cache), ``library`` (the file
    loaded), ``kind`` (``"optimised"``, ``"fallback"`` or ``"custom"`` flags), ``flags``,
    ``compiler``, ``compile_seconds`` (``None`` when loaded from the cache), and ``note`` / ``rebuilt``
    when something unusual happened (a fallback build, a private temporary cache, a corrupted
    library rebuilt), ``retried`` (failure records tried again, and why). Empty keys are left out."""
    load_native()
    return dict(_info)


def native_supports(*tensors: torch.Tensor) -> bool:
    """Whether the native kernel handles these tensors: plain strided CPU tensors of dtype float32 or
    float64, outside ``torch.compile`` tracing (whose fake tensors have no data to hand to C++)."""
    if torch.compiler.is_compiling():
        return False
    return all(
        type(t) in (torch.Tensor, torch.nn.Parameter)
        and t.device.type == "cpu"
        and t.dtype in (torch.float32, torch.float64)
        and t.layout == torch.strided
        for t in tensors
    )


_INT64_MAX = 2**63 - 1


def _longs(values) -> "ctypes.Array":
    """A C array of int64; refuses (never truncates) a value outside int64 or a non-integer."""
    checked = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"expected an integer for the native kernel, got {value!r} of type {type(value).__name__}")
        value = int(value)
        if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
            raise ValueError(f"{value} does not fit in a 64-bit integer")
        checked.append(value)
    return (ctypes.c_int64 * len(checked))(*checked)


def _suffix(dtype: torch.dtype) -> str:
    return "f32" if dtype == torch.float32 else "f64"


PARALLEL_MIN_WORK = 1 << 20
"""Below this many multiply-adds (about 50 microseconds on one core) a call runs on one thread:
waking a second thread would cost more than it saves, and far more on a busy machine."""


def _threads(tasks: int, work: int) -> int:
    if work < PARALLEL_MIN_WORK:
        return 1
    return max(1, min(torch.get_num_threads(), tasks))


def _output_like(x: torch.Tensor, shape) -> torch.Tensor:
    """An empty tensor of ``shape`` in ``x``'s memory format (channels last if ``x`` is)."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=memory_format)


_ERRORS = {
    1: "no sizes", 2: "a size is negative or above 2**31 - 1", 3: "a size that must be positive is not",
    4: "C is not divisible by G", 5: "the dilated kernel or the padded input is too large",
    6: "the output size does not match the input size and arguments", 7: "a scratch plane is too large",
    8: "bad scratch size or thread count", 9: "a null pointer",
}


def _check_tensor(name: str, t: object, dim: int, dtype: Optional[torch.dtype] = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not native_supports(t):
        raise TypeError(f"{name} must be a strided CPU tensor of dtype float32 or float64, got {t.dtype} on {t.device}")
    if t.dim() != dim:
        raise ValueError(f"{name} must be {dim}-D, got shape {tuple(t.shape)}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name} must have the dtype of x ({dtype}), got {t.dtype}")


def _dims(x: torch.Tensor, kernels: torch.Tensor, stride, padding, dilation, out_hw=None) -> list:
    """Validate everything the C++ code will see (shared rules of :func:`check_involution_args`)
    and return dims = [B, C, H, W, G, K, H', W', s, p, d]."""
    _check_tensor("x", x, 4)
    _check_tensor("kernels", kernels, 6, x.dtype)
    if padding is None:
        raise TypeError("padding must be an integer for the native kernel, got None")
    stride, padding, dilation, out_h, out_w = check_involution_args(x.shape, kernels.shape, stride, padding, dilation)
    if out_hw is not None:
        for name, given, expected in (("out_h", out_hw[0], out_h), ("out_w", out_hw[1], out_w)):
            if isinstance(given, bool) or not isinstance(given, numbers.Integral):
                raise TypeError(f"{name} must be an integer, got {given!r} of type {type(given).__name__}")
            if int(given) != expected:
                raise ValueError(
                    f"{name}={given} does not match the output size {expected} of x with shape {tuple(x.shape)}, "
                    f"kernels with shape {tuple(kernels.shape)}, stride={stride}, padding={padding}, dilation={dilation}"
                )
    batch, channels, height, width = x.shape
    return [batch, channels, height, width, kernels.shape[1], kernels.shape[2], out_h, out_w, stride, padding, dilation]


def _call(function, *args) -> None:
    code = function(*args)
    if code != 0:
        raise ValueError(f"the native involution kernel refused its arguments: {_ERRORS.get(code, f'error {code}')}")


def _scratch(library, dims_c, threads: int, like: torch.Tensor) -> Tuple[int, torch.Tensor]:
    per_thread = library.involution_scratch_per_thread(dims_c)
    if per_thread < 0:
        raise ValueError(f"the native involution kernel refused the sizes {list(dims_c)}")
    return per_thread, like.new_empty(max(1, threads * per_thread))  # one group's planes per thread


def native_forward(
    x: torch.Tensor, kernels: torch.Tensor, stride: int, padding: int, dilation: int, out_h: int, out_w: int
) -> torch.Tensor:
    """Forward pass with the native kernel.

    ``x``: ``(B, C, H, W)``, any strides; ``kernels``: ``(B, G, K, K, H', W')``, any strides.
    Returns ``(B, C, H', W')`` (channels last when ``x`` is). Every argument is checked again
    here (a stale ``out_h``/``out_w``, e.g. from a traced graph run at another size, raises
    ``ValueError``), so no call reaches C++ with sizes that do not describe the tensors.
    Non-finite kernel values on padded taps give NaN, as in the eager op (see the C++ source).
    """
    library = load_native()
    if library is None:
        raise RuntimeError(f"the native involution kernel is unavailable: {_error}")
    dims = _dims(x, kernels, stride, padding, dilation, (out_h, out_w))
    batch, channels, _, _, groups, kernel_size, out_h, out_w = dims[:8]
    out = _output_like(x, (batch, channels, out_h, out_w))
    if out.numel() == 0:
        return out
    dims_c = _longs(dims)
    threads = _threads(batch * groups, out.numel() * kernel_size * kernel_size)
    per_thread, scratch = _scratch(library, dims_c, threads, x)
    _call(
        getattr(library, f"involution_forward_{_suffix(x.dtype)}"),
        dims_c, x.data_ptr(), _longs(x.stride()), kernels.data_ptr(), _longs(kernels.stride()),
        out.data_ptr(), _longs(out.stride()), scratch.data_ptr(), per_thread, threads,
    )
    return out


def native_backward(
    x: torch.Tensor,
    kernels: torch.Tensor,
    grad_out: torch.Tensor,
    stride: int,
    padding: int,
    dilation: int,
    need_x: bool = True,
    need_kernels: bool = True,
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Gradients ``(grad_x, grad_kernels)`` with the native kernel (``None`` where not needed).

    ``grad_out``: ``(B, C, H', W')`` with any strides (no ``.contiguous()`` needed).
    """
    library = load_native()
    if library is None:
        raise RuntimeError(f"the native involution kernel is unavailable: {_error}")
    dims = _dims(x, kernels, stride, padding, dilation)
    batch, channels, _, _, groups, kernel_size, out_h, out_w = dims[:8]
    _check_tensor("grad_out", grad_out, 4, x.dtype)
    if tuple(grad_out.shape) != (batch, channels, out_h, out_w):
        raise ValueError(f"grad_out must have shape {(batch, channels, out_h, out_w)}, got {tuple(grad_out.shape)}")
    grad_x = _output_like(x, x.shape) if need_x else None
    grad_kernels = torch.empty_like(kernels) if need_kernels else None  # keeps kernels' strides
    if grad_out.numel() == 0 or x.numel() == 0:
        return (grad_x.zero_() if need_x else None), (grad_kernels.zero_() if need_kernels else None)
    if not (need_x or need_kernels):
        return None, None
    dims_c = _longs(dims)
    threads = _threads(batch * groups, 2 * grad_out.numel() * kernel_size * kernel_size)
    per_thread, scratch = _scratch(library, dims_c, threads, x)
    null = ctypes.c_void_p(None)
    _call(
        getattr(library, f"involution_backward_{_suffix(x.dtype)}"),
        dims_c, x.data_ptr(), _longs(x.stride()), kernels.data_ptr(), _longs(kernels.stride()),
        grad_out.data_ptr(), _longs(grad_out.stride()),
        grad_x.data_ptr() if need_x else null, _longs(grad_x.stride() if need_x else (0, 0, 0, 0)),
        grad_kernels.data_ptr() if need_kernels else null,
        _longs(grad_kernels.stride() if need_kernels else (0,) * 6),
        scratch.data_ptr(), per_thread, threads,
    )
    return grad_x, grad_kernels


# --- the fused kernel-generating involution (involution_edu.fused) ----------------------------


def _fused_dims(x, h, weight, bias, kernel_size, stride, padding, dilation) -> list:
    """Validate what the fused C++ code will see; dims = [B, C, H, W, G, K, H', W', s, p, d, C_r]."""
    _check_tensor("x", x, 4)
    _check_tensor("h", h, 4, x.dtype)
    _check_tensor("weight", weight, 2, x.dtype)
    _check_tensor("bias", bias, 1, x.dtype)
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, numbers.Integral) or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive integer, got {kernel_size!r}")
    taps = int(kernel_size) ** 2
    rows, reduced = weight.shape
    if rows % taps != 0 or rows == 0:
        raise ValueError(f"weight must have G*K*K rows (a multiple of {taps}), got shape {tuple(weight.shape)}")
    if tuple(bias.shape) != (rows,):
        raise ValueError(f"bias must have shape ({rows},), got {tuple(bias.shape)}")
    if h.shape[0] != x.shape[0] or h.shape[1] != reduced:
        raise ValueError(f"h must have shape (B={x.shape[0]}, C_r={reduced}, H', W'), got {tuple(h.shape)}")
    if padding is None:
        raise TypeError("padding must be an integer for the native kernel, got None")
    groups = rows // taps
    kernels_shape = (x.shape[0], groups, kernel_size, kernel_size, h.shape[2], h.shape[3])
    stride, padding, dilation, out_h, out_w = check_involution_args(x.shape, kernels_shape, stride, padding, dilation)
    batch, channels, height, width = x.shape
    return [batch, channels, height, width, groups, int(kernel_size), out_h, out_w, stride, padding, dilation, reduced]


def _fused_weights(weight: torch.Tensor, bias: torch.Tensor, dims) -> Tuple[torch.Tensor, torch.Tensor]:
    """``weight (G*K*K, C_r) -> (G, C_r, K*K)`` contiguous (the taps of one r adjacent), bias contiguous."""
    groups, taps, reduced = dims[4], dims[5] ** 2, dims[11]
    return weight.reshape(groups, taps, reduced).transpose(1, 2).contiguous(), bias.contiguous()


def native_fused_forward(x, h, weight, bias, kernel_size, stride, padding, dilation, scale=None,
                         shift=None) -> torch.Tensor:
    """Fused forward: ``x (B, C, H, W)``, ``h (B, C_r, H', W')``, ``weight (G*K*K, C_r)``,
    ``bias (G*K*K,)`` -> ``(B, C, H', W')`` (channels last when ``x`` is), any strides. Each tile of
    16 output pixels computes its ``G*K*K x 16`` kernel values into a buffer in cache and applies
    them; the kernels tensor is never written. With ``scale`` and ``shift`` (``(C,)`` each, both or
    neither) the output is ``scale[c] * out[c] + shift[c]`` (a folded eval-mode BatchNorm), applied
    before it is written. Every size is checked here and again in C++."""
    library = load_native()
    if library is None:
        raise RuntimeError(f"the native involution kernel is unavailable: {_error}")
    dims = _fused_dims(x, h, weight, bias, kernel_size, stride, padding, dilation)
    batch, channels, _, _, groups, kernel_size, out_h, out_w = dims[:8]
    out = _output_like(x, (batch, channels, out_h, out_w))
    if out.numel() == 0:
        return out
    if (scale is None) != (shift is None):
        raise ValueError("scale and shift must be given together (a folded BatchNorm) or not at all")
    if scale is not None:
        for name, value in (("scale", scale), ("shift", shift)):
            _check_tensor(name, value, 1, x.dtype)
            if value.shape[0] != channels:
                raise ValueError(f"{name} must have shape ({channels},) (one value per channel of x), got {tuple(value.shape)}")
        scale, shift = scale.contiguous(), shift.contiguous()
    w_t, bias_c = _fused_weights(weight, bias, dims)
    dims_c = _longs(dims)
    work = out.numel() * kernel_size * kernel_size * (1 + dims[11] // max(1, channels // groups))
    threads = _threads(batch * groups, work)
    per_thread = library.involution_fused_scratch_per_thread(dims_c, 0)
    if per_thread < 0:
        raise ValueError(f"the native involution kernel refused the sizes {dims}")
    scratch = x.new_empty(max(1, threads * per_thread))
    common = (dims_c, x.data_ptr(), _longs(x.stride()), h.data_ptr(), _longs(h.stride()), w_t.data_ptr(),
              bias_c.data_ptr())
    tail = (out.data_ptr(), _longs(out.stride()), scratch.data_ptr(), per_thread, threads)
    if scale is None:
        _call(getattr(library, f"involution_fused_forward_{_suffix(x.dtype)}"), *common, *tail)
    else:
        _call(getattr(library, f"involution_fused_forward_affine_{_suffix(x.dtype)}"), *common, scale.data_ptr(),
              shift.data_ptr(), *tail)
    return out


def native_fused_backward(grad_out, x, h, weight, bias, kernel_size, stride, padding, dilation):
    """Fused backward: ``(dx, dh, dweight, dbias)`` for ``grad_out (B, C, H', W')`` (any strides), the
    kernels recomputed per tile. One task per sample (``dh`` sums over the groups); ``dweight`` and
    ``dbias`` are summed from per-thread partial sums."""
    library = load_native()
    if library is None:
        raise RuntimeError(f"the native involution kernel is unavailable: {_error}")
    dims = _fused_dims(x, h, weight, bias, kernel_size, stride, padding, dilation)
    batch, channels, _, _, groups, kernel_size, out_h, out_w = dims[:8]
    reduced, taps = dims[11], kernel_size * kernel_size
    _check_tensor("grad_out", grad_out, 4, x.dtype)
    if tuple(grad_out.shape) != (batch, channels, out_h, out_w):
        raise ValueError(f"grad_out must have shape {(batch, channels, out_h, out_w)}, got {tuple(grad_out.shape)}")
    grad_x = _output_like(x, x.shape)
    grad_h = torch.empty(h.shape, dtype=h.dtype)
    if grad_out.numel() == 0 or x.numel() == 0:
        return grad_x.zero_(), grad_h.zero_(), torch.zeros_like(weight), torch.zeros_like(bias)
    w_t, bias_c = _fused_weights(weight, bias, dims)
    dims_c = _longs(dims)
    work = 4 * grad_out.numel() * taps * (1 + reduced // max(1, channels // groups))
    threads = _threads(batch, work)
    per_thread = library.involution_fused_scratch_per_thread(dims_c, 1)
    padded = library.involution_fused_padded_rank(dims_c)
    if per_thread < 0 or padded < 0:
        raise ValueError(f"the native involution kernel refused the sizes {dims}")
    scratch = x.new_empty(max(1, threads * per_thread))
    grad_w = x.new_zeros(threads, groups, taps, padded)  # per-thread partial sums
    grad_b = x.new_zeros(threads, groups * taps)
    _call(
        getattr(library, f"involution_fused_backward_{_suffix(x.dtype)}"),
        dims_c, x.data_ptr(), _longs(x.stride()), h.data_ptr(), _longs(h.stride()), w_t.data_ptr(), bias_c.data_ptr(),
        grad_out.data_ptr(), _longs(grad_out.stride()), grad_x.data_ptr(), _longs(grad_x.stride()),
        grad_h.data_ptr(), _longs(grad_h.stride()), grad_w.data_ptr(), grad_b.data_ptr(),
        scratch.data_ptr(), per_thread, threads,
    )
    grad_w = grad_w.sum(0)[:, :, :reduced].reshape(groups * taps, reduced)
    return grad_x, grad_h, grad_w, grad_b.sum(0)
