"""Statistics over seeds against scipy.stats, and the table, CSV and plot that report them."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from sslib.app.ablate.plan import EvalSettings
from sslib.app.ablate.plot import mean_curve, plot_knn_curves
from sslib.app.ablate.stats import paired_difference, summarize
from sslib.app.ablate.table import Result, Row, markdown, write_csv


def test_summary_and_paired_difference_match_scipy():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 10):
        values = list(rng.normal(90, 2, n))
        summary = summarize(values)
        low, high = stats.t.interval(0.95, n - 1, loc=np.mean(values), scale=stats.sem(values))
        assert summary is not None and summary.n == n
        assert summary.mean == pytest.approx(np.mean(values)) and summary.sd == pytest.approx(
            np.std(values, ddof=1)
        )
        assert (summary.low, summary.high) == (pytest.approx(low), pytest.approx(high))

        reference = {seed: v - rng.normal(0.5, 0.3) for seed, v in enumerate(values)}
        pair = paired_difference({seed: v for seed, v in enumerate(values)}, reference)
        expected = stats.ttest_rel(values, [reference[s] for s in range(n)]).confidence_interval(0.95)
        assert pair is not None and pair.n == n
        assert (pair.low, pair.high) == (pytest.approx(expected.low), pytest.approx(expected.high))
    one = summarize([91.5])
    assert one is not None and (one.mean, one.sd, one.n, one.low, one.high) == (91.5, None, 1, None, None)
    assert summarize([]) is None and paired_difference({0: 1.0}, {1: 2.0}) is None  # no common seed


def result(method: str, labeler: str | None, knn: float, linear: float, seconds: float = 60.0) -> Result:
    return Result(method, labeler, 10, seconds, knn, linear, 20 if labeler else None, 30 if labeler else None)


def cells(table: str, first: str) -> list[str]:
    """The cells of the first Markdown row of ``table`` that starts with ``first``."""
    line = next(ln for ln in table.splitlines() if ln.startswith(f"| {first} "))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_replicated_table_gives_mean_sd_interval_and_paired_differences():
    mira = {0: (96.0, 95.0), 1: (97.0, 96.5), 2: (95.5, 96.0)}
    swav = {0: (95.0, 94.0), 1: (96.0, 95.0)}  # seed 2 not finished
    rows = [
        Row("mira", "mira", {s: result("mira", "mira", *v) for s, v in mira.items()}, 3),
        Row(
            "swav", "sinkhorn", {s: result("swav", "sinkhorn", *v, seconds=90.0) for s, v in swav.items()}, 3
        ),
        Row("dino", "dino", {}, 3),
    ]
    table = markdown(rows, EvalSettings(), replicated=True, reference="mira-mira")

    knn = [v[0] for v in mira.values()]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(knn), scale=stats.sem(knn))
    assert cells(table, "mira")[:7] == [
        "mira", "mira", "3", "10", "1m00s",
        f"{np.mean(knn):.2f} ± {np.std(knn, ddof=1):.2f}", f"[{low:.2f}, {high:.2f}]",
    ]  # fmt: skip
    assert cells(table, "swav")[2:5] == ["2 of 3", "10", "1m30s"] and cells(table, "swav")[-1] == "20 / 30"
    assert cells(table, "dino") == ["dino", "dino", "0 of 3", *["missing"] * 7]

    differences = table.split("Difference to mira-mira", 1)[1]
    d = [swav[s][1] - mira[s][1] for s in swav]  # linear top-1, paired over seeds 0 and 1
    interval = stats.ttest_rel([swav[s][1] for s in swav], [mira[s][1] for s in swav]).confidence_interval(
        0.95
    )
    assert cells(differences, "swav")[2] == "2"
    assert cells(differences, "swav")[5:] == [
        f"{np.mean(d):+.2f} ± {np.std(d, ddof=1):.2f}",
        f"[{interval.low:+.2f}, {interval.high:+.2f}]",
    ]
    assert cells(differences, "dino")[2:] == ["0", *["missing"] * 4]
    assert "| mira |" not in differences.split("\n\n")[1]  # the reference is not compared with itself

    single = markdown([Row("mira", "mira", {0: result("mira", "mira", 96.0, 95.0)}, 1)], EvalSettings())
    assert "| mira | mira | 10 | 1m00s | 96.00 | 95.00 | 20 / 30 |" in single and "CI" not in single


def test_csv_has_one_line_per_run_and_plot_bands_the_mean(tmp_path):
    runs = [(0, result("mira", "mira", 96.0, 95.0)), (1, result("mira", "mira", 97.0, 96.0))]
    write_csv(runs, tmp_path / "ablation.csv")
    rows = list(csv.DictReader((tmp_path / "ablation.csv").open()))
    assert [(r["method"], r["seed"], r["knn_top1"]) for r in rows] == [
        ("mira", "0", "96.0"),
        ("mira", "1", "97.0"),
    ]

    curves = [
        [(0, 90.0), (1, 92.0), (2, 94.0)],
        [(0, 90.0), (1, 93.0)],
    ]  # the second run's epoch 2 is missing
    points = mean_curve(curves)
    assert [(e, m) for e, m, _, _ in points] == [(0, 90.0), (1, 92.5)]
    low, high = stats.t.interval(0.95, 1, loc=92.5, scale=stats.sem([92.0, 93.0]))
    assert points[1][2:] == (pytest.approx(low), pytest.approx(high))
    path = plot_knn_curves({"mira-mira": curves, "swav-sinkhorn": []}, tmp_path / "knn.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
