"""Ingest, anonymize and LOSO fine-tuning on a real Dask cluster: a `LocalCluster` of 2
worker processes on 127.0.0.1, started here and closed after. The executor may change
where jobs run, never what they produce, and a worker lost mid-run costs only time."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from dask.utils import key_split

from mer_core.config import ExecutorParams
from mer_core.data.anonymize import PseudonymKey, anonymize
from mer_core.data.ingest import ingest
from mer_core.data.motion import write_motion_features
from mer_core.data.store import CLIPS_DIR
from mer_core.parallel import ClusterUnavailable, open_job_pool
from mer_core.training.finetune import FinetuneFiles, model_inputs, run_finetuning
from tests.conftest import TEST_KEY_HEX

PROCESS_POOL = ExecutorParams()  # each stage's `workers` spawned processes


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def on_dask(cluster) -> ExecutorParams:
    return ExecutorParams(kind="dask", address=cluster.scheduler_address)


def _runs_of(cluster, job_function: str) -> dict[str, int]:
    """How often the scheduler has put tasks of `job_function` into each state, ever."""
    prefix = cluster.scheduler.task_prefixes.get(key_split(job_function))  # `_f` is prefix `f`
    return dict(prefix.state_counts) if prefix is not None else {}  # a prefix with no live task is falsy


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ingested(tiny_synthetic, tiny_config, cluster, on_dask, tmp_path_factory) -> tuple[Path, Path, int, int]:
    """The tiny synthetic set ingested by a pool of 2 processes and on the cluster;
    (pool output, Dask output, clips listed, clip jobs the cluster ran)."""
    root = tmp_path_factory.mktemp("dask_ingest")
    params = tiny_config.ingest.model_copy(update={"workers": 2})
    summaries = ingest(params, root / "pool", executor=PROCESS_POOL)
    ingest(params, root / "dask", executor=on_dask)
    clips = sum(s.clips_listed for s in summaries.values())
    return root / "pool", root / "dask", clips, _runs_of(cluster, "process_clip").get("memory", 0)


@pytest.mark.timeout(300)
def test_ingest_on_dask_writes_the_bytes_the_process_pool_writes(ingested):
    pool, dask, clips, clips_run = ingested
    assert clips_run == clips > 0  # every clip was a task on the cluster, none ran here
    files = _files(pool)
    assert any(name.startswith(f"{CLIPS_DIR}/") for name in files) and "rejected.parquet" in files
    assert _files(dask) == files


@pytest.fixture(scope="module")
def anonymized(ingested, cluster, on_dask, tmp_path_factory) -> tuple[Path, Path]:
    """The interim clips anonymized by 2 processes and on the cluster."""
    pool_interim = ingested[0]
    root, key = tmp_path_factory.mktemp("dask_anonymize"), PseudonymKey(bytes.fromhex(TEST_KEY_HEX), "env")
    shards = sorted((pool_interim / CLIPS_DIR).rglob("*.parquet"))
    assert len(shards) > 1  # so that both workers get one
    pool = anonymize(pool_interim / CLIPS_DIR, root / "pool" / CLIPS_DIR, key, True, workers=2)
    before = _runs_of(cluster, "_anonymize_shard").get("memory", 0)
    dask = anonymize(pool_interim / CLIPS_DIR, root / "dask" / CLIPS_DIR, key, True, executor=on_dask)
    assert _runs_of(cluster, "_anonymize_shard")["memory"] - before == len(shards)
    assert dask == pool
    return root / "pool", root / "dask"


@pytest.mark.timeout(300)
def test_anonymize_on_dask_writes_the_bytes_the_process_pool_writes(anonymized):
    pool, dask = anonymized
    assert _files(dask) == _files(pool)


class _WorkerKiller(threading.Thread):
    """Waits until both workers hold a task of `job_function`, lets them work a moment,
    then kills one worker process (SIGKILL: no goodbye to the scheduler) and records
    the tasks it held."""

    def __init__(self, address: str, job_function: str):
        super().__init__(daemon=True)
        self.address, self.job_function = address, job_function
        self.lost: list[str] = []  # tasks the killed worker held when it died

    def _busy(self, client) -> dict[str, list[str]]:
        held = {w: [k for k in keys if str(k).startswith(f"{self.job_function}-")]
                for w, keys in client.processing().items()}
        return {w: keys for w, keys in held.items() if keys}

    def run(self) -> None:
        from distributed import Client

        with Client(self.address, timeout=30, set_as_default=False) as client:
            deadline = time.monotonic() + 120
            while len(self._busy(client)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # into the jobs, not at their first line
            busy = self._busy(client)
            if not busy:
                return
            victim = sorted(busy)[0]
            pid = client.run(os.getpid, workers=[victim])[victim]
            self.lost = busy[victim]
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(600)
def test_loso_on_dask_survives_a_killed_worker_and_predicts_what_the_process_pool_predicts(
        anonymized, tiny_config, cluster, on_dask, tmp_path):
    processed, _ = anonymized
    # Two jobs, a learned variant and a baseline: one for each worker, one of them to lose.
    params = tiny_config.finetune.model_copy(update={
        "variant": "scratch_e2e", "ablation": ["scratch_e2e", "difference_lr"], "au_variants": [], "seeds": [0],
        "epochs": 2, "workers": 2})
    inputs = model_inputs(tiny_config)
    micro = [d.name for d in tiny_config.ingest.datasets if d.kind == "micro"]
    write_motion_features(processed / CLIPS_DIR, tmp_path / "features", micro, inputs.flow, inputs.magnification)

    def files(name: str) -> FinetuneFiles:  # checkpoints apart: the second run may reuse nothing
        return FinetuneFiles(processed / CLIPS_DIR, tmp_path / "features", tmp_path / "encoders",
                             tmp_path / name / "checkpoints", tmp_path / name / "final.pt")

    rows, report = run_finetuning(params, files("pool"), micro, inputs, PROCESS_POOL)

    jobs = len(report["seconds"])
    before = _runs_of(cluster, "run_loso_job")
    killer = _WorkerKiller(cluster.scheduler_address, "run_loso_job")
    killer.start()
    dask_rows, dask_report = run_finetuning(params, files("dask"), micro, inputs, on_dask)
    killer.join(timeout=5)
    runs = _runs_of(cluster, "run_loso_job")

    assert killer.lost, "no worker was killed while running a LOSO job"
    assert runs["memory"] - before.get("memory", 0) == jobs
    # The killed worker's jobs were handed to a worker again: more starts than jobs.
    assert runs["processing"] - before.get("processing", 0) >= jobs + len(killer.lost)
    assert dask_rows == rows
    assert {k: v for k, v in dask_report.items() if k not in ("seconds", "final_model")} == \
        {k: v for k, v in report.items() if k not in ("seconds", "final_model")}


def test_an_unreachable_scheduler_is_named_with_its_key(monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setattr("mer_core.parallel.CONNECT_TIMEOUT_S", 1)
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ClusterUnavailable, match=rf"executor.address {address}: no Dask scheduler answered"):
        with open_job_pool(ExecutorParams(kind="dask", address=address), workers=2):
            pass
