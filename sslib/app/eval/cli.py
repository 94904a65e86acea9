"""Command lines of ``sslib knn``, ``linear``, ``umap``, ``finetune``, ``transfer`` and
``evaluate.py``.

Each evaluates a checkpoint's frozen backbone on a dataset through a :class:`FeatureCache` and prints the
dataset, root and image size it used (given, else the run's: :mod:`sslib.app.eval.data`) above a Markdown
table (``umap.py``: the PNG's path). Arguments are checked before any data is read; errors are one line on
stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sslib.app.eval.data import EvalData, eval_cache
from sslib.app.eval.embedding import check_umap_settings, import_umap, plot_embedding, umap_embedding
from sslib.app.eval.finetune import finetune_eval, finetune_settings
from sslib.app.eval.offline import (
    FeatureCache,
    ProbeSettings,
    check_device,
    check_fraction,
    knn_eval,
    linear_probe,
)
from sslib.app.eval.report import evaluate_cache, feature_cache, parse_options, write_report
from sslib.app.eval.sources import BackboneSource, load_any_backbone, open_checkpoint
from sslib.app.eval.subsets import knn_subsets
from sslib.app.eval.transfer import c_grid
from sslib.app.eval.transfer_data import TRANSFER_DATASETS, parse_source, transfer_eval
from sslib.app.markdown import markdown_table
from sslib.app.zoo.manifest import FORMATS
from sslib.data import DATASET_STATS
from sslib.data.digits import check_split
from sslib.distributed import require_one_process
from sslib.errors import ConfigError, SslibError
from sslib.validation import check_int_at_least, check_positive

ERRORS = (SslibError, OSError, ImportError)  # reported as one line, exit status 2


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The arguments every tool shares: checkpoint, dataset and how to extract its features."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--ckpt", required=True, help="a checkpoint: an sslib run's .ckpt, zoo:<name>, or --format"
    )
    parser.add_argument(
        "--data",
        help=f"dataset: {', '.join(DATASET_STATS)} (default: the checkpoint's run's, else digits)",
    )
    parser.add_argument(
        "--root", help="dataset folder (default: the run's, when evaluating its dataset, else data)"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        help="evaluation image side (default: the run's crop size, else the dataset's native size, else 224)",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="feature-extraction batch size")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loading processes")
    parser.add_argument("--device", help="e.g. cpu or cuda:0 (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0, help="seed of label subsets / probe / UMAP")
    _source_arguments(parser)
    return parser


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--format``, ``--arch``, ``--cifar-stem``: read a checkpoint that is not an sslib run."""
    parser.add_argument(
        "--format", default="sslib", help=f"checkpoint format: {', '.join(FORMATS)} (default: sslib)"
    )
    parser.add_argument("--arch", help="backbone of a checkpoint that is not an sslib run, e.g. resnet50")
    parser.add_argument("--cifar-stem", action="store_true", help="that backbone has the CIFAR stem")


def _source(args: argparse.Namespace) -> tuple[Path, BackboneSource]:
    """The checkpoint file (``zoo:<name>`` downloaded) and how to read its backbone."""
    return open_checkpoint(args.ckpt, args.format, args.arch, args.cifar_stem)


def _cache(args: argparse.Namespace) -> tuple[FeatureCache, EvalData]:
    """The feature cache of the checkpoint on what :func:`sslib.app.eval.data.eval_data` picks, and the pick."""
    return eval_cache(
        *_source(args), args.data, args.root, args.image_size, args.batch_size, args.num_workers, args.device
    )


def _with_header(data: EvalData, text: str) -> str:
    """``text`` below the line saying what it was evaluated on."""
    return f"{data.describe()}\n\n{text}"


def _run(task: Callable[[], str]) -> int:
    """Print ``task()``; an expected error is one line on stderr and exit status 2."""
    try:
        require_one_process("the evaluation tools")
        print(task())
    except ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def parse_fractions(text: str) -> list[float]:
    """``"1,0.1,0.01"`` -> ``[1.0, 0.1, 0.01]``; anything else is a one-line ``ConfigError``."""
    try:
        fractions = [float(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--fractions must be comma-separated numbers in (0, 1], got {text!r}") from None
    return [check_fraction(f) for f in fractions]


def knn_main(argv: Sequence[str] | None = None) -> int:
    """Weighted kNN top-1/top-5 of the val split with 100%, 10%, 1% (``--fractions``) of the train labels."""
    parser = _parser("sslib knn", "weighted kNN on frozen features, per fraction of train labels")
    parser.add_argument("--k", type=int, default=20, help="neighbours (default: 20)")
    parser.add_argument("--temperature", type=float, default=0.07, help="vote temperature (default: 0.07)")
    parser.add_argument("--fractions", default="1,0.1,0.01", help="labelled fractions (default: 1,0.1,0.01)")
    args = parser.parse_args(argv)

    def task() -> str:
        check_int_at_least("--k", args.k, 1)
        check_positive("--temperature", args.temperature)
        fractions = parse_fractions(args.fractions)
        cache, data = _cache(args)
        results = knn_eval(
            *cache.features("train"),
            *cache.features("val"),
            k=args.k,
            temperature=args.temperature,
            fractions=fractions,
            seed=args.seed,
            num_classes=cache.stats.num_classes,
            subsets=knn_subsets(cache, fractions, args.seed),
        )
        rows = [
            [
                f"{100 * f:g}%",
                str(args.k),
                f"{args.temperature:g}",
                f"{acc['top1']:.2f}",
                f"{acc['top5']:.2f}",
            ]
            for f, acc in results.items()
        ]
        return _with_header(data, markdown_table(["labels", "k", "T", "top-1", "top-5"], rows))

    return _run(task)


def linear_main(argv: Sequence[str] | None = None) -> int:
    """Linear-probe top-1/top-5 of the val split: on precomputed features, or ``--augment``-ed images."""
    parser = _parser("sslib linear", "linear probe on a frozen backbone")
    defaults = ProbeSettings()
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--probe-batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument(
        "--augment",
        action="store_true",
        help="train on random resized crops + flips through the backbone (paper protocol; slow) "
        "instead of precomputed center-crop features",
    )
    args = parser.parse_args(argv)

    def task() -> str:
        settings = ProbeSettings(
            args.epochs, args.lr, args.probe_batch_size, args.weight_decay, seed=args.seed
        )
        cache, data = _cache(args)
        acc = linear_probe(cache, settings, args.augment, cache.device)
        protocol = "augmented images" if args.augment else "frozen features"
        row = [protocol, str(settings.epochs), f"{acc['top1']:.2f}", f"{acc['top5']:.2f}"]
        return _with_header(data, markdown_table(["linear probe", "epochs", "top-1", "top-5"], [row]))

    return _run(task)


def umap_main(argv: Sequence[str] | None = None) -> int:
    """Save a UMAP plot of a split's features coloured by class and print its path."""
    parser = _parser("sslib umap", "UMAP of frozen features, coloured by class (needs sslib-vision[umap])")
    parser.add_argument("--split", default="val", help="train or val (default: val)")
    parser.add_argument("--out", help="PNG path (default: <checkpoint>-umap-<data>-<split>.png next to it)")
    parser.add_argument("--n-neighbors", type=int, default=15, help="UMAP neighbours, >= 2 (default: 15)")
    parser.add_argument("--min-dist", type=float, default=0.1, help="UMAP min_dist in [0, 1] (default: 0.1)")
    args = parser.parse_args(argv)

    def task() -> str:
        import_umap()  # fail before extracting anything
        check_split(args.split)
        check_umap_settings(args.n_neighbors, args.min_dist)
        cache, data = _cache(args)
        features, labels = cache.features(args.split)
        points = umap_embedding(features, args.n_neighbors, args.min_dist, args.seed)
        ckpt = cache.checkpoint
        out = args.out or ckpt.with_name(f"{ckpt.stem}-umap-{data.name}-{args.split}.png")
        title = f"{ckpt.name}: {data.name} {args.split}, {data.image_size} px"
        path = plot_embedding(points, labels, out, title, cache.class_names(args.split))
        return _with_header(data, str(path))

    return _run(task)


def finetune_main(argv: Sequence[str] | None = None) -> int:
    """Top-1/top-5 of the val split after fine-tuning the backbone + a linear head on 1%, 10% of labels."""
    parser = _parser("sslib finetune", "semi-supervised fine-tuning of the whole backbone")
    parser.add_argument("--fractions", default="0.01,0.1", help="labelled fractions (default: 0.01,0.1)")
    parser.add_argument("--protocol", default="swav", help="settings preset: swav or simclr (default: swav)")
    parser.add_argument("--subset-file", help="train images to label, one file name per line (one fraction)")
    parser.add_argument("--epochs", type=int, help="override the preset's epochs")
    parser.add_argument("--backbone-lr", type=float, help="override the preset's backbone lr (batch 256)")
    parser.add_argument("--head-lr", type=float, help="override the preset's head lr (batch 256)")
    parser.add_argument("--finetune-batch-size", type=int, help="override the preset's batch size (256)")
    args = parser.parse_args(argv)
    overrides = {
        "epochs": args.epochs,
        "backbone_lr": args.backbone_lr,
        "head_lr": args.head_lr,
        "batch_size": args.finetune_batch_size,
    }

    def task() -> str:
        fractions = parse_fractions(args.fractions)
        if args.subset_file and len(fractions) != 1:
            raise ConfigError(
                f"--subset-file gives one labelled subset; pass one --fractions, got {args.fractions}"
            )
        plan = [(f, finetune_settings(args.protocol, f, args.seed, overrides)) for f in fractions]
        cache, data = _cache(args)
        rows = []
        for fraction, settings in plan:
            acc = finetune_eval(cache, fraction, settings, args.subset_file)
            label = Path(args.subset_file).name if args.subset_file else f"{100 * fraction:g}%"
            rows.append(
                [label, args.protocol, str(settings.epochs), f"{acc['top1']:.2f}", f"{acc['top5']:.2f}"]
            )
        return _with_header(data, markdown_table(["labels", "protocol", "epochs", "top-1", "top-5"], rows))

    return _run(task)


def transfer_main(argv: Sequence[str] | None = None) -> int:
    """Linear transfer (Table 5): logistic regression on frozen features of each ``--data NAME:ROOT``."""
    parser = argparse.ArgumentParser(
        prog="sslib transfer", description="linear transfer evaluation of a frozen backbone"
    )
    parser.add_argument(
        "--ckpt", required=True, help="a checkpoint: an sslib run's .ckpt, zoo:<name>, or --format"
    )
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        help=f"NAME:ROOT, repeatable; NAME: {', '.join(TRANSFER_DATASETS)}",
    )
    parser.add_argument("--download", action="store_true", help="let torchvision download missing datasets")
    parser.add_argument("--image-size", type=int, default=224, help="evaluation image side (default: 224)")
    parser.add_argument("--num-c", type=int, default=45, help="values of C tried on val (default: 45)")
    parser.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations (default: 1000)")
    parser.add_argument("--batch-size", type=int, default=256, help="feature-extraction batch size")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loading processes")
    parser.add_argument("--device", help="e.g. cpu or cuda:0 (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the val split drawn from train")
    _source_arguments(parser)
    args = parser.parse_args(argv)

    def task() -> str:
        sources = [parse_source(text) for text in args.data]
        cs = c_grid(args.num_c)
        for flag, value, minimum in [
            ("--image-size", args.image_size, 1), ("--max-iter", args.max_iter, 1),
            ("--batch-size", args.batch_size, 1), ("--num-workers", args.num_workers, 0),
        ]:  # fmt: skip
            check_int_at_least(flag, value, minimum)
        device = check_device(args.device)
        backbone = load_any_backbone(*_source(args))
        rows = []
        for name, root in sources:
            result = transfer_eval(
                backbone, name, root, args.image_size, args.batch_size, args.num_workers, device,
                args.download, cs, args.max_iter, args.seed,
            )  # fmt: skip
            rows.append([name, str(root), result.metric, f"{result.c:.3g}", f"{result.score:.2f}"])
        return markdown_table(["dataset", "root", "metric", "C", "score"], rows)

    return _run(task)


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """Run a suite of protocols on one checkpoint and write its Markdown + CSV + PNG report."""
    parser = argparse.ArgumentParser(
        prog="sslib evaluate",
        description="evaluation report of one checkpoint: CKPT [suite=quick|paper|knn|linear|finetune|transfer] "
        "[key=value ...] (keys: see docs/evaluation.md)",
    )
    parser.add_argument("checkpoint", help="a checkpoint file, or zoo:<name>")
    parser.add_argument("options", nargs="*", help="suite=... and key=value settings")
    args = parser.parse_args(argv)

    def task() -> str:
        suite, options = parse_options(args.options)
        cache, data = feature_cache(args.checkpoint, options)
        rows = evaluate_cache(cache, suite, options)
        paths = write_report(rows, args.checkpoint, suite, options, data)
        table = [[r.protocol, r.dataset, r.setting, r.metric, f"{r.value:.2f}"] for r in rows]
        listing = "\n".join(f"wrote {p}" for p in paths)
        header = ["protocol", "dataset", "setting", "metric", "value"]
        return _with_header(data, markdown_table(header, table) + "\n" + listing)

    return _run(task)
