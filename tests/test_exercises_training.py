"""The checkers of notebook 07 accept correct solutions and reject plausible wrong ones."""

from __future__ import annotations

import pytest
import torch

import copy

import torch.nn as nn
from checker_harness import assert_accepts, assert_never_raises, assert_rejects

from involution_edu.exercises.training import (
    QUESTIONS,
    check_clip_by_global_norm,
    check_confusion_matrix,
    check_predict,
)


def not_attempted(*args, **kwargs):
    raise NotImplementedError("write your solution")


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


def confusion_matrix_off_by_one_class(predictions, labels, num_classes):
    return confusion_matrix_solution((predictions + 1) % num_classes, labels, num_classes)


def confusion_matrix_float_counts_of_predictions_only(predictions, labels, num_classes):
    return torch.diag(torch.bincount(predictions, minlength=num_classes))


def test_confusion_matrix_accepts_solution(capsys):
    assert check_confusion_matrix(confusion_matrix_solution) is True
    assert "all 5 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (confusion_matrix_transposed, "rows and columns swapped"),
        (confusion_matrix_set_not_count, "does not add up; count them"),
        (confusion_matrix_size_from_data, "wrong shape: expected (4, 4), got (3, 3)"),
        (confusion_matrix_row_normalised, "counts, not rates"),
        (confusion_matrix_off_by_one_class, "correct answers land on the diagonal"),
        (confusion_matrix_float_counts_of_predictions_only, "✗ confusion_matrix"),
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


def clip_max_norm_fixed_at_one(grads, max_norm):
    return clip_solution(grads, 1.0 if max_norm > 2.5 else max_norm)


def clip_returns_factor(grads, max_norm):
    total = torch.sqrt(sum((g**2).sum() for g in grads))
    return min(1.0, max_norm / (float(total) + 1e-6))


@pytest.mark.parametrize("solution", [clip_solution, clip_in_place_solution])
def test_clip_accepts_solutions(solution, capsys):
    assert check_clip_by_global_norm(solution) is True
    assert "all 6 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (clip_per_tensor, "each tensor was clipped on its own"),
        (clip_always_scale, "scaled UP to max_norm"),
        (clip_by_value, "clipping by value"),
        (clip_sum_of_norms, "sum of SQUARES"),
        (clip_max_norm_fixed_at_one, "max_norm 3.5"),
        (clip_returns_factor, "✗ clip_by_global_norm"),
    ],
)
def test_clip_rejects_wrong_answers(wrong, message, capsys):
    assert check_clip_by_global_norm(wrong) is False
    out = capsys.readouterr().out
    assert "✗ clip_by_global_norm" in out and message in out, out


def test_clip_not_attempted(capsys):
    assert check_clip_by_global_norm(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


# ----------------------------------------------------------------------------- shortcuts
def clip_direct(grads, max_norm):
    torch.nn.utils.clip_grad_norm_(grads, max_norm)
    return grads


def clip_alias(grads, max_norm):
    from torch.nn.utils import clip_grad_norm_ as clip

    clip(grads, max_norm)
    return grads


def clip_old_name(grads, max_norm):
    torch.nn.utils.clip_grad_norm(grads, max_norm)
    return grads


def _helper(grads, max_norm):
    from torch.nn import utils

    utils.clip_grad_norm_(grads, max_norm)
    return grads


def clip_in_helper(grads, max_norm):
    return _helper(grads, max_norm)


def clip_library(grads, max_norm):
    from involution_edu.training import clip_gradients

    params = [nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g
    clip_gradients(params, max_norm)
    return [p.grad for p in params]


@pytest.mark.parametrize("shortcut", [clip_direct, clip_alias, clip_old_name, clip_in_helper, clip_library])
def test_clip_refuses_library_clipping(shortcut, capsys):
    assert_rejects(check_clip_by_global_norm, shortcut, capsys, "asks you to write the clipping yourself")


def confusion_library(predictions, labels, num_classes):
    from involution_edu.training import confusion_matrix

    return confusion_matrix(predictions, labels, num_classes)


def confusion_in_helper(predictions, labels, num_classes):
    return confusion_library(predictions, labels, num_classes)


@pytest.mark.parametrize("shortcut", [confusion_library, confusion_in_helper])
def test_confusion_matrix_refuses_the_library(shortcut, capsys):
    assert_rejects(check_confusion_matrix, shortcut, capsys, "asks you to write the counting yourself")


@pytest.mark.parametrize("checker", [check_confusion_matrix, check_clip_by_global_norm, check_predict])
def test_checkers_never_raise(checker):
    assert_never_raises(checker)


# ----------------------------------------------------------------------------- predict (diagnosis)
def predict_solution(model, x):
    was_training = model.training
    model.eval()
    with torch.no_grad():
        predictions = model(x).argmax(dim=1)
    model.train(was_training)
    return predictions


def predict_train_mode(model, x):
    with torch.no_grad():
        return model(x).argmax(dim=1)


def predict_never_restores(model, x):
    model.eval()
    with torch.no_grad():
        return model(x).argmax(dim=1)


def predict_always_train_after(model, x):
    predictions = predict_never_restores(model, x)
    model.train()
    return predictions


def predict_forward_in_train_mode_first(model, x):
    model(x)  # a "warm-up" pass: updates the running statistics
    return predict_solution(model, x)


def predict_logits(model, x):
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train()
    return out


def predict_copy_in_train_mode(model, x):
    clone = copy.deepcopy(model).train()
    with torch.no_grad():
        return clone(x).argmax(dim=1)


def predict_argmin(model, x):
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(x).argmin(dim=1)
    model.train(was)
    return out


def predict_with_library(model, x):
    from involution_edu.training import evaluate

    return evaluate(model, x, torch.zeros(len(x), dtype=torch.int64))[2]


def test_predict_accepts_solution(capsys):
    assert_accepts(check_predict, predict_solution, capsys)


@pytest.mark.parametrize(
    "wrong, needle",
    [
        (predict_train_mode, "TRAINING mode"),
        (predict_copy_in_train_mode, "TRAINING mode"),
        (predict_never_restores, "is in eval mode after it"),
        (predict_always_train_after, "was in eval mode before"),
        (predict_forward_in_train_mode_first, "TRAINING mode"),
        (predict_logits, "shape"),
        (predict_argmin, "✗ predict"),
    ],
)
def test_predict_rejects_wrong_answers(wrong, needle, capsys):
    assert_rejects(check_predict, wrong, capsys, needle)


def test_predict_refuses_the_library_evaluate(capsys):
    assert_rejects(check_predict, predict_with_library, capsys, "asks you to write the evaluation yourself")


def test_predict_not_attempted(capsys):
    assert check_predict(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


# ----------------------------------------------------------------------------- questions


def test_momentum_step_answer_is_what_sgd_does():
    """The numeric answer of QUESTIONS['momentum_step'] is what torch.optim.SGD really does."""
    weight = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9, nesterov=True)
    gradient = torch.tensor([3.0, 4.0], dtype=torch.float64)  # norm 5
    for _ in range(300):
        before = weight.detach().clone()
        weight.grad = gradient.clone()
        torch.nn.utils.clip_grad_norm_([weight], 1.0)
        optimizer.step()
    step = float((weight.detach() - before).norm())
    assert step == pytest.approx(QUESTIONS["momentum_step"].answer, rel=1e-6)
