"""Micro-expression metrics on concatenated LOSO predictions: UF1, UAR, accuracy; and for
the action-unit task, per-AU F1 and their mean.

UF1 and UAR average over the classes present in the ground truth (as MEGC defines
them), so a class the model never predicts counts with F1 = recall = 0, and a class
absent from the ground truth does not dilute the mean. The AU F1 mean follows the same
rule: AUs that no held-out clip shows are left out of it (their F1 is undefined).
"""

from __future__ import annotations

from collections.abc import Sequence


def confusion_matrix(actual: Sequence[str], predicted: Sequence[str], classes: Sequence[str]) -> list[list[int]]:
    """Counts, rows = actual class, columns = predicted class, in `classes` order."""
    index = {c: i for i, c in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    for a, p in zip(actual, predicted, strict=True):
        matrix[index[a]][index[p]] += 1
    return matrix


def per_class_scores(actual: Sequence[str], predicted: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of every class in the ground truth."""
    scores = {}
    for c in sorted(set(actual)):
        tp = sum(a == c and p == c for a, p in zip(actual, predicted, strict=True))
        fp = sum(a != c and p == c for a, p in zip(actual, predicted, strict=True))
        fn = sum(a == c and p != c for a, p in zip(actual, predicted, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        scores[c] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
    return scores


def unweighted_f1(actual: Sequence[str], predicted: Sequence[str]) -> float:
    """UF1: the mean over ground-truth classes of per-class F1."""
    scores = per_class_scores(actual, predicted)
    return sum(s["f1"] for s in scores.values()) / len(scores) if scores else 0.0


def unweighted_average_recall(actual: Sequence[str], predicted: Sequence[str]) -> float:
    """UAR: the mean over ground-truth classes of per-class recall."""
    scores = per_class_scores(actual, predicted)
    return sum(s["recall"] for s in scores.values()) / len(scores) if scores else 0.0


def accuracy(actual: Sequence[str], predicted: Sequence[str]) -> float:
    return sum(a == p for a, p in zip(actual, predicted, strict=True)) / len(actual) if actual else 0.0


def summarize(actual: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """{"uf1", "uar", "accuracy", "clips"} of one set of predictions."""
    return {"uf1": unweighted_f1(actual, predicted), "uar": unweighted_average_recall(actual, predicted),
            "accuracy": accuracy(actual, predicted), "clips": len(actual)}


def per_au_f1(actual: Sequence[Sequence[float]], predicted: Sequence[Sequence[float]], names: Sequence[str]
              ) -> dict[str, dict[str, float]]:
    """F1, precision, recall and support (positive clips) of every AU, pooled over clips.

    `actual` and `predicted` are (N, K) 0/1 rows in the order of `names`.
    """
    scores = {}
    for k, name in enumerate(names):
        truth, guess = [bool(row[k] >= 0.5) for row in actual], [bool(row[k] >= 0.5) for row in predicted]
        tp = sum(t and g for t, g in zip(truth, guess, strict=True))
        fp = sum(g and not t for t, g in zip(truth, guess, strict=True))
        fn = sum(t and not g for t, g in zip(truth, guess, strict=True))
        scores[name] = {"f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
                        "precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / (tp + fn) if tp + fn else 0.0,
                        "support": tp + fn}
    return scores


def mean_au_f1(scores: dict[str, dict[str, float]]) -> float:
    """The mean F1 over the AUs some clip shows (support > 0)."""
    present = [s["f1"] for s in scores.values() if s["support"]]
    return sum(present) / len(present) if present else 0.0
