"""The checkers of notebook 08 accept correct solutions and reject plausible wrong ones,
saying which case failed and why."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from involution_edu.exercises.performance import (
    check_arithmetic_intensity,
    check_bytes_moved,
    check_involution_offsets,
)


# --- reference solutions, written independently of the library -------------------------------


def _out(size, k, stride):
    return (size + 2 * ((k - 1) // 2) - k) // stride + 1


def bytes_moved(batch, channels, height, width, kernel_size, groups, stride, dtype_bytes):
    out_h, out_w = _out(height, kernel_size, stride), _out(width, kernel_size, stride)
    x = batch * channels * height * width
    kernels = batch * groups * kernel_size * kernel_size * out_h * out_w
    out = batch * channels * out_h * out_w
    return (x + kernels + out) * dtype_bytes


def arithmetic_intensity(batch, channels, height, width, kernel_size, groups, stride, dtype_bytes):
    out_h, out_w = _out(height, kernel_size, stride), _out(width, kernel_size, stride)
    flops = 2 * batch * channels * out_h * out_w * kernel_size**2
    return flops / bytes_moved(batch, channels, height, width, kernel_size, groups, stride, dtype_bytes)


def involution_offsets(x, kernels, stride, padding, dilation):
    b, c, _, _ = x.shape
    g, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    xp = F.pad(x, (padding,) * 4).view(b, g, c // g, x.shape[2] + 2 * padding, x.shape[3] + 2 * padding)
    out = x.new_zeros(b, g, c // g, out_h, out_w)
    for u in range(k):
        for v in range(k):
            view = xp[..., u * dilation : u * dilation + (out_h - 1) * stride + 1 : stride,
                      v * dilation : v * dilation + (out_w - 1) * stride + 1 : stride]
            out += kernels[:, :, u, v].unsqueeze(2) * view
    return out.reshape(b, c, out_h, out_w)


# --- bytes_moved ------------------------------------------------------------------------------


def test_bytes_moved_accepts_the_solution(capsys):
    assert check_bytes_moved(bytes_moved) is True
    assert "all 7 cases pass" in capsys.readouterr().out


def test_bytes_moved_rejects_forgetting_the_kernels(capsys):
    def wrong(batch, channels, height, width, kernel_size, groups, stride, dtype_bytes):
        out_h, out_w = _out(height, kernel_size, stride), _out(width, kernel_size, stride)
        return (batch * channels * height * width + batch * channels * out_h * out_w) * dtype_bytes

    assert check_bytes_moved(wrong) is False
    out = capsys.readouterr().out
    assert "case 1/7 'RedNet-50 stage 1, float32'" in out and "kernels" in out


def test_bytes_moved_rejects_one_kernel_per_channel(capsys):
    def wrong(batch, channels, height, width, kernel_size, groups, stride, dtype_bytes):
        return bytes_moved(batch, channels, height, width, kernel_size, channels, stride, dtype_bytes)

    assert check_bytes_moved(wrong) is False
    assert "B*G*K^2*H'*W'" in capsys.readouterr().out


def test_bytes_moved_rejects_ignoring_the_stride(capsys):
    def wrong(batch, channels, height, width, kernel_size, groups, stride, dtype_bytes):
        return bytes_moved(batch, channels, height, width, kernel_size, groups, 1, dtype_bytes)

    assert check_bytes_moved(wrong) is False
    out = capsys.readouterr().out
    assert "'stride 2 on 56x56'" in out and "output grid" in out


def test_bytes_moved_rejects_counting_elements_not_bytes(capsys):
    def wrong(batch, channels, height, width, kernel_size, groups, stride, dtype_bytes):
        return bytes_moved(batch, channels, height, width, kernel_size, groups, stride, 1)

    assert check_bytes_moved(wrong) is False
    out = capsys.readouterr().out
    assert "expected" in out and "off by" in out


def test_bytes_moved_reports_not_attempted_and_crashes(capsys):
    def stub(*args):
        raise NotImplementedError("count x, kernels and out")

    def crashes(*args):
        return args[99]

    assert check_bytes_moved(stub) is False
    assert "not attempted yet" in capsys.readouterr().out
    assert check_bytes_moved(crashes) is False
    assert "IndexError" in capsys.readouterr().out


# --- arithmetic_intensity ---------------------------------------------------------------------


def test_arithmetic_intensity_accepts_the_solution(capsys):
    assert check_arithmetic_intensity(arithmetic_intensity) is True
    assert "all 7 cases pass" in capsys.readouterr().out


def test_arithmetic_intensity_rejects_one_flop_per_multiply_add(capsys):
    def wrong(*args):
        return arithmetic_intensity(*args) / 2

    assert check_arithmetic_intensity(wrong) is False
    assert "2 per multiply-add" in capsys.readouterr().out


def test_arithmetic_intensity_rejects_convolution_bytes(capsys):
    def wrong(batch, channels, height, width, kernel_size, groups, stride, dtype_bytes):
        out_h, out_w = _out(height, kernel_size, stride), _out(width, kernel_size, stride)
        flops = 2 * batch * channels * out_h * out_w * kernel_size**2
        return flops / ((batch * channels * height * width + batch * channels * out_h * out_w) * dtype_bytes)

    assert check_arithmetic_intensity(wrong) is False
    assert "case 1/7" in capsys.readouterr().out


def test_arithmetic_intensity_rejects_bytes_per_flop(capsys):
    def wrong(*args):
        return 1 / arithmetic_intensity(*args)

    assert check_arithmetic_intensity(wrong) is False
    assert "expected" in capsys.readouterr().out


def test_arithmetic_intensity_rejects_ignoring_dtype(capsys):
    def wrong(batch, channels, height, width, kernel_size, groups, stride, dtype_bytes):
        return arithmetic_intensity(batch, channels, height, width, kernel_size, groups, stride, 4)

    assert check_arithmetic_intensity(wrong) is False
    out = capsys.readouterr().out
    assert "'float64'" in out and "half the intensity" in out


# --- involution_offsets_student --------------------------------------------------------------


def test_offsets_accepts_the_solution(capsys):
    assert check_involution_offsets(involution_offsets) is True
    assert "all 7 cases pass" in capsys.readouterr().out


def test_offsets_accepts_the_library_op(capsys):
    from involution_edu import involution

    assert check_involution_offsets(lambda x, k, s, p, d: involution(x, k, s, p, d)) is True


def test_offsets_rejects_interleaved_groups(capsys):
    def wrong(x, kernels, stride, padding, dilation):
        b, c, h, w = x.shape
        g = kernels.shape[1]
        # channel c in group c % G (the keras tutorial's reshape): permute channels, then back
        order = torch.arange(c).view(c // g, g).t().reshape(-1)
        out = involution_offsets(x[:, order], kernels, stride, padding, dilation)
        return out[:, torch.argsort(order)]

    assert check_involution_offsets(wrong) is False
    out = capsys.readouterr().out
    assert "'6 channels in 2 groups'" in out and "c // (C // G)" in out


def test_offsets_rejects_ignoring_dilation(capsys):
    def wrong(x, kernels, stride, padding, dilation):
        return involution_offsets(x, kernels, stride, padding, 1)

    assert check_involution_offsets(wrong) is False
    out = capsys.readouterr().out
    assert "'dilation 2'" in out


def test_offsets_rejects_ignoring_the_stride(capsys):
    def wrong(x, kernels, stride, padding, dilation):
        b, c = x.shape[:2]
        g, k, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
        xp = F.pad(x, (padding,) * 4).view(b, g, c // g, x.shape[2] + 2 * padding, x.shape[3] + 2 * padding)
        out = x.new_zeros(b, g, c // g, out_h, out_w)
        for u in range(k):
            for v in range(k):  # contiguous windows: forgets to step by the stride
                out += kernels[:, :, u, v].unsqueeze(2) * xp[..., u * dilation : u * dilation + out_h,
                                                            v * dilation : v * dilation + out_w]
        return out.reshape(b, c, out_h, out_w)

    assert check_involution_offsets(wrong) is False
    out = capsys.readouterr().out
    assert "'stride 2, odd size 7x7'" in out and "wrong values" in out


def test_offsets_rejects_a_wrong_shape(capsys):
    def wrong(x, kernels, stride, padding, dilation):
        return involution_offsets(x, kernels, stride, padding, dilation)[:, :, :-1]

    assert check_involution_offsets(wrong) is False
    assert "wrong shape" in capsys.readouterr().out
