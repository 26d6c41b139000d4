"""Label vocabularies of the data sets, and the protocols that map them onto common class sets.

Each adapter reads its data set's own (native) classes; the MEGC 2019 composite maps
CASME II, SAMM and SMIC onto negative / positive / surprise. Ingest writes the composite
class of every clip into the clip table's `label3` column, and `finetune.label_column:
label3` trains on it. With `ingest.composite_list`, the challenge's official list decides
it instead (`CompositeList`). A class restriction such as CASME II 5-class is the data
set's `labels` in params.yaml: its other rows go to the rejected table with that reason;
a data set's `label_mapping` reads it under another protocol's classes (`LABEL_MAPPINGS`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mer_core import MerError

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

# Protocols a data set may be read under (`label_mapping` of a data set in params.yaml),
# named `<adapter>_<classes>`: native class → the protocol's class; a native class the
# mapping leaves out is rejected.
LABEL_MAPPINGS: dict[str, dict[str, str]] = {
    # CAS(ME)^3's own protocols (Li et al., TPAMI 2022): negative = anger, disgust, fear, sad.
    "casme3_4class": {"anger": "negative", "disgust": "negative", "fear": "negative", "sad": "negative",
                      "happy": "positive", "surprise": "surprise", "others": "others"},
    "casme3_3class": {"anger": "negative", "disgust": "negative", "fear": "negative", "sad": "negative",
                      "happy": "positive", "surprise": "surprise"},
    # "3-class CASME II" means 145 clips in some papers and ~254 in others. This is the
    # 145-clip variant, the MEGC 2019 composite's grouping: negative = disgust + repression,
    # fear, sadness and others dropped. The ~254-clip variant is not offered: no source at
    # hand says how it groups others, fear and sadness.
    "casme2_3class": COMPOSITE_3CLASS["casme2"],
}


def composite_label(adapter: str, label: str | None) -> str | None:
    """The composite 3-class label of a native label, or None when the protocol drops it."""
    if label is None:
        return None
    return COMPOSITE_3CLASS.get(adapter, {}).get(label)


def allowed_labels(adapter: str, labels: list[str] | None, mapping: str | None = None) -> frozenset[str] | None:
    """The labels a data set's clips may carry: its mapping's classes, else its own list,
    else the adapter's native classes, else any."""
    if mapping:
        return frozenset(LABEL_MAPPINGS[mapping].values())
    if labels:
        return frozenset(labels)
    return NATIVE_LABELS.get(adapter)


# --------------------------------------------------------------------------- the MEGC 2019 list
class CompositeListError(MerError, ValueError):
    """The composite list cannot be read (missing, or a line that is not dataset, subject, filename, class)."""


def composite_key(adapter: str, subject: str, filename: str) -> tuple[str, str, str]:
    """A clip as the MEGC 2019 list and the layouts both name it: subjects by their number
    (`sub01`, `006`, `s1` and `6` alike), filenames in lower case with digit runs unpadded,
    CASME II's without a trailing `f` (the list drops it from 110 of its 145 names)."""
    digits = re.findall(r"\d+", subject)
    subject_key = str(int(digits[-1])) if digits else subject.casefold()
    name = filename.strip().casefold()
    if adapter == "casme2" and name.endswith("f"):
        name = name[:-1]
    return adapter, subject_key, re.sub(r"\d+", lambda m: str(int(m.group())), name)


@dataclass
class CompositeList:
    """The official MEGC 2019 ground truth (`combined_3class_gt.csv`: no header; dataset,
    subject, filename, class 0/1/2 = negative/positive/surprise) as the composite's
    authority: a clip of a listed data set takes the list's class, or none when the list
    leaves it out; `not_found` names the listed clips no data set gave."""

    path: Path
    entries: dict[tuple[str, str, str], tuple[str, int]]  # key → (class, line)
    found: set[tuple[str, str, str]] = field(default_factory=set)

    @property
    def datasets(self) -> set[str]:
        return {key[0] for key in self.entries}

    def label_of(self, adapter: str, subject: str, filename: str) -> str | None:
        key = composite_key(adapter, subject, filename)
        if key not in self.entries:
            return None
        self.found.add(key)
        return self.entries[key][0]

    def not_found(self, adapter: str) -> list[str]:
        """The listed clips of `adapter` no clip matched, as `<dataset>,<subject>,<filename> (line N)`."""
        return [f"{','.join(key)} (line {line})" for key, (_, line) in sorted(self.entries.items())
                if key[0] == adapter and key not in self.found]


def read_composite_list(path: Path) -> CompositeList:
    """The list at `path`; CRLF or LF lines, blank lines skipped.

    Raises:
        CompositeListError: the file is missing, or a line is malformed or repeats a clip.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CompositeListError(f"cannot read the composite list {path}: {exc.strerror or exc}") from None
    entries: dict[tuple[str, str, str], tuple[str, int]] = {}
    for line, raw in enumerate(text.splitlines(), start=1):
        cells = [c.strip() for c in raw.split(",")]
        if cells == [""]:
            continue
        if len(cells) != 4 or cells[3] not in {"0", "1", "2"}:
            raise CompositeListError(f"{path} line {line}: expected dataset, subject, filename, class 0/1/2; "
                                     f"got {raw.strip()!r}")
        key = composite_key(cells[0].lower(), cells[1], cells[2])
        if key in entries:
            raise CompositeListError(f"{path} line {line}: {raw.strip()!r} repeats line {entries[key][1]}")
        entries[key] = (COMPOSITE_CLASSES[int(cells[3])], line)
    return CompositeList(Path(path), entries)
