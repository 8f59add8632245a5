"""RedNet-26 with DistributedDataParallel over gloo, 2 CPU processes, SyncBatchNorm, half the batch each:
after every step the parameters, gradients and BN statistics equal one process training on the full batch.

In float64. Why not float32: BatchNorm's backward subtracts from the incoming gradient its mean and
its projection on the normalised input, and with 8 random images most of the gradient cancels there;
what is left for the stem's first convolution is small, so rounding in a different summation order
(two half batches + an all-reduce against one full batch) shows up as about 1e-3 of that gradient in
float32 (measured), which a test cannot tell from a bug. In float64 the same reduction-order noise is
below 1e-9, so the comparison below is tight (relative 1e-7): a wrong SyncBatchNorm formula or a
missing gradient all-reduce fails it by orders of magnitude."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from involution_edu.distributed import SyncBatchNorm, convert_sync_batchnorm
from involution_edu.rednet import rednet26

WORLD = 2
STEPS = 3
BATCH = 8  # 4 per process
SIZE = 32
CLASSES = 5


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _data():
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 3, SIZE, SIZE, generator=generator, dtype=torch.float64), torch.randint(0, CLASSES, (BATCH,), generator=generator))
            for _ in range(STEPS)]


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = rednet26(num_classes=CLASSES).double()
    generator = torch.Generator().manual_seed(2)
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            # every block takes part (bn3 not zero), but its residual branch stays small: a well-conditioned
            # net, where float32 rounding differences do not grow through the 26 layers
            low, high = (0.1, 0.3) if name.endswith("bn3") else (0.5, 1.5)
            module.weight.data = torch.empty_like(module.weight).uniform_(low, high, generator=generator)
    return model


def _state(model: nn.Module) -> dict:
    return {"params": {n: p.detach().clone() for n, p in model.named_parameters()},
            "buffers": {n: b.detach().clone() for n, b in model.named_buffers()}}


def _grads(model: nn.Module) -> dict:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _worker(rank: int, port: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        model = convert_sync_batchnorm(_model())
        ddp = nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
        half = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        snapshots = []
        for images, labels in _data():
            before = _state(model)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(ddp(images[half]), labels[half]).backward()
            grads = _grads(model)
            optimizer.step()
            snapshots.append({"before": before, "grads": grads, "after": _state(model)})
        torch.save(snapshots, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(folder)), nprocs=WORLD, join=True)
    distributed = [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # One process, the full batch, plain BatchNorm. Each step starts from the distributed run's
        # weights and statistics before that step: a 26-layer net trained on 8 images amplifies
        # rounding differences from one step to the next (in float32, measured: 1e-6 after one step,
        # 5 % after two, even between this library's two CPU backends), so comparing independent
        # trajectories would test chaos, not DDP. Within one step the two agree to rounding.
        model = _model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        single = []
        for step, (images, labels) in enumerate(_data()):
            with torch.no_grad():
                for kind, values in (("params", dict(model.named_parameters())), ("buffers", dict(model.named_buffers()))):
                    for name, value in values.items():
                        value.copy_(distributed[0][step]["before"][kind][name])
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images), labels).backward()
            grads = _grads(model)
            optimizer.step()
            single.append({"grads": grads, "after": _state(model)})
    finally:
        torch.set_num_threads(threads)
    return distributed, single


def _close(got: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    # float64, reductions in another order (two half batches, an all-reduce): relative to the tensor's scale
    scale = expected.abs().max().item() if expected.numel() and expected.is_floating_point() else 0.0
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-7 * scale + 1e-12, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("step", range(STEPS))
def test_ddp_matches_one_process_on_the_full_batch(runs, step):
    distributed, single = runs
    expected = single[step]
    for rank in range(WORLD):
        got = distributed[rank][step]
        assert got["grads"].keys() == expected["grads"].keys() and len(expected["grads"]) > 100
        for name, value in expected["grads"].items():
            _close(got["grads"][name], value, f"rank {rank} step {step} gradient {name}")
        for kind in ("params", "buffers"):  # after the SGD step; buffers: SyncBatchNorm's running statistics
            for name, value in expected["after"][kind].items():
                _close(got["after"][kind][name], value, f"rank {rank} step {step} {kind} {name}")


def test_the_processes_agree_exactly(runs):
    distributed, _ = runs
    for name, value in distributed[0][-1]["after"]["params"].items():
        assert torch.equal(distributed[1][-1]["after"]["params"][name], value), name
    for step in range(1, STEPS):  # the distributed run really continued from its own previous step
        for name, value in distributed[0][step - 1]["after"]["params"].items():
            assert torch.equal(distributed[0][step]["before"]["params"][name], value), name


def test_training_moved_the_weights(runs):
    distributed, single = runs
    first, last = distributed[0][0]["before"]["params"], distributed[0][-1]["after"]["params"]
    assert any(not torch.equal(first[n], last[n]) for n in first)
    assert all(g.abs().sum() > 0 for n, g in single[0]["grads"].items() if "conv2.conv2" in n)


def test_convert_keeps_state_dict_and_layers():
    model = _model()
    names = model.state_dict().keys()
    converted = convert_sync_batchnorm(model)
    assert converted.state_dict().keys() == names
    assert not any(type(m) is nn.BatchNorm2d for m in converted.modules())
    assert converted.get_submodule("backbone.stem.2").running_var is model.get_submodule("backbone.stem.2").running_var
    assert sum(isinstance(m, SyncBatchNorm) for m in converted.modules()) == 31 + 9  # conv BNs + involution BNs
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64)
    with torch.no_grad():  # without a process group it is a plain BatchNorm
        torch.testing.assert_close(converted.eval()(x), _model().eval()(x))
