"""Train, evaluate and record one run of a :class:`~sslib.app.ablate.plan.Plan`, wherever it runs (in the
sweep's process or in a job of its own).

Each run lives in ``<out>/<method>-<labeler>/`` (``.../seed<N>/`` with ``seeds=[...]``), a normal sslib run
folder. A run with a ``result.json`` for the same config and evaluation settings is skipped; one whose
``last.ckpt`` has all its epochs is only evaluated; any other is trained, resuming its ``last.ckpt`` when
there is one (``resume=auto``). The random-init rows evaluate the untrained backbone of each seed.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import cast

import lightning as L
import torch
from omegaconf import OmegaConf

from sslib.app.ablate.metrics import last_clusters_used
from sslib.app.ablate.plan import RANDOM_INIT, EvalSettings, Run
from sslib.app.ablate.table import Result
from sslib.app.builders import build_backbone
from sslib.app.checkpoint import BACKBONE_PREFIX
from sslib.app.checkpoint import trained_epochs as checkpoint_epochs
from sslib.app.config import to_dict
from sslib.app.eval.data import run_options
from sslib.app.eval.offline import FeatureCache, knn_eval, linear_eval
from sslib.app.train import LAST_CHECKPOINT, check_same_run, pretrain
from sslib.io import atomic_write_bytes, atomic_write_text, load_torch_file

RESULT_FILE = "result.json"
RANDOM_INIT_CHECKPOINT = "backbone.ckpt"
TIME_FILE = "train_time.json"
PRINT = partial(print, flush=True)  # progress lines stay in order with the trainer's output in a log file


class TrainTimer(L.Callback):
    """Training wall time (online evaluation included) of what the last checkpoint holds, summed over
    resumed launches.

    Each checkpoint stores the time trained so far (``state_dict``, read when it is written, at an epoch
    end or mid-epoch), and a launch that resumes it adds its own time to that: a killed launch's work
    after its last checkpoint, which the resumed launch trains again, is not counted twice. At every epoch
    end the time is also written to ``run_dir/train_time.json`` as ``{"epochs", "seconds"}``; ``seconds``
    is ``None`` after resuming a checkpoint that carries no time (trained without this callback).
    ``clock`` returns seconds (``time.monotonic`` by default; tests pass a fake one).
    """

    def __init__(self, run_dir: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.run_dir = run_dir
        self.clock = clock
        self.restored: float | None = 0.0  # the time of the resumed checkpoint (0: a fresh start)
        self.loaded = False
        self.start: float | None = None  # the clock when this launch's training started

    def elapsed(self) -> float | None:
        """Seconds trained so far, the resumed checkpoint's included; ``None`` when they are unknown."""
        if self.restored is None or self.start is None:
            return self.restored
        return self.restored + self.clock() - self.start

    def state_dict(self) -> dict[str, float | None]:
        return {"seconds": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, float | None]) -> None:
        self.restored, self.loaded = state_dict["seconds"], True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is not None and not self.loaded:  # resumed, but the checkpoint has no time
            self.restored = None
        self.start = self.clock()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            record = {"epochs": trainer.current_epoch + 1, "seconds": self.elapsed()}
            atomic_write_text(self.run_dir / TIME_FILE, json.dumps(record))


def _train_time(run_dir: Path) -> dict:
    path = run_dir / TIME_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def train_seconds(run_dir: Path) -> float | None:
    """The training wall time :class:`TrainTimer` recorded in ``run_dir``, if any."""
    return _train_time(run_dir).get("seconds")


def timed_epochs(run_dir: Path) -> int:
    """The epochs :class:`TrainTimer` has seen end in ``run_dir`` (0 before the first): the progress of a
    run in training, read without opening its checkpoint."""
    return int(_train_time(run_dir).get("epochs", 0))


def trained_epochs(run_dir: Path) -> int:
    """Finished epochs in the run's ``last.ckpt`` (0 without one)."""
    ckpt = run_dir / LAST_CHECKPOINT
    if not ckpt.is_file():
        return 0
    return checkpoint_epochs(load_torch_file(ckpt, mmap=True))


def evaluate(run: Run, settings: EvalSettings, checkpoint: Path | None = None) -> dict[str, float]:
    """kNN and linear-probe top-1 (percent) of the val split on the frozen features of ``checkpoint``
    (default: the run's final one), at the training crop size (as the online kNN)."""
    data = run.cfg.data
    cache = FeatureCache(
        checkpoint or Path(run.cfg.run_dir) / LAST_CHECKPOINT,
        data.name,
        data.root,
        image_size=data.global_crops.size,
        num_workers=data.num_workers,
        options=run_options(to_dict(data)),  # the split it trained on (data.seed, val_fraction, class list)
    )
    train, val = cache.features("train"), cache.features("val")
    classes = cache.stats.num_classes
    knn = knn_eval(*train, *val, settings.knn_k, settings.knn_temperature, (1.0,), run.cfg.seed, classes)
    probe = linear_eval(*train, *val, settings.probe(run.cfg.seed), classes)
    return {"knn_top1": knn[1.0]["top1"], "linear_top1": probe["top1"]}


def load_result(run: Run, settings: EvalSettings) -> Result | None:
    """The recorded result of ``run`` if it was evaluated with ``settings`` (and, for a random-init row, on
    the same budget)."""
    path = Path(run.cfg.run_dir) / RESULT_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    key = _record_key(run, settings)
    return Result(**saved["result"]) if {k: saved.get(k) for k in key} == key else None


def _record_key(run: Run, settings: EvalSettings) -> dict:
    """What a recorded result must have been measured with to be reused."""
    key = {"eval": asdict(settings)}
    return {**key, "budget": _budget(run)} if run.method == RANDOM_INIT else key


def run_one(
    run: Run,
    settings: EvalSettings,
    log: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    evaluate_here: bool = True,
) -> Result | None:
    """Train (or resume) ``run`` unless done, evaluate it, and record ``result.json`` in its folder;
    ``clock`` times the training (:class:`TrainTimer`). A random-init row is only evaluated
    (:func:`random_init_result`). In a job of several processes each trains and the first
    (``evaluate_here``) evaluates; the others return ``None``."""
    if run.method == RANDOM_INIT:
        return random_init_result(run, settings, log)
    run_dir = Path(run.cfg.run_dir)
    check_same_run(run.cfg, run_dir, advice="choose another out=... for this ablation")
    result = load_result(run, settings)
    if result is not None:
        log(f"{run.key}: finished, skipped ({run_dir / RESULT_FILE})")
        return result
    done, epochs = trained_epochs(run_dir), run.cfg.trainer.max_epochs
    if done < epochs:
        log(
            f"{run.key}: {f'resuming after epoch {done}' if done else 'training'}, {epochs} epochs in {run_dir}"
        )
        pretrain(run.cfg, callbacks=[TrainTimer(run_dir, clock)])
    if not evaluate_here:
        return None
    log(f"{run.key}: evaluating {run_dir / LAST_CHECKPOINT}")
    clusters = last_clusters_used(run_dir) if run.labeler else None
    result = Result(
        run.method,
        run.labeler,
        trained_epochs(run_dir),
        train_seconds(run_dir),
        **evaluate(run, settings),
        clusters_used=clusters[0] if clusters else None,
        n_clusters=clusters[1] if clusters else None,
    )
    _record(run, settings, result)
    return result


def _record(run: Run, settings: EvalSettings, result: Result) -> None:
    record = {"result": asdict(result), **_record_key(run, settings)}
    atomic_write_text(Path(run.cfg.run_dir) / RESULT_FILE, json.dumps(record, indent=2))


def _budget(run: Run) -> dict:
    """What the untrained backbone of a run depends on: the seed, the backbone and the data."""
    cfg = run.cfg
    return cast(
        dict, OmegaConf.to_container(OmegaConf.masked_copy(cfg, ["seed", "backbone", "data"]), resolve=True)
    )


def random_init_result(run: Run, settings: EvalSettings, log: Callable[[str], None]) -> Result:
    """A random-init row ``run``: kNN and linear probe of the untrained backbone of its seed and budget.

    The backbone is built as a run builds it (seeded with ``seed``), saved as a checkpoint of its own in
    the row's folder and evaluated exactly as the runs' final checkpoints (same split, transform and
    settings). Recorded in ``result.json`` with the budget and settings, and reused while both hold.
    """
    folder = Path(run.cfg.run_dir)
    result = load_result(run, settings)
    if result is not None:
        log(f"{run.key}: finished, skipped ({folder / RESULT_FILE})")
        return result
    log(f"{run.key}: evaluating the untrained backbone")
    folder.mkdir(parents=True, exist_ok=True)
    L.seed_everything(run.cfg.seed, verbose=False)
    backbone, _ = build_backbone(run.cfg)
    checkpoint = folder / RANDOM_INIT_CHECKPOINT
    state = {f"{BACKBONE_PREFIX}{k}": v for k, v in backbone.state_dict().items()}
    cfg = OmegaConf.to_container(run.cfg, resolve=True)
    atomic_write_bytes(checkpoint, _serialise({"state_dict": state, "hyper_parameters": {"cfg": cfg}}))
    result = Result(
        RANDOM_INIT, None, 0, None, **evaluate(run, settings, checkpoint), clusters_used=None, n_clusters=None
    )
    _record(run, settings, result)
    return result


def _serialise(obj: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()
