"""Face detection, levelling and cropping on rendered faces."""

import cv2
import numpy as np
import pytest

from mer_core.data.faces import (
    CropSettings,
    FaceDetector,
    NoFaceError,
    align_window,
    crop_face,
    face_ellipse_mask,
)
from mer_core.data.synthetic import ACTION_UNITS, FaceRenderer, sample_identity
from mer_core.data.video import FrameReadError


def _face(seed: int, size: int = 192) -> np.ndarray:
    renderer = FaceRenderer(sample_identity(np.random.default_rng(seed)), size)
    return renderer.render(np.zeros((len(ACTION_UNITS), 2)))


@pytest.mark.parametrize("seed", range(4))
def test_detects_rendered_face_and_levels_a_tilted_head(seed):
    detector = FaceDetector(min_face_px=48)
    frame = _face(seed)
    tilted = cv2.warpAffine(frame, cv2.getRotationMatrix2D((96, 96), 8, 1.0), (192, 192),
                            borderMode=cv2.BORDER_REFLECT)
    box = detector.detect(frame)
    assert 90 < box.w < 170 and abs(box.center[0] - 96) < 25
    assert abs(box.roll_deg) < 3
    assert detector.detect(tilted).roll_deg == pytest.approx(-8, abs=3)


def test_no_face_raises():
    with pytest.raises(NoFaceError):
        FaceDetector().detect(np.full((192, 192, 3), 127, np.uint8))


def test_crop_is_square_rgb_and_centred_on_the_face():
    frame = _face(1)
    box = FaceDetector().detect(frame)
    crop = crop_face(frame, box, size=64, margin=0.15)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    # RGB order: the background corner keeps the renderer's BGR colour reversed.
    assert np.allclose(crop[1, 1], frame[int(box.y - 0.15 * box.h) + 2, int(box.x - 0.15 * box.w) + 2][::-1], atol=40)
    mask = face_ellipse_mask(64, 0.15)
    inside, outside = crop[mask].std(), crop[~mask].std()
    assert inside > outside, "the face (eyes, brows, mouth) carries more structure than the border"


def test_frames_of_another_size_in_a_video_window_are_named():
    frames = [np.zeros((120, 160, 3), np.uint8)] * 3 + [np.zeros((60, 80, 3), np.uint8)]
    settings = CropSettings(64, 4, 1, 1, 0.15, 48)
    with pytest.raises(FrameReadError, match=r"clip\.avi window 0: frames differ in size: frame 13 is 80×60 "
                                             r"where the others are 160×120"):
        align_window(frames, [10, 11, 12, 13], settings, "clip.avi window 0")
