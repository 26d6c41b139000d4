"""Aff-Wild2, expression track (macro, for pre-training): `cropped_aligned/<video>/00001.jpg`
plus `Annotations/EXPR_Classification_Challenge/{Train_Set,Validation_Set}/<video>.txt`.

The root is the release folder holding both (`annotation` names another folder of
`*_Set/` label folders). A label file starts with the line
`Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other`, then holds one class index
per frame (line k + 1 is frame k, the image `0000k.jpg`); −1 marks a frame to ignore. A
video with two people is two label files and two folders, `<video>_left` and
`<video>_right`: each is its own subject (Aff-Wild2 has no identities across videos).
Every run of frames with one class gives one macro clip, labelled with it: a window of
`frames_per_clip` of the run's frames on disk (cropped_aligned leaves out frames without a
face), `WINDOW_STRIDE` apart, in its middle; a run with fewer such frames, or of a class
the data set's `labels` leave out, gives none. The
set has hundreds of thousands of frames: label files are read one at a time and only
paths are listed (ingest then decodes clip by clip into shards). Its challenge metric,
macro F1 over the eight classes, is `metrics.unweighted_f1`. Default 30 fps.
"""

from __future__ import annotations

from itertools import groupby
from pathlib import Path

from mer_core.data.adapters.sheets import (
    AdapterResult,
    AnnotationError,
    RawClip,
    clip_images,
    middle_window,
    pick_frames,
)
from mer_core.data.corrections import SheetCorrections
from mer_core.data.labels import AFFWILD2_CLASSES
from mer_core.data.store import Rejection

DEFAULT_FPS = 30.0
FRAMES_FOLDER = "cropped_aligned"
ANNOTATION_FOLDER = "Annotations/EXPR_Classification_Challenge"
HEADER = ",".join(c.capitalize() for c in AFFWILD2_CLASSES)
IGNORE = -1
WINDOW_STRIDE = 2


def frame_classes(path: Path) -> list[int]:
    """The class index of every frame (index 0 is frame 1) of one label file.

    Raises:
        ValueError: the header is not the eight classes, or a line is not an index in -1..7.
    """
    lines = path.read_text(errors="replace").splitlines()
    if not lines or lines[0].replace(" ", "").lower() != HEADER.lower():
        raise ValueError(f"{path.name}: the first line is not {HEADER}")
    classes = []
    for number, line in enumerate(lines[1:], start=2):
        text = line.strip()
        if not text.lstrip("-").isdigit() or not IGNORE <= int(text) < len(AFFWILD2_CLASSES):
            raise ValueError(f"{path.name} line {number}: {text[:20]!r} is not a class index -1..7")
        classes.append(int(text))
    return classes


def class_runs(classes: list[int]) -> list[tuple[int, list[int]]]:
    """(class, its frame numbers) of every run of one class, ignored frames left out."""
    runs, frame = [], 1
    for code, group in groupby(classes):
        length = len(list(group))
        if code != IGNORE:
            runs.append((code, list(range(frame, frame + length))))
        frame += length
    return runs


def _video_clips(root: Path, labels: Path, fps: float, frames_per_clip: int, allowed: frozenset[str]) -> list[RawClip]:
    """The clips of one label file's video; ValueError if the file or the folder is unusable."""
    video = labels.stem
    folder = root / FRAMES_FOLDER / video
    item = folder.relative_to(root).as_posix()
    classes = frame_classes(labels)
    images = clip_images(root, folder, item)
    clips = []
    for code, frames in class_runs(classes):
        label = AFFWILD2_CLASSES[code]
        window = middle_window([n for n in frames if n in images], frames_per_clip, WINDOW_STRIDE)
        if not window or label not in allowed:
            continue
        clips.append(RawClip(item=f"{item} frames {frames[0]}-{frames[-1]}", subject=video, label=label,
                             onset=frames[0], apex=None, offset=frames[-1], fps=fps,
                             frames=pick_frames(images, item, window)))
    return clips


def read_affwild2(name: str, root: Path, *, annotation: str | None, fps: float | None,
                  frames_per_clip: int, labels: frozenset[str] | None = None,
                  corrections: SheetCorrections | None = None) -> AdapterResult:
    """One macro clip per labelled run of every Aff-Wild2 EXPR video; an unusable label file
    or video folder is a rejection. Labels are per-frame files: `corrections` do not apply."""
    folder = root / (annotation or ANNOTATION_FOLDER)
    files = sorted(folder.glob("*_Set/*.txt")) if folder.is_dir() else []
    if not files:
        raise AnnotationError(f"no Aff-Wild2 EXPR label files (*_Set/<video>.txt) in {folder}")
    allowed = labels or frozenset(AFFWILD2_CLASSES)
    clips, rejections = [], []
    for path in files:
        try:
            clips += _video_clips(root, path, fps or DEFAULT_FPS, frames_per_clip, allowed)
        except ValueError as exc:
            rejections.append(Rejection(name, path.relative_to(root).as_posix(), str(exc)))
    return AdapterResult(clips, rejections, allowed)
