"""The network benchmark: RedNet-26/50 against ResNet-26/50, and where their time goes.

Run it (``python -m involution_edu.bench --models`` is the same command)::

    python -m involution_edu.bench --models                    # batch 8, 224², 1 and 2 threads
    python -m involution_edu.bench --models --quick            # small sizes (a minute or two)
    python -m involution_edu.bench --models --treatments eager folded --json models.json
    python -m involution_edu.bench --profile                   # the per-part breakdown

**What is timed.** For each pair (RedNet-26 / ResNet-26, RedNet-50 / ResNet-50), each thread
count and each *treatment* (below), the same treatment applied to both networks:

* ``eval``: a forward pass in eval mode under ``torch.inference_mode()``;
* ``train``: one SGD step (momentum 0.9): forward in train mode, cross-entropy on random
  labels, backward, ``optimizer.step()``.

Each row prints RedNet's time over ResNet's beside the FLOP ratio (multiply-adds, counted by
:func:`involution_edu.counting.count_flops`), so the gap between the FLOP saving and the
wall-clock saving is visible. Memory, per training step, for both networks:

* ``saved``: bytes of the tensors autograd saves for the backward pass, seen with
  :func:`torch.autograd.graph.saved_tensors_hooks` (each storage once, parameters excluded:
  they exist anyway);
* ``peak``: the peak of extra tensor memory of the whole step
  (:func:`involution_edu.memory.peak_extra_memory`: deterministic, counts storages);
* ``rss``: growth of the resident set over three training steps, each network in a process
  of its own (:func:`rss_in_fresh_process`: peak RSS minus the RSS before the step; in the
  benchmark's own process the allocator keeps what earlier steps freed, so growth there says
  little). It counts what the allocator takes from the system, so read it beside the others.

Memory is measured once per treatment (it does not depend on the thread count), and not under
``torch.compile`` (shown as -): the dispatch-mode count does not see inside a compiled graph.
RedNet is measured as built, that is with ``recompute=True`` (:class:`involution_edu.rednet.RedNet`:
its stem is recomputed in the backward pass and only the inputs of that region count as saved;
``torch.utils.checkpoint`` saves them where the hooks see them). Measured at batch 8, 224²,
one thread: RedNet-50 627 MiB against ResNet-50's 656 MiB (0.96x; 731 MiB, 1.11x, without the
recomputation), for about 3.5 % more time per RedNet training step.

**Treatments.** ``eager``: the modules as built (NCHW). ``channels_last``: model and input in
``torch.channels_last``. ``folded``: :func:`involution_edu.fuse_for_inference` (every BatchNorm
folded: into the conv before it, or, after an involution, into the op's output; eval only). ``folded+channels_last``: both. ``compile``: ``torch.compile`` of the
eager module (default Inductor settings; compile time excluded by warm-up calls).

**Page faults.** Before timing, the benchmark asks glibc to keep freed memory in the process
(:func:`retain_freed_memory`; ``--system-malloc`` leaves the allocator as it is, and the report
says which): otherwise every training step faults its tensors' pages in again, 0.1 to 0.5 s of
system time per step that varies from step to step. Both networks share the process, so both
get the same allocator.

**Why interleaved, in one process.** The benchmark is meant for shared, noisy machines (the
course's own runs used a 2-core machine with other users). Timing all of RedNet, then all of
ResNet, lets a burst of load land on one network only and skews the ratio. Here the two
networks of a pair are built in the same process and timed alternately, A B B A A B ...,
``repeats`` times each, and the medians are compared: load that comes and goes hits both
networks alike, and the median discards the outliers. Each call is also timed in CPU seconds
of this process (``time.process_time``), which other processes' load hardly changes; with one
thread it is a second, steadier estimate of the ratio. Both networks see the same input,
thread count and treatment; their weights are seeded.
"""

from __future__ import annotations

import copy
import math
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .counting import count_flops
from .fuse import fuse_for_inference
from .memory import peak_extra_memory
from .module import Involution
from .rednet import rednet26, rednet50
from .resnet import resnet26, resnet50

__all__ = [
    "MODELS",
    "MODEL_PAIRS",
    "TREATMENTS",
    "ModelSettings",
    "FULL_SETTINGS",
    "QUICK_SETTINGS",
    "saved_tensor_bytes",
    "retain_freed_memory",
    "rss_growth",
    "rss_in_fresh_process",
    "run_model_benchmark",
    "format_model_table",
    "profile_parts",
    "run_profile",
    "format_profile",
]

MODELS: Dict[str, Callable[..., nn.Module]] = {
    "rednet26": rednet26, "resnet26": resnet26, "rednet50": rednet50, "resnet50": resnet50,
}
MODEL_PAIRS: Tuple[Tuple[str, str], ...] = (("rednet26", "resnet26"), ("rednet50", "resnet50"))
TREATMENTS = ("eager", "channels_last", "folded", "folded+channels_last", "compile")
EVAL_ONLY = ("folded", "folded+channels_last")


@dataclass(frozen=True)
class ModelSettings:
    """What one ``--models`` run measures."""

    batch: int = 8
    size: int = 224
    threads: Tuple[int, ...] = (1, 2)
    repeats: int = 5
    num_classes: int = 1000
    pairs: Tuple[Tuple[str, str], ...] = MODEL_PAIRS
    treatments: Tuple[str, ...] = TREATMENTS
    memory: bool = True
    retain_memory: bool = True  # retain_freed_memory() before timing (--system-malloc turns it off)


FULL_SETTINGS = ModelSettings()
QUICK_SETTINGS = ModelSettings(batch=2, size=64, threads=(1,), repeats=3, num_classes=10)


# --- memory ---------------------------------------------------------------------------------


def saved_tensor_bytes(fn: Callable[[], object], exclude: Sequence[torch.Tensor] = ()) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn()`` runs.

    Every tensor packed by :func:`torch.autograd.graph.saved_tensors_hooks` is counted by its
    storage, once (a view and its base count once), except the storages of ``exclude`` (the
    parameters). The result of ``fn`` is dropped before returning.
    """
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    seen: Dict[int, int] = {}

    def pack(tensor: torch.Tensor):
        if tensor.device.type != "meta" and not tensor.is_sparse:
            storage = tensor.untyped_storage()
            pointer = storage.data_ptr()
            if pointer not in excluded:
                seen[pointer] = max(seen.get(pointer, 0), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = fn()
        del result
    return int(sum(seen.values()))


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * _page_size()
    except OSError:  # not Linux
        return 0


def _page_size() -> int:
    import os

    return os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_growth(fn: Callable[[], object], interval: float = 0.001) -> Optional[int]:
    """Peak growth of the resident set size while ``fn()`` runs (bytes; ``None`` off Linux).

    A thread samples ``/proc/self/statm`` every ``interval`` seconds; PyTorch ops release the
    GIL, so it sees the peak to within one interval. Depends on the allocator (memory kept from
    earlier calls is not growth), so read it beside :func:`saved_tensor_bytes`.
    """
    start = _rss_bytes()
    if start == 0:
        return None
    peak = [start]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    peak[0] = max(peak[0], _rss_bytes())
    return peak[0] - start


# --- treatments and steps -------------------------------------------------------------------


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # the largest value glibc accepts on 64-bit systems


def retain_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory in the process (``mallopt``), for this process.

    By default glibc returns large freed blocks to the system, so each training step faults its
    tensors' pages in again: measured on a 2-core machine, 75,000 to 160,000 page faults and 0.1
    to 0.5 s of system time per RedNet-50 or ResNet-50 step at batch 8, 224², varying from step to
    step. That is the allocator's noise, not the networks'. With the trim threshold off and blocks
    up to 32 MiB served from the heap, a step after the first faults almost no page (what
    jemalloc or tcmalloc, which PyTorch's CPU tuning guides recommend, do by themselves). Both
    networks run in the same process, so both get it. Returns whether it took effect (``False``
    off glibc). It cannot be undone: the benchmark's command-line process ends after the run.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trimmed = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    mapped = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    return trimmed and mapped


def _build(name: str, num_classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS[name](num_classes=num_classes)


def _prepare(model: nn.Module, treatment: str, train: bool) -> Tuple[Optional[nn.Module], Optional[nn.Module], bool]:
    """``(module to run, eager module it wraps, channels_last)`` for a treatment; ``None`` if not applicable."""
    if train and treatment in EVAL_ONLY:
        return None, None, False
    channels_last = "channels_last" in treatment
    work = fuse_for_inference(model) if "folded" in treatment else copy.deepcopy(model)
    work.train(train)
    if channels_last:
        work = work.to(memory_format=torch.channels_last)
    runner = torch.compile(work) if treatment.startswith("compile") else work
    return runner, work, channels_last


class _Step:
    """One eval forward or one SGD training step of one network, with everything it needs."""

    def __init__(self, runner: nn.Module, eager: nn.Module, x: torch.Tensor, labels: torch.Tensor, train: bool) -> None:
        self.runner, self.eager, self.x, self.labels, self.train = runner, eager, x, labels, train
        self.optimizer = torch.optim.SGD(eager.parameters(), lr=1e-4, momentum=0.9) if train else None

    def __call__(self) -> None:
        if not self.train:
            with torch.inference_mode():
                self.runner(self.x)
            return
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.runner(self.x), self.labels)
        loss.backward()
        self.optimizer.step()

    def forward_loss(self, module: Optional[nn.Module] = None) -> torch.Tensor:
        return F.cross_entropy((module or self.runner)(self.x), self.labels)


def _interleaved(steps: Sequence[Callable[[], None]], repeats: int, warmup: int) -> List[Dict[str, List[float]]]:
    """Time the steps alternately, A B B A A B ..., ``repeats`` times each, after ``warmup`` calls each."""
    for _ in range(warmup):
        for step in steps:
            step()
    times = [{"wall": [], "cpu": []} for _ in steps]
    for r in range(repeats):
        order = range(len(steps)) if r % 2 == 0 else reversed(range(len(steps)))
        for index in order:
            wall, cpu = time.perf_counter(), time.process_time()
            steps[index]()
            times[index]["cpu"].append(time.process_time() - cpu)
            times[index]["wall"].append(time.perf_counter() - wall)
    return times


_RSS_SCRIPT = r"""
import json, resource, sys
import torch
from involution_edu.netbench import _build, _prepare, _rss_bytes, _Step
name, treatment, batch, size, num_classes, threads = json.loads(sys.argv[1])
torch.set_num_threads(threads)
runner, eager, channels_last = _prepare(_build(name, num_classes), treatment, True)
generator = torch.Generator().manual_seed(0)
x = torch.randn(batch, 3, size, size, generator=generator)
x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
step = _Step(runner, eager, x, torch.randint(0, num_classes, (batch,), generator=generator), True)
before = _rss_bytes()
for _ in range(3):
    step()
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before))
"""


def rss_in_fresh_process(name: str, treatment: str, batch: int, size: int, num_classes: int = 1000,
                         threads: int = 1, timeout: float = 600.0) -> Optional[int]:
    """Growth of the resident set over the first three training steps of ``name`` with
    ``treatment``, in a process of its own (bytes; ``None`` off Linux or if the process fails).

    The process builds the network and its input, reads its RSS, runs three SGD steps (the
    allocator's state settles after the first), and reports its peak RSS (``getrusage``) minus that. A fresh process per network, because in a shared one the
    allocator keeps what an earlier step or the other network freed, and the growth says little.
    """
    import json
    import subprocess
    import sys

    if _rss_bytes() == 0:
        return None
    args = json.dumps([name, treatment, batch, size, num_classes, threads])
    try:
        done = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, args], capture_output=True, text=True,
                              timeout=timeout, check=False)
        return int(json.loads(done.stdout.strip().splitlines()[-1])) if done.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, IndexError, OSError):
        return None


def _memory(step: _Step, name: str, treatment: str, settings: "ModelSettings") -> Dict[str, Optional[int]]:
    """Saved-for-backward bytes and peak extra memory of one training step (eager module, this
    process), and RSS growth over three steps in a fresh process (:func:`rss_in_fresh_process`)."""
    params = list(step.eager.parameters()) + list(step.eager.buffers())
    result: Dict[str, Optional[int]] = {}
    result["saved_bytes"] = saved_tensor_bytes(lambda: step.forward_loss(step.eager), exclude=params)
    eager_step = _Step(step.eager, step.eager, step.x, step.labels, True)
    eager_step.optimizer = step.optimizer
    result["peak_bytes"] = int(peak_extra_memory(eager_step))
    result["rss_bytes"] = rss_in_fresh_process(name, treatment, settings.batch, settings.size, settings.num_classes,
                                               torch.get_num_threads())
    return result


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b and math.isfinite(a) and math.isfinite(b) else None


def run_model_benchmark(settings: ModelSettings = FULL_SETTINGS, progress: bool = True) -> dict:
    """Run the network benchmark (see the module docstring) and return JSON-ready results.

    Keys: ``settings``, ``machine`` (torch version, default threads), ``flops`` (multiply-adds
    per network at the settings' input size), ``rows``: one per (pair, threads, treatment,
    mode) with both networks' medians (``a_*`` RedNet, ``b_*`` ResNet), the ratios
    (``time_ratio``, ``cpu_ratio``, ``flop_ratio``, and for training ``saved_ratio``,
    ``peak_ratio``, ``rss_ratio``).
    """
    from tqdm import tqdm

    for treatment in settings.treatments:
        if treatment not in TREATMENTS:
            raise ValueError(f"treatments must be among {TREATMENTS}, got {treatment!r}")
    for pair in settings.pairs:
        for name in pair:
            if name not in MODELS:
                raise ValueError(f"model names must be among {sorted(MODELS)}, got {name!r}")
    default_threads = torch.get_num_threads()
    retained = retain_freed_memory() if settings.retain_memory else False
    shape = (settings.batch, 3, settings.size, settings.size)
    flops = {name: count_flops(_build(name, settings.num_classes), shape).total for pair in settings.pairs for name in pair}
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=generator)
    labels = torch.randint(0, settings.num_classes, (settings.batch,), generator=generator)
    tasks = [(pair, threads, treatment, mode) for pair in settings.pairs for threads in settings.threads
             for treatment in settings.treatments for mode in ("eval", "train")
             if not (mode == "train" and treatment in EVAL_ONLY)]
    rows = []
    bar = tqdm(tasks, desc="models", disable=not progress, leave=False)
    models: Dict[str, nn.Module] = {}
    try:
        for pair, threads, treatment, mode in bar:
            bar.set_postfix_str(f"{pair[0]}/{pair[1]} {threads}t {treatment} {mode}")
            torch.set_num_threads(threads)
            if set(models) != set(pair):  # tasks come pair by pair: build each pair once
                models = {name: _build(name, settings.num_classes) for name in pair}
            train = mode == "train"
            steps = []
            for name in pair:
                runner, eager, channels_last = _prepare(models[name], treatment, train)
                inputs = x.contiguous(memory_format=torch.channels_last) if channels_last else x
                steps.append(_Step(runner, eager, inputs, labels, train))
            # training: three untimed steps, so that the allocator holds the memory of a whole step
            warmup = (3 if train else 1) + (1 if treatment.startswith("compile") else 0)
            times = _interleaved(steps, settings.repeats, warmup)
            row = dict(pair=list(pair), threads=threads, treatment=treatment, mode=mode,
                       flop_ratio=flops[pair[0]] / flops[pair[1]])
            for key, name, step, t in zip(("a", "b"), pair, steps, times):
                row[f"{key}_s"] = statistics.median(t["wall"])
                row[f"{key}_min_s"] = min(t["wall"])
                row[f"{key}_cpu_s"] = statistics.median(t["cpu"])
                if train and settings.memory and threads == settings.threads[0] and not treatment.startswith("compile"):
                    row.update({f"{key}_{k}": v for k, v in _memory(step, name, treatment, settings).items()})
            row["time_ratio"] = _ratio(row["a_s"], row["b_s"])
            row["cpu_ratio"] = _ratio(row["a_cpu_s"], row["b_cpu_s"])
            for kind in ("saved", "peak", "rss"):
                if f"a_{kind}_bytes" in row:
                    row[f"{kind}_ratio"] = _ratio(row[f"a_{kind}_bytes"], row[f"b_{kind}_bytes"])
            rows.append(row)
    finally:
        torch.set_num_threads(default_threads)
        bar.close()
    return dict(
        settings={**asdict(settings), "pairs": [list(p) for p in settings.pairs]},
        machine=dict(torch=torch.__version__, default_threads=default_threads, retained_freed_memory=retained),
        flops=flops,
        rows=rows,
    )


def _f(value, spec: str, scale: float = 1.0) -> str:
    width = int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()) or 0)
    return "-".rjust(width) if value is None else format(value * scale, spec)


def format_model_table(report: dict) -> str:
    """The network benchmark as a text table: one line per (pair, threads, treatment, mode)."""
    s = report["settings"]
    header = (f"{'pair':<18} {'thr':>3} {'treatment':<21} {'mode':<5} {'RedNet ms':>10} {'ResNet ms':>10} "
              f"{'time x':>7} {'cpu x':>6} {'FLOP x':>6} {'saved MiB':>16} {'saved x':>7} {'peak x':>6} {'rss x':>6}")
    lines = [f"batch {s['batch']}, {s['size']}x{s['size']}, {s['repeats']} interleaved repeats (medians), "
             f"{s['num_classes']} classes, torch {report['machine']['torch']}, freed memory "
             f"{'kept in the process' if report['machine'].get('retained_freed_memory') else 'returned by the allocator'}",
             header, "-" * len(header)]
    for r in report["rows"]:
        saved = (f"{r['a_saved_bytes'] / 2**20:.0f}/{r['b_saved_bytes'] / 2**20:.0f}"
                 if r.get("a_saved_bytes") is not None else "-")
        lines.append(
            f"{r['pair'][0] + '/' + r['pair'][1]:<18} {r['threads']:>3} {r['treatment']:<21} {r['mode']:<5} "
            f"{_f(r['a_s'], '10.1f', 1e3)} {_f(r['b_s'], '10.1f', 1e3)} {_f(r['time_ratio'], '7.2f')} "
            f"{_f(r['cpu_ratio'], '6.2f')} {_f(r['flop_ratio'], '6.2f')} {saved:>16} {_f(r.get('saved_ratio'), '7.2f')} "
            f"{_f(r.get('peak_ratio'), '6.2f')} {_f(r.get('rss_ratio'), '6.2f')}"
        )
    lines += ["", "time x: RedNet / ResNet wall-clock (medians of interleaved runs); cpu x: the same in process CPU "
              "seconds; FLOP x: multiply-adds ratio; saved: tensors saved for backward (RedNet/ResNet, parameters "
              "excluded); peak: extra tensor memory of a step; rss: resident-set growth over three steps, each network in a fresh process."]
    return "\n".join(lines)


# --- profile: where the time goes ------------------------------------------------------------

PART_PREFIX = "part:"


def _part_modules(model: nn.Module) -> List[Tuple[nn.Module, str]]:
    """``(module, label)`` for every module the profile names: the backbone's stem pieces, the
    stages, the head, each spatial layer and the involution's kernel-generation pieces."""
    backbone = model.backbone if hasattr(model, "backbone") else model
    parts: List[Tuple[nn.Module, str]] = []
    stem_names = ["stem", "maxpool"] if hasattr(backbone, "stem") else ["conv1", "bn1", "relu", "maxpool"]
    parts += [(getattr(backbone, n), "stem") for n in stem_names]
    parts += [(getattr(backbone, f"layer{i}"), f"layer{i}") for i in range(1, 5)]
    if hasattr(model, "head"):
        parts.append((model.head, "head"))
    for module in model.modules():
        if isinstance(module, Involution):
            parts += [(module, "involution"), (module.conv1, "phi reduce"), (module.conv2, "phi span")]
    for stage in range(1, 5):
        for block in getattr(backbone, f"layer{stage}"):
            if isinstance(block.conv2, nn.Conv2d):
                parts.append((block.conv2, "conv3x3"))
    return parts


def _install(model: nn.Module) -> List[object]:
    handles = []
    for module, label in _part_modules(model):
        def pre(mod, args, label=label):
            scopes = mod.__dict__.setdefault("_profile_scopes", [])
            scope = torch.autograd.profiler.record_function(PART_PREFIX + label)
            scope.__enter__()
            scopes.append(scope)

        def post(mod, args, output):
            mod.__dict__["_profile_scopes"].pop().__exit__(None, None, None)

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    return handles


def _labels(event) -> List[str]:
    labels, parent = [], event.cpu_parent
    while parent is not None:
        if parent.name.startswith(PART_PREFIX):
            labels.append(parent.name[len(PART_PREFIX):])
        parent = parent.cpu_parent
    return labels[::-1]  # outermost first


def _classify(labels: Sequence[str], op_name: str) -> Tuple[str, str]:
    """``(stage, piece)`` of an op from the part scopes around it."""
    stage = labels[0] if labels else "other"
    inner = labels[-1] if labels else ""
    if inner == "involution":
        if "fused" in op_name:  # the fused op: span conv2 and aggregation in one
            piece = "phi span + aggregation (fused)"
        else:
            piece = "aggregation" if op_name.startswith("involution_edu::") else "phi pool"
    elif inner in ("phi reduce", "phi span", "conv3x3"):
        piece = inner
    else:
        piece = "shared (1x1 convs, BN, ReLU, add, pool)"
    return stage, piece


def profile_parts(model: nn.Module, x: torch.Tensor, train: bool, labels: Optional[torch.Tensor] = None) -> Dict[str, Dict[str, float]]:
    """Seconds per ``stage -> piece`` of one eval forward (``train=False``) or one training
    step's forward and backward (``train=True``: keys ``"forward"``/``"backward"`` prefixed).

    Uses :mod:`torch.profiler` with a ``record_function`` scope around each part (forward
    hooks); an op's backward is attributed to the part of the forward op that recorded it
    (autograd's sequence numbers). Stages: ``stem`` (RedNet: ``stem`` + max pool; ResNet:
    ``conv1``/``bn1``/``relu`` + max pool), ``layer1``...``layer4``, ``head``; pieces inside the
    spatial layers: ``phi pool`` (stride average pooling), ``phi reduce`` (conv1 + BN + ReLU),
    ``phi span`` (conv2), ``aggregation`` (the involution op), ``phi span + aggregation (fused)``
    (the fused op of :mod:`involution_edu.fused`, which never stores the kernels), ``conv3x3`` (ResNet);
    everything else is ``shared``.
    """
    from torch.profiler import ProfilerActivity, profile

    handles = _install(model)
    try:
        model.train(train)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            if train:
                loss = F.cross_entropy(model(x), labels)
                loss.backward()
            else:
                with torch.inference_mode():
                    model(x)
    finally:
        for handle in handles:
            handle.remove()
    events = prof.events()
    result: Dict[str, Dict[str, float]] = {}
    by_sequence: Dict[int, Tuple[str, str]] = {}

    def add(phase: str, key: Tuple[str, str], seconds: float) -> None:
        bucket = result.setdefault(f"{phase} {key[0]}", {})
        bucket[key[1]] = bucket.get(key[1], 0.0) + seconds

    for event in events:
        if event.name.startswith(PART_PREFIX) or event.name.startswith("autograd::engine"):
            continue
        parent = event.cpu_parent
        if parent is None or not parent.name.startswith(PART_PREFIX):
            if event.sequence_nr >= 0 and event.sequence_nr not in by_sequence and _labels(event):
                by_sequence[event.sequence_nr] = _classify(_labels(event), event.name)
            continue  # nested inside another op: counted with it
        key = _classify(_labels(event), event.name)
        add("forward", key, event.cpu_time_total / 1e6)
        if event.sequence_nr >= 0:
            by_sequence.setdefault(event.sequence_nr, key)
    for event in events:
        if event.name.startswith("autograd::engine::evaluate_function"):
            key = by_sequence.get(event.sequence_nr, ("other", "parameter gradients and unattributed"))
            add("backward", key, event.cpu_time_total / 1e6)
    return result


def run_profile(pair: Tuple[str, str] = ("rednet50", "resnet50"), batch: int = 8, size: int = 224, threads: int = 1,
                repeats: int = 3, num_classes: int = 1000, channels_last: bool = False,
                retain_memory: bool = True) -> dict:
    """Profile both networks of ``pair`` (interleaved, medians over ``repeats``) in eval and training
    (after :func:`retain_freed_memory` unless ``retain_memory=False``)."""
    if retain_memory:
        retain_freed_memory()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 3, size, size, generator=generator)
        labels = torch.randint(0, num_classes, (batch,), generator=generator)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        models = {}
        for name in pair:
            model = _build(name, num_classes)
            models[name] = model.to(memory_format=torch.channels_last) if channels_last else model
        report: Dict[str, dict] = {}
        for mode in ("eval", "train"):
            runs = {name: [] for name in pair}
            for _ in range(repeats + 1):  # the first run warms up
                for name in pair:
                    runs[name].append(profile_parts(models[name], x, mode == "train", labels))
            for name in pair:
                merged: Dict[str, Dict[str, float]] = {}
                for run in runs[name][1:]:
                    for stage, pieces in run.items():
                        for piece, seconds in pieces.items():
                            merged.setdefault(stage, {}).setdefault(piece, []).append(seconds)
                report.setdefault(name, {})[mode] = {
                    stage: {piece: statistics.median(v) for piece, v in pieces.items()} for stage, pieces in merged.items()
                }
    finally:
        torch.set_num_threads(previous)
    return dict(pair=list(pair), batch=batch, size=size, threads=threads, repeats=repeats,
                channels_last=channels_last, profile=report)


def format_profile(report: dict) -> str:
    """The profile as two tables (eval, train): milliseconds per stage and piece for both networks."""
    a, b = report["pair"]
    lines = [f"profile: batch {report['batch']}, {report['size']}x{report['size']}, {report['threads']} thread(s), "
             f"medians of {report['repeats']}, channels_last={report['channels_last']}"]
    for mode in ("eval", "train"):
        pa, pb = report["profile"][a][mode], report["profile"][b][mode]
        lines += ["", f"{mode}: ms", f"{'phase stage':<18} {'piece':<42} {a:>10} {b:>10}"]
        stages = sorted(set(pa) | set(pb), key=_stage_order)
        totals = {a: 0.0, b: 0.0}
        for stage in stages:
            pieces = sorted(set(pa.get(stage, {})) | set(pb.get(stage, {})))
            for piece in pieces:
                va, vb = pa.get(stage, {}).get(piece), pb.get(stage, {}).get(piece)
                totals[a] += va or 0.0
                totals[b] += vb or 0.0
                lines.append(f"{stage:<18} {piece:<42} {_f(va, '10.1f', 1e3)} {_f(vb, '10.1f', 1e3)}")
            sa = sum(pa.get(stage, {}).values())
            sb = sum(pb.get(stage, {}).values())
            lines.append(f"{stage:<18} {'= stage total':<42} {sa * 1e3:10.1f} {sb * 1e3:10.1f}")
        lines.append(f"{'total':<18} {'':<42} {totals[a] * 1e3:10.1f} {totals[b] * 1e3:10.1f}  "
                     f"(ratio {_f(_ratio(totals[a], totals[b]), '.2f')})")
    return "\n".join(lines)


def _stage_order(stage: str) -> Tuple[int, int]:
    phase, _, name = stage.partition(" ")
    order = ["stem", "layer1", "layer2", "layer3", "layer4", "head", "other"]
    return (0 if phase == "forward" else 1, order.index(name) if name in order else len(order))
