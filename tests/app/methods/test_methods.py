"""Methods: every method with every labeler trains; EMA, prototype freezing, resume, config errors."""

from __future__ import annotations

import copy
import itertools
import math

import lightning as L
import pytest
import torch

from sslib.app import methods
from sslib.app.config import ConfigError, compose
from sslib.app.methods.deepcluster import CHECKPOINT_KEY
from sslib.app.train import build_datamodule, pretrain
from tests.helpers.probes import EMAProbe, LossSpy, assert_updates_follow_the_ramp
from tests.helpers.reference import cluster_prediction, swapped_prediction

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


LOSSES = {"deepclusterv2": "sslib.app.methods.deepcluster.cluster_prediction_loss"}
SWAPPED = "sslib.app.methods.clustering.swapped_prediction_loss"  # MIRA, SwAV, DINO


@pytest.mark.parametrize(
    ("method", "labeler"),
    [
        *itertools.product(["mira", "swav", "dino"], ["mira", "sinkhorn", "dino"]),
        ("deepclusterv2", "nearest"),
        ("deepclusterv2", "mira"),  # k-means centroids, the memory labelled by MIRA
    ],
)
def test_every_method_trains_with_every_labeler(tmp_path, monkeypatch, method, labeler):
    """Each step's loss is the reference loss of what the step fed it, the last one is what is logged,
    the cluster usage is that of the last targets, and the backbone and projector weights changed."""
    cfg = tiny_cfg(tmp_path, f"method={method}", f"labeler={labeler}")
    assert cfg.labeler.name == labeler and cfg.method.name == method
    spy = LossSpy.install(monkeypatch, LOSSES.get(method, SWAPPED))
    model, trainer, dm = fit(cfg, steps=2, limit_train_batches=3)  # DeepCluster-v2 embeds 3 batches first
    before = {k: copy.deepcopy(model.ssl_modules()[k].state_dict()) for k in ("backbone", "projector")}
    trainer.fit(model, dm)
    assert type(model.labeler).__name__.lower().startswith(labeler)
    assert len(spy.calls) == 2
    for args, value in spy.calls:
        assert args[-1] == cfg.method.student_temperature
        if method == "deepclusterv2":
            student, clusters, _ = args
            assert value.item() == pytest.approx(cluster_prediction(student, clusters, args[-1]), rel=1e-5)
            used = len(clusters[clusters >= 0].unique())
        else:
            targets, student, _ = args
            assert len(targets) == dm.n_global and len(student) == dm.train_transform.n_crops
            for t in targets:
                torch.testing.assert_close(t.sum(1), torch.ones(len(t)))
            assert value.item() == pytest.approx(swapped_prediction(targets, student, args[-1]), rel=1e-5)
            used = len(targets[0].argmax(1).unique())
    assert trainer.callback_metrics["train/loss"].item() == pytest.approx(value.item(), rel=1e-6)
    assert trainer.callback_metrics["labels/clusters_used"] == used
    for key, state in before.items():
        after = model.ssl_modules()[key].state_dict()
        assert any(not torch.equal(w, after[name]) for name, w in state.items() if w.is_floating_point()), key


def test_method_default_labelers_and_swav_ablation(tmp_path):
    assert compose(["method=swav"]).labeler.name == "sinkhorn"
    assert compose(["method=dino"]).labeler.name == "dino"
    assert compose(["method=deepclusterv2"]).labeler.name == "nearest"
    swav_dagger = compose(["method=mira", "labeler=sinkhorn"])  # the paper's SwAV-dagger ablation
    mira = compose(["method=mira"])
    assert swav_dagger.method == mira.method and swav_dagger.optim == mira.optim


@pytest.mark.parametrize(
    ("method", "teacher_parts", "offset"),
    [("mira", ["backbone", "projector"], 1), ("dino", None, 0)],
)
def test_ema_teacher_follows_the_formula_with_the_ramped_momentum(tmp_path, method, teacher_parts, offset):
    """Every update is theta_t <- m theta_t + (1 - m) theta_s with m the cosine ramp at the iteration
    just done (DINO) or the next one (MIRA's official code); MIRA shares its prototypes with the teacher,
    DINO averages them too. (0.9 -> 0.5 so each step moves.)"""
    ramp = ["method.ema.enabled=true", "method.ema.base_momentum=0.9", "method.ema.final_momentum=0.5"]
    probe = EMAProbe()
    model, trainer, dm = fit(tiny_cfg(tmp_path, f"method={method}", *ramp), steps=4, callbacks=[probe])
    trainer.fit(model, dm)
    assert list(model.teacher) == (teacher_parts or ["backbone", "projector", "prototypes"])
    assert_updates_follow_the_ramp(probe, 4, 0.9, 0.5, offset)
    last = 0.5 if offset else 0.5 - (0.5 - 0.9) * (1 + math.cos(math.pi * 3 / 4)) / 2
    assert trainer.callback_metrics["schedule/ema_momentum"].item() == pytest.approx(last)
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
    # SwAV renormalises the rows before every step, frozen or not: unchanged to round-off while frozen
    moved = (protos - model.prototypes.parameters_to_freeze()[0]).abs().max().item()
    assert (moved < 1e-6) == frozen


class AttributeProbe(L.Callback):
    """The labeler's value of ``attribute`` at each step (read after the module's batch-start hook)."""

    def __init__(self, attribute: str) -> None:
        self.attribute, self.values = attribute, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(getattr(pl_module.labeler, self.attribute)))


def test_mira_beta_follows_its_cosine_schedule_step_by_step(tmp_path):
    probe = AttributeProbe("beta")
    model, trainer, dm = fit(tiny_cfg(tmp_path, "method=mira"), steps=4, callbacks=[probe])
    trainer.fit(model, dm)
    # step k of T = 4 (0-based, as MIRA's train.py lines 392-394 and 428): 0.75 + (2/3 - 0.75)(1 - cos(pi k/4))/2
    expected = [0.75 + (2 / 3 - 0.75) * (1 - math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    assert probe.values == pytest.approx(expected, rel=1e-12)
    assert trainer.callback_metrics["schedule/beta"].item() == pytest.approx(expected[-1], rel=1e-6)


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        # DINO's np.linspace(0.04, 0.07, 3)[epoch], held through each epoch (main_dino.py L374-378)
        ("epoch", [0.04, 0.04, 0.055, 0.055, 0.07, 0.07]),
        # every step: 0.04 -> 0.07 over the 6 steps of 3 epochs
        ("step", [0.04, 0.045, 0.05, 0.055, 0.06, 0.065]),
    ],
)
def test_dino_teacher_temperature_warms_up_linearly_over_its_epochs_then_stays(tmp_path, unit, expected):
    """0.04 -> 0.07 linearly over 3 epochs of 2 steps, per epoch as DINO's official code or per step."""
    cfg = tiny_cfg(
        tmp_path,
        "method=dino",
        "labeler.schedule.temperature.epochs=3",
        f"labeler.schedule.temperature.unit={unit}",
    )
    probe = AttributeProbe("temperature")
    model, trainer, dm = fit(cfg, steps=6, max_epochs=3, limit_train_batches=2, callbacks=[probe])
    trainer.fit(model, dm)
    assert probe.values == pytest.approx(expected, rel=1e-12)


def test_swav_queue_fills_and_enlarges_the_labelled_batch(tmp_path):
    cfg = tiny_cfg(tmp_path, "method=swav", "method.queue.length=16", "method.queue.start_epoch=0")
    model, trainer, dm = fit(cfg, steps=3)
    trainer.fit(model, dm)
    assert int(model.queue.filled) == 16 and model.queue.embeddings.abs().sum() > 0
    assert "queue.embeddings" in model.state_dict()


class BankProbe(L.Callback):
    """DeepCluster-v2's bank as epoch 0 starts (filled, not yet clustered), then each batch's indices, the
    sample clusters and the prototypes (callback hooks run before the module's own)."""

    def __init__(self) -> None:
        self.indices: list[torch.Tensor] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.bank, self.filled = pl_module.memory.embeddings.clone(), pl_module.memory.filled.clone()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.indices.append(batch[2])
        self.clusters = pl_module.clusters.clone()
        self.prototypes = pl_module.prototypes.prototypes().detach().clone()


@pytest.fixture(scope="module")
def deepcluster_run(tmp_path_factory):
    """2 steps of DeepCluster-v2 on epochs of 3 batches of 8 (a 24-row bank for K = 20), k-means converged."""
    cfg = tiny_cfg(tmp_path_factory.mktemp("dc"), "method=deepclusterv2", "method.kmeans_iters=50")
    probe = BankProbe()
    model, trainer, dm = fit(cfg, steps=2, limit_train_batches=3, callbacks=[probe])
    trainer.fit(model, dm)
    return model, probe


def test_deepclusterv2_memory_fills_before_epoch_0_and_updates_at_batch_indices(deepcluster_run):
    model, probe = deepcluster_run
    assert int(probe.filled.sum()) == 24  # the epoch's 3 x 8 samples, before any training step
    torch.testing.assert_close(probe.bank[probe.filled].norm(dim=1), torch.ones(24))
    seen = torch.cat(probe.indices)
    assert len(seen) == 16 and probe.filled[seen].all()  # epoch 0 trains on the batches that filled the bank
    changed = (model.memory.embeddings != probe.bank).any(dim=1)
    assert changed[seen].all() and int(changed.sum()) == 16  # each step rewrote exactly its samples' rows
    assert torch.equal(model.memory.filled, probe.filled)


def test_deepclusterv2_prototypes_are_the_centroids_and_every_bank_sample_has_a_cluster(deepcluster_run):
    model, probe = deepcluster_run
    assert torch.equal(probe.clusters >= 0, probe.filled)  # -1 only for samples the bank has not seen
    rows, clusters = probe.bank[probe.filled], probe.clusters[probe.filled]
    assert len(clusters.unique()) > 1 and clusters.max() < 20
    for k in clusters.unique():  # converged k-means: each used prototype is the normalised mean of its rows
        mean = torch.nn.functional.normalize(rows[clusters == k].sum(dim=0), dim=0)
        torch.testing.assert_close(probe.prototypes[k], mean)
    assert torch.equal(model.prototypes.prototypes(), probe.prototypes)  # not trained
    assert not any(p.requires_grad for p in model.prototypes.parameters())


def test_deepclusterv2_bank_round_trips_through_a_safe_checkpoint(deepcluster_run, tmp_path):
    model, _ = deepcluster_run
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "bank.ckpt")
    restored = methods.build(model.cfg, num_classes=10, n_global=2)
    restored.on_load_checkpoint(torch.load(tmp_path / "bank.ckpt", weights_only=True))
    assert torch.equal(restored.memory.embeddings, model.memory.embeddings)
    assert torch.equal(restored.memory.filled, model.memory.filled)


def test_deepclusterv2_needs_indices_and_no_teacher(tmp_path):
    model = methods.build(tiny_cfg(tmp_path, "method=deepclusterv2"), num_classes=10, n_global=2)
    with pytest.raises(ValueError, match="needs the samples' dataset indices"):
        model.ssl_step([torch.randn(2, 3, 16, 16)] * 2)
    with pytest.raises(ValueError, match="no EMA teacher or queue"):
        methods.build(tiny_cfg(tmp_path, "method=deepclusterv2", "method.queue.length=8"), 10, 2)


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


@pytest.mark.parametrize(
    "method",
    [["method=dino"], ["method=deepclusterv2", "method.num_prototypes=10"]],
    ids=["dino", "deepclusterv2"],
)
def test_resume_reproduces_the_uninterrupted_run(tmp_path, method):
    """Train 2 epochs straight; crash after epoch 1 and resume: identical weights and state."""
    common = [
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        *method,
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
    for key, value in a.get(CHECKPOINT_KEY, {}).items():  # DeepCluster-v2's memory bank
        assert torch.allclose(value.float(), b[CHECKPOINT_KEY][key].float(), atol=1e-6), key
    assert straight["train/loss"] == pytest.approx(resumed["train/loss"], abs=1e-6)


class CrashAtStep(L.Callback):
    """Simulates a killed run: dies before optimiser step ``at`` (after the checkpoint of the step before)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            raise RuntimeError("simulated crash")


def test_a_mid_epoch_checkpoint_holds_the_teacher_of_its_step(tmp_path):
    """DINO (EMA teacher) killed mid-epoch after a step's checkpoint resumes to the uninterrupted weights:
    the teacher is updated before the checkpoint of its step is written."""
    common = [
        "method=dino",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=4",
        "+trainer.limit_val_batches=1",
    ]
    common += ["checkpoint.every_n_steps=2", "data.num_workers=0", "baseline_eval=false"]
    pretrain(tiny_cfg(tmp_path / "a", *common))
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain(tiny_cfg(tmp_path / "b", *common), callbacks=[CrashAtStep(at=2)])
    assert torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    recorder = StepRecorder()
    pretrain(tiny_cfg(tmp_path / "b", *common), callbacks=[recorder])
    assert recorder.steps == [2, 3]
    a, b = (
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for d in (tmp_path / "a", tmp_path / "b")
    )
    assert any(k.startswith("teacher.") for k in a)
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            ["method=nope"],
            "unknown method 'nope'; available: barlow, byol, deepclusterv2, dino, mira, simclr, swav",
        ),
        (["labeler=nope"], "unknown labeler 'nope'; available: dino, mira, nearest, sinkhorn"),
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


def test_schedules_of_missing_attributes_fail_and_recipes_do_not_reach_a_swapped_labeler():
    from sslib.app.builders import build_labeler

    bad = compose(["method=dino", "+labeler.schedule.beta={start: 0.5, end: 0.6}"])
    with pytest.raises(ValueError, match="has no attribute 'beta' to schedule"):
        build_labeler(bad)
    own = compose(["method=dino"])  # dino_digits warms the teacher temperature up over 5 epochs
    assert own.labeler.schedule.temperature.epochs == 5
    labeler, schedule = build_labeler(compose(["method=dino", "labeler=sinkhorn"]))
    assert type(labeler).__name__ == "SinkhornLabeler" and schedule == {}
    mira = compose(["method=dino", "labeler=mira"])  # MIRA's own defaults, not DINO's temperature schedule
    assert mira.labeler == compose(["method=mira", "recipe=null"]).labeler
    assert set(build_labeler(mira)[1]) == {"beta"}


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("method.student_temperature=0", r"method.student_temperature must be a finite number > 0, got 0"),
        (
            "method.crop_forward=pairs",
            r"method.crop_forward must be one of resolution, per_crop, got 'pairs'",
        ),
        ("method.projector_norm=layer", r"method.projector_norm must be one of batchnorm, none, got 'layer'"),
        (
            "method.projector_activation=tanh",
            r"method.projector_activation must be one of relu, gelu, got 'tanh'",
        ),
        (
            "method.ema.momentum_step=later",
            r"method.ema.momentum_step must be one of current, next, got 'later'",
        ),
        (
            "method.prototype_parametrization=plain",
            r"method.prototype_parametrization must be one of weight_norm, renormalize, got 'plain'",
        ),
        (
            "method.freeze_prototypes_steps=-1",
            r"method.freeze_prototypes_steps must be an integer >= 0, got -1",
        ),
    ],
)
def test_bad_method_values_are_one_line_errors_when_the_method_is_built(override, match):
    with pytest.raises(ValueError, match=f"^{match}$"):
        methods.build(compose(["method=mira", override]), num_classes=10, n_global=2)
