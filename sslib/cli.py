"""``python scripts/pretrain.py [group=option] [key=value] ...``: Hydra-style overrides, one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omegaconf import OmegaConf

from sslib.config import GROUPS, ConfigError, compose, options

USAGE = """usage: python scripts/pretrain.py [group=option ...] [key=value ...] [--cfg]

Trains a self-supervised backbone; with no arguments, MIRA on the embedded digits dataset (CPU, offline).
  --cfg     print the composed config and exit
examples:
  python scripts/pretrain.py method=mira backbone=resnet18 data=cifar100
  python scripts/pretrain.py method=mira labeler=sinkhorn trainer.max_epochs=20
groups:
"""


def pretrain_main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(args):
        print(USAGE + "\n".join(f"  {g:9s} {', '.join(options(g))}" for g in GROUPS))
        return 0
    show_cfg = "--cfg" in args
    overrides = [a for a in args if a != "--cfg"]
    try:
        cfg = compose(overrides)
        if show_cfg:
            print(OmegaConf.to_yaml(cfg))
            return 0
        from sslib.train import pretrain  # heavy imports only when training

        results = pretrain(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report(results, cfg.run_dir)
    return 0


def report(results: dict[str, float], run_dir: str) -> None:
    knn = results.get("val/knn_top1")
    if knn is None:
        print(f"done; outputs in {run_dir}")
        return
    line = f"online kNN top-1 (k=20, cosine): {knn:.2f}%"
    if "baseline/knn_top1" in results:
        line += f" (random-init backbone: {results['baseline/knn_top1']:.2f}%)"
    print(f"{line}; outputs in {run_dir}")
