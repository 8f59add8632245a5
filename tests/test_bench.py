"""The benchmark command (quick mode) and the roofline arithmetic it rests on."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from involution_edu import bench, involution
from involution_edu.memory import tensor_bytes
from involution_edu.roofline import (
    RooflinePoint,
    attainable_gflops,
    conv_bytes,
    conv_flops,
    conv_intensity,
    involution_bytes,
    involution_flops,
    involution_intensity,
    involution_output_size,
    measure_copy_bandwidth,
    measure_matmul_gflops,
    plot_roofline,
)

IMPLEMENTATIONS = {"involution_unfold", "involution[eager]", "involution[native]", bench.DEPTHWISE}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    json_path, plot_path = folder / "bench.json", folder / "bench.png"
    status = bench.main(["--quick", "--repeats", "2", "--no-progress", "--json", str(json_path), "--plot", str(plot_path)])
    return status, json.loads(json_path.read_text()), plot_path


def test_quick_run_writes_json_and_plot(quick_run, capsys):
    status, report, plot_path = quick_run
    assert status == 0
    assert report["version"] == bench.JSON_VERSION
    assert set(report) == {"version", "machine", "settings", "shapes", "results", "summary"}
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["settings"]["repeats"] == 2


def test_machine_numbers_are_positive(quick_run):
    machine = quick_run[1]["machine"]
    assert machine["copy_bandwidth_gbs"] > 0.1
    assert machine["matmul_gflops"] > 0.1
    assert machine["threads"] >= 1
    assert machine["native_available"] is True


def test_every_shape_has_every_implementation(quick_run):
    report = quick_run[1]
    for shape in report["shapes"]:
        names = {r["implementation"] for r in report["results"] if r["shape"] == shape["name"]}
        expected = IMPLEMENTATIONS | ({"involution_loops", "involution_numpy"} if shape["tiny"] else set())
        assert names == expected, shape["name"]
    assert any(s["tiny"] for s in report["shapes"]) and not all(s["tiny"] for s in report["shapes"])


def test_times_are_positive_and_ratios_consistent(quick_run):
    report = quick_run[1]
    for row in report["results"]:
        reference = next(r for r in report["results"] if r["shape"] == row["shape"] and r["implementation"] == bench.DEPTHWISE)
        assert 0 < row["forward_min_s"] <= row["forward_s"]
        assert math.isclose(row["forward_ratio"], row["forward_s"] / reference["forward_s"], rel_tol=1e-9)
        assert row["roofline_forward"] > 0
        assert math.isclose(row["gflops_forward"], row["flops_forward"] / row["forward_s"] / 1e9, rel_tol=1e-9)
        if row["implementation"] in ("involution_loops", "involution_numpy"):  # NumPy: forward only
            assert row["forward_backward_s"] is None and row["memory_ratio"] is None
            continue
        assert 0 < row["forward_backward_min_s"] <= row["forward_backward_s"]
        assert math.isclose(row["forward_backward_ratio"], row["forward_backward_s"] / reference["forward_backward_s"], rel_tol=1e-9)
        assert math.isclose(row["memory_ratio"], row["extra_memory_bytes"] / row["tensor_bytes"], rel_tol=1e-9)
        assert row["bytes_forward_backward"] > row["bytes_forward"] > 0
    depthwise = [r for r in report["results"] if r["implementation"] == bench.DEPTHWISE]
    assert all(r["forward_ratio"] == 1.0 and r["forward_backward_ratio"] == 1.0 for r in depthwise)


def test_memory_ranking_unfold_is_the_hungry_one(quick_run):
    report = quick_run[1]
    for shape in report["shapes"]:
        rows = {r["implementation"]: r for r in report["results"] if r["shape"] == shape["name"]}
        k2 = shape["kernel_size"] ** 2
        # unfold materialises K^2 copies of the input; the lean ops stay within a few multiples
        assert rows["involution_unfold"]["memory_ratio"] > k2 / 2
        assert rows["involution[native]"]["memory_ratio"] <= 3
        assert rows["involution[eager]"]["memory_ratio"] <= 3


def test_summary_is_the_geometric_mean_of_the_rows(quick_run):
    report = quick_run[1]
    big = [s["name"] for s in report["shapes"] if not s["tiny"]]
    for name, summary in report["summary"].items():
        ratios = [r["forward_ratio"] for r in report["results"] if r["implementation"] == name and r["shape"] in big]
        expected = math.exp(sum(map(math.log, ratios)) / len(ratios))
        assert math.isclose(summary["forward_ratio_geomean"], expected, rel_tol=1e-9)
        assert summary["forward_backward_ratio_geomean"] > 0
    assert set(report["summary"]) == IMPLEMENTATIONS


def test_table_lists_every_implementation_and_the_summary(quick_run):
    table = bench.format_table(quick_run[1])
    for name in IMPLEMENTATIONS | {"involution_loops", "involution_numpy"}:
        assert name in table
    assert "geometric mean" in table and "copy bandwidth" in table


def test_runs_as_a_module_with_a_progress_bar(tmp_path):
    out = tmp_path / "b.json"
    done = subprocess.run(
        [sys.executable, "-m", "involution_edu.bench", "--quick", "--repeats", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "benchmark" in done.stderr  # tqdm's bar
    assert "geometric mean" in done.stdout
    assert json.loads(out.read_text())["results"]


@pytest.mark.parametrize("argv, message", [(["--repeats", "0"], "--repeats"), (["--threads", "0"], "--threads")])
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(["--quick", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_time_call_counts_repeats():
    calls = []
    seconds = bench.time_call(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(seconds) == 4 and len(calls) == 6 and all(s >= 0 for s in seconds)


# --- roofline arithmetic ------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 2])
def test_involution_bytes_match_the_real_tensors(stride):
    x = torch.randn(2, 32, 9, 9)
    out_size = involution_output_size(9, 7, stride)
    kernels = torch.randn(2, 2, 7, 7, out_size, out_size)
    out = involution(x, kernels, stride=stride)
    assert involution_bytes(2, 32, 9, 9, 7, 2, stride) == tensor_bytes(x, kernels, out)
    assert involution_bytes(2, 32, 9, 9, 7, 2, stride, dtype_bytes=8) == 2 * tensor_bytes(x, kernels, out)
    grads = tensor_bytes(out, x, kernels, x, kernels)  # read grad_out, x, kernels; write their gradients
    assert involution_bytes(2, 32, 9, 9, 7, 2, stride, backward=True) == grads
    assert involution_flops(2, 32, 9, 9, 7, stride) == 2 * out.numel() * 49


def test_conv_counts_and_intensities():
    # depthwise 7x7 on (8, 64, 56, 56): weights are tiny, so the bytes are ~ input + output
    assert conv_flops(8, 64, 64, 56, 56, 7, groups=64) == 2 * 8 * 64 * 56 * 56 * 49
    assert conv_bytes(8, 64, 64, 56, 56, 7, groups=64) == 4 * (2 * 8 * 64 * 56 * 56 + 64 * 49)
    dense = conv_intensity(8, 64, 64, 56, 56, 3)
    depthwise = conv_intensity(8, 64, 64, 56, 56, 7, groups=64)
    inv = involution_intensity(8, 64, 56, 56, 7, 4)
    # K^2 C / G multiply-adds per kernel value: involution sits far below both convolutions
    assert inv < depthwise < dense
    assert math.isclose(inv, 2 * 49 / (4 * (2 + 49 / 16)), rel_tol=1e-12)


def test_attainable_is_the_lower_roof():
    assert attainable_gflops(0.5, 20.0, 100.0) == 10.0
    assert attainable_gflops(50.0, 20.0, 100.0) == 100.0


def test_measurements_and_plot_run():
    assert measure_copy_bandwidth(megabytes=8, repeats=2) > 0
    assert measure_matmul_gflops(size=128, repeats=2) > 0
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plot_roofline(ax, [RooflinePoint("a", 1.0, 5.0)], 20.0, 100.0)
    assert ax.get_xscale() == "log" and ax.get_title() == "Roofline"
    plt.close(fig)


def test_roofline_arguments_are_checked():
    with pytest.raises(ValueError, match="channels"):
        involution_bytes(1, 0, 8, 8, 3, 1)
    with pytest.raises(TypeError, match="dtype_bytes"):
        involution_bytes(1, 4, 8, 8, 3, 1, dtype_bytes=2.5)
    with pytest.raises(ValueError, match="kernel_size"):
        involution_flops(1, 4, 8, 8, 4)
