"""Checkers and questions for notebook 07 (training on real data).

The expected answers come from :mod:`involution_edu.training` (``confusion_matrix``,
``evaluate``) and from ``torch.nn.utils.clip_grad_norm_``;
:func:`~involution_edu.exercises.framework.run_cases` prints the verdict.

Exercises checked here::

    confusion_matrix(predictions, labels, num_classes) -> (num_classes, num_classes) counts
        predictions, labels: (N,) int64; row = true class, column = predicted class
    clip_by_global_norm(grads, max_norm) -> list of tensors, same shapes as grads
        every gradient scaled by min(1, max_norm / (total_norm + 1e-6)),
        total_norm = L2 norm of all gradients together
    predict(model, x) -> (N,) int64 predicted classes
        x: (N, C, H, W); batch norm must use its running statistics (eval mode), whatever the
        batch holds, and the model is left in the mode it was in

Questions (``QUESTIONS``): ``channel_mixing``, ``momentum_step``, ``eval_bug``.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import torch
import torch.nn as nn

from ..training import clip_gradients as clip_gradients_library
from ..training import confusion_matrix as confusion_matrix_reference
from ..training import evaluate as evaluate_library
from .framework import Case, Question, describe_value, run_cases

__all__ = [
    "check_confusion_matrix",
    "check_clip_by_global_norm",
    "check_predict",
    "clip_by_global_norm_reference",
    "QUESTIONS",
]


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


def check_confusion_matrix(confusion_matrix: Callable[..., object]) -> bool:
    """Check ``confusion_matrix(predictions, labels, num_classes)``: ``(num_classes, num_classes)``
    counts with ``matrix[true, predicted]``."""
    generator = torch.Generator().manual_seed(11)
    random_labels = torch.randint(0, 6, (60,), generator=generator)
    random_predictions = torch.where(
        torch.rand(60, generator=generator) < 0.7, random_labels, torch.randint(0, 6, (60,), generator=generator)
    )
    # (name, why, predictions, labels, num_classes)
    table = [
        ("all correct, 3 classes", "correct answers land on the diagonal", [0, 1, 2], [0, 1, 2], 3),
        ("one mistake: true 0 predicted as 2", "rows are the TRUE class, columns the PREDICTED class: the 1 goes to [0, 2], not [2, 0]",
         [2, 1, 2], [0, 1, 2], 3),
        ("two samples in one cell", "count every sample: two of class 1 predicted as 0 give a 2", [0, 0, 1], [1, 1, 1], 2),
        ("class 3 never occurs", "the matrix is num_classes x num_classes even if a class is missing from the data", [0, 1, 1], [0, 1, 2], 4),
        ("60 random samples, 6 classes", "every cell counted; the total is N", random_predictions.tolist(), random_labels.tolist(), 6),
    ]
    cases: List[Case] = []
    for name, why, predictions, labels, num_classes in table:
        p = torch.tensor(predictions, dtype=torch.int64)
        t = torch.tensor(labels, dtype=torch.int64)
        expected = confusion_matrix_reference(p, t, num_classes)
        mistakes = [
            (expected.T.contiguous(), "rows and columns swapped: row = TRUE class, column = PREDICTED class"),
            (_set_not_count(p, t, num_classes), "a cell holds 1 however many samples fall into it: assignment "
                                               "`m[t, p] = 1` with repeated indices does not add up; count them"),
            (expected.double() / expected.sum(dim=1, keepdim=True).clamp(min=1),
             "each row was divided by its total: the exercise asks for counts, not rates"),
        ]
        cases.append(Case(name, (p, t, num_classes), expected, why, rtol=0.0, atol=0.0, mistakes=mistakes))
    return run_cases(
        "confusion_matrix", confusion_matrix, cases,
        forbidden=[confusion_matrix_reference, "involution_edu.training.confusion_matrix", ".confusion_matrix",
                   "sklearn.metrics.confusion_matrix"],
        what="the counting",
    )


# ----------------------------------------------------------------------------- clipping
def clip_by_global_norm_reference(grads: Sequence[torch.Tensor], max_norm: float) -> List[torch.Tensor]:
    """What ``torch.nn.utils.clip_grad_norm_`` does to the gradients, on copies."""
    params = [nn.Parameter(torch.zeros_like(g)) for g in grads]
    for param, grad in zip(params, grads):
        param.grad = grad.clone()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    return [param.grad for param in params]


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
    ]
    if total > 0:
        out.append((tuple(g * (max_norm / total) for g in grads),
                    "small gradients were scaled UP to max_norm: the factor is min(1, max_norm / norm)"))
    return out


def check_clip_by_global_norm(clip_by_global_norm: Callable[..., object]) -> bool:
    """Check ``clip_by_global_norm(grads, max_norm)`` against ``torch.nn.utils.clip_grad_norm_``.

    The learner's function gets copies of the gradients and must return the clipped ones, as a
    list or a tuple (changing them in place and returning them is fine). Calling
    ``clip_grad_norm_`` (or the library's ``clip_gradients``) is refused.
    """
    generator = torch.Generator().manual_seed(3)
    # (name, why, shapes, scale, max_norm)
    table = [
        ("one tensor, norm 5 > 1", "scale by max_norm / total_norm so the norm becomes max_norm", None, None, 1.0),
        ("small gradients, norm < max_norm", "below the threshold nothing changes (the factor is min(1, ...))", [(3,), (2, 2)], 0.01, 1.0),
        ("three tensors, large", "ONE norm over all tensors together, one factor for all: the direction is kept",
         [(4, 3), (4,), (2, 3, 3)], 10.0, 2.0),
        ("tensors of very different size", "per-tensor clipping would change the direction; global clipping does not",
         [(50,), (1,)], 1.0, 0.5),
        ("max_norm 3.5, two tensors", "max_norm is a parameter, not always 1", [(5,), (3, 2)], 4.0, 3.5),
        ("all zeros", "a zero gradient stays zero (no 0 / 0 = NaN)", [(3, 3)], 0.0, 1.0),
    ]
    cases: List[Case] = []
    for name, why, shapes, scale, max_norm in table:
        if shapes is None:
            grads = [torch.tensor([3.0, 4.0], dtype=torch.float64)]
        else:
            grads = [scale * torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes]
        expected = tuple(clip_by_global_norm_reference(grads, max_norm))
        cases.append(Case(name, ([g.clone() for g in grads], max_norm), expected, why, rtol=1e-5, atol=1e-9,
                          mistakes=_clip_mistakes(grads, max_norm)))
    return run_cases(
        "clip_by_global_norm", clip_by_global_norm, cases,
        forbidden=[torch.nn.utils.clip_grad_norm_, torch.nn.utils.clip_grad_norm, clip_gradients_library,
                   "torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad_norm", ".clip_grad_norm_",
                   ".clip_grad_norm", ".clip_grads_with_norm_", ".clip_gradients"],
        what="the clipping",
    )


# ----------------------------------------------------------------------------- predict (diagnosis)
def _probe_model(seed: int) -> nn.Module:
    """A small conv net with batch norm whose running statistics differ from any one batch's."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 8 * 8, 5),
    )
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    return model.double()


def _train_mode_predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    with torch.no_grad():
        out = model(x).argmax(dim=1)
    model.load_state_dict(snapshot)
    return out


def check_predict(predict: Callable[..., object]) -> bool:
    """Check ``predict(model, x)``: predicted classes ``(N,)`` with batch norm in eval mode, and the
    model's mode (train or eval) the same after the call as before."""
    generator = torch.Generator().manual_seed(5)
    # (name, why, seed, batch size, model starts in train mode)
    table = [
        ("batch of 12, model in train mode", "batch norm must use its running statistics, not the batch's", 0, 12, True),
        ("batch of 1", "one image: in train mode batch norm would even fail or give nonsense", 1, 1, True),
        ("batch of 7 similar images", "a batch of look-alikes: its own statistics wipe out what tells them apart", 2, 7, True),
        ("model already in eval mode", "the answer must not depend on the mode the model was in", 3, 9, False),
    ]
    cases: List[Case] = []
    probes = []
    for name, why, seed, batch, train_mode in table:
        model = _probe_model(seed)
        if name.startswith("batch of 7"):
            x = torch.rand(1, 1, 8, 8, generator=generator, dtype=torch.float64) + 0.05 * torch.rand(
                batch, 1, 8, 8, generator=generator, dtype=torch.float64)
        else:
            x = torch.rand(batch, 1, 8, 8, generator=generator, dtype=torch.float64)
        model.eval()
        with torch.no_grad():
            expected = model(x).argmax(dim=1)
        mistakes = [
            (_train_mode_predictions(model, x), "batch norm ran in TRAINING mode: it normalised with this batch's "
                                                "own mean and variance; call model.eval() first")]
        model.train(train_mode)
        cases.append(Case(name, (model, x), expected, why, rtol=0.0, atol=0.0, mistakes=mistakes))
        probes.append((model, train_mode))
    passed = run_cases("predict", predict, cases, forbidden=[evaluate_library, "involution_edu.training.evaluate"],
                       what="the evaluation")
    if not passed:
        return False
    # the mode must be restored: a model left in eval mode trains on without updating its BN statistics
    for model, train_mode in probes:
        if model.training != train_mode:
            before, after = ("training", "eval") if train_mode else ("eval", "training")
            print(f"✗ predict: the model was in {before} mode before your function ran and is in {after} mode "
                  "after it; remember `model.training` and restore it (model.train(was_training)), or the next "
                  "training step runs with frozen batch-norm statistics")
            return False
    try:
        model, x = cases[0].args
        model.train()
        stats = model[1].running_mean.clone()
        predict(model, x)
        if not torch.equal(stats, model[1].running_mean):
            print("✗ predict: your function changed the batch-norm running statistics: it ran a forward pass "
                  "in training mode; predictions must come from eval mode only")
            return False
    except Exception as error:  # the learner's bug, reported without a traceback
        print(f"✗ predict: a second call raised {type(error).__name__}: {describe_value(error)}")
        return False
    return True


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
                     "class. model.eval() switches to the running statistics gathered in training (and it also "
                     "updates nothing)."),
        wrong={
            "b": "recording gradients costs memory and time but never changes the forward values.",
            "c": "a trained net is a fixed function of its input; it has no memory of the batch order.",
            "d": "a smaller last batch changes nothing in eval mode; in training mode it is one more symptom of (a).",
        },
    ),
}
