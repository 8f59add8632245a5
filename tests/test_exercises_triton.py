"""The checkers and questions of notebook 10: each checker accepts the solution kernel, names each
plausible wrong kernel's mistake, and never raises; every question accepts its answer.

The learner's kernels are written here as source text, one tap-loop body per variant, put into
the exercise's skeleton and jit-wrapped while ``TRITON_INTERPRET=1`` is set (Triton decides
"interpret or compile" when it wraps a function), so they run on the CPU like the notebook's.
The skeleton uses ``tl.full`` rather than ``tl.zeros``: in this process Triton's own library was
wrapped for the compiler (torch imports triton early), and only built-in operations work in both.
"""

from __future__ import annotations

import importlib.util
import textwrap

import pytest
import torch
from checker_harness import assert_accepts, assert_never_raises, assert_rejects

from involution_edu.exercises.triton import (
    QUESTIONS,
    check_involution_forward_kernel,
    check_involution_grad_x_kernel,
    eager_bytes_ratio,
)

SKELETON = '''
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
    tl.store(out_group + chans[:, None] * n_out + pixels[None, :], acc, mask=chan_ok[:, None] & pixel_ok[None, :])
'''

SOLUTION = """
h = i * STRIDE + u * DILATION - PADDING
w = j * STRIDE + v * DILATION - PADDING
inside = pixel_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
tap = tl.load(k_group + (u * K + v) * n_out + pixels, mask=pixel_ok, other=0.0)
xs = tl.load(x_group + chans[:, None] * H * W + (h * W + w)[None, :], mask=chan_ok[:, None] & inside[None, :], other=0.0)
acc += xs * tap[None, :]
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


def _body(text: str) -> str:
    return textwrap.indent(textwrap.dedent(text).strip("\n"), " " * 12)


@pytest.fixture(scope="module")
def make_kernel(tmp_path_factory):
    """``make_kernel(body, interpret=True)``: the skeleton with this tap-loop body, jit-wrapped."""
    folder = tmp_path_factory.mktemp("kernels")
    count = [0]

    def make(body: str, interpret: bool = True, skeleton: str = SKELETON):
        import triton

        count[0] += 1
        path = folder / f"student_kernel_{count[0]}.py"
        path.write_text(skeleton.replace("BODY", _body(body)))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TRITON_INTERPRET", "1" if interpret else "0")
            return triton.jit(module.kernel)

    return make


def test_accepts_the_solution(make_kernel, capsys):
    assert_accepts(check_involution_forward_kernel, make_kernel(SOLUTION), capsys)


WRONG = [
    pytest.param(SOLUTION.replace("u * DILATION", "u").replace("v * DILATION", "v"), "left out the dilation", id="no-dilation"),
    pytest.param(SOLUTION.replace("i * STRIDE", "i").replace("j * STRIDE", "j"), "left out the stride", id="no-stride"),
    pytest.param(SOLUTION.replace(" - PADDING", ""), "subtract the padding", id="no-padding"),
    pytest.param(SOLUTION.replace("(u * K + v)", "(v * K + u)"), "you swapped them", id="u-v-swapped"),
    pytest.param(SOLUTION.replace(" & (w >= 0) & (w < W)", ""), "mask w < 0 and w >= W", id="no-column-mask"),
    pytest.param(SOLUTION.replace(" & (h >= 0) & (h < H)", ""), "mask h < 0 and h >= H", id="no-row-mask"),
    pytest.param(SOLUTION.replace("acc += xs", "acc = xs"), "add into acc", id="last-tap-only"),
    pytest.param(SOLUTION.replace("mask=chan_ok[:, None] & inside[None, :], other=0.0", "mask=chan_ok[:, None]"),
                 "a load went outside x", id="x-load-unmasked"),
]


@pytest.mark.parametrize("body, needle", WRONG)
def test_names_the_mistake(make_kernel, capsys, body, needle):
    assert_rejects(check_involution_forward_kernel, make_kernel(body), capsys, "✗", needle)


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


def test_refuses_the_librarys_kernel(capsys):
    import triton

    from involution_edu import triton_backend

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        shortcut = triton.jit(triton_backend._forward_kernel)
    assert_rejects(check_involution_forward_kernel, shortcut, capsys, "write the tap loop", "_forward_kernel")


# --- the grad_x kernel ---------------------------------------------------------------------------


def test_grad_x_accepts_the_solution(make_kernel, capsys):
    assert_accepts(check_involution_grad_x_kernel, make_kernel(GRAD_X_SOLUTION, skeleton=GRAD_X_SKELETON), capsys)


GRAD_X_WRONG = [
    pytest.param(GRAD_X_SOLUTION.replace(" & (i_s % STRIDE == 0) & (j_s % STRIDE == 0)", ""), "is a multiple of s",
                 id="no-divisibility"),
    pytest.param(GRAD_X_SOLUTION.replace(" & (i < OUT_H) & (j < OUT_W)", ""), "mask i >= OUT_H", id="no-upper-bound"),
    pytest.param(GRAD_X_SOLUTION.replace(" & (i_s >= 0) & (j_s >= 0)", ""), "h + p - u*d < 0", id="no-lower-bound"),
    pytest.param(GRAD_X_SOLUTION.replace("h + PADDING - u * DILATION", "h - PADDING + u * DILATION")
                 .replace("w + PADDING - v * DILATION", "w - PADDING + v * DILATION"), "forward's formula run backwards",
                 id="forward-formula"),
]


@pytest.mark.parametrize("body, needle", GRAD_X_WRONG)
def test_grad_x_names_the_mistake(make_kernel, capsys, body, needle):
    assert_rejects(check_involution_grad_x_kernel, make_kernel(body, skeleton=GRAD_X_SKELETON), capsys, "✗", needle)


def test_grad_x_stub_and_odd_answers(make_kernel, capsys):
    stub = '# YOUR CODE HERE\nraise NotImplementedError("Write your solution in place of this line")\n'
    assert_rejects(check_involution_grad_x_kernel, make_kernel(stub, skeleton=GRAD_X_SKELETON), capsys,
                   "not attempted yet")
    assert_never_raises(check_involution_grad_x_kernel, make_candidate=lambda value: value)


# --- questions ---------------------------------------------------------------------------------


def test_the_eager_bytes_answer_is_the_count():
    # per pixel and sample: eager 49 taps x (x view 64 + kernel plane 4 + read and write out 2 x 64);
    # one pass: x 64 + kernels 4 x 49 + out 64
    assert eager_bytes_ratio() == pytest.approx(49 * (64 + 4 + 128) / (64 + 196 + 64))
    assert QUESTIONS["eager_bytes"].answer == pytest.approx(eager_bytes_ratio())


