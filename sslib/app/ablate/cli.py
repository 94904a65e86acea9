"""Command line of ``sslib ablate`` (``scripts/ablate.py``): the runner's settings plus shared overrides, one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sslib.app.config import options
from sslib.errors import SslibError

USAGE = """usage: sslib ablate methods=[a,b,...] | labelers=[a,b,...] [seeds=[0,1,2]] [reference=ROW] [budget=recipes] [out=DIR]
                    [launcher=inline|local|slurm] [launcher.KEY=VALUE ...] [eval.KEY=VALUE ...]
                    [group=option ...] [key=value ...] [--status]

Trains every run on the same data, backbone and epochs, evaluates each final checkpoint (weighted kNN
k=20 T=0.07 cosine, linear probe), and writes a Markdown table, a CSV and a plot of online kNN top-1 by epoch
into out=DIR (default runs/ablate-<data>-<methods>[-<labelers>]). The same command again starts only the
runs that are missing or failed (finished runs are skipped, interrupted ones resumed, queued and running
ones left alone). The lists give their cross product; all other arguments are shared by every run.
  methods=[...]          methods to compare ({methods})
  labelers=[...]         labelers to compare on each method ({labelers})
  seeds=[0,1,2]          train every row with each seed: mean, sd and 95% interval over seeds
  reference=ROW          also give each row's difference to ROW (e.g. mira), paired by seed
  budget=recipes         let each method keep its recipe's augmentations (default budget=shared: the runs
                         must share seed, epochs, data.* and backbone.*)
  launcher=inline        one run after another in this process (default)
  launcher=local         runs in parallel processes: launcher.gpus_per_run=1, launcher.parallel=N
  launcher=slurm         each run a SLURM job (submitit): launcher.partition, .account, .qos, .constraint,
                         .time=24:00:00, .nodes=1, .gpus_per_node=1, .cpus_per_task, .mem_gb,
                         .setup=["module load cuda"], .array_parallelism=256, .signal_delay_s=180
  --status               print each run's state (job, progress, end of the log of failed ones); start nothing
  eval.linear_epochs=30  linear-probe epochs (on frozen center-crop features); eval.linear_lr=0.1
  eval.knn_k=20          kNN neighbours; eval.knn_temperature=0.07
examples:
  sslib ablate methods=[mira,swav,dino] data=digits
  sslib ablate method=mira labelers=[mira,sinkhorn,dino] data=digits trainer.max_epochs=20
  sslib ablate methods=[mira,swav,dino] data=cifar10 data.root=/data/cifar budget=recipes seeds=[0,1,2] \\
      reference=mira launcher=slurm launcher.partition=gpu"""


def ablate_main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``). Exit status: 0 when every run has
    finished or is queued or running, 1 when some failed, 2 on bad input, ``128 + signal`` when SIGTERM or
    SIGUSR1 stopped an inline run after saving its ``last.ckpt``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(args):
        print(USAGE.format(methods=", ".join(options("method")), labelers=", ".join(options("labeler"))))
        return 0
    try:
        from sslib.app.ablate.plan import make_plan  # heavy imports (lightning) only past --help
        from sslib.app.ablate.report import PLOT_FILE
        from sslib.app.ablate.state import FINISHED, counts
        from sslib.app.ablate.sweep import run_ablation, sweep_status
        from sslib.app.callbacks import Preempted
        from sslib.app.cli import stopped
        from sslib.distributed import require_one_process

        require_one_process("sslib ablate and its evaluations", "trainer.accelerator=...")
        plan = make_plan([a for a in args if a != "--status"])
        if "--status" in args:
            print(sweep_status(plan))
            return 0
        outcome = run_ablation(plan)
    except (SslibError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Preempted as stop:
        return stopped(stop)
    if any(status.state == FINISHED for status in outcome.statuses):
        print(f"\n{outcome.table}\n\ntable, CSV and {PLOT_FILE} in {plan.out}")
    if not outcome.finished:
        print(
            f"{counts(outcome.statuses)} of {len(outcome.statuses)} runs: follow them with the same command "
            "and --status; the same command again starts the failed and missing ones"
        )
    return 1 if outcome.failed else 0
