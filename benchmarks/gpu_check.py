"""Check and time the Triton involution kernels on a GPU (run it on a machine with CUDA).

    python benchmarks/gpu_check.py                   # correctness, then the RedNet-50 timings
    python benchmarks/gpu_check.py --json gpu.json   # the same, and every number in a JSON file
    python benchmarks/gpu_check.py --quick           # one shape, fewer repetitions (a smoke test)

What it does:

1. Correctness on CUDA: the Triton forward and backward against the eager backend (in float64,
   on small shapes that exercise every mask: odd sizes, stride 2, dilation 2, groups > 1, group
   sizes that are not powers of two, K = 1, 3, 7), and float16/bfloat16 against a float64
   reference within the bound that float32 accumulation guarantees.
2. Timings at the four RedNet-50 involution shapes (batch 32; C = 64@56², 128@28², 256@14²,
   512@7²; K = 7; 16 channels per group), float32 and float16, forward and forward+backward
   (median of ``triton.testing.do_bench``), for: the Triton kernels (through
   ``involution(..., backend="triton")``), cuDNN's depthwise ``F.conv2d`` with the same K (the
   floor: a convolution with one K x K kernel per channel, the same bytes for x and the output
   but no per-pixel kernels), the paper's ``involution_unfold`` and the eager backend (K² launches).
3. Peak memory of each (``torch.cuda.max_memory_allocated`` above what was allocated before).

The targets of issue 12: Triton forward ≤ 2× and forward+backward ≤ 3× the depthwise conv.
The script reports them; it exits 0 when every correctness check passed (1 otherwise), whatever
the timings, since those depend on the GPU. Without a CUDA device it exits 2 with a message.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from typing import Callable, Dict, List, Optional

REDNET50_SHAPES = [(64, 56), (128, 28), (256, 14), (512, 7)]  # (channels, height = width)
KERNEL_SIZE = 7
GROUP_CHANNELS = 16
TARGETS = {"forward": 2.0, "forward+backward": 3.0}  # Triton time / depthwise conv time


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Correctness and timings of the Triton involution kernels on a CUDA GPU "
        "(against cuDNN depthwise conv, involution_unfold and the eager backend, at the RedNet-50 shapes).",
    )
    parser.add_argument("--json", metavar="PATH", help="write every result to this JSON file")
    parser.add_argument("--batch", type=int, default=32, help="batch size of the timed shapes (default 32)")
    parser.add_argument("--dtypes", default="float32,float16", help="comma-separated dtypes to time (default float32,float16)")
    parser.add_argument("--quick", action="store_true", help="one shape (C=128@28²) and fewer repetitions: a smoke test")
    parser.add_argument("--skip-unfold", action="store_true", help="leave out involution_unfold (it needs K² times the input in memory)")
    parser.add_argument("--rep-ms", type=float, default=200.0, help="milliseconds of repetitions per timing (default 200)")
    return parser.parse_args(argv)


def fail(message: str, code: int = 2) -> None:
    print(f"gpu_check: {message}", file=sys.stderr)
    sys.exit(code)


# --- correctness ---------------------------------------------------------------------------------

CORRECTNESS_CASES = [  # (B, C, H, W, G, K, stride, dilation)
    (2, 6, 7, 9, 2, 3, 1, 1),
    (2, 6, 9, 8, 3, 3, 2, 1),
    (1, 5, 8, 7, 1, 3, 1, 2),
    (2, 48, 13, 11, 3, 7, 2, 1),
    (1, 4, 5, 6, 2, 1, 2, 1),
    (2, 80, 10, 9, 1, 3, 1, 1),  # two channel blocks per group
    (2, 64, 56, 56, 4, 7, 1, 1),  # a RedNet-50 shape
]


def check_correctness(torch, involution, involution_unfold, output_size) -> List[Dict]:
    results = []
    gen = torch.Generator(device="cuda").manual_seed(0)
    for b, c, h, w, g, k, s, d in CORRECTNESS_CASES:
        p = d * (k - 1) // 2
        oh, ow = output_size(h, k, s, p, d), output_size(w, k, s, p, d)
        x = torch.randn(b, c, h, w, device="cuda", dtype=torch.float64, generator=gen)
        kernels = torch.randn(b, g, k, k, oh, ow, device="cuda", dtype=torch.float64, generator=gen)
        grad_out = torch.randn(b, c, oh, ow, device="cuda", dtype=torch.float64, generator=gen)
        args = dict(stride=s, padding=p, dilation=d)

        def grads(backend, xx, kk, gg):
            xx, kk = xx.detach().clone().requires_grad_(), kk.detach().clone().requires_grad_()
            y = involution(xx, kk, backend=backend, **args)
            y.backward(gg)
            return y.detach(), xx.grad, kk.grad

        want = grads("eager", x, kernels, grad_out)
        for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
            got = grads("triton", x.to(dtype), kernels.to(dtype), grad_out.to(dtype))
            if dtype == torch.float64:
                ok = all(torch.allclose(a, e, rtol=0, atol=1e-10) for a, e in zip(got, want))
                worst = max(float((a - e).abs().max()) for a, e in zip(got, want))
            else:
                # Reference for the rounded inputs, and the sum of |terms|: float32 accumulation
                # rounded once to the dtype stays within unit roundoff * |value| + 1e-5 * sum|terms|.
                x_r, k_r, g_r = (t.to(dtype).double() for t in (x, kernels, grad_out))
                exact = grads("eager", x_r, k_r, g_r)
                size = grads("eager", x_r.abs(), k_r.abs(), g_r.abs())
                unit = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}[dtype]
                ok, worst = True, 0.0
                for a, e, m in zip(got, exact, size):
                    err = (a.double() - e).abs()
                    ok &= bool((err <= unit * e.abs() + 1e-5 * m + 2.0**-24).all())
                    worst = max(worst, float(err.max()))
                ok &= all(t.dtype == dtype for t in got)
            results.append(dict(case=[b, c, h, w, g, k, s, d], dtype=str(dtype).replace("torch.", ""), ok=bool(ok), max_error=worst))
            print(f"  {'ok ' if ok else 'BAD'} B={b} C={c} {h}x{w} G={g} K={k} s={s} d={d} {str(dtype):15s} max |error| {worst:.2e}")
    return results


# --- timings ---------------------------------------------------------------------------------------


def measure(torch, do_bench, fn: Callable[[], object], rep_ms: float) -> Dict[str, float]:
    """Median milliseconds and the peak memory above what was allocated before the call."""
    fn()  # warm up (compiles Triton kernels, picks cuDNN algorithms)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    ms = do_bench(fn, warmup=25, rep=rep_ms, return_mode="median")
    return {"ms": float(ms), "peak_extra_mib": peak / 2**20}


def time_shapes(torch, F, do_bench, involution, involution_unfold, args) -> List[Dict]:
    rows = []
    shapes = [(128, 28)] if args.quick else REDNET50_SHAPES
    rep = 50.0 if args.quick else args.rep_ms
    dtypes = [getattr(torch, name.strip()) for name in args.dtypes.split(",") if name.strip()]
    k, p = KERNEL_SIZE, KERNEL_SIZE // 2
    for dtype in dtypes:
        for channels, size in shapes:
            b, g = args.batch, channels // GROUP_CHANNELS
            x = torch.randn(b, channels, size, size, device="cuda", dtype=dtype, requires_grad=True)
            kernels = torch.randn(b, g, k, k, size, size, device="cuda", dtype=dtype, requires_grad=True)
            weight = torch.randn(channels, 1, k, k, device="cuda", dtype=dtype, requires_grad=True)
            grad_out = torch.randn(b, channels, size, size, device="cuda", dtype=dtype)

            candidates = {
                "triton": lambda: involution(x, kernels, backend="triton", padding=p),
                "depthwise_conv": lambda: F.conv2d(x, weight, padding=p, groups=channels),
                "eager": lambda: involution(x, kernels, backend="eager", padding=p),
            }
            if not args.skip_unfold:
                candidates["unfold"] = lambda: involution_unfold(x, kernels, padding=p)
            row = {"dtype": str(dtype).replace("torch.", ""), "batch": b, "channels": channels, "size": size,
                   "groups": g, "kernel_size": k}
            for name, op in candidates.items():
                def forward(op=op):
                    with torch.no_grad():
                        return op()

                def forward_backward(op=op):
                    x.grad = kernels.grad = weight.grad = None
                    op().backward(grad_out)

                try:
                    row[name] = {"forward": measure(torch, do_bench, forward, rep),
                                 "forward+backward": measure(torch, do_bench, forward_backward, rep)}
                except torch.cuda.OutOfMemoryError:
                    row[name] = {"error": "out of memory"}
                    torch.cuda.empty_cache()
            for phase in TARGETS:
                if "error" not in row["triton"] and "error" not in row["depthwise_conv"]:
                    row[f"triton_over_conv_{phase}"] = row["triton"][phase]["ms"] / row["depthwise_conv"][phase]["ms"]
            rows.append(row)
            print_row(row)
            del x, kernels, weight, grad_out
            torch.cuda.empty_cache()
    return rows


def print_row(row: Dict) -> None:
    head = f"{row['dtype']:8s} C={row['channels']:3d}@{row['size']:2d}²"
    for phase in TARGETS:
        parts = []
        for name in ("triton", "depthwise_conv", "unfold", "eager"):
            if name in row:
                cell = row[name]
                parts.append(f"{name} " + ("OOM" if "error" in cell else f"{cell[phase]['ms']:.3f} ms / {cell[phase]['peak_extra_mib']:.0f} MiB"))
        ratio = row.get(f"triton_over_conv_{phase}")
        verdict = "" if ratio is None else f"  triton/conv {ratio:.2f}x (target ≤ {TARGETS[phase]:.0f}x{'' if ratio <= TARGETS[phase] else ', MISSED'})"
        print(f"  {head} {phase:17s} " + ", ".join(parts) + verdict)


def geometric_mean(values: List[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    import torch  # imported after parsing, so that --help is instant

    if not torch.cuda.is_available():
        fail(
            "no CUDA device is visible (torch.cuda.is_available() is False), and this script measures the "
            "Triton kernels on a GPU. On a CPU, test them with Triton's interpreter instead: "
            "`TRITON_INTERPRET=1` runs the same kernels with NumPy (tests/test_triton.py and "
            "notebooks/10_triton_gpu.ipynb do that)."
        )
    import torch.nn.functional as F

    from involution_edu import triton_backend
    from involution_edu.functional import involution, involution_unfold
    from involution_edu.shapes import output_size

    if not triton_backend.triton_available():
        fail(f"Triton is unavailable: {triton_backend.triton_error()}")
    if triton_backend.triton_interpreting():
        fail("TRITON_INTERPRET is set: the kernels would run in the interpreter; unset it to time the GPU")
    import triton
    from triton.testing import do_bench

    machine = {
        "gpu": torch.cuda.get_device_name(),
        "capability": list(torch.cuda.get_device_capability()),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "triton": triton.__version__,
        "python": platform.python_version(),
    }
    print("machine:", ", ".join(f"{k} {v}" for k, v in machine.items()))
    print("correctness (Triton vs the eager backend on CUDA):")
    correctness = check_correctness(torch, involution, involution_unfold, output_size)
    all_ok = all(r["ok"] for r in correctness)
    print(f"correctness: {'all passed' if all_ok else 'FAILED'}")
    print(f"timings (median), batch {args.batch}, K={KERNEL_SIZE}, {GROUP_CHANNELS} channels per group:")
    rows = time_shapes(torch, F, do_bench, involution, involution_unfold, args)
    summary = {}
    for phase in TARGETS:
        for dtype in sorted({r["dtype"] for r in rows}):
            ratios = [r[f"triton_over_conv_{phase}"] for r in rows if r["dtype"] == dtype and f"triton_over_conv_{phase}" in r]
            if ratios:
                summary[f"{dtype} {phase}"] = {"geomean": geometric_mean(ratios), "worst": max(ratios), "target": TARGETS[phase]}
                print(f"  {dtype} {phase}: triton/conv geo-mean {geometric_mean(ratios):.2f}x, worst {max(ratios):.2f}x (target ≤ {TARGETS[phase]:.0f}x)")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"machine": machine, "correctness": correctness, "timings": rows, "summary": summary}, file, indent=2)
        print(f"wrote {args.json}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
