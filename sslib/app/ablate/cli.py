"""Command line of ``sslib ablate`` (``scripts/ablate.py``): the runner's settings plus shared overrides, one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sslib.app.config import options
from sslib.errors import SslibError

USAGE = """usage: sslib ablate methods=[a,b,...] | labelers=[a,b,...] [out=DIR] [eval.KEY=VALUE ...]
                          [group=option ...] [key=value ...]

Trains every run on the same seed, data, backbone and epochs, evaluates each final checkpoint (weighted kNN
k=20 T=0.07 cosine, linear probe), and writes a Markdown table, a CSV and a plot of online kNN top-1 by epoch
into out=DIR (default runs/ablate-<data>-<methods>[-<labelers>]). Finished runs are skipped, interrupted ones
resumed. Both lists give their cross product; all other arguments are shared by every run.
  methods=[...]          methods to compare ({methods})
  labelers=[...]         labelers to compare on each method ({labelers})
  eval.linear_epochs=30  linear-probe epochs (on frozen center-crop features); eval.linear_lr=0.1
  eval.knn_k=20          kNN neighbours; eval.knn_temperature=0.07
examples:
  sslib ablate methods=[mira,swav,dino] data=digits
  sslib ablate method=mira labelers=[mira,sinkhorn,dino] data=digits trainer.max_epochs=20"""


def ablate_main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(args):
        print(USAGE.format(methods=", ".join(options("method")), labelers=", ".join(options("labeler"))))
        return 0
    try:
        from sslib.app.ablate.plan import make_plan  # heavy imports (lightning) only past --help
        from sslib.app.ablate.runner import PLOT_FILE, run_ablation
        from sslib.distributed import require_one_process

        require_one_process("sslib ablate and its evaluations", "trainer.accelerator=...")
        plan = make_plan(args)
        table = run_ablation(plan)
    except (SslibError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"\n{table}\n\ntable, CSV and {PLOT_FILE} in {plan.out}")
    return 0
