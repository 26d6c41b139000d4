"""SAMM: `006/006_1_2/006_05562.jpg` plus the FACS-codes sheet `SAMM*Micro_FACS_Codes*.xlsx`.

Sheet columns: Subject, Filename, Inducement Code, Onset Frame, Apex Frame, Offset
Frame, Duration, Micro, Action Units, Estimated Emotion, Objective Classes, Notes. The
published v2 sheet puts about a dozen preamble rows above the header (another release
has it on row 1): the header row is found by its column names. Subject 6 names the
folder `006`; frame numbers are the trailing number of `006_05562.jpg`. An empty or -1
apex stands for the midpoint of onset and offset (logged); an apex outside the onset-
offset range is rejected as in CASME II. Labels: Estimated Emotion in lower case.
"""

from __future__ import annotations

from pathlib import Path

from mer_core.data.adapters.sheets import (
    AdapterResult,
    CodingSheet,
    in_subject_folders,
    read_coding_sheet,
    subject_number,
)
from mer_core.data.corrections import SheetCorrections
from mer_core.data.labels import SAMM_LABELS

DEFAULT_FPS = 200.0
SHEET = CodingSheet(
    dataset="samm", what="SAMM FACS-codes sheet", pattern="SAMM*Micro_FACS_Codes*", subject="Subject",
    filename="Filename", frames=("Onset Frame", "Apex Frame", "Offset Frame"),
    emotion="Estimated Emotion", action_units="Action Units",
    unknown_apex=frozenset({None, "-1", "-1.0"}),
)


def subject_folder(value) -> str:
    """`6`, `6.0` and `006` all name the folder `006`."""
    return f"{subject_number(value):03d}"


def read_samm(name: str, root: Path, *, annotation: str | None, fps: float | None,
              frames_per_clip: int, labels: frozenset[str] | None = None,
              corrections: SheetCorrections | None = None) -> AdapterResult:
    """Every usable clip of a SAMM tree; unusable sheet rows become rejections."""
    return read_coding_sheet(name, root, SHEET, in_subject_folders(root, subject_folder), annotation=annotation,
                             fps=fps or DEFAULT_FPS, frames_per_clip=frames_per_clip,
                             labels=labels, corrections=corrections, native=SAMM_LABELS)
