"""The checkers of notebook 07 accept correct solutions and reject plausible wrong ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from involution_edu.exercises.training import (
    check_accuracy,
    check_clip_by_global_norm,
    check_confusion_matrix,
)


def not_attempted(*args, **kwargs):
    raise NotImplementedError("write your solution")


# ----------------------------------------------------------------------------- accuracy
def accuracy_solution(logits, labels):
    return (logits.argmax(dim=1) == labels).float().mean().item()


def accuracy_numpy_solution(logits, labels):
    return float(np.mean(np.argmax(logits.numpy(), axis=1) == labels.numpy()))


def accuracy_count(logits, labels):
    return int((logits.argmax(dim=1) == labels).sum())


def accuracy_percent(logits, labels):
    return 100.0 * (logits.argmax(dim=1) == labels).float().mean().item()


def accuracy_wrong_axis(logits, labels):
    return (logits.argmax(dim=0) == labels).float().mean().item()


def accuracy_argmin(logits, labels):
    return (logits.argmin(dim=1) == labels).float().mean().item()


@pytest.mark.parametrize("solution", [accuracy_solution, accuracy_numpy_solution])
def test_accuracy_accepts_solutions(solution, capsys):
    assert check_accuracy(solution) is True
    assert "all 6 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (accuracy_count, "expected 0.75, got 3"),
        (accuracy_percent, "expected 0.75, got 75"),
        (accuracy_wrong_axis, "raised RuntimeError"),
        (accuracy_argmin, "expected 0.75, got 0"),
    ],
)
def test_accuracy_rejects_wrong_answers(wrong, message, capsys):
    assert check_accuracy(wrong) is False
    out = capsys.readouterr().out
    assert "✗ accuracy" in out and message in out, out


def test_accuracy_wrong_axis_caught_even_when_shapes_allow_it(capsys):
    """With N == num_classes argmax over dim 0 runs; the 10x10 case must still catch it."""

    def wrong_axis_if_square(logits, labels):
        dim = 0 if logits.shape[0] == logits.shape[1] else 1
        return (logits.argmax(dim=dim) == labels).float().mean().item()

    assert check_accuracy(wrong_axis_if_square) is False
    assert "10 classes, 10 samples" in capsys.readouterr().out


def test_accuracy_not_attempted(capsys):
    assert check_accuracy(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


# ----------------------------------------------------------------------------- confusion_matrix
def confusion_matrix_solution(predictions, labels, num_classes):
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for true, predicted in zip(labels.tolist(), predictions.tolist()):
        matrix[true, predicted] += 1
    return matrix


def confusion_matrix_transposed(predictions, labels, num_classes):
    return confusion_matrix_solution(predictions, labels, num_classes).T


def confusion_matrix_set_not_count(predictions, labels, num_classes):
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    matrix[labels, predictions] = 1  # assignment: repeated cells end up 1, not their count
    return matrix


def confusion_matrix_size_from_data(predictions, labels, num_classes):
    size = int(max(labels.max(), predictions.max())) + 1
    return confusion_matrix_solution(predictions, labels, size)


def confusion_matrix_row_normalised(predictions, labels, num_classes):
    matrix = confusion_matrix_solution(predictions, labels, num_classes).double()
    return matrix / matrix.sum(dim=1, keepdim=True).clamp(min=1)


def test_confusion_matrix_accepts_solution(capsys):
    assert check_confusion_matrix(confusion_matrix_solution) is True
    assert "all 5 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (confusion_matrix_transposed, "one mistake: true 0 predicted as 2"),
        (confusion_matrix_set_not_count, "two samples in one cell"),
        (confusion_matrix_size_from_data, "wrong shape: expected (4, 4), got (3, 3)"),
        (confusion_matrix_row_normalised, "two samples in one cell"),
    ],
)
def test_confusion_matrix_rejects_wrong_answers(wrong, message, capsys):
    assert check_confusion_matrix(wrong) is False
    out = capsys.readouterr().out
    assert "✗ confusion_matrix" in out and message in out, out


def test_confusion_matrix_not_attempted(capsys):
    assert check_confusion_matrix(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


# ----------------------------------------------------------------------------- clip_by_global_norm
def clip_solution(grads, max_norm):
    total = torch.sqrt(sum((g**2).sum() for g in grads))
    factor = min(1.0, max_norm / (float(total) + 1e-6))
    return [g * factor for g in grads]


def clip_in_place_solution(grads, max_norm):
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    if total > max_norm:
        for g in grads:
            g.mul_(max_norm / total)
    return grads


def clip_per_tensor(grads, max_norm):
    return [g * min(1.0, max_norm / (float(g.norm()) + 1e-6)) for g in grads]


def clip_always_scale(grads, max_norm):
    total = torch.sqrt(sum((g**2).sum() for g in grads))
    return [g * max_norm / total for g in grads]


def clip_by_value(grads, max_norm):
    return [g.clamp(-max_norm, max_norm) for g in grads]


def clip_sum_of_norms(grads, max_norm):
    total = sum(float(g.norm()) for g in grads)  # not the L2 norm of everything
    return [g * min(1.0, max_norm / (total + 1e-6)) for g in grads]


@pytest.mark.parametrize("solution", [clip_solution, clip_in_place_solution])
def test_clip_accepts_solutions(solution, capsys):
    assert check_clip_by_global_norm(solution) is True
    assert "all 5 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (clip_per_tensor, "three tensors, large"),
        (clip_always_scale, "small gradients, norm < max_norm"),
        (clip_by_value, "one tensor, norm 5 > 1"),
        (clip_sum_of_norms, "three tensors, large"),
    ],
)
def test_clip_rejects_wrong_answers(wrong, message, capsys):
    assert check_clip_by_global_norm(wrong) is False
    out = capsys.readouterr().out
    assert "✗ clip_by_global_norm" in out and message in out, out


def test_clip_not_attempted(capsys):
    assert check_clip_by_global_norm(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out
