"""Shared fixtures: a tiny params profile and a tiny synthetic data set made by the
project's own generator, in the real on-disk layouts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Telemetry off and logs quiet for every test, before any heavy library is imported.
for _name, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # Prefect's ephemeral database lives in a throwaway home, not in ~/.prefect.
    "PREFECT_HOME": tempfile.mkdtemp(prefix="mer-prefect-"),
}.items():
    os.environ.setdefault(_name, _value)

TEST_KEY_HEX = "00112233445566778899aabbccddeeff" * 2


def tiny_params(root: Path) -> dict:
    """The repo's params.yaml shrunk to seconds of work, with every path under `root`."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    synth = params["synthesize"]
    synth.update(out_dir=str(root / "data/raw/synthetic"), image_size=128)
    synth["micro"].update(subjects=3, clips_per_subject=4, fps=50)
    synth["macro"].update(subjects=2, clips_per_subject=2, fps=15, duration_s={"low": 0.8, "high": 1.2})
    ingest = params["ingest"]
    ingest.update(out_dir=str(root / "data/interim"), crop_size=64, frames_per_clip=4, windows_per_video=2,
                  workers=1, rows_per_shard=8, row_group_size=4)
    ingest["datasets"][0].update(root=str(root / "data/raw/synthetic/micro"), fps=50)
    ingest["datasets"][1].update(root=str(root / "data/raw/synthetic/macro"))
    params["anonymize"].update(in_dir=str(root / "data/interim"), out_dir=str(root / "data/processed"),
                               report=str(root / "reports/anonymization.json"))
    params["validate"].update(in_dir=str(root / "data/processed"), report=str(root / "reports/validation.json"),
                              data_docs_dir=str(root / "reports/data_docs"), min_clips_per_class=1, min_clips_per_subject=1)
    params["pretrain"].update(in_dir=str(root / "data/processed"), out_dir=str(root / "models/encoders"),
                              checkpoint_dir=str(root / "models/checkpoints/pretrain"),
                              report=str(root / "reports/pretrain.json"), epochs=2, batch_size=4)
    params["finetune"].update(in_dir=str(root / "data/processed"), encoders_dir=str(root / "models/encoders"),
                              checkpoint_dir=str(root / "models/checkpoints/finetune"),
                              predictions=str(root / "reports/predictions.parquet"),
                              final_model=str(root / "models/final.pt"), report=str(root / "reports/finetune.json"),
                              epochs=3, seeds=[0, 1], workers=1)
    params["evaluate"].update(predictions=str(root / "reports/predictions.parquet"),
                              metrics=str(root / "reports/metrics.json"), ablation=str(root / "reports/ablation.json"),
                              plots_dir=str(root / "reports/plots"))
    params["tracking"].update(uri=f"sqlite:///{root / 'mlflow.db'}", artifact_dir=str(root / "mlartifacts"))
    params["register"].update(report=str(root / "reports/registry.json"))
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

    synthesize(tiny_config.synthesize, workers=1)
    return Path(tiny_config.synthesize.out_dir)


@pytest.fixture
def pseudonym_key(monkeypatch):
    monkeypatch.setenv("MER_PSEUDONYM_KEY", TEST_KEY_HEX)
    return TEST_KEY_HEX
