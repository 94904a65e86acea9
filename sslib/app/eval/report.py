"""One evaluation report per checkpoint: a suite of protocols run on its frozen (or fine-tuned) backbone,
written as Markdown, CSV and a PNG next to it (``scripts/evaluate.py CKPT suite=...``).

Suites (:data:`SUITES`): ``knn`` (Table 3: k = 20, T = 0.07 with 100/10/1% of the labels), ``linear``
(probe on frozen features), ``finetune`` (Table 4: 1% and 10% of the labels), ``transfer`` (Table 5: the
datasets given, or those present under ``transfer_root``), ``quick`` (knn + linear) and ``paper`` (all).
The dataset, root and image size are those given, else the run's (:mod:`sslib.app.eval.data`); every
option is checked before any feature is extracted.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from sslib.app.eval.data import EvalData, eval_cache
from sslib.app.eval.finetune import PROTOCOLS, finetune_eval, finetune_settings
from sslib.app.eval.offline import (
    FeatureCache,
    ProbeSettings,
    check_device,
    check_fraction,
    knn_eval,
    linear_probe,
)
from sslib.app.eval.sources import open_checkpoint
from sslib.app.eval.subsets import knn_subsets
from sslib.app.eval.transfer import c_grid
from sslib.app.eval.transfer_data import TRANSFER_DATASETS, parse_source, transfer_eval
from sslib.errors import ConfigError
from sslib.io import atomic_write_bytes
from sslib.validation import check_choice, check_int_at_least

PROTOCOL_NAMES = ("linear", "knn", "finetune", "transfer")
SUITES: dict[str, tuple[str, ...]] = {
    **{name: (name,) for name in PROTOCOL_NAMES},
    "quick": ("linear", "knn"),
    "paper": PROTOCOL_NAMES,
}


@dataclass(frozen=True)
class Row:
    """One number of the report: ``value`` (percent) of ``metric`` by ``protocol`` on ``dataset``."""

    protocol: str
    dataset: str
    setting: str
    metric: str
    value: float


@dataclass
class EvalOptions:
    """What the suite runs on and how (``key=value`` on the command line, same names)."""

    data: str | None = None  # None: the run's (else digits), as root and image_size
    root: str | None = None
    image_size: int | None = None
    batch_size: int = 256
    num_workers: int = 0
    device: str | None = None
    seed: int = 0
    fmt: str = "sslib"
    arch: str | None = None
    cifar_stem: bool = False
    knn_fractions: tuple[float, ...] = (1.0, 0.1, 0.01)
    linear_epochs: int = 100
    linear_augment: bool = False
    finetune_fractions: tuple[float, ...] = (0.01, 0.1)
    finetune_protocol: str = "swav"
    finetune_epochs: int | None = None
    transfer: tuple[str, ...] = ()
    transfer_root: str | None = None
    transfer_image_size: int = 224
    transfer_num_c: int = 45
    download: bool = False
    out: str | None = None

    def __post_init__(self) -> None:
        """Every value checked, so a bad one stops a suite before it extracts any feature."""
        check_choice("finetune_protocol", self.finetune_protocol, PROTOCOLS)
        for key in ("knn_fractions", "finetune_fractions"):
            for fraction in getattr(self, key):
                check_fraction(fraction, key)
        for key, minimum in [
            ("image_size", 1), ("batch_size", 1), ("num_workers", 0), ("linear_epochs", 1),
            ("finetune_epochs", 1), ("transfer_image_size", 1), ("transfer_num_c", 1),
        ]:  # fmt: skip
            if getattr(self, key) is not None:
                check_int_at_least(key, getattr(self, key), minimum)
        check_device(self.device)
        for text in self.transfer:
            parse_source(text)


def parse_options(pairs: Sequence[str]) -> tuple[str, EvalOptions]:
    """``["suite=paper", "data=cifar10", ...]`` -> ``(suite, options)``; an unknown key or a bad value is a
    one-line ``ConfigError``. Lists are comma-separated (``transfer=cifar10:data,pets:/data/pets``)."""
    types = {f.name: str(f.type) for f in fields(EvalOptions)}  # annotations are strings (PEP 563)
    suite, values = "quick", {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise ConfigError(f"expected key=value, got {pair!r}")
        if key == "suite":
            suite = check_choice("suite", text, tuple(SUITES))
            continue
        if key not in types:
            raise ConfigError(f"unknown option {key!r}; allowed: suite, {', '.join(types)}")
        values[key] = _parse(key, text, types[key])
    return suite, EvalOptions(**values)


def _parse(key: str, text: str, kind: str):
    try:
        if kind.startswith("tuple[float"):
            return tuple(float(t) for t in text.split(",") if t)
        if kind.startswith("tuple[str"):
            return tuple(t for t in text.split(",") if t)
        if kind.startswith("bool"):
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if kind.startswith("int"):
            return None if text.lower() == "none" else int(text)
        return None if text.lower() == "none" and "None" in kind else text
    except ValueError:
        raise ConfigError(f"{key} must be {kind.replace(' | None', '')}, got {text!r}") from None


def transfer_sources(options: EvalOptions) -> list[tuple[str, Path]]:
    """The ``(name, root)`` of ``transfer`` and of each ``transfer_root/<name>`` folder that exists."""
    sources = [parse_source(text) for text in options.transfer]
    if options.transfer_root:
        base = Path(options.transfer_root)
        sources += [(n, base / n) for n in TRANSFER_DATASETS if n != "folder" and (base / n).is_dir()]
    return sources


def feature_cache(checkpoint: str | Path, options: EvalOptions) -> tuple[FeatureCache, EvalData]:
    """The feature cache of ``checkpoint`` (a path, or ``zoo:<name>``) on the dataset, root and image size
    of ``options``, else of its run (:func:`sslib.app.eval.data.eval_data`), and that choice."""
    path, source = open_checkpoint(checkpoint, options.fmt, options.arch, options.cifar_stem)
    return eval_cache(
        path, source, options.data, options.root, options.image_size, options.batch_size, options.num_workers,
        options.device,
    )  # fmt: skip


def evaluate_checkpoint(checkpoint: str | Path, suite: str, options: EvalOptions) -> list[Row]:
    """Run the protocols of ``suite`` on ``checkpoint`` (a path, or ``zoo:<name>``)."""
    return evaluate_cache(feature_cache(checkpoint, options)[0], suite, options)


def evaluate_cache(cache: FeatureCache, suite: str, options: EvalOptions) -> list[Row]:
    """Run the protocols of ``suite`` on the backbone and dataset of ``cache``."""
    protocols = SUITES[check_choice("suite", suite, tuple(SUITES))]
    sources = transfer_sources(options) if "transfer" in protocols else []
    if suite == "transfer" and not sources:
        raise ConfigError(
            "suite=transfer needs transfer=NAME:ROOT,... or transfer_root=DIR holding <name>/ folders"
        )
    rows: list[Row] = []
    for protocol in protocols:
        if protocol == "linear":
            rows.append(_linear(cache, options))
        elif protocol == "knn":
            results = knn_eval(
                *cache.features("train"), *cache.features("val"), fractions=options.knn_fractions,
                seed=options.seed, num_classes=cache.stats.num_classes,
                subsets=knn_subsets(cache, options.knn_fractions, options.seed),
            )  # fmt: skip
            rows += [
                Row("knn", cache.dataset, _percent(f), "top1", acc["top1"]) for f, acc in results.items()
            ]
        elif protocol == "finetune":
            for fraction in options.finetune_fractions:
                settings = finetune_settings(
                    options.finetune_protocol, fraction, options.seed, {"epochs": options.finetune_epochs}
                )
                acc = finetune_eval(cache, fraction, settings)
                setting = f"{_percent(fraction)} {options.finetune_protocol}"
                rows += [Row("finetune", cache.dataset, setting, k, acc[k]) for k in ("top1", "top5")]
        else:
            for name, root in sources:
                result = transfer_eval(
                    cache.backbone, name, root, options.transfer_image_size, options.batch_size,
                    options.num_workers, cache.device, options.download, c_grid(options.transfer_num_c),
                    seed=options.seed,
                )  # fmt: skip
                label = name if name != "folder" else root.name
                rows.append(Row("transfer", label, f"C={result.c:.3g}", result.metric, result.score))
    return rows


def _percent(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def _linear(cache: FeatureCache, options: EvalOptions) -> Row:
    settings = ProbeSettings(epochs=options.linear_epochs, seed=options.seed)
    acc = linear_probe(cache, settings, options.linear_augment, cache.device)
    setting = f"{settings.epochs} epochs, {'augmented' if options.linear_augment else 'frozen features'}"
    return Row("linear", cache.dataset, setting, "top1", acc["top1"])


def markdown(rows: Sequence[Row], title: str, suite: str, options: Mapping, data: str = "") -> str:
    """The report: a title, the settings (and the ``data`` line), one table per protocol and the plot."""
    lines = [
        f"# Evaluation of {title}",
        "",
        f"Suite `{suite}`; " + ", ".join(f"{k}={v}" for k, v in options.items()),
        "",
        *([data, ""] if data else []),
    ]
    for protocol in dict.fromkeys(r.protocol for r in rows):
        lines += [f"## {protocol}", "", "| dataset | setting | metric | value |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {r.dataset} | {r.setting} | {r.metric} | {r.value:.2f} |"
            for r in rows
            if r.protocol == protocol
        ]
        lines.append("")
    return "\n".join(lines)


def plot(rows: Sequence[Row], path: Path, title: str) -> Path:
    """Bars of every protocol's numbers, and kNN top-1 by label fraction when it ran, saved at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    knn = [r for r in rows if r.protocol == "knn"]
    fig, axes = plt.subplots(1, 2 if knn else 1, figsize=(11 if knn else 6, 4), squeeze=False)
    labels = [f"{r.protocol}\n{r.dataset} {r.setting}\n{r.metric}" for r in rows]
    axes[0][0].barh(range(len(rows)), [r.value for r in rows])
    axes[0][0].set(
        yticks=range(len(rows)), yticklabels=labels, xlabel="percent", xlim=(0, 100), title="per protocol"
    )
    axes[0][0].tick_params(axis="y", labelsize=7)
    axes[0][0].invert_yaxis()
    if knn:
        axes[0][1].plot([r.setting for r in knn], [r.value for r in knn], marker="o")
        axes[0][1].set(xlabel="labelled train images", ylabel="kNN top-1 (%)", title="kNN by label subset")
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def write_report(
    rows: Sequence[Row],
    checkpoint: str | Path,
    suite: str,
    options: EvalOptions,
    data: EvalData | None = None,
) -> list[Path]:
    """Write ``report-<suite>.md`` (with ``data``'s line when given), ``.csv`` and ``.png`` into
    ``options.out`` (default: the folder ``<checkpoint>.eval/`` next to the checkpoint) and return their
    paths."""
    ckpt = Path(str(checkpoint).removeprefix("zoo:"))
    out = Path(options.out) if options.out else ckpt.parent / f"{ckpt.name}.eval"
    stem = out / f"report-{suite}"
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=[f.name for f in fields(Row)])
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    shown = {k: v for k, v in asdict(options).items() if k != "out" and v not in (None, (), False)}
    md, table = stem.with_suffix(".md"), stem.with_suffix(".csv")
    atomic_write_bytes(table, text.getvalue().encode())
    png = plot(rows, stem.with_suffix(".png"), ckpt.name)
    report = markdown(rows, ckpt.name, suite, shown, data.describe() if data else "")
    atomic_write_bytes(md, (report + f"\n![plot]({png.name})\n").encode())
    return [md, table, png]
