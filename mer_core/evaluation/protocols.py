"""Evaluation protocols: leave-one-subject-out folds over dataset-qualified subjects."""

from __future__ import annotations


def leave_one_subject_out(subjects: list[str]) -> list[tuple[str, list[int], list[int]]]:
    """LOSO folds: (held-out subject, train indices, test indices), one per subject, sorted.

    `subjects` should be dataset-qualified so that two data sets' "sub01" stay distinct.
    """
    folds = []
    for held_out in sorted(set(subjects)):
        test = [i for i, s in enumerate(subjects) if s == held_out]
        train = [i for i, s in enumerate(subjects) if s != held_out]
        folds.append((held_out, train, test))
    return folds


def protocol_id(label_column: str, datasets: list[str], classes: list[str]) -> str:
    """The name under which LOSO scores are comparable: same label column, data sets and
    classes (`loso:label:synth_micro:disgust,happiness,...`). The promotion gate ranks
    only models of one protocol."""
    return f"loso:{label_column}:{'+'.join(sorted(datasets))}:{','.join(classes)}"
