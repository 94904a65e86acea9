"""Recipes against their sources: the recipe files, their composition, and each value the review of the recipes fixed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

import sslib.app.config
from sslib.app import methods
from sslib.app.builders import build_projector
from sslib.app.config import ConfigError, compose, recipe_options
from sslib.app.recipes import check, load, load_all, render
from sslib.app.recipes.check import flat_config, recipe_config, required_keys
from sslib.app.recipes.cli import BEGIN, END
from sslib.backbones import build as build_backbone
from sslib.heads import PrototypeHead
from sslib.modules.crops import embed_crops
from sslib.optim import resolve_warmup_start_ratio
from tests.helpers import ROOT

SHARED = {
    "digits"
}  # the digits budget: a recipe for any method (recipe=digits), checked through <method>_digits


# --- the records -------------------------------------------------------------------------------


def test_every_recipe_name_is_in_exactly_one_checked_file():
    recorded = [r for recipe in load_all() for r in recipe.recipes]
    assert sorted(recorded) == sorted(set(recorded))
    assert sorted(recorded) == sorted(r for r in recipe_options() if r not in SHARED)


@pytest.mark.parametrize("name", [r.name for r in load_all()])
def test_record_matches_the_composed_recipe(name):
    assert check(load(name)) == []


def test_a_value_that_leaves_its_source_fails_the_check(monkeypatch):
    record = load("swav_cifar10")
    wrong = dataclasses.replace(record.entries["optim.lr"], value=0.5)
    record.entries["optim.lr"] = wrong
    assert any("optim.lr = 0.6 but record swav_cifar10 gives 0.5" in p for p in check(record))


def test_a_hyperparameter_without_a_source_fails_the_check():
    record = load("mira_imagenet")
    del record.entries["labeler.n_iters"]
    assert check(record) == ["mira_imagenet: labeler.n_iters = 30 has no source in record mira_imagenet"]


def test_a_deviation_must_differ_from_its_source_and_say_why():
    record = load("mira_imagenet")
    precision = record.entries["trainer.precision"]
    record.entries["trainer.precision"] = dataclasses.replace(precision, source_value="bf16-mixed")
    assert check(record) == [
        "mira_imagenet: trainer.precision is listed as a deviation but equals its source value 'bf16-mixed'"
    ]
    assert all(e.reason for r in load_all() for e in r.entries.values() if e.deviation)


def test_records_cover_the_hyperparameters_that_matter():
    flat = flat_config(recipe_config("mira_imagenet"))
    keys = required_keys(flat)
    for key in (
        "global_batch",
        "backbone.name",
        "data.local_crops.n",
        "labeler.beta",
        "optim.kwargs.eta",
        "optim.warmup_start_ratio",
        "trainer.precision",
        "method.crop_forward",
    ):
        assert key in keys
    assert "data.root" not in keys and "labeler.backend" not in keys
    cifar = required_keys(flat_config(recipe_config("swav_cifar10")))
    assert "data.augment.local_blur_p" not in cifar  # no local crops: no effect
    assert "method.ema.base_momentum" not in cifar  # SwAV has no teacher


def test_recipes_page_is_generated_from_the_records():
    text = (ROOT / "docs" / "recipes.md").read_text()
    assert BEGIN in text and END in text, "docs/recipes.md lost its generated section"
    generated = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert generated.strip() == render(load_all()).strip(), (
        "run `python -m sslib.app.recipes --write docs/recipes.md`"
    )


# --- composition: recipe group choices and unknown keys ----------------------------------------


def test_imagenet_recipe_selects_resnet50_and_the_command_line_still_wins():
    assert compose(["method=mira", "data=imagenet", "data.root=/x"]).backbone.name == "resnet50"
    assert (
        compose(["method=mira", "data=imagenet", "data.root=/x", "backbone=resnet18"]).backbone.name
        == "resnet18"
    )
    assert "groups" not in compose(["method=mira", "data=imagenet", "data.root=/x"])


def test_symmetric_recipes_choose_their_augmentation_and_the_command_line_still_wins():
    for method in ("swav", "deepclusterv2", "simclr"):
        aug = compose([f"method={method}", "data=cifar100"]).data.augment
        assert (aug.brightness, aug.contrast, aug.saturation, aug.hue, list(aug.solarize_p)) == (
            0.8,
            0.8,
            0.8,
            0.2,
            [0.0],
        )
    assert compose(["method=swav", "data=cifar10", "data/augment=cifar"]).data.augment.brightness == 0.4


@pytest.fixture
def recipe_file():
    """Write a recipe file ``zz_<name>.yaml`` into the package's recipe folder for one test."""
    folder = Path(sslib.app.config.__file__).parent / "conf" / "recipe"
    written = []

    def write(name: str, text: str) -> None:
        path = folder / f"{name}.yaml"
        assert not path.exists()
        path.write_text(text)
        written.append(path)

    yield write
    for path in written:
        path.unlink()


def test_a_recipe_file_with_an_unknown_method_key_fails_at_compose_time(recipe_file):
    recipe_file("barlow_zz", "values:\n  method.lambdd: [0.1, 'a typo']\n")
    with pytest.raises(
        ConfigError, match=r"^recipe barlow_zz sets 'method.lambdd', which the composed config does not have$"
    ):
        compose(["method=barlow", "recipe=barlow_zz"])


def test_a_recipe_value_the_composed_groups_lack_is_named_in_a_warning(recipe_file, caplog):
    recipe_file("barlow_zz", "values:\n  optim.kwargs.nesterov: [true, 'SGD only']\n  optim.lr: [0.7, 'x']\n")
    cfg = compose(["method=barlow", "recipe=barlow_zz"])
    assert cfg.optim.lr == 0.7 and "nesterov" not in cfg.optim.kwargs
    assert (
        "recipe barlow_zz: not applied, the composed config has no such keys: optim.kwargs.nesterov"
        in caplog.text
    )


def test_one_hydra_composition_per_call(monkeypatch):
    calls = []
    compose_once = sslib.app.config.hydra_compose
    monkeypatch.setattr(
        sslib.app.config, "hydra_compose", lambda *a, **k: calls.append(a) or compose_once(*a, **k)
    )
    for overrides in (
        [],
        ["method=dino", "data=cifar10", "labeler=mira", "labeler.n_iters=5"],
        ["method=swav", "data=imagenet", "data.root=/x", "optim=sgd"],
        ["method=byol", "recipe=digits"],
    ):
        calls.clear()
        compose(overrides)
        assert len(calls) == 1, overrides


def test_recipe_values_apply_under_the_command_line():
    cfg = compose(["method=mira", "data=imagenet", "data.root=/x", "optim.lr=0.1"])
    assert cfg.optim.lr == 0.1 and cfg.optim.weight_decay == 1.0e-6  # the command line, then the recipe
    assert (
        cfg.online_eval.every_n_epochs == 10 and cfg.online_eval.bank_dtype == "float16"
    )  # over config.yaml's
    assert cfg.trainer.check_val_every_n_epoch == 10
    assert compose(["method=mira", "data=cifar10", "recipe=null"]).trainer.max_epochs == 100  # no recipe


def test_a_swapped_labeler_keeps_its_own_defaults_and_says_so(caplog):
    cfg = compose(["method=dino", "data=cifar10", "labeler=mira"])
    assert cfg.labeler.name == "mira" and cfg.labeler.temperature == 0.225  # MIRA's default, not DINO's
    assert "recipe dino_cifar10: not applied, labeler=mira keeps its own defaults" in caplog.text
    assert "labeler.temperature" in caplog.text
    caplog.clear()
    assert (
        compose(["method=dino", "data=cifar10", "labeler=dino"]).labeler.temperature == 0.04
    )  # its own option
    assert "not applied" not in caplog.text


# --- the values the review fixed ---------------------------------------------------------------


def test_lars_follows_each_recipes_source():
    imagenet = compose(["method=mira", "data=imagenet", "data.root=/x"]).optim
    assert dict(imagenet.kwargs) == {"eta": 0.001, "clip_lr": False, "trust_ratio": "moco", "eps": 0.0}
    assert imagenet.warmup_start_ratio == "base" and resolve_warmup_start_ratio("base", 4096 / 256) == 1 / 16
    for recipe in ("mira_cifar10", "swav_cifar100", "mira_imagenet100", "byol_cifar10"):
        assert dict(recipe_config(recipe).optim.kwargs) == {
            "eta": 0.02,
            "clip_lr": True,
            "trust_ratio": "paper",
            "eps": 1e-8,
        }


def test_mira_recipes_zero_init_residuals_freeze_the_head_and_forward_crops_alone():
    for recipe in ("mira_cifar10", "mira_cifar100", "mira_imagenet100", "mira_imagenet"):
        cfg = recipe_config(recipe)
        assert cfg.backbone.zero_init_residual is True
        assert cfg.method.freeze_prototypes_epochs == 1
        assert cfg.method.crop_forward == "per_crop"
    model, _ = build_backbone("resnet18", zero_init_residual=True)
    assert all(float(block.bn2.weight.abs().max()) == 0.0 for block in model.layer1)


def test_cifar_recipes_use_the_padding_2_stem_of_their_sources():
    for recipe in ("mira_cifar10", "swav_cifar100", "dino_cifar10", "barlow_cifar100"):
        assert recipe_config(recipe).backbone.stem_padding == 2
    model, _ = build_backbone("resnet18", cifar=True, stem_padding=2)
    assert model.conv1.padding == (2, 2)
    assert model.conv1(torch.zeros(1, 3, 32, 32)).shape[-2:] == (34, 34)
    assert build_backbone("resnet18", cifar=True)[0].conv1.padding == (1, 1)  # the default
    with pytest.raises(ValueError, match=r"stem_padding must be one of \(1, 2\), got 3"):
        build_backbone("resnet18", cifar=True, stem_padding=3)


def test_cifar_crop_scale_follows_each_recipes_source():
    assert list(recipe_config("mira_cifar10").data.global_crops.scale) == [0.2, 1.0]  # official MIRA
    assert list(recipe_config("swav_cifar10").data.global_crops.scale) == [0.08, 1.0]  # solo-learn


def test_dino_cifar_teacher_momentum_and_head_follow_solo_learn():
    cfg = recipe_config("dino_cifar10")
    assert cfg.method.ema.base_momentum == 0.9995
    head = build_projector(512, cfg.method)
    kinds = [type(m) for m in head]
    assert nn.BatchNorm1d not in kinds and kinds.count(nn.GELU) == 2 and nn.ReLU not in kinds
    assert all(m.bias is not None for m in head if isinstance(m, nn.Linear))
    bn_head = build_projector(512, compose(["method=mira"]).method)
    assert nn.BatchNorm1d in [type(m) for m in bn_head]


def test_per_crop_forward_normalises_each_crop_with_its_own_statistics():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.BatchNorm1d(6))
    projector = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4))
    crops = [
        torch.randn(5, 3, 2, 2),
        torch.randn(5, 3, 2, 2) * 3 + 1,
        torch.randn(7, 3, 1, 1).repeat(1, 1, 2, 2),
    ]
    feats, z = embed_crops(backbone, projector, crops, "per_crop")
    alone = [projector(backbone(c)) for c in crops]
    torch.testing.assert_close(z, torch.cat(alone))
    _, grouped = embed_crops(backbone, projector, crops, "resolution")
    assert not torch.allclose(grouped, z, atol=1e-3)  # batch statistics shared across crops
    with pytest.raises(ValueError, match=r"method.crop_forward must be one of resolution, per_crop, got 'x'"):
        embed_crops(backbone, projector, crops, "x")


def test_prototype_head_computes_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    head = PrototypeHead(64, 300)
    x = torch.randn(32, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(x.to(torch.bfloat16).float())
        half_input = head(x.to(torch.bfloat16))
    assert logits.dtype == torch.float32 and half_input.dtype == torch.float32
    scaled = 0.225 * (1 - 2 / 3)  # MIRA's tau_t (1 - beta): the logits are divided by it
    rounded = (
        torch.nn.functional.normalize(x.to(torch.bfloat16).double(), dim=1) @ head.prototypes().double().T
    )
    assert float(((logits.double() - rounded) / scaled).abs().max()) < 1e-5


def test_labeler_input_is_float32_in_a_bf16_autocast_step(tmp_path):
    cfg = compose(
        [
            "method=mira",
            "data.global_crops.size=16",
            "method.num_prototypes=20",
            "method.projector_dims=[32,16]",
            f"run_dir={tmp_path}",
        ]
    )
    model = methods.build(cfg, num_classes=10, n_global=2)
    seen = []
    label_views = model.labeler.label_views
    model.labeler.label_views = lambda logits, **kw: (
        seen.extend(lg.dtype for lg in logits),
        label_views(logits, **kw),
    )[1]
    crops = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, feats, _ = model.ssl_step(crops)
    assert seen == [torch.float32, torch.float32] and feats.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_a_swapped_optimiser_keeps_its_own_defaults_and_says_so(caplog):
    sgd = compose(["method=byol", "optim=sgd", "recipe=null"]).optim
    cfg = compose(["method=mira", "data=imagenet", "data.root=/x", "optim=sgd", "optim.weight_decay=1e-4"])
    assert (
        cfg.optim.name == "sgd"
        and dict(cfg.optim.kwargs) == dict(sgd.kwargs)
        and cfg.optim.weight_decay == 1e-4
    )
    assert (cfg.optim.lr, cfg.optim.warmup_start_ratio) == (sgd.lr, sgd.warmup_start_ratio)
    assert (
        "recipe mira_imagenet: not applied, optim=sgd keeps its own defaults (the recipe is written for lars)"
        in caplog.text
    )
