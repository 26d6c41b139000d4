"""Frames: which to sample from a clip, and reading them from disk (video files streamed
with OpenCV, numbered image sequences).

Every reader returns 8-bit BGR frames whatever the source holds (grey, BGRA, 16-bit),
and raises `FrameReadError` naming the file and the problem instead of returning None.
A video is decoded once, front to back, and only the frames someone asked for are
kept, so memory does not grow with the video's length.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Self

import cv2
import numpy as np

from mer_core import MerError

VIDEO_SUFFIXES = {".avi", ".mp4", ".mov", ".mkv", ".wmv", ".mpg", ".mpeg", ".m4v", ".webm", ".flv"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


# --------------------------------------------------------------------------- sampling
def micro_frame_numbers(onset: int, apex: int, offset: int, count: int) -> list[int]:
    """`count` frame numbers: onset→apex at even steps (apex at index count // 2), then apex→offset."""
    rise = count // 2 + 1
    numbers = [onset + (apex - onset) * k / (rise - 1) for k in range(rise)]
    fall = count - rise
    numbers += [apex + (offset - apex) * k / fall for k in range(1, fall + 1)]
    return [round(n) for n in numbers]


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
    starts = sorted({round(first + (last - first) * k / max(n - 1, 1)) for k in range(n)})
    return [[s + k * stride for k in range(count)] for s in starts]


# --------------------------------------------------------------------------- reading
class FrameReadError(MerError, OSError):
    """A video or image could not be decoded; the message names the file."""


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Normalise grey, BGRA and 16-bit images to (H, W, 3) uint8 BGR.

    16-bit images keep their top 8 bits: PNG and TIFF store 16-bit samples full-range,
    so an 8-bit and a 16-bit copy of the same frame come out equal. Alpha is dropped:
    camera frames are opaque, and the colour channels of a PNG are not premultiplied.
    """
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2BGR)
    return image


def _read_unchanged(path: Path) -> np.ndarray:
    """An image as stored: grey (H, W) or (H, W, 3|4), 8 or 16 bits."""
    path = Path(path)
    if not path.is_file():
        raise FrameReadError(f"{path}: missing")
    data = path.read_bytes()
    if not data:
        raise FrameReadError(f"{path}: empty file")
    if data.startswith(b"\xff\xd8") and not _jpeg_complete(data):
        raise FrameReadError(f"{path}: truncated JPEG (no end-of-image marker after the image data)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FrameReadError(f"{path}: not a readable image")
    return image


def _jpeg_complete(data: bytes) -> bool:
    # libjpeg decodes a cut-off JPEG without error, filling the rest with grey. The last
    # end-of-image marker must follow the last start-of-scan; neither can occur inside
    # the entropy-coded data (0xFF is byte-stuffed there), and an EXIF thumbnail's own
    # markers come before the main image's scan.
    return data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda") >= 0


def _is_grey(image: np.ndarray) -> bool:
    return image.ndim == 2 or image.shape[2] == 1


def read_image_sequence(paths: list[Path]) -> list[np.ndarray]:
    """The frames of one clip as (H, W, 3) uint8 BGR, all of one size and one colour mode.

    If any frame is stored grey, every frame is made grey (replicated to 3 channels): a
    lone grey frame among colour ones would otherwise differ from its neighbours in
    colour, which downstream reads as facial motion.

    Raises:
        FrameReadError: a frame is missing or unreadable, or frames differ in size; the
            message names the files.
    """
    paths = [Path(p) for p in paths]
    stored = [_read_unchanged(p) for p in paths]
    check_same_size(stored, [p.name for p in paths], str(paths[0].parent) if paths else "")
    frames = [to_bgr8(image) for image in stored]
    if any(_is_grey(image) for image in stored):
        frames = [cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) for f in frames]
    return frames


def check_same_size(frames: list[np.ndarray], names: list[str], where: str) -> None:
    """Raise FrameReadError naming every frame whose size departs from the clip's usual one.

    Resizing the odd frames would shift the face between frames, which is exactly the
    motion the models look for; such a clip is rejected instead.
    """
    sizes = [frame.shape[:2] for frame in frames]
    if len(set(sizes)) <= 1:
        return
    usual = max(sizes, key=sizes.count)  # ties go to the earliest frame
    odd = [f"{name} is {w}×{h}" for name, (h, w) in zip(names, sizes) if (h, w) != usual]
    raise FrameReadError(f"{where}: frames differ in size: {', '.join(odd)} where the others are "
                         f"{usual[1]}×{usual[0]}")


class VideoReader:
    """Streams a video's frames in order; holds only the frames a caller asked to keep."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FrameReadError(f"{self.path}: missing")
        if self.path.stat().st_size == 0:
            raise FrameReadError(f"{self.path}: empty file")
        # FFmpeg alone: when it cannot open a file, OpenCV's fallback parsers print their own
        # complaints to stderr; the error raised below is the one line a user needs.
        self._capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not self._capture.isOpened():
            raise FrameReadError(f"{self.path}: not a readable video")
        self.fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        # The container's count can be wrong for truncated files: treat it as an estimate.
        self.frame_count_hint = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frames_read = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self._capture.release()

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (frame_number, (H, W, 3) uint8 BGR) from frame 0 until the stream ends."""
        number = 0
        while True:
            ok, frame = self._capture.read()
            if not ok or frame is None:
                return
            self.frames_read = number + 1
            yield number, to_bgr8(frame)
            number += 1

    def intact_frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """`frames()`, less the last frame of a truncated file: when the stream ends before
        the container's count, its last decoded frame can be partly garbage (a cut-off
        MJPEG frame still decodes), so it is held back one step and then dropped."""
        previous = None
        for item in self.frames():
            if previous is not None:
                yield previous
            previous = item
        if previous is not None and (self.frame_count_hint <= 0 or self.frames_read >= self.frame_count_hint):
            yield previous

    def frame_groups(self, groups: list[list[int]]) -> Iterator[tuple[int, list[np.ndarray]]]:
        """Yield (group index, its (H, W, 3) uint8 BGR frames) as soon as a group's last
        frame is decoded, in order of last frame.

        Only frames that a group not yet yielded still needs are held, so a long video
        with far-apart groups costs one group's frames, not the video's. Groups whose
        frames lie past the end of the stream are never yielded: compare the number
        yielded with `len(groups)`.
        """
        if not groups:
            return
        order = sorted(range(len(groups)), key=lambda i: max(groups[i]))
        wanted = {n for group in groups for n in group}
        held: dict[int, np.ndarray] = {}
        for number, frame in self.frames():
            if number in wanted:
                held[number] = frame
            while order and max(groups[order[0]]) == number:
                done = order.pop(0)
                yield done, [held[n] for n in groups[done]]
                still_needed = {n for i in order for n in groups[i]}
                held = {n: f for n, f in held.items() if n in still_needed}
            if not order:
                return


def read_video_frames(path: Path, wanted: Iterable[int]) -> tuple[dict[int, np.ndarray], int, float]:
    """Decode only the frames numbered in `wanted`, streaming the file once.

    Returns:
        (frames by number, number of frames decoded, fps). Decoding stops after the
        last wanted frame, so the count is exact only when a wanted frame is past the end.
    """
    wanted = set(wanted)
    last = max(wanted) if wanted else -1
    kept: dict[int, np.ndarray] = {}
    decoded = 0
    with VideoReader(path) as reader:
        for number, frame in reader.frames():
            decoded = number + 1
            if number in wanted:
                kept[number] = frame
            if number >= last:
                break
        fps = reader.fps
    if decoded == 0:
        raise FrameReadError(f"{path}: no frame could be decoded")
    return kept, decoded, fps


def count_video_frames(path: Path) -> tuple[int, float]:
    """Exact frame count by decoding the whole stream (the container's count may lie)."""
    decoded = 0
    with VideoReader(path) as reader:
        for number, _ in reader.frames():
            decoded = number + 1
        fps = reader.fps
    if decoded == 0:
        raise FrameReadError(f"{path}: no frame could be decoded")
    return decoded, fps
