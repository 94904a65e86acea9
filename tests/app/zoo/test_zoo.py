"""Model zoo: verified downloads from a local HTTP server, converters, safe loading, CLI (export: test_export.py)."""

from __future__ import annotations

import hashlib
import io
import re
import runpy
import socket
import sys
import threading
import warnings
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torchvision import models

from sslib import backbones
from sslib.app import zoo
from sslib.app.zoo import cache as cache_module
from sslib.app.zoo.cli import zoo_main
from sslib.app.zoo.convert import convert
from sslib.app.zoo.manifest import Entry, load_manifest
from sslib.app.zoo.weights import load_into, read_weights
from tests.helpers import ROOT

BLOB = bytes(range(256)) * 1200  # 300 KiB of payload for the transport tests
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()


# --- a local server whose misbehaviour the tests choose --------------------------------------------------


class Server(ThreadingHTTPServer):
    """Serves ``files`` at ``/<mode>/<name>``; records the path and the status of every request."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files = files
        self.requests: list[str] = []
        self.statuses: list[int] = []

    def url(self, mode: str, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{mode}/{name}"


class Handler(BaseHTTPRequestHandler):
    """Modes: ``plain``, ``corrupt`` (flipped bytes), ``truncated`` (announces the full length, sends half,
    closes), ``flaky`` (truncated once, then ``plain``)."""

    server: Server

    def do_GET(self) -> None:
        mode, _, name = self.path.strip("/").partition("/")
        body = self.server.files.get(name)
        if body is None:
            self.send_error(404)
            return
        self.server.requests.append(self.path)
        first = self.server.requests.count(self.path) == 1
        if mode == "corrupt":
            body = bytes(b ^ 0xFF for b in body[:16]) + body[16:]
        if mode == "truncated" or (mode == "flaky" and first):
            self._send(200, body[: len(body) // 2], {"Content-Length": str(len(body))})
        else:
            self._send(200, body, {"Content-Length": str(len(body))})

    def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.server.statuses.append(status)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)  # HTTP/1.0: the connection closes after this, early or not

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    srv = Server({"blob.bin": BLOB})
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def one_attempt(monkeypatch):
    """One attempt per download (pooch waits 1 s before a retry); the retry tests ask for two."""
    monkeypatch.setattr(cache_module, "ATTEMPTS", 1)


def make_entry(url: str, sha256: str | None, fmt: str = "torchvision", **kwargs) -> Entry:
    fields = dict(name="tiny", method="mira", backbone="resnet18", dataset="digits", epochs=1, metrics={},
                  metrics_source="", url=url, sha256=sha256, format=fmt)  # fmt: skip
    return Entry(**{**fields, **kwargs})


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# --- manifest and lookup --------------------------------------------------------------------------------


OFFICIAL = {  # name -> (method, format, reported ImageNet linear top-1)
    "mira-resnet50-imagenet-400ep-multicrop": ("mira", "mira-official", 75.6),
    "mira-resnet50-imagenet-800ep": ("mira", "mira-official", 74.1),
    "swav-resnet50-imagenet-800ep": ("swav", "swav-official", 75.3),
    "dino-resnet50-imagenet": ("dino", "dino-official", 75.3),
}


def test_manifest_lists_the_official_resnet50_checkpoints():
    entries = {e.name: e for e in zoo.entries()}
    assert zoo.names() == list(entries) and set(OFFICIAL) <= set(entries)
    for name, (method, fmt, top1) in OFFICIAL.items():
        entry = entries[name]
        assert (entry.method, entry.format, entry.metrics["imagenet_linear_top1"]) == (method, fmt, top1)
        assert entry.backbone == "resnet50" and entry.metrics_source and entry.url.startswith("https://")
    assert entries["swav-resnet50-imagenet-800ep"].filename == "swav-resnet50-imagenet-800ep.pth.tar"


def test_unknown_name_is_one_line_listing_the_names():
    with pytest.raises(ValueError, match="unknown zoo model 'byol'; available: mira-resnet50") as err:
        zoo.get("byol")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "pickle"}, "unknown format 'pickle'; allowed: sslib, torchvision"),
        ({"sha256": "abc"}, "sha256 must be 64 lower-case hex digits or null, got 'abc'"),
        ({"top1": 70}, "unknown field(s) top1"),
        ({"epochs": "many"}, "epochs must be a non-negative integer, got 'many'"),
    ],
)
def test_bad_manifest_entries_are_one_line_errors(tmp_path, change, message):
    entry = make_entry("http://x/a.pth", None).to_dict()
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"models": [{**entry, **change}]}))
    with pytest.raises(ValueError, match=re.escape(message)):
        load_manifest(path)


def test_manifest_names_must_be_unique(tmp_path):
    entry = make_entry("http://x/a.pth", None).to_dict()
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"models": [entry, entry]}))
    with pytest.raises(ValueError, match="repeats model name"):
        load_manifest(path)


# --- downloads ------------------------------------------------------------------------------------------


def test_cache_dir_defaults_to_torch_hub_and_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("SSLIB_ZOO_CACHE", raising=False)
    assert zoo.resolve_cache_dir() == Path(torch.hub.get_dir()) / "checkpoints" / "sslib"
    monkeypatch.setenv("SSLIB_ZOO_CACHE", str(tmp_path / "env"))
    assert zoo.resolve_cache_dir() == tmp_path / "env"
    assert zoo.resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_good_download_is_cached_and_verified(server, tmp_path):
    entry = make_entry(server.url("plain", "blob.bin"), BLOB_SHA)
    path = zoo.download(entry, cache_dir=tmp_path)
    assert path == tmp_path / "tiny.bin" and path.read_bytes() == BLOB
    assert files_in(tmp_path) == [path]  # no temporary file left
    assert zoo.download(entry, cache_dir=tmp_path) == path and len(server.requests) == 1  # from the cache


def test_truncated_once_is_retried(server, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "ATTEMPTS", 2)
    path = zoo.download(make_entry(server.url("flaky", "blob.bin"), BLOB_SHA), cache_dir=tmp_path)
    assert path.read_bytes() == BLOB and files_in(tmp_path) == [path]
    assert len(server.requests) == 2


def test_always_truncated_fails_after_retries_leaving_nothing(server, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "ATTEMPTS", 2)
    url = server.url("truncated", "blob.bin")
    with pytest.raises(zoo.DownloadError) as err:
        zoo.download(make_entry(url, BLOB_SHA), cache_dir=tmp_path)
    message = str(err.value)
    assert f"download of {url} failed after 2 attempts" in message and "\n" not in message
    assert f"save it as {tmp_path / 'tiny.bin'}" in message
    assert len(server.requests) == 2 and files_in(tmp_path) == []


@pytest.mark.parametrize(
    ("mode", "sha256"),
    [("corrupt", BLOB_SHA), ("plain", "0" * 64)],
    ids=["corrupted-bytes", "wrong-hash-in-manifest"],
)
def test_hash_mismatch_is_an_error_leaving_nothing(server, tmp_path, mode, sha256):
    url = server.url(mode, "blob.bin")
    with pytest.raises(
        zoo.DownloadError, match=f"sha256 mismatch for {url}: expected {sha256}, got [0-9a-f]{{64}}"
    ):
        zoo.download(make_entry(url, sha256), cache_dir=tmp_path)
    assert files_in(tmp_path) == []


def test_offline_names_the_url_and_the_manual_path(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/plain/blob.bin"
    with pytest.raises(zoo.DownloadError) as err:
        zoo.download(make_entry(url, BLOB_SHA), cache_dir=tmp_path)
    message = str(err.value)
    assert url in message and "cannot connect" in message and "\n" not in message
    assert f"save it as {tmp_path / 'tiny.bin'}" in message and files_in(tmp_path) == []


def test_http_errors_name_the_status(server, tmp_path):
    with pytest.raises(zoo.DownloadError, match="HTTP 404 Not Found") as err:
        zoo.download(make_entry(server.url("plain", "missing.bin"), BLOB_SHA), cache_dir=tmp_path)
    assert "\n" not in str(err.value) and files_in(tmp_path) == []


def test_an_unknown_protocol_is_one_line(tmp_path):
    with pytest.raises(zoo.DownloadError, match="cannot download gopher://host/a.bin: .*'gopher'") as err:
        zoo.download(make_entry("gopher://host/a.bin", BLOB_SHA), cache_dir=tmp_path)
    assert "\n" not in str(err.value) and files_in(tmp_path) == []


@pytest.mark.parametrize("terminal", [True, False])
def test_a_progress_bar_is_drawn_on_a_terminal_only(server, tmp_path, capsys, monkeypatch, terminal):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    zoo.download(make_entry(server.url("plain", "blob.bin"), BLOB_SHA), cache_dir=tmp_path)
    assert ("100%|" in capsys.readouterr().err) is terminal


def test_unverified_entries_need_opting_in(server, tmp_path):
    entry = make_entry(server.url("plain", "blob.bin"), None)
    with pytest.raises(
        ValueError, match="no pinned sha256.*allow_unverified=True \\(CLI: --allow-unverified\\)"
    ):
        zoo.download(entry, cache_dir=tmp_path)
    assert server.requests == []
    with pytest.warns(UserWarning, match=f"sha256: {BLOB_SHA}"):
        assert zoo.download(entry, cache_dir=tmp_path, allow_unverified=True).read_bytes() == BLOB
    with warnings.catch_warnings():  # the cached file: no download, no second warning
        warnings.simplefilter("error")
        assert zoo.download(entry, cache_dir=tmp_path, allow_unverified=True).read_bytes() == BLOB
    assert len(server.requests) == 1


def test_stale_cached_file_is_replaced(server, tmp_path):
    (tmp_path / "tiny.bin").write_bytes(b"half a file")
    assert zoo.download(make_entry(server.url("plain", "blob.bin"), BLOB_SHA), tmp_path).read_bytes() == BLOB


# --- loading: weights match, cache reuse, no code execution ----------------------------------------------


@pytest.fixture(scope="module")
def resnet18_weights() -> dict[str, torch.Tensor]:
    """A torchvision ResNet-18 state dict (with its ImageNet ``fc``), random but fixed."""
    torch.manual_seed(0)
    return models.resnet18().state_dict()


def assert_same_weights(module: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    loaded = module.state_dict()
    assert set(loaded) == {k for k in expected if not k.startswith("fc.")}
    assert all(torch.equal(loaded[k], expected[k]) for k in loaded)


def test_load_gives_the_published_weights_then_reuses_the_cache_offline(server, tmp_path, resnet18_weights):
    payload = torch_bytes(resnet18_weights)
    server.files["resnet18.pth"] = payload
    entry = make_entry(server.url("plain", "resnet18.pth"), hashlib.sha256(payload).hexdigest())
    backbone = zoo.load(entry, cache_dir=tmp_path)
    assert not backbone.training and isinstance(backbone.fc, nn.Identity)
    assert_same_weights(backbone, resnet18_weights)
    server.shutdown()
    server.server_close()  # offline from now on: the cached, verified file is enough
    assert_same_weights(zoo.load(entry, cache_dir=tmp_path), resnet18_weights)
    assert len(server.requests) == 1


class RunsCode:
    """A pickle payload that would create ``marker`` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable, tuple]:
        return open, (str(self.marker), "w")


def test_a_pickle_that_runs_code_is_refused(server, tmp_path):
    marker = tmp_path / "pwned"
    payload = torch_bytes({"conv1.weight": torch.zeros(1), "payload": RunsCode(marker)})
    server.files["evil.pth"] = payload
    entry = make_entry(server.url("plain", "evil.pth"), hashlib.sha256(payload).hexdigest())
    with pytest.raises(ValueError, match=r"could not be loaded safely \(weights_only=True\)"):
        zoo.load(entry, cache_dir=tmp_path / "cache")
    assert not marker.exists()


def test_read_weights_refuses_what_is_not_a_mapping(tmp_path):
    (tmp_path / "list.pth").write_bytes(torch_bytes([torch.zeros(1)]))
    with pytest.raises(ValueError, match="hold a list, not a state dict"):
        read_weights(tmp_path / "list.pth")


# --- converters -----------------------------------------------------------------------------------------


def prefixed(state_dict: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in state_dict.items()}


def backbone_keys(sd: dict) -> dict:
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


def published(layout: str, sd: dict) -> tuple[str, dict]:
    """``(format, checkpoint)``: the torchvision weights ``sd`` laid out as ``layout`` publishes them."""
    body = backbone_keys(sd)
    head = {"0.weight": torch.zeros(16, 512), "0.bias": torch.zeros(16)}
    prototypes = {"prototypes.weight": torch.zeros(30, 16)}
    classifier = {"classifier.weight": torch.zeros(10, 512), "classifier.bias": torch.zeros(10)}
    teacher = {**prefixed(body, "backbone."), **prefixed(head, "head.mlp.")}
    solo = {**body, **prefixed(head, "projector."), **prefixed(head, "momentum_projector.")}
    return {
        "torchvision": ("torchvision", sd),
        "swav-release": ("swav-official", prefixed({**body, **prefixed(head, "projection_head."), **prototypes}, "module.")),
        "swav-training": ("swav-official", {"epoch": 800, "state_dict": prefixed({**body, **prototypes}, "module.")}),
        "dino-backbone-only": ("dino-official", body),
        "dino-full": ("dino-official", {"epoch": 100, "teacher": teacher, "student": prefixed(teacher, "module.")}),
        "mira-with-ema": ("mira-official", {"epoch": 400, "state_dict": prefixed({  # the EMA encoder is read
            **prefixed({k: torch.zeros_like(v) for k, v in body.items()}, "encoder."),
            **prefixed(body, "momentum_encoder."), **prefixed(head, "projector."), **prototypes}, "module.")}),
        "mira-encoder-only": ("mira-official", {"state_dict": prefixed({**prefixed(body, "encoder."), **prototypes}, "module.")}),
        "solo-learn": ("solo-learn", {"epoch": 399, "state_dict": {
            **prefixed(body, "backbone."), **prefixed(body, "momentum_backbone."), **solo, **classifier}}),
        "sslib-training": ("sslib", {"hyper_parameters": {"cfg": {}}, "state_dict": {
            **prefixed(body, "backbone."), **prefixed(head, "projector."), **classifier}}),
        "sslib-export": ("sslib", body),
    }[layout]  # fmt: skip


LAYOUTS = ["torchvision", "swav-release", "swav-training", "dino-backbone-only", "dino-full", "mira-with-ema",
           "mira-encoder-only", "solo-learn", "sslib-training", "sslib-export"]  # fmt: skip


@pytest.mark.parametrize("layout", LAYOUTS)
def test_converters_recover_the_backbone(resnet18_weights, layout):
    fmt, checkpoint = published(layout, resnet18_weights)
    assert_same_weights(
        load_into(backbones.build("resnet18")[0], convert(checkpoint, fmt), layout), resnet18_weights
    )


def test_swav_converter_on_a_resnet50_release():
    torch.manual_seed(0)
    weights = models.resnet50().state_dict()
    release = {**prefixed(backbone_keys(weights), "module."), "module.projection_head.0.weight": torch.zeros(2048, 2048),
               "module.projection_head.3.weight": torch.zeros(128, 2048), "module.prototypes.weight": torch.zeros(3000, 128)}  # fmt: skip
    backbone = load_into(backbones.build("resnet50")[0], convert(release, "swav-official"), "swav")
    assert_same_weights(backbone, weights)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: {**sd, "module.extra.weight": torch.zeros(1)}, "unexpected keys extra.weight"),
        (
            lambda sd: {k: v for k, v in sd.items() if "layer4" not in k},
            r"missing keys layer4\.\S+, .* \(\+\d+ more\)",
        ),
        (
            lambda sd: {**sd, "module.conv1.weight": torch.zeros(64, 3, 3, 3)},
            r"wrong shapes conv1.weight \(64, 3, 3, 3\) \(expected \(64, 3, 7, 7\)\)",
        ),
    ],
    ids=["extra", "missing", "shape"],
)
def test_leftover_keys_after_conversion_are_one_line_errors(resnet18_weights, edit, message):
    release = edit(prefixed(backbone_keys(resnet18_weights), "module."))
    with pytest.raises(ValueError, match=f"swav file does not fit the backbone: .*{message}") as err:
        load_into(backbones.build("resnet18")[0], convert(release, "swav-official"), "swav file")
    assert "\n" not in str(err.value)


def test_unknown_format_lists_the_formats():
    with pytest.raises(
        ValueError, match="unknown checkpoint format 'byol'; allowed: sslib, torchvision, mira-official"
    ):
        convert({}, "byol")


# --- command lines ---------------------------------------------------------------------------------------


def test_zoo_script_lists_the_zoo(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["scripts/zoo.py", "list"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "scripts" / "zoo.py"), run_name="__main__")
    assert done.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "method", "backbone", "dataset", "epochs", "metric", "verified"]
    assert any(
        line.startswith("mira-resnet50-imagenet-400ep-multicrop ") and line.endswith(" no") for line in lines
    )
    assert len(lines) == 1 + len(zoo.names())


def test_zoo_script_unknown_name_is_one_line(tmp_path, capsys):
    assert zoo_main(["download", "byol", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown zoo model 'byol'; available: ") and err.count("\n") == 1


def test_zoo_script_downloads_unverified_entries_only_with_opt_in(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(zoo, "get", lambda name: make_entry(server.url("plain", "blob.bin"), None, name=name))
    args = ["download", "tiny", "--cache-dir", str(tmp_path)]
    assert zoo_main(args) == 2
    err = capsys.readouterr().err
    assert "has no pinned sha256" in err and "--allow-unverified" in err and err.count("\n") == 1
    assert server.requests == [] and files_in(tmp_path) == []
    with pytest.warns(UserWarning, match="is unverified; downloaded file sha256"):
        assert zoo_main([*args, "--allow-unverified"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "tiny.bin")
