"""A sweep: start what a plan still needs, with its launcher, then write the report from what has finished.

Running the same command again starts only the runs that are missing or failed, never one that is
queued or running (:mod:`sslib.app.ablate.state`), so a sweep is resumed by repeating its command.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sslib.app.ablate.launch import launch
from sslib.app.ablate.plan import Plan
from sslib.app.ablate.report import write_report
from sslib.app.ablate.runner import PRINT, RESULT_FILE
from sslib.app.ablate.state import FAILED, FINISHED, QUEUED, RUNNING, Status, SweepState, counts, status_table


@dataclass(frozen=True)
class Outcome:
    """What a sweep command leaves: the report's table and the state of every run."""

    table: str
    statuses: list[Status]

    @property
    def finished(self) -> bool:
        return all(status.state == FINISHED for status in self.statuses)

    @property
    def failed(self) -> list[Status]:
        return [status for status in self.statuses if status.state == FAILED]


def run_ablation(
    plan: Plan, log: Callable[[str], None] = PRINT, clock: Callable[[], float] = time.monotonic
) -> Outcome:
    """Start every run of ``plan`` that is missing or failed with its launcher (``inline`` and ``local`` wait
    for them, ``slurm`` submits them), then write the report (Markdown, CSV, kNN plot) into ``plan.out``
    from the runs that have finished. ``log`` prints progress lines, ``clock`` (seconds) times the
    training of inline runs."""
    state = SweepState(plan)
    statuses = state.statuses()
    for status in statuses:
        run, record = status.run, status.record
        if status.state == FINISHED:
            log(f"{run.key}: finished, skipped ({Path(run.cfg.run_dir) / RESULT_FILE})")
        elif status.state in (QUEUED, RUNNING) and record:
            log(f"{run.key}: {status.state} ({record.launcher} job {record.job_id}), not started again")
    launch(statuses, state, log, clock)
    return Outcome(write_report(plan), state.statuses())


def sweep_status(plan: Plan) -> str:
    """The table of ``plan``'s runs with their state (nothing is started or written) and a count line."""
    statuses = SweepState(plan).statuses()
    return f"{status_table(statuses)}\n\n{counts(statuses)} of {len(statuses)} runs in {plan.out}"
