"""What an ablation runs: ``methods=[...]`` x ``labelers=[...]``, each on the overrides every run shares."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sslib.app.config import ConfigError, compose, options
from sslib.app.eval.offline import ProbeSettings
from sslib.app.train import config_changes
from sslib.validation import check_int_at_least, check_positive

# Runner settings that are not run-config overrides; everything else is passed to sslib.app.config.compose.
LIST_KEYS = {"methods": "method", "labelers": "labeler"}
EVAL_PREFIX = "eval."
# Overrides the runner sets itself, with the reason they cannot be given.
RESERVED = {
    "run_dir": "each run gets its own run_dir under out=...",
    "resume": "finished runs are skipped and interrupted ones resumed; choose another out=... to start over",
}
# What every run of one ablation must share (its budget); the rest may differ by method.
BUDGET_KEYS = ("seed", "trainer.max_epochs", "data", "backbone")


@dataclass(frozen=True)
class EvalSettings:
    """Offline evaluation of each final checkpoint: kNN (paper protocol) and a short linear probe."""

    knn_k: int = 20
    knn_temperature: float = 0.07
    linear_epochs: int = 30
    linear_lr: float = 0.1

    def __post_init__(self) -> None:
        check_int_at_least("eval.knn_k", self.knn_k, 1)
        check_positive("eval.knn_temperature", self.knn_temperature)
        check_int_at_least("eval.linear_epochs", self.linear_epochs, 1)
        check_positive("eval.linear_lr", self.linear_lr)

    def probe(self, seed: int) -> ProbeSettings:
        return ProbeSettings(epochs=self.linear_epochs, lr=self.linear_lr, seed=seed)


@dataclass(frozen=True)
class Run:
    """One run of the ablation: its method, labeler (``None``: the method has none) and composed config."""

    method: str
    labeler: str | None
    cfg: DictConfig

    @property
    def name(self) -> str:
        return "-".join(part for part in (self.method, self.labeler) if part)


@dataclass(frozen=True)
class Plan:
    runs: list[Run]
    out: Path
    eval: EvalSettings


def parse_list(key: str, text: str) -> list[str]:
    """``"[a,b]"`` (or ``"a,b"``) -> ``["a", "b"]``, each an option of the key's config group."""
    group = LIST_KEYS[key]
    items = [item.strip() for item in text.strip().removeprefix("[").removesuffix("]").split(",")]
    if not all(items):
        raise ConfigError(f"{key}={text} has an empty entry; write {key}=[a,b,...]")
    for item in items:
        if item not in options(group):
            raise ConfigError(
                f"unknown {group} '{item}' in {key}=[...]; available: {', '.join(options(group))}"
            )
    duplicates = sorted({item for item in items if items.count(item) > 1})
    if duplicates:
        raise ConfigError(f"{key}=[...] lists {', '.join(duplicates)} more than once")
    return items


def parse_eval(settings: dict[str, str]) -> EvalSettings:
    """``{"linear_epochs": "50"}`` (from ``eval.linear_epochs=50``) -> :class:`EvalSettings`."""
    defaults = EvalSettings()
    names = [f.name for f in fields(EvalSettings)]
    values = {}
    for key, text in settings.items():
        if key not in names:
            raise ConfigError(
                f"unknown setting eval.{key}; available: {', '.join(f'eval.{k}' for k in names)}"
            )
        kind = type(getattr(defaults, key))
        try:
            values[key] = kind(text)
        except ValueError:
            raise ConfigError(
                f"eval.{key} must be {'an integer' if kind is int else 'a number'}, got '{text}'"
            ) from None
    return EvalSettings(**values)


def _labeler_of(cfg: DictConfig) -> str | None:
    """The run's labeler, or ``None`` for a method without one (``method.labeler`` absent or null)."""
    return OmegaConf.select(cfg, "labeler.name") if OmegaConf.select(cfg, "method.labeler") else None


def _check_budget(runs: Sequence[Run]) -> None:
    first = runs[0]
    for run in runs[1:]:
        keys = config_changes(first.cfg, run.cfg)
        differ = [k for k in keys if any(k == b or k.startswith(f"{b}.") for b in BUDGET_KEYS)]
        if differ:
            raise ConfigError(
                f"runs {first.name} and {run.name} differ in {', '.join(differ[:4])}: set them on the command "
                "line or share one recipe (e.g. recipe=mira_imagenet100, or recipe=digits on the digits) so "
                "that every run gets the same budget"
            )


@dataclass
class _Args:
    """The command line split into the runner's own settings and the overrides every run shares."""

    lists: dict[str, list[str]] = field(default_factory=dict)
    evals: dict[str, str] = field(default_factory=dict)
    out: str | None = None
    shared: list[str] = field(default_factory=list)


def _split_args(args: Sequence[str]) -> _Args:
    parsed = _Args()
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"argument '{arg}' is not of the form key=value")
        key, value = arg.split("=", 1)
        if key in LIST_KEYS:
            parsed.lists[key] = parse_list(key, value)
        elif key.startswith(EVAL_PREFIX):
            parsed.evals[key.removeprefix(EVAL_PREFIX)] = value
        elif key == "out":
            parsed.out = value
        elif key.lstrip("+~") in RESERVED:
            raise ConfigError(f"{key}= cannot be set: {RESERVED[key.lstrip('+~')]}")
        else:
            parsed.shared.append(arg)
    if not parsed.lists:
        raise ConfigError("nothing to ablate: give methods=[a,b,...] and/or labelers=[a,b,...]")
    for key, group in LIST_KEYS.items():
        if key in parsed.lists and any(a.split("=", 1)[0] == group for a in parsed.shared):
            raise ConfigError(f"give either {group}=... or {key}=[...], not both")
    return parsed


def _or_default(names: list[str] | None) -> list[str | None]:
    """``names``, or ``[None]`` (the default choice) when the list is not given."""
    return [*names] if names else [None]


def _compose_run(shared: Sequence[str], method: str | None, labeler: str | None) -> Run:
    """The run of ``method`` and ``labeler`` (``None``: as the shared overrides or the method choose)."""
    chosen = [f"{group}={option}" for group, option in (("method", method), ("labeler", labeler)) if option]
    cfg = compose([*shared, *chosen])
    if labeler is not None and not OmegaConf.select(cfg, "method.labeler"):
        raise ConfigError(f"method {cfg.method.name} has no labeler: labelers=[...] needs methods with one")
    if cfg.logger.name != "csv":
        raise ConfigError("the ablation reads each run's CSV metrics: use logger=csv")
    if cfg.trainer.devices != 1 or cfg.trainer.num_nodes != 1:
        raise ConfigError(
            f"scripts/ablate.py trains each run in its own process on one device, got trainer.devices="
            f"{cfg.trainer.devices} trainer.num_nodes={cfg.trainer.num_nodes}: use trainer.devices=1 "
            "trainer.num_nodes=1, or run each row with scripts/pretrain.py on several devices"
        )
    return Run(cfg.method.name, _labeler_of(cfg), cfg)


def make_plan(args: Sequence[str]) -> Plan:
    """The runs of ``args``: ``methods=[...]``, ``labelers=[...]``, ``out=...``, ``eval.<key>=...`` and
    overrides shared by every run. Both lists give their cross product. Bad input is a :class:`ConfigError`
    (one line); runs that would not share one budget (:data:`BUDGET_KEYS`) are bad input too."""
    parsed = _split_args(args)
    settings = parse_eval(parsed.evals)
    methods, labelers = parsed.lists.get("methods"), parsed.lists.get("labelers")
    runs = [
        _compose_run(parsed.shared, method, labeler)
        for method, labeler in itertools.product(_or_default(methods), _or_default(labelers))
    ]
    _check_budget(runs)
    name = [
        "ablate",
        runs[0].cfg.data.name,
        "_".join(methods or [runs[0].method]),
        *(["_".join(labelers)] if labelers else []),
    ]
    out = Path(parsed.out) if parsed.out else Path("runs") / "-".join(name)
    for run in runs:
        run.cfg.run_dir = str(out / run.name)
    return Plan(runs, out, settings)
