"""Benchmark every involution implementation against a depthwise convolution, and the networks.

Run it::

    python -m involution_edu.bench                       # the stem and the four RedNet-50 shapes (1-2 minutes)
    python -m involution_edu.bench --quick               # tiny shapes, a few seconds
    python -m involution_edu.bench --json bench.json --plot bench.png --repeats 9
    python -m involution_edu.bench --models              # RedNet-26/50 against ResNet-26/50 (see netbench)
    python -m involution_edu.bench --models --quick      # the same at a small size
    python -m involution_edu.bench --profile             # where each network's time goes, part by part

``--models`` and ``--profile`` are documented in :mod:`involution_edu.netbench`.

For each shape it times, forward and forward + backward, ``involution_unfold``, ``involution``
with each available backend and ``F.conv2d`` depthwise (``groups = C``, same ``K`` and
padding), plus the NumPy references ``involution_loops`` and ``involution_numpy`` on the
tiny shape only (forward). It reports medians, the ratio to the depthwise convolution, the
extra peak memory of forward + backward (:func:`involution_edu.memory.peak_extra_memory`,
as a multiple of input + kernels + output), and how close each run comes to the
memory-bandwidth roofline: the least bytes the computation must move
(:mod:`involution_edu.roofline`) divided by the copy bandwidth measured in the same run,
over the measured time.

The RedNet-50 shapes: batch 8, ``K = 7``, 16 channels per group, float32, and
``C @ H x W`` = 64 @ 56², 128 @ 28², 256 @ 14², 512 @ 7² (the involutions of its four stages),
plus the stem's involution, 32 @ 112² (``K = 7``, 2 groups; :data:`STEM_SHAPE`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import native
from .functional import available_backends, involution, involution_unfold
from .memory import peak_extra_memory, tensor_bytes
from .netbench import TREATMENTS
from .reference import involution_loops, involution_numpy
from .roofline import conv_bytes, conv_flops, involution_bytes, involution_flops, measure_copy_bandwidth, measure_matmul_gflops

__all__ = [
    "Shape",
    "REDNET50_SHAPES",
    "STEM_SHAPE",
    "TINY_SHAPE",
    "QUICK_SHAPES",
    "implementations",
    "time_call",
    "run_benchmark",
    "format_table",
    "plot_results",
    "measure_native_compile_seconds",
    "main",
]

JSON_VERSION = 1
DEPTHWISE = "depthwise conv2d"


@dataclass(frozen=True)
class Shape:
    """One involution layer to benchmark: ``x`` is ``(batch, channels, size, size)``."""

    name: str
    batch: int
    channels: int
    size: int
    kernel_size: int = 7
    group_channels: int = 16
    tiny: bool = False  # also time the NumPy references (slow: explicit loops)

    @property
    def groups(self) -> int:
        return max(1, self.channels // self.group_channels)


REDNET50_SHAPES = (
    Shape("C64@56", 8, 64, 56),
    Shape("C128@28", 8, 128, 28),
    Shape("C256@14", 8, 256, 14),
    Shape("C512@7", 8, 512, 7),
)
#: The stem involution of RedNet (32 channels at 112², ``stem_kernel_size=7``): the largest map in the network.
STEM_SHAPE = Shape("stem C32@112", 8, 32, 112)
TINY_SHAPE = Shape("tiny C16@8", 1, 16, 8, tiny=True)
QUICK_SHAPES = (Shape("quick C16@6", 1, 16, 6, kernel_size=3, tiny=True), Shape("quick C32@8", 2, 32, 8, kernel_size=3))


def _median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=float)))


def time_call(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> List[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


@dataclass
class Implementation:
    """Something to time: ``forward(x, kernels)``; ``differentiable`` if it has a backward."""

    name: str
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    differentiable: bool = True
    numpy: bool = False
    tiny_only: bool = False


def implementations() -> List[Implementation]:
    """The involution implementations of the library, in teaching order."""
    impls = [
        Implementation("involution_loops", involution_loops, differentiable=False, numpy=True, tiny_only=True),
        Implementation("involution_numpy", involution_numpy, differentiable=False, numpy=True, tiny_only=True),
        Implementation("involution_unfold", involution_unfold),
    ]
    for backend in available_backends():
        impls.append(Implementation(f"involution[{backend}]", lambda x, k, b=backend: involution(x, k, backend=b)))
    return impls


def _make_inputs(shape: Shape, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    b, c, n, k, g = shape.batch, shape.channels, shape.size, shape.kernel_size, shape.groups
    x = torch.randn(b, c, n, n, generator=generator)
    kernels = torch.randn(b, g, k, k, n, n, generator=generator)
    weight = torch.randn(c, 1, k, k, generator=generator)
    grad_out = torch.randn(b, c, n, n, generator=generator)
    return x, kernels, weight, grad_out


def _measure(
    forward: Callable[[], torch.Tensor],
    leaves: Sequence[torch.Tensor],
    grad_out: torch.Tensor,
    repeats: int,
    differentiable: bool,
    numpy: bool = False,
) -> Dict[str, Optional[float]]:
    """Forward and forward+backward times (medians) and the extra peak memory of forward+backward."""

    def forward_only():
        with torch.no_grad():
            return forward()

    def forward_backward():
        forward().backward(grad_out)
        for leaf in leaves:
            leaf.grad = None

    fwd = time_call(forward_only, repeats)
    result: Dict[str, Optional[float]] = {
        "forward_s": _median(fwd), "forward_min_s": min(fwd),
        "forward_backward_s": None, "forward_backward_min_s": None, "extra_memory_bytes": None,
    }
    if differentiable:
        fb = time_call(forward_backward, repeats)
        result["forward_backward_s"], result["forward_backward_min_s"] = _median(fb), min(fb)
        result["extra_memory_bytes"] = float(peak_extra_memory(forward_backward))
    elif not numpy:
        result["extra_memory_bytes"] = float(peak_extra_memory(forward_only))
    return result


def _involution_row(shape: Shape, impl: Implementation, repeats: int) -> dict:
    x, kernels, _, grad_out = _make_inputs(shape)
    if impl.numpy:
        x_np, k_np = x.numpy(), kernels.numpy()
        row = _measure(lambda: impl.forward(x_np, k_np), [], grad_out, max(1, min(repeats, 3)), False, numpy=True)
    else:
        x.requires_grad_(True)
        kernels.requires_grad_(True)
        row = _measure(lambda: impl.forward(x, kernels), [x, kernels], grad_out, repeats, impl.differentiable)
    args = (shape.batch, shape.channels, shape.size, shape.size, shape.kernel_size)
    row.update(
        bytes_forward=involution_bytes(*args, shape.groups),
        bytes_forward_backward=involution_bytes(*args, shape.groups) + involution_bytes(*args, shape.groups, backward=True),
        flops_forward=involution_flops(*args),
        flops_forward_backward=involution_flops(*args) + involution_flops(*args, backward=True),
        tensor_bytes=tensor_bytes(x, kernels, grad_out),  # input + kernels + output
    )
    return row


def _depthwise_row(shape: Shape, repeats: int) -> dict:
    x, _, weight, grad_out = _make_inputs(shape)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    pad = (shape.kernel_size - 1) // 2
    row = _measure(lambda: F.conv2d(x, weight, padding=pad, groups=shape.channels), [x, weight], grad_out, repeats, True)
    args = (shape.batch, shape.channels, shape.channels, shape.size, shape.size, shape.kernel_size)
    row.update(
        bytes_forward=conv_bytes(*args, groups=shape.channels),
        bytes_forward_backward=conv_bytes(*args, groups=shape.channels) + conv_bytes(*args, groups=shape.channels, backward=True),
        flops_forward=conv_flops(*args, groups=shape.channels),
        flops_forward_backward=conv_flops(*args, groups=shape.channels) + conv_flops(*args, groups=shape.channels, backward=True),
        tensor_bytes=tensor_bytes(x, weight, grad_out),
    )
    return row


def measure_native_compile_seconds(timeout: float = 120.0) -> Optional[float]:
    """Seconds a fresh process needs to build the native kernel from scratch (empty cache).

    Runs ``native_available()`` in a subprocess with a temporary ``INVOLUTION_EDU_CACHE``;
    ``None`` if the build fails there.
    """
    code = (
        "import time; t = time.perf_counter(); from involution_edu import native; "
        "ok = native.native_available(); print(ok, native.native_compile_seconds())"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "INVOLUTION_EDU_CACHE": cache}
        try:
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
    words = done.stdout.split()
    if done.returncode != 0 or len(words) != 2 or words[0] != "True" or words[1] == "None":
        return None
    return float(words[1])


def _geomean(values: Sequence[float]) -> Optional[float]:
    values = [v for v in values if v is not None and v > 0]
    return float(math.exp(sum(math.log(v) for v in values) / len(values))) if values else None


def run_benchmark(
    shapes: Sequence[Shape] = (TINY_SHAPE, STEM_SHAPE) + REDNET50_SHAPES,
    repeats: int = 5,
    progress: bool = True,
    measure_compile: bool = False,
    threads: Optional[int] = None,
) -> dict:
    """Run the benchmark and return the JSON-ready results (see the module docstring).

    Keys: ``version``, ``machine`` (threads, copy bandwidth, matmul peak, native kernel
    status and compile time), ``settings``, ``shapes``, ``results`` (one row per shape and
    implementation) and ``summary`` (geometric means of the ratios to depthwise over the
    non-tiny shapes, worst memory ratio).
    """
    from tqdm import tqdm  # the text bar, on stderr (no notebook widget)

    if threads is not None:
        torch.set_num_threads(threads)
    compile_seconds = measure_native_compile_seconds() if measure_compile else None
    native_ok = native.native_available()
    bandwidth = measure_copy_bandwidth(megabytes=64, repeats=5)
    peak = measure_matmul_gflops(size=1024, repeats=5)
    impls = implementations()
    tasks = [(shape, impl) for shape in shapes for impl in impls if shape.tiny or not impl.tiny_only]
    tasks += [(shape, None) for shape in shapes]
    rows_by_shape: Dict[str, Dict[str, dict]] = {shape.name: {} for shape in shapes}
    bar = tqdm(tasks, desc="benchmark", disable=not progress, file=sys.stderr, leave=False)
    for shape, impl in bar:
        name = DEPTHWISE if impl is None else impl.name
        bar.set_postfix_str(f"{shape.name} {name}")
        row = _depthwise_row(shape, repeats) if impl is None else _involution_row(shape, impl, repeats)
        rows_by_shape[shape.name][name] = row
    bar.close()

    results = []
    for shape in shapes:
        reference = rows_by_shape[shape.name][DEPTHWISE]
        for name, row in rows_by_shape[shape.name].items():
            ratio = lambda key: (row[key] / reference[key]) if row[key] and reference[key] else None  # noqa: E731
            minimal_fwd = row["bytes_forward"] / (bandwidth * 1e9)
            minimal_fb = row["bytes_forward_backward"] / (bandwidth * 1e9)
            results.append(
                dict(
                    shape=shape.name,
                    implementation=name,
                    **row,
                    forward_ratio=ratio("forward_s"),
                    forward_backward_ratio=ratio("forward_backward_s"),
                    memory_ratio=(row["extra_memory_bytes"] / row["tensor_bytes"]) if row["extra_memory_bytes"] else None,
                    roofline_forward=minimal_fwd / row["forward_s"],
                    roofline_forward_backward=(minimal_fb / row["forward_backward_s"]) if row["forward_backward_s"] else None,
                    gflops_forward=row["flops_forward"] / row["forward_s"] / 1e9,
                )
            )

    summary = {}
    for name in [impl.name for impl in impls] + [DEPTHWISE]:
        rows = [r for r in results if r["implementation"] == name and not _shape(shapes, r["shape"]).tiny]
        if not rows:
            continue
        memory = [r["memory_ratio"] for r in rows if r["memory_ratio"] is not None]
        summary[name] = dict(
            forward_ratio_geomean=_geomean([r["forward_ratio"] for r in rows]),
            forward_backward_ratio_geomean=_geomean([r["forward_backward_ratio"] for r in rows]),
            memory_ratio_max=max(memory) if memory else None,
        )
    return dict(
        version=JSON_VERSION,
        machine=dict(
            torch=torch.__version__,
            python=platform.python_version(),
            processor=platform.processor() or platform.machine(),
            threads=torch.get_num_threads(),
            copy_bandwidth_gbs=bandwidth,
            matmul_gflops=peak,
            native_available=native_ok,
            native_error=native.native_error(),
            native_compile_seconds=compile_seconds,
        ),
        settings=dict(repeats=repeats),
        shapes=[dict(asdict(s), groups=s.groups) for s in shapes],
        results=results,
        summary=summary,
    )


def _shape(shapes: Sequence[Shape], name: str) -> Shape:
    return next(s for s in shapes if s.name == name)


def _fmt(value: Optional[float], spec: str, scale: float = 1.0) -> str:
    """``format(value * scale, spec)``, or a dash of the same width when there is no value."""
    width = int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()) or 0)
    return "-".rjust(width) if value is None else format(value * scale, spec)


def format_table(report: dict) -> str:
    """The results as a fixed-width text table, then the summary lines."""
    header = (
        f"{'shape':<12} {'implementation':<20} {'fwd ms':>9} {'x dw':>7} {'fwd+bwd ms':>11} {'x dw':>7} "
        f"{'mem x':>6} {'roof fwd':>8} {'roof f+b':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in report["results"]:
        lines.append(
            f"{r['shape']:<12} {r['implementation']:<20} {_fmt(r['forward_s'], '9.3f', 1e3)} "
            f"{_fmt(r['forward_ratio'], '7.2f')} {_fmt(r['forward_backward_s'], '11.3f', 1e3)} "
            f"{_fmt(r['forward_backward_ratio'], '7.2f')} {_fmt(r['memory_ratio'], '6.2f')} "
            f"{_fmt(r['roofline_forward'], '8.0%')} {_fmt(r['roofline_forward_backward'], '8.0%')}"
        )
    machine = report["machine"]
    compile_s = machine["native_compile_seconds"]
    lines += [
        "",
        f"threads {machine['threads']}, copy bandwidth {machine['copy_bandwidth_gbs']:.1f} GB/s, "
        f"matmul {machine['matmul_gflops']:.0f} GFLOP/s, native kernel: "
        + ("available" if machine["native_available"] else f"unavailable ({machine['native_error']})")
        + ("" if compile_s is None else f", first-call compile {compile_s:.1f} s"),
        "x dw: time / depthwise conv2d time (median of repeats); mem x: extra peak memory of forward+backward "
        "/ (input + kernels + output); roof: least bytes / copy bandwidth / time.",
    ]
    for name, s in report["summary"].items():
        lines.append(
            f"geometric mean over the non-tiny shapes, {name}: forward {_fmt(s['forward_ratio_geomean'], '.2f')}x "
            f"depthwise, forward+backward {_fmt(s['forward_backward_ratio_geomean'], '.2f')}x, "
            f"worst memory {_fmt(s['memory_ratio_max'], '.2f')}x"
        )
    return "\n".join(lines)


def plot_results(report: dict, path: Optional[str] = None):
    """Two panels: times relative to depthwise per shape (log scale), and the roofline.

    Saves to ``path`` when given; returns the figure.
    """
    import matplotlib

    if path is not None and matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .roofline import RooflinePoint, plot_roofline

    shapes = [s["name"] for s in report["shapes"] if not s["tiny"]] or [s["name"] for s in report["shapes"]]
    names = [n for n in dict.fromkeys(r["implementation"] for r in report["results"]) if n != DEPTHWISE and any(
        r["implementation"] == n and r["shape"] in shapes and r["forward_backward_ratio"] for r in report["results"])]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.6))
    width = 0.8 / max(1, len(names))
    for index, name in enumerate(names):
        values = [next((r["forward_backward_ratio"] for r in report["results"]
                        if r["implementation"] == name and r["shape"] == s), np.nan) for s in shapes]
        left.bar(np.arange(len(shapes)) + (index - (len(names) - 1) / 2) * width, values, width, label=name)
    left.axhline(1.0, color="black", lw=1, ls="--")
    left.set_yscale("log")
    left.set_xticks(np.arange(len(shapes)), shapes, fontsize=7)
    left.set_ylabel("forward+backward time / depthwise")
    left.set_title("Time relative to depthwise conv")
    left.legend(fontsize=7, loc="upper left")
    machine = report["machine"]
    points = [
        RooflinePoint(r["implementation"], r["flops_forward"] / r["bytes_forward"], r["gflops_forward"],
                      marker="s" if r["implementation"] == DEPTHWISE else "o")
        for r in report["results"]
        if r["shape"] == shapes[0] and not r["implementation"].startswith("involution_loops")
    ]
    plot_roofline(right, points, machine["copy_bandwidth_gbs"], machine["matmul_gflops"], title=f"Roofline, forward, {shapes[0]}")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m involution_edu.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes only (a few seconds; for tests)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="save a figure (time ratios and roofline)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-compile-time", action="store_true",
                        help="skip measuring the native kernel's first-call compile time in a fresh process")
    parser.add_argument("--models", action="store_true",
                        help="benchmark RedNet-26/50 against ResNet-26/50 (eval forward and an SGD step)")
    parser.add_argument("--profile", action="store_true", help="per-part time breakdown of RedNet-50 and ResNet-50")
    parser.add_argument("--treatments", nargs="+", metavar="NAME", default=None,
                        help=f"with --models: some of {', '.join(TREATMENTS)} (default: all)")
    parser.add_argument("--pairs", nargs="+", metavar="DEPTH", type=int, default=None,
                        help="with --models: depths to compare, among 26 and 50 (default: both)")
    parser.add_argument("--batch", type=int, default=None, help="with --models/--profile: batch size (default 8; 2 with --quick)")
    parser.add_argument("--size", type=int, default=None, help="with --models/--profile: image size (default 224; 64 with --quick)")
    parser.add_argument("--channels-last", action="store_true", help="with --profile: both networks channels last")
    parser.add_argument("--system-malloc", action="store_true",
                        help="with --models/--profile: leave glibc's allocator as it is (by default freed memory is "
                             "kept in the process, so steps do not fault their pages in again)")
    args = parser.parse_args(argv)
    if args.treatments is not None:
        unknown = [t for t in args.treatments if t not in TREATMENTS]
        if unknown:
            parser.error(f"--treatments must be among {', '.join(TREATMENTS)}, got {', '.join(unknown)}")
    if args.pairs is not None and any(depth not in (26, 50) for depth in args.pairs):
        parser.error(f"--pairs takes depths 26 and/or 50, got {args.pairs}")
    for name in ("batch", "size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1, got {value}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parse(argv)
    if args.models or args.profile:
        return _main_models(args)
    shapes = QUICK_SHAPES if args.quick else (TINY_SHAPE, STEM_SHAPE) + REDNET50_SHAPES
    report = run_benchmark(
        shapes, repeats=args.repeats, progress=not args.no_progress,
        measure_compile=not (args.quick or args.no_compile_time), threads=args.threads,
    )
    print(format_table(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
        print(f"wrote {args.json}")
    if args.plot:
        plot_results(report, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _main_models(args: argparse.Namespace) -> int:
    """``--models`` / ``--profile``: the network benchmark of :mod:`involution_edu.netbench`."""
    from dataclasses import replace

    from . import netbench

    base = netbench.QUICK_SETTINGS if args.quick else netbench.FULL_SETTINGS
    changes = {}
    if args.quick or args.repeats != 5:
        changes["repeats"] = args.repeats if args.repeats != 5 else base.repeats
    if args.threads is not None:
        changes["threads"] = (args.threads,)
    if args.treatments is not None:
        changes["treatments"] = tuple(args.treatments)
    if args.pairs is not None:
        changes["pairs"] = tuple((f"rednet{d}", f"resnet{d}") for d in args.pairs)
    if args.batch is not None:
        changes["batch"] = args.batch
    if args.size is not None:
        changes["size"] = args.size
    if args.system_malloc:
        changes["retain_memory"] = False
    settings = replace(base, **changes)
    report: dict = {"version": JSON_VERSION}
    if args.models:
        report["models"] = netbench.run_model_benchmark(settings, progress=not args.no_progress)
        print(netbench.format_model_table(report["models"]))
    if args.profile:
        pair = settings.pairs[-1]
        report["profile"] = netbench.run_profile(
            pair, batch=settings.batch, size=settings.size, threads=settings.threads[0], repeats=settings.repeats,
            num_classes=settings.num_classes, channels_last=args.channels_last, retain_memory=settings.retain_memory,
        )
        print(netbench.format_profile(report["profile"]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
