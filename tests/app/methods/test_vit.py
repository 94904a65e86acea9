"""Vision Transformers: multi-crop steps of the clustering methods, a real run exported into a plain timm
model, DINO's official checkpoint layout through the zoo, and the one-line errors of bad ViT settings."""

from __future__ import annotations

import copy
import hashlib
import math
import threading

import pytest
import timm
import torch
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed

from sslib import backbones
from sslib.app import methods, zoo
from sslib.app.builders import build_backbone
from sslib.app.checkpoint import load_backbone
from sslib.app.config import compose
from sslib.app.run_checks import check_run_config
from sslib.app.train import pretrain
from sslib.app.zoo.cli import export_main
from sslib.app.zoo.manifest import Entry
from sslib.metrics.features import extract_features
from tests.app.methods.test_methods import TINY, fit
from tests.app.zoo.test_zoo import Server, torch_bytes

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2}
VIT = ["backbone=vit_tiny", *(f"+backbone.{k}={v}" for k, v in SMALL_VIT.items())]
LOCAL = ["data.local_crops={n: 2, size: 8, scale: [0.1, 0.4]}"]


def vit_cfg(tmp_path, *overrides: str):
    return compose([*TINY, *VIT, *LOCAL, f"run_dir={tmp_path}", *overrides])


def plain_timm(**kwargs) -> torch.nn.Module:
    """timm's own vit_tiny_patch16_224 at the tiny size, built without sslib."""
    return timm.create_model(
        "vit_tiny_patch16_224", num_classes=0, dynamic_img_size=True, **SMALL_VIT, **kwargs
    )


def test_a_vit_takes_crops_of_several_sizes_with_the_class_token_as_features():
    model, dim = backbones.build("vit_tiny", patch_size="auto", img_size=16, **SMALL_VIT)
    assert dim == 32 and model.patch_embed.patch_size == (4, 4)  # auto: 4 px patches for small images
    assert model.pos_embed.shape == (1, 1 + 4 * 4, 32)  # learnt for 16 px, interpolated for 8 px
    model.eval()
    with torch.no_grad():
        x = torch.randn(3, 3, 16, 16)
        assert model(torch.randn(3, 3, 8, 8)).shape == (3, 32)
        torch.testing.assert_close(model(x), model.forward_features(x)[:, 0])  # class token after the norm
    avg, _ = backbones.build("vit_tiny", patch_size=4, img_size=16, global_pool="avg", **SMALL_VIT)
    assert avg.global_pool == "avg"
    assert backbones.build("vit_small")[0].patch_embed.patch_size == (16, 16)
    timm_vit, _ = backbones.build(
        "timm", model_name="vit_tiny_patch16_224", img_size=32, patch_size=8, **SMALL_VIT
    )
    assert timm_vit(torch.randn(1, 3, 16, 16)).shape == (1, 32)  # backbone=timm ViTs take several sizes too


@pytest.mark.parametrize("method", ["mira", "dino", "swav"])
def test_a_multicrop_step_trains_every_part_of_a_vit(tmp_path, method):
    rule = "dino" if method == "dino" else "timm"  # DINO's interpolation of the position embeddings for DINO
    overrides = ["backbone.drop_path_rate=0.2", "optim=adamw", f"backbone.pos_embed_interpolation={rule}"]
    cfg = vit_cfg(tmp_path, f"method={method}", *overrides)
    assert cfg.backbone.patch_size == "auto" and cfg.backbone.img_size == 16
    model, trainer, dm = fit(cfg, steps=1, limit_train_batches=1)
    crops = [
        torch.randn(4, 3, 16, 16),
        torch.randn(4, 3, 16, 16),
        torch.randn(4, 3, 8, 8),
        torch.randn(4, 3, 8, 8),
    ]
    loss, feats, _ = model.ssl_step(crops)
    loss.backward()
    assert torch.isfinite(loss) and feats.shape == (4, 32)
    for name in ("pos_embed", "cls_token", "patch_embed.proj.weight", "blocks.1.mlp.fc2.weight"):
        grad = model.backbone.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    if model.teacher is not None:  # the student drops residual branches, the EMA teacher does not
        assert type(model.teacher["backbone"]) is type(model.backbone)  # and interpolates by the same rule
        drops = [m.drop_prob for m in model.backbone.modules() if hasattr(m, "drop_prob")]
        teacher = [m.drop_prob for m in model.teacher["backbone"].modules() if hasattr(m, "drop_prob")]
        assert max(drops) == pytest.approx(0.2) and teacher == [0.0] * len(teacher)
    before = model.backbone.pos_embed.detach().clone()
    trainer.fit(model, datamodule=dm)  # two global 16 px + two local 8 px crops per sample, AdamW
    assert not torch.equal(before, model.backbone.pos_embed.detach())


def test_byols_target_network_takes_no_stochastic_depth(tmp_path):
    overrides = ["method=byol", "data.global_crops.size=16", *VIT, "backbone.drop_path_rate=0.2"]
    model = methods.build(compose([*overrides, f"run_dir={tmp_path}"]), num_classes=10, n_global=2)
    student = [m.drop_prob for m in model.backbone.modules() if hasattr(m, "drop_prob")]
    teacher = [m.drop_prob for m in model.teacher["backbone"].modules() if hasattr(m, "drop_prob")]
    assert max(student) == pytest.approx(0.2) and teacher == [0.0] * len(student)


def test_dino_training_clips_each_gradient_and_moves_the_weight_decay(tmp_path):
    overrides = [
        "optim=adamw",
        "optim.clip_grad=1.0e-3",
        "optim.final_weight_decay=0.4",
        "method.norm_last_layer=false",
    ]
    model, trainer, dm = fit(vit_cfg(tmp_path, "method=dino", *overrides), steps=2, limit_train_batches=2)
    trainer.fit(model, datamodule=dm)
    optimizer, scheduler = trainer.optimizers[0], trainer.lr_scheduler_configs[0].scheduler
    decayed = [g for g in optimizer.param_groups if g["weight_decay"] > 0]
    dino_cosine = 0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * 2 / scheduler.total_steps))
    assert len(decayed) == 1 and decayed[0]["weight_decay"] == pytest.approx(dino_cosine)
    assert model.prototypes.layer.parametrizations.weight.original0.requires_grad  # trained gains
    model.zero_grad()
    model.ssl_step([torch.randn(4, 3, 16, 16)] * 2 + [torch.randn(4, 3, 8, 8)] * 2)[0].backward()
    norms = lambda: [float(p.grad.norm()) for p in model.ssl_modules().parameters() if p.grad is not None]  # noqa: E731
    assert max(norms()) > 1.0e-3  # there is something to clip
    model.on_before_optimizer_step(optimizer)  # Lightning's hook after the backward clips every tensor alone
    assert max(norms()) <= 1.0e-3 * (1 + 1e-4) and min(norms()) > 0


def test_a_vit_run_exports_weights_that_a_plain_timm_model_loads(tmp_path, capsys):
    overrides = ["+trainer.limit_train_batches=1", "+trainer.limit_val_batches=2", "trainer.max_epochs=1"]
    run_dir = tmp_path / "run"
    results = pretrain(vit_cfg(run_dir, "method=dino", "optim=adamw", "optim.clip_grad=3.0", *overrides))
    assert 0 <= results["val/knn_top1"] <= 100 and 0 <= results["val/probe_top1"] <= 100  # online kNN, probe
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    out = tmp_path / "vit.safetensors"
    assert export_main([str(ckpt), "--out", str(out)]) == 0
    assert "backbone: vit_tiny" in capsys.readouterr().out
    plain = plain_timm(img_size=16, patch_size=4)
    plain.load_state_dict(load_file(out))
    trained, _ = load_backbone(ckpt)
    x = torch.randn(5, 3, 16, 16)
    features, _ = extract_features(
        trained, [(x, torch.zeros(5, dtype=torch.long))]
    )  # the offline tools' path
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), trained(x))
        torch.testing.assert_close(features, plain(x))
        assert not torch.allclose(plain_timm(img_size=16, patch_size=4).eval()(x), trained(x))


# --- DINO's official checkpoint layout --------------------------------------------------------------


def official_dino_vit(depth: int, dim: int, patches: int, patch: int) -> dict[str, torch.Tensor]:
    """Random weights under the keys and shapes of facebookresearch/dino's VisionTransformer
    (vision_transformer.py L134-159: patch_embed.proj, cls_token, pos_embed, blocks.i.{norm1, attn.qkv,
    attn.proj, norm2, mlp.fc1, mlp.fc2}, norm), written out here rather than read from timm."""
    shapes = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, patches + 1, dim),
        "patch_embed.proj.weight": (dim, 3, patch, patch),
        "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
    }
    for i in range(depth):
        for layer, (out, inp) in {
            "attn.qkv": (3 * dim, dim),
            "attn.proj": (dim, dim),
            "mlp.fc1": (4 * dim, dim),
            "mlp.fc2": (dim, 4 * dim),
        }.items():
            shapes[f"blocks.{i}.{layer}.weight"] = (out, inp)
            shapes[f"blocks.{i}.{layer}.bias"] = (out,)
        for norm in ("norm1", "norm2"):
            shapes[f"blocks.{i}.{norm}.weight"] = shapes[f"blocks.{i}.{norm}.bias"] = (dim,)
    torch.manual_seed(0)
    return {key: torch.randn(shape) * 0.1 for key, shape in shapes.items()}


@pytest.fixture
def server():
    srv = Server({})
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("full", [False, True])
def test_dino_official_vit_checkpoints_load_through_the_zoo(server, tmp_path, full):
    weights = official_dino_vit(depth=2, dim=32, patches=16, patch=4)
    head = {"head.mlp.0.weight": torch.randn(8, 32), "head.last_layer.weight_g": torch.ones(5, 1)}
    teacher = {f"backbone.{k}": v for k, v in weights.items()} | head
    payload = torch_bytes(
        {"teacher": teacher, "student": {f"module.{k}": v for k, v in teacher.items()}} if full else weights
    )
    server.files["dino_vit.pth"] = payload
    entry = Entry(
        name="tiny-dino-vit", method="dino", backbone="vit_tiny", dataset="imagenet", epochs=1, metrics={},
        metrics_source="", url=server.url("range", "dino_vit.pth"), sha256=hashlib.sha256(payload).hexdigest(),
        format="dino-official", backbone_kwargs={"patch_size": 4, "img_size": 16, **SMALL_VIT},
    )  # fmt: skip
    backbone = zoo.load(entry, cache_dir=tmp_path)
    assert torch.equal(backbone.pos_embed, weights["pos_embed"])
    assert torch.equal(backbone.blocks[1].attn.qkv.weight, weights["blocks.1.attn.qkv.weight"])
    plain = plain_timm(img_size=16, patch_size=4)
    plain.load_state_dict(weights)  # the official keys are timm's
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), plain.eval()(x))


def test_the_zoo_lists_dinos_vit_small_with_its_published_numbers():
    entry = zoo.get("dino-vit-small-p16-imagenet-800ep")
    assert (entry.backbone, entry.format, entry.backbone_kwargs) == (
        "vit_small",
        "dino-official",
        {"patch_size": 16, "img_size": 224},
    )
    assert entry.metrics == {"imagenet_linear_top1": 77.0, "imagenet_knn_top1": 74.5}
    assert entry.url.endswith("/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth")
    model, _ = backbones.build(entry.backbone, **entry.backbone_kwargs)
    official = official_dino_vit(depth=12, dim=384, patches=14 * 14, patch=16)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in official.items()
    }


# --- recipes and bad input ------------------------------------------------------------------------


def test_vit_recipes_choose_vit_small_adamw_and_dinos_optimisation():
    for recipe, epochs, local in (("dino_imagenet", 100, 10), ("dino_imagenet_300ep", 300, 10),
                                  ("mira_imagenet_vit_small", 100, 6)):  # fmt: skip
        method = recipe.split("_")[0]
        extra = [] if recipe == f"{method}_imagenet" else [f"recipe={recipe}"]
        cfg = compose([f"method={method}", "data=imagenet", "data.root=/x", *extra])
        assert (cfg.backbone.name, cfg.backbone.patch_size, cfg.backbone.drop_path_rate) == (
            "vit_small",
            16,
            0.1,
        )
        assert (cfg.optim.name, cfg.optim.clip_grad, cfg.optim.final_weight_decay) == ("adamw", 3.0, 0.4)
        assert cfg.data.batch_size * cfg.trainer.devices * cfg.trainer.num_nodes == 1024
        assert (cfg.trainer.max_epochs, cfg.data.local_crops.n) == (epochs, local)
        check_run_config(cfg, world_size=16)
    assert compose(["method=dino", "data=imagenet", "data.root=/x"]).method.num_prototypes == 65536


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.global_crops.size=18"],
            r"^data.global_crops.size=18 is not a multiple of the ViT patch size 4 ",
        ),
        (
            ["data.local_crops.size=10"],
            r"^data.local_crops.size=10 is not a multiple of the ViT patch size 4 ",
        ),
        (["+backbone.cifar=true"], r"^backbone vit_tiny has no CIFAR stem .*backbone.patch_size=4"),
        (["optim=adamw", "+optim.momentum=0.9"], r"^optim: optimizer 'adamw' does not take momentum"),
        (
            ["optim=adamw", "+optim.kwargs.eta=0.02"],
            r"^optim: optimizer 'adamw' got unexpected argument\(s\) eta",
        ),
        (
            ["optim=adamw", "optim.final_weight_decay=-1"],
            r"^optim.final_weight_decay must be a finite number >= 0",
        ),
        (["optim=adamw", "optim.clip_grad=-3"], r"^optim.clip_grad must be a finite number >= 0, got -3"),
    ],
)
def test_bad_vit_and_optimiser_settings_are_one_line_errors_before_any_work(tmp_path, overrides, message):
    cfg = vit_cfg(tmp_path, *overrides)
    with pytest.raises(ValueError, match=message) as err:
        check_run_config(cfg, world_size=1)
    assert "\n" not in str(err.value)
    if overrides[0].startswith("data."):
        build_backbone(vit_cfg(tmp_path))  # the same ViT with good crops builds


def test_the_command_line_stops_a_bad_vit_run_in_one_line_before_any_data(monkeypatch, tmp_path, capsys):
    from sslib.app import train
    from sslib.app.cli import pretrain_main

    def no_work(cfg):
        raise AssertionError("the data module was built before the config was checked")

    monkeypatch.setattr(train, "build_datamodule", no_work)
    args = [
        "backbone=vit_small",
        "data.global_crops.size=18",
        f"run_dir={tmp_path / 'run'}",
        "trainer.accelerator=cpu",
    ]
    assert pretrain_main(args) == 2
    assert capsys.readouterr().err == (
        "error: data.global_crops.size=18 is not a multiple of the ViT patch size 4 (backbone.patch_size); "
        "use a multiple of 4, e.g. 16 or 20\n"
    )


# --- position embeddings at other sizes: timm's resampling or DINO's interpolate_pos_encoding ----------


def dino_interpolate_pos_encoding(pos_embed: torch.Tensor, w: int, h: int, patch: int) -> torch.Tensor:
    """facebookresearch/dino@7c446df vision_transformer.py L174-194, written out for one (1, 1 + N, D)
    table and a w x h image (DINO's ``B, nc, w, h = x.shape``, L197: w is the height)."""
    npatch, n = (w // patch) * (h // patch), pos_embed.shape[1] - 1
    if npatch == n and w == h:  # L177-178
        return pos_embed
    side, dim = math.sqrt(n), pos_embed.shape[-1]
    w0, h0 = w // patch + 0.1, h // patch + 0.1  # L182-186
    patches = torch.nn.functional.interpolate(  # L187-191
        pos_embed[:, 1:].reshape(1, int(side), int(side), dim).permute(0, 3, 1, 2),
        scale_factor=(w0 / side, h0 / side),
        mode="bicubic",
    )
    assert (int(w0), int(h0)) == patches.shape[-2:]  # L192
    return torch.cat((pos_embed[:, :1], patches.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)  # L193-194


def vit_224(**kwargs) -> torch.nn.Module:
    """A tiny ViT with patch 16 learnt for 224 px (a 14 x 14 grid), random position embeddings, float64."""
    torch.manual_seed(0)
    model, _ = backbones.build("vit_tiny", patch_size=16, img_size=224, **SMALL_VIT, **kwargs)
    with torch.no_grad():
        model.pos_embed.normal_()
    return model.double().eval()


def tokens_after_position_embedding(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The (B, 1 + patches, D) tokens entering ``model``'s first block, and runs the model on ``image``."""
    tokens = {}
    hook = model.blocks[0].register_forward_pre_hook(lambda _m, args: tokens.update(x=args[0]))
    model(image)
    hook.remove()
    return tokens["x"]


@pytest.mark.parametrize("size", [(96, 96), (224, 224), (96, 128)])
def test_dino_pos_embed_interpolation_is_dinos_interpolate_pos_encoding(size):
    model = vit_224(pos_embed_interpolation="dino")
    image = torch.randn(2, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        patches = model.patch_embed(image).flatten(1, 2)  # (B, h * w, D)
        cls = model.cls_token.expand(2, -1, -1)
        table = dino_interpolate_pos_encoding(model.pos_embed, *size, patch=16)
        expected = torch.cat((cls, patches), dim=1) + table
        tokens = tokens_after_position_embedding(model, image)
        torch.testing.assert_close(tokens, expected, rtol=0, atol=1e-12)
        features = model.norm(model.blocks(expected))[:, 0]  # DINO's forward, L209-214
        torch.testing.assert_close(model(image), features, rtol=0, atol=1e-12)
    assert (table is model.pos_embed) == (size == (224, 224))  # the learnt size: as it is (L177-178)
    model(image).sum().backward()
    assert model.pos_embed.grad is not None and model.pos_embed.grad.abs().sum() > 0


def test_timm_pos_embed_interpolation_keeps_timms_resampling_and_differs_from_dinos():
    models = {rule: vit_224(pos_embed_interpolation=rule) for rule in ("timm", "dino")}
    default = vit_224()
    assert type(default) is type(models["timm"]) is timm.models.VisionTransformer
    for size, least_gap in ((224, 0.0), (96, 0.5)):
        image = torch.randn(1, 3, size, size, dtype=torch.float64)
        with torch.no_grad():
            unembedded = torch.cat((default.cls_token, default.patch_embed(image).flatten(1, 2)), dim=1)
            table = resample_abs_pos_embed(default.pos_embed, new_size=[size // 16] * 2, old_size=[14, 14])
            tokens = {rule: tokens_after_position_embedding(m, image) for rule, m in models.items()}
            torch.testing.assert_close(tokens_after_position_embedding(default, image), unembedded + table)
        assert torch.equal(tokens["timm"], tokens_after_position_embedding(default, image))
        timm_table, dino_table = tokens["timm"] - unembedded, tokens["dino"] - unembedded
        gap = float((dino_table - timm_table).norm() / dino_table.norm())
        # 224 px: both keep the learnt table; 96 px: timm anti-aliases to the 6 x 6 grid, DINO samples the
        # 14 x 14 table every 14 / 6.1 cells without (about 0.8 apart on a random table)
        assert gap > least_gap if least_gap else gap == 0.0, gap


def test_a_bad_pos_embed_interpolation_is_a_one_line_error_and_the_vit_configs_take_timms():
    for value in ("bilinear", "DINO", None):
        with pytest.raises(ValueError) as err:
            backbones.build("vit_tiny", pos_embed_interpolation=value, **SMALL_VIT)
        assert str(err.value) == f"backbone.pos_embed_interpolation must be one of timm, dino, got {value!r}"
    with pytest.raises(ValueError) as err:  # before any work, with the run's other checks
        check_run_config(compose([*TINY, *VIT, "backbone.pos_embed_interpolation=bilinear"]), world_size=1)
    assert str(err.value) == "backbone.pos_embed_interpolation must be one of timm, dino, got 'bilinear'"
    for name in ("vit_tiny", "vit_small", "vit_base"):
        assert compose([f"backbone={name}"]).backbone.pos_embed_interpolation == "timm"
    dino, _ = build_backbone(compose([*TINY, *VIT, "backbone.pos_embed_interpolation=dino"]))
    assert type(dino).__name__ == "DinoPosEmbedViT"


def test_dino_pos_embed_interpolation_keeps_timms_state_dict():
    timm_rule, dino = vit_224(), vit_224(pos_embed_interpolation="dino")
    assert isinstance(dino, timm.models.VisionTransformer) and type(dino) is not type(timm_rule)
    assert list(dino.state_dict()) == list(timm_rule.state_dict())
    assert not list(dino.buffers()) and len(list(dino.parameters())) == len(list(timm_rule.parameters()))
    plain = plain_timm(img_size=224, patch_size=16).double().eval()
    plain.load_state_dict(dino.state_dict())  # strict
    image = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(plain(image), dino(image), rtol=0, atol=1e-12)  # the learnt size
    teacher = copy.deepcopy(dino)  # an EMA teacher keeps the rule
    assert type(teacher) is type(dino) and teacher.state_dict().keys() == dino.state_dict().keys()
