"""Prefect flow over the DVC stages: orchestration only.

Each task reproduces one DVC stage (`dvc repro --single-item <stage>`), so unchanged
stages are skipped by DVC and `dvc.lock` records what ran. Stages run one after another:
DVC holds a workspace lock and two `dvc repro` at once would fail.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

DATA_STAGES = ("synthesize", "ingest", "anonymize", "validate")
LEARNING_STAGES = ("pretrain", "finetune", "evaluate")


class StageError(RuntimeError):
    """A DVC stage exited non-zero; the message carries the end of its output."""


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5, timeout_seconds=3600)
def reproduce_stage(stage: str, repo: str) -> str:
    """Run one DVC stage in `repo`; returns DVC's output."""
    logger = get_run_logger()
    result = subprocess.run(["dvc", "repro", "--single-item", stage], cwd=repo, capture_output=True, text=True)
    logger.info("dvc repro %s:\n%s", stage, result.stdout[-4000:])
    if result.returncode != 0:
        raise StageError(f"stage {stage!r} failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


@flow(name="mer-pipeline")
def mer_pipeline(repo: str = ".", stages: list[str] = list(DATA_STAGES + LEARNING_STAGES)) -> dict[str, str]:
    """Reproduce `stages` in order; the first failure fails the flow run."""
    repo = str(Path(repo).resolve())
    return {stage: reproduce_stage(stage, repo) for stage in stages}


if __name__ == "__main__":  # pragma: no cover
    mer_pipeline()
