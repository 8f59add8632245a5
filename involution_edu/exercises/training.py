"""Checkers and questions for notebook 07 (training on real data).

Exercises checked here::

    confusion_matrix(predictions, labels, num_classes) -> (num_classes, num_classes) counts
        predictions, labels: (N,) int64; row = true class, column = predicted class;
        the caller's tensors are left unchanged
    clip_by_global_norm(grads, max_norm) -> list of tensors, same shapes as grads
        every gradient scaled by one factor, min(1, max_norm / (total_norm + 1e-6)),
        total_norm = L2 norm of all gradients together (in place or on copies)
    predict(model, x) -> (N,) int64 predicted classes
        x: (N, C, H, W); batch norm uses its running statistics whatever the batch holds, and
        the model and the session are left exactly as they were: the mode of every submodule,
        every parameter, buffer, requires_grad flag and dtype, and grad mode

Each checker runs fixed, named cases (their messages teach), then a few hidden cases drawn at
random on every call, so a table of memorised answers fails. The expected answers are computed
here, independently of :mod:`involution_edu.training`, whose functions the exercises forbid.

Questions (``QUESTIONS``): ``channel_mixing``, ``eval_bug``, ``momentum_step``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..training import clip_gradients as _clip_gradients_library
from ..training import confusion_matrix as _confusion_matrix_library
from ..training import eval_mode as _eval_mode_library
from ..training import evaluate as _evaluate_library
from .framework import Case, Question, Rule, run_cases


__all__ = ["check_confusion_matrix", "check_clip_by_global_norm", "check_predict", "QUESTIONS"]

#: Hidden cases drawn at random after the named ones, on every call.
RANDOM_CASES = 3


def _case(name: str, args: tuple, expected: Any, why: str, *, rtol: float, atol: float,
          mistakes: list, check_inputs: bool = True) -> Case:
    return Case(name, args, expected, why, rtol=rtol, atol=atol, mistakes=mistakes, check_inputs=check_inputs)


# ----------------------------------------------------------------------------- side effects
def _module_label(name: str) -> str:
    if not name:
        return "the model"
    return "model" + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in name.split("."))


def _model_state(model: nn.Module) -> Dict[str, Any]:
    return {
        "modes": [(name, type(m).__name__, m.training) for name, m in model.named_modules()],
        "flags": [(name, p.requires_grad) for name, p in model.named_parameters()],
        "dtypes": [(name, p.dtype) for name, p in model.named_parameters()],
        "values": {name: v.detach().clone() for name, v in model.state_dict().items()},
    }


def _model_change(model: nn.Module, before: Dict[str, Any]) -> Optional[str]:
    """What ``model`` lost since ``before`` was taken, in words, or None."""
    after = _model_state(model)
    changed = [(name, kind, was) for (name, kind, was), (_, _, now) in zip(before["modes"], after["modes"]) if was != now]
    changed.sort(key=lambda item: "Norm" not in item[1])  # name a batch norm first: it is the layer that matters
    if changed:
        name, kind, was = changed[0]
        modes = ("training", "eval") if was else ("eval", "training")
        if not name:
            hint = " the next training step would run with frozen batch-norm statistics; remember the mode and restore it"
        elif not was:
            hint = (" it was frozen on purpose (fine-tuning) and your function unfroze it: `model.train(flag)` sets"
                    " every submodule; remember and restore each one's own mode")
        else:
            hint = (" setting `model.training` back restores only the top-level flag; every submodule has its own,"
                    " and this one would now ignore its batch statistics in training")
        return (f"{_module_label(name)} ({kind}) was in {modes[0]} mode before your function ran and is in "
                f"{modes[1]} mode after it;{hint}")
    for (name, was), (_, now) in zip(before["flags"], after["flags"]):
        if was != now:
            return (f"parameter {name} had requires_grad={was} before your function ran and {now} after it: "
                    f"{'the model is left frozen and would no longer train' if was else 'a frozen parameter was unfrozen'};"
                    " to predict without gradients, switch recording off around the forward pass instead of"
                    " changing the parameters' flags")
    for (name, was), (_, now) in zip(before["dtypes"], after["dtypes"]):
        if was != now:
            return (f"parameter {name} was {was} before your function ran and is {now} after it: the model was cast; "
                    "leave it in its dtype (cast a copy of the input if you must, never the caller's model)")
    for name, value in before["values"].items():
        now = after["values"].get(name)
        if now is None or now.shape != value.shape or not torch.equal(now, value):
            what = "running statistics" if "running" in name or "num_batches" in name else "weights"
            return (f"your function changed the model's {what} ({name}): a forward pass in training mode updates "
                    "batch norm's running statistics; predictions must come from evaluation mode only")
    return None


def _snapshot(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, nn.Module):
        return _model_state(value)
    return None


def _input_change(name: str, value: Any, snap: Any) -> Optional[str]:
    if isinstance(value, torch.Tensor) and snap is not None:
        if value.shape != snap.shape or value.dtype != snap.dtype or not torch.equal(value.detach(), snap):
            return (f"your function changed its input `{name}`: the caller's tensor no longer holds what it held. "
                    f"Compute into a new tensor (`{name} * k` makes one; `{name} *= k` or `{name}.mul_(k)` overwrites "
                    "the caller's data)")
    if isinstance(value, nn.Module) and snap is not None:
        return _model_change(value, snap)
    return None


def _judge(
    title: str,
    candidate: Callable[..., object],
    cases: Sequence[Case],
    random_cases: Callable[[np.random.Generator], List[Case]],
    *,
    what: str,
    forbid: Sequence[Any],
    families: Sequence[str],
    arg_names: Sequence[str],
    check_inputs: bool = True,
    own_messages: bool = False,
) -> object:
    """Run the fixed cases, then the random ones, under the exercise's rule, and look for side
    effects on each case's inputs (when ``check_inputs``), on grad mode and on the default dtype.

    With the run-time framework, its own side-effect check names what changed, unless
    ``own_messages``: then this module's messages, which explain the exercise's trap (a frozen
    batch norm, a frozen layer), are used instead. The verdict line is printed only once the
    whole check is decided, and the session is repaired (grad mode, default dtype) whatever the
    learner's function did to it."""
    rule = Rule(what=what, forbid=list(forbid), families=list(families))
    all_cases = list(cases)
    framework_checks = check_inputs and not own_messages
    snapshots = [[_snapshot(arg) for arg in case.args] for case in all_cases] if check_inputs else []
    grad_mode, default_dtype = torch.is_grad_enabled(), torch.get_default_dtype()

    def session_and_inputs() -> Optional[str]:
        if torch.is_grad_enabled() != grad_mode:
            return (f"your function switched autograd {'off' if grad_mode else 'on'} for everything that runs after "
                    f"it (torch.set_grad_enabled({not grad_mode})): the notebook's next training would silently "
                    "compute no gradients. Switch recording off only around your own forward pass (a `with` block)")
        if torch.get_default_dtype() != default_dtype:
            return "your function changed torch's default dtype; leave the session as you found it"
        for case, snaps in zip(all_cases, snapshots):
            for name, arg, snap in zip(arg_names, case.args, snaps):
                change = _input_change(name, arg, snap)
                if change:
                    return f"case '{case.name}': {change}"
        return None

    try:
        return run_cases(title, candidate, all_cases, rule=rule, random_cases=random_cases,
                         side_effects=framework_checks, after=session_and_inputs)
    finally:
        torch.set_grad_enabled(grad_mode)  # repair the session before anything else runs
        torch.set_default_dtype(default_dtype)


# ----------------------------------------------------------------------------- confusion matrix
def _counts(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for true, predicted in zip(labels.tolist(), predictions.tolist()):
        matrix[true, predicted] += 1
    return matrix


def _set_not_count(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    matrix[labels, predictions] = 1
    return matrix


def _confusion_case(name: str, why: str, predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Case:
    expected = _counts(predictions, labels, num_classes)
    mistakes = [
        (expected.T.contiguous(), "rows and columns swapped: row = TRUE class, column = PREDICTED class"),
        (_set_not_count(predictions, labels, num_classes),
         "a cell holds 1 however many samples fall into it: an assignment with repeated indices does not add up; "
         "count them"),
        (expected.double() / expected.sum(dim=1, keepdim=True).clamp(min=1),
         "each row was divided by its total: the exercise asks for counts, not rates"),
    ]
    return _case(name, (predictions, labels, num_classes), expected, why, rtol=0.0, atol=0.0, mistakes=mistakes)


def _confusion_random(rng: np.random.Generator) -> List[Case]:
    cases = []
    for _ in range(RANDOM_CASES):
        num_classes = int(rng.integers(2, 10))
        size = int(rng.integers(1, 90))
        present = int(rng.integers(1, num_classes + 1))  # the last classes may never occur
        labels = torch.from_numpy(rng.integers(0, present, size)).long()
        guesses = torch.from_numpy(rng.integers(0, num_classes, size)).long()
        predictions = torch.where(torch.from_numpy(rng.random(size) < 0.6), labels, guesses)
        cases.append(_confusion_case(
            f"{size} samples, {num_classes} classes",
            "every sample counted once, in row = its true class and column = its prediction; the matrix is "
            "num_classes x num_classes", predictions, labels, num_classes))
    return cases


def check_confusion_matrix(confusion_matrix: Callable[..., object]) -> object:
    """Check ``confusion_matrix(predictions, labels, num_classes)``: ``(num_classes, num_classes)``
    counts with ``matrix[true, predicted]``, the caller's tensors unchanged."""
    generator = torch.Generator().manual_seed(11)
    random_labels = torch.randint(0, 6, (60,), generator=generator)
    random_predictions = torch.where(
        torch.rand(60, generator=generator) < 0.7, random_labels, torch.randint(0, 6, (60,), generator=generator)
    )
    # (name, why, predictions, labels, num_classes)
    table = [
        ("all correct, 3 classes", "correct answers land on the diagonal", [0, 1, 2], [0, 1, 2], 3),
        ("one mistake: true 0 predicted as 2", "rows are the TRUE class, columns the PREDICTED class: the 1 goes "
         "to [0, 2], not [2, 0]", [2, 1, 2], [0, 1, 2], 3),
        ("two samples in one cell", "count every sample: two of class 1 predicted as 0 give a 2", [0, 0, 1], [1, 1, 1], 2),
        ("class 3 never occurs", "the matrix is num_classes x num_classes even if a class is missing from the data",
         [0, 1, 1], [0, 1, 2], 4),
        ("60 random samples, 6 classes", "every cell counted; the total is N", random_predictions.tolist(),
         random_labels.tolist(), 6),
    ]
    cases = [_confusion_case(name, why, torch.tensor(p, dtype=torch.int64), torch.tensor(t, dtype=torch.int64), k)
             for name, why, p, t, k in table]
    return _judge(
        "confusion_matrix", confusion_matrix, cases, _confusion_random, what="the counting",
        # scikit-learn is imported already wherever the digits were loaded (notebook 07), so naming it is free there
        forbid=[_confusion_matrix_library, _counts, "involution_edu.training.confusion_matrix", ".confusion_matrix",
                "sklearn.metrics.confusion_matrix"],
        families=[], arg_names=("predictions", "labels", "num_classes"),
    )


# ----------------------------------------------------------------------------- clipping
def _clipped(grads: Sequence[torch.Tensor], max_norm: float) -> Tuple[torch.Tensor, ...]:
    """The expected answer, in float64: one factor min(1, max_norm / (norm + 1e-6)) for all tensors."""
    total = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    factor = min(1.0, max_norm / (total + 1e-6))
    return tuple(g * factor for g in grads)


def _clip_mistakes(grads: Sequence[torch.Tensor], max_norm: float) -> list:
    """The answers of the usual wrong clippings of ``grads`` (computed, so they match exactly)."""
    norms = [float(torch.linalg.vector_norm(g)) for g in grads]
    total = sum(n * n for n in norms) ** 0.5
    out = [
        (tuple(g * min(1.0, max_norm / (n + 1e-6)) for g, n in zip(grads, norms)),
         "each tensor was clipped on its own: use ONE norm over all tensors and one factor for all, "
         "or the update changes direction"),
        (tuple(g.clamp(-max_norm, max_norm) for g in grads),
         "values were clamped one by one (clipping by value): scale the whole gradient by its norm instead"),
        (tuple(g * (max_norm / (sum(norms) + 1e-6) if sum(norms) > max_norm else 1.0) for g in grads),
         "the norms of the tensors were added up: the global norm is the square root of the sum of SQUARES"),
        (tuple(g * min(1.0, 1.0 / (total + 1e-6)) for g in grads),
         "the threshold was 1, not max_norm: the limit is the max_norm argument"),
    ]
    if total > 0:  # the capped form first: where the two coincide (1 < norm < max_norm) it is the likelier slip
        out.append((tuple(g * min(max_norm, max_norm / total) for g in grads),
                    "the factor was capped at max_norm instead of at 1: with max_norm > 1 a gradient within the "
                    "limit got longer"))
        out.append((tuple(g * (max_norm / total) for g in grads),
                    "gradients within the limit were scaled UP to max_norm: a gradient already within the limit "
                    "stays as it is"))
    return out


def _clip_case(name: str, why: str, grads: List[torch.Tensor], max_norm: float) -> Case:
    return _case(name, ([g.clone() for g in grads], max_norm), _clipped(grads, max_norm), why, rtol=1e-5, atol=1e-9,
                 mistakes=_clip_mistakes(grads, max_norm), check_inputs=False)


def _with_norm(grads: List[torch.Tensor], norm: float) -> List[torch.Tensor]:
    total = float(torch.sqrt(sum((g**2).sum() for g in grads)))
    return [g * (norm / total) for g in grads]


def _clip_random(rng: np.random.Generator) -> List[Case]:
    cases = []
    for number in range(RANDOM_CASES):
        count = int(rng.integers(1, 5))
        grads = [torch.from_numpy(rng.standard_normal(tuple(int(s) for s in rng.integers(1, 6, rng.integers(1, 4)))))
                 for _ in range(count)]
        max_norm = float(rng.uniform(0.3, 6.0))
        # one case above the limit, one within it, one within it and above 1 where that exists
        ratio = (float(rng.uniform(1.3, 8.0)) if number == 0 else float(rng.uniform(0.2, 0.9)))
        if number == 2 and max_norm > 1.3:
            norm = float(rng.uniform(1.1, max_norm * 0.95))
        else:
            norm = max_norm * ratio
        cases.append(_clip_case(f"{count} tensor(s), max_norm {max_norm:.3f}",
                                "one factor for all tensors: min(1, max_norm / global norm)",
                                _with_norm(grads, norm), max_norm))
    return cases


def check_clip_by_global_norm(clip_by_global_norm: Callable[..., object]) -> object:
    """Check ``clip_by_global_norm(grads, max_norm)``.

    The learner's function gets copies of the gradients and must return the clipped ones, as a
    list or a tuple (changing them in place and returning them is fine). Calling
    ``clip_grad_norm_`` (or the library's ``clip_gradients``) is refused.
    """
    generator = torch.Generator().manual_seed(3)

    def draw(shapes: Sequence[tuple], norm: float) -> List[torch.Tensor]:
        return _with_norm([torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes], norm)

    cases = [
        _clip_case("one tensor, norm 5 > 1", "scale by max_norm / total_norm so the norm becomes max_norm",
                   [torch.tensor([3.0, 4.0], dtype=torch.float64)], 1.0),
        _clip_case("small gradients, norm < max_norm", "below the threshold nothing changes",
                   draw([(3,), (2, 2)], 0.02), 1.0),
        _clip_case("three tensors, large", "ONE norm over all tensors together, one factor for all: the direction "
                   "is kept", draw([(4, 3), (4,), (2, 3, 3)], 40.0), 2.0),
        _clip_case("tensors of very different size", "per-tensor clipping would change the direction; global "
                   "clipping does not", draw([(50,), (1,)], 7.0), 0.5),
        _clip_case("max_norm 3.5, two tensors", "max_norm is a parameter, not always 1", draw([(5,), (3, 2)], 9.0), 3.5),
        _clip_case("norm 2 with max_norm 3", "a norm between 1 and max_norm is within the limit: nothing changes",
                   draw([(4,), (2, 2)], 2.0), 3.0),
        _clip_case("norm 0.8 with max_norm 0.5", "a norm below 1 can still be above max_norm: clip it",
                   draw([(3, 2)], 0.8), 0.5),
        _clip_case("all zeros", "a zero gradient stays zero (no 0 / 0 = NaN)", [torch.zeros(3, 3, dtype=torch.float64)],
                   1.0),
    ]
    return _judge(
        "clip_by_global_norm", clip_by_global_norm, cases, _clip_random, what="the clipping",
        forbid=[torch.nn.utils.clip_grad_norm_, torch.nn.utils.clip_grad_norm, _clip_gradients_library, _clipped,
                "torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad_norm", ".clip_grad_norm_",
                ".clip_grad_norm", ".clip_grads_with_norm_", ".get_total_norm", ".clip_gradients"],
        families=["grad_clip", "autograd"], arg_names=("grads", "max_norm"), check_inputs=False,
    )


# ----------------------------------------------------------------------------- predict (diagnosis)
def _probe_model(seed: int) -> nn.Module:
    """A small conv net with two batch norms whose running statistics differ from any one batch's."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 8 * 8, 5),
    )
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return model.double()


def _set_modes(model: nn.Module, setting: str) -> None:
    """"train", "eval", "frozen bn" (fine-tuning: the first BN kept in eval, the rest training),
    or "frozen conv" (training, the first conv's parameters with requires_grad False)."""
    model.train(setting != "eval")
    if setting == "frozen bn":
        model[1].eval()
    if setting == "frozen conv":
        model[0].requires_grad_(False)


def _predict_case(name: str, why: str, seed: int, x: torch.Tensor, setting: str) -> Case:
    model = _probe_model(seed)
    model.eval()
    with torch.no_grad():
        expected = model(x).argmax(dim=1)
        model.train()
        in_train_mode = model(x).argmax(dim=1)
    model.load_state_dict(_probe_model(seed).state_dict())  # undo the running-statistics update
    mistakes = [(in_train_mode, "batch norm ran in TRAINING mode: it normalised with this batch's own mean and "
                                "variance instead of the running statistics gathered in training")]
    _set_modes(model, setting)
    return _case(name, (model, x), expected, why, rtol=0.0, atol=0.0, mistakes=mistakes)


def _predict_random(rng: np.random.Generator) -> List[Case]:
    cases = []
    settings = ["train", "eval", "frozen bn", "frozen conv"]
    for _ in range(RANDOM_CASES):
        seed, batch = int(rng.integers(10, 10_000)), int(rng.integers(2, 17))
        setting = settings[int(rng.integers(0, len(settings)))]
        x = torch.from_numpy(rng.random((batch, 1, 8, 8)))
        cases.append(_predict_case(f"batch of {batch}, model set to '{setting}'",
                                   "predictions from the running statistics; the model left as it was",
                                   seed, x, setting))
    return cases


def check_predict(predict: Callable[..., object]) -> object:
    """Check ``predict(model, x)``: predicted classes ``(N,)`` with batch norm in eval mode, and
    the model (every submodule's mode, parameters, buffers, requires_grad flags, dtype) and grad
    mode the same after the call as before."""
    generator = torch.Generator().manual_seed(5)

    def images(batch: int) -> torch.Tensor:
        return torch.rand(batch, 1, 8, 8, generator=generator, dtype=torch.float64)

    look_alikes = images(1) + 0.05 * images(7)
    cases = [
        _predict_case("batch of 12, model in training mode", "batch norm must use its running statistics, not the "
                      "batch's", 0, images(12), "train"),
        _predict_case("batch of 1", "one image: in training mode its own statistics would be all batch norm sees",
                      1, images(1), "train"),
        _predict_case("batch of 7 similar images", "a batch of look-alikes: its own statistics wipe out what tells "
                      "them apart", 2, look_alikes, "train"),
        _predict_case("model already in eval mode", "the answer must not depend on the mode the model was in, and "
                      "the mode must be the same afterwards", 3, images(9), "eval"),
        _predict_case("fine-tuning: model[1] frozen in eval mode, the rest training", "every submodule keeps its "
                      "own mode", 4, images(10), "frozen bn"),
        _predict_case("fine-tuning: model[0]'s parameters frozen (requires_grad False)", "every requires_grad flag "
                      "stays as it was", 6, images(6), "frozen conv"),
    ]
    return _judge(
        "predict", predict, cases, _predict_random, what="the evaluation",
        forbid=[_evaluate_library, _eval_mode_library, "involution_edu.training.evaluate",
                "involution_edu.training.eval_mode"], families=[],
        arg_names=("model", "x"), own_messages=True,
    )


# ----------------------------------------------------------------------------- questions
QUESTIONS: Dict[str, Question] = {
    "channel_mixing": Question(
        prompt=("An involution layer (C = 32 channels, G = 4 groups, K = 3, stride 1, in eval mode). You change "
                "input channel 0 at pixel (4, 4) only. Which outputs can change?"),
        choices={
            "a": "only output channel 0, at the 9 positions whose 3x3 window contains (4, 4)",
            "b": "output channels 0-7 (channel 0's group), at those 9 positions",
            "c": "every output channel at (4, 4), and output channel 0 at the other 8 positions of the window",
            "d": "every output channel at all 9 positions",
        },
        answer="c",
        explanation=("The kernels at (4, 4) are generated from all 32 channels at (4, 4), so every group's kernel "
                     "there changes and with it every output channel at (4, 4). At a neighbour (i, j) the kernel comes "
                     "from the unchanged pixel (i, j), and only channel 0 reads the changed value. So involution does "
                     "mix channels, through its kernel generator; it only keeps their number."),
        wrong={
            "a": "this forgets the kernel generator: the kernels at (4, 4) are computed from all channels at (4, 4).",
            "b": ("the channels of a group share a kernel, but one hidden vector generates the kernels of ALL groups "
                  "(W1 maps it to K*K*G values), so the other groups change too."),
            "d": ("at a neighbour (i, j) the kernel is generated from pixel (i, j), which did not change; there only "
                  "channel 0 reads the changed value."),
        },
    ),
    "momentum_step": Question(
        prompt=("Every step the gradient is the same vector of norm 5. It is clipped to max norm 1; SGD with learning "
                "rate 0.1 and (Nesterov) momentum 0.9, no weight decay. After many steps, how long is one step "
                "(the norm of the change of the weights)?"),
        answer=1.0,
        explanation=("Momentum adds up the clipped gradients of past steps: the buffer tends to g / (1 - 0.9) = 10 g, "
                     "so a step is 0.1 x 10 x 1 = 1.0, ten times lr x max norm. Clipping bounds the gradient, not the "
                     "step; weight decay, added after clipping, lengthens it further."),
        rtol=0.02,
        mistakes=[
            (0.1, "that is learning rate x max norm, the step without momentum; momentum adds up past clipped gradients"),
            (0.5, "that is learning rate x the unclipped norm, without momentum; clip first, then add up the momentum"),
            (5.0, "that uses the unclipped gradient (norm 5); clipping makes it norm 1 before momentum adds it up"),
            (1.9, "with Nesterov the update is g + 0.9 * buffer, but the buffer tends to 10 g, so the step is 10 g, not 19 g"),
        ],
    ),
    "eval_bug": Question(
        prompt=("A colleague evaluates a trained net batch by batch on the test images SORTED BY CLASS, and gets far "
                "less than `evaluate` reports for the same weights. What is the most likely cause?"),
        choices={
            "a": "batch norm is still in training mode, so each batch (all one digit) is normalised by its own statistics",
            "b": "the forward pass records gradients, which changes the outputs",
            "c": "the model remembers the order of the training batches and expects shuffled input",
            "d": "the last batch is smaller than the others",
        },
        answer="a",
        explanation=("In training mode batch norm subtracts the batch's own mean and divides by its own spread. In a "
                     "batch of one digit that removes exactly what the digits have in common, the evidence for the "
                     "class. In evaluation mode it uses the running statistics gathered during training instead, the "
                     "same for every batch."),
        wrong={
            "b": "recording gradients costs memory and time but never changes the forward values.",
            "c": "a trained net is a fixed function of its input; it has no memory of the batch order.",
            "d": "a smaller last batch changes nothing in eval mode; in training mode it is one more symptom of (a).",
        },
    ),
}
