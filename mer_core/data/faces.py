"""Faces: detect, fit landmarks, track through a clip, align, crop and mask.

One front end for `ingest` and `mer predict` (`align_window`, `track_stream`):

1. **Detect** the face on the onset frame: dlib's HOG detector (default) or OpenCV's Haar
   cascade. No face, or more than one, is a rejection.
2. **Landmarks**: dlib's 68-point (iBUG 300-W layout) or 5-point shape predictor, from the
   `face-recognition-models` package (nothing is downloaded). The 68-point model was trained
   on iBUG 300-W, whose terms exclude commercial use; the 5-point model has no such limit.
3. **Track** through every later frame: the shape is refitted from the previous frame's box,
   and the detector must find the face again where the track says it is; a face that left
   the picture, a black frame or a detector false positive that does not hold up is a
   rejection naming the frame.
4. **Align**: a similarity transform puts the onset's eye centres at fixed places (eyes
   level, fixed inter-ocular distance, fixed margin). With `alignment: onset` (the default)
   every frame is cut with that one transform and `stabilize` registers it to the onset by a
   sub-pixel ECC translation inside the face; with `alignment: landmarks` every later frame
   is first mapped onto the onset by a least-squares similarity over the landmarks that
   expressions do not move (eye corners, nose), which also removes head rotation but adds
   the landmark fit's own noise to the motion (on the tuning benchmark: flow baseline 0.588
   vs 0.540 UF1, difference baseline 0.586 vs 0.547).

The clip table keeps the onset's landmarks in crop coordinates, so masks, warps and facial
regions read them (`REGIONS`, `face_mask`).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from mer_core import MerError
from mer_core.data.video import check_same_size


class NoFaceError(MerError, ValueError):
    """No single, trackable face where one was expected; the message says why and where."""


class FaceModelError(MerError, RuntimeError):
    """A face model file is missing from the installed packages."""


# ------------------------------------------------------------------------- landmark layouts
LANDMARK_POINTS = {"dlib68": 68, "dlib5": 5}
_LANDMARK_FILES = {"dlib68": "shape_predictor_68_face_landmarks.dat", "dlib5": "shape_predictor_5_face_landmarks.dat"}
# Eye points, image left then image right (the subject's right eye is on the image's left).
_EYES = {"dlib68": (list(range(36, 42)), list(range(42, 48))), "dlib5": ([2, 3], [0, 1])}
# Points that expressions and blinks do not move: they carry the head's motion alone.
_RIGID = {"dlib68": [27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45], "dlib5": [0, 1, 2, 3, 4]}
# Facial regions of the 68-point layout (image left / right).
REGIONS = {
    "brow_left": list(range(17, 22)), "brow_right": list(range(22, 27)),
    "eye_left": list(range(36, 42)), "eye_right": list(range(42, 48)),
    "nose": list(range(27, 36)), "mouth": list(range(48, 68)), "jaw": list(range(0, 17)),
}

# Where an aligned crop puts the eyes, in units of the inner face square (the crop's side
# without its margins, crop_size / (1 + 2 * face_margin)): centred, this far apart, on this
# line from the square's top: the Haar box's geometry as measured on the synthetic crops
# (eyes 0.41 of its side apart, 0.29 down; at 64 px, 20.5 px apart, brows to chin in y 14-57).
# The earlier 0.34 / 0.40 left the face 20 % smaller in the crop, and its micro-motion with it:
# on the tuning benchmark the flow baseline lost 0.04 UF1 and the difference baseline 0.05.
EYE_DISTANCE = 0.41
EYE_LINE = 0.29
# dlib's HOG detector scans an 80-pixel window: frames are scaled so that the smallest face
# wanted (`min_face_px`) fills it.
_HOG_WINDOW = 80
# The shape predictor expects dlib's (tighter) box: a Haar box shrunk and moved down by the
# mean relation measured on rendered faces.
_HAAR_TO_DLIB = (0.8, 0.08)  # (width factor, downward shift in Haar box widths)
# Checking a tracked face: the detector runs on the box enlarged this much, resampled so
# the box is _CHECK_PX wide, with this threshold (below the onset's 0: the track is a prior).
_CHECK_CONTEXT, _CHECK_PX, _CHECK_THRESHOLD = 1.4, 90, -0.4


def landmark_model_path(name: str) -> Path:
    """The shape predictor file `face-recognition-models` installs, found without importing
    the package (its `__init__` needs `pkg_resources`, which current setuptools lacks).

    Raises:
        FaceModelError: the package or the file is missing.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelError("the face-recognition-models package is not installed; `make install` installs it")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / _LANDMARK_FILES[name]
    if not path.is_file():
        raise FaceModelError(f"{path} is missing; reinstall face-recognition-models")
    return path


# ------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class CropSettings:
    """How a clip's frames become aligned face crops; ingest and `mer predict` share them.

    `face_detector`: hog | haar. `landmark_model`: dlib68 | dlib5. `alignment`: landmarks
    (similarity on the eye centres, every frame mapped onto the onset) | onset (the onset's
    eye similarity for every frame) | box (the onset detector box levelled by the eye line,
    the same crop for every frame: the earlier front end).
    """

    crop_size: int
    frames_per_clip: int
    window_stride: int
    windows_per_video: int
    face_margin: float
    min_face_px: int
    stabilize: bool = True
    face_detector: str = "hog"
    landmark_model: str = "dlib68"
    alignment: str = "onset"

    @classmethod
    def from_params(cls, params) -> CropSettings:
        """From the `ingest` section of params (an `IngestParams`)."""
        return cls(params.crop_size, params.frames_per_clip, params.window_stride, params.windows_per_video,
                   params.face_margin, params.min_face_px, params.stabilize, params.face_detector,
                   params.landmark_model, params.alignment)


@dataclass(frozen=True)
class Face:
    """A face in one frame, in source pixels: its box (x, y, w, h, in dlib's convention),
    its landmarks (K, 2) and the detector's confidence."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    def eye_centres(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        """(image-left eye, image-right eye) centres, (2,) each."""
        left, right = _EYES[model]
        return self.landmarks[left].mean(0), self.landmarks[right].mean(0)


@dataclass(frozen=True)
class AlignedClip:
    """A clip's aligned crops (T, S, S, 3) uint8 RGB; the onset face in source pixels and its
    landmarks in crop coordinates (K, 2) float32; and each frame's source → crop matrix
    (T, 2, 3), stabilisation included."""

    face: Face
    crops: np.ndarray
    landmarks: np.ndarray
    matrices: np.ndarray


# ------------------------------------------------------------------------- geometry
def similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, translation; no reflection)
    mapping points (N, 2) onto points (N, 2), as a 2x3 matrix."""
    src, dst = source - source.mean(0), target - target.mean(0)
    zs, zd = src[:, 0] + 1j * src[:, 1], dst[:, 0] + 1j * dst[:, 1]
    z = (np.conj(zs) @ zd) / max(float((np.abs(zs) ** 2).sum()), 1e-12)
    linear = np.array([[z.real, -z.imag], [z.imag, z.real]])
    return np.hstack([linear, (target.mean(0) - linear @ source.mean(0))[:, None]])


def transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N, 2) through a 2x3 affine matrix."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of `outer` after `inner`."""
    return np.vstack([outer, [0, 0, 1]])[:2] @ np.vstack([inner, [0, 0, 1]])


def canonical_eyes(size: int, margin: float) -> np.ndarray:
    """(2, 2): where an aligned crop of side `size` puts the image-left and image-right eye centres."""
    square = size / (1 + 2 * margin)
    y = margin * square + EYE_LINE * square - 0.5  # pixel centres: the crop spans -0.5 .. size - 0.5
    middle = (size - 1) / 2
    return np.array([[middle - EYE_DISTANCE * square / 2, y], [middle + EYE_DISTANCE * square / 2, y]])


def eye_matrix(face: Face, model: str, size: int, margin: float) -> np.ndarray:
    """2x3 matrix from source pixels to the aligned crop: eyes level and at `canonical_eyes`."""
    return similarity(np.stack(face.eye_centres(model)), canonical_eyes(size, margin))


def box_matrix(face: Face, model: str, size: int, margin: float) -> np.ndarray:
    """2x3 matrix from source pixels to a crop of the detector's box with `margin` around it,
    levelled by the eye line (the earlier front end's crop)."""
    x, y, w, h = face.box
    left, right = face.eye_centres(model)
    roll = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
    side = max(w, h) * (1 + 2 * margin)
    matrix = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), roll, size / side)
    matrix[:, 2] += (size / 2 - (x + w / 2), size / 2 - (y + h / 2))
    return matrix


def warp_to_crop(frame_bgr: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB crop of a frame through a source → crop matrix.

    When the crop is smaller than the face in the source, the frame is warped at source
    resolution and then area-averaged down: a sub-pixel facial movement survives as a
    smooth intensity change instead of aliasing away.
    """
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    side = max(size, int(math.ceil(size / scale))) if scale < 1 else size
    full = matrix * (side / size)
    square = cv2.warpAffine(frame_bgr, full, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    crop = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA) if side != size else square
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)


# ------------------------------------------------------------------------- masks
def _outline_from_eyes(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(36, 2): a circle around the face placed by the eye centres alone: radius 1.35 and
    centre 0.5 inter-ocular distances below their midpoint, so that it holds the 68-point
    outline of a typical face (jaw ±1.2 wide at the eyes, lifted brows 0.75 above, chin 1.75
    below): masking a landmark-masked crop with it again changes nothing."""
    distance = float(np.linalg.norm(right - left))
    angle = math.atan2(right[1] - left[1], right[0] - left[0])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    t = np.linspace(0, 2 * np.pi, 36, endpoint=False)
    local = np.stack([1.35 * np.cos(t), 0.5 + 1.35 * np.sin(t)], 1) * distance  # eyes on y = 0
    return local @ rotation.T + (left + right) / 2


def face_outline(landmarks: np.ndarray) -> np.ndarray:
    """Points (N, 2) whose convex hull is the face: the 68 landmarks with the brows lifted
    by 0.35 inter-ocular distances (a raised brow and its forehead wrinkles stay inside),
    or for 5 points a circle placed by the eye centres."""
    if len(landmarks) == LANDMARK_POINTS["dlib68"]:
        left, right = (landmarks[ids].mean(0) for ids in _EYES["dlib68"])
        (dx, dy) = right - left
        up = 0.35 * np.array([dy, -dx])  # the eye line turned a quarter turn: up the face
        return np.vstack([landmarks, landmarks[REGIONS["brow_left"] + REGIONS["brow_right"]] + up])
    left, right = (landmarks[ids].mean(0) for ids in _EYES["dlib5"])
    return _outline_from_eyes(left, right)


def _hull_mask(size: int, outline: np.ndarray) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    hull = np.round(cv2.convexHull(outline.astype(np.float32)) * 16).astype(np.int32)
    cv2.fillConvexPoly(mask, hull, 1, cv2.LINE_8, shift=4)
    return mask.astype(bool)


def face_mask(size: int, landmarks: np.ndarray) -> np.ndarray:
    """(size, size) bool: the face inside a crop, from its landmarks (K, 2) in crop pixels."""
    return _hull_mask(size, face_outline(landmarks))


def canonical_face_mask(size: int, margin: float) -> np.ndarray:
    """(size, size) bool: where alignment puts a face in a crop made with `margin`, for crops
    whose landmarks are not known."""
    return _hull_mask(size, _outline_from_eyes(*canonical_eyes(size, margin)))


def mask_outside_face(crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Crops (T, S, S, C) with everything outside the hull of their face's landmarks set to 0."""
    return crops * face_mask(crops.shape[1], landmarks)[None, :, :, None]


# ------------------------------------------------------------------------- detection, landmarks
def _grey(frame_bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)


class FaceFinder:
    """The detector and the shape predictor: finds a face, refits it frame to frame, and
    checks that a tracked face is still there."""

    def __init__(self, detector: str = "hog", landmark_model: str = "dlib68", min_face_px: int = 48):
        import dlib  # here, so that importing this module stays cheap

        self._dlib = dlib
        self.detector, self.landmark_model, self.min_face_px = detector, landmark_model, min_face_px
        self._predictor = dlib.shape_predictor(str(landmark_model_path(landmark_model)))
        if detector == "hog":
            self._hog = dlib.get_frontal_face_detector()
        else:
            path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
            self._haar = cv2.CascadeClassifier(str(path))
            if self._haar.empty():
                raise FaceModelError(f"OpenCV's Haar cascade {path} is missing; install opencv-python-headless 4.x")

    # -- detection: boxes (x, y, w, h) in dlib's convention, with scores
    def detect(self, grey: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        """Every face of at least `min_face_px` in a grey frame, most confident first."""
        found = self._detect_hog(grey) if self.detector == "hog" else self._detect_haar(grey)
        return sorted((f for f in found if f[0][2] >= self.min_face_px), key=lambda f: -f[1])

    def _detect_hog(self, grey: np.ndarray, threshold: float = 0.0, scale: float | None = None):
        scale = _HOG_WINDOW / self.min_face_px if scale is None else scale
        image = grey if abs(scale - 1) < 0.05 else cv2.resize(
            grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)
        rects, scores, _ = self._hog.run(image, 0, threshold)
        return [((r.left() / scale, r.top() / scale, r.width() / scale, r.height() / scale), float(s))
                for r, s in zip(rects, scores)]

    def _detect_haar(self, grey: np.ndarray, min_px: int | None = None):
        boxes, _, weights = self._haar.detectMultiScale3(
            cv2.equalizeHist(grey), scaleFactor=1.1, minNeighbors=5, minSize=(min_px or self.min_face_px,) * 2,
            outputRejectLevels=True)
        width, down = _HAAR_TO_DLIB
        return [((x + w * (1 - width) / 2, y + h * (1 - width) / 2 + down * w, w * width, h * width), float(s))
                for (x, y, w, h), s in zip(boxes, np.ravel(weights))]

    # -- landmarks
    def fit(self, grey: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """(K, 2) landmarks of the face in `box`."""
        x, y, w, h = box
        rect = self._dlib.rectangle(int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h)))
        shape = self._predictor(grey, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64)

    # -- the track
    def find(self, frame_bgr: np.ndarray, number: int) -> Face:
        """The one face of a frame, with its landmarks.

        Raises:
            NoFaceError: no face, or more than one.
        """
        grey = _grey(frame_bgr)
        found = self.detect(grey)
        if not found:
            raise NoFaceError(f"no face detected in frame {number}")
        if len(found) > 1:
            raise NoFaceError(f"{len(found)} faces in frame {number}; one expected")
        box, score = found[0]
        return Face(box, self.fit(grey, box), score)

    def follow(self, frame_bgr: np.ndarray, number: int, previous: Face, onset: Face) -> Face:
        """The tracked face in the next frame: landmarks refitted from the previous box, then
        checked by the detector where the track says the face is.

        Raises:
            NoFaceError: the face left the picture, or the detector no longer finds it there.
        """
        grey = _grey(frame_bgr)
        landmarks = self.fit(grey, previous.box)
        height, width = grey.shape
        rigid = landmarks[_RIGID[self.landmark_model]]
        if (rigid < 0).any() or (rigid[:, 0] >= width).any() or (rigid[:, 1] >= height).any():
            raise NoFaceError(f"face lost at frame {number}: it left the picture")
        box = moved_box(onset, landmarks, self.landmark_model)
        score = self.check(grey, box)
        if score is None:
            raise NoFaceError(f"face lost at frame {number}: the detector no longer finds it where it was tracked")
        return Face(box, landmarks, score)

    def check(self, grey: np.ndarray, box: tuple[float, float, float, float]) -> float | None:
        """The detector's score for a face at `box`, or None when it finds none there."""
        x, y, w, h = box
        scale = _CHECK_PX / w
        side = int(round(_CHECK_CONTEXT * _CHECK_PX))
        matrix = np.array([[scale, 0, side / 2 - scale * (x + w / 2)], [0, scale, side / 2 - scale * (y + h / 2)]])
        region = cv2.warpAffine(grey, matrix, (side, side), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        found = (self._detect_hog(region, _CHECK_THRESHOLD, 1.0) if self.detector == "hog"
                 else self._detect_haar(region, int(_CHECK_PX * 0.6)))
        for (fx, fy, fw, _), score in found:
            centre_off = math.hypot(fx + fw / 2 - side / 2, fy + fw / 2 - side / 2)
            if centre_off < 0.3 * _CHECK_PX and 0.6 < fw / _CHECK_PX < 1.6:
                return score
        return None


def moved_box(onset: Face, landmarks: np.ndarray, model: str) -> tuple[float, float, float, float]:
    """The onset's box carried along by the head's motion since the onset (the similarity of
    the rigid landmarks), so the box keeps the detector's convention."""
    rigid = _RIGID[model]
    matrix = similarity(onset.landmarks[rigid], landmarks[rigid])
    x, y, w, h = onset.box
    cx, cy = transform(matrix, np.array([[x + w / 2, y + h / 2]]))[0]
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    return cx - w * scale / 2, cy - h * scale / 2, w * scale, h * scale


@lru_cache(maxsize=4)
def face_finder(detector: str, landmark_model: str, min_face_px: int) -> FaceFinder:
    """One FaceFinder per setting and process (loading the 68-point model takes ~1 s)."""
    return FaceFinder(detector, landmark_model, min_face_px)


def _finder(settings: CropSettings) -> FaceFinder:
    return face_finder(settings.face_detector, settings.landmark_model, settings.min_face_px)


# ------------------------------------------------------------------------- clips
def track_faces(frames: list[np.ndarray], numbers: list[int], settings: CropSettings) -> list[Face]:
    """The face on the first frame (the onset), followed through the others.

    Raises:
        NoFaceError: no single face on the onset, or the track was lost; the message names the frame.
    """
    finder = _finder(settings)
    faces = [finder.find(frames[0], numbers[0])]
    for frame, number in zip(frames[1:], numbers[1:]):
        faces.append(finder.follow(frame, number, faces[-1], faces[0]))
    return faces


def alignment_matrices(faces: list[Face], settings: CropSettings) -> list[np.ndarray]:
    """Source → crop matrices of a clip's frames, whose first face is the reference."""
    model, onset = settings.landmark_model, faces[0]
    if settings.alignment == "box":
        return [box_matrix(onset, model, settings.crop_size, settings.face_margin)] * len(faces)
    reference = eye_matrix(onset, model, settings.crop_size, settings.face_margin)
    if settings.alignment == "onset":
        return [reference] * len(faces)
    rigid = _RIGID[model]
    return [reference] + [_compose(reference, similarity(f.landmarks[rigid], onset.landmarks[rigid]))
                          for f in faces[1:]]


def align_faces(frames: list[np.ndarray], faces: list[Face], settings: CropSettings) -> AlignedClip:
    """Crops of tracked frames, registered to the first: BGR frames → an AlignedClip.

    With `stabilize`, the residual translation ECC finds is folded into each frame's
    matrix and the frame is cut again from the source, so every crop is interpolated once.
    """
    size = settings.crop_size
    matrices = np.stack(alignment_matrices(faces, settings))
    crops = np.stack([warp_to_crop(f, m, size) for f, m in zip(frames, matrices)])
    landmarks = transform(matrices[0], faces[0].landmarks).astype(np.float32)
    if settings.stabilize:
        shifts = stabilizing_shifts(crops, face_mask(size, landmarks))
        matrices[:, :, 2] -= shifts
        for t in np.flatnonzero(np.abs(shifts).sum(1) > 0):
            crops[t] = warp_to_crop(frames[t], matrices[t], size)
    return AlignedClip(faces[0], crops, landmarks, matrices)


def align_window(frames: list[np.ndarray], numbers: list[int], settings: CropSettings, where: str) -> AlignedClip:
    """Detect the face on the first frame, track it through the others, crop and register
    every frame: BGR frames → an AlignedClip. Ingest and `mer predict` share it.

    Raises:
        FrameReadError: the frames differ in size.
        NoFaceError: no single face on the first frame, or the track was lost.
    """
    check_same_size(frames, [f"frame {n}" for n in numbers], where)
    return align_faces(frames, track_faces(frames, numbers, settings), settings)


@dataclass(frozen=True)
class TrackedFrame:
    """A frame of a stream with its tracked face, or the reason it has none."""

    frame: np.ndarray
    face: Face | None
    reason: str = ""


def track_stream(frames: Iterator[tuple[int, np.ndarray]], settings: CropSettings, retry_every: int = 5
                 ) -> Iterator[tuple[int, TrackedFrame]]:
    """Follow the face through a video stream: detect once, refit each frame, detect again
    (every `retry_every` frames) after the track is lost. Yields (number, TrackedFrame)."""
    finder = _finder(settings)
    start = previous = None
    reason, wait = "", 0
    for number, frame in frames:
        try:
            if previous is None:
                if wait > 0:
                    wait -= 1
                    raise NoFaceError(reason)
                start = previous = finder.find(frame, number)
            else:
                previous = finder.follow(frame, number, previous, start)
        except NoFaceError as exc:
            start = previous = None
            if not wait:
                reason, wait = str(exc), retry_every - 1
            yield number, TrackedFrame(frame, None, reason)
            continue
        yield number, TrackedFrame(frame, previous)


def stabilizing_shifts(crops: np.ndarray, face: np.ndarray) -> np.ndarray:
    """(T, 2) translation of each crop (T, H, W, 3) to the first, in crop pixels.

    What the landmarks leave of the head's motion is a fraction of a pixel, and at
    micro-expression scale as large as the expression. ECC estimates it inside the face
    (`face`: (H, W) bool; the background does not move with the face); a frame whose
    estimate does not converge, or jumps implausibly, gets no shift.
    """
    size = crops.shape[1]
    inner = cv2.erode(face.astype(np.uint8) * 255, np.ones((5, 5), np.uint8))
    reference = cv2.cvtColor(crops[0], cv2.COLOR_RGB2GRAY).astype(np.float32)
    shifts = np.zeros((len(crops), 2))
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
    for t in range(1, len(crops)):
        grey = cv2.cvtColor(crops[t], cv2.COLOR_RGB2GRAY).astype(np.float32)
        try:
            _, warp = cv2.findTransformECC(reference, grey, np.eye(2, 3, dtype=np.float32),
                                           cv2.MOTION_TRANSLATION, criteria, inner, 3)
        except cv2.error:  # no convergence (e.g. a blink-only frame pair): leave the frame
            continue
        if np.abs(warp[:, 2]).max() <= size / 8:  # a jump that large is a failed estimate
            shifts[t] = warp[:, 2]
    return shifts
