"""``trainer.sync_batchnorm``'s plug-in: BatchNorm layers made synchronised for training, then given back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sslib.app.callbacks import SyncBatchNormPlugin
from sslib.distributed import AllReduceBatchNorm


@pytest.mark.parametrize("cpu", [True, False], ids=["cpu-processes", "gpu-processes"])
def test_revert_gives_each_layer_back_its_class_parameters_and_statistics(cpu):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.Sequential(nn.BatchNorm1d(4)))
    net(torch.randn(8, 3, 1, 1))  # running statistics away from their start
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    plugin = SyncBatchNormPlugin(cpu=cpu)
    synced = plugin.apply(net)
    assert all(
        type(m) is (AllReduceBatchNorm if cpu else nn.SyncBatchNorm) for m in (synced[1], synced[3][0])
    )
    reverted = plugin.revert(synced)
    assert type(reverted[1]) is nn.BatchNorm2d and type(reverted[3][0]) is nn.BatchNorm1d
    state = reverted.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], v) for k, v in expected.items())
    assert reverted[1].training and reverted.eval()(torch.randn(2, 3, 1, 1)).shape == (2, 4)
