"""Adapters: one per published layout, each turning a raw data set root into `RawClip`s.

An adapter only parses layouts and annotation sheets: it never decodes pixels. Every
row or file it cannot use becomes a `Rejection` naming the item and the problem.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mer_core.data.store import Rejection


@dataclass(frozen=True)
class RawClip:
    """One clip as the layout describes it, before any pixel is read.

    Either `video` is set (windows are chosen once its length is known) or `frames`
    lists the (frame number, image path) pairs already sampled from an image sequence.
    """

    item: str  # location relative to the data set root; interim only
    subject: str  # the data set's own subject identifier (pseudonymised later)
    label: str | None
    onset: int | None
    apex: int | None
    offset: int | None
    fps: float | None
    action_units: str | None = None
    video: Path | None = None
    frames: tuple[tuple[int, Path], ...] = ()


@dataclass(frozen=True)
class AdapterResult:
    clips: list[RawClip]
    rejections: list[Rejection]
    allowed_labels: frozenset[str] | None  # None: labels are free-form


class AnnotationError(ValueError):
    """An annotation sheet cannot be used at all (missing, unreadable, wrong columns)."""


def micro_frame_numbers(onset: int, apex: int, offset: int, count: int) -> list[int]:
    """`count` frame numbers: onset→apex at even steps (apex at index count // 2), then apex→offset."""
    rise = count // 2 + 1
    numbers = [onset + (apex - onset) * k / (rise - 1) for k in range(rise)]
    fall = count - rise
    numbers += [apex + (offset - apex) * k / fall for k in range(1, fall + 1)]
    return [int(round(n)) for n in numbers]


def macro_windows(n_frames: int, count: int, stride: int, windows: int,
                  onset: int | None = None, offset: int | None = None) -> list[list[int]]:
    """Up to `windows` runs of `count` frames `stride` apart, spread over the expression.

    With onset/offset known the windows cover [onset, offset] (where the motion is),
    else the whole video. Short videos shrink the stride, then give fewer windows.
    """
    lo = 0 if onset is None else max(0, min(onset, n_frames - 1))
    hi = n_frames - 1 if offset is None else max(lo, min(offset, n_frames - 1))
    while stride > 1 and (count - 1) * stride + 1 > n_frames:
        stride -= 1
    span = (count - 1) * stride + 1
    if span > n_frames:
        return []
    # Keep every window inside the video even when the labelled range is shorter than a window.
    first = min(lo, n_frames - span)
    last = max(first, min(hi - span + 1, n_frames - span))
    n = min(windows, last - first + 1)
    starts = sorted({int(round(first + (last - first) * k / max(n - 1, 1))) for k in range(n)})
    return [[s + k * stride for k in range(count)] for s in starts]


def cell_text(value) -> str | None:
    """A sheet or CSV cell as stripped text; None for empty cells and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def parse_frame_number(value, column: str) -> int:
    """An annotation cell as a frame number; ValueError with the column name otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        raise ValueError(f"{column} is missing")
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{column} is not a number: {text!r}") from None
    if not number.is_integer() or number < 0:
        raise ValueError(f"{column} is not a frame number: {text!r}")
    return int(number)


NUMBERED_IMAGE = re.compile(r"(\d+)\.(?:jpe?g|png|bmp|tiff?)$", re.IGNORECASE)


def numbered_images(folder: Path) -> dict[int, Path]:
    """Frame number → image path for files like `img46.jpg` or `reg_img46.jpg`."""
    found: dict[int, Path] = {}
    for path in folder.iterdir():
        match = NUMBERED_IMAGE.search(path.name)
        if match and path.is_file():
            found.setdefault(int(match.group(1)), path)
    return found


def allowed_labels(adapter: str, labels: list[str] | None) -> frozenset[str] | None:
    """The native labels a data set may carry: its own list, else the adapter's, else any."""
    if labels:
        return frozenset(labels)
    from mer_core.evaluation.protocols import NATIVE_LABELS

    return NATIVE_LABELS.get(adapter)


def _registry() -> dict[str, Callable[..., AdapterResult]]:
    from mer_core.data.adapters import casme2, videos

    return {"casme2": casme2.read_casme2, "videos": videos.read_videos}


def read_dataset(adapter: str, name: str, root: Path, *, annotation: str | None, fps: float | None,
                 frames_per_clip: int, labels: list[str] | None = None) -> AdapterResult:
    """Parse one raw data set with the adapter registered under `adapter`."""
    registry = _registry()
    if adapter not in registry:
        raise ValueError(f"unknown adapter {adapter!r}; known: {sorted(registry)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data set {name!r}: root {root} does not exist")
    return registry[adapter](name, root, annotation=annotation, fps=fps, frames_per_clip=frames_per_clip,
                             labels=frozenset(labels) if labels else None)
