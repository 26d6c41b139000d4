"""CAS(ME)^3 part A: `spNO.1/a/color/175.jpg` plus `cas(me)3_part_A_ME_label_JpgIndex*.xlsx`.

The root is the folder of subject folders. The sheet is found there, or named by
`annotation` (a path relative to the root, or absolute: the release keeps it in a
separate `annotation/` folder). Sheet columns: Subject, Filename, Onset, Apex, Offset,
AU, Objective class, emotion. The sheet writes `spNO.1` and `A` where folders may read
`spNo.1` and `a`, so both are matched ignoring case. A Filename is one long recording
holding several expressions, so a clip is `<subject>/<filename>/color/<onset>-<offset>`.
Frame numbers are the N of `color/N.jpg` (the depth frames are not used). No apex
convention is published: a row without a numeric apex is rejected.
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
)
from mer_core.data.corrections import SheetCorrections
from mer_core.data.labels import CASME3_LABELS

DEFAULT_FPS = 30.0
COLOUR_FOLDER = "color"
SHEET = CodingSheet(
    dataset="casme3", what="CAS(ME)^3 part A ME sheet", pattern="*part_A_ME_label*", subject="Subject",
    filename="Filename", frames=("Onset", "Apex", "Offset"), emotion="emotion", action_units="AU",
)


def _locate(root: Path, row: pd.Series, interval: tuple[int, int, int]) -> tuple[str, str, Path]:
    subject = folder_name(row, "Subject")
    filename = folder_name(row, "Filename")
    subject_folder = child_ignoring_case(root, subject) or root / subject
    recording = child_ignoring_case(subject_folder, filename) or subject_folder / filename
    folder = recording / COLOUR_FOLDER
    onset, _, offset = interval
    return f"{folder.relative_to(root).as_posix()}/{onset}-{offset}", subject, folder


def read_casme3(name: str, root: Path, *, annotation: str | None, fps: float | None,
                frames_per_clip: int, labels: frozenset[str] | None = None,
                corrections: SheetCorrections | None = None) -> AdapterResult:
    """Every usable micro clip of CAS(ME)^3 part A; unusable sheet rows become rejections."""
    return read_coding_sheet(name, root, SHEET, lambda row, interval: _locate(root, row, interval),
                             annotation=annotation, fps=fps or DEFAULT_FPS, frames_per_clip=frames_per_clip,
                             labels=labels, corrections=corrections, native=CASME3_LABELS)
