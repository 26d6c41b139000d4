"""CAS(ME)^2 long videos: `rawpic/s15/15_0101disgustingteeth/img1.jpg` plus `code_final.xlsx`.

The root is the release folder (`CASME_sq`) holding `rawpic/` and the workbook. Its first
worksheet has no header: subject, video, onset, apex, offset, AU, emotion, type
(`macro-expression` / `micro-expression`), self-report. The second maps the subject of
column 1 (its third column) onto the subject code of the folders (its second: 15 for
`s15`); the third maps a video name (its second column: `disgust1`, the video cell up to
its first `_`) onto the video code (its first: `0101`, zero-padded to four digits). A
clip is an interval of the video folder `rawpic/s<subject>/<subject>_<code>*`, frames
`img<N>.jpg`. An offset of 0 means none was coded: the interval ends at the apex. Micro
intervals become micro clips (sampled onset→apex→offset); macro intervals become macro
clips for pre-training (frames spread evenly over the interval). Labels: the emotion
column in lower case (negative, positive, surprise, others; unconfirmed vocabulary, so
`labels` may allow others). 30 fps. Sheet corrections are keyed by the subject and video
cells of the first worksheet.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pandas as pd

from mer_core.data.adapters.sheets import (
    AdapterResult,
    AnnotationError,
    RawClip,
    cell_text,
    child_ignoring_case,
    clip_images,
    clips_from_sheet,
    expression_interval,
    expression_type,
    find_sheet,
    interval_frame_numbers,
    pick_frames,
    read_worksheets,
    sheet_label,
    subject_number,
)
from mer_core.data.corrections import SheetCorrections, clip_key
from mer_core.data.labels import CASME_SQ_LABELS

DEFAULT_FPS = 30.0
FRAMES_FOLDER = "rawpic"
WHAT = "CAS(ME)^2 code_final workbook"
COLUMNS = ("subject", "video", "onset", "apex", "offset", "au", "emotion", "type", "self_report")
REQUIRED = ("subject", "video", "onset", "apex", "offset", "type")
FRAMES = ("onset", "apex", "offset")
CORRECTED = {"onset": "onset", "apex": "apex", "offset": "offset", "emotion": "emotion", "action_units": "au"}




def _codes(table: pd.DataFrame, key: int, value: int) -> dict[str, str]:
    """A naming worksheet as {clip_key(key cell): value cell}, blank rows left out."""
    pairs = ((cell_text(row.iloc[key]), cell_text(row.iloc[value])) for _, row in table.iterrows()
             if len(row) > max(key, value))
    return {clip_key(k): v for k, v in pairs if k is not None and v is not None}


def read_code_final(path: Path) -> tuple[pd.DataFrame, dict[str, str], dict[str, str]]:
    """(the coding rows with `COLUMNS` as names, indexed `row k`; subject → subject code;
    video name → video code).

    Raises:
        AnnotationError: fewer than three worksheets, or a coding worksheet of fewer columns.
    """
    worksheets = list(read_worksheets(path, WHAT).values())
    if len(worksheets) < 3:
        raise AnnotationError(f"{path}: expected the coding worksheet and two naming worksheets, "
                              f"found {len(worksheets)} worksheet(s)")
    coding = worksheets[0]
    if coding.shape[1] < COLUMNS.index("type") + 1:
        raise AnnotationError(f"{path}: the first worksheet has {coding.shape[1]} columns, expected "
                              f"{len(COLUMNS)}: {', '.join(COLUMNS)}")
    coding = coding.reindex(columns=range(len(COLUMNS)))  # an empty self-report column may be trimmed
    coding.columns = list(COLUMNS)
    coding.index = [f"row {k + 1}" for k in coding.index]
    return coding, _codes(worksheets[1], key=2, value=1), _codes(worksheets[2], key=1, value=0)


def video_code(code: str) -> str:
    """A naming worksheet's video code as the folders write it: `101` (a number cell) → `0101`."""
    return f"{int(float(code)):04d}" if re.fullmatch(r"\d+(\.0+)?", code) else code


class _Locator:
    """Finds a coding row's video folder, listing each folder's images once (a long video
    holds thousands of frames and many intervals)."""

    def __init__(self, root: Path, subjects: dict[str, str], videos: dict[str, str]):
        self.root, self.frames, self.subjects, self.videos = root, root / FRAMES_FOLDER, subjects, videos
        self.images = functools.cache(lambda folder: clip_images(root, folder, folder.relative_to(root).as_posix()))

    def video_folder(self, row: pd.Series) -> tuple[str, Path]:
        """(subject folder name, video folder); ValueError naming what cannot be found."""
        subject = self.subjects.get(clip_key(cell_text(row["subject"])))
        if subject is None:
            raise ValueError(f"subject {cell_text(row['subject'])!r} is not in the subject naming worksheet")
        number = subject_number(subject, prefix="s")
        name = (cell_text(row["video"]) or "").split("_")[0]
        code = self.videos.get(clip_key(name))
        if code is None:
            raise ValueError(f"video {cell_text(row['video'])!r} ({name}) is not in the video naming worksheet")
        subject_folder = child_ignoring_case(self.frames, f"s{number}") or self.frames / f"s{number}"
        prefix = re.compile(rf"0*{number}_{re.escape(video_code(code))}", re.IGNORECASE)
        matches = sorted(p for p in subject_folder.iterdir() if prefix.match(p.name)) if subject_folder.is_dir() else []
        if len(matches) != 1:
            where = (subject_folder / f"{number}_{video_code(code)}*").relative_to(self.root).as_posix()
            raise ValueError(f"{'no' if not matches else len(matches)} video folder(s) {where}")
        return subject_folder.name, matches[0]


def read_casme_sq(name: str, root: Path, *, annotation: str | None, fps: float | None,
                  frames_per_clip: int, labels: frozenset[str] | None = None,
                  corrections: SheetCorrections | None = None) -> AdapterResult:
    """Every usable micro and macro interval of CAS(ME)^2 as a clip; unusable rows become rejections."""
    if not (root / FRAMES_FOLDER).is_dir():
        raise AnnotationError(f"no {FRAMES_FOLDER}/ folder in {root}")
    path = find_sheet(root, annotation, "*code_final*", WHAT)
    coding, subjects, videos = read_code_final(path)
    locator = _Locator(root, subjects, videos)
    allowed, corrections = labels or CASME_SQ_LABELS, corrections or SheetCorrections()

    def parse(row: pd.Series) -> RawClip:
        named = f"{cell_text(row['subject'])}/{cell_text(row['video'])}"
        row, corrected = corrections.apply(row, row["subject"], row["video"], CORRECTED, f"{path.name} {row.name}")
        kind = expression_type(row["type"], "type")
        if cell_text(row["offset"]) in {"0", "0.0"}:  # no offset coded: the interval ends at the apex
            row = row.copy()
            row["offset"] = row["apex"]
        interval = expression_interval(row, FRAMES, named)
        label = sheet_label(row["emotion"], "emotion", allowed, CASME_SQ_LABELS) if cell_text(row["emotion"]) else None
        subject, folder = locator.video_folder(row)
        item = folder.relative_to(root).as_posix()
        frames = pick_frames(locator.images(folder), item, interval_frame_numbers(kind, interval, frames_per_clip))
        return RawClip(item=item, subject=subject, label=label, onset=interval[0], apex=interval[1],
                       offset=interval[2], fps=fps or DEFAULT_FPS, action_units=cell_text(row["au"]), frames=frames,
                       corrections=corrected, kind=kind)

    clips, rejections = clips_from_sheet(name, path, coding, REQUIRED, parse)
    corrections.warn_unused(path.name)
    return AdapterResult(clips, rejections, allowed)
