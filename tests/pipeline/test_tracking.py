"""The MLflow side: the registry and its promotion gate, the pyfunc model, tracking URIs and tags."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mer_core.config import TrackingParams
from mer_core.tracking import (
    CHALLENGER,
    CHAMPION,
    Standing,
    log_pretraining,
    promotion_decision,
)
from tests.conftest import CLASSES, FRAMES, register_tiny, tiny_params_model


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
    first = register_tiny(store, tmp_path, 0.50, seed=0)
    assert first.alias == CHAMPION
    worse = register_tiny(store, tmp_path, 0.45, seed=1)
    assert worse.alias == CHALLENGER and worse.previous_champion == first.version
    assert client.get_model_version_by_alias("mer-test", CHAMPION).version == first.version
    better = register_tiny(store, tmp_path, 0.60, seed=2)
    assert better.alias == CHAMPION
    assert client.get_model_version_by_alias("mer-test", CHAMPION).version == better.version
    version = client.get_model_version("mer-test", better.version)
    assert version.tags["promotion.decision"] == CHAMPION and "beats" in version.tags["promotion.reason"]
    assert {"git.commit", "git.dirty", "data.version", "params.hash", "dvc.stage"} <= set(version.tags)
    assert version.description.startswith("**Alias: `champion`.** UF1 0.6000 beats")
    assert "# card for seed 2" in version.description


def test_cards_and_the_registered_model_say_the_story_in_plain_words(store, tmp_path):
    """The registered model explains the gate and the aliases; a challenger's card starts
    with its alias and reason and says what changed against the champion."""
    register_tiny(store, tmp_path, 0.50, seed=0)
    challenger = register_tiny(store, tmp_path, 0.45, seed=1, settings={"finetune.epochs": "40"})
    model = store.client.get_registered_model("mer-test")
    assert "**champion**" in model.description and "**challenger**" in model.description
    assert "promotion margin" in model.description
    card = store.client.get_model_version("mer-test", challenger.version).description
    first, *_ = card.splitlines()
    assert first.startswith("**Alias: `challenger`.** UF1 0.4500 vs the champion's 0.5000")
    assert "What changed against the champion (version 1):" in card and "LOSO UF1: 0.5000 → 0.4500" in card
    third = register_tiny(store, tmp_path, 0.44, seed=2, settings={"finetune.epochs": "30"})
    # Compared with the champion (version 1), which recorded no settings; not with version 2.
    assert "were not recorded" in store.client.get_model_version("mer-test", third.version).description


def test_a_stage_run_lasts_as_long_as_the_stage_worked(store):
    import time

    from mer_core.tracking import TrackingSession

    started = TrackingSession(store.client, store.experiment_id, store.tags, store.uri,
                              int(time.time() * 1000) - 383_000)  # the stage began 383 s ago
    run = store.client.get_run(started.log_run("finetune"))
    assert 382_000 < run.info.end_time - run.info.start_time < 390_000
    nested = store.client.get_run(started.log_run("finetune/scratch_e2e/seed0", parent=run.info.run_id,
                                                  seconds=120.5))
    assert nested.info.end_time - nested.info.start_time == 120_500


def test_pretraining_throughput_and_gpu_memory_reach_mlflow(store, tmp_path):
    params = tiny_params_model(tmp_path)
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
    first = register_tiny(store, tmp_path, 0.50, seed=0)
    # finetune re-ran and reproduced the model: a new file, the same weights.
    again = register_tiny(store, tmp_path, 0.50, seed=0)
    assert again.version == first.version and again.alias == CHAMPION and "unchanged" in again.reason
    assert len(store.client.search_model_versions("name = 'mer-test'")) == 1
    other_data = register_tiny(store, tmp_path, 0.50, seed=0, data_version="data-v2")
    assert other_data.version != first.version and other_data.alias == CHALLENGER


def test_a_failed_registration_leaves_the_aliases_alone(store, tmp_path, monkeypatch):
    first = register_tiny(store, tmp_path, 0.50)
    import mlflow.pyfunc

    def broken(*args, **kwargs):
        raise RuntimeError("artifact store unreachable")

    monkeypatch.setattr(mlflow.pyfunc, "load_model", broken)
    with pytest.raises(RuntimeError, match="unreachable"):
        register_tiny(store, tmp_path, 0.90, seed=3)
    champion = store.client.get_model_version_by_alias("mer-test", CHAMPION)
    assert champion.version == first.version
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        store.client.get_model_version_by_alias("mer-test", CHALLENGER)


@pytest.mark.timeout(120)
def test_a_locked_registry_fails_the_gate_instead_of_crowning_a_new_champion(store, tmp_path):
    """A registry that cannot be read is not an empty one: the stage fails, aliases untouched."""
    import sqlite3

    from mlflow.exceptions import MlflowException

    first = register_tiny(store, tmp_path, 0.50)
    database = store.uri.removeprefix("sqlite:///")
    lock = sqlite3.connect(database, timeout=0.1, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another writer holds the database (MLflow waits 20 s, then gives up)
    try:
        with pytest.raises(MlflowException, match="locked") as failure:
            register_tiny(store, tmp_path, 0.90, seed=3)
        # It is the gate's look-up that fails, not a later write: nothing was decided blind.
        assert "current_champion" in {entry.name for entry in failure.traceback}
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert store.client.get_model_version_by_alias("mer-test", CHAMPION).version == first.version
    assert len(store.client.search_model_versions("name = 'mer-test'")) == 1


def test_an_unreachable_registry_is_an_error_not_no_champion(monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from mer_core.tracking import current_champion

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    nobody = "http://127.0.0.1:9"  # the discard port: nothing listens there
    with pytest.raises(MlflowException, match="127.0.0.1:9"):
        current_champion(MlflowClient(nobody, nobody), "mer-test")


def test_creating_the_registered_model_fails_loudly_unless_it_exists(monkeypatch, tmp_path):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from mer_core.tracking import Standing, TrackingSession, _create_version

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    nobody = "http://127.0.0.1:9"
    session = TrackingSession(MlflowClient(nobody, nobody), "0", {}, nobody)
    with pytest.raises(MlflowException) as failure:
        _create_version(session, "mer-test", "models:/m-1", "run", "# card", Standing(0.5, "p", "d"), "digest",
                            "# mer-test")
    assert "create_registered_model" in {entry.name for entry in failure.traceback}  # not swallowed


def test_no_model_and_no_champion_alias_both_mean_no_champion_yet(store, tmp_path):
    from mer_core.tracking import current_champion

    assert current_champion(store.client, "mer-test") == (None, None)  # nothing registered
    register_tiny(store, tmp_path, 0.50)
    store.client.delete_registered_model_alias("mer-test", CHAMPION)
    assert current_champion(store.client, "mer-test") == (None, None)  # registered, no version holds it


def test_registered_model_loads_as_pyfunc_in_a_fresh_process(store, tmp_path):
    register_tiny(store, tmp_path, 0.5)
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


def test_tracking_uri_env_wins_and_relative_sqlite_is_anchored(tmp_path, monkeypatch):
    from mer_core.tracking import resolve_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(TrackingParams(), tmp_path) == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(TrackingParams(), tmp_path) == "http://127.0.0.1:5000"


def test_registering_does_not_redirect_later_subprocesses(store, tmp_path, monkeypatch):
    """MLflow exports its process-wide URI to children; a stage run after us must not inherit it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    register_tiny(store, tmp_path, 0.5)
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
