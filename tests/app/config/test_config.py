"""Config composition: recipes, labeler swaps and their overrides, required values, run identity."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from sslib.app.config import ConfigError, compose, options, recipe_options
from sslib.app.train import check_same_run, config_changes


def test_every_group_has_options_and_every_recipe_composes():
    for group in ("method", "labeler", "backbone", "data", "optim", "trainer", "logger", "recipe"):
        assert options(group), group
    for recipe in recipe_options():
        if "_" not in recipe:  # the digits budget, for any method
            assert compose([f"recipe={recipe}"]).data.name == "digits"
            continue
        method, data = recipe.split("_", 1)
        variant_of = next(
            (d for d in options("data") if data.startswith(f"{d}_")), None
        )  # dino_imagenet_300ep
        chosen = [f"recipe={recipe}"] if variant_of else []
        data = variant_of or data
        cfg = compose([f"method={method}", f"data={data}", "data.root=/x", *chosen])
        assert cfg.method.name == method and cfg.data.name == data


def test_recipe_is_chosen_by_method_and_data_and_can_be_dropped():
    assert compose(["method=mira", "data=cifar100"]).trainer.max_epochs == 1000
    assert compose(["method=mira", "data=cifar100", "recipe=null"]).trainer.max_epochs == 100


def test_labeler_overrides_apply_to_the_methods_own_labeler():
    cfg = compose(["labeler.beta=0.5", "labeler.schedule=null"])
    assert cfg.labeler.name == "mira" and cfg.labeler.beta == 0.5 and cfg.labeler.schedule is None
    assert compose(["method=swav", "labeler=null"]).labeler.name == "sinkhorn"
    with pytest.raises(ConfigError, match="labeler.nokey"):
        compose(["labeler.nokey=1"])


def test_required_values_are_named():
    with pytest.raises(ConfigError, match=r"^data.root is required: set data.root=...$"):
        compose(["data=imagenet"])


def test_resume_auto_refuses_a_different_experiment(tmp_path):
    cfg = compose([f"run_dir={tmp_path}"])
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    check_same_run(
        compose([f"run_dir={tmp_path}", "data.num_workers=0", "resume=auto"]), tmp_path
    )  # runtime only
    assert config_changes(cfg, compose([f"run_dir={tmp_path}", "optim.lr=0.1"])) == ["optim.lr"]
    with pytest.raises(ValueError, match=r"holds a run with a different config \(optim.lr\)"):
        check_same_run(compose([f"run_dir={tmp_path}", "optim.lr=0.1"]), tmp_path)
