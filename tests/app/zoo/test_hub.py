"""hubconf.py through torch.hub (source="local"): the entries, bare architectures, verified weights."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn
from torchvision import models

from sslib import backbones
from sslib.app import zoo
from sslib.app.zoo import cache as zoo_cache
from sslib.app.zoo.manifest import Entry
from tests.helpers import ROOT


def hub_load(repo: Path, name: str, **kwargs) -> nn.Module:
    return torch.hub.load(str(repo), name, source="local", **kwargs)


def import_hubconf(repo: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("hubconf_under_test", repo / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hub_entries(repo: Path) -> list[str]:
    """What ``torch.hub.list`` reports for ``repo``: the public callables of its hubconf."""
    module = import_hubconf(repo)
    return sorted(n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_"))


def test_one_entry_per_zoo_model():
    assert hub_entries(ROOT) == sorted(e.name.replace("-", "_") for e in zoo.entries())


@pytest.mark.parametrize("entry", zoo.entries(), ids=lambda e: e.name)
def test_pretrained_false_is_the_bare_architecture(entry: Entry, tmp_path):
    model = hub_load(ROOT, entry.name.replace("-", "_"), pretrained=False, cache_dir=tmp_path)
    expected, _ = backbones.build(entry.backbone, **entry.backbone_kwargs)
    assert type(model) is type(expected)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in expected.state_dict().items()
    }
    assert list(tmp_path.iterdir()) == []  # nothing downloaded


def test_unverified_model_is_refused_before_any_download(tmp_path):
    entry = next(e for e in zoo.entries() if not e.verified)
    with pytest.raises(ValueError, match="has no pinned sha256.*allow_unverified=True"):
        hub_load(ROOT, entry.name.replace("-", "_"), cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1, and its base URL; the server stops at the end."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


def hub_repo(tmp_path: Path, entry: Entry) -> Path:
    """A checkout holding this hubconf.py and a manifest with the single model ``entry``."""
    repo = tmp_path / "repo"
    (repo / "sslib" / "app" / "zoo").mkdir(parents=True)
    shutil.copy(ROOT / "hubconf.py", repo / "hubconf.py")
    (repo / "sslib" / "app" / "zoo" / "manifest.yaml").write_text("models:\n" + entry.to_yaml())
    return repo


def tiny_entry(url: str, sha256: str) -> Entry:
    return Entry(name="tiny-resnet18", method="mira", backbone="resnet18", dataset="digits", epochs=1,
                 metrics={"knn_top1": 90.0}, metrics_source="this test", url=url, sha256=sha256,
                 format="torchvision")  # fmt: skip


def test_pretrained_true_downloads_verifies_and_then_uses_the_cache(served, tmp_path):
    folder, base, server = served
    torch.manual_seed(0)
    published = models.resnet18().state_dict()
    torch.save(published, folder / "resnet18.pth")
    sha = hashlib.sha256((folder / "resnet18.pth").read_bytes()).hexdigest()
    repo = hub_repo(tmp_path, tiny_entry(f"{base}/resnet18.pth", sha))
    cache = tmp_path / "cache"

    model = hub_load(repo, "tiny_resnet18", cache_dir=cache)
    assert not model.training
    loaded = model.state_dict()
    assert set(loaded) == {k for k in published if not k.startswith("fc.")}
    assert all(torch.equal(loaded[k], published[k]) for k in loaded)
    assert [p.name for p in cache.iterdir()] == ["tiny-resnet18.pth"]

    server.shutdown()  # offline: the verified cached file is enough
    again = hub_load(repo, "tiny_resnet18", cache_dir=cache)
    assert all(torch.equal(v, loaded[k]) for k, v in again.state_dict().items())


def test_pretrained_true_refuses_a_file_with_another_sha256(served, tmp_path, monkeypatch):
    monkeypatch.setattr(zoo_cache, "ATTEMPTS", 1)  # no retries of the same file
    folder, base, _ = served
    torch.save(models.resnet18().state_dict(), folder / "resnet18.pth")
    repo = hub_repo(tmp_path, tiny_entry(f"{base}/resnet18.pth", "0" * 64))
    with pytest.raises(zoo.DownloadError, match="sha256 mismatch"):
        hub_load(repo, "tiny_resnet18", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "tiny-resnet18.pth").exists()


def test_entry_docstring_names_the_weights_and_their_source(tmp_path):
    repo = hub_repo(tmp_path, tiny_entry("http://127.0.0.1:9/resnet18.pth", "0" * 64))
    doc = import_hubconf(repo).tiny_resnet18.__doc__
    assert "knn_top1 90.0" in doc and "this test" in doc and "SHA-256 pinned" in doc
