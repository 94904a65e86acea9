"""The ablation's report, written from the runs that have finished: ``ablation.md`` (the table),
``ablation.csv`` (one line per run) and ``knn_top1.png`` (the online kNN curves)."""

from __future__ import annotations

from pathlib import Path

from sslib.app.ablate.metrics import knn_curve
from sslib.app.ablate.plan import RANDOM_INIT, Plan
from sslib.app.ablate.plot import plot_knn_curves
from sslib.app.ablate.runner import load_result
from sslib.app.ablate.table import Row, markdown, write_csv
from sslib.io import atomic_write_text

TABLE_FILE, CSV_FILE, PLOT_FILE = "ablation.md", "ablation.csv", "knn_top1.png"


def write_report(plan: Plan) -> str:
    """Write the table, the CSV and the plot of ``plan``'s finished runs into ``plan.out`` (rows or seeds
    not finished yet are marked missing); return the Markdown table."""
    finished = [(run, load_result(run, plan.eval)) for run in plan.tasks]
    rows = []
    for name in plan.rows:
        runs = [run for run in plan.tasks if run.name == name]
        results = {run.seed: result for run, result in finished if run.name == name and result}
        rows.append(Row(runs[0].method, runs[0].labeler, results, len(runs)))
    table = markdown(rows, plan.eval, plan.replicated, plan.reference)
    atomic_write_text(plan.out / TABLE_FILE, table + "\n")
    write_csv([(run.seed, result) for run, result in finished if result], plan.out / CSV_FILE)
    curves: dict[str, list] = {}
    for run, result in finished:
        if run.method != RANDOM_INIT:
            curves.setdefault(run.name, []).extend([knn_curve(Path(run.cfg.run_dir))] if result else [])
    title = f"online kNN top-1, {plan.runs[0].cfg.data.name}"
    if plan.replicated:
        title += ", mean over seeds (band: 95% CI)"
    plot_knn_curves(curves, plan.out / PLOT_FILE, title=title)
    return table
