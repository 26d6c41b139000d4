"""Label vocabularies of the data sets, and the protocol that maps them onto a common class set.

Each adapter reads its data set's own (native) classes; the MEGC 2019 composite maps
CASME II, SAMM and SMIC onto negative / positive / surprise. Ingest writes the composite
class of every clip into the clip table's `label3` column, and `finetune.label_column:
label3` trains on it. A class restriction such as CASME II 5-class is the data set's
`labels` in params.yaml: its other rows go to the rejected table with that reason.
"""

from __future__ import annotations

# CASME I, the Emotion column of its coding sheet.
CASME_LABELS = frozenset({"amusement", "sadness", "disgust", "surprise", "contempt", "fear", "repression", "tense"})
CASME2_LABELS = frozenset({"happiness", "disgust", "repression", "surprise", "fear", "sadness", "others"})
SAMM_LABELS = frozenset({"anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise", "other"})
SMIC_LABELS = frozenset({"negative", "positive", "surprise"})  # the folder names
# CAS(ME)^3 part A, column `emotion` of the ME sheet.
CASME3_LABELS = frozenset({"anger", "disgust", "fear", "happy", "sad", "surprise", "others"})
MMEW_LABELS = frozenset({"anger", "disgust", "fear", "happiness", "sadness", "surprise", "others"})
# CAS(ME)^2 long videos, the emotion column of code_final.xlsx (vocabulary unconfirmed).
CASME_SQ_LABELS = frozenset({"negative", "positive", "surprise", "others"})
# 4DME: the one-hot class columns of its labelling sheet.
FOURDME_LABELS = frozenset({"positive", "negative", "surprise", "repression", "others"})
# DFEW's class codes in its label files.
DFEW_CODES = {"1": "happy", "2": "sad", "3": "neutral", "4": "angry", "5": "surprise", "6": "disgust", "7": "fear"}
# Aff-Wild2 expression track, in the order of its class indices 0-7.
AFFWILD2_CLASSES = ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise", "other")
# CK+ emotion codes 0-7, in code order.
CKPLUS_CODES = ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")

# Per adapter; an adapter missing here has free-form labels (a generic video folder) or
# none (CAS(ME)^3 part C codes action units only).
NATIVE_LABELS: dict[str, frozenset[str]] = {
    "casme": CASME_LABELS,
    "casme2": CASME2_LABELS,
    "samm": SAMM_LABELS,
    "smic": SMIC_LABELS,
    "casme3": CASME3_LABELS,
    "mmew": MMEW_LABELS,
    "4dme": FOURDME_LABELS,
    "casme_sq": CASME_SQ_LABELS,
    "samm_long": SAMM_LABELS,  # from the SAMM micro sheet beside it, when there is one
    "ckplus": frozenset(CKPLUS_CODES),
    "dfew": frozenset(DFEW_CODES.values()),
    "affwild2": frozenset(AFFWILD2_CLASSES),
}

# MEGC 2019 composite (See et al., 2019): negative / positive / surprise over CASME II,
# SAMM and SMIC only; every other class, and every other data set, maps to None.
COMPOSITE_3CLASS: dict[str, dict[str, str]] = {
    "casme2": {"disgust": "negative", "repression": "negative", "happiness": "positive", "surprise": "surprise"},
    "samm": {"anger": "negative", "contempt": "negative", "disgust": "negative", "fear": "negative",
             "sadness": "negative", "happiness": "positive", "surprise": "surprise"},
    "smic": {"negative": "negative", "positive": "positive", "surprise": "surprise"},
}
COMPOSITE_CLASSES = ("negative", "positive", "surprise")


def composite_label(adapter: str, label: str | None) -> str | None:
    """The composite 3-class label of a native label, or None when the protocol drops it."""
    if label is None:
        return None
    return COMPOSITE_3CLASS.get(adapter, {}).get(label)


def allowed_labels(adapter: str, labels: list[str] | None) -> frozenset[str] | None:
    """The native labels a data set may carry: its own list, else the adapter's, else any."""
    if labels:
        return frozenset(labels)
    return NATIVE_LABELS.get(adapter)
