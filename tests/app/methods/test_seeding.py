"""A run's initial weights depend on its seed alone: the checks that run before training (which build
throw-away modules) must not move the random stream the model is drawn from."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from sslib.app.builders import build_backbone
from sslib.app.config import compose
from sslib.app.train import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")


class FirstWeights(L.Callback):
    """The backbone's weights when the first evaluation (the random-init baseline) starts."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.state is None:
            self.state = {k: v.detach().clone() for k, v in pl_module.backbone.state_dict().items()}


def test_the_random_init_backbone_is_the_seeds(tmp_path):
    cfg = compose(
        [
            f"run_dir={tmp_path}",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=1",
            "+trainer.limit_val_batches=1",
            "trainer.enable_progress_bar=false",
            "data.batch_size=16",
            "seed=3",
        ]
    )
    first = FirstWeights()
    pretrain(cfg, callbacks=[first])
    L.seed_everything(3, verbose=False)
    expected, _ = build_backbone(cfg)
    assert first.state is not None and set(first.state) == set(expected.state_dict())
    assert all(torch.equal(first.state[k], v) for k, v in expected.state_dict().items())
