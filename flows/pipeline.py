"""Prefect flows over the DVC stages: orchestration only.

Each task reproduces one DVC stage (`dvc repro --single-item <stage>`), so unchanged
stages are skipped by DVC and `dvc.lock` records what ran. Stages run one after another:
DVC holds a workspace lock and two `dvc repro` at once would fail. With
`pretrain.nproc_per_node` > 1 the pretrain task's `dvc repro` runs `mer pretrain`, which
starts `torchrun` as one subprocess: the DDP processes live there, never in a task.

Flow parameter `params` overrides params.yaml for one run, as `dvc exp run --set-param`
would: `{"finetune.epochs": 40}`. Overrides are validated before anything runs, written
into params.yaml (comments kept), the stages run, the result is saved as a DVC experiment
named after the flow run (`dvc exp show` lists it), and params.yaml is restored unless
`keep_params` — so a scheduled run never inherits another run's overrides.

Two flow runs on one workspace take turns: each holds `.dvc/tmp/mer-flow.lock` for its
whole run; the second waits up to `lock_timeout_s`, then fails saying who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

STAGES = ("synthesize", "ingest", "anonymize", "validate", "features", "pretrain", "finetune", "evaluate",
          "register", "report")
DATA_STAGES = STAGES[:5]
PARAMS_FILE = "params.yaml"
LOCK_FILE = ".dvc/tmp/mer-flow.lock"


class StageError(RuntimeError):
    """A DVC stage exited non-zero; the message carries the end of its output."""


class WorkspaceBusyError(RuntimeError):
    """Another pipeline run held the workspace for longer than this one would wait."""


@contextmanager
def workspace_lock(repo: Path, holder: str, timeout_s: float, poll_s: float = 2.0) -> Iterator[None]:
    """Hold an exclusive lock on the workspace; wait up to `timeout_s` for it.

    An OS file lock: it is released when the holder exits, even if killed, so a crashed
    run never leaves the workspace locked.
    """
    path = repo / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    raise WorkspaceBusyError(
                        f"the workspace {repo} is in use by another pipeline run ({handle.read().strip() or 'unknown'}); "
                        f"waited {timeout_s:.0f} s. Try again when it has finished.") from None
                time.sleep(poll_s)
        handle.seek(0), handle.truncate()
        handle.write(f"{holder} on {socket.gethostname()}, pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0), handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_overrides(params_file: Path, overrides: dict[str, Any]) -> str:
    """Set dotted keys in params.yaml keeping its comments; returns the original text."""
    from ruamel.yaml import YAML

    from mer_core.config import set_dotted_key

    original = params_file.read_text()
    yaml = YAML()  # round-trip mode: comments and key order survive
    document = yaml.load(original)
    for key, value in overrides.items():
        set_dotted_key(document, key, value, params_file)
    with open(params_file, "w") as handle:
        yaml.dump(document, handle)
    return original


def _dvc(args: list[str], repo: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True, env={**os.environ, **env})


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10, timeout_seconds=4 * 3600, task_run_name="{stage}")
def reproduce_stage(stage: str, repo: str, env: dict[str, str] | None = None) -> str:
    """Run one DVC stage in `repo`; returns DVC's output. A retry covers transient
    failures (a tracking server blip); a stage that fails twice fails the flow."""
    logger = get_run_logger()
    result = _dvc(["repro", "--single-item", stage], repo, env or {})
    logger.info("dvc repro %s:\n%s", stage, result.stdout[-4000:])
    if result.returncode != 0:
        raise StageError(f"stage {stage!r} failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5, timeout_seconds=300)
def save_experiment(repo: str, name: str) -> str:
    """Record the workspace (params with overrides, dvc.lock) as a DVC experiment."""
    result = _dvc(["exp", "save", "--force", "--name", name], repo, {})
    if result.returncode != 0:
        raise StageError(f"dvc exp save failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return name


def _report(repo: Path, relative: str) -> dict | None:
    path = repo / relative
    return json.loads(path.read_text()) if path.exists() else None


def stage_ran(stage: str, dvc_output: str) -> bool:
    """Whether `dvc repro --single-item <stage>` ran the stage (else DVC skipped it, unchanged)."""
    return f"Running stage '{stage}'" in dvc_output


@task(cache_policy=NO_CACHE)
def publish_summary(repo: str, outputs: dict[str, str]) -> str:
    """A markdown artifact for people: stages run and skipped, figures, registry decision, report."""
    from mer_core.config import load_params
    from mer_core.evaluation.report import run_summary_markdown
    from mer_core.tracking import resolve_tracking_uri

    root = Path(repo)
    p = load_params(root / PARAMS_FILE)
    ran = [stage for stage, out in outputs.items() if stage_ran(stage, out)]
    registry = _report(root, str(p.paths.registry_report))
    report = None
    if "report" in outputs and (root / p.paths.report).exists():
        report = f"`{(root / p.paths.report).resolve()}`"
        if registry is not None:
            report += f", and in MLflow `runs:/{registry['run_id']}/{p.paths.report.name}`"
    markdown = run_summary_markdown(
        ran=ran, skipped=[stage for stage in outputs if stage not in ran],
        metrics=_report(root, str(p.paths.metrics)) if "evaluate" in outputs else None,
        validation=_report(root, str(p.paths.validation_report)) if "validate" in outputs else None,
        registry=registry, report=report, tracking_uri=resolve_tracking_uri(p.tracking, root))
    create_markdown_artifact(markdown=markdown, key="mer-run-summary", description="mer pipeline run summary")
    get_run_logger().info("%s", markdown)
    return markdown


@flow(name="mer-pipeline")
def mer_pipeline(repo: str = ".", stages: list[str] | None = None, params: dict[str, Any] | None = None,
                 keep_params: bool = False, lock_timeout_s: float = 900) -> dict[str, str]:
    """Reproduce `stages` in order through DVC; the first failure fails the flow run.

    Args:
        stages: the DVC stages to reproduce, in order; all of them by default.
        params: dotted-key overrides of params.yaml for this run (validated first).
        keep_params: leave the overrides in params.yaml after the run.
        lock_timeout_s: how long to wait for another run on the same workspace.
    """
    from mer_core.config import with_overrides

    root = Path(repo).resolve()
    stages = list(stages or STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {list(STAGES)}")
    if params:
        with_overrides(root / PARAMS_FILE, params)  # a wrong key fails here, before any work
    run_name = flow_run.get_name() or "local"
    # Every MLflow run of this pipeline run carries this tag, so they can be found together.
    env = {"MER_RUN_GROUP": str(flow_run.get_id() or run_name)}
    with workspace_lock(root, f"flow run {run_name}", lock_timeout_s):
        original = write_overrides(root / PARAMS_FILE, params) if params else None
        try:
            outputs = {stage: reproduce_stage(stage, str(root), env) for stage in stages}
            if params:
                save_experiment(str(root), f"mer-{run_name}")
        finally:
            if original is not None and not keep_params:
                (root / PARAMS_FILE).write_text(original)
        publish_summary(str(root), outputs)
    return outputs


@flow(name="mer-ingest-new-data")
def ingest_new_data(adapter: str, source: str, name: str, kind: str = "micro", repo: str = ".",
                    retrain: bool = False, lock_timeout_s: float = 900) -> dict[str, str]:
    """Add a data set (read through `adapter` from `source`) to ingest.datasets, then
    reproduce the data stages — and the learning stages too if `retrain`. The data set
    stays in params.yaml, so later runs keep it."""
    from mer_core.config import load_params

    root = Path(repo).resolve()
    current = load_params(root / PARAMS_FILE).ingest.datasets
    datasets = [d.model_dump(mode="json", exclude_none=True) for d in current if d.name != name]
    datasets.append({"name": name, "adapter": adapter, "root": source, "kind": kind})
    stages = list(STAGES) if retrain else list(DATA_STAGES)
    return mer_pipeline(repo=repo, stages=stages, params={"ingest.datasets": datasets}, keep_params=True,
                        lock_timeout_s=lock_timeout_s)


@flow(name="mer-evaluate-champion")
def evaluate_champion(repo: str = ".", model_uri: str | None = None) -> dict:
    """Score the registry's champion on the current processed micro clips (`mer
    evaluate-champion`): on subjects it never saw (a generalization estimate) and,
    labelled in-sample, on those it trained on. Its LOSO figure is the `uf1` tag it was
    registered with."""
    from mer_core.evaluation.champion import champion_markdown

    command = [str(Path(sys.executable).parent / "mer"), "evaluate-champion",
               *(["--model", model_uri] if model_uri else [])]
    result = subprocess.run(command, cwd=Path(repo).resolve(), capture_output=True, text=True)
    if result.returncode != 0:
        raise StageError(f"mer evaluate-champion failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    scores = json.loads(result.stdout)
    create_markdown_artifact(key="mer-champion-evaluation", description="champion on the current processed data",
                             markdown=champion_markdown(scores))
    get_run_logger().info("champion evaluation: %s", scores)
    return scores


if __name__ == "__main__":  # pragma: no cover
    mer_pipeline()
