"""Command lines of ``sslib zoo`` (list, download) and ``sslib export``; errors are one line, exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sslib.app import zoo
from sslib.app.zoo.export import export_checkpoint
from sslib.app.zoo.manifest import Entry
from sslib.errors import SslibError

ERRORS = (SslibError, OSError)  # reported as one line, exit status 2 (DownloadError is an SslibError)


def zoo_main(argv: Sequence[str] | None = None) -> int:
    """``zoo.py list`` prints the zoo as a table; ``zoo.py download NAME`` prints the cached file's path."""
    parser = argparse.ArgumentParser(prog="sslib zoo", description="sslib model zoo")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the published checkpoints")
    get = commands.add_parser("download", help="download (or find in the cache) and verify a checkpoint")
    get.add_argument("name")
    get.add_argument("--cache-dir", help="cache folder (default: $SSLIB_ZOO_CACHE or the torch hub dir)")
    get.add_argument(
        "--allow-unverified", action="store_true", help="accept an entry without a pinned sha256"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print(table(zoo.entries()))
        else:
            print(zoo.download(args.name, args.cache_dir, args.allow_unverified))
    except ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def table(entries: Sequence[Entry]) -> str:
    """The entries as an aligned text table: name, method, backbone, dataset, epochs, metric, verified."""
    header = ["name", "method", "backbone", "dataset", "epochs", "metric", "verified"]
    rows = [
        [
            e.name,
            e.method,
            e.backbone,
            e.dataset,
            str(e.epochs),
            e.headline_metric,
            "yes" if e.verified else "no",
        ]
        for e in entries
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]
    )


def export_main(argv: Sequence[str] | None = None) -> int:
    """Export a training checkpoint's backbone to safetensors and print its manifest entry (YAML)."""
    parser = argparse.ArgumentParser(
        prog="sslib export", description="sslib checkpoint -> backbone safetensors + zoo manifest entry"
    )
    parser.add_argument(
        "checkpoint", help="an sslib training checkpoint, e.g. runs/<name>/checkpoints/last.ckpt"
    )
    parser.add_argument("--out", help="output file (default: <name>.safetensors next to the checkpoint)")
    parser.add_argument("--name", help="zoo name (default: <method>-<backbone>-<dataset>-<epochs>ep)")
    parser.add_argument("--url", help="where the file will be published (default: its file:// URL)")
    args = parser.parse_args(argv)
    try:
        out, entry = export_checkpoint(args.checkpoint, args.out, args.name, args.url)
    except ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} (sha256 {entry.sha256})", file=sys.stderr)
    print(entry.to_yaml(), end="")
    return 0
