"""Reproduce the MIRA paper's Figure 2: convergence of MIRA's fixed point (Eq. 7) and Sinkhorn-Knopp.

As in the paper (§4.3), each method is run for ``--ref-iters`` (1000) steps to get its converged
point, and the sum-squared error ||W_n - W_1000||^2 of the targets after step n = 1..``--iters``
(100), read with the labelers' callbacks, is averaged over ``--batches`` batches of B = 512.

The logits come from a synthetic "trained-like" prototype head instead of a checkpoint: K = 3000
random unit prototypes in R^128 (near-orthogonal, as the spread-out prototypes of a trained head),
and a data set of ``--classes`` (100) classes, each centred on its own randomly chosen prototype.
An embedding is x = normalise(c_y + sigma g / sqrt(128)) with g ~ N(0, I), so its cosine to its
class prototype is about 1 / sqrt(1 + sigma^2) and to the others about N(0, 1/128), and the
logits are the cosines to all K prototypes. sigma = 0.75 (``--noise``) puts the class prototype
at cosine ~0.8 against a bulk of +-0.09: MIRA's sharpened prediction softmax(l / (tau (1 - beta)))
gives the class prototype ~0.8 of the mass, so assignments are confident but not one-hot (the
argmax is the class prototype for every sample; DINO-like flat rows or exact one-hots would make
both iterations trivial). Everything runs in float64 so that the curves show the iterations, not
float32 rounding.

sslib's Sinkhorn-Knopp works in the log domain (stable for any epsilon but ~10 B x K exps a
step), so its 1000-step reference is computed with the equivalent scaling form of SwAV's
iteration (two mat-vecs a step; exp(l / 0.05) cannot overflow for cosine logits in float64);
the recorded steps 1..100 are sslib's.

Usage: ``python scripts/convergence.py [--batches 10] [--out docs/img/convergence.png]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
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
EMBED_DIM = 128
COLORS = {"MIRA": "tab:blue", "Sinkhorn-Knopp": "tab:orange"}
TABLE_STEPS = (1, 3, 10, 30, 100)


def structured_logits(
    prototypes: torch.Tensor, centres: torch.Tensor, batch: int, noise: float, generator: torch.Generator
) -> torch.Tensor:
    """Cosine logits (B, K) of ``batch`` embeddings drawn around random rows of ``centres`` (C, D)."""
    dim = centres.shape[1]
    labels = torch.randint(len(centres), (batch,), generator=generator)
    eps = torch.randn(batch, dim, generator=generator, dtype=centres.dtype) * (noise / dim**0.5)
    return F.normalize(centres[labels] + eps, dim=1) @ prototypes.t()


def sinkhorn_reference(logits: torch.Tensor, epsilon: float, n_iters: int) -> torch.Tensor:
    """SwAV's Sinkhorn-Knopp, rows scaled to sum to 1, in scaling form: Q = diag(a) exp(l/eps) diag(b)."""
    e = torch.exp(logits / epsilon)
    batch, n_clusters = e.shape
    a = torch.ones(batch, dtype=e.dtype)
    for _ in range(n_iters):
        b = 1.0 / (n_clusters * (a @ e))  # every column to 1/K
        a = 1.0 / (batch * (e @ b))  # every row to 1/B
    return batch * a[:, None] * e * b


def sse_curves(
    batch: int = 512,
    n_clusters: int = 3000,
    n_classes: int = 100,
    noise: float = 0.75,
    n_batches: int = 10,
    ref_iters: int = 1000,
    n_iters: int = 100,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Mean SSE to the ``ref_iters``-step point after steps 1..``n_iters``, (n_iters,) per method."""
    g = torch.Generator().manual_seed(seed)
    prototypes = F.normalize(torch.randn(n_clusters, EMBED_DIM, generator=g, dtype=torch.float64), dim=1)
    centres = prototypes[torch.randperm(n_clusters, generator=g)[:n_classes]]
    sse = {name: torch.zeros(n_iters, dtype=torch.float64) for name in COLORS}
    for _ in range(n_batches):
        logits = structured_logits(prototypes, centres, batch, noise, g)
        refs = {
            "MIRA": mira_targets(logits, TAU, BETA, ref_iters),
            "Sinkhorn-Knopp": sinkhorn_reference(logits, EPSILON, ref_iters),
        }

        def record(name: str):
            def callback(n: int, targets: torch.Tensor) -> None:
                sse[name][n - 1] += (targets - refs[name]).square().sum() / n_batches

            return callback

        mira_targets(logits, TAU, BETA, n_iters, callback=record("MIRA"))
        sinkhorn_targets(logits, EPSILON, n_iters, callback=record("Sinkhorn-Knopp"))
    return sse


def plot(curves: dict[str, torch.Tensor], out: Path, title: str) -> None:
    """Figure 2 style: SSE (log scale) against the iteration, MIRA blue and Sinkhorn-Knopp orange."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, sse in curves.items():
        ax.plot(range(1, len(sse) + 1), sse.numpy(), color=COLORS[name], label=name, linewidth=2)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("SSE to the converged point")
    ax.set_title(title, fontsize=10)
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
    parser.add_argument("--noise", type=float, default=0.75, help="sigma of the embeddings around their class")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--ref-iters", type=int, default=1000)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/img/convergence.png"))
    args = parser.parse_args(argv)
    curves = sse_curves(
        args.batch, args.clusters, args.classes, args.noise, args.batches, args.ref_iters, args.iters, args.seed
    )
    title = f"B={args.batch}, K={args.clusters}, {args.batches} batches, reference: {args.ref_iters} steps"
    plot(curves, args.out, title)
    steps = [n for n in TABLE_STEPS if n <= args.iters]
    print("| method | " + " | ".join(f"SSE n={n}" for n in steps) + " |")
    print("|---|" + "---:|" * len(steps))
    for name, sse in curves.items():
        print(f"| {name} | " + " | ".join(f"{sse[n - 1]:.2e}" for n in steps) + " |")
    print(f"\nsaved {args.out}")
    return curves


if __name__ == "__main__":
    main()
