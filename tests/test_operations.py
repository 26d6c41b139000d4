"""Operations: the MLflow registry and its promotion gate, the pyfunc model, `mer predict`,
the Prefect deployments file, params overrides and the workspace lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from mer_core.config import ParamsError, TrackingParams, with_overrides
from mer_core.tracking import (
    CHALLENGER,
    CHAMPION,
    Standing,
    log_pretraining,
    open_session,
    promotion_decision,
    register_model,
)
from tests.conftest import REPO, tiny_params

CLASSES = ["disgust", "happiness", "surprise"]
FRAMES = 4


def _final_model(path: Path, seed: int) -> Path:
    """A small but real MIACNet checkpoint in the format `finetune` writes."""
    from mer_core.models.miacnet import build_miacnet

    torch.manual_seed(seed)
    model = build_miacnet("vit_mini_patch8_64", len(CLASSES))
    torch.save({"architecture": "miacnet", "encoder": "vit_mini_patch8_64", "variant": "ma2mi", "classes": CLASSES,
                "label_column": "label", "img_size": 64, "state_dict": model.state_dict()}, path)
    return path


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty sqlite registry with a local artifact folder, and a session on it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = _params(tmp_path)
    return open_session(params.tracking, tmp_path, "register", params)


def _params(root: Path):
    from mer_core.config import Params, apply_profile

    return Params.model_validate(apply_profile(tiny_params(root), Path("tiny params")))


def _register(session, tmp_path: Path, uf1: float, seed: int = 0, protocol: str = "loso:label:synth",
              data_version: str = "data-v1"):
    model = _final_model(tmp_path / f"final{seed}.pt", seed)
    config = {"mask_margin": 0.15, "crop_size": 64, "frames_per_clip": FRAMES, "face_margin": 0.15,
              "min_face_px": 48, "stabilize": True}
    return register_model(session, "mer-test", model, Standing(uf1, protocol, data_version),
                          {"uf1": uf1}, f"# card for seed {seed}\n", 0.01, FRAMES, config, [])


def test_promotion_decision_rules():
    best = Standing(0.50, "p", "d")
    assert promotion_decision(best, None, 0.01)[0] == CHAMPION
    assert promotion_decision(Standing(0.52, "p", "d"), best, 0.01)[0] == CHAMPION
    alias, reason = promotion_decision(Standing(0.505, "p", "d"), best, 0.01)
    assert alias == CHALLENGER and "margin" in reason
    assert "protocol" in promotion_decision(Standing(0.9, "q", "d"), best, 0.01)[1]
    assert "data version" in promotion_decision(Standing(0.9, "p", "e"), best, 0.01)[1]
    with pytest.raises(ValueError, match="without a score"):
        promotion_decision(Standing(float("nan"), "p", "d"), best, 0.01)


def test_gate_promotes_a_better_model_and_parks_a_worse_one(store, tmp_path):
    client = store.client
    first = _register(store, tmp_path, 0.50, seed=0)
    assert first.alias == CHAMPION
    worse = _register(store, tmp_path, 0.45, seed=1)
    assert worse.alias == CHALLENGER and worse.previous_champion == first.version
    assert client.get_model_version_by_alias("mer-test", CHAMPION).version == first.version
    better = _register(store, tmp_path, 0.60, seed=2)
    assert better.alias == CHAMPION
    assert client.get_model_version_by_alias("mer-test", CHAMPION).version == better.version
    version = client.get_model_version("mer-test", better.version)
    assert version.tags["promotion.decision"] == CHAMPION and "beats" in version.tags["promotion.reason"]
    assert {"git.commit", "git.dirty", "data.version", "params.hash", "dvc.stage"} <= set(version.tags)
    assert version.description.startswith("# card for seed 2")


def test_pretraining_throughput_and_gpu_memory_reach_mlflow(store, tmp_path):
    params = _params(tmp_path)
    result = {"encoder": "vit_mini_patch8_64", "epochs": 1, "clips": 10, "clips_per_second": 50.0, "seconds": 0.2,
              "data_wait_fraction": 0.1, "peak_gpu_memory_mib": 123.0,
              "history": [{"epoch": 1, "steps": 2, "seconds": 0.2, "data_wait_s": 0.02, "loss": 0.5}]}
    parent = log_pretraining(store, params, {"variants": {"ma2mi": result}}, [])
    nested = store.client.search_runs([store.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert [r.info.run_name for r in nested] == ["pretrain/ma2mi"]
    logged = nested[0].data.metrics
    assert logged["peak_gpu_memory_mib"] == 123.0 and logged["clips_per_second"] == 50.0
    assert logged["data_wait_s"] == 0.02  # per-epoch history


def test_the_same_weights_are_not_registered_twice(store, tmp_path):
    first = _register(store, tmp_path, 0.50, seed=0)
    # finetune re-ran and reproduced the model: a new file, the same weights.
    again = _register(store, tmp_path, 0.50, seed=0)
    assert again.version == first.version and again.alias == CHAMPION and "unchanged" in again.reason
    assert len(store.client.search_model_versions("name = 'mer-test'")) == 1
    other_data = _register(store, tmp_path, 0.50, seed=0, data_version="data-v2")
    assert other_data.version != first.version and other_data.alias == CHALLENGER


def test_a_failed_registration_leaves_the_aliases_alone(store, tmp_path, monkeypatch):
    first = _register(store, tmp_path, 0.50)
    import mlflow.pyfunc

    def broken(*args, **kwargs):
        raise RuntimeError("artifact store unreachable")

    monkeypatch.setattr(mlflow.pyfunc, "load_model", broken)
    with pytest.raises(RuntimeError, match="unreachable"):
        _register(store, tmp_path, 0.90, seed=3)
    champion = store.client.get_model_version_by_alias("mer-test", CHAMPION)
    assert champion.version == first.version
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        store.client.get_model_version_by_alias("mer-test", CHALLENGER)


def test_registered_model_loads_as_pyfunc_in_a_fresh_process(store, tmp_path):
    _register(store, tmp_path, 0.5)
    script = ("import mlflow, numpy as np\n"
              "m = mlflow.pyfunc.load_model('models:/mer-test@champion')\n"
              f"out = m.predict(np.random.default_rng(0).integers(0, 255, (3, {FRAMES}, 64, 64, 3), dtype=np.uint8))\n"
              "print(list(out.columns), out.shape, float(out.sum(axis=1).min()), float(out.sum(axis=1).max()))\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{CLASSES} (3, 3) " in result.stdout
    low, high = map(float, result.stdout.split()[-2:])
    assert abs(low - 1) < 1e-4 and abs(high - 1) < 1e-4


# --- mer predict ------------------------------------------------------------------------

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
    return tmp_path / "params.yaml", _final_model(tmp_path / "final.pt", 0)


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
    _register(store, tmp_path, 0.5)
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


# --- Prefect deployments, overrides, lock ----------------------------------------------

def test_prefect_yaml_declares_importable_deployments_one_scheduled():
    from prefect.flows import Flow, load_flow_from_entrypoint

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert set(deployments) == {"retrain", "ingest-new-data", "evaluate-champion"}
    for deployment in deployments.values():
        assert isinstance(load_flow_from_entrypoint(str(REPO / deployment["entrypoint"])), Flow)
    assert any(s.get("cron") for s in deployments["retrain"].get("schedules", []))
    assert {"adapter", "source"} <= set(deployments["ingest-new-data"]["parameters"])


def test_overrides_are_validated_before_anything_runs(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params(tmp_path)))
    assert with_overrides(path, {"finetune.epochs": 7}).finetune.epochs == 7
    with pytest.raises(ParamsError, match="finetune.epochz"):
        with_overrides(path, {"finetune.epochz": 7})
    with pytest.raises(ParamsError, match="nosuchsection"):
        with_overrides(path, {"nosuchsection.epochs": 7})


def test_overrides_keep_the_comments_of_params_yaml(tmp_path):
    from flows.pipeline import write_overrides

    path = tmp_path / "params.yaml"
    path.write_text("# why the values are what they are\nfinetune:\n  epochs: 80  # enough to converge\n")
    original = write_overrides(path, {"finetune.epochs": 3})
    assert "epochs: 3" in path.read_text() and "# enough to converge" in path.read_text()
    assert "# why the values" in path.read_text() and "epochs: 80" in original


def test_a_second_run_waits_for_the_lock_then_says_who_holds_it(tmp_path):
    from flows.pipeline import WorkspaceBusyError, workspace_lock

    held, release = threading.Event(), threading.Event()

    def first_run():
        with workspace_lock(tmp_path, "flow run brave-otter", timeout_s=5):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=first_run)
    thread.start()
    held.wait(5)
    try:
        with pytest.raises(WorkspaceBusyError, match="brave-otter"):
            with workspace_lock(tmp_path, "flow run second", timeout_s=0.5, poll_s=0.1):
                pass
    finally:
        release.set()
        thread.join()
    with workspace_lock(tmp_path, "flow run third", timeout_s=1):  # free again once the first is done
        pass


def test_tracking_uri_env_wins_and_relative_sqlite_is_anchored(tmp_path, monkeypatch):
    from mer_core.tracking import resolve_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(TrackingParams(), tmp_path) == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(TrackingParams(), tmp_path) == "http://127.0.0.1:5000"


def test_registering_does_not_redirect_later_subprocesses(store, tmp_path, monkeypatch):
    """MLflow exports its process-wide URI to children; a stage run after us must not inherit it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _register(store, tmp_path, 0.5)
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ


def test_git_state_ignores_dvc_lock_but_not_code(tmp_path):
    from mer_core.tracking import git_state

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.lock").write_text("a\n")
    (tmp_path / "code.py").write_text("a\n")
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.lock").write_text("b\n")  # DVC rewrites it during the very run being tagged
    commit, dirty = git_state(tmp_path)
    assert len(commit) == 40 and not dirty
    (tmp_path / "code.py").write_text("b\n")
    assert git_state(tmp_path)[1]
