"""``scripts/pretrain.py`` with probes, for tests that run training in a real subprocess.

usage: python tests/helpers/pretrain_probe.py [--record DIR] [--signal STEP:NAME] [--kill-in-write N] override...

--record DIR        each rank saves DIR/rank<r>.pt when fit ends (also when it is stopped):
                    {"batches": [(epoch, indices (B,)), ...] trained by this process, "metrics": {...}}
--signal STEP:NAME  rank 0 sends itself signal NAME (TERM, USR1, INT, KILL) at the end of global step STEP
--kill-in-write N   the N-th checkpoint write (1-based) stops halfway: half the bytes are in the temporary
                    file when the process SIGKILLs itself, as a kill during the write would leave them
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch

import sslib.app.callbacks
from sslib.app.cli import pretrain_main


class Record(L.Callback):
    def __init__(self, folder: str) -> None:
        self.folder, self.batches = Path(folder), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.batches.append((trainer.current_epoch, batch[2].clone()))

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self.save(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.save(trainer)

    def save(self, trainer) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"batches": self.batches, "metrics": metrics}, self.folder / f"rank{trainer.global_rank}.pt"
        )


class SignalAt(L.Callback):
    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step and trainer.global_rank == 0:
            os.kill(os.getpid(), self.signum)


def kill_in_write(n: int) -> None:
    """Replace the checkpoint writer so that its ``n``-th call dies halfway through the temporary file."""
    real, calls = sslib.app.callbacks.atomic_write_bytes, [0]

    def write(path, data) -> None:
        calls[0] += 1
        if calls[0] < n:
            return real(path, data)
        fd, _ = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.", suffix=".tmp")
        os.write(fd, bytes(data[: len(data) // 2]))
        os.fsync(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    sslib.app.callbacks.atomic_write_bytes = write


def main(args: list[str]) -> int:
    callbacks: list[L.Callback] = []
    while args and args[0].startswith("--"):
        flag, value, args = args[0], args[1], args[2:]
        if flag == "--record":
            callbacks.append(Record(value))
        elif flag == "--signal":
            step, name = value.split(":")
            callbacks.append(SignalAt(int(step), getattr(signal, f"SIG{name}")))
        elif flag == "--kill-in-write":
            kill_in_write(int(value))
        else:
            raise SystemExit(f"unknown option {flag}")
    return pretrain_main(args, callbacks)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
