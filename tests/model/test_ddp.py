"""Data-parallel pre-training under torchrun, for real: 2 CPU processes over gloo on
localhost against 1 process with the doubled batch, resumes across a changed number of
processes, and `mer pretrain` launching torchrun itself with rank 0 alone logging.

Why the losses of 2 processes and of 1 can agree to rounding here: DDP averages the
gradients of the ranks, each the mean over its half of the batch, which is the mean over
the whole batch; the encoders have GroupNorm/LayerNorm and no BatchNorm or dropout; the
frame pairs are drawn per clip, whatever process reads it; and with row groups of one
rank batch each, 2 ranks' step s reads the very row groups 1 process's step s reads. What
is left is float32 summation order (a batch of 4 twice against one of 8)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from mer_core.config import ParamsError, PretrainParams
from mer_core.data.training_sets import MacroClipStream
from mer_core.training.checkpoint import read_checkpoint
from mer_core.training.pretrain import batch_per_rank, pretrain_variant
from tests.conftest import tiny_params
from tests.model.test_training import ENCODER, _macro_table

CLIPS, ROW_GROUP = 16, 4
# 2 ranks × 4 = the global batch of 8 that 1 process takes at once; each row group is one rank batch.
SETTINGS = {"epochs": 4, "batch_size": 8, "encoder": ENCODER, "device": "cpu", "warmup_epochs": 1, "lr": 2e-3}
# Measured here (8 steps): the per-epoch losses of 2 processes and of 1 were equal to the 5 decimals
# the history keeps, and the weights within 2e-6, but for the attention's key biases, which
# softmax ignores: their gradient is zero in exact arithmetic, so AdamW's normalised step turns
# rounding noise into updates of up to 5e-5 that change no output; they are left out. Breaking
# the run moves far more: without the gradient average the epoch loss moved 3-10 % and weights
# 1.5e-2, with every rank reading every row group 25-31 %.
LOSS_RTOL, WEIGHT_ATOL = 1e-4, 2e-5
TORCHRUN_TIMEOUT_S = 120

_RANK_SCRIPT = """
import sys, torch
from pathlib import Path
from mer_core.config import PretrainParams
from mer_core.training import distributed
from mer_core.training.pretrain import pretrain_variant
params = PretrainParams.model_validate_json(sys.argv[1])
ranks = distributed.ranks_from_environment()
with distributed.process_group(ranks, torch.device("cpu")):
    pretrain_variant(params, "ma2mi", [Path(sys.argv[2])], 64, "v1", Path(sys.argv[3]),
                     stop_after_epoch=int(sys.argv[4]) or None, ranks=ranks)
"""


def _torchrun(args: list[str], cwd: Path) -> None:
    """Run `args` under `torchrun --standalone --nproc_per_node 2` (torchrun picks a free port on localhost)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S,
                            env={**os.environ, "MER_LOG_LEVEL": "WARNING"})
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Pre-training for 2 of 4 epochs in 2 processes (`ddp/`) and in 1 (`single/`), on one macro table."""
    root = tmp_path_factory.mktemp("ddp")
    _macro_table(root / "clips", clips=CLIPS, row_group=ROW_GROUP)
    (root / "rank.py").write_text(_RANK_SCRIPT)
    params = PretrainParams(**SETTINGS)
    _torchrun(["rank.py", params.model_dump_json(), str(root / "clips"), str(root / "ddp"), "2"], root)
    torch.set_num_threads(1)  # as torchrun gives each of its processes
    pretrain_variant(params, "ma2mi", [root / "clips"], 64, "v1", root / "single", stop_after_epoch=2)
    return root


def _checkpoint(directory: Path) -> dict:
    return read_checkpoint(directory / "ma2mi.pt")


def _assert_same_weights(a: dict, b: dict) -> None:
    for name, tensor in a.items():
        other = b[name]
        if name.endswith("attn.in_proj_bias"):  # (query, key, value) biases: the key third changes no output
            third = tensor.numel() // 3
            tensor, other = torch.cat([tensor[:third], tensor[2 * third:]]), torch.cat([other[:third], other[2 * third:]])
        assert torch.allclose(tensor, other, atol=WEIGHT_ATOL), f"{name} differs by {(tensor - other).abs().max():.2e}"


@pytest.mark.timeout(300)
def test_two_gloo_processes_reach_the_loss_of_one_process_with_the_doubled_batch(runs):
    ddp, single = _checkpoint(runs / "ddp"), _checkpoint(runs / "single")
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert [h["steps"] for h in ddp["history"]] == [h["steps"] for h in single["history"]] == [2, 2]
    for two, one in zip(ddp["history"], single["history"]):
        assert two["loss"] == pytest.approx(one["loss"], rel=LOSS_RTOL), (two, one)
    _assert_same_weights(ddp["model"], single["model"])
    assert ddp["history"][1]["loss"] != ddp["history"][0]["loss"]  # it trained: not two copies of the start


def test_a_two_process_checkpoint_resumes_in_one_process_where_it_stopped(runs, tmp_path):
    params = PretrainParams(**SETTINGS)
    shutil.copytree(runs / "ddp", tmp_path / "two_then_one")
    shutil.copytree(runs / "single", tmp_path / "one_then_one")
    _, two_then_one = pretrain_variant(params, "ma2mi", [runs / "clips"], 64, "v1", tmp_path / "two_then_one")
    _, one_then_one = pretrain_variant(params, "ma2mi", [runs / "clips"], 64, "v1", tmp_path / "one_then_one")

    assert two_then_one.resumed_from_epoch == one_then_one.resumed_from_epoch == 2
    assert [h["epoch"] for h in two_then_one.history] == [1, 2, 3, 4]
    for a, b in zip(two_then_one.history, one_then_one.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=LOSS_RTOL), (a, b)
    _assert_same_weights(_checkpoint(tmp_path / "two_then_one")["model"],
                         _checkpoint(tmp_path / "one_then_one")["model"])


def test_the_global_batch_must_split_evenly_over_the_processes():
    assert batch_per_rank(32, 4) == 8
    with pytest.raises(ParamsError, match=r"pretrain\.batch_size 10 .* over 4 training processes"):
        batch_per_rank(10, 4)


def test_ranks_and_workers_read_disjoint_row_groups_that_cover_the_epoch(tmp_path):
    _macro_table(tmp_path / "clips", clips=10, row_group=2)  # 5 row groups
    shards = [MacroClipStream([tmp_path / "clips"], seed=1, rank=r, world_size=2) for r in range(2)]
    read = [g for stream in shards for w in range(2) for g in stream.epoch_groups(stream.rank, w, 2)]
    assert sorted(read) == list(range(5))
    clips = [bytes(c.numpy()) for stream in shards for c in stream]
    assert len(clips) == len(set(clips)) == 10
    assert shards[0].batches_per_rank(2) == [3, 2]  # 3 groups against 2: rank 0 runs no more steps than rank 1
    for rank, stream in enumerate(shards):  # the plan counts what a DataLoader with workers really yields
        assert len(list(DataLoader(stream, batch_size=3, num_workers=2))) == stream.batches_per_rank(3, 2)[rank]


def _params_file(root: Path) -> Path:
    raw = tiny_params(root)
    raw["pretrain"].update(encoder=ENCODER, variants=["contrastive"], epochs=2, batch_size=4, device="cpu",
                           nproc_per_node=2)
    raw["finetune"].update(variant="contrastive_e2e", ablation=["contrastive_e2e"], au_variants=[])
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    macro = next(d["name"] for d in raw["ingest"]["datasets"] if d["kind"] in ("macro", "long"))
    # 10 clips in row groups of 4, 4 and 2: the ranks' shards hold different numbers of
    # batches, which would leave one rank waiting in an all-reduce unless steps are matched.
    _macro_table(Path(raw["paths"]["processed"]) / "clips" / macro, clips=10, row_group=4)
    return path


@pytest.mark.timeout(300)
def test_mer_pretrain_starts_torchrun_itself_resumes_a_one_process_run_and_rank_zero_alone_logs(tmp_path):
    """ContraWarping alone leaves the action encoder untrained: DDP must accept parameters without gradients."""
    from mlflow.tracking import MlflowClient

    from mer_core.config import load_params
    from mer_core.data.store import data_version

    params_file = _params_file(tmp_path)
    p = load_params(params_file)
    clips = [p.paths.processed / "clips" / d.name for d in p.ingest.datasets if d.kind in ("macro", "long")]
    pretrain_variant(p.pretrain, "contrastive", clips, 64, data_version(clips), p.paths.checkpoints / "pretrain",
                     p.features.flow, stop_after_epoch=1)  # 1 process, epoch 1 of 2

    result = subprocess.run([str(Path(sys.executable).parent / "mer"), "pretrain", "--params", str(params_file)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S,
                            env={**os.environ, "MER_LOG_LEVEL": "INFO"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert "torch.distributed.run --standalone --nproc_per_node=2" in result.stderr
    assert "resuming after epoch 1" in result.stderr and "written by 1 process(es), now 2" in result.stderr
    assert result.stdout.count("contrastive: 2 epochs") == 1  # rank 0 alone reports

    report = yaml.safe_load(p.paths.pretrain_report.read_text())
    trained = report["variants"]["contrastive"]
    assert report["world_size"] == trained["world_size"] == 2
    assert trained["resumed_from_epoch"] == 1 and [h["epoch"] for h in trained["history"]] == [1, 2]
    assert [path.name for path in p.paths.encoders.iterdir()] == ["contrastive.pt"]
    client = MlflowClient(p.tracking.uri)
    experiment = client.get_experiment_by_name(p.tracking.experiment)
    names = sorted(run.info.run_name for run in client.search_runs([experiment.experiment_id]))
    assert names == ["pretrain", "pretrain/contrastive"]
