"""Publish a checkpoint: ``python scripts/export.py runs/<name>/checkpoints/last.ckpt [--url URL] > entry.yaml``."""

from sslib.app.zoo.cli import export_main

if __name__ == "__main__":
    raise SystemExit(export_main())
