"""Where the sweep's runs run: ``launcher=inline`` in this process, one after another; ``launcher=local`` as
processes of their own on this machine, several at a time (submitit's local executor); ``launcher=slurm``
as SLURM jobs (submitit's SLURM executor), submitted without waiting for them.

A job runs :func:`run_job`: an ordinary sslib run (DDP over the job's devices, ``last.ckpt`` saved on
SIGTERM and SIGUSR1, requeued by ``scontrol`` on SIGUSR1), then its offline evaluation, so the submitting
machine needs no GPU. Each start is recorded in the sweep's :class:`~sslib.app.ablate.state.SweepState`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import submitit
import torch

from sslib.app.ablate.plan import RANDOM_INIT, EvalSettings, LocalSettings, Run, SlurmSettings
from sslib.app.ablate.runner import PRINT, run_one
from sslib.app.ablate.state import FINISHED, QUEUED, RUNNING, Status, SweepState, alive
from sslib.app.callbacks import Preempted
from sslib.app.cli import stopped
from sslib.errors import SslibError

LOCAL_TIMEOUT_MIN = 365 * 24 * 60  # submitit's local jobs time out; a local run may take as long as it needs
POLL_S = 1.0  # how often the local launcher looks for ended jobs


class SubmissionError(SslibError):
    """``sbatch`` refused the jobs (an unknown partition, account or QOS, a time limit too long, ...)."""


def run_job(run: Run, settings: EvalSettings, threads: int | None = None) -> None:
    """What a local or SLURM job runs: ``run`` trained by every process of the job and evaluated by the
    first (:func:`~sslib.app.ablate.runner.run_one`); ``threads`` sets torch's CPU threads. A run stopped
    by a signal, after saving ``last.ckpt``, prints its one line and exits with ``128 + signal``.

    The job's processes are SLURM's tasks (one per GPU, ranked by submitit's job environment) or, in a
    local job on several GPUs, the ones Lightning starts with this same command (``LOCAL_RANK`` 1, 2, ...).
    """
    if threads:
        torch.set_num_threads(threads)
    first = submitit.JobEnvironment().global_rank == 0 and os.environ.get("LOCAL_RANK", "0") == "0"
    try:
        run_one(run, settings, PRINT, evaluate_here=first)
    except Preempted as stop:
        raise SystemExit(stopped(stop)) from None


def launch_inline(
    runs: Sequence[Run], state: SweepState, log: Callable[[str], None], clock: Callable[[], float]
) -> None:
    """Run ``runs`` one after another in this process; ``clock`` times their training. An exception (a
    signal's :class:`~sslib.app.callbacks.Preempted` too) is recorded and raised."""
    for i, run in enumerate(runs, 1):
        log(f"[{i}/{len(runs)}] {run.key}")
        state.started(run, "inline", str(os.getpid()))
        try:
            run_one(run, state.plan.eval, log, clock)
        except BaseException as err:
            state.stopped(run, f"{type(err).__name__}: {err}".splitlines()[0])
            raise


@dataclass(frozen=True)
class _Other:
    """A local run that another sweep process started and that is still running: it holds its GPUs."""

    pid: int

    def done(self) -> bool:
        return not alive(self.pid)


def launch_local(
    runs: Sequence[Run], running: Sequence[Status], state: SweepState, log: Callable[[str], None]
) -> None:
    """Run ``runs`` as processes of this machine, ``launcher.parallel`` at a time, each with its share of
    the GPUs, and wait for them and for the local runs in ``running`` (started by an earlier sweep)."""
    settings = state.plan.launcher
    assert isinstance(settings, LocalSettings) and settings.parallel and settings.gpus_per_run is not None
    per_run, parallel = settings.gpus_per_run, settings.parallel
    threads = None if per_run else max(1, (os.cpu_count() or 1) // parallel)  # CPU processes share the cores
    executor = submitit.LocalExecutor(folder=state.jobs)
    jobs: dict[Any, tuple[Run, int]] = {}
    for status in running:
        if status.record and status.record.launcher == "local" and status.record.slot is not None:
            jobs[_Other(int(status.record.job_id))] = (status.run, status.record.slot)
    queue = sorted(runs, key=lambda run: run.method == RANDOM_INIT)  # the long ones first
    while queue or jobs:
        free = sorted(set(range(parallel)) - {slot for _, slot in jobs.values()})
        for slot in free[: len(queue)]:
            run = queue.pop(0)
            gpus = list(range(slot * per_run, (slot + 1) * per_run))
            executor.update_parameters(
                timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=per_run, visible_gpus=gpus, tasks_per_node=1
            )
            job = executor.submit(run_job, run, state.plan.eval, threads)
            state.started(run, "local", job.job_id, job.paths.stderr, slot)
            log(f"{run.key}: started, process {job.job_id}" + (f" on GPUs {gpus}" if gpus else ""))
            jobs[job] = (run, slot)
        time.sleep(POLL_S)
        for job, (run, _) in list(jobs.items()):
            if job.done():
                del jobs[job]
                [status] = state.statuses([run])
                log(f"{run.key}: {status.state}" + (f" ({status.detail})" if status.detail else ""))


def _memory(gb: float) -> str:
    return f"{int(gb)}G" if gb == int(gb) else f"{round(gb * 1024)}M"


def slurm_parameters(settings: SlurmSettings, job_name: str, random_init: bool) -> dict[str, Any]:
    """submitit's SLURM parameters of the jobs of the runs (``random_init``: of the random-init rows, one
    task on one GPU). SIGUSR1 comes ``signal_delay_s`` before the time limit (the run saves ``last.ckpt``
    and requeues its job); ``--requeue`` lets SLURM requeue a preempted job."""
    gpus = min(settings.gpus_per_node, 1) if random_init else settings.gpus_per_node
    return {
        "job_name": job_name,
        "partition": settings.partition,
        "account": settings.account,
        "qos": settings.qos,
        "constraint": settings.constraint,
        "time": settings.minutes(),
        "nodes": 1 if random_init else settings.nodes,
        "ntasks_per_node": max(gpus, 1),  # one process per GPU: Lightning reads its rank from SLURM
        "gpus_per_node": gpus or None,
        "cpus_per_task": settings.cpus_per_task,
        "mem": _memory(settings.mem_gb) if settings.mem_gb else None,
        "setup": list(settings.setup),
        "array_parallelism": settings.array_parallelism,
        "additional_parameters": {"signal": f"USR1@{settings.signal_delay_s}", "requeue": True},
    }


def launch_slurm(runs: Sequence[Run], state: SweepState, log: Callable[[str], None]) -> None:
    """Submit ``runs`` as SLURM jobs (a job array for the random-init rows and one for the runs) and
    return without waiting for them."""
    settings = state.plan.launcher
    assert isinstance(settings, SlurmSettings)
    executor = submitit.SlurmExecutor(folder=state.jobs)
    for random_init in (True, False):
        group = [run for run in runs if (run.method == RANDOM_INIT) == random_init]
        if not group:
            continue
        executor.update_parameters(**slurm_parameters(settings, f"ablate-{state.plan.out.name}", random_init))
        try:
            with executor.batch():
                jobs = [
                    executor.submit(run_job, run, state.plan.eval, settings.cpus_per_task) for run in group
                ]
        except submitit.core.utils.FailedJobError as err:
            reason = (str(err).strip().splitlines() or ["no message"])[-1]
            raise SubmissionError(f"sbatch refused the jobs: {reason}") from None
        for run, job in zip(group, jobs, strict=True):
            state.started(run, "slurm", job.job_id, job.paths.stderr)
            log(f"{run.key}: submitted, SLURM job {job.job_id}")


def launch(
    statuses: Sequence[Status], state: SweepState, log: Callable[[str], None], clock: Callable[[], float]
) -> None:
    """Start the runs of ``statuses`` that are missing or failed, with the plan's launcher; the others
    (finished, queued or running) are not started again."""
    todo = [s.run for s in statuses if s.state not in (FINISHED, QUEUED, RUNNING)]
    name = state.plan.launcher.name
    if name == "inline":
        launch_inline(todo, state, log, clock)
    elif name == "local":
        launch_local(todo, [s for s in statuses if s.state == RUNNING], state, log)
    elif todo:
        launch_slurm(todo, state, log)
