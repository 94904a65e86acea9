"""scripts/evaluate.py: one Markdown + CSV + PNG report per checkpoint, for each suite, on sslib runs and
on published checkpoint formats."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

from sslib.app.eval.cli import evaluate_main, knn_main
from sslib.app.eval.offline import FeatureCache, knn_eval
from sslib.app.eval.report import SUITES, parse_options
from tests.app.eval.test_eval_tools import SIZE, printed, run_script, save_checkpoint
from tests.app.eval.test_transfer import image_folder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("run") / "last.ckpt")


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_quick_report_on_digits_holds_the_protocols_numbers(ckpt, monkeypatch, capsys):
    run_script(
        "evaluate",
        [str(ckpt), "suite=quick", "data=digits", f"image_size={SIZE}", "device=cpu", "linear_epochs=2"],
        monkeypatch,
    )
    head, out = printed(capsys.readouterr().out)
    assert head == "data: digits (given), root: data (default), image size: 8 (given)"
    folder = ckpt.parent / "last.ckpt.eval"
    assert f"wrote {folder / 'report-quick.md'}" in out
    rows = read_rows(folder / "report-quick.csv")
    assert [(r["protocol"], r["setting"]) for r in rows] == [
        ("linear", "2 epochs, frozen features"), ("knn", "100%"), ("knn", "10%"), ("knn", "1%"),
    ]  # fmt: skip
    cache = FeatureCache(ckpt, "digits", image_size=int(SIZE), device="cpu")
    knn = knn_eval(*cache.features("train"), *cache.features("val"), num_classes=10)
    assert [float(r["value"]) for r in rows[1:]] == pytest.approx([knn[f]["top1"] for f in (1.0, 0.1, 0.01)])
    md = (folder / "report-quick.md").read_text()
    assert "## knn" in md and "| digits | 10% | top1 |" in md and "![plot](report-quick.png)" in md
    assert f"\n{head}\n" in md
    assert (folder / "report-quick.png").read_bytes()[:4] == b"\x89PNG"


def test_paper_suite_runs_every_protocol_on_a_solo_learn_file(ckpt, tmp_path, monkeypatch, capsys):
    """The same weights in solo-learn's layout give the sslib run's kNN numbers, and every protocol runs."""
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    solo = tmp_path / "solo.ckpt"
    torch.save({"state_dict": {**state, "projector.0.weight": torch.zeros(2, 2)}}, solo)
    transfer = image_folder(tmp_path / "colours", per_class=6)
    args = [
        "suite=paper", "data=digits", f"image_size={SIZE}", "device=cpu", "linear_epochs=1", "knn_fractions=1,0.1",
        "finetune_fractions=0.1", "finetune_epochs=1", f"transfer=folder:{transfer}", "transfer_image_size=12",
        "transfer_num_c=2", f"out={tmp_path / 'reports'}",
    ]  # fmt: skip
    run_script(
        "evaluate", [str(solo), *args, "fmt=solo-learn", "arch=resnet18", "cifar_stem=true"], monkeypatch
    )
    rows = read_rows(tmp_path / "reports" / "report-paper.csv")
    assert [r["protocol"] for r in rows] == ["linear", "knn", "knn", "finetune", "finetune", "transfer"]
    assert rows[-1]["dataset"] == "colours" and rows[-1]["metric"] == "top1"
    capsys.readouterr()
    run_script("evaluate", [str(ckpt), "suite=knn", "data=digits", f"image_size={SIZE}", "device=cpu",
                            "knn_fractions=1,0.1", f"out={tmp_path / 'own'}"], monkeypatch)  # fmt: skip
    own = read_rows(tmp_path / "own" / "report-knn.csv")
    assert [r["value"] for r in own] == [r["value"] for r in rows[1:3]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["suite=everything"],
            "suite must be one of linear, knn, finetune, transfer, quick, paper, got 'everything'",
        ),
        (["k=20"], "unknown option 'k'; allowed: suite, data, root"),
        (["image_size=big"], "image_size must be int, got 'big'"),
        (["suite=transfer", "device=cpu"], "suite=transfer needs transfer=NAME:ROOT"),
        (["fmt=solo-learn"], "a solo-learn checkpoint needs its backbone architecture"),
        (["fmt=timm-hub", "arch=resnet18"], "checkpoint format must be one of sslib, torchvision"),
    ],
)
def test_bad_options_are_one_line_errors(ckpt, capsys, args, message):
    assert evaluate_main([str(ckpt), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and "\n" not in err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("knn_fractions=1,0", "knn_fractions must be in (0, 1], got 0.0"),
        ("finetune_fractions=2", "finetune_fractions must be in (0, 1], got 2.0"),
        ("linear_epochs=0", "linear_epochs must be an integer >= 1, got 0"),
        ("finetune_epochs=0", "finetune_epochs must be an integer >= 1, got 0"),
        ("transfer_num_c=0", "transfer_num_c must be an integer >= 1, got 0"),
        ("image_size=0", "image_size must be an integer >= 1, got 0"),
        ("device=tpu9", "device must be a torch device such as cpu or cuda:0, got 'tpu9'"),
        ("transfer=cifar10", "a transfer dataset is NAME:ROOT (e.g. cifar10:data/cifar10), got 'cifar10'"),
    ],
)
def test_bad_options_are_refused_before_any_work(ckpt, no_work, capsys, option, message):
    assert evaluate_main([str(ckpt), "suite=paper", option]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_options_parse_lists_and_booleans():
    suite, options = parse_options(["suite=paper", "transfer=cifar10:data,pets:/p", "linear_augment=true"])
    assert suite == "paper" and options.transfer == ("cifar10:data", "pets:/p") and options.linear_augment
    assert SUITES["paper"] == ("linear", "knn", "finetune", "transfer")


def test_scripts_read_published_formats(ckpt, tmp_path, monkeypatch, capsys):
    """scripts/knn.py on the same weights in solo-learn's layout prints the sslib run's table."""
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    solo = tmp_path / "solo.ckpt"
    torch.save({"state_dict": {**state, "momentum_backbone.conv1.weight": torch.zeros(1)}}, solo)
    common = ["--data", "digits", "--image-size", SIZE, "--device", "cpu", "--fractions", "1,0.1"]
    run_script("knn", ["--ckpt", str(ckpt), *common], monkeypatch)
    own = capsys.readouterr().out
    run_script(
        "knn",
        ["--ckpt", str(solo), *common, "--format", "solo-learn", "--arch", "resnet18", "--cifar-stem"],
        monkeypatch,
    )
    assert capsys.readouterr().out == own
    monkeypatch.setattr(sys, "argv", ["knn.py", "--ckpt", str(solo), *common, "--format", "solo-learn"])
    assert knn_main() == 2
    assert (
        capsys.readouterr().err.strip()
        == "error: a solo-learn checkpoint needs its backbone architecture (e.g. arch=resnet50)"
    )
