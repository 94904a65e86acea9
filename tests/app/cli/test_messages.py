"""A bad config value is reported under the full key the user typed (``labeler.temperature``, not
``temperature``), whichever part of the core checks it."""

from __future__ import annotations

import pytest

from sslib.app.cli import pretrain_main

SMALL = ["trainer.accelerator=cpu", "trainer.max_epochs=1", "baseline_eval=false"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.batch_size=abc"], "data.batch_size must be an integer >= 2"),
        (["method.projector_dims=[]"], "method.projector_dims must be a non-empty list of integers >= 1"),
        (["method.projector_dims=[64,0]"], "method.projector_dims must be a non-empty list of integers >= 1"),
        (["method=byol", "method.predictor_dims=[]"], "method.predictor_dims must be a non-empty list"),
        (["method.projector_norm=layer"], "method.projector_norm must be one of batchnorm, none"),
        (["method.projector_init=xavier"], "method.projector_init must be one of default, trunc_normal"),
        (["method.num_prototypes=0"], "method.num_prototypes must be an integer >= 1"),
        (["labeler.temperature=-1"], "labeler.temperature must be a finite number > 0"),
        (["labeler.n_iters=0"], "labeler.n_iters must be an integer >= 1"),
        (["labeler.beta=1.5"], "labeler.beta must be in [0, 1)"),
        (["labeler=sinkhorn", "labeler.epsilon=0"], "labeler.epsilon must be a finite number > 0"),
        (["method=dino", "labeler.center_momentum=2"], "labeler.center_momentum must be in [0, 1]"),
        (["labeler.schedule.beta.start=abc"], "labeler.schedule.beta.start must be a finite number"),
        (["labeler.schedule.beta.kind=x"], "labeler.schedule.beta.kind must be one of cosine, linear"),
        (["labeler.schedule.beta.end=1.5"], "labeler.schedule.beta.end must be in [0, 1)"),
        (["data.global_crops.size=0"], "data.global_crops.size must be an integer >= 1"),
        (["data.global_crops.scale=[0.5,0.1]"], "data.global_crops.scale must be (lo, hi)"),
        (["data.local_crops={n:2,size:0}"], "data.local_crops.size must be an integer >= 1"),
        (["data.num_workers=-1"], "data.num_workers must be an integer >= 0"),
        (["data.val_fraction=2"], "data.val_fraction must be in (0, 1)"),
        (["data.augment.hue=0.9"], "data.augment.hue must be in [0, 0.5]"),
        (["data.augment.blur_p=[2]"], "data.augment.blur_p[0] must be in [0, 1]"),
        (["data.global_crops.n=3", "data.augment.blur_p=[0.5,0.5]"], "data.augment.blur_p has 2 values"),
        (["data.augment=nope"], "data.augment must be a mapping of augmentation settings"),
        (["online_eval.bank_fraction=2"], "online_eval.bank_fraction must be a number in (0, 1]"),
        (["optim.warmup_epochs=-1"], "optim.warmup_epochs must be a number >= 0"),
        (["optim.clip_grad=-1"], "optim.clip_grad must be a finite number >= 0"),
        (["optim.weight_decay=-1"], "optim.weight_decay must be >= 0"),
        (["optim.momentum=2"], "optim.momentum must be in [0, 1)"),
        (["optim.kwargs.eta=-1"], "optim.kwargs.eta must be a finite number > 0"),
        (["optim.warmup_start_ratio=-1"], "optim.warmup_start_ratio must be a number >= 0 or 'base'"),
        (["backbone.stem_padding=9"], "backbone.stem_padding must be one of (1, 2)"),
        (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps must be an integer >= 1"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_full_key(tmp_path, capsys, overrides, message):
    code = pretrain_main([*overrides, *SMALL, f"run_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.count("\n") == 0 and err.startswith(f"error: {message}"), err
