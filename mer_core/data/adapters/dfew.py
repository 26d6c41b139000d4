"""DFEW (macro, for pre-training): `data_affine/single_label/data/00001/00001_00001.jpg`
plus `label/single_{train,test}set_{1..5}.csv`.

The root is the release folder holding `data_affine/` and `label/` (`annotation` names
another label folder). A label file holds one clip per line: the clip number, then the
class code (column names unconfirmed, so a header line is recognised by not being
numbers): 1 happy, 2 sad, 3 neutral, 4 angry, 5 surprise, 6 disgust, 7 fear. Every clip
is in the test set of exactly one of the five folds, so the union of the files labels
each clip once; two files giving one clip different codes reject it. Clips without a
label are kept unlabelled (pre-training needs none). DFEW has no subject identifiers (its
clips come from movies): each clip is its own subject. A clip gives one window of
`frames_per_clip` frames `WINDOW_STRIDE` apart in its middle; frame numbers are the
trailing number of `00001_00001.jpg`. 16,372 clips: the adapter lists paths only (about a
kilobyte a clip) and ingest decodes clip by clip into shards, so the set never sits in
memory. Default 25 fps (unconfirmed).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from mer_core.data.adapters.sheets import (
    AdapterResult,
    AnnotationError,
    RawClip,
    clip_images,
    middle_window,
    pick_frames,
    require_allowed,
)
from mer_core.data.corrections import SheetCorrections
from mer_core.data.labels import DFEW_CODES
from mer_core.data.store import Rejection

DEFAULT_FPS = 25.0
CLIPS_FOLDER = Path("data_affine/single_label/data")
LABEL_FOLDER = "label"
LABEL_FILES = "single_*set_*.csv"
WINDOW_STRIDE = 2


def read_labels(folder: Path, name: str) -> tuple[dict[str, str], list[Rejection]]:
    """Clip number (unpadded) → label over every label file; rejections for conflicts and bad lines.

    Raises:
        AnnotationError: the folder holds no label file.
    """
    files = sorted(folder.glob(LABEL_FILES)) if folder.is_dir() else []
    if not files:
        raise AnnotationError(f"no DFEW label files ({LABEL_FILES}) in {folder}")
    labels: dict[str, tuple[str, str]] = {}
    rejections = []
    for path in files:
        for line, cells in enumerate(csv.reader(path.read_text(errors="replace").splitlines()), start=1):
            cells = [c.strip() for c in cells]
            if not cells or not cells[0] or (line == 1 and not cells[0].isdigit()):
                continue  # blank lines and the header
            where = f"{path.name} row {line}"
            code = cells[1] if len(cells) > 1 else ""
            if not cells[0].isdigit() or code not in DFEW_CODES:
                rejections.append(Rejection(name, where, f"expected a clip number and a code 1-7, got {cells[:2]}"))
                continue
            clip, label = str(int(cells[0])), DFEW_CODES[code]
            if clip in labels and labels[clip][0] != label:
                rejections.append(Rejection(name, where, f"clip {clip} is {label} here but {labels[clip][0]} in "
                                                         f"{labels[clip][1]}"))
                labels[clip] = ("", where)  # conflicting: the clip stays unlabelled
                continue
            labels.setdefault(clip, (label, where))
    return {clip: label for clip, (label, _) in labels.items() if label}, rejections


def _parse_clip(root: Path, folder: Path, label: str | None, fps: float, frames_per_clip: int) -> RawClip:
    item = folder.relative_to(root).as_posix()
    images = clip_images(root, folder, item)
    numbers = sorted(images)
    window = middle_window(numbers, frames_per_clip, WINDOW_STRIDE)
    if not window:
        raise ValueError(f"clip {item} has {len(numbers)} frame(s), fewer than {frames_per_clip}")
    frames = pick_frames(images, item, window)
    return RawClip(item=item, subject=folder.name, label=label, onset=numbers[0], apex=None, offset=numbers[-1],
                   fps=fps, frames=frames)


def read_dfew(name: str, root: Path, *, annotation: str | None, fps: float | None,
              frames_per_clip: int, labels: frozenset[str] | None = None,
              corrections: SheetCorrections | None = None) -> AdapterResult:
    """One macro clip per DFEW clip folder, labelled where the label files say. DFEW's
    labels are files of codes, not a sheet: `corrections` do not apply."""
    clips_folder = root / CLIPS_FOLDER
    if not clips_folder.is_dir():
        raise AnnotationError(f"no {CLIPS_FOLDER.as_posix()}/ folder in {root}")
    coded, rejections = read_labels(root / (annotation or LABEL_FOLDER), name)
    allowed = labels or frozenset(DFEW_CODES.values())
    clips = []
    for folder in sorted(p for p in clips_folder.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name)):
        try:
            label = coded.get(str(int(folder.name)))
            clips.append(_parse_clip(root, folder, label and require_allowed(label, allowed), fps or DEFAULT_FPS,
                                     frames_per_clip))
        except ValueError as exc:
            rejections.append(Rejection(name, folder.relative_to(root).as_posix(), str(exc)))
    return AdapterResult(clips, rejections, allowed)
