"""Face detection, alignment and cropping with OpenCV's bundled Haar cascades.

As in published MER preprocessing, the face is found once (on the onset frame) and
the same box and rotation are applied to every frame of the clip, so that the crop
itself never moves and only the face's own motion remains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from mer_core import MerError
from mer_core.data.video import check_same_size


class NoFaceError(MerError, ValueError):
    """No face was found where one was expected."""


@dataclass(frozen=True)
class CropSettings:
    """How a clip's frames become aligned face crops; ingest and `mer predict` share them."""

    crop_size: int
    frames_per_clip: int
    window_stride: int
    windows_per_video: int
    face_margin: float
    min_face_px: int
    stabilize: bool = True

    @classmethod
    def from_params(cls, params) -> CropSettings:
        """From the `ingest` section of params (an `IngestParams`)."""
        return cls(params.crop_size, params.frames_per_clip, params.window_stride, params.windows_per_video,
                   params.face_margin, params.min_face_px, params.stabilize)


@dataclass(frozen=True)
class FaceBox:
    """A detected face in source pixels, with the in-plane roll that levels the eyes."""

    x: int
    y: int
    w: int
    h: int
    score: float
    roll_deg: float = 0.0

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2


def _cascade(name: str) -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / name
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"OpenCV's Haar cascade {path} is missing; install opencv-python-headless 4.x")
    return cascade


class FaceDetector:
    """Largest frontal face, then both eyes inside it to estimate roll."""

    def __init__(self, min_face_px: int = 48):
        self.min_face_px = min_face_px
        self._faces = _cascade("haarcascade_frontalface_default.xml")
        self._eyes = _cascade("haarcascade_eye.xml")

    def detect(self, frame_bgr: np.ndarray) -> FaceBox:
        """The most confident face in a (H, W, 3) BGR frame.

        Raises:
            NoFaceError: nothing passes the cascade at the minimum face size.
        """
        grey = cv2.equalizeHist(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY))
        boxes, _, weights = self._faces.detectMultiScale3(
            grey, scaleFactor=1.1, minNeighbors=5, minSize=(self.min_face_px, self.min_face_px),
            outputRejectLevels=True,
        )
        if len(boxes) == 0:
            raise NoFaceError("no face found")
        # Prefer confidence, break ties by size: a background false positive is usually small.
        best = max(range(len(boxes)), key=lambda i: (float(weights[i]), boxes[i][2]))
        x, y, w, h = (int(v) for v in boxes[best])
        roll = self._roll_from_eyes(grey[y : y + h, x : x + w])
        return FaceBox(x, y, w, h, float(weights[best]), roll)

    def _roll_from_eyes(self, face_grey: np.ndarray) -> float:
        """Angle (degrees) of the line between the two eyes; 0 when they are not both found."""
        h, w = face_grey.shape
        upper = face_grey[: h // 2 + h // 10]
        eyes = self._eyes.detectMultiScale(upper, scaleFactor=1.1, minNeighbors=4, minSize=(w // 8, w // 8))
        left = [e for e in eyes if e[0] + e[2] / 2 < w / 2]
        right = [e for e in eyes if e[0] + e[2] / 2 >= w / 2]
        if not left or not right:
            return 0.0
        (lx, ly, lw, lh), (rx, ry, rw, rh) = max(left, key=lambda e: e[2]), max(right, key=lambda e: e[2])
        dx = (rx + rw / 2) - (lx + lw / 2)
        dy = (ry + rh / 2) - (ly + lh / 2)
        angle = math.degrees(math.atan2(dy, dx))
        return angle if abs(angle) <= 20 else 0.0  # larger is a mis-detection, not a head roll


def crop_matrix(box: FaceBox, margin: float) -> tuple[np.ndarray, int]:
    """2x3 affine mapping source pixels to a level square around the face, and its side."""
    side = int(round(max(box.w, box.h) * (1 + 2 * margin)))
    matrix = cv2.getRotationMatrix2D(box.center, box.roll_deg, 1.0)
    matrix[:, 2] += (side / 2 - box.center[0], side / 2 - box.center[1])
    return matrix, side


def crop_face(frame_bgr: np.ndarray, box: FaceBox, size: int, margin: float) -> np.ndarray:
    """(size, size, 3) uint8 RGB crop of the face, levelled by the box's roll.

    The square is cut at source resolution, then area-averaged down: a sub-pixel facial
    movement survives as a smooth intensity change instead of aliasing away.
    """
    matrix, side = crop_matrix(box, margin)
    square = cv2.warpAffine(frame_bgr, matrix, (side, side), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    crop = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)


def face_ellipse_mask(size: int, margin: float) -> np.ndarray:
    """(size, size) bool: the face's ellipse inside a crop made with `margin`."""
    mask = np.zeros((size, size), np.uint8)
    half = size / (2 * (1 + 2 * margin))  # the detector's box half-side in crop pixels
    axes = (int(round(half * 1.05)), int(round(half * 1.3)))
    cv2.ellipse(mask, (size // 2, size // 2 + int(round(half * 0.08))), axes, 0, 0, 360, 1, -1)
    return mask.astype(bool)


def stabilize_clip(crops: np.ndarray, margin: float) -> np.ndarray:
    """Register each crop of a clip to the first: (T, H, W, 3) uint8 → same shape.

    Face detection runs once per clip, so head jitter and drift stay in the crops, and
    at micro-expression scale they are as large as the expression itself. Each frame's
    sub-pixel translation to frame 0 is estimated by ECC inside the inner face (the
    crop's border and background do not move with the face) and undone; a frame whose
    estimate does not converge is kept as it is.
    """
    size = crops.shape[1]
    inner = cv2.erode(face_ellipse_mask(size, margin).astype(np.uint8) * 255, np.ones((5, 5), np.uint8))
    reference = cv2.cvtColor(crops[0], cv2.COLOR_RGB2GRAY).astype(np.float32)
    out = crops.copy()
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
    for t in range(1, len(crops)):
        grey = cv2.cvtColor(crops[t], cv2.COLOR_RGB2GRAY).astype(np.float32)
        try:
            _, warp = cv2.findTransformECC(reference, grey, np.eye(2, 3, dtype=np.float32),
                                           cv2.MOTION_TRANSLATION, criteria, inner, 3)
        except cv2.error:  # no convergence (e.g. a blink-only frame pair): leave the frame
            continue
        if np.abs(warp[:, 2]).max() > size / 8:  # a jump that large is a failed estimate
            continue
        out[t] = cv2.warpAffine(crops[t], warp, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REPLICATE)
    return out


@lru_cache(maxsize=4)
def _detector(min_face_px: int) -> FaceDetector:
    return FaceDetector(min_face_px)


def _detect(frames: list[np.ndarray], min_face_px: int) -> FaceBox:
    """Face on the first frame (the onset), else on the middle one."""
    detector = _detector(min_face_px)
    try:
        return detector.detect(frames[0])
    except NoFaceError:
        return detector.detect(frames[len(frames) // 2])


def align_window(frames: list[np.ndarray], numbers: list[int], settings: CropSettings,
                 where: str) -> tuple[FaceBox, np.ndarray]:
    """Detect the face once, crop every frame around it and register the crops to the
    first: BGR frames → (box, (T, S, S, 3) uint8 RGB). Ingest and `mer predict` share it.

    Raises:
        FrameReadError: the frames differ in size.
        NoFaceError: no face on the onset or the middle frame; the message names them.
    """
    check_same_size(frames, [f"frame {n}" for n in numbers], where)
    try:
        box = _detect(frames, settings.min_face_px)
    except NoFaceError:
        raise NoFaceError(f"no face detected in frames {numbers[0]} or {numbers[len(numbers) // 2]}") from None
    crops = np.stack([crop_face(f, box, settings.crop_size, settings.face_margin) for f in frames])
    if settings.stabilize:
        crops = stabilize_clip(crops, settings.face_margin)
    return box, crops
