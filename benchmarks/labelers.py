"""Time the pseudo-labelers against the memory-bound floor of MIRA's loop and the paper's plain form.

For each (B, K) the labelers run in rotated rounds in one process, on cosine-similarity logits between
random unit embeddings (dim 128) and K random unit prototypes; each timed call follows an untimed call
of the same case (the steady state of a training loop, see ``time_cases``; on glibc, freed memory also
stays in the process, see ``steady_allocator``), and the median of
``--repeats`` rounds is reported with the median minor page faults per call. Ratios are medians of
per-round ratios (``paired.paired_ratio``), and the verdicts (MIRA <= 1.5x the bare loop, >= 3x faster
than the naive form) set the exit status (1 on a FAIL, unless ``--no-fail``). Rows:

* ``mira``, ``sinkhorn``, ``dino``: sslib's labelers (eval mode, so including the input checks); ``mira``
  is the default ``backend="auto"`` (on CPU torch ops launched one by one, on CUDA the loop replayed as
  one captured CUDA graph); on CUDA ``mira (torch path)`` is the same labeler with ``backend="torch"``;
* ``bare loop``: 2 (30 + 1) mat-vecs ``q @ v`` and ``r @ q`` over a precomputed B x K float32
  matrix, the reads MIRA's 30 iterations cannot avoid;
* ``naive MIRA``: Eq. 7 and Eq. 5 as written in the paper, float32, plain out-of-place ops;
* ``mira (torch.compile)`` (``--compiled``): the torch path's passes and Eq. 5 compiled by ``torch.compile``
  (inductor; the compilation, once per shape, is not timed), against the default ``mira``.

Usage: ``python benchmarks/labelers.py [--device cpu|cuda] [--repeats N] [--shapes 256x3000,...] [--no-fail]``
(``--threads 1`` when other processes load the CPU: OpenMP threads that wait for a descheduled
sibling make every op cost a scheduler time slice, which swamps MIRA's ~100 small calls).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    import resource
except ImportError:  # not on Windows
    resource = None

import sslib.labelers as L
from sslib.labelers.mira import _fixed_point, _flushed_exp, _TorchKernels

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/paired.py, also when imported by path
from paired import Verdict, add_verdict_arguments, median, paired_ratio, report, run_rounds, seconds  # noqa: E402

TAU, BETA, N_ITERS = 0.225, 2 / 3, 30
EPSILON, SK_ITERS = 0.05, 3
EMBED_DIM = 128
DEFAULT_SHAPES = "256x3000,4096x3000,1024x65536"
BIG = 2**26  # B*K from which (268 MB per float32 matrix) 3 rounds are run by default
ROUNDS_BUDGET_S = 2.0  # smaller shapes: by default as many rounds as fit in this time, 5 to 50
MIRA_MAX_RATIO, MIRA_MIN_SPEEDUP = 1.5, 3.0
COMPILED_MAX_RATIO = 1.25  # --compiled: the compiled torch path within this of the default mira
TORCH_PATH = "mira (torch path)"  # CUDA only: the default there is the captured graph


def cosine_logits(batch: int, n_clusters: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """Cosine similarities (B, K) between random unit embeddings and random unit prototypes."""
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(batch, EMBED_DIM, generator=g), dim=1)
    c = F.normalize(torch.randn(n_clusters, EMBED_DIM, generator=g), dim=1)
    return (x @ c.t()).to(device)


def bare_loop(q: torch.Tensor, v: torch.Tensor, r: torch.Tensor, n_iters: int = N_ITERS) -> torch.Tensor:
    """The floor of MIRA's loop: n_iters + 1 pairs of mat-vecs over ``q`` (B, K); returns the last."""
    for _ in range(n_iters + 1):
        s = q @ v
        m = r @ q
    return s.sum() + m.sum()


def naive_mira(
    logits: torch.Tensor, tau: float = TAU, beta: float = BETA, n_iters: int = N_ITERS
) -> torch.Tensor:
    """MIRA exactly as written in the paper (Eq. 7 from u0, then Eq. 5), float32, out-of-place ops."""
    p = torch.softmax(logits / tau, dim=1)
    pa = p ** (1 / (1 - beta))
    u = torch.softmax(logits / (tau * (1 - beta)), dim=1).mean(0) ** (1 - beta)
    for _ in range(n_iters):
        u = ((pa / (u ** (-beta / (1 - beta)) * pa).sum(1, keepdim=True)).mean(0)) ** (1 - beta)
    num = u ** (-beta / (1 - beta)) * pa
    return num / num.sum(1, keepdim=True)


def torch_path(
    logits: torch.Tensor, tau: float = TAU, beta: float = BETA, n_iters: int = N_ITERS
) -> torch.Tensor:
    """MIRA's torch path (``backend="torch"``) without the labeler's checks: what ``--compiled`` compiles."""
    kernels = _TorchKernels(_flushed_exp(logits, 1.0 / (tau * (1.0 - beta))))
    return kernels.assign(_fixed_point(kernels, beta, n_iters), out=kernels.q)


def make_cases(logits: torch.Tensor, compiled: bool = False) -> dict[str, Callable[[], torch.Tensor]]:
    """The timed callables on ``logits`` (B, K), by row name (with ``compiled``, the torch.compile row)."""
    batch, n_clusters = logits.shape
    q = torch.exp(
        (logits - logits.amax(1, keepdim=True)) / (TAU * (1 - BETA))
    )  # MIRA's matrix, normal floats
    v = torch.ones(n_clusters, device=logits.device)
    r = torch.full((batch,), 1.0 / batch, device=logits.device)
    labelers = {"mira": L.build("mira", temperature=TAU, beta=BETA, n_iters=N_ITERS)}
    if logits.device.type == "cuda":
        labelers[TORCH_PATH] = L.build("mira", temperature=TAU, beta=BETA, n_iters=N_ITERS, backend="torch")
    labelers["sinkhorn"] = L.build("sinkhorn", epsilon=EPSILON, n_iters=SK_ITERS)
    labelers["dino"] = L.build("dino", num_prototypes=n_clusters)
    cases: dict[str, Callable[[], torch.Tensor]] = {"bare loop": lambda: bare_loop(q, v, r)}
    for name, labeler in labelers.items():
        cases[name] = functools.partial(labeler.to(logits.device).eval(), logits)
    cases["naive MIRA"] = lambda: naive_mira(logits)
    if compiled:
        cases["mira (torch.compile)"] = functools.partial(torch.compile(torch_path, dynamic=False), logits)
    return cases


def steady_allocator() -> bool:
    """Keep freed memory in the process (glibc only): blocks under 32 MB never go to mmap, the heap is
    never trimmed. Then no case pays first-touch page faults for memory the previous case freed, as in
    a training loop that repeats the same shapes; larger blocks are still mapped per call (the page
    faults column shows them). False where there is no glibc ``mallopt``."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(
        libc.mallopt(m_trim_threshold, 2**31 - 1)
    )


def minor_faults() -> int:
    """Minor page faults of this process so far (0 where ``resource`` is unavailable)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0


def time_cases(
    cases: dict[str, Callable[[], torch.Tensor]], repeats: int, sync: Callable[[], None]
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Wall times (ms, one per round) and median minor page faults per call of each case.

    Each round runs every case (in a rotated order, ``paired.run_rounds``) once untimed, then once timed:
    the timed call sees the allocator and caches as a repeated call does (as in training, where the
    labeler runs on the same shapes every step). Back-to-back interleaving instead lets the previous
    case's frees be returned to the OS, and MIRA's one B x K allocation then pays a page fault per 4 KiB
    page on first touch (measured here: ~720 faults, ~4 ms at 256 x 3000, vs 0 faults inside a training loop).
    """
    faults: dict[str, list[int]] = {name: [] for name in cases}

    def steady_ms(name: str) -> Callable[[], float]:
        def measure() -> float:
            cases[name]()
            sync()
            before = minor_faults()
            ms = seconds(cases[name], sync) * 1e3
            faults[name].append(minor_faults() - before)
            return ms

        return measure

    times = run_rounds({name: steady_ms(name) for name in cases}, repeats)
    return times, {name: int(median(fs)) for name, fs in faults.items()}


def machine(device: torch.device) -> str:
    """One line: processor or GPU name, torch version, CPU threads and the 1-minute load average."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    mira = "captured CUDA graph" if device.type == "cuda" else "torch path"
    return f"{name}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads{load}; mira runs the {mira}"


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``"256x3000,1024x65536"`` -> [(256, 3000), (1024, 65536)]."""
    try:
        shapes = [tuple(int(n) for n in item.lower().split("x")) for item in text.split(",")]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise argparse.ArgumentTypeError(f"shapes must look like 256x3000,4096x3000, got {text!r}")
    return shapes  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table and the verdicts; return the exit status (1 when a verdict fails, see ``--no-fail``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--repeats", type=int, help="timed rounds per shape (default: 5-50 to fill ~2 s; 3 when B*K >= 2^26)"
    )
    parser.add_argument("--shapes", type=parse_shapes, default=parse_shapes(DEFAULT_SHAPES))
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's); 1 is steadier on a busy CPU"
    )
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="add the torch.compile row (compiles once per shape, ~10-30 s on CPU)",
    )
    add_verdict_arguments(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    allocator = "glibc malloc kept (no trim, mmap from 32 MB)" if steady_allocator() else "default allocator"

    print(f"Machine: {machine(device)}; {allocator}\n")
    print(
        "| shape (B x K) | labeler | median ms | x bare loop | mira speed-up over naive | page faults per call | NaN in output |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    verdicts = []
    for batch, n_clusters in args.shapes:
        logits = cosine_logits(batch, n_clusters, device)
        cases = make_cases(logits, args.compiled)
        t0 = time.perf_counter()
        has_nan = {name: bool(fn().isnan().any()) for name, fn in cases.items()}  # also the warm-up
        warm_s = time.perf_counter() - t0
        repeats = args.repeats or (
            3 if batch * n_clusters >= BIG else min(50, max(5, int(ROUNDS_BUDGET_S / warm_s)))
        )
        times, faults = time_cases(cases, repeats, sync)
        speedups = {
            name: paired_ratio(times["naive MIRA"], times[name])
            for name in ("mira", TORCH_PATH)
            if name in times
        }
        ratios = {name: paired_ratio(ts, times["bare loop"]) for name, ts in times.items()}
        for name, ts in times.items():
            gain = f"{speedups[name]:.1f}x" if name in speedups else ""
            nan = "" if name == "bare loop" else ("yes" if has_nan[name] else "no")
            print(
                f"| {batch}x{n_clusters} | {name} | {median(ts):.2f} | {ratios[name]:.2f} | {gain} | {faults[name]} | {nan} |"
            )
        shape = f"{batch}x{n_clusters}: mira"
        eager = TORCH_PATH in times
        verdicts.append(
            Verdict(
                shape,
                ratios["mira"],
                "the bare loop's time",
                at_most=MIRA_MAX_RATIO,
                note=f"torch path {ratios[TORCH_PATH]:.3f}x" if eager else "",
            )
        )
        verdicts.append(
            Verdict(
                shape,
                speedups["mira"],
                "faster than naive MIRA",
                at_least=MIRA_MIN_SPEEDUP,
                note=f"torch path {speedups[TORCH_PATH]:.1f}x" if eager else "",
            )
        )
        if args.compiled:
            verdicts.append(
                Verdict(
                    f"{batch}x{n_clusters}: mira (torch.compile)",
                    paired_ratio(times["mira (torch.compile)"], times["mira"]),
                    "the default mira's time",
                    at_most=COMPILED_MAX_RATIO,
                )
            )
        del logits, cases
    return report(verdicts, args.no_fail)


if __name__ == "__main__":
    raise SystemExit(main())
