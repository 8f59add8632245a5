"""Bad input gives a clear error: the right exception type, naming the argument and the value.

Checks shared by all four implementations are parametrized over them; inputs are built
as NumPy arrays for the references and as tensors for the PyTorch ops.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from involution_edu import Involution, involution, involution_loops, involution_numpy, involution_unfold
from strategies import single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

NUMPY_IMPLS = {"involution_loops": involution_loops, "involution_numpy": involution_numpy}
TORCH_IMPLS = {"involution_unfold": involution_unfold, "involution": involution}
ALL_IMPLS = {**NUMPY_IMPLS, **TORCH_IMPLS}


def _inputs(name: str, x_shape, kernels_shape):
    """Zero-filled float64 inputs of the given shapes, in the implementation's array type."""
    if name in NUMPY_IMPLS:
        return np.zeros(x_shape), np.zeros(kernels_shape)
    return torch.zeros(x_shape, dtype=torch.float64), torch.zeros(kernels_shape, dtype=torch.float64)


def _call(name: str, x_shape, kernels_shape, **kwargs):
    x, kernels = _inputs(name, x_shape, kernels_shape)
    return ALL_IMPLS[name](x, kernels, **kwargs)


all_impls = pytest.mark.parametrize("name", list(ALL_IMPLS))
torch_impls = pytest.mark.parametrize("name", list(TORCH_IMPLS))
numpy_impls = pytest.mark.parametrize("name", list(NUMPY_IMPLS))


def test_valid_call_works_for_every_implementation():
    """The baseline every error test below perturbs: this call must succeed."""
    for name in ALL_IMPLS:
        assert tuple(_call(name, (1, 4, 6, 6), (1, 2, 3, 3, 3, 3), stride=2).shape) == (1, 4, 3, 3)


# --- shapes ---------------------------------------------------------------------------------


@all_impls
def test_x_not_4d(name):
    with pytest.raises(ValueError, match=r"x must be 4-D .*got 3-D with shape \(4, 6, 6\)"):
        _call(name, (4, 6, 6), (1, 2, 3, 3, 6, 6))


@all_impls
def test_kernels_not_6d(name):
    with pytest.raises(ValueError, match=r"kernels must be 6-D .*got 5-D with shape \(1, 2, 9, 6, 6\)"):
        _call(name, (1, 4, 6, 6), (1, 2, 9, 6, 6))


@all_impls
def test_kernels_not_square(name):
    with pytest.raises(ValueError, match=r"kernels must hold square .*got 3 x 5"):
        _call(name, (1, 4, 6, 6), (1, 2, 3, 5, 6, 6))


@all_impls
def test_kernel_size_zero(name):
    with pytest.raises(ValueError, match=r"kernels must have a kernel size K >= 1.*got K=0"):
        _call(name, (1, 4, 6, 6), (1, 2, 0, 0, 6, 6), padding=0)


@all_impls
def test_even_kernel_size_with_default_padding(name):
    with pytest.raises(ValueError, match=r"kernel_size must be odd when padding is left to its default.*K=4"):
        _call(name, (1, 4, 6, 6), (1, 2, 4, 4, 6, 6))


@all_impls
def test_even_kernel_size_with_explicit_padding_is_fine(name):
    assert tuple(_call(name, (1, 4, 6, 6), (1, 2, 4, 4, 5, 5), padding=1).shape) == (1, 4, 5, 5)


@all_impls
def test_batch_mismatch(name):
    with pytest.raises(ValueError, match=r"kernels batch size must equal x's batch size 2, got 3"):
        _call(name, (2, 4, 6, 6), (3, 2, 3, 3, 6, 6))


@all_impls
def test_channels_not_divisible_by_groups(name):
    with pytest.raises(ValueError, match=r"C=6 channels.*divisible by the number of groups G=4"):
        _call(name, (1, 6, 6, 6), (1, 4, 3, 3, 6, 6))


@all_impls
def test_kernels_grid_does_not_fit_stride(name):
    # stride 2 on 7x7 gives a 4x4 output grid; kernels for 7x7 do not fit
    with pytest.raises(ValueError, match=r"kernels spatial size must be the output size \(H', W'\) = \(4, 4\).*stride=2.*got \(7, 7\)"):
        _call(name, (1, 4, 7, 7), (1, 2, 3, 3, 7, 7), stride=2)


@all_impls
def test_kernels_grid_does_not_fit_padding(name):
    with pytest.raises(ValueError, match=r"= \(4, 4\).*padding=0.*got \(6, 6\)"):
        _call(name, (1, 4, 6, 6), (1, 2, 3, 3, 6, 6), padding=0)


@all_impls
def test_x_too_small_for_the_window(name):
    with pytest.raises(ValueError, match=r"x of spatial size 3x4 is too small for kernel_size=5.*padding=0"):
        _call(name, (1, 4, 3, 4), (1, 2, 5, 5, 1, 1), padding=0)


# --- stride, dilation, padding --------------------------------------------------------------


@pytest.mark.parametrize("argument", ["stride", "dilation"])
@pytest.mark.parametrize("value", [0, -2])
@all_impls
def test_non_positive_stride_or_dilation(name, argument, value):
    with pytest.raises(ValueError, match=rf"{argument} must be a positive integer \(>= 1\), got {value}"):
        _call(name, (1, 4, 6, 6), (1, 2, 3, 3, 6, 6), **{argument: value})


@pytest.mark.parametrize("argument", ["stride", "dilation"])
@pytest.mark.parametrize("value, type_name", [(1.0, "float"), (2.5, "float"), (True, "bool"), ("2", "str")])
@all_impls
def test_non_integer_stride_or_dilation(name, argument, value, type_name):
    pattern = rf"{argument} must be a positive integer, got {re.escape(repr(value))} of type {type_name}"
    with pytest.raises(TypeError, match=pattern):
        _call(name, (1, 4, 6, 6), (1, 2, 3, 3, 6, 6), **{argument: value})


@all_impls
def test_negative_or_float_padding(name):
    with pytest.raises(ValueError, match=r"padding must be a non-negative integer \(>= 0\), got -1"):
        _call(name, (1, 4, 6, 6), (1, 2, 3, 3, 8, 8), padding=-1)
    with pytest.raises(TypeError, match=r"padding must be a non-negative integer, got 1.0 of type float"):
        _call(name, (1, 4, 6, 6), (1, 2, 3, 3, 6, 6), padding=1.0)


# --- types, dtypes, devices -----------------------------------------------------------------


@torch_impls
def test_dtype_mismatch(name):
    x = torch.zeros(1, 4, 6, 6, dtype=torch.float64)
    kernels = torch.zeros(1, 2, 3, 3, 6, 6, dtype=torch.float32)
    with pytest.raises(TypeError, match=r"kernels must have the same dtype as x \(torch.float64\), got torch.float32"):
        TORCH_IMPLS[name](x, kernels)


class _OpLog(TorchDispatchMode):
    """Records every ATen operator run while active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("meta_argument", ["x", "kernels"])
@torch_impls
def test_device_mismatch_raises_before_any_compute(name, meta_argument):
    """A tensor on the `meta` device stands in for a GPU tensor on CPU-only machines."""
    x = torch.zeros(1, 4, 6, 6, device="meta" if meta_argument == "x" else "cpu")
    kernels = torch.zeros(1, 2, 3, 3, 6, 6, device="meta" if meta_argument == "kernels" else "cpu")
    expected = r"kernels must be on the same device as x \(cpu\), got meta" if meta_argument == "kernels" else (
        r"kernels must be on the same device as x \(meta\), got cpu"
    )
    with _OpLog() as log, pytest.raises(ValueError, match=expected):
        TORCH_IMPLS[name](x, kernels)
    assert log.ops == [], f"operators ran before the device check: {log.ops}"


@pytest.mark.parametrize("argument", ["x", "kernels"])
@torch_impls
def test_non_tensor_input(name, argument):
    x, kernels = np.zeros((1, 4, 6, 6)), np.zeros((1, 2, 3, 3, 6, 6))
    if argument == "x":
        args = (x, torch.from_numpy(kernels))
    else:
        args = (torch.from_numpy(x), kernels)
    with pytest.raises(TypeError, match=rf"{argument} must be a torch.Tensor, got ndarray"):
        TORCH_IMPLS[name](*args)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.uint8], ids=str)
@torch_impls
def test_integer_dtype_tensors(name, dtype):
    x = torch.zeros(1, 4, 6, 6, dtype=dtype)
    kernels = torch.zeros(1, 2, 3, 3, 6, 6)
    with pytest.raises(TypeError, match=rf"x must have a floating-point dtype, got {dtype}"):
        TORCH_IMPLS[name](x, kernels)
    with pytest.raises(TypeError, match=rf"kernels must have a floating-point dtype, got {dtype}"):
        TORCH_IMPLS[name](kernels.new_zeros(1, 4, 6, 6), kernels.to(dtype))


@pytest.mark.parametrize("argument", ["x", "kernels"])
@pytest.mark.parametrize("bad", [[[0.0]], torch.zeros(1)], ids=["list", "tensor"])
@numpy_impls
def test_numpy_refs_reject_non_arrays(name, argument, bad):
    x, kernels = np.zeros((1, 4, 6, 6)), np.zeros((1, 2, 3, 3, 6, 6))
    args = (bad, kernels) if argument == "x" else (x, bad)
    with pytest.raises(TypeError, match=rf"{argument} must be a NumPy array, got {type(bad).__name__}"):
        NUMPY_IMPLS[name](*args)


@pytest.mark.parametrize("dtype", [np.complex128, object, np.bool_], ids=["complex", "object", "bool"])
@numpy_impls
def test_numpy_refs_reject_non_real_dtypes(name, dtype):
    x = np.zeros((1, 4, 6, 6), dtype=dtype)
    with pytest.raises(TypeError, match=rf"x must hold real numbers .*got dtype {np.dtype(dtype)}"):
        NUMPY_IMPLS[name](x, np.zeros((1, 2, 3, 3, 6, 6)))


# --- the module -----------------------------------------------------------------------------


def _module(**overrides) -> Involution:
    arguments = dict(channels=8, kernel_size=3, stride=1, reduction_ratio=2, group_channels=4)
    arguments.update(overrides)
    return Involution(**arguments)


def test_module_input_not_4d():
    with pytest.raises(ValueError, match=r"x must be 4-D \(B, C, H, W\), got 3-D with shape \(8, 6, 6\)"):
        _module()(torch.zeros(8, 6, 6))


def test_module_input_channels_differ():
    with pytest.raises(ValueError, match=r"x has 6 channels .*built for channels=8"):
        _module()(torch.zeros(1, 6, 5, 5))


def test_module_generate_kernels_checks_input_too():
    with pytest.raises(ValueError, match=r"x has 4 channels .*built for channels=8"):
        _module().generate_kernels(torch.zeros(1, 4, 5, 5))


def test_module_non_tensor_input():
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor, got ndarray"):
        _module()(np.zeros((1, 8, 5, 5)))


def test_module_integer_input():
    with pytest.raises(TypeError, match=r"x must have a floating-point dtype, got torch.int64"):
        _module()(torch.zeros(1, 8, 5, 5, dtype=torch.int64))


def test_module_input_on_another_device():
    with pytest.raises(ValueError, match=r"x is on device meta but this Involution's parameters are on cpu"):
        _module()(torch.zeros(1, 8, 5, 5, device="meta"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=str)
def test_module_input_of_another_dtype_than_the_parameters(dtype):
    with pytest.raises(TypeError, match=rf"x has dtype {dtype} but this Involution's parameters have dtype torch.float32"):
        _module()(torch.zeros(1, 8, 5, 5, dtype=dtype))
    _module().to(dtype)(torch.zeros(1, 8, 5, 5, dtype=dtype))  # converted: fine


def test_module_input_of_another_dtype_is_fine_under_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _module()(torch.zeros(1, 8, 5, 5, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_module_channels_not_divisible_by_group_channels():
    with pytest.raises(ValueError, match=r"channels=12 must be divisible by group_channels=8"):
        _module(channels=12, group_channels=8)


def test_module_reduction_leaves_no_channels():
    with pytest.raises(ValueError, match=r"reduction_ratio=16 leaves .* = 0 hidden channels for channels=8"):
        _module(reduction_ratio=16)


@pytest.mark.parametrize("kernel_size", [2, 4])
def test_module_even_kernel_size(kernel_size):
    with pytest.raises(ValueError, match=rf"kernel_size must be odd .*got {kernel_size}"):
        _module(kernel_size=kernel_size)


@pytest.mark.parametrize("kernel_size", [0, -3])
def test_module_non_positive_kernel_size(kernel_size):
    with pytest.raises(ValueError, match=rf"kernel_size must be a positive integer \(>= 1\), got {kernel_size}"):
        _module(kernel_size=kernel_size)


def test_module_float_kernel_size():
    with pytest.raises(TypeError, match=r"kernel_size must be a positive integer, got 3.0 of type float"):
        _module(kernel_size=3.0)


@pytest.mark.parametrize("argument", ["stride", "dilation", "channels", "reduction_ratio", "group_channels"])
def test_module_non_positive_integer_arguments(argument):
    with pytest.raises(ValueError, match=rf"{argument} must be a positive integer \(>= 1\), got 0"):
        _module(**{argument: 0})


@pytest.mark.parametrize("argument", ["stride", "dilation"])
@pytest.mark.parametrize("value, type_name", [(2.0, "float"), (True, "bool")])
def test_module_non_integer_stride_or_dilation(argument, value, type_name):
    with pytest.raises(TypeError, match=rf"{argument} must be a positive integer, got {value!r} of type {type_name}"):
        _module(**{argument: value})


# --- load_checkpoint: wrong argument types, unreadable files ---------------------------------


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    from involution_edu.rednet import rednet26

    torch.manual_seed(0)
    model = rednet26(num_classes=10)
    path = tmp_path_factory.mktemp("checkpoints") / "rednet26.pt"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize(
    "model, path, argument",
    [("model", "checkpoint.pt", "model"), (None, "checkpoint.pt", "model"), ("net", None, "path"), ("net", 12345, "path"),
     ("net", True, "path")],
)
def test_load_checkpoint_wrong_argument_types(small_checkpoint, model, path, argument):
    from involution_edu.rednet import load_checkpoint

    model = small_checkpoint[0] if model == "net" else model
    with pytest.raises(TypeError, match=rf"^{argument} must be") as info:
        load_checkpoint(model, path)
    shown = {"model": "str" if isinstance(model, str) else "NoneType", "path": type(path).__name__}[argument]
    assert shown in str(info.value)


@pytest.mark.parametrize("fraction", [0.99, 0.5, 0.001])
def test_load_checkpoint_truncated_file_names_the_file(small_checkpoint, tmp_path, fraction):
    from involution_edu.rednet import CheckpointFileError, load_checkpoint

    model, path = small_checkpoint
    data = path.read_bytes()
    truncated = tmp_path / f"truncated_{fraction}.pt"
    truncated.write_bytes(data[: int(len(data) * fraction)])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointFileError) as info:
        load_checkpoint(model, truncated)
    message = str(info.value)
    assert str(truncated) in message and "truncated" in message
    assert f"{truncated.stat().st_size} bytes" in message
    assert "Errno 22" not in message and not isinstance(info.value, OSError)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # model untouched
    load_checkpoint(model, path)  # the complete file still loads


def test_load_checkpoint_empty_file_names_the_file(small_checkpoint, tmp_path):
    from involution_edu.rednet import CheckpointFileError, load_checkpoint

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointFileError, match=rf"{re.escape(str(empty))} is empty \(0 bytes\)"):
        load_checkpoint(small_checkpoint[0], str(empty))


def test_load_checkpoint_foreign_file_names_the_file(small_checkpoint, tmp_path):
    from involution_edu.rednet import CheckpointFileError, load_checkpoint

    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointFileError, match=re.escape(str(text))):
        load_checkpoint(small_checkpoint[0], text)


def test_load_checkpoint_missing_file_keeps_file_not_found(small_checkpoint, tmp_path):
    from involution_edu.rednet import load_checkpoint

    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(small_checkpoint[0], tmp_path / "missing.pt")
