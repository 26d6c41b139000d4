"""Evaluation protocols: leave-one-subject-out folds over dataset-qualified subjects, and
leave-one-data-set-out folds (train on the other data sets, test on the one left out)."""

from __future__ import annotations

import numpy as np


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


def leave_one_dataset_out(datasets: list[str]) -> list[tuple[str, list[int], list[int]]]:
    """LODO folds: (held-out data set, train indices, test indices), one per data set, sorted.

    Raises:
        ValueError: fewer than two data sets (nothing to train on).
    """
    if len(set(datasets)) < 2:
        raise ValueError(f"leave-one-data-set-out needs two data sets or more, got {sorted(set(datasets))}")
    return leave_one_subject_out(datasets)


PROTOCOL_NAMES = {"loso": "leave-one-subject-out", "lodo": "leave-one-data-set-out"}


def held_out_folds(protocol: str, subjects: list[str], datasets: list[str]) -> list[tuple[str, list[int], list[int]]]:
    """The folds of `protocol` (`loso` or `lodo`) over clips of these subjects and data sets."""
    if protocol == "lodo":
        return leave_one_dataset_out(datasets)
    if protocol == "loso":
        return leave_one_subject_out(subjects)
    raise ValueError(f"unknown protocol {protocol!r}; known: {sorted(PROTOCOL_NAMES)}")


def inner_subject_split(subjects: list[str], train: list[int], fraction: float, seed: int
                        ) -> tuple[list[int], list[int]]:
    """Split one LOSO fold's training clips by subject: (inner-train, inner-validation).

    The fold's held-out subject is not in `train`, so nothing chosen on the inner
    validation subjects has seen it. At least one subject lands on each side.
    """
    names = sorted({subjects[i] for i in train})
    if len(names) < 2:
        raise ValueError(f"an inner validation split needs two training subjects, the fold has {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    count = min(len(names) - 1, max(1, round(fraction * len(names))))
    held = {names[k] for k in order[:count]}
    return [i for i in train if subjects[i] not in held], [i for i in train if subjects[i] in held]


def labelled_subsample(labels: list[int], train: list[int], fraction: float, seed: int) -> list[int]:
    """A class-stratified `fraction` of one fold's training clips (all of them at 1.0), for
    label-scarce learning curves: every class the fold has keeps at least one clip, so the
    folds stay comparable with the full protocol (same held-out clips, fewer labels)."""
    if fraction >= 1:
        return train
    rng = np.random.default_rng(seed)
    kept = []
    for label in sorted({labels[i] for i in train}):
        members = [i for i in train if labels[i] == label]
        count = max(1, round(fraction * len(members)))
        kept += [members[k] for k in rng.permutation(len(members))[:count]]
    return sorted(kept)


def protocol_id(label_column: str, datasets: list[str], classes: list[str], protocol: str = "loso",
                train_fraction: float = 1.0) -> str:
    """The name under which scores are comparable: same protocol, label column, data sets,
    classes and share of training labels (`loso:label:synth_micro:disgust,happiness,...`,
    `...:train0.25` below all of them). The promotion gate ranks only models of one protocol."""
    budget = f":train{train_fraction:g}" if train_fraction < 1 else ""
    return f"{protocol}:{label_column}:{'+'.join(sorted(datasets))}:{','.join(classes)}{budget}"
