"""The network benchmark (``bench --models --quick``) and the profile: structure and sanity, never timings."""

from __future__ import annotations

import json
import math

import pytest
import torch

from involution_edu import bench, netbench
from involution_edu.rednet import rednet26


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quick_models(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "models.json"
    argv = ["--models", "--quick", "--no-progress", "--pairs", "26", "--treatments", "eager", "folded", "channels_last",
            "--repeats", "2", "--batch", "2", "--size", "32", "--threads", "1", "--json", str(path)]
    status = bench.main(argv)
    return status, json.loads(path.read_text())


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_models_report_structure(quick_models, capsys):
    status, report = quick_models
    assert status == 0 and report["version"] == bench.JSON_VERSION
    models = report["models"]
    assert set(models) == {"settings", "machine", "flops", "rows"}
    assert models["settings"]["batch"] == 2 and models["settings"]["size"] == 32
    keys = {(r["treatment"], r["mode"]) for r in models["rows"]}
    # folded is eval only; every other treatment has both modes
    assert keys == {("eager", "eval"), ("eager", "train"), ("folded", "eval"), ("channels_last", "eval"), ("channels_last", "train")}
    assert all(r["pair"] == ["rednet26", "resnet26"] and r["threads"] == 1 for r in models["rows"])


def test_quick_models_ratios_are_positive_and_consistent(quick_models):
    rows = quick_models[1]["models"]["rows"]
    flops = quick_models[1]["models"]["flops"]
    assert flops["rednet26"] < flops["resnet26"]  # the paper's FLOP saving, at any size
    for r in rows:
        for key in ("a_s", "b_s", "a_min_s", "b_min_s", "time_ratio", "cpu_ratio", "flop_ratio"):
            assert _positive(r[key]), (key, r)
        assert r["a_min_s"] <= r["a_s"] and r["b_min_s"] <= r["b_s"]
        assert math.isclose(r["time_ratio"], r["a_s"] / r["b_s"], rel_tol=1e-9)
        assert math.isclose(r["flop_ratio"], flops["rednet26"] / flops["resnet26"], rel_tol=1e-9)
        if r["mode"] == "train":
            for kind in ("saved", "peak"):
                assert _positive(r[f"a_{kind}_bytes"]) and _positive(r[f"b_{kind}_bytes"])
                assert math.isclose(r[f"{kind}_ratio"], r[f"a_{kind}_bytes"] / r[f"b_{kind}_bytes"], rel_tol=1e-9)
            assert r["a_saved_bytes"] <= r["a_peak_bytes"]  # what is saved was alive at the peak


def test_table_is_printed(quick_models, capsys):
    table = netbench.format_model_table(quick_models[1]["models"])
    assert "rednet26/resnet26" in table and "time x" in table and "FLOP x" in table
    assert len(table.splitlines()) == 3 + len(quick_models[1]["models"]["rows"]) + 2


def test_saved_tensor_bytes_counts_each_storage_once():
    weight = torch.randn(4, 4, requires_grad=True)
    x = torch.randn(8, 4, requires_grad=True)

    def fn():
        y = x @ weight          # saves x (128 B) and weight (64 B, excluded in the first call)
        return (y * y).sum()    # saves y twice: one storage of 128 B

    assert netbench.saved_tensor_bytes(fn, exclude=[weight]) == 2 * 8 * 4 * 4
    assert netbench.saved_tensor_bytes(fn) == 2 * 8 * 4 * 4 + 4 * 4 * 4


def test_rss_growth_sees_a_large_allocation():
    """Fresh anonymous pages, each touched: resident growth the allocator cannot hide by reusing memory."""
    import mmap
    import sys
    import time

    def touch(size=64 * 2**20):
        buffer = mmap.mmap(-1, size)
        for offset in range(0, size, 4096):
            buffer[offset] = 1
        time.sleep(0.05)
        buffer.close()

    growth = netbench.rss_growth(touch)
    assert (growth is None) == (not sys.platform.startswith("linux")), growth
    if growth is not None:
        assert growth >= 32 * 2**20


def test_profile_parts_covers_the_network():
    torch.manual_seed(0)
    model = rednet26(num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    labels = torch.tensor([3, 7])
    evaluation = netbench.profile_parts(model, x, train=False)
    stages = {key.split(" ", 1)[1] for key in evaluation}
    assert {"stem", "layer1", "layer2", "layer3", "layer4", "head"} <= stages
    pieces = {piece for parts in evaluation.values() for piece in parts}
    assert "phi reduce" in pieces and pieces & {"aggregation", "phi span + aggregation (fused)"}
    assert all(seconds >= 0 for parts in evaluation.values() for seconds in parts.values())
    training = netbench.profile_parts(model, x, train=True, labels=labels)
    assert any(key.startswith("backward layer") for key in training)
    assert not any(isinstance(getattr(m, "_forward_hooks", {}), dict) and m._forward_hooks for m in model.modules())


_FAULTS_SCRIPT = r"""
import platform, resource, sys, torch
from involution_edu.netbench import retain_freed_memory
took = retain_freed_memory()
print("took", took, platform.libc_ver()[0])
counts = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensors = [torch.ones(1 << 20) for _ in range(40)]  # 40 x 4 MiB, written, then freed
    del tensors
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print("faults", *counts)
"""


def test_retain_freed_memory_stops_the_page_faults_of_repeated_steps():
    """After retain_freed_memory(), memory freed by one 'step' is reused by the next without
    faulting its pages in again (a fresh process: the allocator's state is per process)."""
    import platform
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    took_line, faults_line = result.stdout.split("\n")[:2]
    glibc = platform.libc_ver()[0] == "glibc"
    assert took_line.startswith(f"took {glibc}"), result.stdout  # True exactly where glibc's mallopt exists
    counts = [int(n) for n in faults_line.split()[1:]]
    assert counts[0] >= 40 * 1024 // 2, counts  # the first round faults its 160 MiB in (4 KiB pages)
    if glibc:
        # later rounds reuse the retained pages: without retain_freed_memory() each faults about as many as
        # the first (measured: 41047 40920 40929 40929); with it at most one 4 MiB tensor's 1,024 pages in a
        # round (measured: 40966 1024 0 0 and 40967 0 1024 0: the allocator may place one block anew)
        assert max(counts[1:]) <= counts[0] // 10, counts


def test_system_malloc_flag_leaves_the_allocator_alone(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(netbench, "retain_freed_memory", lambda: calls.append(1) or True)
    path = tmp_path / "m.json"
    common = ["--models", "--quick", "--no-progress", "--pairs", "26", "--treatments", "eager", "--repeats", "1",
              "--batch", "2", "--size", "32", "--threads", "1", "--json", str(path)]
    assert bench.main(common + ["--system-malloc"]) == 0
    assert calls == [] and json.loads(path.read_text())["models"]["machine"]["retained_freed_memory"] is False
    assert bench.main(common) == 0
    assert calls == [1] and json.loads(path.read_text())["models"]["machine"]["retained_freed_memory"] is True


def test_rss_in_fresh_process_measures_a_real_step_and_fails_soft():
    """A small step in its own process grows the resident set by more than its input; an unknown
    network gives None (the process fails), not an exception."""
    growth = netbench.rss_in_fresh_process("rednet26", "eager", batch=2, size=64, num_classes=10)
    assert isinstance(growth, int) and growth > 2 * 3 * 64 * 64 * 4, growth
    assert netbench.rss_in_fresh_process("no_such_net", "eager", batch=2, size=64) is None
