"""CASME II: `subXX/EPxx_yy/imgN.jpg` plus the coding sheet `CASME2-coding-*.xlsx`.

Sheet columns: Subject, Filename, (blank), OnsetFrame, ApexFrame, OffsetFrame, (blank),
Action Units, Estimated Emotion. Frame numbers are the N of `imgN.jpg`. The published
sheet marks an unknown apex with `/`; we then take the midpoint of onset and offset,
as several MER papers do, and say so in the log.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from mer_core.data.adapters import (
    AdapterResult,
    AnnotationError,
    RawClip,
    cell_text,
    micro_frame_numbers,
    numbered_images,
    parse_frame_number,
)
from mer_core.data.store import Rejection
from mer_core.evaluation.protocols import CASME2_LABELS

log = logging.getLogger(__name__)

DEFAULT_FPS = 200.0
SHEET_PATTERN = "CASME2-coding*.xlsx"
REQUIRED_COLUMNS = ("Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Estimated Emotion")
UNKNOWN_APEX = "/"


def find_sheet(root: Path, annotation: str | None) -> Path:
    if annotation:
        path = root / annotation
        if not path.is_file():
            raise AnnotationError(f"CASME II coding sheet {path} does not exist")
        return path
    candidates = sorted(root.glob(SHEET_PATTERN)) + sorted(root.glob(SHEET_PATTERN.replace(".xlsx", ".csv")))
    if not candidates:
        raise AnnotationError(f"no CASME II coding sheet ({SHEET_PATTERN}) in {root}")
    return candidates[-1]  # the newest version sorts last


def load_sheet(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".csv":
            sheet = pd.read_csv(path, dtype=object)
        else:
            sheet = pd.read_excel(path, dtype=object)
    except Exception as exc:  # pandas raises many types for a broken workbook; name the file
        raise AnnotationError(f"cannot read CASME II coding sheet {path}: {exc}") from exc
    sheet.columns = [str(c).strip() for c in sheet.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in sheet.columns]
    if missing:
        raise AnnotationError(f"{path}: missing column(s) {missing}; found {list(sheet.columns)}")
    return sheet


def subject_folder(value) -> str:
    """`1`, `01`, `1.0` and `sub01` all name the folder `sub01`."""
    text = str(value).strip()
    if text.lower().startswith("sub"):
        text = text[3:]
    try:
        return f"sub{int(float(text)):02d}"
    except ValueError:
        raise ValueError(f"Subject is not a subject number: {value!r}") from None



def _parse_row(row: pd.Series, root: Path, fps: float, frames_per_clip: int, allowed: frozenset[str]) -> RawClip:
    """One sheet row as a RawClip; ValueError saying what is wrong otherwise."""
    subject = subject_folder(row["Subject"])
    filename = cell_text(row["Filename"])
    if filename is None:
        raise ValueError("Filename is missing")
    label = (cell_text(row["Estimated Emotion"]) or "").lower()
    if label not in allowed:
        raise ValueError(f"unknown emotion {row['Estimated Emotion']!r}; expected one of {sorted(allowed)}")
    onset = parse_frame_number(row["OnsetFrame"], "OnsetFrame")
    offset = parse_frame_number(row["OffsetFrame"], "OffsetFrame")
    if onset > offset:
        raise ValueError(f"OnsetFrame {onset} is after OffsetFrame {offset}")
    if cell_text(row["ApexFrame"]) == UNKNOWN_APEX:
        apex = (onset + offset) // 2
        log.info("%s/%s: apex marked '/', using the midpoint %d", subject, filename, apex)
    else:
        apex = parse_frame_number(row["ApexFrame"], "ApexFrame")
    if not onset <= apex <= offset:
        raise ValueError(f"ApexFrame {apex} is outside [{onset}, {offset}]")
    folder = root / subject / filename
    if not folder.is_dir():
        raise ValueError(f"clip folder {subject}/{filename} does not exist")
    images = numbered_images(folder)
    if not images:
        raise ValueError(f"clip folder {subject}/{filename} holds no numbered images")
    numbers = micro_frame_numbers(onset, apex, offset, frames_per_clip)
    missing = sorted({n for n in numbers if n not in images})
    if missing:
        raise ValueError(f"frame(s) {missing} missing from {subject}/{filename} "
                         f"(has {min(images)}..{max(images)}, {len(images)} images)")
    return RawClip(
        item=f"{subject}/{filename}", subject=subject, label=label, onset=onset, apex=apex, offset=offset,
        fps=fps, action_units=cell_text(row.get("Action Units")), frames=tuple((n, images[n]) for n in numbers),
    )


def read_casme2(name: str, root: Path, *, annotation: str | None, fps: float | None,
                frames_per_clip: int, labels: frozenset[str] | None = None) -> AdapterResult:
    """Every usable clip of a CASME II tree; unusable sheet rows become rejections."""
    sheet_path = find_sheet(root, annotation)
    sheet = load_sheet(sheet_path)
    allowed = labels or CASME2_LABELS
    clips, rejections, seen = [], [], set()
    for index, row in sheet.iterrows():
        where = f"{sheet_path.name} row {index + 2}"  # +1 for the header, +1 for 1-based rows
        if all(cell_text(row[c]) is None for c in REQUIRED_COLUMNS):
            continue  # blank spacer rows are common at the end of sheets
        try:
            clip = _parse_row(row, root, fps or DEFAULT_FPS, frames_per_clip, allowed)
        except ValueError as exc:
            rejections.append(Rejection(name, where, str(exc)))
            continue
        if clip.item in seen:
            rejections.append(Rejection(name, where, f"duplicate clip {clip.item}"))
            continue
        seen.add(clip.item)
        clips.append(clip)
    return AdapterResult(clips, rejections, allowed)
