"""The sweep's record of its runs, ``<out>/sweep.json``, and the state of each run read from it.

Each run that was started gets a record: its launcher, job id (a SLURM job, or the process id of a local
or inline run), host, submission time and log file. A run's state is then

- ``finished``: its ``result.json`` holds a result for this plan's evaluation settings;
- ``queued`` or ``running``: its job is still alive (``squeue`` for SLURM jobs, the process id on the
  machine that started it for local and inline runs);
- ``failed``: its job ended without a result (the detail is SLURM's account of its end, from ``sacct``,
  and the end of its log);
- ``missing``: it was never started, or its result was measured with other settings.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

import submitit

from sslib.app.ablate.plan import RANDOM_INIT, Plan, Run
from sslib.app.ablate.runner import RESULT_FILE, load_result, timed_epochs
from sslib.app.markdown import markdown_table
from sslib.app.train import check_same_run
from sslib.errors import SslibError
from sslib.io import atomic_write_text

SWEEP_FILE = "sweep.json"
JOBS_FOLDER = "jobs"  # submitit's scripts, pickles and logs of the local and SLURM jobs
FINISHED, RUNNING, QUEUED, FAILED, MISSING = "finished", "running", "queued", "failed", "missing"
UNKNOWN = "UNKNOWN"  # submitit's state of a job that sacct does not know
TAIL_LINES = 5
# squeue's states of a job that has started (the others, such as PENDING or REQUEUED, are waiting)
STARTED = ("RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING")


class SchedulerError(SslibError):
    """SLURM's ``squeue`` failed, so which runs are queued or running cannot be known."""


@dataclass
class Record:
    """A run's latest start: where it ran and how it ended, when that is known."""

    launcher: str
    job_id: str
    host: str
    submitted: str
    log: str | None = None  # the job's stderr file (None: printed by this process)
    message: str | None = None  # why it stopped, when the sweep saw it (inline runs)
    slot: int | None = None  # the local launcher's share of the GPUs


@dataclass(frozen=True)
class Status:
    run: Run
    state: str
    record: Record | None
    detail: str = ""  # the job's state, progress or the last line of its log
    tail: tuple[str, ...] = ()  # a failed run's last log lines


def now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def tail(path: str | None, lines: int = TAIL_LINES) -> tuple[str, ...]:
    """The last non-empty ``lines`` of the log file ``path`` (none when it does not exist)."""
    if path is None or not Path(path).is_file():
        return ()
    with Path(path).open("rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
        text = f.read().decode(errors="replace").replace("\r", "\n")
    return tuple(line for line in text.splitlines() if line.strip())[-lines:]


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def slurm_jobs() -> dict[str, str]:
    """``{job id: squeue state}`` of this user's jobs (array tasks one by one, as ``<job>_<task>``)."""
    command = ["squeue", "--noheader", "--array", "--me", "--format=%i|%T"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        error = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise SchedulerError(
            f"{' '.join(command)} failed ({error}): cannot tell which runs are queued or running"
        )
    jobs = (line.split("|", 1) for line in done.stdout.splitlines() if "|" in line)
    return {job.strip(): state.strip() for job, state in jobs}


def ended_states(folder: Path, job_ids: Sequence[str]) -> dict[str, str]:
    """``{job id: sacct state}`` of ended SLURM jobs (``TIMEOUT``, ``OUT_OF_MEMORY``, ``CANCELLED``, ...: what
    a log may not say), read by submitit in one ``sacct`` call; ``UNKNOWN`` where sacct cannot tell."""
    jobs: list[submitit.SlurmJob] = [submitit.SlurmJob(folder, job_id) for job_id in job_ids]
    return {job.job_id: job.state.split()[0] if job.state else UNKNOWN for job in jobs}


class SweepState:
    """The records of ``<out>/sweep.json`` of a plan, and the state of each of its runs. A run folder that
    holds a run of another config is a :class:`~sslib.errors.ConfigError`."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.path = plan.out / SWEEP_FILE
        self.jobs = plan.out / JOBS_FOLDER
        for run in plan.runs:  # a folder of another experiment is an error, not a finished or failed run
            check_same_run(run.cfg, Path(run.cfg.run_dir), advice="choose another out=... for this ablation")
        saved = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.records = {key: Record(**record) for key, record in saved.items()}

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        records = {key: asdict(record) for key, record in self.records.items()}
        atomic_write_text(self.path, json.dumps(records, indent=2) + "\n")

    def started(
        self, run: Run, launcher: str, job_id: str, log: Path | None = None, slot: int | None = None
    ) -> None:
        """Record that ``run`` was started as ``job_id`` by ``launcher``."""
        self.records[run.key] = Record(
            launcher, job_id, socket.gethostname(), now(), str(log) if log else None, slot=slot
        )
        self._save()

    def stopped(self, run: Run, message: str) -> None:
        """Record why ``run``, started by this process, stopped without a result."""
        self.records[run.key].message = message
        self._save()

    def statuses(self, runs: Sequence[Run] | None = None) -> list[Status]:
        """The state of each of ``runs`` (default: all of the plan's), with one ``squeue`` call when some
        were submitted to SLURM."""
        runs = self.plan.tasks if runs is None else runs
        records = [self.records.get(run.key) for run in runs]
        queue = slurm_jobs() if any(r and r.launcher == "slurm" for r in records) else {}
        statuses = [self._status(run, record, queue) for run, record in zip(runs, records, strict=True)]
        ended = [
            s.record.job_id
            for s in statuses
            if s.state == FAILED and s.record and s.record.launcher == "slurm"
        ]
        accounted = ended_states(self.jobs, ended)
        return [
            replace(s, detail=f"{accounted[s.record.job_id]}: {s.detail}")
            if s.record and accounted.get(s.record.job_id, UNKNOWN) != UNKNOWN
            else s
            for s in statuses
        ]

    def _status(self, run: Run, record: Record | None, queue: dict[str, str]) -> Status:
        run_dir = Path(run.cfg.run_dir)
        if load_result(run, self.plan.eval) is not None:
            return Status(run, FINISHED, record)
        progress = (
            "" if run.method == RANDOM_INIT else f"epoch {timed_epochs(run_dir)}/{run.cfg.trainer.max_epochs}"
        )
        if record is not None and record.launcher == "slurm" and record.job_id in queue:
            state = queue[record.job_id]
            return Status(
                run, RUNNING if state in STARTED else QUEUED, record, progress if state in STARTED else state
            )
        if record is not None and record.launcher != "slurm" and self._alive_here(record):
            return Status(run, RUNNING, record, progress)
        if record is None or (run_dir / RESULT_FILE).is_file():  # never started, or evaluated otherwise
            return Status(run, MISSING, record, "" if record is None else "evaluated with other settings")
        lines = tail(record.log) or ((record.message,) if record.message else ())
        detail = lines[-1] if lines else f"{record.launcher} job {record.job_id} ended without a result"
        return Status(run, FAILED, record, detail, lines)

    @staticmethod
    def _alive_here(record: Record) -> bool:
        """Whether the process of a local or inline run is alive (checked on the machine that started it;
        this process's own runs are not running while it reads their states)."""
        pid = int(record.job_id)
        return record.host == socket.gethostname() and pid != os.getpid() and alive(pid)


def status_table(statuses: Sequence[Status]) -> str:
    """The runs and their state as a Markdown table, then the last log lines of the failed ones."""
    rows = []
    for status in statuses:
        record = status.record
        job = f"{record.launcher} {record.job_id}" if record else "—"
        rows.append([status.run.key, status.state, job, record.submitted if record else "—", status.detail])
    table = markdown_table(["run", "state", "job", "started", "detail"], rows)
    for status in statuses:
        if status.state == FAILED and len(status.tail) > 1:
            where = f" ({status.record.log})" if status.record and status.record.log else ""
            table += f"\n\n{status.run.key} failed{where}:\n" + "\n".join(
                f"    {line}" for line in status.tail
            )
    return table


def counts(statuses: Sequence[Status]) -> str:
    """``"3 finished, 2 running, 1 failed"``: how many runs are in each state, in a fixed order."""
    states = [s.state for s in statuses]
    return ", ".join(
        f"{states.count(state)} {state}"
        for state in (FINISHED, RUNNING, QUEUED, FAILED, MISSING)
        if state in states
    )
