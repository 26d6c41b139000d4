"""Shared fixtures: a tiny params profile and a tiny synthetic data set made by the
project's own generator, in the real on-disk layouts."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent  # the environment running the tests, as `make install` made it

# Telemetry off and logs quiet for every test, before any heavy library is imported.
for _name, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # Prefect's ephemeral database lives in a throwaway home, not in ~/.prefect.
    "PREFECT_HOME": tempfile.mkdtemp(prefix="mer-prefect-"),
    # Its ephemeral API server gets 20 s to start by default: too short on 2 busy cores.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_name, _value)

TEST_KEY_HEX = "00112233445566778899aabbccddeeff" * 2


def tiny_params(root: Path) -> dict:
    """The repo's params.yaml shrunk to seconds of work, with every path under `root`."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["paths"] = {key: str(root / value) for key, value in params["paths"].items()}
    synth = params["synthesize"]
    synth.update(image_size=128)
    synth["micro"].update(subjects=3, clips_per_subject=4, fps=50)
    synth["macro"].update(subjects=2, clips_per_subject=2, fps=15, duration_s={"low": 0.8, "high": 1.2})
    ingest = params["ingest"]
    ingest.update(crop_size=64, frames_per_clip=4, windows_per_video=2, workers=1, rows_per_shard=8, row_group_size=4)
    for source in ingest["datasets"]:
        source["root"] = str(root / source["root"])
    ingest["datasets"][0].update(fps=50)
    params["validate"].update(min_clips_per_class=1, min_clips_per_subject=1)
    params["pretrain"].update(epochs=2, batch_size=4)
    params["finetune"].update(epochs=3, seeds=[0, 1], workers=1)
    params["tracking"].update(uri=f"sqlite:///{root / 'mlflow.db'}", artifact_dir=str(root / "mlartifacts"))
    return params


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_config(tiny_root):
    from mer_core.config import Params, apply_profile

    return Params.model_validate(apply_profile(tiny_params(tiny_root), Path("tiny params")))


@pytest.fixture(scope="session")
def tiny_synthetic(tiny_config) -> Path:
    """The synthetic data set rendered once per session with the tiny profile."""
    from mer_core.data.synthetic import synthesize

    synthesize(tiny_config.synthesize, tiny_config.paths.synthetic, workers=1)
    return tiny_config.paths.synthetic


@pytest.fixture
def pseudonym_key(monkeypatch):
    monkeypatch.setenv("MER_PSEUDONYM_KEY", TEST_KEY_HEX)
    return TEST_KEY_HEX


# --- shared by the ingest, video and predict tests: a hostile corpus --------------------
@pytest.fixture(scope="session")
def corpus(tiny_synthetic, tiny_config, tmp_path_factory):
    """The tiny synthetic set with bad files planted in its layouts (see tests/hostile.py)."""
    from tests.hostile import build_corpus

    return build_corpus(tiny_synthetic, tmp_path_factory.mktemp("hostile_corpus"), tmp_path_factory.mktemp("scratch"),
                        tiny_config.ingest.frames_per_clip)


@pytest.fixture(scope="session")
def params_file(tiny_root, tmp_path_factory) -> Path:
    """A params.yaml of the tiny profile (one ingest worker) for `mer` commands."""
    raw = tiny_params(tiny_root)
    raw["ingest"]["workers"] = 1
    path = tmp_path_factory.mktemp("cli") / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_mer(*args: str):
    """`mer <args>` in this process, through the real CLI."""
    from typer.testing import CliRunner

    from mer_core.cli import app

    return CliRunner().invoke(app, list(args))


def exits_cleanly(result, code: int) -> None:
    """The command ended with `code`, and with a message rather than a traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a server a test starts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readme_block(heading: str) -> str:
    """The first ```bash block under a README heading: the recipes tests run as written."""
    text = (REPO / "README.md").read_text()
    return text.split(f"\n{heading}\n", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]


# --- shared by the tracking and predict tests: a tiny final model and a registry --------
CLASSES = ["disgust", "happiness", "surprise"]
FRAMES = 4


def write_final_model(path: Path, seed: int, classes: list[str] = CLASSES) -> Path:
    """A small but real MIACNet checkpoint in the format `finetune` writes, with an AU readout
    fitted to random features (real weights, arbitrary units)."""
    import numpy as np
    import torch

    from mer_core.inference import _AU_FEATURES
    from mer_core.models.classical import AUReadout
    from mer_core.models.miacnet import build_miacnet

    torch.manual_seed(seed)
    model = build_miacnet("vit_mini_patch8_64", len(classes))
    rng = np.random.default_rng(seed)
    readout = AUReadout.fit(rng.normal(size=(24, _AU_FEATURES)), rng.integers(0, 2, (24, 3)).astype(float),
                            (1, 4, 12), seed)
    torch.save({"architecture": "miacnet", "encoder": "vit_mini_patch8_64", "variant": "ma2mi", "classes": classes,
                "label_column": "label", "img_size": 64, "action_units": {"au_set": "synthetic", **readout.to_state()},
                "state_dict": model.state_dict()}, path)
    return path


def tiny_params_model(root: Path):
    """`tiny_params(root)` as a validated Params."""
    from mer_core.config import Params, apply_profile

    return Params.model_validate(apply_profile(tiny_params(root), Path("tiny params")))


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty sqlite registry with a local artifact folder, and a session on it."""
    from mer_core.tracking import open_session

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = tiny_params_model(tmp_path)
    return open_session(params.tracking, tmp_path, "register", params, "data-v1")


def register_tiny(session, tmp_path: Path, uf1: float, seed: int = 0, protocol: str = "loso:label:synth",
                  data_version: str = "data-v1", settings: dict[str, str] | None = None):
    """Register a tiny final model of `seed` scored `uf1` through the real gate, trained with `settings`."""
    from mer_core.tracking import Standing, register_model

    model = write_final_model(tmp_path / f"final{seed}.pt", seed)
    config = {"mask_margin": 0.15, "crop_size": 64, "frames_per_clip": FRAMES, "face_margin": 0.15,
              "min_face_px": 48, "stabilize": True, "face_detector": "hog", "landmark_model": "dlib68",
              "alignment": "onset"}
    return register_model(session, "mer-test", model, Standing(uf1, protocol, data_version),
                          {"uf1": uf1}, f"# card for seed {seed}\n", 0.01, FRAMES, config, [], settings)
