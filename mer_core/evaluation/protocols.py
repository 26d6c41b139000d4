"""Label protocols shared by data sets: native classes and the MEGC 2019 composite."""

from __future__ import annotations

CASME2_LABELS = frozenset({"happiness", "disgust", "repression", "surprise", "fear", "sadness", "others"})

# Per adapter; an adapter missing here (a generic video folder) has free-form labels.
NATIVE_LABELS: dict[str, frozenset[str]] = {"casme2": CASME2_LABELS}

# MEGC 2019 composite: negative / positive / surprise; classes outside it map to None.
COMPOSITE_3CLASS: dict[str, dict[str, str]] = {
    "casme2": {"disgust": "negative", "repression": "negative", "happiness": "positive", "surprise": "surprise"},
}


def composite_label(adapter: str, label: str | None) -> str | None:
    """The composite 3-class label of a native label, or None when the protocol drops it."""
    if label is None:
        return None
    return COMPOSITE_3CLASS.get(adapter, {}).get(label)


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
