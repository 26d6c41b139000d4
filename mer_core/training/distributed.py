"""Data-parallel pre-training under `torchrun`: which process this is, its process group,
and the launch itself.

torchrun starts one process per device and tells each its place through the environment
(RANK, WORLD_SIZE, LOCAL_RANK); outside torchrun a process is rank 0 of a world of one and
nothing here touches `torch.distributed`. The processes talk over gloo on the CPU and NCCL
on CUDA. DDP lives in these processes only, never inside an orchestrator's task: a Prefect
task (or `mer pretrain` itself) starts `torchrun` as one subprocess and waits for it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # its device index on its machine

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs to MLflow, writes checkpoints and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def ranks_from_environment() -> Ranks:
    """The place torchrun gave this process; rank 0 of 1 when it was not started by torchrun."""
    return Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ


def device_of_rank(device: torch.device, ranks: Ranks) -> torch.device:
    """One GPU per process on a machine: process `local_rank` takes GPU `local_rank`."""
    if device.type == "cuda" and ranks.distributed:
        torch.cuda.set_device(ranks.local_rank)
        return torch.device("cuda", ranks.local_rank)
    return device


@contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[None]:
    """Join the other ranks (NCCL on CUDA, gloo on the CPU) for the duration; no-op for a world of one."""
    if not ranks.distributed:
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world_size)
    log.info("rank %d of %d joined the %s process group", ranks.rank, ranks.world_size, backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


def mean_over_ranks(values: list[float], ranks: Ranks) -> list[float]:
    """The mean of each value over all ranks (every rank gets the same answer)."""
    if not ranks.distributed or not values:
        return values
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    summed = torch.tensor(values, dtype=torch.float64, device=backend_device)
    dist.all_reduce(summed)
    return (summed / ranks.world_size).tolist()


def torchrun_command(nproc_per_node: int, cli_args: list[str]) -> list[str]:
    """`torchrun --standalone --nproc_per_node N -m mer_core.cli <cli_args>` with this interpreter
    (`--standalone`: one machine, a free rendezvous port picked by torchrun)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
            "-m", "mer_core.cli", *cli_args]


def run_under_torchrun(nproc_per_node: int, cli_args: list[str]) -> int:
    """Run `mer <cli_args>` in `nproc_per_node` processes under torchrun, wait for them; their exit code."""
    command = torchrun_command(nproc_per_node, cli_args)
    log.info("starting %d processes: %s", nproc_per_node, " ".join(command))
    return subprocess.run(command, check=False).returncode
