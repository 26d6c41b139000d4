"""The face front end on rendered faces: detection, landmarks, tracking, alignment, masks,
and what it must refuse (no face, two faces, a face lost mid-clip, letters)."""

import cv2
import numpy as np
import pytest

from mer_core.data.faces import (
    CropSettings,
    NoFaceError,
    align_window,
    canonical_eyes,
    face_finder,
    face_mask,
    similarity,
    transform,
)
from mer_core.data.synthetic import ACTION_UNITS, FaceRenderer, sample_identity
from mer_core.data.video import FrameReadError

SETTINGS = CropSettings(64, 4, 1, 1, 0.15, 48)
NEUTRAL = np.zeros((len(ACTION_UNITS), 2))


def _renderer(seed: int, size: int = 192) -> FaceRenderer:
    return FaceRenderer(sample_identity(np.random.default_rng(seed)), size)


def _moved(frame: np.ndarray, dx: float = 0.0, dy: float = 0.0, degrees: float = 0.0) -> np.ndarray:
    size = frame.shape[0]
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), degrees, 1.0)
    matrix[:, 2] += (dx, dy)
    return cv2.warpAffine(frame, matrix, (size, size), borderMode=cv2.BORDER_REFLECT)


def test_similarity_recovers_a_known_transform():
    points = np.random.default_rng(0).uniform(0, 100, (10, 2))
    known = cv2.getRotationMatrix2D((40, 60), 12, 0.7)
    assert np.allclose(similarity(points, transform(known, points)), known)


@pytest.mark.parametrize("seed", range(3))
def test_a_tilted_head_comes_out_level_with_the_eyes_where_alignment_puts_them(seed):
    frame = _moved(_renderer(seed).render(NEUTRAL), dx=6, degrees=8)
    aligned = align_window([frame] * 4, [0, 1, 2, 3], SETTINGS, "tilted")
    assert aligned.crops.shape == (4, 64, 64, 3) and aligned.crops.dtype == np.uint8
    eyes = np.stack([aligned.landmarks[36:42].mean(0), aligned.landmarks[42:48].mean(0)])
    assert np.abs(eyes - canonical_eyes(64, 0.15)).max() < 1e-3
    assert aligned.face.score > 0 and 48 <= aligned.face.box[2] <= 192


@pytest.mark.parametrize("alignment, degrees", [("landmarks", (0, 2, -3, 4)), ("onset", (0, 0, 0, 0))])
def test_head_motion_inside_a_clip_is_aligned_away(alignment, degrees):
    """Landmarks map each frame onto the onset, rotation included; the default (`onset`)
    leaves head motion to ECC, which removes translation only."""
    renderer = _renderer(4)
    frames = [_moved(renderer.render(NEUTRAL), dx, dy, deg) for (dx, dy), deg in
              zip([(0, 0), (3, -2), (-4, 3), (6, 1)], degrees)]
    settings = CropSettings(64, 4, 1, 1, 0.15, 48, alignment=alignment)
    crops = align_window(frames, [10, 11, 12, 13], settings, "moving").crops.astype(float)
    unaligned = np.abs(np.diff([cv2.resize(f, (64, 64)).astype(float) for f in frames], axis=0)).mean()
    assert np.abs(crops[1:] - crops[0]).mean() < 0.3 * unaligned


def test_rendered_landmarks_are_found_within_a_fifteenth_of_the_eye_distance():
    """The synthetic benchmark as a landmark test: dlib's 68 points against where the
    renderer drew brows, eyes, nose and lips (mean error / inter-ocular distance)."""
    finder = face_finder("hog", "dlib68", 48)
    errors = []
    for seed in range(6):
        renderer = _renderer(100 + seed)
        au = NEUTRAL if seed % 2 else np.random.default_rng(seed).uniform(0, 0.6, NEUTRAL.shape)
        truth = renderer.landmarks(au)
        found = finder.find(renderer.render(au), 0).landmarks
        distance = np.linalg.norm(truth[42:48].mean(0) - truth[36:42].mean(0))
        errors.append(np.nanmean(np.linalg.norm(found - truth, axis=1)) / distance)
    assert np.mean(errors) < 0.065, errors


def test_no_face_raises_naming_the_frame():
    with pytest.raises(NoFaceError, match="no face detected in frame 7"):
        align_window([np.full((192, 192, 3), 127, np.uint8)] * 2, [7, 8], SETTINGS, "blank")


def test_a_title_card_of_letters_is_not_a_face():
    card = np.full((360, 640, 3), 30, np.uint8)
    for row, text in enumerate(["MICRO", "EXPRESSIONS", "2026 (c) MER"]):
        cv2.putText(card, text, (40, 110 + row * 100), cv2.FONT_HERSHEY_SIMPLEX, 2.5, (240, 240, 240), 6)
    with pytest.raises(NoFaceError, match="no face"):
        face_finder("hog", "dlib68", 48).find(card, 0)


def test_two_faces_are_refused():
    first, second = _renderer(1, 160).render(NEUTRAL), _renderer(2, 160).render(NEUTRAL)
    with pytest.raises(NoFaceError, match="2 faces in frame 0; one expected"):
        align_window([np.hstack([first, second])] * 2, [0, 1], SETTINGS, "pair")


def test_a_black_frame_mid_clip_is_refused_naming_the_frame():
    frame = _renderer(5).render(NEUTRAL)
    with pytest.raises(NoFaceError, match="face lost at frame 12: the detector no longer finds it"):
        align_window([frame, frame, np.zeros_like(frame), frame], [10, 11, 12, 13], SETTINGS, "black")


def test_a_face_leaving_the_picture_is_refused_naming_the_frame():
    frame = _renderer(5).render(NEUTRAL)
    leaving = [cv2.warpAffine(frame, np.float32([[1, 0, dx], [0, 1, 0]]), (192, 192)) for dx in (0, 25, 50, 75, 100)]
    with pytest.raises(NoFaceError, match=r"face lost at frame 1[1-4]"):
        align_window(leaving, [10, 11, 12, 13, 14], SETTINGS, "leaving")


def test_the_mask_keeps_the_face_from_brows_to_chin_and_blanks_the_background():
    aligned = align_window([_renderer(6).render(NEUTRAL)] * 2, [0, 1], SETTINGS, "masked")
    mask = face_mask(64, aligned.landmarks)
    inside = np.round(aligned.landmarks).astype(int)
    assert mask[inside[:, 1].clip(0, 63), inside[:, 0].clip(0, 63)].all()
    assert not mask[0, 0] and not mask[0, 63] and not mask[63, 0] and not mask[63, 63]
    brow_top = aligned.landmarks[17:27, 1].min()
    assert mask[int(brow_top) - 2, 32], "a raised brow stays inside"


def test_frames_of_another_size_in_a_video_window_are_named():
    frames = [np.zeros((120, 160, 3), np.uint8)] * 3 + [np.zeros((60, 80, 3), np.uint8)]
    with pytest.raises(FrameReadError, match=r"clip\.avi window 0: frames differ in size: frame 13 is 80×60 "
                                             r"where the others are 160×120"):
        align_window(frames, [10, 11, 12, 13], SETTINGS, "clip.avi window 0")


@pytest.mark.parametrize("detector, landmarks, alignment", [("haar", "dlib68", "box"), ("hog", "dlib5", "landmarks"),
                                                             ("hog", "dlib68", "landmarks")])
def test_the_other_front_ends_align_a_rendered_face(detector, landmarks, alignment):
    settings = CropSettings(64, 4, 1, 1, 0.15, 48, face_detector=detector, landmark_model=landmarks,
                            alignment=alignment)
    frame = _renderer(7).render(NEUTRAL)
    aligned = align_window([frame, _moved(frame, 2, 1)], [0, 1], settings, "other")
    assert aligned.landmarks.shape == ({"dlib68": 68, "dlib5": 5}[landmarks], 2)
    assert aligned.crops.std() > 20 and face_mask(64, aligned.landmarks)[32, 32]
