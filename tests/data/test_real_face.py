"""A real person's face (a public-domain NASA portrait, see tests/assets/README.md), animated
into a short video: face detection, `mer ingest --adapter videos` and `mer predict` on a
real face rather than the synthetic renderer's."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from mer_core.data.store import CLIPS_DIR, read_clips
from tests.conftest import tiny_params

PORTRAIT = Path(__file__).parents[1] / "assets" / "astronaut.jpg"


def animate(image: np.ndarray, path: Path, seconds: float = 2.0, fps: float = 25.0, seed: int = 0) -> Path:
    """A video of `image` with what a camera sees of a sitting person: slow head drift,
    a little zoom, light drift and sensor noise."""
    rng = np.random.default_rng(seed)
    height, width = image.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    for k in range(int(seconds * fps)):
        t = k / fps
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 0.5 * np.sin(1.3 * t), 1 + 0.01 * np.sin(0.7 * t))
        matrix[:, 2] += (1.5 * np.sin(2.1 * t), 1.0 * np.cos(1.7 * t))
        frame = cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)
        frame = frame.astype(np.float32) * (1 + 0.05 * np.sin(0.9 * t)) + rng.normal(0, 2, frame.shape)
        writer.write(np.clip(frame, 0, 255).astype(np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="module")
def person_videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("people")
    portrait = cv2.imread(str(PORTRAIT))
    animate(portrait, folder / "visitor_a.avi", seed=0)
    animate(cv2.flip(portrait, 1), folder / "visitor_b.avi", seed=1)
    (folder / "notes.mp4").write_text("not a video")
    return folder


@pytest.fixture(scope="module")
def params_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("params")
    params = tiny_params(root)
    params["ingest"].update(workers=1, frames_per_clip=4)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root / "params.yaml"


def _mer(*args: str):
    from mer_core.cli import app

    return CliRunner().invoke(app, list(args))


def test_the_detector_finds_the_real_face():
    from mer_core.data.faces import FaceDetector

    box = FaceDetector(48).detect(cv2.imread(str(PORTRAIT)))
    # Eyes to chin of the portrait: about 60 px wide, in the upper left half.
    assert 50 <= box.w <= 90 and box.x < 160 and box.y < 120


def test_mer_ingest_turns_videos_of_a_person_into_clips(person_videos, params_file, tmp_path):
    out = tmp_path / "ingested"
    result = _mer("ingest", "--adapter", "videos", "--source", str(person_videos), "--output", str(out),
                  "--params", str(params_file))
    assert result.exit_code == 0, result.output
    assert "3 item(s) listed" in result.output and "1 rejected" in result.output
    table = read_clips(out / CLIPS_DIR / person_videos.name)
    assert set(table["subject"].to_pylist()) == {"visitor_a", "visitor_b"}
    frames = table["frames"].combine_chunks().to_numpy_ndarray()
    assert frames.shape[1:] == (4, 64, 64, 3)
    assert frames.std() > 20  # a face, not a blank crop


def test_mer_predict_scores_a_video_of_a_person(person_videos, params_file, tmp_path):
    from tests.conftest import CLASSES, write_final_model

    model = write_final_model(tmp_path / "final.pt", 0)
    result = _mer("predict", str(person_videos / "visitor_a.avi"), "--model", str(model), "--params", str(params_file))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["windows"]) >= 10 and not report["rejected"]
    assert all(w["predicted"] in CLASSES for w in report["windows"])
