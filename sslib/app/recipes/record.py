"""Load, check and render recipe source records (``sslib/app/recipes/records/*.yaml``).

A record file::

    recipes: [mira_cifar10, mira_cifar100]     # the recipe files it describes (the first is the primary)
    extends: [_solo_cifar, _mira]              # optional: shared entries, later ones win
    title: MIRA, CIFAR-10/100, ResNet-18
    reproduces: paper Table 7
    sources: {paper: "...", mira: "movinghoon/MIRA@dca0326", solo: "vturrisi/solo-learn@9187ea3"}
    values:                                     # key: [value, source]; the composed value must equal it
      method.num_prototypes: [3000, "paper §4.1"]
    deviations:                                 # where sslib differs from the source, and why
      trainer.precision: {value: bf16-mixed, source_value: 16-mixed, source: "...", reason: "..."}

Keys are dotted paths of the composed config, plus the derived keys of :func:`flat_config`
(``global_batch``, ``backbone.cifar_stem``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from sslib.app.config import compose, options
from sslib.errors import ConfigError

RECORDS = "records"
DUMMY_ROOT = "/data/{data}"  # image-folder datasets need a data.root to compose

# Keys that are not training hyper-parameters (names, I/O, the labeler's kernel choice).
IGNORED = {
    "method.name",
    "method.labeler",
    "labeler.name",
    "labeler.backend",
    "labeler.num_prototypes",
    "backbone.cifar",
}
# Sections of the composed config whose leaves are hyper-parameters, and single keys besides them.
SECTIONS = (
    "method.",
    "labeler.",
    "backbone.",
    "optim.",
    "data.augment.",
    "data.global_crops",
    "data.local_crops",
)
SINGLE = ("data.batch_size", "trainer.max_epochs", "trainer.precision", "global_batch")


@dataclass(frozen=True)
class Entry:
    """One hyper-parameter: sslib's ``value``, where it comes from, and, for a deviation, why it differs."""

    key: str
    value: Any
    source: str
    source_value: Any = None
    reason: str | None = None

    @property
    def deviation(self) -> bool:
        return self.reason is not None


@dataclass
class Record:
    """The source record of one recipe and its variants."""

    name: str
    recipes: list[str]
    title: str
    reproduces: str
    sources: dict[str, str]
    entries: dict[str, Entry] = field(default_factory=dict)


def _read(name: str) -> dict:
    path = resources.files("sslib.app.recipes") / RECORDS / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no recipe record '{name}' in sslib/app/recipes/{RECORDS}")
    return yaml.safe_load(path.read_text())


def _entries(raw: dict) -> dict[str, Entry]:
    entries = {}
    for key, item in (raw.get("values") or {}).items():
        if not (isinstance(item, list) and len(item) == 2):
            raise ConfigError(f"record value {key} must be [value, source], got {item!r}")
        entries[key] = Entry(key, item[0], item[1])
    for key, item in (raw.get("deviations") or {}).items():
        missing = {"value", "source_value", "source", "reason"} - set(item)
        if missing:
            raise ConfigError(f"record deviation {key} lacks {', '.join(sorted(missing))}")
        entries[key] = Entry(key, item["value"], item["source"], item["source_value"], item["reason"])
    return entries


def load(name: str) -> Record:
    """The record ``records/<name>.yaml`` on top of the records it ``extends`` (one name or a list, in order)."""
    raw = _read(name)
    parents = raw.get("extends") or []
    entries: dict[str, Entry] = {}
    sources: dict[str, str] = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        base = load(parent)
        entries.update(base.entries)
        sources.update(base.sources)
    entries.update(_entries(raw))
    sources.update(raw.get("sources") or {})
    return Record(
        name,
        list(raw.get("recipes") or []),
        raw.get("title", name),
        raw.get("reproduces", ""),
        sources,
        entries,
    )


def load_all() -> list[Record]:
    """Every record that describes recipes (files starting with ``_`` are shared parts), by name."""
    folder = resources.files("sslib.app.recipes") / RECORDS
    names = sorted(
        p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml") and not p.name.startswith("_")
    )
    return [load(n) for n in names]


def recipe_config(recipe: str) -> DictConfig:
    """The composed config of recipe ``<method>_<data>`` (a placeholder data.root for image folders), or of a
    variant ``<method>_<data>_<variant>`` chosen with ``recipe=`` (e.g. ``dino_imagenet_300ep``)."""
    method, rest = recipe.split("_", 1)
    data = max((d for d in options("data") if rest.startswith(f"{d}_")), key=len, default=rest)
    overrides = [f"method={method}", f"data={data}"] + ([f"recipe={recipe}"] if rest != data else [])
    if data not in ("digits", "cifar10", "cifar100"):
        overrides.append(f"data.root={DUMMY_ROOT.format(data=data)}")
    return compose(overrides)


def _leaves(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """Dotted leaves of ``cfg`` plus derived keys: ``global_batch`` (batch x devices x nodes) and
    ``backbone.cifar_stem`` (whether the ResNet gets the 3x3 stride-1 stem, ``cifar: auto`` resolved)."""
    from sslib.app.builders import backbone_spec

    flat = _leaves(OmegaConf.to_container(cfg, resolve=True), "")
    flat["global_batch"] = cfg.data.batch_size * cfg.trainer.devices * cfg.trainer.num_nodes
    _, kwargs = backbone_spec(cfg)
    flat["backbone.cifar_stem"] = bool(kwargs.get("cifar", False))
    return flat


def _active(key: str, flat: dict[str, Any]) -> bool:
    """False for settings that have no effect in this config (e.g. local-crop augmentation without local crops)."""
    if key.startswith("data.augment.local_"):
        return flat.get("data.local_crops") is not None
    if key == "method.queue.start_epoch":
        return bool(flat.get("method.queue.length"))
    if key.startswith("method.ema.") and key != "method.ema.enabled":
        return flat.get("method.ema.enabled", True) is not False
    if key == "optim.exclude_tokens":  # a ViT's tokens: nothing to exclude in a ResNet
        return str(flat.get("backbone.name", "")).startswith("vit")
    if key in ("optim.clip_grad", "optim.final_weight_decay"):  # 0 / null: off
        return bool(flat.get(key))
    if key == "method.freeze_prototypes_steps":
        return flat.get(key) is not None
    if key == "method.freeze_prototypes_epochs":
        return flat.get("method.freeze_prototypes_steps") is None
    if key == "backbone.stem_padding":
        return bool(flat.get("backbone.cifar_stem"))
    return True


def required_keys(flat: dict[str, Any]) -> set[str]:
    """The hyper-parameters of a composed config that a record must cover."""
    keys = {k for k in flat if k.startswith(SECTIONS) or k in SINGLE}
    return {k for k in keys if k not in IGNORED and _active(k, flat)}


def covered_keys(record: Record) -> set[str]:
    return set(record.entries)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))
    return a == b


def check(record: Record) -> list[str]:
    """Problems of ``record`` against the composed configs of its recipes (empty when it is true)."""
    problems = []
    for recipe in record.recipes:
        flat = flat_config(recipe_config(recipe))
        for key in sorted(required_keys(flat) - covered_keys(record)):
            problems.append(f"{recipe}: {key} = {flat[key]!r} has no source in record {record.name}")
        for key, entry in sorted(record.entries.items()):
            if key not in flat:
                problems.append(f"{recipe}: record {record.name} names {key}, which the config does not have")
            elif not _same(flat[key], entry.value):
                kind = "deviation" if entry.deviation else "source"
                problems.append(
                    f"{recipe}: {key} = {flat[key]!r} but record {record.name} gives {entry.value!r} ({kind}: {entry.source})"
                )
            elif entry.deviation and _same(entry.value, entry.source_value):
                problems.append(
                    f"{recipe}: {key} is listed as a deviation but equals its source value {entry.value!r}"
                )
    return problems


def _text(text: str) -> str:
    """Prose for Markdown: angle brackets (``<method>.yaml``) would be read as HTML tags."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _cell(value: Any) -> str:
    text = "null" if value is None else str(value).replace("True", "true").replace("False", "false")
    return f"`{text}`".replace("|", "\\|")


def render(records: list[Record]) -> str:
    """Markdown tables of every record: sources, values with their sources, deviations with reasons."""
    out = []
    for record in records:
        recipes = ", ".join(f"`{r}`" for r in record.recipes)
        out += [f"### {record.title}", "", f"Recipes: {recipes}. Reproduces: {_text(record.reproduces)}.", ""]
        out += [f"- **{k}**: {_text(v)}" for k, v in record.sources.items()] + [""]
        values = [e for e in record.entries.values() if not e.deviation]
        deviations = [e for e in record.entries.values() if e.deviation]
        out += ["| Key | Value | Source |", "|---|---|---|"]
        out += [
            f"| `{e.key}` | {_cell(e.value)} | {_text(e.source)} |"
            for e in sorted(values, key=lambda e: e.key)
        ]
        out.append("")
        if deviations:
            out += [
                '??? note "Deviations from the source"',
                "",
                "    | Key | sslib | Source | Source value | Why |",
                "    |---|---|---|---|---|",
            ]
            out += [
                f"    | `{e.key}` | {_cell(e.value)} | {_text(e.source)} | {_cell(e.source_value)} | {_text(e.reason or '')} |"
                for e in sorted(deviations, key=lambda e: e.key)
            ]
            out.append("")
    return "\n".join(out).rstrip() + "\n"
