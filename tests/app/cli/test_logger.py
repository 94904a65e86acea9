"""logger=tensorboard: the run's trainer writes TensorBoard event files that TensorBoard reads back."""

from __future__ import annotations

import sys

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from sslib.app.config import compose
from sslib.app.train import build_logger, build_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyRegression(L.LightningModule):
    """y = 2x fitted by one linear weight; logs its loss every step."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = ((self.weight * x - y) ** 2).mean()
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def tensorboard_cfg(run_dir, *extra: str):
    return compose(["logger=tensorboard", f"run_dir={run_dir}", "trainer.accelerator=cpu",
                    "trainer.max_epochs=1", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
                    *extra])  # fmt: skip


def test_run_trainer_writes_tensorboard_scalars(tmp_path):
    cfg = tensorboard_cfg(tmp_path)
    trainer = build_trainer(cfg, tmp_path)
    assert isinstance(trainer.logger, TensorBoardLogger)
    x = torch.linspace(-1, 1, 8).unsqueeze(1)
    trainer.fit(TinyRegression(), DataLoader(TensorDataset(x, 2 * x), batch_size=2))

    (event_dir,) = (tmp_path / "tensorboard").iterdir()
    assert event_dir.name == "version_0"
    events = EventAccumulator(str(event_dir))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [0, 1, 2, 3]
    first = ((0 * x[:2] - 2 * x[:2]) ** 2).mean().item()  # the zero weight's loss on the first batch
    assert losses[0].value == pytest.approx(first)
    assert losses[-1].value < losses[0].value
    assert any(tag.startswith("lr-") for tag in events.Tags()["scalars"])  # the run's lr monitor


def test_missing_tensorboard_is_one_line_saying_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    with pytest.raises(ValueError) as err:
        build_logger(tensorboard_cfg(tmp_path), tmp_path)
    assert str(err.value) == (
        "logger=tensorboard needs the tensorboard package: pip install 'sslib-vision[tensorboard]' "
        "(from a clone: pip install -e '.[tensorboard]')"
    )
