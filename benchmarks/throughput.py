"""Images per second of the whole pretraining loop, per loader and method, against the same method in lightly.

    python benchmarks/throughput.py                      # CPU: CIFAR batch 32, ImageNet-style batch 8
    python benchmarks/throughput.py --device cuda --batch-size 256 --imagenet-batch-size 128 --precision bf16

A step of the loop is what training repeats: the next batch from the loader (with its workers running
ahead), the copy to the device, the method's forward (student, EMA teacher, labeler, loss), backward,
the optimiser step of the run's config and the EMA update. Two recipes, on generated data in a
temporary folder (offline): ``cifar`` (a CIFAR-10 archive of random 32x32 images, 2 x 32 px crops,
the ``<method>_cifar10`` recipe) and ``imagenet`` (JPEGs in an image folder, 2 x 224 + 6 x 96 px crops,
the method's own defaults). Rows, for MIRA, SwAV and DINO:

- ``torchvision``, ``dali``, ``device``: sslib's loop with ``data.loader`` set so (a loader this machine or
  this version cannot run is a row saying why);
- ``lightly``: the same method, backbone (sslib's torchvision ResNet-18), batch, crops and optimiser
  hyper-parameters built from lightly's modules (SwAV: ``SwaVProjectionHead``, ``SwaVPrototypes``,
  ``SwaVLoss`` with its Sinkhorn; DINO: ``DINOProjectionHead``, ``DINOLoss``, ``update_momentum``;
  ``LARS``; ``SwaVTransform``/``DINOTransform`` in a torchvision ``DataLoader`` with the same workers).
  MIRA is not in lightly, so it has no such row. Needs ``pip install 'sslib-vision[bench]'``;
- ``torchvision, per-crop forward`` (with a lightly row): sslib's torchvision row with
  ``method.crop_forward=per_crop``, one backbone pass per crop as lightly's examples do.

A round times ``--steps`` steps of every row of a (recipe, method) group back to back, in a rotated order
(``paired.run_rounds``); images/s is the median over ``--rounds`` rounds, ``x torchvision`` the median
of per-round ratios of the torchvision row's time to the row's, and ``labeler share`` the labeler's
(synchronised) time over the step's. Verdicts (exit status 1 on a FAIL, unless ``--no-fail``): sslib's
per-crop-forward row >= the lightly row, whole loop and step; for MIRA's CIFAR recipe the on-device loader
>= 2x torchvision on CUDA (>= 1x on a CPU) and, on CUDA, the labeler < 3% of the step.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from sslib.app import methods
from sslib.app.builders import build_backbone
from sslib.app.config import compose
from sslib.app.optimizer import configure
from sslib.app.train import build_datamodule
from sslib.data.loaders import LOADERS, dali_installed
from sslib.modules.ema import ema_update

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/*.py, also when imported by path
from data import cpu_name, forever, make_cifar, make_image_folder, no_checksums  # noqa: E402
from paired import Verdict, add_verdict_arguments, median, paired_ratio, report, run_rounds, seconds  # noqa: E402
from train_step import TimedLabeler, sync  # noqa: E402

RECIPES = {  # name: (data group, extra overrides)
    "cifar": ("cifar10", []),
    "imagenet": (
        "folder",
        [
            "data.global_crops={n:2,size:224,scale:[0.14,1.0]}",
            "data.local_crops={n:6,size:96,scale:[0.05,0.14]}",
        ],
    ),
}
METHODS = ("mira", "swav", "dino")
SSLIB_LOADERS = ("torchvision", "dali", "device")
EMA_MOMENTUM = 0.996
PEER_MIN_RATIO = 1.0  # sslib's per-crop-forward row serves at least the lightly row's images/s
DEVICE_MIN_SPEEDUP = 2.0  # CUDA, MIRA CIFAR: the on-device loader >= 2x the torchvision workers
DEVICE_MIN_SPEEDUP_CPU = 1.0  # CPU, MIRA CIFAR: the on-device loader not slower than the workers
LABELER_MAX_SHARE = 0.03  # CUDA, MIRA CIFAR: the labeler's share of a step
STEP_ONLY = ", step only"  # rows that train on one kept batch: the step without the loader
# sslib's rows with lightly's crop forward (one backbone pass per crop, BatchNorm statistics per view): the
# computation the peer row does, so the peer verdicts compare like with like. The recipes' default
# (``resolution``: the crops of one size in one pass, as the official SwAV and DINO code) is ~1-2% slower on
# a 2-core CPU and normalises over all global views together.
PER_CROP = "torchvision, per-crop forward"


@dataclass
class Loop:
    """One row's training: ``train(batch)`` is one step on a loader's batch, ``batches`` the loader;
    ``labeler_s()`` the labeler's time so far (None: not measured apart)."""

    train: Callable[[object], None]
    batches: Iterator
    labeler_s: Callable[[], float | None]
    images: int

    def step(self) -> None:
        """One step of the whole loop: the next batch, then training on it."""
        self.train(next(self.batches))


class SinkhornTimer:
    """Accumulates the (synchronised) time of lightly's ``sinkhorn``, patched once into its loss module
    (``SwaVLoss`` looks the function up there at every call)."""

    seconds = 0.0
    device = torch.device("cpu")

    @classmethod
    def install(cls, device: torch.device) -> None:
        import lightly.loss.swav_loss as swav_loss

        cls.device = device
        if getattr(swav_loss.sinkhorn, "timed", False):
            return
        inner = swav_loss.sinkhorn

        def timed(*args, **kwargs):
            sync(cls.device)
            start = time.perf_counter()
            out = inner(*args, **kwargs)
            sync(cls.device)
            cls.seconds += time.perf_counter() - start
            return out

        timed.timed = True  # type: ignore[attr-defined]
        swav_loss.sinkhorn = timed


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def to_device(crops: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    return [c.to(device, non_blocking=True) for c in crops]


def compose_run(
    recipe: str, method: str, root: Path, loader: str, args, overrides: Sequence[str] = ()
) -> object:
    data, extra = RECIPES[recipe]
    batch = args.batch_size if recipe == "cifar" else args.imagenet_batch_size
    return compose(
        [f"method={method}", f"data={data}", f"data.root={root}", f"data.loader={loader}"]
        + [f"data.batch_size={batch}", f"data.num_workers={args.workers}"]
        + [f"data.persistent_workers={args.workers > 0}", f"data.pin_memory={args.device == 'cuda'}"]
        + ["baseline_eval=false", *extra, *overrides]
    )


def sslib_loop(cfg, device: torch.device, args) -> Loop:
    """sslib's loop for ``cfg``: its data module's train loader, method, optimiser and EMA update."""
    with no_checksums():
        datamodule = build_datamodule(cfg)
        datamodule.setup()
        batches: Iterator = forever(datamodule.train_dataloader())
    model = methods.build(cfg, num_classes=datamodule.num_classes, n_global=datamodule.n_global)
    model.prepare_for(device)  # channels_last where channels_last=auto takes it, as the trainer's setup does
    model = model.to(device).train()
    optimizer, _ = configure(
        cfg, model.ssl_modules(), model.probe, 1, total_steps=1000, steps_per_epoch=100.0
    )
    timer = TimedLabeler(model.labeler, device)
    amp = autocast(device, args.precision)

    def train(batch) -> None:
        crops, _, indices = batch
        crops = model.device_batch(to_device(crops, device))
        with amp:
            loss, _, _ = model.ssl_step(crops, indices)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if model.teacher is not None:
            student = model.ssl_modules()
            ema_update(model.teacher, nn.ModuleDict({k: student[k] for k in model.teacher}), EMA_MOMENTUM)

    return Loop(train, batches, lambda: timer.seconds, cfg.data.batch_size)


class PeerModel(nn.Module):
    """Backbone -> lightly head (-> lightly prototypes on L2-normalised embeddings, SwAV)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, prototypes: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone, self.head, self.prototypes = backbone, head, prototypes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(self.backbone(x).flatten(1))
        return z if self.prototypes is None else self.prototypes(nn.functional.normalize(z, dim=1))


def peer_loader(cfg, root: Path, args) -> Iterator:
    """lightly's multi-crop transform of the method with the crops of ``cfg``, in a torchvision loader."""
    from lightly.transforms import DINOTransform, SwaVTransform
    from torchvision.datasets import CIFAR10, ImageFolder

    g, loc = cfg.data.global_crops, cfg.data.local_crops
    if cfg.method.name == "swav":
        sizes, counts = (g.size,) + ((loc.size,) if loc else ()), (g.n,) + ((loc.n,) if loc else ())
        lows, highs = (
            (g.scale[0],) + ((loc.scale[0],) if loc else ()),
            (g.scale[1],) + ((loc.scale[1],) if loc else ()),
        )
        transform = SwaVTransform(
            crop_sizes=sizes, crop_counts=counts, crop_min_scales=lows, crop_max_scales=highs
        )
    else:
        transform = DINOTransform(
            global_crop_size=g.size,
            global_crop_scale=tuple(g.scale),
            local_crop_size=loc.size if loc else 96,
            local_crop_scale=tuple(loc.scale) if loc else (0.05, 0.4),
            n_local_views=loc.n if loc else 0,
        )
    if cfg.data.name == "cifar10":
        with no_checksums():
            dataset = CIFAR10(str(root), train=True, transform=transform)
    else:
        dataset = ImageFolder(str(root / "train"), transform=transform)
    loader = DataLoader(
        dataset,
        batch_size=cfg.data.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=args.device == "cuda",
        persistent_workers=args.workers > 0,
        drop_last=True,
    )
    return forever(loader)


def peer_loop(cfg, root: Path, device: torch.device, args) -> Loop:
    """The method of ``cfg`` (swav or dino) from lightly's modules on sslib's backbone, as lightly's
    examples train it (one forward per crop)."""
    from lightly.loss import DINOLoss, SwaVLoss
    from lightly.models.modules import DINOProjectionHead, SwaVProjectionHead, SwaVPrototypes
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.utils.lars import LARS

    m, lab = cfg.method, cfg.labeler
    backbone, feat_dim = build_backbone(cfg)
    teacher = None
    if m.name == "swav":
        hidden, out = m.projector_dims
        model = PeerModel(
            backbone, SwaVProjectionHead(feat_dim, hidden, out), SwaVPrototypes(out, m.num_prototypes)
        )
        criterion: nn.Module = SwaVLoss(m.student_temperature, lab.n_iters, lab.epsilon)
        SinkhornTimer.install(device)
        labeler_s: Callable[[], float | None] = lambda: SinkhornTimer.seconds  # noqa: E731
    else:  # DINO: the teacher's centring and sharpening run inside DINOLoss, not timed apart
        hidden, _, bottleneck = m.projector_dims
        head = DINOProjectionHead(feat_dim, hidden, bottleneck, m.num_prototypes, freeze_last_layer=1)
        model = PeerModel(backbone, head)
        # as lightly's DINO example: a second head (its weight-normed last layer cannot be deep-copied)
        teacher_head = DINOProjectionHead(feat_dim, hidden, bottleneck, m.num_prototypes)
        teacher = PeerModel(copy.deepcopy(backbone), teacher_head)
        teacher.load_state_dict(model.state_dict())
        deactivate_requires_grad(teacher)
        teacher.to(device)
        criterion = DINOLoss(m.num_prototypes, lab.temperature, lab.temperature, 0, m.student_temperature)
        labeler_s = lambda: None  # noqa: E731
    model.to(device).train()
    criterion.to(device)
    optimizer = LARS(model.parameters(), lr=cfg.optim.lr, momentum=0.9, weight_decay=cfg.optim.weight_decay)
    amp = autocast(device, args.precision)
    n_global = cfg.data.global_crops.n

    def train(batch) -> None:
        views = to_device(batch[0], device)
        with amp:
            if teacher is None:
                with torch.no_grad():
                    model.prototypes.normalize()
                outputs = [model(v) for v in views]
                loss = criterion(outputs[:n_global], outputs[n_global:])
            else:
                update_momentum(model, teacher, EMA_MOMENTUM)
                with torch.no_grad():
                    teacher_out = [teacher(v) for v in views[:n_global]]
                loss = criterion(teacher_out, [model(v) for v in views], epoch=0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if teacher is not None:
            model.head.cancel_last_layer_gradients(current_epoch=0)
        optimizer.step()

    return Loop(train, peer_loader(cfg, root, args), labeler_s, cfg.data.batch_size)


def lightly_version() -> str | None:
    try:
        import lightly
    except ImportError:
        return None
    return lightly.__version__


def unavailable(loader: str, recipe: str, device: torch.device) -> str | None:
    """Why sslib's ``loader`` row cannot run here (None when it can)."""
    if loader not in LOADERS:
        return f"data.loader={loader} is not in this version of sslib"
    if loader == "dali":
        if recipe == "cifar":
            return "DALI reads image folders, not the CIFAR archive"
        if not dali_installed():
            return "NVIDIA DALI is not installed"
    return None


def group_rows(recipe: str, method: str, root: Path, device: torch.device, args) -> list[dict]:
    """The rows of one (recipe, method): every loader that runs here and the lightly peer, timed in rounds."""
    loops: dict[str, Loop] = {}
    rows: list[dict] = []
    for loader in args.loaders:
        why = unavailable(loader, recipe, device)
        if why is None:
            try:
                loops[loader] = sslib_loop(compose_run(recipe, method, root, loader, args), device, args)
            except (ValueError, RuntimeError, ImportError) as err:  # e.g. DALI without a usable backend
                why = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
        if why is not None:
            rows.append({"loader": loader, "note": f"not available: {why}"})
    if args.peer and method in ("swav", "dino"):
        version = lightly_version()
        if version is None:
            rows.append({"loader": "lightly", "note": "not available: pip install 'sslib-vision[bench]'"})
        else:
            cfg = compose_run(recipe, method, root, "torchvision", args)
            per_crop = compose_run(
                recipe, method, root, "torchvision", args, ["method.crop_forward=per_crop"]
            )
            loops[PER_CROP] = sslib_loop(per_crop, device, args)
            loops[f"lightly {version}"] = peer_loop(cfg, root, device, args)
    for loop in loops.values():
        for _ in range(args.warmup):
            loop.step()
    # the step alone, on one batch kept from its loader: sslib's torchvision rows and the peer
    cases: dict[str, tuple[Loop, Callable[[], None]]] = {
        name: (loop, loop.step) for name, loop in loops.items()
    }
    for name, loop in list(loops.items()):
        if name in ("torchvision", PER_CROP) or name.startswith("lightly"):
            kept = next(loop.batches)
            cases[f"{name}{STEP_ONLY}"] = (loop, lambda loop=loop, kept=kept: loop.train(kept))
    spent = {name: 0.0 for name in cases}

    def measure(name: str) -> Callable[[], float]:
        loop, run = cases[name]

        def timed() -> float:
            before = loop.labeler_s()
            elapsed = seconds(lambda: [run() for _ in range(args.steps)], lambda: sync(device))
            if before is not None:
                spent[name] += loop.labeler_s() - before
            return elapsed

        return timed

    times = run_rounds({name: measure(name) for name in cases}, args.rounds)
    for name, (loop, _) in cases.items():
        step_s = median(times[name]) / args.steps
        rows.append(
            {
                "loader": name,
                "images_s": loop.images / step_s,
                "step_ms": step_s * 1e3,
                "x_tv": paired_ratio(times["torchvision"], times[name]) if "torchvision" in times else None,
                "labeler_share": None if loop.labeler_s() is None else spent[name] / sum(times[name]),
                "times": times[name],
            }
        )
    return rows


def make_data(root: Path, recipes: Sequence[str], args) -> None:
    if "cifar" in recipes:
        make_cifar(root, args.cifar_images)
    if "imagenet" in recipes:
        make_image_folder(root, args.images, (500, 375))


def verdicts_of(recipe: str, method: str, rows: list[dict], device: torch.device) -> list[Verdict]:
    timed = {r["loader"]: r for r in rows if "images_s" in r}
    peers = [name for name in timed if name.startswith("lightly") and not name.endswith(STEP_ONLY)]
    out = []
    ours = PER_CROP if PER_CROP in timed else "torchvision"
    for peer in peers:
        for suffix, what in (("", "whole loop"), (STEP_ONLY, "step")):
            sslib, other = timed[f"{ours}{suffix}"], timed[f"{peer}{suffix}"]
            out.append(
                Verdict(
                    f"{recipe} {method}: sslib's {what}",
                    paired_ratio(other["times"], sslib["times"]),  # per round: the peer's time over sslib's
                    f"as fast as {peer}'s",
                    at_least=PEER_MIN_RATIO,
                )
            )
    cuda = device.type == "cuda"
    if recipe == "cifar" and method == "mira" and "device" in timed and timed["device"]["x_tv"] is not None:
        out.append(
            Verdict(
                "cifar mira: on-device loader",
                timed["device"]["x_tv"],
                "the torchvision workers' speed",
                at_least=DEVICE_MIN_SPEEDUP if cuda else DEVICE_MIN_SPEEDUP_CPU,
            )
        )
    if cuda and recipe == "cifar" and method == "mira":
        for name, row in timed.items():
            out.append(
                Verdict(
                    f"cifar mira {name}: labeler",
                    row["labeler_share"] / LABELER_MAX_SHARE,
                    f"of the {LABELER_MAX_SHARE:.0%} budget ({row['labeler_share']:.2%} of a step)",
                    at_most=1.0,
                )
            )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table and the verdicts; return the exit status (1 when a verdict fails, see ``--no-fail``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--recipes", default="cifar,imagenet", help="comma-separated: cifar, imagenet")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--loaders", default=",".join(SSLIB_LOADERS), help="sslib rows: torchvision, dali, device"
    )
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="leave out the lightly rows")
    parser.add_argument("--batch-size", type=int, help="CIFAR recipe (default: 256 on CUDA, 32 on CPU)")
    parser.add_argument(
        "--imagenet-batch-size", type=int, help="ImageNet-style recipe (default: 128 on CUDA, 8 on CPU)"
    )
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers, DALI threads"
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each row per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each row first")
    parser.add_argument("--cifar-images", type=int, default=5120)
    parser.add_argument("--images", type=int, default=256, help="ImageNet-style train JPEGs (500x375)")
    add_verdict_arguments(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.batch_size = args.batch_size or (256 if cuda else 32)
    args.imagenet_batch_size = args.imagenet_batch_size or (128 if cuda else 8)
    args.loaders = args.loaders.split(",")
    recipes, method_names = args.recipes.split(","), args.methods.split(",")
    if bad := [r for r in recipes if r not in RECIPES] + [m for m in method_names if m not in METHODS]:
        parser.error(
            f"unknown recipe or method {bad[0]!r}; recipes: {', '.join(RECIPES)}; methods: {', '.join(METHODS)}"
        )

    gpu = torch.cuda.get_device_name(device) if cuda else "no GPU"
    print(
        f"# whole loop, ResNet-18, {args.precision}, {cpu_name()} ({os.cpu_count()} cores), {gpu}, torch {torch.__version__}, "
        f"lightly {lightly_version() or 'not installed'}, {args.workers} workers, {torch.get_num_threads()} threads"
    )
    print("| recipe | method | loader | images/s | x torchvision | step ms | labeler share |")
    print("|---|---|---|---:|---:|---:|---:|")
    verdicts: list[Verdict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_data(root, recipes, args)
        for recipe in recipes:
            batch = args.batch_size if recipe == "cifar" else args.imagenet_batch_size
            for method in method_names:
                rows = group_rows(recipe, method, root, device, args)
                for row in rows:
                    head = f"| {recipe} (batch {batch}) | {method} | {row['loader']} |"
                    if "note" in row:
                        print(f"{head} {row['note']} | | | |", flush=True)
                        continue
                    ratio = f"{row['x_tv']:.2f}" if row["x_tv"] is not None else ""
                    share = "" if row["labeler_share"] is None else f"{row['labeler_share']:.1%}"
                    print(
                        f"{head} {row['images_s']:.1f} | {ratio} | {row['step_ms']:.1f} | {share} |",
                        flush=True,
                    )
                verdicts += verdicts_of(recipe, method, rows, device)
    return report(verdicts, args.no_fail)


if __name__ == "__main__":
    raise SystemExit(main())
