"""Label protocols shared by data sets: each adapter's native classes, and the protocols
that map them onto a common class set (the MEGC 2019 composite, CASME II 5-class).

A protocol maps (adapter, native label) to a protocol class or to None, which means the
clip is left out under that protocol; `excluded_by_protocol` counts what is left out.
Ingest writes the composite class of every clip into the clip table's `label3` column,
and `finetune.label_column: label3` trains on it. The CASME II 5-class protocol is the
native `label` restricted to its classes: give the casme2 data set those `labels`, and
its fear and sadness rows go to the rejected table with that reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

CASME2_LABELS = frozenset({"happiness", "disgust", "repression", "surprise", "fear", "sadness", "others"})
SAMM_LABELS = frozenset({"anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise", "other"})
SMIC_LABELS = frozenset({"negative", "positive", "surprise"})  # the folder names
# CAS(ME)^3 part A, column `emotion` of the ME sheet.
CASME3_LABELS = frozenset({"anger", "disgust", "fear", "happy", "sad", "surprise", "others"})
MMEW_LABELS = frozenset({"anger", "disgust", "fear", "happiness", "sadness", "surprise", "others"})
# CK+ emotion codes 0-7, in code order.
CKPLUS_CODES = ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")

# Per adapter; an adapter missing here (a generic video folder) has free-form labels.
NATIVE_LABELS: dict[str, frozenset[str]] = {
    "casme2": CASME2_LABELS,
    "samm": SAMM_LABELS,
    "smic": SMIC_LABELS,
    "casme3": CASME3_LABELS,
    "mmew": MMEW_LABELS,
    "ckplus": frozenset(CKPLUS_CODES),
}

# MEGC 2019 composite (See et al., 2019): negative / positive / surprise over CASME II,
# SAMM and SMIC only; every other class, and every other data set, maps to None.
COMPOSITE_3CLASS: dict[str, dict[str, str]] = {
    "casme2": {"disgust": "negative", "repression": "negative", "happiness": "positive", "surprise": "surprise"},
    "samm": {"anger": "negative", "contempt": "negative", "disgust": "negative", "fear": "negative",
             "sadness": "negative", "happiness": "positive", "surprise": "surprise"},
    "smic": {"negative": "negative", "positive": "positive", "surprise": "surprise"},
}

# CASME II 5-class: the native classes less fear and sadness (too few clips for LOSO).
CASME2_5CLASS: dict[str, dict[str, str]] = {
    "casme2": {c: c for c in ("happiness", "surprise", "disgust", "repression", "others")},
}

LABEL_PROTOCOLS: dict[str, dict[str, dict[str, str]]] = {
    "composite_3class": COMPOSITE_3CLASS,
    "casme2_5class": CASME2_5CLASS,
}


def protocol_label(protocol: str, adapter: str, label: str | None) -> str | None:
    """The class of a native label under `protocol`, or None when the protocol drops it.

    Raises:
        ValueError: `protocol` is not one of LABEL_PROTOCOLS.
    """
    if protocol not in LABEL_PROTOCOLS:
        raise ValueError(f"unknown label protocol {protocol!r}; known: {sorted(LABEL_PROTOCOLS)}")
    if label is None:
        return None
    return LABEL_PROTOCOLS[protocol].get(adapter, {}).get(label)


def composite_label(adapter: str, label: str | None) -> str | None:
    """The composite 3-class label of a native label, or None when the protocol drops it."""
    return protocol_label("composite_3class", adapter, label)


def excluded_by_protocol(protocol: str, adapter: str, labels: Iterable[str | None]) -> dict[str, int]:
    """How many clips of each native class `protocol` leaves out for `adapter`, e.g.
    {"other": 26} for SAMM under the composite; unlabelled clips are not counted."""
    return dict(sorted(Counter(label for label in labels
                               if label is not None and protocol_label(protocol, adapter, label) is None).items()))


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
