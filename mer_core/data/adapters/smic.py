"""SMIC, one subset (HS, VIS or NIR): `s1/micro/negative/s1_ne_01/reg_image022917.bmp`.

The root is the subset folder itself (`.../HS`); its name picks the default frame rate
(HS 100 fps, VIS and NIR 25 fps) and any other name needs `fps` set. Ingest each
subset as its own data set. There is no sheet: a clip is a folder of numbered images
named `s<subject>_<ne|po|sur>_<nn>` under `micro/<negative|positive|surprise>/`, both
as published (`sN/micro/<emotion>/<clip>`) and as `micro/<emotion>/sN/<clip>`;
`non_micro` folders are ignored. The label is the emotion folder, and must agree with
the clip name's code. SMIC codes no apex: onset and offset are the first and last
frames on disk and the apex is the middle frame by position (not the frame of maximum
motion).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mer_core.data.adapters.sheets import (
    NUMBERED_IMAGE,
    AdapterResult,
    AnnotationError,
    RawClip,
    numbered_images,
    require_allowed,
    resolve_inside,
)
from mer_core.data.labels import SMIC_LABELS
from mer_core.data.corrections import SheetCorrections
from mer_core.data.store import Rejection
from mer_core.data.video import micro_frame_numbers

SUBSET_FPS = {"HS": 100.0, "VIS": 25.0, "NIR": 25.0}
MICRO_FOLDER = "micro"
CLIP_NAME = re.compile(r"^s(\d+)_(ne|po|sur)_(\d+)$", re.IGNORECASE)
SUBJECT_FOLDER = re.compile(r"^s(\d+)$", re.IGNORECASE)
CODE_LABELS = {"ne": "negative", "po": "positive", "sur": "surprise"}


def subset_fps(root: Path, fps: float | None) -> float:
    """The frame rate of the subset at `root`: `fps` if given, else the subset's own.

    Raises:
        AnnotationError: the root holds several subsets, or its name is no subset and
            `fps` is unset.
    """
    subsets = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.upper() in SUBSET_FPS)
    if subsets:
        raise AnnotationError(f"{root} holds the SMIC subsets {subsets}; point root at one of them "
                              "and ingest each as its own data set")
    if fps:
        return fps
    if root.name.upper() not in SUBSET_FPS:
        raise AnnotationError(f"cannot tell which SMIC subset {root} holds: name the folder "
                              f"{'/'.join(SUBSET_FPS)} or set the data set's fps")
    return SUBSET_FPS[root.name.upper()]


def clip_folders(root: Path) -> list[Path]:
    """Folders under a `micro` folder that hold numbered images or carry a clip name.

    Symlinked folders are listed but not entered: parsing them refuses what links out."""
    found = []
    for folder, subfolders, files in os.walk(root):  # followlinks=False
        path = Path(folder)
        parts = [p.lower() for p in path.relative_to(root).parts]
        linked = [path / d for d in subfolders if (path / d).is_symlink()]
        if MICRO_FOLDER in parts:
            found += [d for d in linked if CLIP_NAME.match(d.name)]
        if MICRO_FOLDER not in parts[:-1]:
            continue
        if CLIP_NAME.match(path.name) or any(NUMBERED_IMAGE.search(f) for f in files):
            found.append(path)
    return sorted(found)


def _label(relative: Path, code: str, allowed: frozenset[str]) -> str:
    emotions = [p.lower() for p in relative.parts[:-1] if p.lower() in SMIC_LABELS]
    if len(emotions) != 1:
        raise ValueError(f"expected one emotion folder ({'/'.join(sorted(SMIC_LABELS))}) above the clip, "
                         f"found {emotions or 'none'}")
    label = emotions[0]
    if CODE_LABELS[code.lower()] != label:
        raise ValueError(f"clip {relative.name} is coded {code!r} but filed under {label}/")
    return require_allowed(label, allowed)


def _subject(relative: Path, number: str) -> str:
    subject = f"s{int(number)}"
    folders = {f"s{int(m.group(1))}" for p in relative.parts[:-1] if (m := SUBJECT_FOLDER.match(p))}
    if folders and folders != {subject}:
        raise ValueError(f"clip {relative.name} sits in subject folder {sorted(folders)}")
    return subject


def _parse_clip(root: Path, folder: Path, fps: float, frames_per_clip: int, allowed: frozenset[str]) -> RawClip:
    """One clip folder as a RawClip; ValueError saying what is wrong otherwise."""
    relative = folder.relative_to(root)
    match = CLIP_NAME.match(folder.name)
    if not match:
        raise ValueError(f"folder name {folder.name!r} is not a SMIC clip name s<subject>_<ne|po|sur>_<nn>")
    label = _label(relative, match.group(2), allowed)
    subject = _subject(relative, match.group(1))
    resolve_inside(root, folder, f"clip folder {relative.as_posix()}")
    images = numbered_images(folder, root, relative.as_posix())
    if not images:
        raise ValueError(f"clip folder {relative.as_posix()} holds no numbered images")
    numbers = sorted(images)
    middle = len(numbers) // 2
    picks = [numbers[k] for k in micro_frame_numbers(0, middle, len(numbers) - 1, frames_per_clip)]
    return RawClip(item=relative.as_posix(), subject=subject, label=label, onset=numbers[0],
                   apex=numbers[middle], offset=numbers[-1], fps=fps, frames=tuple((n, images[n]) for n in picks))


def read_smic(name: str, root: Path, *, annotation: str | None, fps: float | None,
              frames_per_clip: int, labels: frozenset[str] | None = None,
              corrections: SheetCorrections | None = None) -> AdapterResult:
    """Every usable clip of one SMIC subset; unusable clip folders become rejections.
    SMIC has no sheet: `corrections` do not apply."""
    if annotation:
        raise AnnotationError(f"SMIC takes its labels from folders; unset `annotation` ({annotation!r}) "
                              "and point root at the subset folder")
    rate = subset_fps(root, fps)
    allowed = labels or SMIC_LABELS
    clips, rejections, seen = [], [], {}
    for folder in clip_folders(root):
        where = folder.relative_to(root).as_posix()
        try:
            clip = _parse_clip(root, folder, rate, frames_per_clip, allowed)
        except ValueError as exc:
            rejections.append(Rejection(name, where, str(exc)))
            continue
        key = folder.name.lower()
        if key in seen:
            rejections.append(Rejection(name, where, f"duplicate clip {folder.name} (also at {seen[key]})"))
            continue
        seen[key] = where
        clips.append(clip)
    return AdapterResult(clips, rejections, allowed)
