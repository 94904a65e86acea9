"""What an ablation runs: ``methods=[...]`` x ``labelers=[...]`` x ``seeds=[...]``, each on the overrides every
run shares, and how (``launcher=inline|local|slurm`` and its ``launcher.*`` settings)."""

from __future__ import annotations

import copy
import itertools
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar, get_args, get_origin, get_type_hints

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from sslib.app.config import ConfigError, compose, options
from sslib.app.eval.offline import ProbeSettings
from sslib.app.train import config_changes
from sslib.validation import check_int_at_least, check_positive

# Runner settings that are not run-config overrides; everything else is passed to sslib.app.config.compose.
LIST_KEYS = {"methods": "method", "labelers": "labeler"}
EVAL_PREFIX, LAUNCHER_PREFIX = "eval.", "launcher."
_DEVICES = "each run's devices come from the launcher (launcher=local launcher.gpus_per_run=N, or launcher=slurm launcher.gpus_per_node=N launcher.nodes=M)"
# Overrides the runner sets itself, with the reason they cannot be given.
RESERVED = {
    "run_dir": "each run gets its own run_dir under out=...",
    "resume": "finished runs are skipped and interrupted ones resumed; choose another out=... to start over",
    "trainer.devices": _DEVICES,
    "trainer.num_nodes": _DEVICES,
}
# What every run of one ablation must share (its budget); the rest may differ by method. budget=recipes
# keeps each method's own recipe (augmentations, backbone options), as the papers' tables compare them.
BUDGETS = {
    "shared": ("seed", "trainer.max_epochs", "data", "backbone"),
    "recipes": ("seed", "trainer.max_epochs", "data.name", "data.root", "backbone.name"),
}
RANDOM_INIT = "random-init"  # the row (and folder) of the untrained backbone

S = TypeVar("S")


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
class InlineSettings:
    """``launcher=inline`` (the default): the runs one after another in this process, on one device."""

    name: ClassVar[str] = "inline"


@dataclass(frozen=True)
class LocalSettings:
    """``launcher=local``: each run a process of its own on this machine, ``parallel`` at a time.

    ``gpus_per_run`` GPUs each (default 1, or 0 on a machine without GPUs: CPU processes); ``parallel``
    defaults to the visible GPUs divided by ``gpus_per_run``, or 1 for CPU processes.
    """

    name: ClassVar[str] = "local"
    gpus_per_run: int | None = None
    parallel: int | None = None

    def __post_init__(self) -> None:
        if self.gpus_per_run is not None:
            check_int_at_least("launcher.gpus_per_run", self.gpus_per_run, 0)
        if self.parallel is not None:
            check_int_at_least("launcher.parallel", self.parallel, 1)

    def resolved(self, gpus: int) -> LocalSettings:
        """These settings on a machine with ``gpus`` visible GPUs, defaults filled in."""
        per_run = min(gpus, 1) if self.gpus_per_run is None else self.gpus_per_run
        if per_run > gpus:
            raise ConfigError(
                f"launcher.gpus_per_run={per_run} asks for more GPUs than the {gpus} visible on this machine"
            )
        slots = gpus // per_run if per_run else 1
        if self.parallel is not None and per_run and self.parallel > slots:
            raise ConfigError(
                f"launcher.parallel={self.parallel} runs of launcher.gpus_per_run={per_run} GPUs need more "
                f"than the {gpus} visible GPUs; allowed: launcher.parallel <= {slots}"
            )
        return replace(self, gpus_per_run=per_run, parallel=self.parallel or slots)


@dataclass(frozen=True)
class SlurmSettings:
    """``launcher=slurm``: each run a SLURM job submitted through submitit (``sbatch``), on ``nodes`` nodes
    of ``gpus_per_node`` GPUs (0: one CPU process); the random-init rows are jobs of one task and GPU."""

    name: ClassVar[str] = "slurm"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    time: str = "24:00:00"
    nodes: int = 1
    gpus_per_node: int = 1
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    setup: tuple[str, ...] = ()
    array_parallelism: int = 256
    signal_delay_s: int = 180

    def __post_init__(self) -> None:
        self.minutes()
        check_int_at_least("launcher.nodes", self.nodes, 1)
        check_int_at_least("launcher.gpus_per_node", self.gpus_per_node, 0)
        if self.cpus_per_task is not None:
            check_int_at_least("launcher.cpus_per_task", self.cpus_per_task, 1)
        if self.mem_gb is not None:
            check_positive("launcher.mem_gb", self.mem_gb)
        check_int_at_least("launcher.array_parallelism", self.array_parallelism, 1)
        check_int_at_least("launcher.signal_delay_s", self.signal_delay_s, 1)

    def minutes(self) -> int:
        """``time`` in whole minutes (at least 1), from SLURM's forms: ``MM``, ``MM:SS``, ``HH:MM:SS``,
        ``D-HH``, ``D-HH:MM`` or ``D-HH:MM:SS``."""
        days, _, clock = self.time.rpartition("-")
        parts = clock.split(":")
        if not all(p.isdigit() for p in [*parts, *([days] if days else [])]) or len(parts) > 3:
            raise ConfigError(
                f"launcher.time={self.time} is not a SLURM time limit; allowed: MM, MM:SS, HH:MM:SS, "
                "D-HH, D-HH:MM or D-HH:MM:SS"
            )
        numbers = [int(p) for p in parts]
        if days or len(numbers) == 3:
            hours, mins, secs = numbers + [0] * (3 - len(numbers))
        else:
            hours, mins, secs = 0, numbers[0], (numbers + [0])[1]
        return max(1, math.ceil((((int(days or 0) * 24 + hours) * 60 + mins) * 60 + secs) / 60))


LAUNCHERS: dict[str, type] = {s.name: s for s in (InlineSettings, LocalSettings, SlurmSettings)}
LauncherSettings = InlineSettings | LocalSettings | SlurmSettings


@dataclass(frozen=True)
class Run:
    """One run of the ablation: its method, labeler (``None``: the method has none), seed and composed config;
    ``key`` names it in the sweep (its folder under ``out``). The random-init rows are runs of the method
    :data:`RANDOM_INIT`, evaluated and never trained."""

    method: str
    labeler: str | None
    seed: int
    key: str
    cfg: DictConfig

    @property
    def name(self) -> str:
        """The table row of the run."""
        return "-".join(part for part in (self.method, self.labeler) if part)


@dataclass(frozen=True)
class Plan:
    runs: list[Run]  # the trained runs, row by row, each row seed by seed
    baselines: list[Run]  # the random-init row, one per seed
    out: Path
    eval: EvalSettings
    seeds: list[int]
    replicated: bool  # seeds=[...] was given: one folder per seed under each row's
    reference: str | None  # the row every other one is compared with, paired by seed
    launcher: LauncherSettings

    @property
    def tasks(self) -> list[Run]:
        """Everything the sweep runs: the random-init rows first."""
        return [*self.baselines, *self.runs]

    @property
    def rows(self) -> list[str]:
        """The table's rows, in order."""
        return list(dict.fromkeys(run.name for run in self.tasks))


def parse_list(key: str, text: str) -> list[str]:
    """``"[a,b]"`` (or ``"a,b"``) -> ``["a", "b"]``, each an option of the key's config group."""
    group = LIST_KEYS[key]
    items = _items(key, text)
    for item in items:
        if item not in options(group):
            raise ConfigError(
                f"unknown {group} '{item}' in {key}=[...]; available: {', '.join(options(group))}"
            )
    return items


def _items(key: str, text: str) -> list[str]:
    """``"[a,b]"`` (or ``"a,b"``) -> ``["a", "b"]``: no empty entry, none twice."""
    items = [item.strip() for item in text.strip().removeprefix("[").removesuffix("]").split(",")]
    if not all(items):
        raise ConfigError(f"{key}={text} has an empty entry; write {key}=[a,b,...]")
    duplicates = sorted({item for item in items if items.count(item) > 1})
    if duplicates:
        raise ConfigError(f"{key}=[...] lists {', '.join(duplicates)} more than once")
    return items


def parse_seeds(text: str) -> list[int]:
    """``"[0,1,2]"`` -> ``[0, 1, 2]``."""
    if not text.strip().removeprefix("[").removesuffix("]").strip():
        raise ConfigError(f"seeds={text} is empty; give one or more integers, e.g. seeds=[0,1,2]")
    items = _items("seeds", text)
    if not all(item.lstrip("-").isdigit() for item in items):
        raise ConfigError(f"seeds={text} must list integers, e.g. seeds=[0,1,2]")
    return [int(item) for item in items]


def _value(name: str, kind: Any, text: str) -> Any:
    """``text`` (a command-line value) as the type ``kind`` (``X`` or ``X | None``) of the setting ``name``."""
    optional = type(None) in get_args(kind)
    base = next(a for a in get_args(kind) if a is not type(None)) if optional else kind
    if optional and text == "null":
        return None
    if base is str:
        return text
    if get_origin(base) is tuple:
        value = yaml.safe_load(text) if text.strip().startswith("[") else None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(
                f'{name} must be a list of strings, e.g. {name}=["module load cuda"], got {text}'
            )
        return tuple(value)
    try:
        return base(text)
    except ValueError:
        raise ConfigError(
            f"{name} must be {'an integer' if base is int else 'a number'}, got '{text}'"
        ) from None


def parse_settings(kind: type[S], prefix: str, settings: dict[str, str], owner: str = "") -> S:
    """``{"linear_epochs": "50"}`` (from ``eval.linear_epochs=50``) -> ``kind(linear_epochs=50)``, each value
    converted to the field's type; ``owner`` names the choice the settings belong to in errors."""
    types = get_type_hints(kind)
    names = [f.name for f in fields(kind)]  # type: ignore[arg-type]
    for key in settings:
        if key not in names:
            available = ", ".join(f"{prefix}{k}" for k in names) or "none"
            raise ConfigError(f"unknown setting {prefix}{key}{owner}; available: {available}")
    return kind(**{key: _value(f"{prefix}{key}", types[key], text) for key, text in settings.items()})


def parse_eval(settings: dict[str, str]) -> EvalSettings:
    """``{"linear_epochs": "50"}`` (from ``eval.linear_epochs=50``) -> :class:`EvalSettings`."""
    return parse_settings(EvalSettings, EVAL_PREFIX, settings)


def parse_launcher(name: str, settings: dict[str, str]) -> LauncherSettings:
    """``launcher=<name>`` and its ``launcher.<key>=<value>`` settings, checked against this machine: the
    GPUs ``launcher=local`` shares out, the ``sbatch`` that ``launcher=slurm`` submits with."""
    if name not in LAUNCHERS:
        raise ConfigError(f"launcher={name} is not one of {', '.join(LAUNCHERS)}")
    launcher: LauncherSettings = parse_settings(
        LAUNCHERS[name], LAUNCHER_PREFIX, settings, f" for launcher={name}"
    )
    if isinstance(launcher, LocalSettings):
        return launcher.resolved(torch.cuda.device_count())
    if isinstance(launcher, SlurmSettings):
        missing = [tool for tool in ("sbatch", "squeue", "srun") if shutil.which(tool) is None]
        if missing:
            raise ConfigError(
                f"launcher=slurm submits with SLURM's sbatch and follows jobs with squeue, but {', '.join(missing)} "
                "is not on PATH: start the ablation on the cluster's login node, or use launcher=local"
            )
    return launcher


def _labeler_of(cfg: DictConfig) -> str | None:
    """The run's labeler, or ``None`` for a method without one (``method.labeler`` absent or null)."""
    return OmegaConf.select(cfg, "labeler.name") if OmegaConf.select(cfg, "method.labeler") else None


def _check_budget(runs: Sequence[Run], budget: str) -> None:
    """The runs share the keys of ``BUDGETS[budget]``, else a one-line error naming those that differ."""
    if budget not in BUDGETS:
        raise ConfigError(f"budget={budget} is not one of {', '.join(BUDGETS)}")
    first = runs[0]
    for run in runs[1:]:
        keys = config_changes(first.cfg, run.cfg)
        differ = [k for k in keys if any(k == b or k.startswith(f"{b}.") for b in BUDGETS[budget])]
        if differ:
            hint = "" if budget == "recipes" else " (or keep each method's recipe with budget=recipes)"
            raise ConfigError(
                f"runs {first.name} and {run.name} differ in {', '.join(differ[:4])}: set them on the command "
                "line or share one recipe (e.g. recipe=mira_imagenet100, or recipe=digits on the digits) so "
                f"that every run gets the same budget{hint}"
            )


@dataclass
class _Args:
    """The command line split into the runner's own settings and the overrides every run shares."""

    lists: dict[str, list[str]] = field(default_factory=dict)
    evals: dict[str, str] = field(default_factory=dict)
    launcher: str = InlineSettings.name
    launcher_settings: dict[str, str] = field(default_factory=dict)
    seeds: list[int] | None = None
    reference: str | None = None
    budget: str = "shared"
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
        elif key == "launcher":
            parsed.launcher = value
        elif key.startswith(LAUNCHER_PREFIX):
            parsed.launcher_settings[key.removeprefix(LAUNCHER_PREFIX)] = value
        elif key == "seeds":
            parsed.seeds = parse_seeds(value)
        elif key in ("out", "reference", "budget"):
            setattr(parsed, key, value)
        elif key.lstrip("+~") in RESERVED:
            raise ConfigError(f"{key}= cannot be set: {RESERVED[key.lstrip('+~')]}")
        else:
            parsed.shared.append(arg)
    if not parsed.lists:
        raise ConfigError("nothing to ablate: give methods=[a,b,...] and/or labelers=[a,b,...]")
    given = {a.split("=", 1)[0].lstrip("+~") for a in parsed.shared}
    for key, group in [*LIST_KEYS.items(), ("seeds", "seed")]:
        if group in given and (key in parsed.lists or (key == "seeds" and parsed.seeds is not None)):
            raise ConfigError(f"give either {group}=... or {key}=[...], not both")
    return parsed


def _or_default(names: list[str] | None) -> list[str | None]:
    """``names``, or ``[None]`` (the default choice) when the list is not given."""
    return [*names] if names else [None]


def _devices(launcher: LauncherSettings) -> list[str]:
    """The overrides that give each run the devices of its launcher."""
    if isinstance(launcher, SlurmSettings):
        return [f"trainer.devices={max(launcher.gpus_per_node, 1)}", f"trainer.num_nodes={launcher.nodes}"]
    if isinstance(launcher, LocalSettings) and launcher.gpus_per_run:
        return [f"trainer.devices={launcher.gpus_per_run}"]
    return []


def _compose_run(
    shared: Sequence[str], method: str | None, labeler: str | None
) -> tuple[str, str | None, DictConfig]:
    """The method, labeler and config of ``method`` and ``labeler`` (``None``: as the shared overrides or the
    method choose)."""
    chosen = [f"{group}={option}" for group, option in (("method", method), ("labeler", labeler)) if option]
    cfg = compose([*shared, *chosen])
    if labeler is not None and not OmegaConf.select(cfg, "method.labeler"):
        raise ConfigError(f"method {cfg.method.name} has no labeler: labelers=[...] needs methods with one")
    if cfg.logger.name != "csv":
        raise ConfigError("the ablation reads each run's CSV metrics: use logger=csv")
    return cfg.method.name, _labeler_of(cfg), cfg


def _with_seed(cfg: DictConfig, seed: int, run_dir: Path) -> DictConfig:
    cfg = copy.deepcopy(cfg)
    cfg.seed, cfg.run_dir = seed, str(run_dir)
    return cfg


def _reference(name: str | None, runs: Sequence[Run]) -> str | None:
    """The row ``name`` designates: a row's name, or the method or labeler of exactly one row."""
    if name is None:
        return None
    rows = list(dict.fromkeys(run.name for run in runs))
    if name in rows or name == RANDOM_INIT:
        return name
    matches = list(dict.fromkeys(run.name for run in runs if name in (run.method, run.labeler)))
    if len(matches) != 1:
        raise ConfigError(
            f"reference={name} is {'not a row' if not matches else 'ambiguous (' + ', '.join(matches) + ')'}; "
            f"allowed: {', '.join([RANDOM_INIT, *rows])}"
        )
    return matches[0]


def make_plan(args: Sequence[str]) -> Plan:
    """The runs of ``args``: ``methods=[...]``, ``labelers=[...]``, ``seeds=[...]``, ``reference=...``, ``budget=...``,
    ``out=...``, ``eval.<key>=...``, ``launcher=...``, ``launcher.<key>=...`` and overrides shared by every
    run. The lists give their cross product. Bad input is a :class:`ConfigError` (one line); runs that would
    not share one budget (:data:`BUDGETS`, ``budget=shared`` by default) are bad input too."""
    parsed = _split_args(args)
    settings = parse_eval(parsed.evals)
    launcher = parse_launcher(parsed.launcher, parsed.launcher_settings)
    methods, labelers = parsed.lists.get("methods"), parsed.lists.get("labelers")
    shared = [*parsed.shared, *_devices(launcher)]
    rows = [
        _compose_run(shared, method, labeler)
        for method, labeler in itertools.product(_or_default(methods), _or_default(labelers))
    ]
    seeds = parsed.seeds or [rows[0][2].seed]
    name = [
        "ablate",
        rows[0][2].data.name,
        "_".join(methods or [rows[0][0]]),
        *(["_".join(labelers)] if labelers else []),
    ]
    out = Path(parsed.out) if parsed.out else Path("runs") / "-".join(name)

    def run(method: str, labeler: str | None, cfg: DictConfig, seed: int) -> Run:
        row = "-".join(part for part in (method, labeler) if part)
        key = f"{row}/seed{seed}" if parsed.seeds else row
        return Run(method, labeler, seed, key, _with_seed(cfg, seed, out / key))

    runs = [run(*row, seed) for row in rows for seed in seeds]
    _check_budget([r for r in runs if r.seed == seeds[0]], parsed.budget)
    baselines = [run(RANDOM_INIT, None, runs[0].cfg, seed) for seed in seeds]
    return Plan(
        runs,
        baselines,
        out,
        settings,
        seeds,
        parsed.seeds is not None,
        _reference(parsed.reference, runs),
        launcher,
    )
