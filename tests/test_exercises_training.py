"""The checkers of notebook 07 accept correct solutions and reject plausible wrong ones."""

from __future__ import annotations

import pytest
import torch

import copy

import torch.nn as nn
from checker_harness import assert_accepts, assert_never_raises, assert_rejects, exec_route, module_route

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


def confusion_matrix_bincount(predictions, labels, num_classes):
    flat = labels * num_classes + predictions
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def confusion_matrix_index_put(predictions, labels, num_classes):
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    matrix.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
    return matrix


def confusion_matrix_one_hot(predictions, labels, num_classes):
    eye = torch.eye(num_classes, dtype=torch.int64)
    return eye[labels].T @ eye[predictions]


def confusion_matrix_overwrites_labels(predictions, labels, num_classes):
    labels *= num_classes  # the caller's labels are gone
    labels += predictions
    return torch.bincount(labels, minlength=num_classes * num_classes).view(num_classes, num_classes)


def confusion_matrix_sorts_predictions_in_place(predictions, labels, num_classes):
    result = confusion_matrix_solution(predictions, labels, num_classes)
    predictions.zero_()
    return result


@pytest.mark.parametrize("solution", [confusion_matrix_solution, confusion_matrix_bincount, confusion_matrix_index_put,
                                      confusion_matrix_one_hot])
def test_confusion_matrix_accepts_solutions(solution, capsys):
    out = assert_accepts(check_confusion_matrix, solution, capsys)
    assert "✓ confusion_matrix" in out


@pytest.mark.parametrize("wrong, needle", [(confusion_matrix_overwrites_labels, "labels"),
                                           (confusion_matrix_sorts_predictions_in_place, "predictions")])
def test_confusion_matrix_names_a_side_effect_on_the_callers_tensors(wrong, needle, capsys):
    out = assert_rejects(check_confusion_matrix, wrong, capsys, "changed its input", needle)
    assert "✓" not in out  # no "all cases pass" before the refusal


def test_confusion_matrix_refuses_a_table_of_memorised_answers(capsys, monkeypatch):
    """An answer that knows the fixed cases by heart fails the hidden random ones."""
    memory = {}
    for case_labels, case_predictions, k in [([0, 1, 2], [0, 1, 2], 3), ([0, 1, 2], [2, 1, 2], 3), ([1, 1, 1], [0, 0, 1], 2),
                                             ([0, 1, 2], [0, 1, 1], 4)]:
        memory[(tuple(case_predictions), tuple(case_labels), k)] = confusion_matrix_solution(
            torch.tensor(case_predictions), torch.tensor(case_labels), k)

    def memorised(predictions, labels, num_classes):
        key = (tuple(predictions.tolist()), tuple(labels.tolist()), num_classes)
        if key in memory:
            return memory[key]
        if len(labels) == 60:
            return confusion_matrix_solution(predictions, labels, num_classes)  # the fixed random case, memorised too
        return torch.zeros(num_classes, num_classes, dtype=torch.int64)

    for seed in ("1", "2", "3"):
        monkeypatch.setenv("INVOLUTION_EDU_CHECK_SEED", seed)
        assert_rejects(check_confusion_matrix, memorised, capsys, "random case")


@pytest.mark.parametrize(
    "wrong, message",
    [
        (confusion_matrix_transposed, "rows and columns swapped"),
        (confusion_matrix_set_not_count, "does not add up; count them"),
        (confusion_matrix_size_from_data, "expected (4, 4), got (3, 3)"),
        (confusion_matrix_row_normalised, "counts, not rates"),
        (confusion_matrix_off_by_one_class, "correct answers land on the diagonal"),
        (confusion_matrix_float_counts_of_predictions_only, "✗ confusion_matrix"),
    ],
)
def test_confusion_matrix_rejects_wrong_answers(wrong, message, capsys):
    assert not check_confusion_matrix(wrong)
    out = capsys.readouterr().out
    assert "✗ confusion_matrix" in out and message in out, out


def test_confusion_matrix_not_attempted(capsys):
    assert not check_confusion_matrix(not_attempted)
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


def clip_where_solution(grads, max_norm):
    total = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
    factor = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return tuple(g * factor for g in grads)


def clip_fixed_threshold_one(grads, max_norm):
    return clip_solution(grads, 1.0)


def clip_capped_at_max_norm(grads, max_norm):
    total = float(torch.sqrt(sum((g**2).sum() for g in grads)))
    return [g * min(max_norm, max_norm / (total + 1e-6)) for g in grads]


@pytest.mark.parametrize("solution", [clip_solution, clip_in_place_solution, clip_where_solution])
def test_clip_accepts_solutions(solution, capsys):
    assert "✓ clip_by_global_norm" in assert_accepts(check_clip_by_global_norm, solution, capsys)


@pytest.mark.parametrize("wrong, needle", [(clip_fixed_threshold_one, "the threshold was 1, not max_norm"),
                                           (clip_capped_at_max_norm, "capped at max_norm instead of at 1")])
def test_clip_refuses_the_thresholds_that_used_to_pass(wrong, needle, capsys):
    """Issue 15: a fixed threshold of 1 and min(max_norm, max_norm / norm) passed; cases with a norm
    between 1 and max_norm, and below 1 but above max_norm, now catch them."""
    assert_rejects(check_clip_by_global_norm, wrong, capsys, needle)


def test_clip_random_cases_cover_a_norm_between_one_and_max_norm(capsys, monkeypatch):
    def wrong_only_between_one_and_max_norm(grads, max_norm):
        total = float(torch.sqrt(sum((g**2).sum() for g in grads)))
        if 1.0 < total <= max_norm and not (abs(total - 2.0) < 1e-9 and max_norm == 3.0):  # dodges the fixed case
            return [g * 1.5 for g in grads]
        return clip_solution(grads, max_norm)

    refused = 0
    for seed in range(6):
        monkeypatch.setenv("INVOLUTION_EDU_CHECK_SEED", str(seed))
        refused += not check_clip_by_global_norm(wrong_only_between_one_and_max_norm)
    assert refused >= 3, capsys.readouterr().out


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
    assert not check_clip_by_global_norm(wrong)
    out = capsys.readouterr().out
    assert "✗ clip_by_global_norm" in out and message in out, out


def test_clip_not_attempted(capsys):
    assert not check_clip_by_global_norm(not_attempted)
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


def clip_checkers_oracle(grads, max_norm):
    from involution_edu.exercises import training

    return list(training._clipped(grads, max_norm))


@pytest.mark.parametrize("shortcut", [clip_direct, clip_alias, clip_old_name, clip_in_helper, clip_library,
                                      clip_checkers_oracle])
def test_clip_refuses_library_clipping(shortcut, capsys):
    assert_rejects(check_clip_by_global_norm, shortcut, capsys, "asks you to write the clipping yourself")


def confusion_library(predictions, labels, num_classes):
    from involution_edu.training import confusion_matrix

    return confusion_matrix(predictions, labels, num_classes)


def confusion_in_helper(predictions, labels, num_classes):
    return confusion_library(predictions, labels, num_classes)


def confusion_checkers_oracle(predictions, labels, num_classes):
    from involution_edu.exercises.training import _counts

    return _counts(predictions, labels, num_classes)


def confusion_sklearn(predictions, labels, num_classes):
    from sklearn.metrics import confusion_matrix

    return torch.from_numpy(confusion_matrix(labels.numpy(), predictions.numpy(), labels=list(range(num_classes))))


@pytest.mark.parametrize("shortcut", [confusion_library, confusion_in_helper, confusion_checkers_oracle, confusion_sklearn])
def test_confusion_matrix_refuses_the_library(shortcut, capsys):
    assert_rejects(check_confusion_matrix, shortcut, capsys, "asks you to write the counting yourself")


@pytest.mark.parametrize("checker", [check_confusion_matrix, check_clip_by_global_norm, check_predict])
def test_checkers_never_raise(checker):
    assert_never_raises(checker)


# ----------------------------------------------------------------------------- predict (diagnosis)
def predict_solution(model, x):
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            predictions = model(x).argmax(dim=1)
    finally:
        for module, mode in modes:
            module.training = mode
    return predictions


def predict_with_a_copy(model, x):
    clone = copy.deepcopy(model).eval()  # the caller's model is never touched
    with torch.no_grad():
        return clone(x).argmax(dim=1)


def predict_inference_mode(model, x):
    modes = {name: module.training for name, module in model.named_modules()}
    model.eval()
    with torch.inference_mode():
        predictions = model(x).argmax(dim=1)
    for name, module in model.named_modules():
        module.training = modes[name]
    return predictions.clone()


def predict_restores_top_level_mode(model, x):
    """The old answer: right when every submodule shares the model's mode, wrong for a frozen batch norm."""
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


def predict_restores_only_the_flag(model, x):
    was_training = model.training
    model.eval()
    with torch.no_grad():
        predictions = model(x).argmax(dim=1)
    model.training = was_training  # the submodules (batch norm) stay in eval mode
    return predictions


def predict_leaves_the_model_frozen(model, x):
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    model.requires_grad_(False)
    predictions = model(x).argmax(dim=1)
    for module, mode in modes:
        module.training = mode
    return predictions


def predict_switches_autograd_off(model, x):
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    torch.set_grad_enabled(False)
    predictions = model(x).argmax(dim=1)
    for module, mode in modes:
        module.training = mode
    return predictions


def predict_casts_to_float32(model, x):
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    model.float()
    with torch.no_grad():
        predictions = model(x.float()).argmax(dim=1)
    for module, mode in modes:
        module.training = mode
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
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    with torch.no_grad():
        out = model(x).argmin(dim=1)
    for module, mode in modes:
        module.training = mode
    return out


def predict_with_library(model, x):
    from involution_edu.training import evaluate

    return evaluate(model, x, torch.zeros(len(x), dtype=torch.int64))[2]


def predict_with_library_context(model, x):
    from involution_edu.training import eval_mode

    with eval_mode(model), torch.no_grad():
        return model(x).argmax(dim=1)


@pytest.mark.parametrize("solution", [predict_solution, predict_with_a_copy, predict_inference_mode])
def test_predict_accepts_solutions(solution, capsys):
    assert "✓ predict" in assert_accepts(check_predict, solution, capsys)


@pytest.mark.parametrize(
    "wrong, needle",
    [
        (predict_train_mode, "TRAINING mode"),
        (predict_copy_in_train_mode, "TRAINING mode"),
        (predict_never_restores, "is in eval mode after it"),
        (predict_always_train_after, "was in eval mode before"),
        (predict_forward_in_train_mode_first, "running statistics"),
        (predict_logits, "shape"),
        (predict_argmin, "✗ predict"),
    ],
)
def test_predict_rejects_wrong_answers(wrong, needle, capsys):
    assert_rejects(check_predict, wrong, capsys, needle)


@pytest.mark.parametrize(
    "wrong, needles",
    [
        (predict_restores_top_level_mode, ("model[1] (BatchNorm2d) was in eval mode before", "frozen on purpose")),
        (predict_restores_only_the_flag, ("(BatchNorm2d) was in training mode before", "only the top-level flag")),
        (predict_leaves_the_model_frozen, ("requires_grad=True before", "left frozen")),
        (predict_switches_autograd_off, ("switched autograd off", "torch.set_grad_enabled(False)")),
        (predict_casts_to_float32, ("torch.float64 before", "torch.float32 after", "cast")),
    ],
)
def test_predict_names_each_side_effect_and_never_claims_a_pass_first(wrong, needles, capsys):
    """Issue 15: these all passed, and the old checker printed "all 4 cases pass" before a refusal."""
    out = assert_rejects(check_predict, wrong, capsys, *needles)
    assert "✓" not in out and out.count("✗") == 1, out
    assert torch.is_grad_enabled()  # the checker repaired the session


def test_predict_refuses_the_library_evaluate(capsys):
    assert_rejects(check_predict, predict_with_library, capsys, "asks you to write the evaluation yourself")


def test_predict_refuses_the_library_eval_mode(capsys):
    assert_rejects(check_predict, predict_with_library_context, capsys, "asks you to write the evaluation yourself")


def test_predict_not_attempted(capsys):
    assert not check_predict(not_attempted)
    assert "not attempted" in capsys.readouterr().out


def test_predict_refuses_memorised_predictions(capsys, monkeypatch):
    """Predictions of the fixed cases by heart (keyed by the batch size) fail the hidden cases."""
    from involution_edu.exercises import training as module

    answers = {}
    original = module._predict_case

    def recording(name, why, seed, x, setting):
        case = original(name, why, seed, x, setting)
        answers.setdefault(len(x), case.expected)
        return case

    monkeypatch.setattr(module, "_predict_case", recording)
    module.check_predict(predict_solution)
    monkeypatch.setattr(module, "_predict_case", original)
    capsys.readouterr()

    def memorised(model, x):
        return answers.get(len(x), torch.zeros(len(x), dtype=torch.int64))

    monkeypatch.setenv("INVOLUTION_EDU_CHECK_SEED", "4")
    assert not check_predict(memorised)
    assert "random case" in capsys.readouterr().out


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


# ----------------------------------------------------------------------------- run-time routes, time limits
def _exec_route(source: str, name: str):
    return exec_route(source, name, {"nn": nn})


def _module_route(tmp_path, source: str, name: str):
    return module_route(tmp_path, "import torch\nimport torch.nn as nn\n" + source, name)


CLIP_BY_NAME = '''
def clip(grads, max_norm):
    getattr(torch.nn.utils, "clip_grad" + "_norm_")(grads, max_norm)
    return grads
'''
CLIP_ORACLE = '''
def clip(grads, max_norm):
    import importlib
    return list(getattr(importlib.import_module("involution_edu.exercises.training"), "_clip" + "ped")(grads, max_norm))
'''
CONFUSION_BY_NAME = '''
def confusion(predictions, labels, num_classes):
    import importlib
    library = importlib.import_module("involution_edu." + "training")
    return getattr(library, "confusion" + "_matrix")(predictions, labels, num_classes)
'''
PREDICT_BY_NAME = '''
def predict(model, x):
    import importlib
    library = importlib.import_module("involution_edu." + "training")
    return getattr(library, "eval" + "uate")(model, x, torch.zeros(len(x), dtype=torch.int64))[2]
'''


@pytest.mark.parametrize("checker, source, name", [
    (check_clip_by_global_norm, CLIP_BY_NAME, "clip"),
    (check_clip_by_global_norm, CLIP_ORACLE, "clip"),
    (check_confusion_matrix, CONFUSION_BY_NAME, "confusion"),
    (check_predict, PREDICT_BY_NAME, "predict"),
])
def test_checkers_refuse_a_name_built_at_run_time_in_exec(checker, source, name, capsys):
    assert_rejects(checker, _exec_route(source, name), capsys, "yourself")


@pytest.mark.parametrize("checker, source, name", [
    (check_clip_by_global_norm, CLIP_BY_NAME, "clip"),
    (check_confusion_matrix, CONFUSION_BY_NAME, "confusion"),
    (check_predict, PREDICT_BY_NAME, "predict"),
])
def test_checkers_refuse_a_helper_module_written_to_disk(checker, source, name, capsys, tmp_path, monkeypatch):
    assert_rejects(checker, _module_route(tmp_path, source, name), capsys, "yourself")


def test_clip_refuses_the_grad_and_value_route(capsys):
    """torch.func computes a norm's gradient, not a clipping, but the rule forbids autograd as a family."""
    def clip(grads, max_norm):
        norm, _ = torch.func.grad_and_value(lambda g: torch.sqrt((g ** 2).sum()))(torch.cat([g.flatten() for g in grads]))
        return clip_solution(grads, max_norm)

    assert_rejects(check_clip_by_global_norm, clip, capsys, "yourself")


def _endless(*args, **kwargs):
    k = 0
    while k != 1:  # `k += 2` would never reach 1 either: an endless loop
        k += 2


@pytest.mark.parametrize("checker", [check_confusion_matrix, check_clip_by_global_norm, check_predict])
def test_checkers_give_a_time_limit_verdict_for_an_endless_loop(checker, capsys, monkeypatch):
    monkeypatch.setenv("INVOLUTION_EDU_CASE_TIME_LIMIT", "0.5")
    monkeypatch.setenv("INVOLUTION_EDU_TOTAL_TIME_LIMIT", "2")
    out = assert_rejects(checker, _endless, capsys, "ran for more than")
    assert "endless loop" in out
