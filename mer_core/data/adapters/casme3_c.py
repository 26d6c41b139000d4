"""CAS(ME)^3 part C: `<sub>/<count>/color/N.jpg` (or `<sub>/<count>/N.jpg`) plus
`CAS(ME)3_part_C_ME.xlsx`.

The root is the folder of subject folders; the sheet is found there or named by
`annotation` (relative to the root, or absolute). Sheet columns: sub, count, au, onset,
offset. Part C codes no emotion and no apex: its clips are unlabelled (they serve the
action-unit task and pre-training, not emotion fine-tuning) and the apex is the midpoint of
onset and offset, as MEB takes it. The folder layout is not documented (unconfirmed): a
clip is `<sub>/<count>/`, its frames in a `color/` folder when there is one (as in part A),
else in the clip folder itself; subject and count folders are matched ignoring case.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mer_core.data.adapters.casme3 import COLOUR_FOLDER
from mer_core.data.adapters.casme3 import DEFAULT_FPS as CASME3_FPS
from mer_core.data.adapters.sheets import (
    AdapterResult,
    CodingSheet,
    child_ignoring_case,
    folder_name,
    read_coding_sheet,
)
from mer_core.data.corrections import SheetCorrections

SHEET = CodingSheet(
    dataset="casme3_c", what="CAS(ME)^3 part C ME sheet", pattern="*part_C_ME*", subject="sub", filename="count",
    frames=("onset", None, "offset"), emotion=None, action_units="au",
)


def _locate(root: Path, row: pd.Series) -> tuple[str, str, Path]:
    subject = folder_name(row, SHEET.subject)
    count = folder_name(row, SHEET.filename)
    subject_folder = child_ignoring_case(root, subject) or root / subject
    clip = child_ignoring_case(subject_folder, count) or subject_folder / count
    colour = child_ignoring_case(clip, COLOUR_FOLDER)
    folder = colour if colour is not None and colour.is_dir() else clip
    return clip.relative_to(root).as_posix(), subject, folder


def read_casme3_c(name: str, root: Path, *, annotation: str | None, fps: float | None,
                  frames_per_clip: int, labels: frozenset[str] | None = None,
                  corrections: SheetCorrections | None = None) -> AdapterResult:
    """Every usable (unlabelled) micro clip of CAS(ME)^3 part C; unusable sheet rows become rejections."""
    return read_coding_sheet(name, root, SHEET, lambda row, _: _locate(root, row), annotation=annotation,
                             fps=fps or CASME3_FPS, frames_per_clip=frames_per_clip, labels=labels,
                             corrections=corrections, native=frozenset())
