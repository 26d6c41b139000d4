"""CASME I: `subXX/EPxx_y/EPxx_y-N.jpg` plus the coding sheet `CASME_label*.xls(x)`.

The layout follows CASME II's (the same lab): subject folders `sub01`, one folder per clip
named by its Filename, frame numbers the trailing number of each image name. The sheet's
columns are unconfirmed (no source at hand published them): Subject, Filename, OnsetF,
ApexF1, OffsetF, Action Units, Emotion — a sheet that names them otherwise can be saved as a
CSV with these headers and given as `annotation`. An apex that is empty or `/` stands for
the midpoint of onset and offset (logged). Labels: Emotion in lower case (amusement,
sadness, disgust, surprise, contempt, fear, repression, tense). 60 fps.
"""

from __future__ import annotations

from pathlib import Path

from mer_core.data.adapters.casme2 import subject_folder
from mer_core.data.adapters.sheets import AdapterResult, CodingSheet, in_subject_folders, read_coding_sheet
from mer_core.data.corrections import SheetCorrections
from mer_core.data.labels import CASME_LABELS

DEFAULT_FPS = 60.0
SHEET = CodingSheet(
    dataset="casme", what="CASME I coding sheet", pattern="CASME_label*", subject="Subject", filename="Filename",
    frames=("OnsetF", "ApexF1", "OffsetF"), emotion="Emotion", action_units="Action Units",
    unknown_apex=frozenset({None, "/"}),
)


def read_casme(name: str, root: Path, *, annotation: str | None, fps: float | None,
               frames_per_clip: int, labels: frozenset[str] | None = None,
               corrections: SheetCorrections | None = None) -> AdapterResult:
    """Every usable clip of a CASME I tree; unusable sheet rows become rejections."""
    return read_coding_sheet(name, root, SHEET, in_subject_folders(root, subject_folder), annotation=annotation,
                             fps=fps or DEFAULT_FPS, frames_per_clip=frames_per_clip, labels=labels,
                             corrections=corrections, native=CASME_LABELS)
