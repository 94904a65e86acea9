"""Pre-train a backbone: ``python scripts/pretrain.py method=mira backbone=resnet18 data=cifar100``."""

from sslib.app.cli import pretrain_main

if __name__ == "__main__":
    raise SystemExit(pretrain_main())
