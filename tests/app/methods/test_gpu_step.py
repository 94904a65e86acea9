"""The training step on its device: precision resolution, channels_last and the compiled backbone, and
(``gpu`` marker, skipped without CUDA) the same on a real GPU, with MIRA's loop free of host syncs."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from sslib.app import methods
from sslib.app.config import compose
from sslib.app.methods.base import to_channels_last, wants_channels_last
from sslib.app.run_checks import check_run_config
from sslib.app.train import build_datamodule, build_trainer, resolve_precision
from sslib.labelers.mira import mira_targets

pytestmark = pytest.mark.usefixtures("one_thread")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
TINY = [
    "data.batch_size=8",
    "data.global_crops.size=16",
    "method.projector_dims=[32,16]",
    "method.num_prototypes=10",
    "baseline_eval=false",
]


def tiny_mira(*overrides: str):
    """A tiny MIRA of the CIFAR recipe (EMA teacher); ``method=swav`` in ``overrides``: SwAV's."""
    cfg = compose(["method=mira", "data=cifar10", *TINY, *overrides])
    return cfg, methods.build(cfg, num_classes=10, n_global=2)


def fake_gpu(monkeypatch, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


@pytest.mark.parametrize("accelerator", ["auto", "cpu", "gpu", "cuda"])
def test_auto_precision_is_float32_without_a_gpu(accelerator):
    assert resolve_precision("auto", accelerator) == "32-true"


def test_auto_precision_is_bf16_on_cuda_and_an_explicit_precision_wins(monkeypatch):
    fake_gpu(monkeypatch)
    assert [resolve_precision("auto", a) for a in ("auto", "gpu", "cuda", "cpu")] == [
        "bf16-mixed",
        "bf16-mixed",
        "bf16-mixed",
        "32-true",
    ]
    assert resolve_precision("32-true", "cuda") == "32-true"
    assert resolve_precision("16-mixed", "auto") == "16-mixed"
    fake_gpu(monkeypatch, bf16=False)  # e.g. a V100: float32 rather than fp16 with loss scaling
    assert resolve_precision("auto", "cuda") == "32-true"


def test_the_default_precision_is_float32_on_this_cpu_and_an_explicit_one_wins(tmp_path):
    # an image folder has no recipe, so the trainer group's default applies (recipes set their own)
    cfg = compose(["method=mira", "data=folder", "data.root=unused", *TINY, "trainer.accelerator=cpu"])
    assert cfg.trainer.precision == "auto" and cfg.compile_backbone is False
    assert build_trainer(cfg, tmp_path).precision == "32-true"
    explicit = compose(["method=mira", *TINY, "trainer.accelerator=cpu", "trainer.precision=bf16-mixed"])
    assert build_trainer(compose(["method=mira", *TINY]), tmp_path).precision == "32-true"  # digits recipe
    assert build_trainer(explicit, tmp_path).precision == "bf16-mixed"


def channels_last(module: nn.Module) -> bool:
    convs = [p for p in module.parameters() if p.dim() == 4]
    return bool(convs) and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)


def test_on_cuda_the_backbones_and_batches_go_channels_last():
    _, model = tiny_mira()  # 16 px crops: contiguous on a CPU
    model.prepare_for(torch.device("cpu"))
    assert not model.channels_last and not channels_last(model.backbone)
    _, model = tiny_mira()
    model.prepare_for(torch.device("cuda"))  # only the layout changes here; the move is Lightning's
    assert model.channels_last
    assert channels_last(model.backbone) and channels_last(model.teacher["backbone"])
    crops, labels = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)], torch.arange(2)
    out_crops, out_labels, _ = model.device_batch((crops, labels, labels))
    assert all(c.is_contiguous(memory_format=torch.channels_last) for c in out_crops)
    assert all(torch.equal(a, b) for a, b in zip(out_crops, crops, strict=True)) and out_labels is labels
    loss, _, _ = model.ssl_step(out_crops)  # the channels_last step runs and trains
    loss.backward()
    assert model.backbone.conv1.weight.grad is not None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], False),  # 16 px with the CIFAR stem: maps below CPU_CHANNELS_LAST_MIN_MAP
        (["data.global_crops.size=32"], True),
        (["data.global_crops.size=32", "data.local_crops={n:2,size:16,scale:[0.1,0.3]}"], False),
        (["data.global_crops.size=48", "data.local_crops={n:2,size:32,scale:[0.1,0.3]}"], True),
        (["data.global_crops.size=224", "data.local_crops={n:2,size:96,scale:[0.1,0.3]}"], False),  # 24 px
        (["data.global_crops.size=224", "data.local_crops={n:2,size:128,scale:[0.1,0.3]}"], True),
        (["data.global_crops.size=64", "backbone.cifar=false"], False),  # the ImageNet stem: 16 px maps
        (["channels_last=true"], True),
        (["data.global_crops.size=32", "channels_last=false"], False),
    ],
)
def test_on_a_cpu_auto_takes_channels_last_for_stem_outputs_of_32_px_and_more(overrides, expected):
    cfg, model = tiny_mira(*overrides)
    model.prepare_for(torch.device("cpu"))
    assert model.channels_last is expected
    assert channels_last(model.backbone) is (expected or False)
    if model.channels_last:
        assert channels_last(model.teacher["backbone"])
        size = cfg.data.global_crops.size
        crops = model.device_batch([torch.randn(2, 3, size, size) for _ in range(2)])
        assert all(c.is_contiguous(memory_format=torch.channels_last) for c in crops)


def test_a_backbone_without_convolutions_never_goes_channels_last():
    for setting in ("auto", True):
        for device in ("cpu", "cuda"):
            assert not wants_channels_last(setting, torch.device(device), nn.Linear(2, 2), [224])


@pytest.mark.parametrize("bad", ["yes", 1, "cuda"])
def test_a_bad_channels_last_setting_is_one_line_naming_it(bad):
    cfg = compose(["method=mira", *TINY, f"channels_last={bad}"])
    with pytest.raises(ValueError, match=rf"channels_last must be auto, true or false, got {bad!r}") as err:
        check_run_config(cfg, world_size=1)
    assert "\n" not in str(err.value)


def test_to_channels_last_keeps_the_structure_and_the_other_values():
    batch = [torch.randn(1, 3, 4, 4)], torch.zeros(1), "x"
    out = to_channels_last(batch)
    assert type(out) is tuple and type(out[0]) is list and out[1] is batch[1] and out[2] == "x"


def test_compile_backbone_compiles_both_backbones_in_place(monkeypatch):
    compiled: list[nn.Module] = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    _, model = tiny_mira("compile_backbone=true")
    keys = list(model.state_dict())
    model.prepare_for(torch.device("cpu"))
    model.prepare_for(torch.device("cpu"))  # once only
    assert compiled == [model.backbone, model.teacher["backbone"]]
    assert list(model.state_dict()) == keys  # checkpoints keep their keys
    _, swav = tiny_mira("method=swav", "compile_backbone=true")  # no teacher: the backbone alone
    compiled.clear()
    swav.prepare_for(torch.device("cpu"))
    assert compiled == [swav.backbone]


def test_compile_backbone_must_be_a_boolean():
    cfg = compose(["method=mira", *TINY, "compile_backbone=yes"])
    with pytest.raises(ValueError, match="compile_backbone must be true or false, got 'yes'"):
        check_run_config(cfg, 1)


# --- on a GPU ---------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(256, 3000), (100, 37)])
def test_mira_graph_equals_the_torch_path_and_syncs_nothing(shape):
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(shape[0], 16, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(shape[1], 16, generator=g), dim=1)
    logits = (z @ c.t()).cuda()
    eager = mira_targets(logits, 0.225, 2 / 3, 30, backend="torch")
    first = mira_targets(logits, 0.225, 2 / 3, 30, backend="graph")  # captures
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        again = mira_targets(logits, 0.225, 0.7, 30, backend="graph")  # another beta: same graph
        auto = mira_targets(logits, 0.225, 2 / 3, 30)
        mira_targets(logits, 0.225, 2 / 3, 30, backend="torch")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert (first - eager).abs().max() < 1e-6 and (auto - eager).abs().max() < 1e-6
    assert (again - mira_targets(logits, 0.225, 0.7, 30, backend="torch")).abs().max() < 1e-6


@needs_cuda
@pytest.mark.gpu
def test_a_cuda_run_defaults_to_bf16_with_channels_last_backbones(tmp_path):
    cfg = compose(
        [
            "method=mira",
            "data=folder",
            "data.root=unused",
            *TINY,
            "trainer.accelerator=gpu",
            "trainer.max_epochs=1",
        ]
    )
    _, model = tiny_mira()
    trainer = build_trainer(cfg, tmp_path)
    assert trainer.precision == "bf16-mixed"
    model.trainer = trainer
    model.setup("fit")
    assert model.channels_last and channels_last(model.backbone)
    model.cuda()
    assert channels_last(model.backbone)  # kept by the move to the GPU


class SyncFree(L.Callback):
    """torch's sync debug mode set to "error" from the end of step ``start`` to the end of step ``stop``:
    the batches made, the steps and the EMA updates in between must not wait for the GPU."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop, self.covered = start, stop, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.start:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        elif batch_idx == self.stop:
            torch.cuda.set_sync_debug_mode("default")
            self.covered = True

    def teardown(self, trainer, pl_module, stage: str) -> None:
        torch.cuda.set_sync_debug_mode("default")


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("method", ["mira", "swav", "dino"])
def test_between_redraws_a_cuda_step_with_the_device_loader_never_waits_for_the_gpu(tmp_path, method):
    cfg = compose(
        [
            f"method={method}",
            *TINY,
            "data.loader=device",
            "trainer.accelerator=gpu",
            "+trainer.max_steps=6",
            "+trainer.limit_val_batches=0",
            "trainer.log_every_n_steps=100",
        ]
    )
    datamodule = build_datamodule(cfg)
    model = methods.build(cfg, num_classes=datamodule.num_classes, n_global=datamodule.n_global)
    probe = SyncFree(start=1, stop=4)
    build_trainer(cfg, tmp_path, callbacks=[probe]).fit(model, datamodule=datamodule)
    assert probe.covered
