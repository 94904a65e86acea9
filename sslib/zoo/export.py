"""Publish an sslib training checkpoint: its backbone as safetensors, plus the matching manifest entry."""

from __future__ import annotations

import hashlib
from pathlib import Path

from safetensors.torch import save as safetensors_bytes

from sslib import backbones
from sslib.checkpoint import backbone_state_dict, load_checkpoint
from sslib.io import atomic_write_bytes
from sslib.methods.base import backbone_spec
from sslib.zoo.manifest import Entry
from sslib.zoo.weights import load_into

KNN_SOURCE = "sslib online kNN top-1 (k, T of the run's online_eval) at the exported checkpoint"


def export_checkpoint(
    ckpt_path: str | Path, out: str | Path | None = None, name: str | None = None, url: str | None = None
) -> tuple[Path, Entry]:
    """Write the backbone of the training checkpoint ``ckpt_path`` to ``out`` (safetensors) -> ``(out, entry)``.

    The entry's method, backbone, dataset and epochs come from the checkpoint's stored config, its
    SHA-256 from the written file, and its metrics from the online kNN monitor when the run saved one.
    ``name`` defaults to ``<method>-<backbone>-<dataset>-<epochs>ep``, ``out`` to ``<name>.safetensors``
    next to the checkpoint, and ``url`` to the written file's ``file://`` URL (replace it by the public URL).
    """
    ckpt = load_checkpoint(ckpt_path)
    cfg = ckpt["hyper_parameters"]["cfg"]
    arch, kwargs = backbone_spec(cfg)
    state_dict = {k: v.contiguous() for k, v in backbone_state_dict(ckpt).items()}
    load_into(backbones.build(arch, **kwargs)[0], state_dict, f"checkpoint '{ckpt_path}'")
    method, dataset, epochs = cfg["method"]["name"], cfg["data"]["name"], int(ckpt["epoch"])
    name = name or f"{method}-{arch}-{dataset}-{epochs}ep"
    out = Path(out) if out is not None else Path(ckpt_path).with_name(f"{name}.safetensors")
    data = safetensors_bytes(state_dict)
    atomic_write_bytes(out, data)
    knn = _online_knn(ckpt)
    metrics, source = ({}, "") if knn is None else ({f"{dataset}_online_knn_top1": knn}, KNN_SOURCE)
    return out, Entry(
        name=name,
        method=method,
        backbone=arch,
        backbone_kwargs=kwargs,
        dataset=dataset,
        epochs=epochs,
        metrics=metrics,
        metrics_source=source,
        url=url or out.resolve().as_uri(),
        sha256=hashlib.sha256(data).hexdigest(),
        format="sslib",
        notes=f"exported from {Path(ckpt_path).name} with scripts/export.py",
    )


def _online_knn(ckpt: dict) -> float | None:
    """The last online kNN top-1 if a checkpoint callback monitored it (``monitor`` ending in knn_top1)."""
    for state in ckpt.get("callbacks", {}).values():
        if isinstance(state, dict) and str(state.get("monitor")).endswith("knn_top1"):
            score = state.get("current_score")
            if score is not None:
                return round(float(score), 2)
    return None
