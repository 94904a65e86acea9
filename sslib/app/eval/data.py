"""The dataset, root and image size a checkpoint is evaluated on: those given, else its run's, else defaults.

An sslib training checkpoint stores its run config; its ``data`` block names the dataset (``name``,
``root``) and the crop size the backbone was trained at (``global_crops.size``). The evaluation tools take
each of them from there unless the command line gives it; a checkpoint without a run config (published
formats, zoo entries) gets the defaults: the digits at their native size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslib.app.eval.offline import FeatureCache, default_image_size
from sslib.app.eval.sources import BackboneSource
from sslib.data import dataset_stats
from sslib.io import load_torch_file
from sslib.validation import check_int_at_least

DEFAULT_DATA = "digits"
DEFAULT_ROOT = "data"
# The run's build_dataset arguments that pick its images (digits' split, a folder's classes): taken with its
# dataset, so the evaluation sees the run's train and val images.
RUN_OPTIONS = ("val_fraction", "seed", "class_list", "skip_corrupt")
GIVEN = "given"
FROM_RUN = "from the checkpoint"
DEFAULT = "default"
NO_RUN = "default: the checkpoint stores no run config"


@dataclass(frozen=True)
class EvalData:
    """Dataset ``name`` at ``root``, evaluated at ``image_size`` with the further ``build_dataset``
    ``options`` of the run; ``origins`` says where ``data``, ``root`` and ``image size`` came from."""

    name: str
    root: str
    image_size: int
    options: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line, e.g. ``data: digits (from the checkpoint), root: data (default), image size: 8 (from
        the checkpoint)``."""
        values = {"data": self.name, "root": self.root, "image size": self.image_size}
        text = ", ".join(f"{key}: {value} ({self.origins[key]})" for key, value in values.items())
        class_list = self.options.get("class_list")
        return text + (f", classes: {class_list} ({FROM_RUN})" if class_list else "")


def run_data_config(checkpoint: Path, source: BackboneSource) -> Mapping[str, Any] | None:
    """The ``data`` block of the run config an sslib checkpoint stores (the file is memory-mapped, its
    weights are not read); ``None`` for other formats and for files without one."""
    if source.fmt != "sslib":
        return None
    ckpt = load_torch_file(checkpoint, mmap=True)
    hyper = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    cfg = hyper.get("cfg") if isinstance(hyper, dict) else None
    data = cfg.get("data") if isinstance(cfg, dict) else None
    return data if isinstance(data, dict) else None


def run_options(data: Mapping[str, Any]) -> dict[str, Any]:
    """The ``build_dataset`` arguments of a run's ``data`` config that pick its images (:data:`RUN_OPTIONS`:
    the digits' split seed and fraction, a folder's class list), those that are set."""
    return {key: data[key] for key in RUN_OPTIONS if data.get(key) is not None}


def eval_data(
    checkpoint: Path,
    source: BackboneSource,
    data: str | None = None,
    root: str | Path | None = None,
    image_size: int | None = None,
) -> EvalData:
    """What ``checkpoint`` is evaluated on: ``data``, ``root``, ``image_size`` when given, else the run's.

    The run's root and ``RUN_OPTIONS`` apply to its own dataset only (not when ``data`` names another);
    its crop size applies to any dataset, as the backbone was trained at it. A bad dataset or size is a
    one-line ``ConfigError``.
    """
    if image_size is not None:
        check_int_at_least("image_size", image_size, 1)
    if data is not None:
        dataset_stats(data)
    run = run_data_config(checkpoint, source)
    origins: dict[str, str] = {}
    if data is not None:
        name, origins["data"] = data, GIVEN
    elif run is not None and "name" in run:
        name, origins["data"] = str(run["name"]), FROM_RUN
    else:
        name, origins["data"] = DEFAULT_DATA, NO_RUN if run is None else DEFAULT
    dataset_stats(name)
    own: Mapping[str, Any] = run if run is not None and run.get("name") == name else {}
    if root is not None:
        folder, origins["root"] = str(root), GIVEN
    elif own.get("root") is not None:
        folder, origins["root"] = str(own["root"]), FROM_RUN
    else:
        folder, origins["root"] = DEFAULT_ROOT, DEFAULT
    run_size = (run or {}).get("global_crops", {}).get("size")
    if image_size is not None:
        size, origins["image size"] = image_size, GIVEN
    elif run_size is not None:
        size, origins["image size"] = int(run_size), FROM_RUN
    else:
        size, origins["image size"] = default_image_size(name), DEFAULT
    return EvalData(name, folder, size, run_options(own), origins)


def eval_cache(
    path: Path,
    source: BackboneSource,
    data: str | None = None,
    root: str | Path | None = None,
    image_size: int | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | None = None,
) -> tuple[FeatureCache, EvalData]:
    """The :class:`FeatureCache` of the checkpoint at ``path`` on what :func:`eval_data` picks, and the pick."""
    chosen = eval_data(path, source, data, root, image_size)
    cache = FeatureCache(
        path, chosen.name, chosen.root, chosen.image_size, batch_size, num_workers, device, source,
        chosen.options,
    )  # fmt: skip
    return cache, chosen
