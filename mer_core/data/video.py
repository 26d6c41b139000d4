"""Reading frames from disk: video files streamed with OpenCV, numbered image sequences.

Every reader returns 8-bit BGR frames whatever the source holds (grey, BGRA, 16-bit),
and raises `FrameReadError` naming the file and the problem instead of returning None.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

VIDEO_SUFFIXES = {".avi", ".mp4", ".mov", ".mkv", ".wmv", ".mpg", ".mpeg", ".m4v", ".webm", ".flv"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


class FrameReadError(OSError):
    """A video or image could not be decoded; the message names the file."""


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Normalise grey, BGRA and 16-bit images to (H, W, 3) uint8 BGR."""
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


def read_image(path: Path) -> np.ndarray:
    """One image as (H, W, 3) uint8 BGR."""
    path = Path(path)
    if not path.is_file():
        raise FrameReadError(f"{path}: missing")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FrameReadError(f"{path}: not a readable image")
    return to_bgr8(image)


class VideoReader:
    """Streams a video's frames in order; never holds more than one decoded frame."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FrameReadError(f"{self.path}: missing")
        if self.path.stat().st_size == 0:
            raise FrameReadError(f"{self.path}: empty file")
        self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            raise FrameReadError(f"{self.path}: not a readable video")
        self.fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        # The container's count can be wrong for truncated files: treat it as an estimate.
        self.frame_count_hint = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

    def __enter__(self) -> "VideoReader":
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
            yield number, to_bgr8(frame)
            number += 1


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
