"""The native kernel's cache is safe on a shared machine: a planted library is never loaded, one
build at a time, a corrupted library is rebuilt, and every size is checked before it reaches C++.

Every probe runs in a subprocess with its own ``INVOLUTION_EDU_CACHE``, so a crash fails the test
instead of killing pytest, and the fresh-cache builds use ``INVOLUTION_EDU_NATIVE_FLAGS=-O0``
(a few seconds instead of the optimised build's quarter of a minute)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CHEAP = {"INVOLUTION_EDU_NATIVE_FLAGS": "-O0"}

PLANT_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
    const char* path = getenv("PLANT_MARKER");
    FILE* f = fopen(path ? path : "/dev/null", "w");
    if (f) { fputs("the planted library ran\n", f); fclose(f); }
}
int involution_abi_version(void) { return 4; }
"""


def run_probe(code: str, env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, env=environment,
        timeout=timeout,
    )


# Loads the kernel (once per process) and reports; the result is a checksum of a float32 output.
PROBE = """
    import json, os, sys
    from involution_edu import native
    import torch
    available = native.native_available()
    result = None
    if available:
        from involution_edu.reference import involution_loops
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 32, 7, 6, generator=g, dtype=torch.float64)
        k = torch.randn(2, 2, 3, 3, 7, 6, generator=g, dtype=torch.float64)
        out = native.native_forward(x, k, 1, 1, 1, 7, 6)
        error = float((out - torch.from_numpy(involution_loops(x.numpy(), k.numpy()))).abs().max())
        assert error < 1e-10, error
        x32 = x.float().contiguous(memory_format=torch.channels_last)
        result = native.native_forward(x32, k.float(), 1, 1, 1, 7, 6).double().sum().item()
    print(json.dumps(dict(available=available, error=native.native_error(), info=native.native_build_info(),
                          result=result)))
"""

# Several loader scenarios in one process (importing torch is the slow part of a probe). Only the
# last scenario may actually load a library; the others must be refused before any dlopen.
SCENARIOS = """
    import json, os, sys
    from involution_edu import native
    answers = []
    for scenario in json.loads(sys.argv[1]):
        os.environ.update(scenario["env"])
        os.environ["INVOLUTION_EDU_CACHE"] = scenario["cache"]
        native._expected_uid = (lambda: os.geteuid() + 1) if scenario.get("other_owner") else os.geteuid
        native._tried, native._library, native._error, native._info = False, None, None, {}
        native.load_native()
        answers.append(dict(available=native._library is not None, error=native._error, info=native._info))
        for name in scenario["env"]:
            del os.environ[name]
    print(json.dumps(answers))
"""


def probe(cache: Path, **env: str) -> dict:
    done = run_probe(PROBE, {"INVOLUTION_EDU_CACHE": str(cache), **CHEAP, **env})
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    answer["stderr"] = done.stderr
    return answer


def scenarios(*items: dict) -> list:
    done = run_probe(SCENARIOS, {}, json.dumps([{**item, "cache": str(item["cache"])} for item in items]))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def library_name(monkeypatch, env: dict) -> str:
    """The file name the loader looks for under ``env``."""
    from involution_edu import native

    with monkeypatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return native._library_name(native._compiler(), native._flag_sets()[0][1])


@pytest.fixture(scope="module")
def plant(tmp_path_factory) -> Path:
    """A shared library whose constructor writes the file named by $PLANT_MARKER."""
    folder = tmp_path_factory.mktemp("plant")
    source = folder / "plant.c"
    source.write_text(PLANT_SOURCE)
    library = folder / "plant.so"
    subprocess.run(["gcc", "-shared", "-fPIC", str(source), "-o", str(library)], check=True)
    return library


@pytest.fixture(scope="module")
def counting_compiler(tmp_path_factory) -> tuple:
    """A $CXX that appends one line to a log per run, then runs g++."""
    folder = tmp_path_factory.mktemp("cxx")
    log = folder / "runs.log"
    log.write_text("")
    wrapper = folder / "counting-g++"
    wrapper.write_text(f'#!/bin/sh\necho run >> "{log}"\nexec "{shutil.which("g++")}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, log


def runs(log: Path) -> int:
    return log.read_text().count("run")


@pytest.fixture(scope="module")
def golden(tmp_path_factory, counting_compiler) -> tuple:
    """A cache built once by a first process, and what a second process then found in it."""
    wrapper, log = counting_compiler
    cache = tmp_path_factory.mktemp("golden") / "new" / "cache"
    first = probe(cache, CXX=str(wrapper))
    second = probe(cache, CXX=str(wrapper))
    return cache, first, second


def plant_into(directory: Path, plant: Path, name: str) -> Path:
    """Put the planted library under the exact name the loader looks for, with a matching record."""
    target = directory / name
    shutil.copy(plant, target)
    data = target.read_bytes()
    (directory / (name + ".sha256")).write_text(f"{hashlib.sha256(data).hexdigest()} {len(data)}\n")
    return target


def make_dir(path: Path, mode: int) -> Path:
    path.mkdir()
    path.chmod(mode)
    return path


UNSAFE = [
    ("mode 0777", "other users can write"),
    ("mode 0775", "other users can write"),
    ("mode 0757", "other users can write"),
    ("symlink", "symbolic link"),
    ("other owner", "belongs to user id"),
]


def test_an_unsafe_cache_is_refused_and_a_planted_library_never_runs(tmp_path, plant, monkeypatch):
    marker = tmp_path / "PLANTED_LIBRARY_RAN"
    env = {**CHEAP, "PLANT_MARKER": str(marker)}
    name = library_name(monkeypatch, env)
    items = []
    for number, (setup, _) in enumerate(UNSAFE):
        cache = tmp_path / f"cache{number}"
        item = dict(cache=cache, env=env)
        if setup.startswith("mode"):
            plant_into(make_dir(cache, 0o700), plant, name)
            cache.chmod(int(setup.split()[1], 8))
        elif setup == "symlink":
            real = make_dir(tmp_path / "elsewhere", 0o700)  # a directory the attacker controls
            plant_into(real, plant, name)
            cache.symlink_to(real)
        else:
            plant_into(make_dir(cache, 0o700), plant, name)
            item["other_owner"] = True
        items.append(item)
    # A private cache whose library file others can write: never loaded (and no rebuild here).
    writable = make_dir(tmp_path / "writable", 0o700)
    no_compiler = {**env, "CXX": "false"}  # no rebuild possible: the loader must refuse
    plant_into(writable, plant, library_name(monkeypatch, no_compiler)).chmod(0o666)
    items.append(dict(cache=writable, env=no_compiler))
    answers = scenarios(*items)
    assert not marker.exists(), "the planted library was loaded"
    for (setup, needle), item, answer in zip(UNSAFE, items, answers):
        assert answer["available"] is False, setup
        assert "refusing the kernel cache" in answer["error"] and str(item["cache"]) in answer["error"], setup
        assert needle in answer["error"], (setup, answer["error"])
        assert "chmod 700" in answer["error"]  # says how to fix it
    assert answers[-1]["available"] is False
    assert "writable by other users" in " ".join(answers[-1]["info"]["rebuilt"])


def test_the_cache_directory_is_created_private_and_reused(golden):
    cache, first, second = golden
    assert first["available"] is True, first["error"]
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    library = Path(first["info"]["library"])
    assert library.parent == cache and stat.S_IMODE(library.stat().st_mode) & 0o077 == 0
    assert first["info"]["compile_seconds"] > 0
    assert first["stderr"].count("compiling the involution kernel (first use, ~") == 1
    assert second["info"]["compile_seconds"] is None and "compiling" not in second["stderr"]
    assert second["result"] == first["result"]


def test_four_processes_on_an_empty_cache_compile_once(tmp_path, counting_compiler):
    wrapper, log = counting_compiler
    before = runs(log)
    env = {**os.environ, **CHEAP, "INVOLUTION_EDU_CACHE": str(tmp_path / "cache"), "CXX": str(wrapper)}
    processes = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(PROBE)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, [err for _, err in outputs]
    answers = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert runs(log) == before + 1  # exactly one compiler run
    assert all(answer["available"] for answer in answers)
    assert len({answer["result"] for answer in answers}) == 1  # identical results
    assert sum(answer["info"]["compile_seconds"] is not None for answer in answers) == 1
    stderr = "".join(err for _, err in outputs)
    assert stderr.count("compiling the involution kernel (first use") == 1


@pytest.mark.parametrize("damage", ["truncate", "plant with a stale record", "delete the record"])
def test_a_corrupted_cached_library_is_rebuilt_not_loaded(tmp_path, golden, plant, counting_compiler, damage):
    wrapper, log = counting_compiler
    source, first, _ = golden
    cache = tmp_path / "cache"
    shutil.copytree(source, cache)
    library = cache / Path(first["info"]["library"]).name
    data = library.read_bytes()
    marker = tmp_path / "PLANTED_LIBRARY_RAN"
    if damage == "truncate":
        library.write_bytes(data[: len(data) // 3])
    elif damage == "plant with a stale record":
        shutil.copy(plant, library)  # the record (size, checksum) is the real build's
    else:
        (cache / (library.name + ".sha256")).unlink()
    before = runs(log)
    second = probe(cache, CXX=str(wrapper), PLANT_MARKER=str(marker))
    # The process never died with SIGBUS: the damaged file was never dlopen'ed.
    assert not marker.exists()
    assert second["available"], second["error"]
    assert second["info"]["compile_seconds"] is not None and runs(log) == before + 1
    assert second["result"] == first["result"]
    assert str(library) in " ".join(second["info"]["rebuilt"])


def test_failed_and_timed_out_builds_are_recorded_and_reported(tmp_path, counting_compiler):
    wrapper, log = counting_compiler
    slow = tmp_path / "slow-g++"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")  # exec: the timeout kills the sleep itself
    slow.chmod(0o755)
    bad = {"CXX": str(wrapper), "INVOLUTION_EDU_NATIVE_FLAGS": "-O0 --no-such-option"}
    before = runs(log)
    failed, again, timed_out = scenarios(
        dict(cache=tmp_path / "cache", env=bad),
        dict(cache=tmp_path / "cache", env=bad),  # a new attempt finds the record
        dict(cache=tmp_path / "cache2", env={"CXX": str(slow), "INVOLUTION_EDU_BUILD_TIMEOUT": "1", **CHEAP}),
    )
    assert failed["available"] is False
    assert "could not build the native kernel" in failed["error"] and "--no-such-option" in failed["error"]
    assert again["available"] is False
    assert "failed earlier" in again["error"] and "delete it to retry" in again["error"]
    assert runs(log) == before + 1  # the recorded failure was not retried
    assert timed_out["available"] is False
    assert "timed out after 1 s" in timed_out["error"] and "INVOLUTION_EDU_BUILD_TIMEOUT" in timed_out["error"]


def test_a_failed_optimised_build_is_never_a_silent_fallback(tmp_path):
    # A compiler that refuses -fopenmp: the optimised build fails, the fallback build is used,
    # and native_error() / native_build_info() say so. (-O0 keeps this test's build short.)
    picky = tmp_path / "no-openmp-g++"
    picky.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "args = sys.argv[1:]\n"
        "if '-fopenmp' in args:\n"
        "    sys.exit('no OpenMP here')\n"
        f"os.execv({shutil.which('g++')!r}, ['g++', *[a for a in args if not a.startswith('-O')], '-O0'])\n"
    )
    picky.chmod(0o755)
    answer = probe(tmp_path / "cache", CXX=str(picky), INVOLUTION_EDU_NATIVE_FLAGS="")  # the default flag sets
    assert answer["available"] is True
    assert answer["info"]["kind"] == "fallback"
    assert "slower fallback build" in answer["error"] and "no OpenMP here" in answer["error"]
    assert "slower fallback build" in answer["stderr"]


def test_an_uncreatable_cache_uses_a_private_temporary_directory(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")  # so the cache cannot be created, even by root
    answer = probe(blocker / "cache")
    assert answer["available"] is True, answer["error"]
    directory = Path(answer["info"]["directory"])
    assert directory.name.startswith("involution_edu_") and "private temporary directory" in answer["info"]["note"]
    assert str(blocker / "cache") in answer["info"]["note"]
    assert not directory.exists()  # removed at exit


def test_the_source_is_package_data():
    # native.py reads the C++ file through importlib.resources; pyproject.toml ships it in the wheel.
    from importlib import resources

    from involution_edu import native

    source = resources.files("involution_edu").joinpath("csrc", "involution.cpp")
    assert source.is_file() and source.read_text(encoding="utf-8") == native.KERNEL_SOURCE
    assert 'extern "C"' in native.KERNEL_SOURCE and f"return {native.ABI_VERSION};" in native.KERNEL_SOURCE
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '[tool.setuptools.package-data]\ninvolution_edu = ["csrc/*.cpp"]' in pyproject


# ------------------------------------------------------------------ failure records: retried when the cause may have passed


def _rewrite_record(path: Path, **changes) -> dict:
    header_line, _, message = path.read_text().partition("\n")
    header = json.loads(header_line)
    header.update(changes)
    path.write_text(json.dumps(header) + "\n" + message)
    return header


def test_a_full_disk_is_retried_once_there_is_space_and_the_record_goes(tmp_path):
    """The build fails with the compiler's own ENOSPC message (no real disk is filled); a process a
    minute later, with space again, rebuilds and removes the record."""
    full = tmp_path / "DISK_IS_FULL"
    full.write_text("")
    log = tmp_path / "runs.log"
    log.write_text("")
    compiler = tmp_path / "disk-g++"
    compiler.write_text(
        "#!/bin/sh\n"
        f'if [ -e "{full}" ]; then echo "cc1plus: fatal error: error writing to /tmp/ccQ.s: No space left on device" >&2; exit 1; fi\n'
        f'echo run >> "{log}"\nexec "{shutil.which("g++")}" "$@"\n'
    )
    compiler.chmod(0o755)
    env = {"CXX": str(compiler), **CHEAP}
    cache = tmp_path / "cache"
    first, soon = scenarios(dict(cache=cache, env=env), dict(cache=cache, env=env))
    assert first["available"] is False and "No space left on device" in first["error"]
    (record,) = cache.glob("*.failed")
    header = json.loads(record.read_text().splitlines()[0])
    assert header["cause"] == "transient" and header["record"] == 1
    assert soon["available"] is False and "failure of the machine: retried" in soon["error"]  # not within the minute
    full.unlink()
    _rewrite_record(record, time=header["time"] - 120)
    (later,) = scenarios(dict(cache=cache, env=env))
    assert later["available"] is True, later["error"]
    assert runs(log) == 1 and not record.exists()
    assert "not the source" in " ".join(later["info"]["retried"])


def test_a_genuine_compile_error_stays_cached_until_the_toolchain_changes(tmp_path, counting_compiler):
    wrapper, log = counting_compiler
    bad = {"CXX": str(wrapper), "INVOLUTION_EDU_NATIVE_FLAGS": "-O0 --no-such-option"}
    cache = tmp_path / "cache"
    before = runs(log)
    (failed,) = scenarios(dict(cache=cache, env=bad))
    assert failed["available"] is False and runs(log) == before + 1
    (record,) = cache.glob("*.failed")
    header = _rewrite_record(record, time=json.loads(record.read_text().splitlines()[0])["time"] - 6 * 3600)
    assert header["cause"] == "compile"
    (kept,) = scenarios(dict(cache=cache, env=bad))  # six hours later: still the same compiler, still cached
    assert kept["available"] is False and "failed earlier" in kept["error"] and "a compile error" in kept["error"]
    assert runs(log) == before + 1
    _rewrite_record(record, fingerprint="g++ (an older release) 9.0 | torch 1.0 | python 3.8")
    (retried,) = scenarios(dict(cache=cache, env=bad))  # a compiler upgrade: tried again (and fails again)
    assert runs(log) == before + 2 and "toolchain changed" in " ".join(retried["info"]["retried"])
    assert json.loads(record.read_text().splitlines()[0])["fingerprint"] == header["fingerprint"]


def test_failure_causes_and_retry_rules(monkeypatch):
    import errno
    import subprocess as sp

    from involution_edu import native

    assert native._failure_cause(1, "cc1plus: fatal error: error writing to /tmp/x.s: No space left on device") == "transient"
    assert native._failure_cause(1, "g++: fatal error: Killed signal terminated program cc1plus") == "transient"
    assert native._failure_cause(-9, "") == "transient"
    assert native._failure_cause(error=OSError(errno.ENOSPC, "No space left on device")) == "transient"
    assert native._failure_cause(error=sp.TimeoutExpired(["g++"], 1)) == "timeout"
    assert native._failure_cause(1, "involution.cpp:3:1: error: 'foo' was not declared in this scope") == "compile"
    assert native._failure_cause(1, "g++: error: unrecognized command-line option '--no-such-option'") == "compile"
    now, fingerprint = 1e9, "g++ 12 | torch 2 | python 3"

    def record(cause, age, **extra):
        return dict(cause=cause, time=now - age, fingerprint=fingerprint, timeout=900.0, message="m", **extra)

    retry = native._retry_reason
    assert retry(record("transient", 5), now, fingerprint, 900.0) is None
    assert "machine" in retry(record("transient", 61), now, fingerprint, 900.0)
    assert retry(record("timeout", 3600), now, fingerprint, 900.0) is None
    assert "time limit is now 1800 s" in retry(record("timeout", 3600), now, fingerprint, 1800.0)
    assert "hours ago" in retry(record("timeout", 25 * 3600), now, fingerprint, 900.0)
    assert retry(record("compile", 6 * 86400), now, fingerprint, 900.0) is None
    assert "days old" in retry(record("compile", 8 * 86400), now, fingerprint, 900.0)
    assert "toolchain changed" in retry(record("compile", 60), now, "g++ 13 | torch 2 | python 3", 900.0)
    # a record of the previous version (the message alone): the cause from the message, the time from the file
    legacy = native._parse_failure_record("`g++ ...` failed (exit status 1):\nNo space left on device\n", mtime=now - 120)
    assert legacy["cause"] == "transient" and legacy["time"] == now - 120 and legacy["fingerprint"] is None
    assert retry(legacy, now, fingerprint, 900.0) is not None
    kept = native._parse_failure_record("`g++ ...` failed (exit status 1):\nerror: expected ';'\n", mtime=now - 120)
    assert kept["cause"] == "compile" and retry(kept, now, fingerprint, 900.0) is None
