"""The embedded data set: deterministic, consistent with its own annotations, and with
micro movements much smaller than macro ones."""

import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mer_core.config import SynthesizeParams
from mer_core.data.synthetic import (
    ACTION_UNITS,
    AU_INDEX,
    MACRO_MANIFEST_NAME,
    MICRO_SHEET_NAME,
    FaceRenderer,
    expression_curve,
    sample_identity,
    synthesize,
)
from tests.conftest import tiny_params


def _sheet(root: Path) -> pd.DataFrame:
    return pd.read_excel(root / "micro" / MICRO_SHEET_NAME, dtype=object)


def test_sheet_has_casme2_columns(tiny_synthetic):
    sheet = _sheet(tiny_synthetic)
    assert list(sheet.columns) == ["Subject", "Filename", "Unnamed: 2", "OnsetFrame", "ApexFrame", "OffsetFrame",
                                   "Unnamed: 6", "Action Units", "Estimated Emotion"]
    assert len(sheet) == 3 * 4


def test_annotations_match_files(tiny_synthetic):
    for _, row in _sheet(tiny_synthetic).iterrows():
        folder = tiny_synthetic / "micro" / f"sub{int(row.Subject):02d}" / row.Filename
        numbers = sorted(int(p.stem[3:]) for p in folder.glob("img*.jpg"))
        assert numbers == list(range(numbers[0], numbers[-1] + 1)), "frame numbers must be contiguous"
        assert numbers[0] < row.OnsetFrame <= row.ApexFrame <= row.OffsetFrame < numbers[-1]
        duration_s = (row.OffsetFrame - row.OnsetFrame) / 50
        assert duration_s < 0.5, "a micro-expression lasts under half a second"


def test_macro_videos_and_manifest(tiny_synthetic):
    manifest = pd.read_csv(tiny_synthetic / "macro" / MACRO_MANIFEST_NAME)
    assert len(manifest) == 2 * 2
    for _, row in manifest.iterrows():
        capture = cv2.VideoCapture(str(tiny_synthetic / "macro" / row.path))
        n = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()
        assert n >= row.offset >= row.apex >= row.onset >= 0
    micro_subjects = {f"sub{int(s):02d}" for s in _sheet(tiny_synthetic).Subject}
    assert micro_subjects.isdisjoint(set(manifest.subject))


def test_same_seed_same_data_for_any_workers_other_seed_other_data(tmp_path):
    def render(folder: Path, seed: int, workers: int = 1) -> tuple[pd.DataFrame, dict[str, bytes]]:
        raw = tiny_params(folder)
        raw["synthesize"]["seed"] = seed
        raw["synthesize"]["micro"].update(subjects=2, clips_per_subject=1)
        raw["synthesize"]["macro"].update(subjects=1, clips_per_subject=1)
        params = SynthesizeParams.model_validate(raw["synthesize"])
        out = folder / "synthetic"
        synthesize(params, out, workers=workers)
        return _sheet(out), {str(f.relative_to(out)): f.read_bytes() for f in sorted(out.rglob("*")) if f.is_file()}

    sheet_a, files_a = render(tmp_path / "a", seed=3)
    time.sleep(2.1)  # past the zip format's 2-second clock, so save-time stamps would show
    sheet_b, files_b = render(tmp_path / "b", seed=3, workers=2)
    sheet_c, files_c = render(tmp_path / "c", seed=4)
    pd.testing.assert_frame_equal(sheet_a, sheet_b)
    # Byte for byte, sheet and videos included: DVC sees the same raw data after a re-run,
    # rendered by one process or several.
    assert files_a == files_b
    def first_frame(files: dict[str, bytes]) -> bytes:
        return next(content for name, content in files.items() if name.endswith(".jpg"))

    assert first_frame(files_a) != first_frame(files_c)


def test_expression_curve_shape():
    curve = expression_curve(50, onset=10, apex=20, offset=40)
    assert curve[:11].max() == pytest.approx(0.0)
    assert curve[20] == pytest.approx(1.0)
    assert curve[40:].max() == pytest.approx(0.0)
    assert np.all(np.diff(curve[10:21]) >= 0) and np.all(np.diff(curve[20:41]) <= 0)


@pytest.mark.parametrize("au", [1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45])
def test_every_action_unit_moves_the_face_and_micro_moves_it_less(au):
    # Summed over three faces: a sub-pixel movement changes a face's pixels by more or less
    # depending on where its edges fall on the pixel grid.
    neutral = np.zeros((len(ACTION_UNITS), 2))
    macro, micro = neutral.copy(), neutral.copy()
    macro[AU_INDEX[au]] = 1.0
    micro[AU_INDEX[au]] = 0.2
    macro_change = micro_change = 0
    for seed in (au, au + 100, au + 200):
        renderer = FaceRenderer(sample_identity(np.random.default_rng(seed)), 128)
        base = renderer.render(neutral).astype(int)
        macro_change += np.abs(renderer.render(macro).astype(int) - base).sum()
        change = np.abs(renderer.render(micro).astype(int) - base).sum()
        assert change > 0, f"AU{au} at micro intensity must still change the image"
        micro_change += change
    assert macro_change > 2.5 * micro_change


@pytest.mark.parametrize("seed", range(3))
def test_the_renderer_knows_where_it_drew_brows_eyes_nose_and_mouth(seed):
    """The truth the landmark test measures against: every point it gives lies on what was
    drawn there (dark brows and lids, lips redder than the skin), and it moves with an AU."""
    renderer = FaceRenderer(sample_identity(np.random.default_rng(seed)), 192)
    neutral = np.zeros((len(ACTION_UNITS), 2))
    frame = renderer.render(neutral).astype(float)
    points = renderer.landmarks(neutral)
    assert points.shape == (68, 2)
    assert np.isnan(points[:17]).all() and np.isnan(points[27:30]).all()  # jaw and nose bridge: not drawn

    def at(index: int) -> np.ndarray:
        x, y = np.round(points[index]).astype(int)
        return frame[y, x]

    skin = frame[int(points[30, 1]) - 8, int(points[30, 0])]  # the cheek-free middle of the nose
    assert all(at(i).mean() < skin.mean() - 30 for i in [*range(17, 27), 37, 38, 43, 44]), "brows and upper lids"
    assert all(at(i)[2] - at(i)[1] > skin[2] - skin[1] + 10 for i in (51, 57)), "lips are redder than skin"
    smile = neutral.copy()
    smile[AU_INDEX[12]] = 1.0
    corners = renderer.landmarks(smile)[[48, 54]] - points[[48, 54]]
    assert (corners[:, 1] < -1).all() and corners[0, 0] < 0 < corners[1, 0], "AU12 pulls the corners up and out"


def test_the_tuning_and_the_reported_benchmark_share_no_face():
    """Every choice is made on the tuning seeds' faces: none of them may be one of the
    reported benchmark's (micro or macro), nor may the two tuning sets share one."""
    from dataclasses import astuple

    from mer_core.config import load_params
    from mer_core.data.synthetic import sample_identity
    from tests.conftest import REPO

    params = load_params(REPO / "params.yaml")

    def faces(seed: int) -> list[np.ndarray]:
        streams = [np.random.SeedSequence([seed, kind]).spawn(n)
                   for kind, n in ((1, params.synthesize.micro.subjects), (2, params.synthesize.macro.subjects))]
        return [np.array([v for v in astuple(sample_identity(np.random.default_rng(s))) if not isinstance(v, tuple)],
                         float) for stream in streams for s in stream]

    reported = faces(params.synthesize.seed)
    tuning = [face for seed in params.tuning.synthesize_seeds for face in faces(seed)]
    assert params.synthesize.seed not in params.tuning.synthesize_seeds
    closest = min(np.abs(a - b).max() for a in reported for b in tuning)
    assert closest > 1e-3, "a tuning face is (nearly) a reported one"
    within = [np.abs(a - b).max() for i, a in enumerate(tuning) for b in tuning[i + 1:]]
    assert min(within) > 1e-3
