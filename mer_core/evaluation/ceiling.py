"""The benchmark's ceiling: an oracle that reads the true action units instead of pixels.

On the synthetic benchmark the coding sheet's action units are the AU curves that drew
the clip, so a classifier over them shows how separable the classes are at all: the
"others" class shares AU4 and AU7 with disgust, and single AUs recur across classes,
so even this oracle stays below 1. It runs under the same LOSO folds as the models:
each held-out clip gets the majority class of its AU set among the training subjects,
or of the most similar AU set seen (Jaccard) when its exact set never occurs there.
"""

from __future__ import annotations

from collections import Counter

from mer_core.data.action_units import parse_action_units
from mer_core.data.training_sets import MicroClips
from mer_core.evaluation.predictions import prediction_row
from mer_core.evaluation.protocols import held_out_folds

ORACLE_VARIANT = "au_oracle"


def _jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def predict_from_action_units(train_sets: list[frozenset[int]], train_labels: list[str],
                              test_set: frozenset[int]) -> str:
    """Majority class of the most similar training AU set; ties go to the alphabetically first."""
    best = max(_jaccard(test_set, s) for s in train_sets)
    votes = Counter(label for s, label in zip(train_sets, train_labels) if _jaccard(test_set, s) == best)
    return min(votes, key=lambda label: (-votes[label], label))


def au_oracle_predictions(clips: MicroClips, protocol: str = "loso") -> list[dict]:
    """Prediction rows (`report.prediction_row`) of the AU oracle under the folds of `protocol`."""
    sets = [parse_action_units(code) for code in clips.action_units]
    labels = [clips.classes[int(i)] for i in clips.labels]
    rows = []
    for fold, (_, train, test) in enumerate(held_out_folds(protocol, clips.subjects, clips.datasets)):
        train_sets, train_labels = [sets[i] for i in train], [labels[i] for i in train]
        for i in test:
            predicted = predict_from_action_units(train_sets, train_labels, sets[i])
            rows.append(prediction_row(clips, i, fold, [float(c == predicted) for c in clips.classes], [predicted],
                                       ORACLE_VARIANT, 0))
    return rows
