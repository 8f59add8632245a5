"""Checkers for notebook 07 (training on real data).

The expected answers come from :mod:`involution_edu.training` (``accuracy``,
``confusion_matrix``) and from ``torch.nn.utils.clip_grad_norm_``;
:func:`~involution_edu.exercises.framework.run_cases` prints the verdict.

Exercises checked here::

    accuracy(logits, labels) -> float in [0, 1]
        logits: (N, num_classes), labels: (N,) int64
    confusion_matrix(predictions, labels, num_classes) -> (num_classes, num_classes) counts
        predictions, labels: (N,) int64; row = true class, column = predicted class
    clip_by_global_norm(grads, max_norm) -> list of tensors, same shapes as grads
        every gradient scaled by min(1, max_norm / (total_norm + 1e-6)),
        total_norm = L2 norm of all gradients together
"""

from __future__ import annotations

from typing import Callable, List, Sequence

import torch

from ..training import accuracy as accuracy_reference
from ..training import confusion_matrix as confusion_matrix_reference
from .framework import Case, run_cases

__all__ = ["check_accuracy", "check_confusion_matrix", "check_clip_by_global_norm", "clip_by_global_norm_reference"]


def _logits_for(predicted: Sequence[int], num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Random logits ``(N, num_classes)`` whose row-wise maximum sits at ``predicted`` (no ties)."""
    logits = torch.rand(len(predicted), num_classes, generator=generator, dtype=torch.float64)
    logits[torch.arange(len(predicted)), torch.tensor(predicted)] = 2.0 + torch.rand(len(predicted), generator=generator, dtype=torch.float64)
    return logits


def check_accuracy(accuracy: Callable[..., object]) -> bool:
    """Check ``accuracy(logits, labels)``: the fraction (not a percentage) of rows whose largest
    logit is at the true label, as a Python float or a 0-d tensor."""
    generator = torch.Generator().manual_seed(7)
    # (name, why, predicted classes, true labels, num_classes)
    table = [
        ("3 of 4 right, 3 classes", "argmax over the class axis (dim 1), then the fraction of matches", [0, 2, 1, 1], [0, 2, 1, 0], 3),
        ("all right", "the answer is 1.0, a fraction, not 100 or a count", [4, 0, 3], [4, 0, 3], 5),
        ("none right", "0.0 when no prediction matches", [1, 1, 0], [0, 0, 1], 2),
        ("10 classes, 10 samples", "N equals the number of classes: taking argmax over the wrong axis still runs, but gives other answers",
         [3, 3, 9, 0, 1, 7, 7, 2, 5, 4], [3, 8, 9, 0, 6, 7, 1, 2, 5, 4], 10),
        ("one sample, negative logits", "a single row; logits need not be positive or sum to 1", [2], [2], 4),
        ("large batch", "200 samples, 1 in 3 wrong", [i % 10 for i in range(200)], [i % 10 if i % 3 else (i + 1) % 10 for i in range(200)], 10),
    ]
    cases: List[Case] = []
    for name, why, predicted, labels, num_classes in table:
        logits = _logits_for(predicted, num_classes, generator)
        if name.startswith("one sample"):
            logits = logits - 10.0
        labels_tensor = torch.tensor(labels, dtype=torch.int64)
        expected = accuracy_reference(logits, labels_tensor)
        cases.append(Case(name, (logits, labels_tensor), expected, why, rtol=1e-6, atol=1e-9))
    return run_cases("accuracy", accuracy, cases)


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
        predictions_tensor = torch.tensor(predictions, dtype=torch.int64)
        labels_tensor = torch.tensor(labels, dtype=torch.int64)
        expected = confusion_matrix_reference(predictions_tensor, labels_tensor, num_classes)
        cases.append(Case(name, (predictions_tensor, labels_tensor, num_classes), expected, why, rtol=0.0, atol=0.0))
    return run_cases("confusion_matrix", confusion_matrix, cases)


def clip_by_global_norm_reference(grads: Sequence[torch.Tensor], max_norm: float) -> List[torch.Tensor]:
    """What ``torch.nn.utils.clip_grad_norm_`` does to the gradients, on copies."""
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for param, grad in zip(params, grads):
        param.grad = grad.clone()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    return [param.grad for param in params]


def check_clip_by_global_norm(clip_by_global_norm: Callable[..., object]) -> bool:
    """Check ``clip_by_global_norm(grads, max_norm)`` against ``torch.nn.utils.clip_grad_norm_``.

    The student's function gets copies of the gradients and must return the clipped ones, as a
    list or a tuple (changing them in place and returning them is fine).
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
        ("all zeros", "a zero gradient stays zero (no 0 / 0 = NaN)", [(3, 3)], 0.0, 1.0),
    ]
    cases: List[Case] = []
    for name, why, shapes, scale, max_norm in table:
        if shapes is None:
            grads = [torch.tensor([3.0, 4.0], dtype=torch.float64)]
        else:
            grads = [scale * torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes]
        expected = tuple(clip_by_global_norm_reference(grads, max_norm))
        cases.append(Case(name, ([g.clone() for g in grads], max_norm), expected, why, rtol=1e-5, atol=1e-9))
    return run_cases("clip_by_global_norm", clip_by_global_norm, cases)

