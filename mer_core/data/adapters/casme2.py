"""CASME II: `subXX/EPxx_yy/imgN.jpg` plus the coding sheet `CASME2-coding-*.xlsx`.

Sheet columns: Subject, Filename, (blank), OnsetFrame, ApexFrame, OffsetFrame, (blank),
Action Units, Estimated Emotion. Frame numbers are the N of `imgN.jpg`. The published
sheet marks an unknown apex with `/`; we then take the midpoint of onset and offset,
as several MER papers do, and say so in the log. For the 5-class protocol (fear and
sadness left out) set the data set's `labels` to the five classes.
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
from mer_core.data.labels import CASME2_LABELS

DEFAULT_FPS = 200.0
SHEET = CodingSheet(
    dataset="casme2", what="CASME II coding sheet", pattern="CASME2-coding*", subject="Subject", filename="Filename",
    frames=("OnsetFrame", "ApexFrame", "OffsetFrame"), emotion="Estimated Emotion", action_units="Action Units",
    unknown_apex=frozenset({"/"}),
)


def subject_folder(value) -> str:
    """`1`, `01`, `1.0` and `sub01` all name the folder `sub01`."""
    return f"sub{subject_number(value, prefix='sub'):02d}"


def read_casme2(name: str, root: Path, *, annotation: str | None, fps: float | None,
                frames_per_clip: int, labels: frozenset[str] | None = None,
                corrections: SheetCorrections | None = None) -> AdapterResult:
    """Every usable clip of a CASME II tree; unusable sheet rows become rejections."""
    return read_coding_sheet(name, root, SHEET, in_subject_folders(root, subject_folder), annotation=annotation,
                             fps=fps or DEFAULT_FPS, frames_per_clip=frames_per_clip,
                             labels=labels, corrections=corrections, native=CASME2_LABELS)
