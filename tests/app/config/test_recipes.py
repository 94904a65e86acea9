"""Recipes against their sources: the source records, and each value the review of the recipes fixed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from sslib.app import methods
from sslib.app.builders import build_projector
from sslib.app.config import ConfigError, compose, options
from sslib.app.config import _unknown_recipe_key as unknown_recipe_key
from sslib.app.recipes import check, load, load_all, render
from sslib.app.recipes.cli import BEGIN, END
from sslib.app.recipes.record import flat_config, recipe_config, required_keys
from sslib.backbones import build as build_backbone
from sslib.heads import PrototypeHead
from sslib.modules.crops import embed_crops
from sslib.optim import resolve_warmup_start_ratio
from tests.helpers import ROOT

SHARED = {"digits", "cifar", "imagenet100"}  # budgets that recipes build on, not recipes of their own


# --- the records -------------------------------------------------------------------------------


def test_every_shipped_recipe_has_exactly_one_record():
    recorded = [r for record in load_all() for r in record.recipes]
    assert sorted(recorded) == sorted(set(recorded))
    assert sorted(recorded) == sorted(r for r in options("recipe") if r not in SHARED)


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


def test_unknown_recipe_key_is_found_below_known_sections():
    bare = OmegaConf.create({"method": {"lambd": 1, "queue": {"length": 0}}, "data": {"local_crops": None}})
    ok = OmegaConf.create({"method": {"lambd": 2, "queue": {"length": 3}}, "data": {"local_crops": {"n": 6}}})
    assert unknown_recipe_key(ok, bare) is None
    typo = OmegaConf.create({"method": {"lambdd": 2}})
    assert unknown_recipe_key(typo, bare) == "method.lambdd"
    nested = OmegaConf.create({"method": {"queue": {"lenght": 3}}})
    assert unknown_recipe_key(nested, bare) == "method.queue.lenght"


def test_a_recipe_file_with_an_unknown_key_fails_at_compose_time():
    folder = Path(__import__("sslib.app.conf", fromlist=["x"]).__file__).parent / "recipe"
    path = folder / "barlow_zz.yaml"
    assert not path.exists()
    path.write_text("# @package _global_\nmethod:\n  lambdd: 0.1\n")
    try:
        with pytest.raises(
            ConfigError,
            match=r"^recipe barlow_zz sets 'method.lambdd', which the composed config does not have$",
        ):
            compose(["method=barlow", "recipe=barlow_zz"])
    finally:
        path.unlink()


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


def test_a_swapped_optimiser_drops_the_recipes_settings_of_the_other_one():
    cfg = compose(["method=mira", "data=imagenet", "data.root=/x", "optim=sgd", "optim.weight_decay=1e-4"])
    assert cfg.optim.name == "sgd" and dict(cfg.optim.kwargs) == {} and cfg.optim.weight_decay == 1e-4
    assert cfg.optim.lr == 0.3 and cfg.optim.warmup_start_ratio == "base"  # settings SGD has are kept
