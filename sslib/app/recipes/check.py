"""Check the recipe files (``sslib/app/conf/recipe/*.yaml``) against the configs they compose, and
render them as the tables of ``docs/recipes.md``.

The file format is :mod:`sslib.app.recipe`'s. The check composes each recipe and compares every value
with its file (the derived keys too), and requires a source for every hyper-parameter of the composed
config, so that a changed group default cannot slip into a recipe unrecorded.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sslib.app import recipe as recipe_file
from sslib.app.config import CONF_MODULE, RECIPE, compose, options
from sslib.app.recipe import Recipe

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


def _read(name: str) -> str | None:
    path = resources.files(CONF_MODULE) / RECIPE / f"{name}.yaml"
    return path.read_text() if path.is_file() else None


def _files() -> list[str]:
    folder = resources.files(CONF_MODULE) / RECIPE
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load(name: str) -> Recipe:
    """The shipped recipe file ``conf/recipe/<name>.yaml`` on top of the files it extends."""
    return recipe_file.load(name, _read)


def _method_recipe(name: str) -> bool:
    """Whether recipe ``name`` is ``<method>_<data>[_<variant>]`` (``digits``, for any method, is not)."""
    return name.split("_", 1)[0] in options("method") and "_" in name


def load_all() -> list[Recipe]:
    """Every shipped recipe file chosen by ``<method>_<data>`` names (shared parts excluded), by name."""
    recipes = [load(n) for n in _files() if not n.startswith("_")]
    return [r for r in recipes if any(_method_recipe(n) for n in r.recipes)]


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


def covered_keys(record: Recipe) -> set[str]:
    return set(record.entries)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))
    return a == b


def check(record: Recipe) -> list[str]:
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


def render(records: list[Recipe]) -> str:
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
