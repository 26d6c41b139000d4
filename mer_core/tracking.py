"""The one module that talks to MLflow: where runs go, what every run is tagged with,
stage runs with nested runs, the registered pyfunc model, and the promotion gate.

Privacy: nothing logged here may name a real subject or a source path. Params come
through `loggable_params`, which drops every path-typed setting; subjects only ever
appear as the pseudonyms of the processed data.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from mer_core.config import Params, TrackingParams

CHAMPION, CHALLENGER = "champion", "challenger"
_BATCH = 900  # MLflow's log_batch takes at most 1000 metrics per call
WEIGHTS_TAG = "model.weights"  # on each version: `weights_digest` of its final model


def resolve_tracking_uri(tracking: TrackingParams, root: Path) -> str:
    """`MLFLOW_TRACKING_URI` if set, else `tracking.uri` with a relative sqlite path made
    absolute against `root` (a relative one would move with the working directory)."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    prefix = "sqlite:///"
    if tracking.uri.startswith(prefix) and not tracking.uri.startswith(prefix + "/"):
        return prefix + str((root / tracking.uri[len(prefix):]).resolve())
    return tracking.uri


@contextmanager
def fluent_store(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (start_run, log_model, load_model) at `uri` for a block.

    `mlflow.set_tracking_uri` is process-wide and exports MLFLOW_TRACKING_URI to every
    subprocess started later; scoped here, a library call never redirects the next stage.
    """
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {name: os.environ.get(name) for name in names}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _git(root: Path, *args: str) -> str | None:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    # Only the trailing newline: porcelain status lines start with a meaningful space.
    return result.stdout.rstrip("\n") if result.returncode == 0 else None


def git_state(root: Path) -> tuple[str, bool]:
    """(commit or 'none', whether tracked files differ from it). `dvc.lock` is left out:
    DVC rewrites it after every stage of the very run being tagged."""
    commit = _git(root, "rev-parse", "HEAD") or "none"
    status = _git(root, "status", "--porcelain", "--untracked-files=no") or ""
    changed = [line[3:] for line in status.splitlines() if line[3:] != "dvc.lock"]
    return commit, bool(changed)


def params_hash(params: Params) -> str:
    canonical = json.dumps(params.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def provenance_tags(root: Path, stage: str, params: Params, data: str) -> dict[str, str]:
    """The tags every run carries: code, data (`store.data_version`) and params versions,
    and the DVC stage."""
    commit, dirty = git_state(root)
    tags = {"git.commit": commit, "git.dirty": str(dirty).lower(), "data.version": data,
            "params.hash": params_hash(params), "dvc.stage": stage}
    if group := os.environ.get("MER_RUN_GROUP"):  # set by the Prefect flow: one id per pipeline run
        tags["mer.run_group"] = group
    return tags


def loggable_params(section: BaseModel, prefix: str) -> dict[str, str]:
    """A params section flattened to `prefix.key` strings, without any path-typed value."""
    out: dict[str, str] = {}

    def walk(value, key: str) -> None:
        if isinstance(value, Path):
            return
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), f"{key}.{name}")
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            for i, item in enumerate(value):
                walk(item, f"{key}.{i}")
        else:
            out[key] = str(value)[:500]

    walk(section, prefix)
    return out


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}


@dataclass
class TrackingSession:
    """A client bound to the experiment, with the tags every run of this stage gets."""

    client: MlflowClient
    experiment_id: str
    tags: dict[str, str]
    uri: str
    started_ms: int = 0  # when the stage began its work: a stage's run lasts from then to its logging

    def log_run(self, name: str, *, params: dict[str, str] | None = None, metrics: dict[str, float] | None = None,
                history: list[dict] | None = None, artifacts: list[Path] = (), parent: str | None = None,
                tags: dict[str, str] | None = None, seconds: float | None = None) -> str:
        """One finished run: params, summary metrics, per-step `history` (each dict's
        `epoch` is the step), artifacts; nested under `parent` when given. Returns its id.

        Its duration is `seconds` when given (ending now), else the stage's for a top-level
        run, else none: MLflow shows how long the work took, not how long logging took.
        """
        run_tags = {**self.tags, **(tags or {})}
        if parent:
            run_tags["mlflow.parentRunId"] = parent
        now = int(time.time() * 1000)
        start = now - int(seconds * 1000) if seconds is not None else (self.started_ms or now) if not parent else now
        run = self.client.create_run(self.experiment_id, start_time=start, tags=run_tags, run_name=name)
        run_id = run.info.run_id
        points = [Metric(k, v, now, 0) for k, v in _finite(metrics or {}).items()]
        for entry in history or []:
            step = int(entry.get("epoch", 0))
            points += [Metric(k, v, now, step) for k, v in _finite(entry).items() if k != "epoch"]
        param_list = [Param(k, v) for k, v in (params or {}).items()]
        for start in range(0, len(param_list), 100):  # log_batch takes 100 params, 1000 metrics
            self.client.log_batch(run_id, params=param_list[start:start + 100])
        for start in range(0, len(points), _BATCH):
            self.client.log_batch(run_id, metrics=points[start:start + _BATCH])
        for path in artifacts:
            if Path(path).exists():
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, end_time=now)
        return run_id


def open_session(tracking: TrackingParams, root: Path, stage: str, params: Params, data: str,
                 extra_tags: dict[str, str] | None = None) -> TrackingSession:
    """Point MLflow at the configured store and experiment (created with a local
    artifact folder when the store is the embedded sqlite one); `data` is the data
    version every run of this stage is tagged with."""
    uri = resolve_tracking_uri(tracking, root)
    client = MlflowClient(uri, uri)
    experiment = client.get_experiment_by_name(tracking.experiment)
    if experiment is None:
        location = (root / tracking.artifact_dir).resolve().as_uri() if uri.startswith("sqlite:") else None
        experiment_id = client.create_experiment(tracking.experiment, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    return TrackingSession(client, experiment_id, {**provenance_tags(root, stage, params, data), **(extra_tags or {})},
                           uri, int(time.time() * 1000))


# --- what each stage logs -----------------------------------------------------------

def log_pretraining(session: TrackingSession, params: Params, report: dict, artifacts: list[Path]) -> str:
    """A `pretrain` run with one nested run per objective and its per-epoch losses."""
    parent = session.log_run("pretrain", params=loggable_params(params.pretrain, "pretrain"), artifacts=artifacts)
    for variant, result in report["variants"].items():
        summary = {k: result[k] for k in ("clips", "clips_per_second", "seconds", "data_wait_fraction",
                                           "peak_gpu_memory_mib") if k in result}
        session.log_run(f"pretrain/{variant}", parent=parent, metrics=summary, history=result["history"],
                        params={"variant": variant, "encoder": result["encoder"], "epochs": str(result["epochs"]),
                                "processes": str(result.get("world_size", 1))},
                        seconds=result.get("seconds"))
    return parent


def log_finetuning(session: TrackingSession, params: Params, report: dict,
                   scores: dict[tuple[str, int], dict[str, float]]) -> str:
    """A `finetune` run; nested, one run per (variant, seed) with its LOSO scores, and
    under it one run per fold (held-out subject pseudonym, clips, training loss)."""
    parent = session.log_run("finetune", params=loggable_params(params.finetune, "finetune"),
                             metrics={"final_model_seconds": report["final_model"]["seconds"]},
                             history=[{"epoch": e, "final_model_train_loss": v}
                                      for e, v in enumerate(report["final_model"].get("train_loss", []))])
    for (variant, seed), score in scores.items():
        key = f"{variant}/seed{seed}"
        run = session.log_run(f"finetune/{key}", parent=parent, metrics={**score, "seconds": report["seconds"][key]},
                              params={"variant": variant, "seed": str(seed)}, seconds=report["seconds"][key])
        for fold in report.get("folds", {}).get(key, []):
            session.log_run(f"{key}/fold{fold['fold']}", parent=run, metrics={"held_out_clips": fold["clips"]},
                            history=[{"epoch": e, "train_loss": v} for e, v in enumerate(fold["train_loss"])],
                            params={"fold": str(fold["fold"]), "held_out_subject": fold["held_out"]})
    return parent


def _flat_metrics(prefix: str, entry: dict) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in entry.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def log_evaluation(session: TrackingSession, params: Params, metrics: dict, ablation: dict,
                   artifacts: list[Path]) -> str:
    """An `evaluate` run: the shipped variant's figures (overall, per data set, composite),
    the ablation and its ceiling, and the reports as artifacts."""
    flat = _flat_metrics("", metrics)
    for name, entry in metrics.get("per_dataset", {}).items():
        flat |= _flat_metrics(f"{name}.", entry)
    flat |= _flat_metrics("composite_3class.", metrics.get("composite_3class", {}))
    flat |= _flat_metrics("oracle_best_epoch_not_a_result.", metrics.get("oracle_best_epoch_not_a_result", {}))
    for variant, entry in ablation.get("variants", {}).items():
        flat |= _flat_metrics(f"ablation.{variant}.", entry)
    if ceiling := ablation.get("ceiling"):
        flat |= _flat_metrics("ceiling.", ceiling)
    units = ablation.get("action_units") or {}
    for variant, entry in units.get("variants", {}).items():
        flat |= _flat_metrics(f"action_units.{variant}.", entry)
    for reference in ("ceiling", "always_on"):
        flat |= _flat_metrics(f"action_units.{reference}.", units.get(reference, {}))
    return session.log_run("evaluate", params={"variant": metrics["variant"], "protocol": metrics["protocol"]},
                           metrics=flat, artifacts=artifacts)


# --- the registered model ------------------------------------------------------------

# MLflow warns at class definition that `predict` has no type hints, and forces that
# warning on; the explicit tensor signature is what validates inputs here.
with warnings.catch_warnings(record=True):
    class MicroExpressionModel(mlflow.pyfunc.PythonModel):
        """Two kinds of input:

        - aligned micro clips (N, T, H, W, 3) uint8 RGB, apex at T // 2, as in the processed
          clip table → a DataFrame of class probabilities, one column per class;
        - a video: a file path or its bytes in process, or over REST a DataFrame with a
          `video` column holding the file base64-encoded → one row per sliding window
          (frames, seconds, `predicted`, one probability column per class and, when the
          final model carries the AU readout, one per action unit `AU<n>`), aligned as
          `mer predict` aligns it. A path is read only in process, never from a REST request.
        """

        def load_context(self, context) -> None:
            from mer_core.inference import load_final_model

            self.model, self.meta = load_final_model(Path(context.artifacts["final_model"]))
            self.config = context.model_config or {}

        def _probabilities(self, clips: np.ndarray) -> np.ndarray:
            from mer_core.inference import class_probabilities

            return class_probabilities(self.model, np.asarray(clips, dtype=np.uint8), self.config.get("mask_margin"),
                                       self.meta["motion"])

        def predict(self, context, model_input, params=None) -> pd.DataFrame:
            from mer_core.inference import au_outputs, predict_video, predict_video_bytes, predictor_from_config

            if isinstance(model_input, str | Path | bytes) or (
                    isinstance(model_input, pd.DataFrame) and "video" in model_input.columns):
                predictor = predictor_from_config("registered model", self.meta["classes"], self.config,
                                                  self._probabilities,
                                                  **au_outputs(self.meta, self.config.get("mask_margin")))
                if isinstance(model_input, str | Path):
                    return predict_video(Path(model_input), predictor).as_frame()
                data = model_input if isinstance(model_input, bytes) else _video_bytes(model_input["video"].iloc[0])
                return predict_video_bytes(data, predictor).as_frame()
            return pd.DataFrame(self._probabilities(model_input), columns=self.meta["classes"])


def _video_bytes(cell) -> bytes:
    """A REST request's `video` cell: base64 text (JSON has no bytes), or bytes as they are."""
    import base64
    import binascii

    if isinstance(cell, bytes):
        return cell
    try:
        return base64.b64decode(str(cell), validate=True)
    except binascii.Error:
        raise ValueError("the `video` column must hold the video file base64-encoded") from None


def _signature(meta: dict):
    """Outputs only: the model takes clips or a video (see MicroExpressionModel), which one
    input schema cannot describe; it checks its input itself."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=None, outputs=Schema([ColSpec("double", c) for c in meta["classes"]]))


def _requirements() -> list[str]:
    # Explicit: MLflow would record torch without the local "+cpu" and pull the CUDA build,
    # and would miss OpenCV (video decoding, face detection, flow), which the model imports.
    from importlib.metadata import version

    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
            f"numpy=={np.__version__}", f"pandas=={pd.__version__}",
            f"opencv-python-headless=={version('opencv-python-headless')}", f"pyarrow=={version('pyarrow')}",
            f"scipy=={version('scipy')}", "pydantic", "pyyaml"]


@dataclass(frozen=True)
class Standing:
    """What the promotion gate compares: UF1 under a protocol on a data version."""

    uf1: float
    protocol: str
    data_version: str


def promotion_decision(candidate: Standing, champion: Standing | None, margin: float) -> tuple[str, str]:
    """(alias, reason): `champion` only if the candidate beats the current champion's UF1
    by `margin` on the same protocol and data version; otherwise `challenger`."""
    if not math.isfinite(candidate.uf1):
        raise ValueError(f"candidate UF1 is {candidate.uf1}; refusing to register a model without a score")
    if champion is None:
        return CHAMPION, f"no champion yet; UF1 {candidate.uf1:.4f}"
    if champion.protocol != candidate.protocol:
        return CHALLENGER, (f"not comparable: champion was scored under protocol {champion.protocol!r}, "
                            f"this one under {candidate.protocol!r}; review and promote by hand")
    if champion.data_version != candidate.data_version:
        return CHALLENGER, (f"not comparable: champion was scored on data version {champion.data_version}, "
                            f"this one on {candidate.data_version}; review and promote by hand")
    gain = candidate.uf1 - champion.uf1
    if gain >= margin:
        return CHAMPION, f"UF1 {candidate.uf1:.4f} beats the champion's {champion.uf1:.4f} by {gain:+.4f} ≥ {margin}"
    return CHALLENGER, f"UF1 {candidate.uf1:.4f} vs the champion's {champion.uf1:.4f}: {gain:+.4f} < margin {margin}"


def _is(error: MlflowException, code: int) -> bool:
    return error.error_code == ErrorCode.Name(code)


def current_champion(client: MlflowClient, name: str) -> tuple[str | None, Standing | None]:
    """(version, standing) of the model's `champion` alias, or (None, None) when the model
    is not registered yet or no version holds the alias.

    Raises:
        MlflowException: any other registry error (a locked database, an unreachable
            server): the gate must not crown a new champion because it could not look.
    """
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as exc:
        if _is(exc, RESOURCE_DOES_NOT_EXIST):
            return None, None
        raise
    if CHAMPION not in aliases:
        return None, None
    version = client.get_model_version(name, str(aliases[CHAMPION]))
    tags = version.tags
    return version.version, Standing(float(tags.get("uf1", "nan")), tags.get("protocol", ""),
                                     tags.get("data.version", ""))


@dataclass(frozen=True)
class RegistryOutcome:
    model_name: str
    version: str
    alias: str
    reason: str
    run_id: str
    previous_champion: str | None
    champion_uf1: float | None = None  # the champion's UF1 the gate compared with
    changes: tuple[str, ...] = ()  # what differs from that champion, one line each


def registry_description(name: str, margin: float) -> str:
    """The registered model's description: what it is, and how its aliases move, in plain words."""
    return (f"# {name}\n\nA micro-expression classifier (MIACNet) for short face videos, trained, scored and "
            "registered by the mer pipeline. Applications load `models:/" + name + "@champion`.\n\n"
            "## How versions get their aliases\n"
            "- Every pipeline run that trains a new model registers a new version; its model card is the "
            "version's description and starts with the decision below.\n"
            f"- **champion**: the version applications use. A new version takes the alias only if its "
            f"leave-one-subject-out UF1 beats the current champion's by at least {margin} (the promotion margin), "
            "scored under the same protocol (label set, data sets, classes) on the same data version.\n"
            "- **challenger**: a new version that did not clear that bar, or whose score cannot be compared "
            "(other data, other protocol). It waits for a person: promote it by moving the `champion` alias by "
            "hand if the review says so.\n"
            "- A run that reproduces a registered model's weights registers nothing.\n")


def version_card(card: str, alias: str, reason: str, champion_version: str | None, changes: list[str]) -> str:
    """A version's description: its alias, why, and what changed against the champion, then the model card."""
    lines = [f"**Alias: `{alias}`.** {reason[0].upper() + reason[1:]}.", ""]
    if champion_version is not None:
        lines += [f"What changed against the champion (version {champion_version}):",
                  *([f"- {line}" for line in changes] or ["- nothing recorded differs"]), ""]
    return "\n".join(lines) + "\n" + card


def _changes(client: MlflowClient, name: str, champion_version: str | None, settings: dict[str, str],
             tags: dict[str, str], standing: Standing) -> list[str]:
    """Settings, code, data and score of this model against the champion's."""
    if champion_version is None:
        return []
    version = client.get_model_version(name, champion_version)
    before = client.get_run(version.run_id).data.params if version.run_id else {}
    lines = [f"`{key}`: {before[key]} → {value}" for key, value in sorted(settings.items())
             if key in before and before[key] != value]
    if settings and not any(key in before for key in settings):
        lines.append("the champion's training settings were not recorded; compare their cards")
    old = version.tags
    current = {"git.commit": tags.get("git.commit"), "data.version": standing.data_version,
               "protocol": standing.protocol}
    for label, key in (("code (git commit)", "git.commit"), ("data version", "data.version"), ("protocol", "protocol")):
        if old.get(key) and current[key] and old[key] != current[key]:
            lines.append(f"{label}: `{old[key][:12]}` → `{current[key][:12]}`")
    if "uf1" in old:
        lines.append(f"LOSO UF1: {float(old['uf1']):.4f} → {standing.uf1:.4f}")
    return lines


def register_model(session: TrackingSession, name: str, final_model: Path, standing: Standing,
                   metrics: dict[str, float], card: str, margin: float, frames: int,
                   model_config: dict, artifacts: list[Path], settings: dict[str, str] | None = None
                   ) -> RegistryOutcome:
    """Log the final model as a pyfunc, register a version with the model card, then
    apply the promotion gate. Aliases move only as the very last step, after the model
    loaded back and predicted its input example, so a failure leaves them untouched.

    `settings` (params as `loggable_params` flattens them) are logged with the version's
    run, so the next version's card can say what changed against this one.
    """
    from mer_core.inference import load_final_model

    model, meta = load_final_model(final_model)
    champion_version, champion = current_champion(session.client, name)
    champion_uf1 = champion.uf1 if champion else None
    digest = weights_digest(model, meta)
    if (same := _version_with_weights(session.client, name, digest, standing)) is not None:
        # A re-run that reproduced the same weights (a code change elsewhere, a new
        # validation report) adds nothing a reviewer could choose between.
        return RegistryOutcome(name, same.version, _alias_of(session.client, name, same.version),
                               f"unchanged: version {same.version} already holds these weights under the same "
                               "protocol and data version; nothing registered", same.run_id, champion_version,
                               champion_uf1)
    alias, reason = promotion_decision(standing, champion, margin)
    changes = _changes(session.client, name, champion_version, settings or {}, session.tags, standing)
    card = version_card(card, alias, reason, champion_version, changes)
    run_id = session.log_run("register", metrics=metrics, artifacts=artifacts,
                             params={"model_name": name, "promotion_margin": str(margin), **(settings or {})})
    # A neutral grey clip batch: a real clip would put a subject's face into the registry.
    example = np.full((2, frames, meta["img_size"], meta["img_size"], 3), 128, np.uint8)
    with fluent_store(session.uri):  # the registry resolves `models:/m-…` through the fluent store too
        with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
            # The signature validates inputs; MLflow's type-hint and cloudpickle notices are noise here.
            warnings.simplefilter("ignore", UserWarning)
            info = mlflow.pyfunc.log_model(
                name="model", python_model=MicroExpressionModel(), artifacts={"final_model": str(final_model)},
                signature=_signature(meta), input_example=example, model_config=model_config,
                code_paths=[str(Path(__file__).parent)], pip_requirements=_requirements())
        mlflow.pyfunc.load_model(info.model_uri).predict(example)  # smoke test before any alias moves
        version = _create_version(session, name, info.model_uri, run_id, card, standing, digest,
                                  registry_description(name, margin), info.model_id)
    session.client.set_model_version_tag(name, version, "promotion.decision", alias)
    session.client.set_model_version_tag(name, version, "promotion.reason", reason)
    session.client.set_registered_model_alias(name, alias, version)
    return RegistryOutcome(name, version, alias, reason, run_id, champion_version, champion_uf1, tuple(changes))


def log_report(session: TrackingSession, run_id: str, path: Path) -> str:
    """Attach the run's HTML report to `run_id` (the run that registered the model version,
    so the MLflow UI shows it beside the model); returns its `runs:/` URI."""
    session.client.log_artifact(run_id, str(path))
    return f"runs:/{run_id}/{Path(path).name}"


def weights_digest(model: torch.nn.Module, meta: dict) -> str:
    """A digest of what a final model computes: its weights, its metadata (classes,
    encoder, input size...) and its AU readout. The file's bytes are no good for this: two saves of the same
    weights differ."""
    readout = meta.get("action_units")
    plain = {k: v for k, v in meta.items() if k != "action_units"}  # files without a readout: digests as before
    digest = hashlib.sha256(json.dumps(plain, sort_keys=True).encode())
    if readout is not None:
        digest.update(json.dumps(list(readout.units)).encode())
        digest.update(readout.weights.tobytes() + readout.bias.tobytes())
    state = model.state_dict()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def _version_with_weights(client: MlflowClient, name: str, digest: str, standing: Standing):
    """The version of `name` registered with these weights and this standing, if any."""
    try:
        versions = client.search_model_versions(f"name = '{name}' and tags.`{WEIGHTS_TAG}` = '{digest}'")
    except MlflowException as exc:
        if _is(exc, INVALID_PARAMETER_VALUE):
            return None  # a store that cannot filter by tag: register, as before
        raise
    for version in versions:
        tags = version.tags
        if tags.get("protocol") == standing.protocol and tags.get("data.version") == standing.data_version:
            return version
    return None


def _alias_of(client: MlflowClient, name: str, version: str) -> str:
    aliases = [a for a, v in client.get_registered_model(name).aliases.items() if str(v) == str(version)]
    return ",".join(sorted(aliases)) or "none"


def _create_version(session: TrackingSession, name: str, model_uri: str, run_id: str, card: str,
                    standing: Standing, digest: str, description: str, model_id: str | None = None) -> str:
    """A new READY version of `name` with the card as its description and the standing as
    tags; the registered model's `description` is (re)written too. A tracking server accepts
    a `models:/m-…` source only with the `model_id` it names."""
    try:
        session.client.create_registered_model(name, description=description)
    except MlflowException as exc:
        if not _is(exc, RESOURCE_ALREADY_EXISTS):
            raise
        session.client.update_registered_model(name, description=description)
    version = session.client.create_model_version(
        name, model_uri, run_id=run_id, model_id=model_id, description=card,
        tags={**session.tags, "uf1": f"{standing.uf1:.6f}", "protocol": standing.protocol,
              "data.version": standing.data_version, WEIGHTS_TAG: digest})
    _wait_ready(session.client, name, version.version)
    return version.version


def _wait_ready(client: MlflowClient, name: str, version: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get_model_version(name, version).status != "READY":
        if time.monotonic() > deadline:
            raise TimeoutError(f"model {name} version {version} not READY after {timeout_s} s")
        time.sleep(0.2)


def registered_uf1(uri: str, tracking: TrackingParams, root: Path) -> float | None:
    """The LOSO UF1 a `models:/NAME@ALIAS` or `models:/NAME/VERSION` was registered with
    (its held-out figure); None for other URIs or a version without one."""
    import re

    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", uri)
    if not match:
        return None
    store = resolve_tracking_uri(tracking, root)
    client = MlflowClient(store, store)
    name, alias, number = match.groups()
    version = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    return float(version.tags["uf1"]) if "uf1" in version.tags else None


def load_registered_model(uri: str, tracking: TrackingParams, root: Path):
    """A pyfunc model by URI (`models:/mer-micro@champion`, `runs:/...`) from the configured store.

    Read-only: the model is copied into a private folder first (MLflow would otherwise
    load it in place from a local artifact store and write its registry metadata there).
    The copy lives until the process ends, since MLflow imports the model's code from it.
    """
    store = resolve_tracking_uri(tracking, root)
    copy = tempfile.mkdtemp(prefix="mer-model-")
    atexit.register(shutil.rmtree, copy, ignore_errors=True)
    try:
        with fluent_store(store), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # MLflow's type-hint notice
            return mlflow.pyfunc.load_model(uri, dst_path=copy)
    except MlflowException as exc:
        raise LookupError(f"cannot load model {uri} from {store}: {exc.message}") from None

