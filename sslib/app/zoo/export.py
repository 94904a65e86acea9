"""Publish an sslib training checkpoint: its backbone as safetensors, plus the matching manifest entry."""

from __future__ import annotations

import hashlib
from pathlib import Path

from safetensors.torch import save as safetensors_bytes

from sslib import backbones
from sslib.app.builders import backbone_spec
from sslib.app.checkpoint import backbone_state_dict, load_checkpoint, trained_epochs
from sslib.app.zoo.manifest import Entry
from sslib.app.zoo.weights import load_into
from sslib.io import atomic_write_bytes
from sslib.metrics.online import CHECKPOINT_KEY


def export_checkpoint(
    ckpt_path: str | Path, out: str | Path | None = None, name: str | None = None, url: str | None = None
) -> tuple[Path, Entry]:
    """Write the backbone of the training checkpoint ``ckpt_path`` to ``out`` (safetensors) -> ``(out, entry)``.

    The entry's method, backbone and dataset come from the checkpoint's stored config, epochs from its
    training loop (epochs completed), its SHA-256 from the written file, and its metrics from the last
    online evaluation the run recorded (:func:`online_metrics`).
    ``name`` defaults to ``<method>-<backbone>-<dataset>-<epochs>ep``, ``out`` to ``<name>.safetensors``
    next to the checkpoint, and ``url`` to the written file's ``file://`` URL (replace it by the public URL).
    """
    ckpt = load_checkpoint(ckpt_path)
    cfg = ckpt["hyper_parameters"]["cfg"]
    arch, kwargs = backbone_spec(cfg)
    state_dict = {k: v.contiguous() for k, v in backbone_state_dict(ckpt).items()}
    load_into(backbones.build(arch, **kwargs)[0], state_dict, f"checkpoint '{ckpt_path}'")
    method, dataset, epochs = cfg["method"]["name"], cfg["data"]["name"], trained_epochs(ckpt)
    name = name or f"{method}-{arch}-{dataset}-{epochs}ep"
    out = Path(out) if out is not None else Path(ckpt_path).with_name(f"{name}.safetensors")
    data = safetensors_bytes(state_dict)
    atomic_write_bytes(out, data)
    metrics, source = online_metrics(ckpt)
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


def online_metrics(ckpt: dict) -> tuple[dict[str, float], str]:
    """``({"<dataset>_online_knn_top1": .., "<dataset>_online_probe_top1": ..}, source)`` from the last
    online evaluation a training checkpoint recorded (``"online_eval"``, written by ``SSLMethod``), to
    two decimals; ``({}, "")`` when the run recorded none."""
    record = ckpt.get(CHECKPOINT_KEY)
    if record is None:
        return {}, ""
    cfg = ckpt["hyper_parameters"]["cfg"]
    dataset, ev = cfg["data"]["name"], cfg["online_eval"]
    metrics = {
        f"{dataset}_online_{name}_top1": round(float(record[f"{name}_top1"]), 2) for name in ("knn", "probe")
    }
    source = (
        f"sslib online evaluation on the val split after epoch {record['epochs']}: weighted kNN top-1 "
        f"(k={ev['knn_k']}, T={ev['knn_temperature']}, bank fraction {ev['bank_fraction']}) "
        "and detached linear probe top-1"
    )
    return metrics, source
