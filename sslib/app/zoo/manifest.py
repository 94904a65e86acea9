"""The zoo manifest (``sslib/app/zoo/manifest.yaml``, shipped in the package): one typed :class:`Entry` per
published checkpoint."""

from __future__ import annotations

import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import yaml

from sslib.errors import ConfigError, MissingFileError

MANIFEST_PATH = Path(__file__).resolve().with_name("manifest.yaml")

FORMATS = ("sslib", "torchvision", "mira-official", "swav-official", "dino-official", "solo-learn")
"""Checkpoint layouts that :mod:`sslib.app.zoo.convert` turns into backbone state dicts."""

_SHA256 = re.compile(r"[0-9a-f]{64}")
_ORDER = (
    "name", "method", "backbone", "backbone_kwargs", "dataset", "epochs", "metrics",
    "metrics_source", "url", "sha256", "format", "notes",
)  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """One pre-trained backbone: what it is, how good it is (and who says so), where to get it."""

    name: str
    method: str
    backbone: str
    dataset: str
    epochs: int
    metrics: dict[str, float]
    metrics_source: str
    url: str
    sha256: str | None
    format: str
    backbone_kwargs: dict = field(default_factory=dict)
    notes: str = ""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(
                f"zoo entry '{self.name}': unknown format '{self.format}'; allowed: {', '.join(FORMATS)}"
            )
        if self.sha256 is not None and not _SHA256.fullmatch(self.sha256):
            raise ConfigError(
                f"zoo entry '{self.name}': sha256 must be 64 lower-case hex digits or null, got '{self.sha256}'"
            )
        for key in ("metrics", "backbone_kwargs"):
            if not isinstance(getattr(self, key), dict):
                raise ConfigError(
                    f"zoo entry '{self.name}': {key} must be a mapping, got {getattr(self, key)!r}"
                )
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ConfigError(
                f"zoo entry '{self.name}': epochs must be a non-negative integer, got {self.epochs!r}"
            )

    @property
    def verified(self) -> bool:
        """Whether downloads are checked against a pinned SHA-256."""
        return self.sha256 is not None

    @property
    def filename(self) -> str:
        """The file's name in the cache: the entry name plus the URL's extension(s), e.g. ``.pth.tar``."""
        return self.name + "".join(PurePosixPath(urlparse(self.url).path).suffixes)

    @property
    def headline_metric(self) -> str:
        """The first metric as ``name value`` (``-`` when there is none)."""
        return next((f"{k} {v}" for k, v in self.metrics.items()), "-")

    def to_dict(self) -> dict:
        """The entry as a manifest mapping, fields in manifest order."""
        data = asdict(self)
        return {key: data[key] for key in _ORDER}

    def to_yaml(self) -> str:
        """The entry as a YAML list item, ready to paste under ``models:`` in the manifest."""
        return yaml.safe_dump([self.to_dict()], sort_keys=False, allow_unicode=True)


def entry_from_dict(data: dict, where: str) -> Entry:
    """Build an :class:`Entry` from a manifest mapping; unknown or missing fields are one-line errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: each model must be a mapping, got {type(data).__name__}")
    name = data.get("name", "?")
    required = {f.name for f in fields(Entry) if f.default is MISSING and f.default_factory is MISSING}
    problems = [
        f"{what} field(s) {', '.join(keys)}"
        for what, keys in (
            ("unknown", sorted(set(data) - set(_ORDER))),
            ("missing", sorted(required - set(data))),
        )
        if keys
    ]
    if problems:
        raise ConfigError(
            f"{where}: model '{name}' has {' and '.join(problems)}; fields: {', '.join(_ORDER)}"
        )
    return Entry(**data)


def load_manifest(path: str | Path = MANIFEST_PATH) -> list[Entry]:
    """The entries of the manifest at ``path`` (a mapping with a ``models`` list); names must be unique."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"zoo manifest '{path}' does not exist")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ConfigError(f"zoo manifest '{path}' must be a mapping with a 'models' list")
    entries = [entry_from_dict(item, f"zoo manifest '{path}'") for item in data["models"]]
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"zoo manifest '{path}' repeats model name(s) {', '.join(duplicates)}")
    return entries
