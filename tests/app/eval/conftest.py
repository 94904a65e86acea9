"""Fixtures of the evaluation tools' tests: a counting feature extractor, a stand-in for umap-learn, and a
guard that fails a test once a tool reads data or weights."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure

from sslib.app.eval import cli, embedding, offline
from sslib.app.eval.offline import FeatureCache


@pytest.fixture
def count_extractions(monkeypatch) -> list[int]:
    """The backbone passes of the feature cache: one entry per extracted split, its image side."""
    calls: list[int] = []
    extract = offline.extract_features

    def counting(backbone, loader, device=None):
        calls.append(next(iter(loader))[0].shape[-1])
        return extract(backbone, loader, device)

    monkeypatch.setattr(offline, "extract_features", counting)
    return calls


class FakeUMAP:
    """Stands in for ``umap.UMAP`` when umap-learn is absent: the first two feature columns."""

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs

    def fit_transform(self, features: np.ndarray) -> np.ndarray:
        return features[:, :2]


@pytest.fixture
def fake_umap(monkeypatch) -> None:
    """``import umap`` finds :class:`FakeUMAP`, whether umap-learn is installed or not."""
    monkeypatch.setitem(sys.modules, "umap", SimpleNamespace(UMAP=FakeUMAP))


@pytest.fixture
def figures(fake_umap, monkeypatch) -> list[Figure]:
    """The figures the UMAP tool draws (with :class:`FakeUMAP`), collected."""
    drawn: list[Figure] = []
    draw = embedding.embedding_figure

    def collect(*args, **kwargs) -> Figure:
        drawn.append(draw(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(embedding, "embedding_figure", collect)
    return drawn


@pytest.fixture
def no_work(fake_umap, monkeypatch) -> None:
    """Any feature, dataset or backbone read fails the test: arguments must be refused before them."""

    def refuse(*args, **kwargs):
        raise AssertionError("the tool read data or weights before checking its arguments")

    for name in ("features", "build", "class_names"):
        monkeypatch.setattr(FeatureCache, name, refuse)
    monkeypatch.setattr(FeatureCache, "backbone", property(refuse))
    monkeypatch.setattr(cli, "load_any_backbone", refuse)
