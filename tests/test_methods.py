"""Methods: every method with every labeler trains; EMA, prototype freezing, resume, config errors."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch

from sslib import methods
from sslib.config import ConfigError, compose
from sslib.train import build_datamodule, pretrain

TINY = [
    "data.batch_size=8",
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.global_crops.size=16",
    "method.num_prototypes=20",
    "method.projector_dims=[32,16]",
    "optim.warmup_epochs=0",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
    "baseline_eval=false",
]


def tiny_cfg(tmp_path, *overrides: str):
    return compose([*TINY, f"run_dir={tmp_path}", *overrides])


def fit(cfg, steps: int, **trainer_kwargs):
    """Build the method of ``cfg`` and train it for ``steps`` steps without validation or logging."""
    torch.manual_seed(0)
    dm = build_datamodule(cfg)
    model = methods.build(cfg, num_classes=10, n_global=dm.n_global)
    trainer = L.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        accelerator="cpu",
        enable_model_summary=False,
        **trainer_kwargs,
    )
    return model, trainer, dm


@pytest.mark.parametrize("labeler", ["mira", "sinkhorn", "dino"])
@pytest.mark.parametrize("method", ["mira", "swav", "dino"])
def test_every_method_trains_with_every_labeler(tmp_path, method, labeler):
    cfg = tiny_cfg(tmp_path, f"method={method}", f"labeler={labeler}")
    assert cfg.labeler.name == labeler and cfg.method.name == method
    model, trainer, dm = fit(cfg, steps=2)
    trainer.fit(model, dm)
    loss = trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss) and loss > 0
    assert type(model.labeler).__name__.lower().startswith(labeler)
    assert trainer.callback_metrics["labels/clusters_used"] >= 1


def test_method_default_labelers_and_swav_ablation(tmp_path):
    assert compose(["method=swav"]).labeler.name == "sinkhorn"
    assert compose(["method=dino"]).labeler.name == "dino"
    swav_dagger = compose(["method=mira", "labeler=sinkhorn"])  # the paper's SwAV-dagger ablation
    mira = compose(["method=mira"])
    assert swav_dagger.method == mira.method and swav_dagger.optim == mira.optim


def test_ema_teacher_moves_towards_student(tmp_path):
    model, trainer, dm = fit(tiny_cfg(tmp_path, "method=mira"), steps=3)
    before = copy.deepcopy(model.teacher.state_dict())
    trainer.fit(model, dm)
    name = "backbone.conv1.weight"
    teacher, student = model.teacher.state_dict()[name], model.backbone.state_dict()["conv1.weight"]
    assert not torch.equal(teacher, before[name])  # moved
    assert not torch.equal(teacher, student)  # but is not a copy (momentum < 1)
    assert all(not p.requires_grad for p in model.teacher.parameters())


def test_no_ema_for_swav(tmp_path):
    model, _, _ = fit(tiny_cfg(tmp_path, "method=swav"), steps=1)
    assert model.teacher is None


@pytest.mark.parametrize(("freeze", "frozen"), [(1, True), (0, False)])
def test_prototypes_stay_frozen_as_configured(tmp_path, freeze, frozen):
    cfg = tiny_cfg(tmp_path, "method=swav", f"method.freeze_prototypes_epochs={freeze}")
    model, trainer, dm = fit(cfg, steps=3)
    protos = model.prototypes.parameters_to_freeze()[0].detach().clone()
    conv = model.backbone.conv1.weight.detach().clone()
    trainer.fit(model, dm)
    assert not torch.equal(conv, model.backbone.conv1.weight)
    assert torch.equal(protos, model.prototypes.parameters_to_freeze()[0]) == frozen


def test_mira_beta_follows_its_schedule(tmp_path):
    model, trainer, dm = fit(tiny_cfg(tmp_path, "method=mira"), steps=4)
    trainer.fit(model, dm)
    assert 2 / 3 <= model.labeler.beta < 0.75  # cosine 0.75 -> 2/3 over the run, evaluated at step 3 of 4


def test_swav_queue_fills_and_enlarges_the_labelled_batch(tmp_path):
    cfg = tiny_cfg(tmp_path, "method=swav", "method.queue.length=16", "method.queue.start_epoch=0")
    model, trainer, dm = fit(cfg, steps=3)
    trainer.fit(model, dm)
    assert int(model.queue.filled) == 16 and model.queue.embeddings.abs().sum() > 0
    assert "queue.embeddings" in model.state_dict()


class Crash(L.Callback):
    """Simulates a killed run: dies when epoch ``at`` starts (after the previous epoch's checkpoint)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.at:
            raise RuntimeError("simulated crash")


class StepRecorder(L.Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps.append(trainer.global_step)


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    """Train 2 epochs straight; crash after epoch 1 and resume: identical weights and state."""
    common = [
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "method=dino",
        "data.num_workers=1",
        "data.persistent_workers=false",
    ]
    straight = pretrain(tiny_cfg(tmp_path / "a", *common))
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain(tiny_cfg(tmp_path / "b", *common), callbacks=[Crash(at=1)])
    assert torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    recorder = StepRecorder()
    resumed = pretrain(tiny_cfg(tmp_path / "b", *common), callbacks=[recorder])  # resume=auto: last.ckpt
    assert recorder.steps == [2, 3]  # continued with epoch 1, did not start over
    load = lambda d: torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)  # noqa: E731
    a, b = load(tmp_path / "a"), load(tmp_path / "b")
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"] == 4
    for key, value in a["state_dict"].items():  # model, EMA teacher, DINO centre
        assert torch.allclose(value.float(), b["state_dict"][key].float(), atol=1e-6), key
    assert straight["train/loss"] == pytest.approx(resumed["train/loss"], abs=1e-6)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["method=nope"], "unknown method 'nope'; available: dino, mira, swav"),
        (["labeler=nope"], "unknown labeler 'nope'; available: dino, mira, sinkhorn"),
        (["backbone=nope"], "unknown backbone 'nope'; available: resnet18, resnet50, timm"),
        (
            ["data=nope"],
            "unknown data 'nope'; available: cifar10, cifar100, digits, folder, imagenet, imagenet100",
        ),
        (["data=imagenet"], "data.root is required"),
        (["labeler.beta=1.5", "labeler=mira"], None),
        (["nokey=1"], "nokey"),
        (["method"], "not of the form key=value"),
    ],
)
def test_bad_overrides_are_one_line_errors(overrides, match):
    if match is None:  # values are checked when the labeler is built
        with pytest.raises(ValueError, match=r"beta must be in \[0, 1\), got 1.5"):
            methods.build(compose(overrides), num_classes=10, n_global=2)
        return
    with pytest.raises(ConfigError, match=match) as err:
        compose(overrides)
    assert "\n" not in str(err.value)
