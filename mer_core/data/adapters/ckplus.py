"""CK+ (macro, for pre-training): `cohn-kanade-images/S005/001/S005_001_00000001.png`,
labels in `Emotion/S005/001/S005_001_00000011_emotion.txt`.

The root holds both folders; `annotation` names the emotion folder when it is not
`Emotion`. An emotion file holds one float code for the sequence's peak frame: 0
neutral, 1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sadness, 7 surprise.
Sequences without one (266 of the 593) are kept with no label, since pre-training
needs none; a malformed or ambiguous emotion file rejects its sequence. Every sequence
runs from neutral (first frame) to the peak (last frame): onset is the first frame,
apex and offset the last. Each sequence gives one clip: a window of `frames_per_clip`
frames `WINDOW_STRIDE` apart ending at the peak (macro_windows shrinks the stride for
short sequences; a sequence shorter than the window is rejected). Default 30 fps.
"""

from __future__ import annotations

from pathlib import Path

from mer_core.data.adapters.sheets import (
    AdapterResult,
    AnnotationError,
    RawClip,
    numbered_images,
    require_allowed,
    resolve_inside,
)
from mer_core.data.labels import CKPLUS_CODES
from mer_core.data.corrections import SheetCorrections
from mer_core.data.store import Rejection
from mer_core.data.video import macro_windows

DEFAULT_FPS = 30.0
IMAGES_FOLDER = "cohn-kanade-images"
EMOTION_FOLDER = "Emotion"
EMOTION_SUFFIX = "_emotion.txt"
WINDOW_STRIDE = 2


def sequence_folders(images: Path) -> list[Path]:
    """`<subject>/<sequence>` folders under the images folder, sorted."""
    return sorted(p for subject in images.iterdir() if subject.is_dir() for p in subject.iterdir() if p.is_dir())


def emotion_label(folder: Path, root: Path) -> str | None:
    """The label coded in the folder's one `*_emotion.txt`; None without one.

    Raises:
        ValueError: several emotion files, or a code that is not one of 0-7.
    """
    files = sorted(folder.glob(f"*{EMOTION_SUFFIX}")) if folder.is_dir() else []
    if not files:
        return None
    where = files[0].relative_to(root).as_posix()
    if len(files) > 1:
        raise ValueError(f"{len(files)} emotion files in {folder.relative_to(root).as_posix()}: "
                         f"{[f.name for f in files]}")
    try:
        text = files[0].read_text(errors="replace").strip()
    except OSError as exc:
        raise ValueError(f"{where} cannot be read: {exc.strerror or exc}") from None
    try:
        code = float(text)
    except ValueError:
        raise ValueError(f"{where} does not hold an emotion code: {text[:40]!r}") from None
    if not code.is_integer() or not 0 <= code < len(CKPLUS_CODES):
        raise ValueError(f"{where}: emotion code {text!r} is not one of 0-{len(CKPLUS_CODES) - 1}")
    return CKPLUS_CODES[int(code)]


def peak_window(n_frames: int, count: int) -> list[int]:
    """Positions of `count` frames WINDOW_STRIDE apart ending at the last (peak) frame;
    [] when the sequence is shorter than `count`."""
    windows = macro_windows(n_frames, count, WINDOW_STRIDE, 1, onset=n_frames - 1, offset=n_frames - 1)
    return windows[0] if windows else []


def _parse_sequence(root: Path, folder: Path, emotions: Path, fps: float, frames_per_clip: int,
                    allowed: frozenset[str]) -> RawClip:
    """One sequence folder as a RawClip; ValueError saying what is wrong otherwise."""
    item = f"{folder.parent.name}/{folder.name}"
    resolve_inside(root, folder, f"sequence {item}")
    label = emotion_label(emotions / item, root)
    if label is not None:
        require_allowed(label, allowed)
    images = numbered_images(folder, root, item)
    numbers = sorted(images)
    window = peak_window(len(numbers), frames_per_clip)
    if not window:
        raise ValueError(f"sequence {item} has {len(numbers)} numbered image(s), fewer than {frames_per_clip}")
    frames = tuple((numbers[k], images[numbers[k]]) for k in window)
    return RawClip(item=item, subject=folder.parent.name, label=label, onset=numbers[0], apex=numbers[-1],
                   offset=numbers[-1], fps=fps, frames=frames)


def _orphan_labels(root: Path, emotions: Path, sequences: set[str], name: str) -> list[Rejection]:
    """Emotion files whose sequence has no images."""
    orphans = sorted(f for f in emotions.glob(f"*/*/*{EMOTION_SUFFIX}")
                     if f"{f.parent.parent.name}/{f.parent.name}" not in sequences)
    return [Rejection(name, f.relative_to(root).as_posix(), "emotion label for a sequence with no images")
            for f in orphans]


def read_ckplus(name: str, root: Path, *, annotation: str | None, fps: float | None,
                frames_per_clip: int, labels: frozenset[str] | None = None,
                corrections: SheetCorrections | None = None) -> AdapterResult:
    """One clip per CK+ sequence, labelled where an emotion file says so. CK+ has no
    sheet: `corrections` do not apply."""
    images = root / IMAGES_FOLDER
    emotions = root / (annotation or EMOTION_FOLDER)
    if not images.is_dir():
        raise AnnotationError(f"no {IMAGES_FOLDER}/ folder in {root}")
    if annotation and not emotions.is_dir():
        raise AnnotationError(f"CK+ emotion folder {emotions} does not exist")
    allowed = labels or frozenset(CKPLUS_CODES)
    clips, rejections = [], []
    for folder in sequence_folders(images):
        try:
            clips.append(_parse_sequence(root, folder, emotions, fps or DEFAULT_FPS, frames_per_clip, allowed))
        except ValueError as exc:
            rejections.append(Rejection(name, f"{folder.parent.name}/{folder.name}", str(exc)))
    rejections += _orphan_labels(root, emotions, {c.item for c in clips} | {r.item for r in rejections}, name)
    return AdapterResult(clips, rejections, allowed)
