"""Bad run values are one-line errors before any work starts; a timm name as the backbone group says how to write it."""

from __future__ import annotations

import pytest

from sslib.app import train
from sslib.app.cli import pretrain_main
from sslib.app.config import ConfigError, compose, options
from sslib.app.run_checks import check_run_config

BAD = [  # override -> what the one-line error says
    ("optim.lr=-1", "optim.lr must be a finite number > 0, got -1"),
    ("optim.lr=0", "optim.lr must be a finite number > 0, got 0"),
    ("online_eval.probe_lr=-0.1", "online_eval.probe_lr must be a finite number > 0, got -0.1"),
    ("optim.final_lr_ratio=-1", r"optim.final_lr_ratio must be a number in \[0, 1\]"),
    ("optim.weight_decay=-1", "optim.weight_decay must be >= 0, got -1"),
    ("optim.momentum=2", r"optim.momentum must be in \[0, 1\), got 2"),
    ("optim.warmup_epochs=-3", "optim.warmup_epochs must be a number >= 0, got -3"),
    (
        "optim.warmup_start_ratio=soon",
        "optim.warmup_start_ratio must be a number >= 0 or 'base', got 'soon'",
    ),
    ("optim.kwargs.eta=-1", "optim.kwargs.eta must be a finite number > 0, got -1"),
    ("+optim.kwargs.nesterov=true", "optim: optimizer 'lars' got unexpected argument.* nesterov; allowed: "),
]


@pytest.mark.parametrize(("override", "message"), BAD, ids=[o for o, _ in BAD])
def test_bad_optimiser_values_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ValueError, match=message) as err:
        check_run_config(compose([override]), world_size=1)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("method", options("method"))
@pytest.mark.parametrize("optim", options("optim"))
def test_shipped_configs_pass(method, optim):
    check_run_config(compose([f"method={method}", f"optim={optim}"]), world_size=2)


def test_bad_lr_stops_the_run_before_data_or_baseline(monkeypatch, tmp_path, capsys):
    def no_work(cfg):
        raise AssertionError("the data module was built before the config was checked")

    monkeypatch.setattr(train, "build_datamodule", no_work)
    status = pretrain_main(["optim.lr=-1", f"run_dir={tmp_path / 'run'}", "trainer.accelerator=cpu"])
    assert status == 2
    assert capsys.readouterr().err == "error: optim.lr must be a finite number > 0, got -1\n"
    assert not (tmp_path / "run").exists()


def test_timm_name_as_backbone_group_says_how_to_write_it():
    with pytest.raises(ConfigError) as err:
        compose(["backbone=vit_tiny_patch16_224"])
    hint = "backbone=timm backbone.model_name=vit_tiny_patch16_224"
    assert str(err.value).endswith(f"; a timm model is chosen with {hint}")
    assert compose(hint.split()).backbone.model_name == "vit_tiny_patch16_224"


def test_unknown_backbone_lists_the_choices_and_the_timm_form():
    with pytest.raises(ConfigError, match="available: resnet18, resnet50, timm, vit_base, vit_small, vit_tiny; a timm model is chosen with "
                       r"backbone=timm backbone.model_name=<timm model name>$"):  # fmt: skip
        compose(["backbone=resnet9000"])
