"""The old import paths of moved core names still work for one release, and warn."""

from __future__ import annotations

import importlib
import sys

import pytest

import sslib.losses
import sslib.modules.ema


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        ("sslib.methods.losses", sslib.losses, ["swapped_prediction_loss", "cluster_prediction_loss"]),
        ("sslib.methods.ema", sslib.modules.ema, ["make_teacher", "ema_update"]),
    ],
)
def test_old_path_gives_the_same_objects_and_warns(old, new, names, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(
        DeprecationWarning, match=rf"^{old} moved to {new.__name__}; the old path is removed in 0.3$"
    ):
        module = importlib.import_module(old)
    assert all(getattr(module, n) is getattr(new, n) for n in names)
