"""MMEW: `Micro_Expression/<emotion>/<Filename>/N.jpg` plus the sheet `MMEW_Micro_Exp*.xlsx`.

The root is the release folder holding both. Sheet columns: Subject, Filename,
OnsetFrame, ApexFrame, OffsetFrame, Action Units, Estimated Emotion, remarks. Clips
are filed by emotion, so the clip folder is found through the Estimated Emotion
(matched ignoring case); frame numbers are the N of `N.jpg`. No apex convention is
published, so a row without a numeric apex is rejected. Subjects are the Subject cell.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mer_core.data.adapters.sheets import (
    AdapterResult,
    CodingSheet,
    child_ignoring_case,
    folder_name,
    read_coding_sheet,
    required_text,
)
from mer_core.data.corrections import SheetCorrections
from mer_core.data.labels import MMEW_LABELS

DEFAULT_FPS = 90.0
CLIPS_FOLDER = "Micro_Expression"
SHEET = CodingSheet(
    dataset="mmew", what="MMEW micro-expression sheet", pattern="MMEW_Micro_Exp*", subject="Subject",
    filename="Filename", frames=("OnsetFrame", "ApexFrame", "OffsetFrame"),
    emotion="Estimated Emotion", action_units="Action Units",
)


def _locate(root: Path, row: pd.Series) -> tuple[str, str, Path]:
    subject = required_text(row, "Subject")
    filename = folder_name(row, "Filename")
    emotion = folder_name(row, "Estimated Emotion")
    clips = root / CLIPS_FOLDER
    emotion_folder = child_ignoring_case(clips, emotion) or clips / emotion
    folder = child_ignoring_case(emotion_folder, filename) or emotion_folder / filename
    return folder.relative_to(root).as_posix(), subject, folder


def read_mmew(name: str, root: Path, *, annotation: str | None, fps: float | None,
              frames_per_clip: int, labels: frozenset[str] | None = None,
              corrections: SheetCorrections | None = None) -> AdapterResult:
    """Every usable micro clip of an MMEW release; unusable sheet rows become rejections."""
    return read_coding_sheet(name, root, SHEET, lambda row, _: _locate(root, row), annotation=annotation,
                             fps=fps or DEFAULT_FPS, frames_per_clip=frames_per_clip,
                             labels=labels, corrections=corrections, native=MMEW_LABELS)
