"""The Prefect side: deployments that import, params overrides, the workspace lock.
"""

from __future__ import annotations

import threading

import pytest
import yaml

from mer_core.config import ParamsError, with_overrides
from tests.conftest import REPO, tiny_params


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


def test_prefect_yaml_cites_readme_sections_that_exist():
    import re

    cited = re.findall(r'README "([^"]+)"', (REPO / "prefect.yaml").read_text())
    headings = {line.lstrip("#").strip() for line in (REPO / "README.md").read_text().splitlines()
                if line.startswith("#")}
    assert cited and set(cited) <= headings


def test_tasks_are_named_after_their_stage_and_the_summary_says_what_ran():
    from flows.pipeline import STAGES, reproduce_stage, stage_ran
    from mer_core.evaluation.report import run_summary_markdown

    assert reproduce_stage.task_run_name == "{stage}"
    assert stage_ran("evaluate", "Running stage 'evaluate':\n> mer evaluate\n")
    assert not stage_ran("register", "Stage 'register' didn't change, skipping\n")
    metrics = {"variant": "scratch_e2e", "uf1": 0.5, "uar": 0.5, "accuracy": 0.5}
    registry = {"model_name": "mer-micro", "version": "3", "alias": "challenger", "reason": "why", "run_id": "r1"}
    idle = run_summary_markdown(ran=[], skipped=list(STAGES), metrics=metrics, validation=None, registry=registry,
                                report=None, tracking_uri="sqlite:///mlflow.db")
    assert "Ran: nothing (every stage was up to date)" in idle and "(unchanged by this run)" in idle
    assert "version 3" not in idle and "nothing registered" in idle
    busy = run_summary_markdown(ran=["finetune", "evaluate", "register", "report"], skipped=["synthesize"],
                                metrics=metrics, validation=None, registry=registry, report="`reports/report.html`",
                                tracking_uri="sqlite:///mlflow.db")
    assert "version 3 → `challenger`" in busy and "Skipped, unchanged: synthesize" in busy
    assert "Report: `reports/report.html`" in busy
