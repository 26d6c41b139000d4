"""`mer predict`: sliding and given windows, the registered champion, hostile videos and model files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from tests.conftest import (
    CLASSES,
    FRAMES,
    exits_cleanly,
    free_port,
    register_tiny,
    run_mer,
    tiny_params,
    tiny_params_model,
    write_final_model,
)


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
    summary = report["summary"]
    predicted = [w["predicted"] for w in report["windows"]]
    assert predicted.count(summary["dominant_class"]) == max(map(predicted.count, CLASSES))
    assert summary["share_of_windows_with_a_face"] == len(report["windows"]) / summary["windows"] > 0
    assert "synthetic faces" in summary["model_note"]  # the tiny params train on the generator's data
    assert report["video"] == face_video.name  # a name, never the source path
    assert report["action_units"] == ["AU1", "AU4", "AU12"]  # the model's AU readout
    for window in report["windows"]:
        assert window["start_frame"] < window["end_frame"]
        assert abs(sum(window["probabilities"].values()) - 1) < 1e-3
        assert window["predicted"] in CLASSES
        assert list(window["action_units"]) == report["action_units"]
        assert all(0 <= p <= 1 for p in window["action_units"].values())
    assert set(summary["mean_action_units"]) == set(report["action_units"])
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
    windows, file_windows = json.loads(from_registry.stdout)["windows"], json.loads(from_file.stdout)["windows"]
    assert [w["probabilities"] for w in windows] == [w["probabilities"] for w in file_windows]
    assert [w["action_units"] for w in windows] == [w["action_units"] for w in file_windows]


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
    (lambda path: torch.save({**torch.load(path), "action_units": {"units": [1], "weights": torch.zeros(2),
                                                                    "bias": torch.zeros(1)}}, path),
     "its action-unit readout is malformed"),
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


def test_mer_version():
    result = run_mer("--version")
    exits_cleanly(result, 0)
    assert result.stdout.startswith("mer 0.")


def _mer_process(*args: str, **kwargs) -> subprocess.Popen | subprocess.CompletedProcess:
    """The installed `mer` as a user runs it: another process, its own stderr."""
    command = [str(Path(sys.executable).parent / "mer"), *args]
    if kwargs.pop("background", False):
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)
    return subprocess.run(command, capture_output=True, text=True, timeout=120, **kwargs)


def test_a_cut_off_mp4_fails_in_one_line_without_codec_noise(face_video, predict_setup, tmp_path):
    """FFmpeg prints "moov atom not found" on its own stderr; the user sees mer's line only,
    and before the model is loaded."""
    params, model = predict_setup
    whole = _write_video(tmp_path / "whole.mp4", [np.full((96, 96, 3), i * 9, np.uint8) for i in range(20)])
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    result = _mer_process("predict", str(cut), "--model", str(model), "--params", str(params))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"mer predict: {cut}: not a readable video"]


def _http(url: str, data: bytes | None = None) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_mer_serve_answers_a_video_upload_as_mer_predict_does(face_video, predict_setup):
    """`mer serve` on 127.0.0.1: /health, then the README's `curl --data-binary @video`
    (here urllib), answered with `mer predict`'s JSON; bytes that are no video get a 422."""
    import time

    params, model = predict_setup
    port = free_port()
    server = _mer_process("serve", "--model", str(model), "--params", str(params), "--port", str(port),
                          background=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                status, health = _http(f"{base}/health")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "mer serve did not come up"
                time.sleep(0.5)
        assert status == 200 and health["status"] == "ok" and health["classes"] == CLASSES
        status, served = _http(f"{base}/predict?name={face_video.name}", face_video.read_bytes())
        assert status == 200, served
        printed = json.loads(_predict(str(face_video), "--model", str(model), "--params", str(params)).stdout)
        assert served == printed
        status, error = _http(f"{base}/predict", b"not a video at all")
        assert status == 422 and "not a readable video" in error["error"]
    finally:
        server.terminate()
        server.wait(20)


def test_the_registered_model_takes_a_video_as_well_as_clips(face_video, predict_setup, store, tmp_path):
    """The pyfunc: a path or bytes in process, a base64 `video` column as a REST request
    carries it; the same windows as `mer predict`; OpenCV among its pip requirements."""
    import base64

    import pandas as pd

    from mer_core.tracking import load_registered_model

    params, model = predict_setup
    register_tiny(store, tmp_path, 0.5)
    pyfunc = load_registered_model("models:/mer-test@champion", tiny_params_model(tmp_path).tracking, tmp_path)
    by_path = pyfunc.predict(str(face_video))
    assert list(by_path.columns[:5]) == ["start_frame", "end_frame", "start_s", "end_s", "predicted"]
    assert list(by_path.columns[5:]) == [*CLASSES, "AU1", "AU4", "AU12"]
    pd.testing.assert_frame_equal(pyfunc.predict(face_video.read_bytes()), by_path)
    encoded = pd.DataFrame({"video": [base64.b64encode(face_video.read_bytes()).decode()]})
    pd.testing.assert_frame_equal(pyfunc.predict(encoded), by_path)
    # What `mlflow models serve` runs, in process: the README's REST request.
    from mlflow.pyfunc import scoring_server
    from starlette.testclient import TestClient

    answer = TestClient(scoring_server.init(pyfunc)).post(
        "/invocations", json={"dataframe_split": {"columns": ["video"], "data": [[encoded["video"][0]]]}})
    assert answer.status_code == 200, answer.text
    assert [row["predicted"] for row in answer.json()["predictions"]] == by_path["predicted"].tolist()
    printed = json.loads(_predict(str(face_video), "--model", str(model), "--params", str(params)).stdout)
    assert by_path["start_frame"].tolist() == [w["start_frame"] for w in printed["windows"]]
    clips = pyfunc.predict(np.full((2, FRAMES, 64, 64, 3), 128, np.uint8))
    assert list(clips.columns) == CLASSES and len(clips) == 2
    import mlflow

    from mer_core.tracking import fluent_store

    with fluent_store(store.uri):
        requirements = Path(mlflow.pyfunc.get_model_dependencies("models:/mer-test@champion")).read_text()
    assert "opencv-python-headless==" in requirements and "torch==" in requirements
