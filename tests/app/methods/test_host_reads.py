"""Between the progress bar's redraws a training step copies nothing from its device, and no Python number
to it (on a GPU either copy makes the CPU wait for the GPU's queue): the bar reads the step's metrics when
it redraws, the metrics' numbers go in one pinned copy (``sslib.nonblocking``), and the divergence guard
reads its flag at the bar's interval and before every checkpoint, which it refuses to write from a
diverged run."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch

import sslib.data
from sslib.app import methods
from sslib.app.callbacks import DivergenceGuard, StepMetricsBar
from sslib.app.checkpoint import load_checkpoint
from sslib.app.config import compose
from sslib.app.methods.base import STEP_METRICS
from sslib.app.train import build_datamodule, build_trainer
from sslib.nonblocking import scalars_to_device, to_device

pytestmark = pytest.mark.usefixtures("one_thread")
DATA = Path(sslib.data.__file__).parent
HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")
CLUSTERING = ("mira", "swav", "dino", "deepclusterv2")
SMALL_HEADS = ["method.projector_dims=[32,16]", "method.num_prototypes=10"]  # the clustering methods'
TINY = [
    "method=mira",
    "data.batch_size=16",
    "data.global_crops.size=16",
    "baseline_eval=false",
    "+trainer.limit_val_batches=0",
    "trainer.accelerator=cpu",
    "data.loader=device",  # batches made in torch ops: the loader reads nothing to Python either
]


class HostReads:
    """Counts the calls that copy a tensor's value to Python (``.item()``, ``float(t)``, ``bool(t)``...)
    outside the data pipeline (``sslib/data``, which draws the crops' parameters on the CPU and reads
    them there: ``tests/core/data/test_device_loader.py`` checks that it reads nothing from the batch's device)."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        # and the copies the other way: Lightning's ``log`` makes a tensor on the module's device of each
        # Python number it is given, from pageable memory (on a GPU: waiting for its queue)
        to_tensor = L.LightningModule._LightningModule__to_tensor

        def copied(module, value, name):
            if not isinstance(value, torch.Tensor):
                self.count += 1
            return to_tensor(module, value, name)

        monkeypatch.setattr(L.LightningModule, "_LightningModule__to_tensor", copied)
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                if not in_data_pipeline(sys._getframe(1)):
                    self.count += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def in_data_pipeline(frame) -> bool:
    while frame is not None:
        if DATA in Path(frame.f_code.co_filename).parents:
            return True
        frame = frame.f_back
    return False


def fit(tmp_path, monkeypatch, steps: int, refresh: int, method: str = "mira") -> tuple[int, StepMetricsBar]:
    """Host reads (and copies of numbers to the device) of a fit of ``steps`` steps whose bar redraws
    every ``refresh`` steps, and the bar."""
    heads = SMALL_HEADS if method in CLUSTERING else []
    cfg = compose(
        [
            *TINY,
            f"method={method}",
            *heads,
            f"+trainer.max_steps={steps}",
            f"trainer.log_every_n_steps={refresh}",
        ]
    )
    datamodule = build_datamodule(cfg)
    model = methods.build(cfg, num_classes=datamodule.num_classes, n_global=datamodule.n_global)
    trainer = build_trainer(cfg, tmp_path / f"run-{steps}-{refresh}")
    [bar] = [c for c in trainer.callbacks if isinstance(c, StepMetricsBar)]
    with monkeypatch.context() as patch:
        reads = HostReads(patch)
        trainer.fit(model, datamodule=datamodule)
    return reads.count, bar


@pytest.mark.parametrize("method", ["mira", "swav", "dino", "deepclusterv2", "byol", "simclr", "barlow"])
def test_between_redraws_a_training_step_reads_nothing_from_its_device(tmp_path, monkeypatch, method):
    short, _ = fit(tmp_path, monkeypatch, steps=2, refresh=100, method=method)
    long, _ = fit(tmp_path, monkeypatch, steps=5, refresh=100, method=method)
    assert long == short  # three more steps, not one more read


def test_the_bar_shows_the_step_metrics_and_its_reads_are_seen(tmp_path, monkeypatch):
    long, _ = fit(tmp_path, monkeypatch, steps=7, refresh=100)
    redrawn, bar = fit(tmp_path, monkeypatch, steps=7, refresh=1)
    assert redrawn > long  # the count sees the bar's reads when it redraws every step
    shown = bar.get_metrics(bar.trainer, bar.trainer.lightning_module)
    assert set(STEP_METRICS) <= set(shown)
    assert all(isinstance(shown[key], float) for key in STEP_METRICS)


def test_the_bar_redraws_at_the_logging_interval_and_is_absent_when_disabled(tmp_path):
    cfg = compose([*TINY, *SMALL_HEADS, "trainer.log_every_n_steps=7"])
    [bar] = [c for c in build_trainer(cfg, tmp_path / "a").callbacks if isinstance(c, StepMetricsBar)]
    assert bar.refresh_rate == 7 and bar.keys == STEP_METRICS
    quiet = compose([*TINY, *SMALL_HEADS, "trainer.enable_progress_bar=false"])
    assert not [c for c in build_trainer(quiet, tmp_path / "b").callbacks if isinstance(c, StepMetricsBar)]


def test_a_diverged_run_stops_before_its_next_checkpoint_and_keeps_the_last_finite_one(tmp_path, monkeypatch):
    cfg = compose(
        [
            *TINY,
            *SMALL_HEADS,
            "+trainer.max_steps=8",
            "trainer.log_every_n_steps=5",
            "checkpoint.every_n_steps=2",
        ]
    )
    datamodule = build_datamodule(cfg)
    model = methods.build(cfg, num_classes=datamodule.num_classes, n_global=datamodule.n_global)
    ssl_step = model.ssl_step

    def diverging(crops, indices=None):  # the 4th step's loss is NaN
        loss, feats, metrics = ssl_step(crops, indices)
        return (loss * torch.nan if model.global_step == 3 else loss), feats, metrics

    monkeypatch.setattr(model, "ssl_step", diverging)
    run_dir = tmp_path / "run"
    trainer = build_trainer(cfg, run_dir)
    with pytest.raises(FloatingPointError) as err:
        trainer.fit(model, datamodule=datamodule)
    assert str(err.value) == (
        "training diverged: the loss was NaN or Inf at a step in 3-4, and nothing was saved after it "
        "(try a lower optim.lr, or trainer.precision=32-true)"
    )
    saved = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_the_guard_stops_every_rank_when_one_diverged(monkeypatch):
    import sslib.app.callbacks as callbacks

    guard = DivergenceGuard(every_n_steps=10)
    trainer = type("Trainer", (), {"global_step": 3})()
    guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(1.0)}, None, 0)  # finite on this rank
    guard.check(trainer)  # alone: nothing to stop
    guard.on_train_batch_end(trainer, None, torch.tensor(2.0), None, 0)
    monkeypatch.setattr(callbacks, "world_size", lambda: 2)
    monkeypatch.setattr(callbacks, "all_reduce", lambda t, op: torch.ones_like(t))  # another rank's NaN
    trainer.global_step = 5
    with pytest.raises(FloatingPointError, match="at a step in 4-5"):
        guard.check(trainer)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_the_guard_interval_is_a_positive_integer(bad):
    with pytest.raises(ValueError, match=f"every_n_steps must be an integer >= 1, got {bad!r}"):
        DivergenceGuard(bad)


def test_numbers_go_to_the_device_in_one_copy_and_tensors_stay_as_they_are():
    loss = torch.tensor(1.5)
    out = scalars_to_device({"a": 2.0, "loss": loss, "b": 3}, torch.device("cpu"))
    assert list(out) == ["a", "loss", "b"] and out["loss"] is loss
    assert out["a"].dtype == torch.float32 and out["a"].dim() == 0
    assert (float(out["a"]), float(out["b"])) == (2.0, 3.0)
    assert scalars_to_device({"a": 2.0}, torch.device("meta"))["a"].device.type == "meta"
    assert to_device(loss, torch.device("cpu")) is loss
