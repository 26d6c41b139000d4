"""SAMM long videos: `006_1/006_1_0001.jpg` plus `SAMM_LongVideos_V2_Release.xlsx`.

The root is the folder of video folders (`SAMM_longvideos`, layout unconfirmed); the sheet
is found there or named by `annotation` (relative to the root, or absolute). About ten
preamble rows stand above its header, found by its column names: Subject, Filename, Onset,
Apex, Offset, Type (columns unconfirmed; Duration, Action Units and Notes are read when
present). A Filename such as `006_1_2` names an interval of the video `006_1` (its first two
parts), frames numbered by the trailing number of `006_1_0001.jpg`. Type `Micro - 1/2`
makes a micro clip (sampled onset→apex→offset), `Macro` a macro clip for pre-training
(frames spread evenly over the interval). An apex of -1 or empty stands for the midpoint,
as in SAMM. The long-video sheet codes no emotion: as MEAN does, a micro interval takes the
Estimated Emotion of its Filename in the SAMM micro sheet (`SAMM*Micro_FACS_Codes*`) when
that sheet is in the root; otherwise, and for macro intervals, clips stay unlabelled. 200 fps.
Sheet corrections are keyed by Subject and Filename (dataset `samm_long`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from mer_core.data.adapters import samm
from mer_core.data.adapters.sheets import (
    AdapterResult,
    RawClip,
    cell_text,
    clip_images,
    clips_from_sheet,
    expression_interval,
    expression_type,
    find_sheet,
    folder_name,
    interval_frame_numbers,
    pick_frames,
    read_sheet,
    sheet_label,
)
from mer_core.data.corrections import SheetCorrections, clip_key
from mer_core.data.labels import SAMM_LABELS

WHAT = "SAMM long-video sheet"
FRAMES = ("Onset", "Apex", "Offset")
REQUIRED = ("Subject", "Filename", *FRAMES, "Type")
CORRECTED = {"onset": "Onset", "apex": "Apex", "offset": "Offset", "action_units": "Action Units", "emotion": None}


def micro_emotions(root: Path) -> dict[str, str]:
    """Filename (as `clip_key`) → Estimated Emotion from the SAMM micro sheet in `root`, if any."""
    candidates = sorted(p for p in root.glob(samm.SHEET.pattern) if p.is_file())
    if not candidates:
        return {}
    table = read_sheet(candidates[-1], samm.SHEET.required, samm.SHEET.what)
    return {clip_key(f): e for f, e in zip(table["Filename"].map(cell_text), table["Estimated Emotion"].map(cell_text))
            if f is not None and e is not None}


def video_of(filename: str) -> str:
    """`006_1_2` → `006_1`: the video an interval belongs to; ValueError for other names."""
    parts = filename.split("_")
    if len(parts) < 3:
        raise ValueError(f"Filename {filename!r} is not <subject>_<video>_<interval>")
    return "_".join(parts[:2])


def read_samm_long(name: str, root: Path, *, annotation: str | None, fps: float | None,
                   frames_per_clip: int, labels: frozenset[str] | None = None,
                   corrections: SheetCorrections | None = None) -> AdapterResult:
    """Every usable micro and macro interval of SAMM long videos as a clip; unusable rows become rejections."""
    path = find_sheet(root, annotation, "SAMM_LongVideos*", WHAT)
    table = read_sheet(path, REQUIRED, WHAT)
    emotions, allowed = micro_emotions(root), labels or SAMM_LABELS
    corrections = corrections or SheetCorrections()
    images = functools.cache(lambda folder: clip_images(root, folder, folder.relative_to(root).as_posix()))

    def parse(row: pd.Series) -> RawClip:
        filename = folder_name(row, "Filename")
        row, corrected = corrections.apply(row, row["Subject"], filename, CORRECTED, f"{path.name} {row.name}")
        kind = expression_type(row["Type"], "Type")
        interval = expression_interval(row, FRAMES, filename, unknown_apex=frozenset({None, "-1", "-1.0"}))
        emotion = emotions.get(clip_key(filename)) if kind == "micro" else None
        label = sheet_label(emotion, "the micro sheet's Estimated Emotion", allowed, SAMM_LABELS) if emotion else None
        subject = samm.subject_folder(row["Subject"])
        folder = root / video_of(filename)
        item = folder.relative_to(root).as_posix()
        frames = pick_frames(images(folder), item, interval_frame_numbers(kind, interval, frames_per_clip))
        return RawClip(item=item, subject=subject, label=label, onset=interval[0], apex=interval[1],
                       offset=interval[2], fps=fps or samm.DEFAULT_FPS, action_units=cell_text(row.get("Action Units")),
                       frames=frames, corrections=corrected, kind=kind)

    clips, rejections = clips_from_sheet(name, path, table, REQUIRED, parse)
    corrections.warn_unused(path.name)
    return AdapterResult(clips, rejections, allowed)
