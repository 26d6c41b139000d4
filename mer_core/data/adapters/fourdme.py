"""4DME: `gray_micro/<sub_ID>/<fold_name>/N.jpg` (or `gray_micro_crop/`) plus the sheet
`4DME_Labelling_Micro_release v1.xlsx`.

The root is the release folder holding both. Sheet columns: sub_ID, fold_name, Onset,
Apex, Offset, AUs, Emotion, the one-hot class columns Positive, Negative, Surprise,
Repression, Others, and one column per AU. The label is the class column holding 1 (the
five classes the release defines; the Emotion column's vocabulary is not documented), so
a row marking none or several is rejected. AUs stay as the sheet writes them, `(k)` tags
included (mer_core/data/action_units.py reads them). Clips are read from `gray_micro/`
when it exists (whole frames: ingest finds and aligns the face itself), else from
`gray_micro_crop/`. Frame numbers are the trailing number of each image name. The frame
rate is not in the sheet: 60 fps by default (unconfirmed), `fps` overrides it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mer_core.data.adapters.sheets import (
    AdapterResult,
    AnnotationError,
    CodingSheet,
    folder_name,
    read_coding_sheet,
)
from mer_core.data.corrections import SheetCorrections
from mer_core.data.labels import FOURDME_LABELS

DEFAULT_FPS = 60.0
FRAME_FOLDERS = ("gray_micro", "gray_micro_crop")  # first found wins
SHEET = CodingSheet(
    dataset="4dme", what="4DME labelling sheet", pattern="4DME_Labelling_Micro*", subject="sub_ID",
    filename="fold_name", frames=("Onset", "Apex", "Offset"), emotion=None, action_units="AUs",
    one_hot=("Positive", "Negative", "Surprise", "Repression", "Others"),
)


def frame_folder(root: Path) -> Path:
    """The release's folder of clip folders: `gray_micro`, else `gray_micro_crop`.

    Raises:
        AnnotationError: neither exists.
    """
    for name in FRAME_FOLDERS:
        if (root / name).is_dir():
            return root / name
    raise AnnotationError(f"no {' or '.join(FRAME_FOLDERS)} folder in {root}")


def _locate(frames: Path, root: Path, row: pd.Series) -> tuple[str, str, Path]:
    subject = folder_name(row, SHEET.subject)
    folder = frames / subject / folder_name(row, SHEET.filename)
    return folder.relative_to(root).as_posix(), subject, folder


def read_fourdme(name: str, root: Path, *, annotation: str | None, fps: float | None,
                 frames_per_clip: int, labels: frozenset[str] | None = None,
                 corrections: SheetCorrections | None = None) -> AdapterResult:
    """Every usable micro clip of a 4DME release; unusable sheet rows become rejections."""
    frames = frame_folder(root)
    return read_coding_sheet(name, root, SHEET, lambda row, _: _locate(frames, root, row), annotation=annotation,
                             fps=fps or DEFAULT_FPS, frames_per_clip=frames_per_clip, labels=labels,
                             corrections=corrections, native=FOURDME_LABELS)
