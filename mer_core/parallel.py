"""Where a stage's independent jobs run: in this process, in a pool of spawned processes,
or on a Dask cluster (`executor` in params.yaml).

A job is a module-level function of one picklable argument whose result depends on that
argument alone (seeds travel inside it), and results come back in job order, so the
choice of executor never changes an output. `distributed` is imported only when Dask is
chosen: the process pool pays nothing for it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from mer_core import MerError
from mer_core.config import ExecutorParams

log = logging.getLogger(__name__)

Job = TypeVar("Job")
Result = TypeVar("Result")

# How long to wait for the scheduler to answer, and then for it to have a worker.
CONNECT_TIMEOUT_S = 30
FIRST_WORKER_TIMEOUT_S = 120


class ClusterUnavailable(MerError, ConnectionError):
    """No Dask scheduler answered at `executor.address`, or it has no worker to run jobs."""


@dataclass(frozen=True)
class JobPool:
    """Runs jobs and hands their results back in job order."""

    executor: Executor | None  # None: one job after another, in this process
    # Threads one job may use (torch's intra-op pool) without oversubscribing its machine's cores.
    threads_per_job: int
    # Run on a Dask worker before each job: its processes outlive the stage and were
    # started by someone else, so there is no pool initializer to set them up once.
    setup_before_each_job: Callable[[], None] | None = None

    def map(self, fn: Callable[[Job], Result], jobs: Iterable[Job], chunksize: int = 1) -> Iterator[Result]:
        """`fn` over `jobs`, results in job order; `chunksize` batches jobs per message to a pool process."""
        if self.executor is None:
            return map(fn, jobs)
        if self.setup_before_each_job is not None:
            fn = _SetUpFirst(self.setup_before_each_job, fn)
        return self.executor.map(fn, jobs, chunksize=chunksize)


@dataclass(frozen=True)
class _SetUpFirst:
    """`fn(job)` after `setup()`, named as `fn`: Dask names tasks (dashboard, logs) after
    their function's `__name__`, and `process_clip` says more than a wrapper's name."""

    setup: Callable[[], None]
    fn: Callable

    def __call__(self, job):
        self.setup()
        return self.fn(job)

    @property
    def __name__(self) -> str:
        return self.fn.__name__


@contextmanager
def open_job_pool(executor: ExecutorParams, workers: int, worker_setup: Callable[[], None] | None = None
                  ) -> Iterator[JobPool]:
    """The pool `executor` names, closed on exit (pending jobs cancelled if the caller fails).

    Args:
        workers: processes of the process pool (1: the jobs run in this process, one
            after another); a Dask cluster's own size replaces it.
        worker_setup: per-process set-up (thread counts, logging); idempotent, because on
            Dask it runs before every job. A module-level function, to pickle.

    Raises:
        ClusterUnavailable: `executor.kind` is dask and its scheduler does not answer, or has no worker.
    """
    if executor.kind == "dask":
        with _dask_job_pool(executor.address, worker_setup) as pool:
            yield pool
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    if workers == 1:
        yield JobPool(None, threads)
        return
    # Spawn, not fork: OpenCV's thread pool deadlocks in a forked child.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=worker_setup)
    try:
        yield JobPool(pool, threads)
    finally:
        pool.shutdown(cancel_futures=True)


@contextmanager
def _dask_job_pool(address: str, worker_setup: Callable[[], None] | None) -> Iterator[JobPool]:
    """A pool on the Dask cluster at `address`. The scheduler reruns a job whose worker
    died (up to `distributed.scheduler.allowed-failures` times), so a lost machine costs
    time, not the stage."""
    from distributed import Client

    try:
        # Not the process-wide default client: a caller's own Dask work stays its own.
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterUnavailable(f"executor.address {address}: no Dask scheduler answered within "
                                 f"{CONNECT_TIMEOUT_S} s ({exc}); start one (`dask scheduler`) or set "
                                 "executor.kind: process") from None
    try:
        try:
            client.wait_for_workers(1, timeout=FIRST_WORKER_TIMEOUT_S)
        except TimeoutError:
            raise ClusterUnavailable(f"executor.address {address}: the Dask scheduler has had no worker for "
                                     f"{FIRST_WORKER_TIMEOUT_S} s; start some (`dask worker {address}`)") from None
        threads = _threads_per_dask_task(client)
        log.info("running jobs on the Dask cluster at %s: %d worker(s), %d thread(s) a job", address,
                 len(client.scheduler_info(n_workers=-1)["workers"]), threads)
        # pure=False: every job runs, even two with equal arguments (jobs write checkpoints).
        yield JobPool(client.get_executor(pure=False), threads, worker_setup)
    finally:
        client.close()


def _threads_per_dask_task(client) -> int:
    """Cores per task slot on the cluster's most crowded machine: the workers on one host
    share its cores, each running `nthreads` jobs at once."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    cores = client.run(os.cpu_count)  # worker address → cores of its machine
    slots_on_host = Counter()
    for info in workers.values():
        slots_on_host[info["host"]] += info["nthreads"]
    return min((max(1, cores[address] // slots_on_host[info["host"]])
                for address, info in workers.items() if address in cores), default=1)
