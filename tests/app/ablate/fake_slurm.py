"""Fake SLURM commands for tests: ``sbatch``, ``srun``, ``squeue``, ``sacct`` and ``scancel`` that record what
was submitted and run the jobs on this machine.

:func:`install` writes the commands into a folder to put first on ``PATH``; they keep their state in
``$FAKE_SLURM_DIR/jobs.json``. ``sbatch`` records the script and its ``#SBATCH`` directives, prints the
job id and starts a detached runner that runs the script (each array task once, at most the array's
``%`` limit at a time) with SLURM's variables set; with ``FAKE_SLURM_HOLD`` set it leaves the job
pending instead. ``srun`` runs one task of its command with the task's variables, writes its output
where ``--output`` and ``--error`` say, and records its process so that ``scancel`` can signal it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

COMMANDS = ("sbatch", "srun", "squeue", "sacct", "scancel")
LIVE = ("PENDING", "RUNNING")


def install(folder: Path) -> Path:
    """Write the fake commands into ``folder/bin``; return that folder (to put first on ``PATH``)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for command in COMMANDS:
        path = bin_dir / command
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" {command} "$@"\n')
        path.chmod(0o755)
    return bin_dir


def _dir() -> Path:
    return Path(os.environ["FAKE_SLURM_DIR"])


@contextlib.contextmanager
def registry() -> Iterator[dict]:
    """The jobs, read and written back under a lock."""
    _dir().mkdir(parents=True, exist_ok=True)
    with (_dir() / "jobs.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = _dir() / "jobs.json"
        jobs = json.loads(path.read_text()) if path.is_file() else {"next": 1000, "jobs": {}}
        yield jobs
        path.write_text(json.dumps(jobs, indent=1))


def jobs() -> dict:
    """The submitted jobs, by id: their directives, script and tasks (state, exit code)."""
    with registry() as state:
        return state["jobs"]


def task_ids(job_id: str, job: dict) -> list[tuple[str, str]]:
    """``(SLURM id, task index)`` of each task of a job: ``<job>_<i>`` in an array, else ``<job>``."""
    return [(f"{job_id}_{i}" if job["array"] else job_id, i) for i in job["tasks"]]


def sbatch(args: list[str]) -> None:
    script = Path(args[-1])
    text = script.read_text()
    directives = dict(
        (m[1], m[2] if m[2] is not None else True)
        for m in re.finditer(r"^#SBATCH --([\w-]+)(?:=(.*))?$", text, re.MULTILINE)
    )
    array = re.fullmatch(r"(\d+)-(\d+)(?:%(\d+))?", directives.get("array", ""))
    indices = range(int(array[1]), int(array[2]) + 1) if array else range(1)
    with registry() as state:
        job_id = str(state["next"])
        state["next"] += 1
        state["jobs"][job_id] = {
            "directives": directives,
            "script": text,
            "cwd": os.getcwd(),
            "array": bool(array),
            "parallel": int(array[3]) if array and array[3] else len(indices),
            "tasks": {str(i): {"state": "PENDING", "steps": [], "exit_code": None} for i in indices},
        }
    script_copy = _dir() / f"{job_id}.sh"
    script_copy.write_text(text)
    print(f"Submitted batch job {job_id}")
    if not os.environ.get("FAKE_SLURM_HOLD"):
        subprocess.Popen(
            [sys.executable, __file__, "_run", job_id],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def _run(job_id: str) -> None:
    """Run the tasks of job ``job_id``, at most its array limit at a time; record how each ended."""
    job = jobs()[job_id]
    running: dict[str, subprocess.Popen] = {}
    pending = list(job["tasks"])
    while pending or running:
        with registry() as state:
            tasks = state["jobs"][job_id]["tasks"]
            pending = [i for i in pending if tasks[i]["state"] == "PENDING"]
            while pending and len(running) < job["parallel"]:
                index = pending.pop(0)
                env = dict(os.environ)
                env.update(
                    SLURM_JOB_ID=str(int(job_id) * 100 + int(index)) if job["array"] else job_id,
                    SLURM_JOB_NAME=str(job["directives"].get("job-name", "fake")),
                    SLURM_JOB_NUM_NODES=str(job["directives"].get("nodes", 1)),
                    FAKE_SLURM_TASK=f"{job_id}:{index}",
                )
                if job["array"]:
                    env.update(SLURM_ARRAY_JOB_ID=job_id, SLURM_ARRAY_TASK_ID=index)
                running[index] = subprocess.Popen(
                    ["bash", str(_dir() / f"{job_id}.sh")], cwd=job["cwd"], env=env, start_new_session=True
                )
                tasks[index]["state"] = "RUNNING"
            for index, process in list(running.items()):
                code = process.poll()
                if code is not None:
                    del running[index]
                    task = tasks[index]
                    task["exit_code"] = code
                    task["state"] = (
                        "CANCELLED" if task.get("cancelled") else "COMPLETED" if code == 0 else "FAILED"
                    )
        time.sleep(0.05)


def srun(args: list[str]) -> int:
    options: dict[str, str] = {}
    while args and args[0].startswith("-"):
        key = args.pop(0)
        if "=" in key:
            key, value = key.split("=", 1)
            options[key] = value
        elif key in ("--output", "--error", "-o", "-e"):
            options[key] = args.pop(0)
    env = dict(os.environ, SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0", SLURM_NTASKS="1")
    env.update(SLURM_STEP_NUM_TASKS="1", SLURM_JOB_NODELIST="localhost", SLURM_NODELIST="localhost")

    def path(pattern: str) -> str:
        for tag, name in (
            ("%A", "SLURM_ARRAY_JOB_ID"),
            ("%a", "SLURM_ARRAY_TASK_ID"),
            ("%j", "SLURM_JOB_ID"),
        ):
            pattern = pattern.replace(tag, env.get(name, ""))
        return pattern.replace("%t", "0")

    out = open(path(options.get("--output", "/dev/null")), "a")  # noqa: SIM115
    err = open(path(options["--error"]), "a") if "--error" in options else out  # noqa: SIM115
    for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):  # srun waits for its task's end
        signal.signal(signum, signal.SIG_IGN)
    process = subprocess.Popen(args, env=env, stdout=out, stderr=err, preexec_fn=_default_signals)
    job_id, index = os.environ["FAKE_SLURM_TASK"].split(":")
    with registry() as state:
        state["jobs"][job_id]["tasks"][index]["steps"].append(process.pid)
    return process.wait()


def _default_signals() -> None:
    for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)


def squeue(args: list[str]) -> None:
    for job_id, job in jobs().items():
        for slurm_id, index in task_ids(job_id, job):
            if job["tasks"][index]["state"] in LIVE:
                print(f"{slurm_id}|{job['tasks'][index]['state']}")


def sacct(args: list[str]) -> None:
    wanted = {args[i + 1] for i, arg in enumerate(args) if arg == "-j"}
    print("JobID|State|NodeList")
    for job_id, job in jobs().items():
        if job_id in wanted:
            for slurm_id, index in task_ids(job_id, job):
                print(f"{slurm_id}|{job['tasks'][index]['state']}|localhost")


def scancel(args: list[str]) -> None:
    """``scancel [--signal=SIG] <job>[_<task>] ...``: the signal (default SIGTERM, and the job is then
    cancelled: its pending tasks never start) to the running tasks' processes."""
    signal_name = next((a.split("=", 1)[1] for a in args if a.startswith("--signal=")), None)
    signum = signal.Signals[f"SIG{signal_name.removeprefix('SIG')}"] if signal_name else signal.SIGTERM
    targets = [a for a in args if not a.startswith("-")]
    with registry() as state:
        for job_id, job in state["jobs"].items():
            for slurm_id, index in task_ids(job_id, job):
                task = job["tasks"][index]
                if (slurm_id in targets or job_id in targets) and task["state"] in LIVE:
                    for pid in task["steps"]:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signum)
                    if signal_name is None:  # a running task stays RUNNING until its processes end
                        task["cancelled"] = True
                        task["state"] = "RUNNING" if task["state"] == "RUNNING" else "CANCELLED"


if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "_run":
        _run(rest[0])
    elif command == "srun":
        raise SystemExit(srun(rest))
    else:
        {"sbatch": sbatch, "squeue": squeue, "sacct": sacct, "scancel": scancel}[command](rest)
