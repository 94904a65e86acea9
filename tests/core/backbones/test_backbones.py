"""Backbone registry: ResNets (ImageNet / CIFAR stem) and timm models."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from sslib import backbones


def _last_map_size(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """Spatial size of ``layer4``'s output for input ``x``."""
    sizes = []
    handle = model.layer4.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[-2:])))
    with torch.no_grad():
        model(x)
    handle.remove()
    return sizes[0]


def test_available_lists_registered_backbones():
    assert {"resnet18", "resnet50", "timm"} <= set(backbones.available())


@pytest.mark.parametrize(("name", "dim"), [("resnet18", 512), ("resnet50", 2048)])
@pytest.mark.parametrize("cifar", [False, True])
def test_resnet_output_shape_and_feat_dim(name, dim, cifar):
    model, feat_dim = backbones.build(name, cifar=cifar)
    assert feat_dim == dim
    assert isinstance(model, torchvision.models.ResNet)
    assert isinstance(model.fc, nn.Identity)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, dim)
    assert _last_map_size(model, torch.randn(1, 3, 32, 32)) == ((4, 4) if cifar else (1, 1))


def test_cifar_stem():
    model, _ = backbones.build("resnet18", cifar=True)
    assert model.conv1.kernel_size == (3, 3)
    assert model.conv1.stride == (1, 1)
    assert model.conv1.padding == (1, 1)
    assert model.conv1.bias is None
    assert isinstance(model.maxpool, nn.Identity)
    imagenet, _ = backbones.build("resnet18")
    assert imagenet.conv1.kernel_size == (7, 7)
    assert isinstance(imagenet.maxpool, nn.MaxPool2d)


@pytest.mark.parametrize(
    ("name", "block", "last_bn"), [("resnet18", BasicBlock, "bn2"), ("resnet50", Bottleneck, "bn3")]
)
def test_zero_init_residual(name, block, last_bn):
    for zero in (False, True):
        model, _ = backbones.build(name, zero_init_residual=zero)
        blocks = [m for m in model.modules() if isinstance(m, block)]
        assert blocks
        gammas_zero = [bool((getattr(b, last_bn).weight == 0).all()) for b in blocks]
        assert all(gammas_zero) if zero else not any(gammas_zero)


def test_state_dict_loads_into_plain_torchvision_resnet():
    model, _ = backbones.build("resnet18", cifar=False)
    result = torchvision.models.resnet18().load_state_dict(model.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]


def test_cifar_state_dict_loads_into_torchvision_resnet_with_cifar_stem():
    model, _ = backbones.build("resnet18", cifar=True)
    target = torchvision.models.resnet18()
    backbones.resnet.use_cifar_stem(target)
    result = target.load_state_dict(model.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert torch.equal(target.conv1.weight, model.conv1.weight)


def test_timm_feat_dim_is_discovered():
    model, feat_dim = backbones.build("timm", model_name="vit_tiny_patch16_224", img_size=32)
    assert feat_dim == model.num_features == 192
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 192)


def test_unregistered_timm_name_builds_timm_model():
    model, feat_dim = backbones.build("resnet10t")
    assert feat_dim == model.num_features
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, feat_dim)


def test_unknown_name_is_value_error():
    with pytest.raises(ValueError, match="no_such_net") as info:
        backbones.build("no_such_net")
    message = str(info.value)
    assert "\n" not in message
    assert "resnet18" in message and "timm" in message


def test_unknown_timm_model_name_is_value_error():
    with pytest.raises(ValueError, match="no_such_net"):
        backbones.build("timm", model_name="no_such_net")


def test_bad_resnet_kwarg_is_value_error():
    with pytest.raises(ValueError, match="resnet18.*bogus"):
        backbones.build("resnet18", bogus=1)


def test_bad_timm_kwarg_is_value_error():
    with pytest.raises(ValueError, match="resnet10t.*bogus"):
        backbones.build("resnet10t", bogus=1)


@pytest.mark.parametrize("name", ["timm", "resnet10t"])
def test_cifar_kwarg_on_timm_model_is_value_error(name):
    kwargs = {"model_name": "resnet10t"} if name == "timm" else {}
    with pytest.raises(ValueError, match="cifar"):
        backbones.build(name, cifar=True, **kwargs)
