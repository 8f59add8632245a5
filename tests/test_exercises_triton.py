"""The checkers and questions of notebook 10: each checker accepts the solution and natural alternatives,
refuses the library's kernels however they are reached, names each plausible wrong answer's mistake
(a load whose mask is missing included, found through the poisoned memory and the interpreter's watched
loads), gives a time-limit verdict for an endless loop, names a side effect, and never raises.

The learner's kernels are written here as source text, one tap-loop body per variant, put into the
exercise's skeleton and jit-wrapped while ``TRITON_INTERPRET=1`` is set (Triton decides "interpret or
compile" when it wraps a function), so they run on the CPU like the notebook's. The skeleton uses
``tl.full`` rather than ``tl.zeros``: in this process Triton's own library was wrapped for the compiler
(torch imports triton early), and only built-in operations work in both.
"""

from __future__ import annotations

import importlib.util
import textwrap

import numpy as np
import pytest
import torch
from checker_harness import (
    assert_accepts,
    assert_names_side_effect,
    assert_never_raises,
    assert_rejects,
    assert_times_out,
    exec_route,
)

from involution_edu.exercises.triton import (
    QUESTIONS,
    MemoryWatch,
    StrayAccess,
    check_involution_forward_kernel,
    check_involution_grad_x_kernel,
    check_involution_wrapper,
    diagnose_forward_kernel,
    eager_bytes_ratio,
    int32_overflow_batch,
    record_accesses,
)

SKELETON = '''
import importlib

import triton
import triton.language as tl


def kernel(x_ptr, k_ptr, out_ptr, C, H, W, G, CG, OUT_H, OUT_W,
           K: tl.constexpr, STRIDE: tl.constexpr, PADDING: tl.constexpr, DILATION: tl.constexpr,
           BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    bg = tl.program_id(0)
    b = bg // G
    g = bg % G
    n_out = OUT_H * OUT_W
    pixels = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    pixel_ok = pixels < n_out
    i = pixels // OUT_W
    j = pixels % OUT_W
    chans = tl.arange(0, BLOCK_C)
    chan_ok = chans < CG
    x_group = x_ptr + (b * C + g * CG) * H * W
    k_group = k_ptr + bg * K * K * n_out
    acc = tl.full((BLOCK_C, BLOCK_P), 0.0, tl.float32)
    for u in range(K):
        for v in range(K):
BODY
    out_group = out_ptr + (b * C + g * CG) * n_out
    tl.store(out_group + chans[:, None] * n_out + pixels[None, :], acc, STORE_MASK)
'''
STORE_MASK = "mask=chan_ok[:, None] & pixel_ok[None, :]"

SOLUTION = """
h = i * STRIDE + u * DILATION - PADDING
w = j * STRIDE + v * DILATION - PADDING
inside = pixel_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
tap = tl.load(k_group + (u * K + v) * n_out + pixels, mask=pixel_ok, other=0.0)
xs = tl.load(x_group + chans[:, None] * H * W + (h * W + w)[None, :], mask=chan_ok[:, None] & inside[None, :], other=0.0)
acc += xs * tap[None, :]
"""

# natural alternatives: masks built per axis, and a tl.where instead of other=0.0
ALTERNATIVE = """
h = i * STRIDE - PADDING + u * DILATION
w = j * STRIDE - PADDING + v * DILATION
row_ok = (h >= 0) & (h < H)
col_ok = (w >= 0) & (w < W)
tap = tl.load(k_group + (u * K + v) * n_out + pixels, mask=pixel_ok)
lanes = chan_ok[:, None] & (pixel_ok & row_ok & col_ok)[None, :]
xs = tl.load(x_group + chans[:, None] * H * W + h[None, :] * W + w[None, :], mask=lanes)
acc += tl.where(lanes, xs, 0.0) * tap[None, :]
"""


GRAD_X_SKELETON = '''
import triton
import triton.language as tl


def kernel(k_ptr, go_ptr, gx_ptr, C, H, W, G, CG, OUT_H, OUT_W,
           K: tl.constexpr, STRIDE: tl.constexpr, PADDING: tl.constexpr, DILATION: tl.constexpr,
           BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    bg = tl.program_id(0)
    b = bg // G
    g = bg % G
    n_in = H * W
    n_out = OUT_H * OUT_W
    pixels = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    pixel_ok = pixels < n_in
    h = pixels // W
    w = pixels % W
    chans = tl.arange(0, BLOCK_C)
    chan_ok = chans < CG
    go_group = go_ptr + (b * C + g * CG) * n_out
    k_group = k_ptr + bg * K * K * n_out
    acc = tl.full((BLOCK_C, BLOCK_P), 0.0, tl.float32)
    for u in range(K):
        for v in range(K):
BODY
    gx_group = gx_ptr + (b * C + g * CG) * n_in
    tl.store(gx_group + chans[:, None] * n_in + pixels[None, :], acc, mask=chan_ok[:, None] & pixel_ok[None, :])
'''

GRAD_X_SOLUTION = """
i_s = h + PADDING - u * DILATION
j_s = w + PADDING - v * DILATION
i = i_s // STRIDE
j = j_s // STRIDE
ok = pixel_ok & (i_s >= 0) & (j_s >= 0) & (i_s % STRIDE == 0) & (j_s % STRIDE == 0) & (i < OUT_H) & (j < OUT_W)
out_pixel = i * OUT_W + j
tap = tl.load(k_group + (u * K + v) * n_out + out_pixel, mask=ok, other=0.0)
go = tl.load(go_group + chans[:, None] * n_out + out_pixel[None, :], mask=chan_ok[:, None] & ok[None, :], other=0.0)
acc += go * tap[None, :]
"""

# the library's way: clamp before dividing, so // and % never see a negative number
GRAD_X_ALTERNATIVE = """
i_s = h + PADDING - u * DILATION
j_s = w + PADDING - v * DILATION
i = tl.where(i_s >= 0, i_s, 0) // STRIDE
j = tl.where(j_s >= 0, j_s, 0) // STRIDE
ok = (i_s >= 0) & (i_s % STRIDE == 0) & (i < OUT_H)
ok = ok & (j_s >= 0) & (j_s % STRIDE == 0) & (j < OUT_W) & pixel_ok
tap = tl.load(k_group + (u * K + v) * n_out + i * OUT_W + j, mask=ok, other=0.0)
go = tl.load(go_group + chans[:, None] * n_out + (i * OUT_W + j)[None, :], mask=chan_ok[:, None] & ok[None, :], other=0.0)
acc += go * tap[None, :]
"""


def _body(text: str) -> str:
    return textwrap.indent(textwrap.dedent(text).strip("\n"), " " * 12)


@pytest.fixture(scope="module")
def make_kernel(tmp_path_factory):
    """``make_kernel(body, interpret=True, skeleton=SKELETON, store=STORE_MASK)``: the skeleton with this
    tap-loop body, written to a helper module in a temporary folder and jit-wrapped."""
    folder = tmp_path_factory.mktemp("kernels")
    count = [0]

    def make(body: str, interpret: bool = True, skeleton: str = SKELETON, store: str = STORE_MASK):
        import triton

        count[0] += 1
        path = folder / f"student_kernel_{count[0]}.py"
        path.write_text(skeleton.replace("BODY", _body(body)).replace("STORE_MASK", store))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TRITON_INTERPRET", "1" if interpret else "0")
            return triton.jit(module.kernel)

    return make


# --- the forward kernel --------------------------------------------------------------------------


@pytest.mark.parametrize("body", [SOLUTION, ALTERNATIVE], ids=["solution", "per-axis-masks-and-where"])
def test_forward_accepts_the_solution_and_an_alternative(make_kernel, capsys, body):
    out = assert_accepts(check_involution_forward_kernel, make_kernel(body), capsys)
    assert "random cases" in out


WRONG = [
    pytest.param(SOLUTION.replace("u * DILATION", "u").replace("v * DILATION", "v"), "left out the dilation", id="no-dilation"),
    pytest.param(SOLUTION.replace("i * STRIDE", "i").replace("j * STRIDE", "j"), "left out the stride", id="no-stride"),
    pytest.param(SOLUTION.replace(" - PADDING", ""), "subtract the padding", id="no-padding"),
    pytest.param(SOLUTION.replace("(u * K + v)", "(v * K + u)"), "you swapped them", id="u-v-swapped"),
    pytest.param(SOLUTION.replace(" & (w >= 0) & (w < W)", ""), "x", id="no-column-mask"),
    pytest.param(SOLUTION.replace(" & (h >= 0) & (h < H)", ""), "before the start of x", id="no-row-mask"),
    pytest.param(SOLUTION.replace("acc += xs", "acc = xs"), "add into acc", id="last-tap-only"),
]


@pytest.mark.parametrize("body, needle", WRONG)
def test_forward_names_the_mistake(make_kernel, capsys, body, needle):
    assert_rejects(check_involution_forward_kernel, make_kernel(body), capsys, "✗", needle)


MISSING_MASKS = [
    # lanes past C/G channels: never stored, so the output is right; the watched load still reads past x
    pytest.param(SOLUTION.replace("mask=chan_ok[:, None] & inside[None, :], other=0.0",
                                  "mask=inside[None, :], other=0.0"),
                 "a load reads past the end of x: is its mask missing?", "xs = tl.load", id="x-load-without-channel-mask"),
    # lanes past the last pixel: never stored; the last tap's plane ends where the kernels end
    pytest.param(SOLUTION.replace("+ pixels, mask=pixel_ok, other=0.0)", "+ pixels)"),
                 "a load reads past the end of the kernels: is its mask missing?", "tap = tl.load", id="tap-load-unmasked"),
    pytest.param(SOLUTION.replace("mask=chan_ok[:, None] & inside[None, :], other=0.0", "mask=chan_ok[:, None]"),
                 "before the start of x", "xs = tl.load", id="x-load-without-border-mask"),
]


@pytest.mark.parametrize("body, needle, line", MISSING_MASKS)
def test_forward_finds_a_missing_mask_whose_lanes_are_never_stored(make_kernel, capsys, body, needle, line):
    out = assert_rejects(check_involution_forward_kernel, make_kernel(body), capsys, "✗", needle, line)
    assert "StrayAccess" in out


def test_the_missing_channel_mask_is_invisible_without_the_watch(make_kernel):
    """What the poison and the watch add: the unwatched kernel computes the right numbers."""
    from involution_edu.exercises import triton as checker

    kernel = make_kernel(MISSING_MASKS[0].values[0])
    x, kernels = np.random.default_rng(0).standard_normal((1, 6, 5, 7)), np.random.default_rng(1).standard_normal(
        (1, 2, 3, 3, 5, 7))
    tensors = [torch.from_numpy(a).float() for a in (x, kernels)]
    buffer = torch.zeros(3 * 6 * 35)  # x in front of memory we own, so the stray lanes read zeros
    buffer[: x.size] = tensors[0].reshape(-1)
    out = torch.full((1, 6, 5, 7), float("nan"))
    kernel[(2, 2)](buffer[: x.size].view(1, 6, 5, 7), tensors[1], out, 6, 5, 7, 2, 3, 5, 7,
                   K=3, STRIDE=1, PADDING=1, DILATION=1, BLOCK_C=4, BLOCK_P=32)
    expected = checker.involution_loops(x, kernels, 1, 1, 1)
    assert np.allclose(out.double().numpy(), expected, atol=1e-4)


def test_a_store_outside_the_output_is_refused_before_it_writes(make_kernel, capsys):
    kernel = make_kernel(SOLUTION, store="mask=pixel_ok[None, :]")  # the channel lanes past C/G are stored
    assert_rejects(check_involution_forward_kernel, kernel, capsys, "a store writes", "tl.store")


def test_a_store_into_an_input_is_named_as_a_side_effect(make_kernel, capsys):
    body = SOLUTION + "tl.store(x_group + (h * W + w), tap, mask=inside)\n"  # overwrites x
    assert_rejects(check_involution_forward_kernel, make_kernel(body), capsys, "a store writes into x, which is an input",
                   "your kernel would change its input")


def test_an_unfinished_stub_is_not_attempted(make_kernel, capsys):
    stub = '# YOUR CODE HERE\nraise NotImplementedError("Write your solution in place of this line")\n'
    assert_rejects(check_involution_forward_kernel, make_kernel(stub), capsys, "not attempted yet")


def test_an_error_inside_the_kernel_is_reported_without_a_traceback(make_kernel, capsys):
    broken = SOLUTION.replace("tap[None, :]", "tap[:, None]")  # (BLOCK_P, 1) against (BLOCK_C, BLOCK_P)
    out = assert_rejects(check_involution_forward_kernel, make_kernel(broken), capsys, "raised")
    assert "Traceback" not in out


def test_a_kernel_compiled_for_a_gpu_on_a_machine_without_one(make_kernel, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert_rejects(check_involution_forward_kernel, make_kernel(SOLUTION, interpret=False), capsys,
                   "compiled for a GPU", "TRITON_INTERPRET=1")


def test_a_plain_function_is_told_to_use_triton_jit(capsys):
    def kernel(x_ptr, k_ptr, out_ptr):
        pass

    assert_rejects(check_involution_forward_kernel, kernel, capsys, "@triton.jit")


def test_never_raises_on_odd_answers():
    assert_never_raises(check_involution_forward_kernel, make_candidate=lambda value: value)
    assert_never_raises(check_involution_grad_x_kernel, make_candidate=lambda value: value)


def test_refuses_the_librarys_kernel_by_name(capsys):
    import triton

    from involution_edu import triton_backend

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        shortcut = triton.jit(triton_backend._forward_kernel)
    assert_rejects(check_involution_forward_kernel, shortcut, capsys, "write the kernel yourself", "_forward_kernel")


def test_refuses_the_librarys_kernel_reached_at_run_time(make_kernel, capsys):
    """A kernel in a helper module that calls the library's kernel body through a name built at run time."""
    body = """
    library = importlib.import_module("involution_edu." + "triton_backend")
    getattr(library, "_forward" + "_kernel")(x_ptr, k_ptr, out_ptr, C, H, W, G, CG, OUT_H, OUT_W, 1, K, STRIDE,
                                             PADDING, DILATION, BLOCK_C, BLOCK_P, tl.float32)
    """
    skeleton = SKELETON.replace("    for u in range(K):\n        for v in range(K):\n", "    if K > 0:\n        if K > 0:\n")
    kernel = make_kernel(textwrap.dedent(body), skeleton=skeleton)
    assert_rejects(check_involution_forward_kernel, kernel, capsys, "your function called",
                   "involution_edu.triton_backend._forward_kernel")


def test_refuses_an_oracle_of_the_checker(make_kernel, capsys):
    body = """
    checker = importlib.import_module("involution_edu.exercises.triton")
    checker.emulate_forward_kernel(None, None, 1, 1, 1)
    """
    kernel = make_kernel(textwrap.dedent(body))
    assert_rejects(check_involution_forward_kernel, kernel, capsys, "your function called", "emulate_forward_kernel")


def test_forward_times_out_on_an_endless_loop(make_kernel, capsys):
    body = "while u >= 0:\n    acc += 0.0\n"
    assert_times_out(check_involution_forward_kernel, make_kernel(body), capsys)


def test_diagnose_never_raises_even_under_grading(make_kernel, capsys, monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    kernel = make_kernel(MISSING_MASKS[0].values[0])
    verdict = diagnose_forward_kernel(kernel)
    assert not verdict and "past the end of x" in capsys.readouterr().out


# --- the watch itself -----------------------------------------------------------------------------


def test_record_accesses_returns_every_load_and_store(make_kernel):
    kernel = make_kernel(SOLUTION)
    x, kernels = torch.randn(1, 4, 5, 5), torch.randn(1, 1, 3, 3, 5, 5)
    out = torch.empty(1, 4, 5, 5)
    events = record_accesses(kernel, (1, 1), x, kernels, out, 4, 5, 5, 1, 4, 5, 5,
                             K=3, STRIDE=1, PADDING=1, DILATION=1, BLOCK_C=4, BLOCK_P=32)
    kinds = [event[0] for event in events]
    assert kinds.count("load") == 2 * 9 and kinds.count("store") == 1
    kind, program, addresses, mask, line = events[1]  # the first x load: tap (0, 0)
    assert program == (0, 0, 0) and "xs = tl.load" in line and addresses.shape == mask.shape == (4, 32)
    offsets = (addresses[mask].astype(np.int64) - x.data_ptr()) // 4
    assert offsets.min() >= 0 and offsets.max() < x.numel()
    assert torch.allclose(out, torch.from_numpy(
        np.asarray(__import__("involution_edu").involution_loops(x.double().numpy(), kernels.double().numpy(), 1, 1, 1))
    ).float(), atol=1e-4)


def test_the_watch_restores_the_interpreter():
    from triton.runtime import interpreter

    before = interpreter.interpreter_builder.create_masked_load
    with MemoryWatch():
        assert interpreter.interpreter_builder.create_masked_load != before
    assert interpreter.interpreter_builder.create_masked_load == before
    assert issubclass(StrayAccess, Exception)


# --- the grad_x kernel ---------------------------------------------------------------------------


@pytest.mark.parametrize("body", [GRAD_X_SOLUTION, GRAD_X_ALTERNATIVE], ids=["solution", "clamped-division"])
def test_grad_x_accepts_the_solution_and_an_alternative(make_kernel, capsys, body):
    assert_accepts(check_involution_grad_x_kernel, make_kernel(body, skeleton=GRAD_X_SKELETON), capsys)


GRAD_X_WRONG = [
    pytest.param(GRAD_X_SOLUTION.replace(" & (i_s % STRIDE == 0) & (j_s % STRIDE == 0)", ""), "is a multiple of s",
                 id="no-divisibility"),
    pytest.param(GRAD_X_SOLUTION.replace(" & (i < OUT_H) & (j < OUT_W)", ""), "past the end of", id="no-upper-bound"),
    pytest.param(GRAD_X_SOLUTION.replace(" & (i_s >= 0) & (j_s >= 0)", ""), "before the start of", id="no-lower-bound"),
    pytest.param(GRAD_X_SOLUTION.replace("h + PADDING - u * DILATION", "h - PADDING + u * DILATION")
                 .replace("w + PADDING - v * DILATION", "w - PADDING + v * DILATION"), "✗", id="forward-formula"),
    pytest.param(GRAD_X_SOLUTION.replace("mask=chan_ok[:, None] & ok[None, :], other=0.0", "mask=ok[None, :], other=0.0"),
                 "a load reads past the end of grad_out: is its mask missing?", id="grad-out-load-without-channel-mask"),
]


@pytest.mark.parametrize("body, needle", GRAD_X_WRONG)
def test_grad_x_names_the_mistake(make_kernel, capsys, body, needle):
    assert_rejects(check_involution_grad_x_kernel, make_kernel(body, skeleton=GRAD_X_SKELETON), capsys, "✗", needle)


def test_grad_x_stub(make_kernel, capsys):
    stub = '# YOUR CODE HERE\nraise NotImplementedError("Write your solution in place of this line")\n'
    assert_rejects(check_involution_grad_x_kernel, make_kernel(stub, skeleton=GRAD_X_SKELETON), capsys,
                   "not attempted yet")


def test_grad_x_refuses_the_librarys_kernel(capsys):
    import triton

    from involution_edu import triton_backend

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        shortcut = triton.jit(triton_backend._grad_x_kernel)
    assert_rejects(check_involution_grad_x_kernel, shortcut, capsys, "write the kernel yourself", "_grad_x_kernel")


def test_grad_x_refuses_the_library_reached_at_run_time(make_kernel, capsys):
    """A grad_x kernel in a helper module that calls the checker's own emulation through a name built at run time."""
    body = """
    checker = importlib.import_module("involution_edu.exercises." + "triton")
    getattr(checker, "emulate_" + "grad_x_kernel")(None, None, H, W, STRIDE, PADDING, DILATION)
    """
    skeleton = "import importlib\n" + GRAD_X_SKELETON
    kernel = make_kernel(textwrap.dedent(body), skeleton=skeleton)
    assert_rejects(check_involution_grad_x_kernel, kernel, capsys, "your function called", "emulate_grad_x_kernel")


def test_grad_x_times_out_on_an_endless_loop(make_kernel, capsys):
    body = "while v >= 0:\n    acc += 0.0\n"
    assert_times_out(check_involution_grad_x_kernel, make_kernel(body, skeleton=GRAD_X_SKELETON), capsys)


def test_grad_x_names_a_store_into_its_input(make_kernel, capsys):
    body = GRAD_X_SOLUTION + "tl.store(go_group + pixels, tap, mask=pixel_ok & (pixels < n_out))\n"
    assert_rejects(check_involution_grad_x_kernel, make_kernel(body, skeleton=GRAD_X_SKELETON), capsys,
                   "a store writes into grad_out, which is an input")


# --- the wrapper -----------------------------------------------------------------------------------

WRAPPER = '''
def involution_triton(x, kernels, stride=1, padding=0, dilation=1):
    batch, channels, height, width = x.shape
    groups, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    x, kernels = x.contiguous(), kernels.contiguous()
    out = torch.empty((batch, channels, out_h, out_w), dtype=torch.float32, device=x.device)
    for name, tensor in (("x", x), ("kernels", kernels), ("out", out)):
        if tensor.numel() > 2**31 - 1:
            raise ValueError(f"{name} has {tensor.numel()} elements, more than int32 offsets reach")
    cg = channels // groups
    BLOCK_P = 64
    grid = (batch * groups, triton.cdiv(out_h * out_w, BLOCK_P))
    involution_forward[grid](x, kernels, out, channels, height, width, groups, cg, out_h, out_w,
                             K=k, STRIDE=stride, PADDING=padding, DILATION=dilation,
                             BLOCK_C=triton.next_power_of_2(cg), BLOCK_P=BLOCK_P)
    return out
'''

# natural alternatives: output_size for H' and W', zeros, a block of 16, the check before anything else
WRAPPER_ALTERNATIVE = '''
def involution_triton(x, kernels, stride=1, padding=0, dilation=1):
    if max(x.numel(), kernels.numel()) >= 2**31:
        raise ValueError("too large for int32 offsets")
    B, C, H, W = x.shape
    G, K = kernels.shape[1], kernels.shape[2]
    OH, OW = output_size(H, K, stride, padding, dilation), output_size(W, K, stride, padding, dilation)
    out = torch.zeros(B, C, OH, OW)
    block = 16
    involution_forward[(B * G, (OH * OW + block - 1) // block)](
        x.contiguous(), kernels.contiguous(), out, C, H, W, G, C // G, OH, OW,
        K=K, STRIDE=stride, PADDING=padding, DILATION=dilation,
        BLOCK_C=max(1, 1 << (C // G - 1).bit_length()), BLOCK_P=block)
    return out
'''


@pytest.fixture(scope="module")
def forward_kernel(make_kernel):
    return make_kernel(SOLUTION)


def _wrapper(forward_kernel, source=WRAPPER, **extra):
    import triton

    from involution_edu.shapes import output_size

    names = {"triton": triton, "involution_forward": forward_kernel, "output_size": output_size}
    names.update(extra)
    return exec_route(source, "involution_triton", names)


@pytest.mark.parametrize("source", [WRAPPER, WRAPPER_ALTERNATIVE], ids=["solution", "output-size-and-zeros"])
def test_wrapper_accepts_the_solution_and_an_alternative(forward_kernel, capsys, source):
    assert_accepts(check_involution_wrapper, _wrapper(forward_kernel, source), capsys)


WRAPPER_WRONG = [
    pytest.param(WRAPPER.replace("triton.cdiv(out_h * out_w, BLOCK_P)", "out_h * out_w // BLOCK_P"),
                 "it rounds up", id="grid-rounds-down"),
    pytest.param(WRAPPER.replace("(batch * groups, ", "(batch, "), "never stored by the kernel", id="grid-without-groups"),
    pytest.param(WRAPPER.replace("BLOCK_C=triton.next_power_of_2(cg)", "BLOCK_C=cg"), "raised", id="block-c-not-a-power-of-2"),
    pytest.param(WRAPPER.replace("x, kernels = x.contiguous(), kernels.contiguous()", "pass"), "x is a transposed view",
                 id="not-contiguous"),
    pytest.param(WRAPPER.replace("        if tensor.numel() > 2**31 - 1:\n", "        if False:\n"),
                 "int32", id="no-int32-check"),
    pytest.param(WRAPPER.replace('(("x", x), ("kernels", kernels), ("out", out))', '(("x", x),)'),
                 "the kernels tensor (G*K*K values per pixel) passes the int32 limit", id="int32-check-on-x-only"),
    pytest.param(WRAPPER.replace("    involution_forward[grid]", "    grid = grid\n    involution_forward")
                 .replace("    return out", "    return torch.zeros_like(out)"), "✗", id="no-launch"),
]


@pytest.mark.parametrize("source, needle", WRAPPER_WRONG)
def test_wrapper_names_the_mistake(forward_kernel, capsys, source, needle):
    assert_rejects(check_involution_wrapper, _wrapper(forward_kernel, source), capsys, "✗", needle)


def test_wrapper_that_computes_without_triton_is_told_to_launch(forward_kernel, capsys):
    source = """
def involution_triton(x, kernels, stride=1, padding=0, dilation=1):
    if max(x.numel(), kernels.numel()) > 2**31 - 1:
        raise ValueError("too large")
    B, C, H, W = x.shape
    G, K, OH, OW = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    out = torch.zeros(B, C, OH, OW)
    for u in range(K):
        for v in range(K):
            window = padded[:, :, u * dilation:, v * dilation:][:, :, ::stride, ::stride][:, :, :OH, :OW]
            out += window * kernels[:, :, u, v].repeat_interleave(C // G, dim=1)
    return out
"""
    assert_rejects(check_involution_wrapper, _wrapper(forward_kernel, source), capsys,
                   "no Triton kernel stored anything")


def test_wrapper_refuses_the_library_directly_and_at_run_time(forward_kernel, capsys):
    import involution_edu.triton_backend  # noqa: F401 - imported, as in the notebook
    from involution_edu.functional import involution

    direct = "def involution_triton(x, kernels, stride=1, padding=0, dilation=1):\n" \
             "    return involution(x, kernels, stride=stride, padding=padding, dilation=dilation, backend='triton')\n"
    assert_rejects(check_involution_wrapper, _wrapper(forward_kernel, direct, involution=involution), capsys,
                   "write the launch yourself", "involution")
    run_time = '''
import importlib
def involution_triton(x, kernels, stride=1, padding=0, dilation=1):
    backend = importlib.import_module("involution_edu." + "triton_backend")
    out_h, out_w = kernels.shape[4], kernels.shape[5]
    return getattr(backend, "triton_" + "forward")(x, kernels, stride, padding, dilation, out_h, out_w)
'''
    assert_rejects(check_involution_wrapper, _wrapper(forward_kernel, run_time), capsys, "your function called",
                   "triton_forward")


def test_wrapper_times_out_on_an_endless_loop(forward_kernel, capsys):
    source = WRAPPER.replace("    cg = channels // groups\n", "    cg = channels // groups\n    while cg > 0:\n        cg + 1\n")
    assert_times_out(check_involution_wrapper, _wrapper(forward_kernel, source), capsys)


def test_wrapper_names_a_side_effect_on_its_input(forward_kernel, capsys):
    source = WRAPPER.replace("    return out", "    x.add_(0.5)  # after the launch: the output is right\n    return out")
    assert_names_side_effect(check_involution_wrapper, _wrapper(forward_kernel, source), capsys, "x")


def test_wrapper_not_attempted_and_odd_answers(capsys):
    def involution_triton(x, kernels, stride=1, padding=0, dilation=1):
        raise NotImplementedError("Write your solution in place of this line")

    assert_rejects(check_involution_wrapper, involution_triton, capsys, "not attempted yet")
    assert_never_raises(check_involution_wrapper)


# --- questions ---------------------------------------------------------------------------------


def test_the_eager_bytes_answer_is_the_count():
    # per pixel and sample: eager 49 taps x (x view 64 + kernel plane 4 + read and write out 2 x 64);
    # one pass: x 64 + kernels 4 x 49 + out 64
    assert eager_bytes_ratio() == pytest.approx(49 * (64 + 4 + 128) / (64 + 196 + 64))
    assert QUESTIONS["eager_bytes"].answer == pytest.approx(eager_bytes_ratio())


def test_the_int32_batch_is_where_the_kernels_overflow():
    per_sample = 4 * 49 * 256 * 256  # the kernels: G * K^2 values per pixel
    assert (167 * per_sample - 1) <= 2**31 - 1 < (168 * per_sample - 1)
    assert int32_overflow_batch() == QUESTIONS["int32_batch"].answer == 168
    x_per_sample = 64 * 256 * 256
    assert 512 * x_per_sample - 1 <= 2**31 - 1 < 513 * x_per_sample - 1  # x overflows much later
