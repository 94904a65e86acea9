"""Reproduce the MIRA paper's Figure 2: convergence of MIRA's fixed point (Eq. 7) and Sinkhorn-Knopp.

As in the paper (§4.3), each method is run for ``--ref-iters`` (1000) steps to get its converged
point, and the sum-squared error ||W_n - W_1000||^2 of the targets after step n = 1..``--iters``
(100), read with the labelers' callbacks, is averaged over ``--batches`` batches of B = 512.
MIRA uses tau = 0.225, beta = 2/3 and Sinkhorn-Knopp (SK) epsilon = 0.05, the papers' defaults.

The logits come from a synthetic "trained-like" prototype head instead of a checkpoint: K = 3000
random unit prototypes, and a data set of ``--classes`` (100) classes, each centred on its own
randomly chosen prototype. An embedding is x = normalise(c_y + sigma g / sqrt(d)), g ~ N(0, I_d),
so its cosine to its class prototype is about 1 / sqrt(1 + sigma^2); the logits are its cosines
to all K prototypes. Choices:

* d = 32 (``--dim``), not the head's 128: a trained head's prototypes tile the data manifold,
  which has a low effective dimension, so a sample has graded similarities to many prototypes
  (cosine spread ~0.18 here). K random prototypes in R^128 are near-orthogonal (all cosines
  0 +- 0.09, an untrained-looking flat background) and there both methods reach the float32
  floor within ~10 steps, SK slightly first; the lower d is what makes SK slow, as in the paper.
* sigma = 0.5 (``--noise``): cosine ~0.9 to the class prototype, and MIRA's sharpened prediction
  softmax(l / (tau (1 - beta))) gives it ~0.8 of the mass on average: confident but not
  one-hot (the converged MIRA targets have their argmax on the class prototype for ~98% of the
  samples). One-hot or flat rows would make both iterations trivial.

The iterations run in float32, as the labelers do in training, so the curves level off at
float32 rounding (~1e-12); the reference points are computed in float64 (``--dtype float64``
runs the iterations in float64 too). sslib's SK works in the log domain (~10 B x K passes with
2 exps a step), so its 1000-step reference uses SwAV's equivalent scaling form (two mat-vecs a
step; exp(l / 0.05) cannot overflow for cosine logits); the recorded steps are sslib's.

Usage: ``python scripts/convergence.py [--batches 10] [--out docs/img/convergence.png]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import torch
import torch.nn.functional as F

from sslib.labelers.mira import mira_targets
from sslib.labelers.sinkhorn import sinkhorn_targets

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the backend)

TAU, BETA = 0.225, 2 / 3  # MIRA defaults
EPSILON = 0.05  # SwAV's Sinkhorn-Knopp default
COLORS = {"MIRA": "tab:blue", "Sinkhorn-Knopp": "tab:orange"}
TABLE_STEPS = (1, 3, 10, 30, 100)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "img" / "convergence.png"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def structured_logits(
    prototypes: torch.Tensor, centres: torch.Tensor, batch: int, noise: float, generator: torch.Generator
) -> torch.Tensor:
    """Cosine logits (B, K) of ``batch`` unit embeddings drawn around random rows of ``centres`` (C, d)."""
    dim = centres.shape[1]
    labels = torch.randint(len(centres), (batch,), generator=generator)
    eps = torch.randn(batch, dim, generator=generator, dtype=centres.dtype) * (noise / dim**0.5)
    return F.normalize(centres[labels] + eps, dim=1) @ prototypes.t()


def sinkhorn_reference(logits: torch.Tensor, epsilon: float, n_iters: int) -> torch.Tensor:
    """SwAV's Sinkhorn-Knopp in scaling form, Q = B diag(a) exp(l / eps) diag(b), rows summing to 1."""
    e = torch.exp(logits / epsilon)
    batch, n_clusters = e.shape
    a = torch.ones(batch, dtype=e.dtype)
    for _ in range(n_iters):
        b = 1.0 / (n_clusters * (a @ e))  # every column to 1/K
        a = 1.0 / (batch * (e @ b))  # every row to 1/B
    return batch * a[:, None] * e * b


def sse_recorder(ref: torch.Tensor, sse: torch.Tensor, weight: float) -> Callable[[int, torch.Tensor], None]:
    """A labeler callback adding ``weight * ||W_n - ref||^2`` to ``sse[n - 1]`` (no B x K allocation)."""
    diff = torch.empty_like(ref)

    def callback(n: int, targets: torch.Tensor) -> None:
        sse[n - 1] += weight * torch.sub(targets, ref, out=diff).square_().sum().item()

    return callback


def sse_curves(
    batch: int = 512,
    n_clusters: int = 3000,
    n_classes: int = 100,
    dim: int = 32,
    noise: float = 0.5,
    n_batches: int = 10,
    ref_iters: int = 1000,
    n_iters: int = 100,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Mean SSE to the ``ref_iters``-step point after steps 1..``n_iters``: float64 (n_iters,) per method."""
    g = torch.Generator().manual_seed(seed)
    prototypes = F.normalize(torch.randn(n_clusters, dim, generator=g, dtype=torch.float64), dim=1)
    centres = prototypes[torch.randperm(n_clusters, generator=g)[:n_classes]]
    sse = {name: torch.zeros(n_iters, dtype=torch.float64) for name in COLORS}
    for _ in range(n_batches):
        logits = structured_logits(prototypes, centres, batch, noise, g)
        mira_ref = mira_targets(logits, TAU, BETA, ref_iters).to(dtype)
        sinkhorn_ref = sinkhorn_reference(logits, EPSILON, ref_iters).to(dtype)
        logits = logits.to(dtype)
        weight = 1 / n_batches
        mira_targets(logits, TAU, BETA, n_iters, callback=sse_recorder(mira_ref, sse["MIRA"], weight))
        sinkhorn_targets(
            logits, EPSILON, n_iters, callback=sse_recorder(sinkhorn_ref, sse["Sinkhorn-Knopp"], weight)
        )
    return sse


def plot(curves: dict[str, torch.Tensor], out: Path, title: str) -> None:
    """Figure 2 style: SSE (log scale) against the step, MIRA blue and Sinkhorn-Knopp orange."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, sse in curves.items():
        ax.plot(range(1, len(sse) + 1), sse.numpy(), color=COLORS[name], label=name, linewidth=2)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("sum-squared error")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=3000, help="prototypes K")
    parser.add_argument("--classes", type=int, default=100, help="classes of the synthetic data")
    parser.add_argument("--dim", type=int, default=32, help="dimension of embeddings and prototypes")
    parser.add_argument("--noise", type=float, default=0.5, help="sigma of the embeddings around their class")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--ref-iters", type=int, default=1000)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="of the recorded steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    curves = sse_curves(
        batch=args.batch,
        n_clusters=args.clusters,
        n_classes=args.classes,
        dim=args.dim,
        noise=args.noise,
        n_batches=args.batches,
        ref_iters=args.ref_iters,
        n_iters=args.iters,
        dtype=DTYPES[args.dtype],
        seed=args.seed,
    )
    plot(
        curves,
        args.out,
        f"B={args.batch}, K={args.clusters}, {args.dtype}, mean of {args.batches} batches\n"
        f"SSE to the point after {args.ref_iters} steps",
    )
    steps = [n for n in TABLE_STEPS if n <= args.iters]
    print("| method | " + " | ".join(f"SSE n={n}" for n in steps) + " |")
    print("|---|" + "---:|" * len(steps))
    for name, sse in curves.items():
        print(f"| {name} | " + " | ".join(f"{sse[n - 1]:.2e}" for n in steps) + " |")
    print(f"\nsaved {args.out}")
    return curves


if __name__ == "__main__":
    main()
