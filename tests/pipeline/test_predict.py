"""`mer predict`: sliding and given windows, the registered champion, hostile videos and model files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from tests.conftest import CLASSES, FRAMES, exits_cleanly, register_tiny, run_mer, tiny_params, write_final_model


@pytest.fixture(scope="module")
def face_video(tiny_synthetic) -> Path:
    return min((tiny_synthetic / "macro").rglob("*.avi"))


@pytest.fixture
def predict_setup(tmp_path, monkeypatch):
    """A params file whose alignment matches the tiny model, and the model file."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = tiny_params(tmp_path)
    params["ingest"]["frames_per_clip"] = FRAMES
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path / "params.yaml", write_final_model(tmp_path / "final.pt", 0)


def _predict(*args: str):
    from mer_core.cli import app

    return CliRunner().invoke(app, ["predict", *args])


def test_mer_predict_slides_windows_over_a_rendered_video(face_video, predict_setup):
    params, model = predict_setup
    result = _predict(str(face_video), "--model", str(model), "--params", str(params))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["classes"] == CLASSES and report["windows"]
    assert report["video"] == face_video.name  # a name, never the source path
    for window in report["windows"]:
        assert window["start_frame"] < window["end_frame"]
        assert abs(sum(window["probabilities"].values()) - 1) < 1e-3
        assert window["predicted"] in CLASSES
    starts = [w["start_frame"] for w in report["windows"]]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_mer_predict_takes_a_given_onset_apex_offset(face_video, predict_setup):
    params, model = predict_setup
    result = _predict(str(face_video), "--model", str(model), "--params", str(params),
                      "--onset", "0", "--apex", "4", "--offset", "8")
    assert result.exit_code == 0, result.output
    (window,) = json.loads(result.stdout)["windows"]
    assert (window["start_frame"], window["end_frame"]) == (0, 8)


def test_mer_predict_on_the_registered_champion(face_video, predict_setup, store, tmp_path, monkeypatch):
    params, model = predict_setup
    register_tiny(store, tmp_path, 0.5)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    from_registry = _predict(str(face_video), "--model", "models:/mer-test@champion", "--params", str(params))
    from_file = _predict(str(face_video), "--model", str(model), "--params", str(params))
    assert from_registry.exit_code == 0, from_registry.output
    windows = json.loads(from_registry.stdout)["windows"]
    assert [w["probabilities"] for w in windows] == [w["probabilities"] for w in json.loads(from_file.stdout)["windows"]]


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 25) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.mark.parametrize("case", ["no face", "not a video", "missing"])
def test_mer_predict_fails_clearly(case, predict_setup, tmp_path):
    params, model = predict_setup
    rng = np.random.default_rng(0)
    video = {"no face": lambda: _write_video(tmp_path / "noise.avi",
                                             [rng.integers(0, 255, (120, 160, 3), np.uint8) for _ in range(20)]),
             "not a video": lambda: (tmp_path / "notes.mp4").write_text("hello") and tmp_path / "notes.mp4",
             "missing": lambda: tmp_path / "absent.mp4"}[case]()
    result = _predict(str(video), "--model", str(model), "--params", str(params))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    expected = {"no face": "no face found", "not a video": "not a readable video", "missing": "no such file"}[case]
    assert expected in result.output


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained MIACNet saved as `finetune` saves its final model: enough to run `mer predict`."""
    from mer_core.cli import app

    if "predict" not in {c.name or c.callback.__name__ for c in app.registered_commands}:
        pytest.skip("`mer predict` is not there yet")

    from mer_core.models.miacnet import build_miacnet

    torch.manual_seed(0)
    model = build_miacnet("vit_mini_patch8_64", 3)
    path = tmp_path_factory.mktemp("model") / "final.pt"
    torch.save({"state_dict": model.state_dict(), "encoder": "vit_mini_patch8_64", "variant": "scratch",
                "classes": ["negative", "positive", "surprise"], "img_size": 64, "label_column": "label3"}, path)
    return path


@pytest.mark.parametrize("name", ["zero.mp4", "zero.avi", "text.mp4", "text.avi", "truncated.mp4"])
def test_mer_predict_refuses_unreadable_videos_clearly(corpus, tiny_model, params_file, name):
    result = run_mer("predict", str(corpus.macro / "videos" / name), "--model", str(tiny_model),
                  "--params", str(params_file))
    exits_cleanly(result, 1)
    assert name in result.output and ("empty file" in result.output or "not a readable video" in result.output)


@pytest.mark.parametrize("name", ["long.avi", "truncated.avi"])
def test_mer_predict_scores_long_and_cut_off_videos(corpus, tiny_model, params_file, name):
    result = run_mer("predict", str(corpus.macro / "videos" / name), "--model", str(tiny_model),
                  "--params", str(params_file))
    exits_cleanly(result, 0)
    assert json.loads(result.stdout)["windows"], result.output


def test_mer_predict_does_not_run_code_from_a_crafted_model_file(face_video, predict_setup, tmp_path):
    params, _ = predict_setup
    marker = tmp_path / "pwned"
    evil = tmp_path / "X.pt"
    evil.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    result = _predict(str(face_video), "--model", str(evil), "--params", str(params))
    exits_cleanly(result, 1)
    assert not marker.exists(), "loading the model file ran a shell command"
    (line,) = result.output.strip().splitlines()
    assert str(evil) in line and "refused to load" in line


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]), "not a readable checkpoint"),
    (lambda path: torch.save({"weights": 1}, path), "not a mer checkpoint of this kind (no encoder"),
])
def test_mer_predict_refuses_a_damaged_model_file_in_one_line(face_video, predict_setup, damage, message):
    params, model = predict_setup
    damage(model)
    result = _predict(str(face_video), "--model", str(model), "--params", str(params))
    exits_cleanly(result, 1)
    (line,) = result.output.strip().splitlines()
    assert str(model) in line and message in line


@pytest.mark.parametrize("flags, message", [
    (["--window", "0"], "--window must be a positive number, got 0.0"),
    (["--stride", "-1"], "--stride must be a positive number, got -1.0"),
    (["--fps", "0"], "--fps must be a positive number, got 0.0"),
    (["--onset", "-3", "--apex", "2", "--offset", "4"], "frame numbers start at 0"),
    (["--onset", "0", "--apex", "4", "--offset", "5000"], "--offset 5000 is past the end of the video, whose last frame is"),
])
def test_mer_predict_refuses_nonsense_windows(face_video, predict_setup, flags, message):
    params, model = predict_setup
    result = _predict(str(face_video), "--model", str(model), "--params", str(params), *flags)
    exits_cleanly(result, 1)
    assert message in result.output


def test_mer_predict_writes_nothing_into_the_model_store(face_video, predict_setup, store, tmp_path, monkeypatch):
    params, _ = predict_setup
    register_tiny(store, tmp_path, 0.5)
    artifacts = tmp_path / "mlartifacts"

    def snapshot() -> dict[str, tuple[int, bytes]]:
        return {str(p.relative_to(artifacts)): (p.stat().st_mtime_ns, p.read_bytes())
                for p in sorted(artifacts.rglob("*")) if p.is_file()}

    before = snapshot()
    assert before, "the registered model's files are in the local artifact store"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    exits_cleanly(_predict(str(face_video), "--model", "models:/mer-test@champion", "--params", str(params)), 0)
    assert snapshot() == before
