"""The ablation runner: end to end on digits (train, evaluate, report, skip), its readers, and bad input."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from PIL import Image

from sslib.app.ablate import runner, sweep
from sslib.app.ablate.cli import ablate_main
from sslib.app.ablate.metrics import knn_curve, last_clusters_used
from sslib.app.ablate.plan import EvalSettings, make_plan
from sslib.app.ablate.table import Result, Row, format_duration, markdown
from sslib.app.builders import build_backbone
from sslib.app.config import options
from tests.helpers import ROOT

TINY = [  # one epoch of two batches, 8 px digits, partial online kNN bank: seconds per run on a CPU
    "recipe=null",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=2",
    "data.batch_size=32",
    "data.global_crops.size=8",
    "data.num_workers=0",
    "method.num_prototypes=16",
    "method.projector_dims=[64,32]",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "eval.linear_epochs=2",
]


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """An ablation of two methods, run once for the module."""
    folder = tmp_path_factory.mktemp("ablate") / "out"
    assert ablate_main(["methods=[mira,swav]", *TINY, f"out={folder}"]) == 0
    return folder


def table_rows(path: Path) -> list[list[str]]:
    """The cells of a Markdown table's rows, without its header and rule."""
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("| ")][2:]
    return [[cell.strip() for cell in ln.strip("|").split("|")] for ln in lines]


def test_runs_are_trained_evaluated_and_reported(out):
    rows = list(csv.DictReader((out / "ablation.csv").open()))
    assert [(r["method"], r["labeler"], r["epochs"]) for r in rows] == [
        ("random-init", "", "0"),
        ("mira", "mira", "1"),
        ("swav", "sinkhorn", "1"),
    ]
    reference, rows = rows[0], rows[1:]
    assert reference["wall_time_s"] == reference["clusters_used"] == ""
    for row in rows:
        assert 0 <= float(row["knn_top1"]) <= 100 and 0 <= float(row["linear_top1"]) <= 100
        assert (
            float(row["wall_time_s"]) > 0 and 1 <= int(row["clusters_used"]) <= int(row["n_clusters"]) == 16
        )

    markdown_rows = table_rows(out / "ablation.md")
    assert [r[:3] for r in markdown_rows] == [
        ["random-init", "—", "0"],
        ["mira", "mira", "1"],
        ["swav", "sinkhorn", "1"],
    ]
    assert markdown_rows[0][3] == markdown_rows[0][6] == "—"
    for row in markdown_rows[1:]:
        assert re.fullmatch(r"\d+m\d\ds", row[3]) and re.fullmatch(r"\d+ / 16", row[6])
        assert all(0 <= float(cell) <= 100 for cell in row[4:6])

    with Image.open(out / "knn_top1.png") as image:
        assert image.format == "PNG" and image.size[0] > 100
        image.verify()
    for name in ("mira-mira", "swav-sinkhorn"):  # baseline (epoch 0) and one trained epoch, from the logs
        assert [epoch for epoch, _ in knn_curve(out / name)] == [0, 1]
        assert (out / name / "result.json").is_file()


def test_random_init_row_is_the_seeded_untrained_backbone_evaluated_as_the_runs(out):
    plan = make_plan(["methods=[mira,swav]", *TINY, f"out={out}"])
    saved = torch.load(out / "random-init" / "backbone.ckpt", weights_only=True)["state_dict"]
    L.seed_everything(plan.runs[0].cfg.seed, verbose=False)
    fresh, _ = build_backbone(plan.runs[0].cfg)
    assert set(saved) == {f"backbone.{k}" for k in fresh.state_dict()}
    assert all(torch.equal(saved[f"backbone.{k}"], v) for k, v in fresh.state_dict().items())
    row = next(csv.DictReader((out / "ablation.csv").open()))
    again = runner.evaluate(plan.runs[0], plan.eval, out / "random-init" / "backbone.ckpt")
    assert float(row["knn_top1"]) == pytest.approx(again["knn_top1"]) and float(
        row["linear_top1"]
    ) == pytest.approx(again["linear_top1"])


def test_rerun_skips_finished_runs_and_evaluates_trained_ones_without_training(out, monkeypatch, capsys):
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(runner, "pretrain", no_training)
    before = (out / "ablation.csv").read_text()
    ckpt = out / "swav-sinkhorn" / "checkpoints" / "last.ckpt"
    mtime = ckpt.stat().st_mtime_ns

    assert ablate_main(["methods=[mira,swav]", *TINY, f"out={out}"]) == 0
    assert capsys.readouterr().out.count("finished, skipped") == 3  # the two runs and the random-init row

    # A run whose checkpoint has all its epochs but no result (stopped during evaluation) is only evaluated.
    (out / "swav-sinkhorn" / "result.json").unlink()
    assert ablate_main(["methods=[mira,swav]", *TINY, f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished, skipped") == 2 and "swav-sinkhorn: evaluating" in printed
    assert (out / "ablation.csv").read_text() == before and ckpt.stat().st_mtime_ns == mtime


def test_another_budget_in_the_same_folder_is_refused(out, capsys):
    assert ablate_main(["methods=[mira,swav]", *TINY, "trainer.max_epochs=2", f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "different config (trainer.max_epochs)" in err and "\n" not in err


def test_plan_cross_product_names_and_default_folder():
    plan = make_plan(["methods=[mira,swav]", "labelers=[mira,sinkhorn]", "recipe=null"])
    assert [run.name for run in plan.runs] == ["mira-mira", "mira-sinkhorn", "swav-mira", "swav-sinkhorn"]
    assert plan.out == Path("runs/ablate-digits-mira_swav-mira_sinkhorn")
    assert plan.runs[1].cfg.run_dir == "runs/ablate-digits-mira_swav-mira_sinkhorn/mira-sinkhorn"
    one = make_plan(["method=mira", "labelers=[sinkhorn,dino]", "eval.linear_epochs=5"])
    assert one.out == Path("runs/ablate-digits-mira-sinkhorn_dino") and one.eval.linear_epochs == 5
    assert {run.cfg.data.batch_size for run in one.runs} == {128}  # the shared mira_digits recipe


def test_metrics_readers_handle_baseline_and_resumed_launches(tmp_path):
    header = "epoch,step,val/knn_top1,labels/clusters_used,labels/n_clusters\n"
    first = header + "0,0,95.0,,\n0,0,,7.0,50.0\n0,10,90.0,,\n1,21,,9.0,50.0\n"  # baseline, epoch 0, killed
    resumed = header + "1,21,,12.0,50.0\n1,21,91.0,,\n2,32,92.5,,\n"  # no baseline: resumed from epoch 1
    for version, text in enumerate([first, resumed]):
        (tmp_path / "logs" / f"version_{version}").mkdir(parents=True)
        (tmp_path / "logs" / f"version_{version}" / "metrics.csv").write_text(text)
    assert knn_curve(tmp_path) == [(0, 95.0), (1, 90.0), (2, 91.0), (3, 92.5)]
    assert last_clusters_used(tmp_path) == (12, 50)
    assert knn_curve(tmp_path / "none") == [] and last_clusters_used(tmp_path / "none") is None


class FakeClock:
    """Seconds that pass only when a test, or a :class:`Ticker`, moves ``now``."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Ticker(L.Callback):
    """Advances ``clock`` by ``seconds`` per training batch: a launch's time, set by the test."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds

    def on_train_batch_end(self, *args) -> None:
        self.clock.now += self.seconds


def test_train_timer_adds_the_checkpointed_time_of_a_resumed_launch(tmp_path):
    def trainer(epoch: int, ckpt_path: str | None = None) -> SimpleNamespace:
        return SimpleNamespace(current_epoch=epoch, is_global_zero=True, ckpt_path=ckpt_path)

    def record() -> dict:
        return json.loads((tmp_path / runner.TIME_FILE).read_text())

    clock = FakeClock()
    first = runner.TrainTimer(tmp_path, clock)
    first.on_train_start(trainer(0), None)
    clock.now = 40.0
    first.on_train_epoch_end(trainer(0), None)
    checkpoint = first.state_dict()  # what the checkpoint of epoch 1 holds
    clock.now = 100.0
    first.on_train_epoch_end(trainer(1), None)  # epoch 2 ends, then the launch dies before its checkpoint
    assert checkpoint == {"seconds": 40.0} and record() == {"epochs": 2, "seconds": 100.0}

    clock.now = 1000.0
    resumed = runner.TrainTimer(tmp_path, clock)
    resumed.load_state_dict(checkpoint)
    resumed.on_train_start(trainer(1, "last.ckpt"), None)
    clock.now = 1030.0
    resumed.on_train_epoch_end(trainer(1), None)
    assert record() == {"epochs": 2, "seconds": 70.0}  # 40 s of epoch 1, 30 s of the repeated epoch 2
    clock.now = 1045.0
    mid_epoch = resumed.state_dict()  # a checkpoint written 15 s into epoch 3
    assert mid_epoch == {"seconds": 85.0}

    clock.now = 2000.0
    again = runner.TrainTimer(tmp_path, clock)
    again.load_state_dict(mid_epoch)
    again.on_train_start(trainer(2, "last.ckpt"), None)
    clock.now = 2010.0
    again.on_train_epoch_end(trainer(2), None)
    assert record() == {"epochs": 3, "seconds": 95.0}

    fresh = runner.TrainTimer(tmp_path, clock)  # a fresh start ignores the stale record
    fresh.on_train_start(trainer(0), None)
    clock.now = 2017.0
    fresh.on_train_epoch_end(trainer(0), None)
    assert record() == {"epochs": 1, "seconds": 7.0} and runner.train_seconds(tmp_path) == 7.0

    untimed = runner.TrainTimer(tmp_path, clock)  # resumed from a checkpoint trained without the timer
    untimed.on_train_start(trainer(3, "other.ckpt"), None)
    untimed.on_train_epoch_end(trainer(3), None)
    assert record() == {"epochs": 4, "seconds": None} and untimed.state_dict() == {"seconds": None}


# A launch of a 2-epoch ablation row whose batches take 50 s each on a fake clock, SIGKILLed at the end of
# epoch 2: after the timer has written that epoch's time, before its checkpoint (Lightning runs
# checkpointing callbacks last). argv: the ablation's arguments.
KILLED_LAUNCH = """
import os, signal, sys
import lightning as L
import torch
from tests.app.ablate.test_ablate import FakeClock, Ticker
from sslib.app.ablate import plan, runner, sweep

class KillAtSecondEpochEnd(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

torch.set_num_threads(1)
clock, pretrain = FakeClock(), runner.pretrain
runner.pretrain = lambda cfg, callbacks: pretrain(cfg, [*callbacks, Ticker(clock, 50.0), KillAtSecondEpochEnd()])
sweep.run_ablation(plan.make_plan(sys.argv[1:]), clock=clock)
"""


def test_killed_run_resumes_after_its_checkpoint_and_new_eval_settings_only_reevaluate(
    tmp_path, monkeypatch, one_thread
):
    folder = tmp_path / "out"
    args = [a for a in TINY if not a.startswith("trainer.max_epochs=")]
    args += ["methods=[mira]", "trainer.max_epochs=2", f"out={folder}"]  # 2 epochs of 2 batches
    run_dir = folder / "mira-mira"

    killed = subprocess.run(
        [sys.executable, "-c", KILLED_LAUNCH, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert runner.trained_epochs(run_dir) == 1 and not (folder / "ablation.csv").exists()
    assert json.loads((run_dir / runner.TIME_FILE).read_text()) == {"epochs": 2, "seconds": 200.0}

    lines: list[str] = []
    clock, pretrain = FakeClock(1000.0), runner.pretrain
    monkeypatch.setattr(
        runner, "pretrain", lambda cfg, callbacks: pretrain(cfg, [*callbacks, Ticker(clock, 15.0)])
    )
    sweep.run_ablation(make_plan(args), log=lines.append, clock=clock)
    assert lines[0].startswith("random-init: finished, skipped") and lines[1] == "[1/1] mira-mira"
    assert f"mira-mira: resuming after epoch 1, 2 epochs in {run_dir}" in lines
    [reference, row] = csv.DictReader((folder / "ablation.csv").open())
    assert (
        reference["method"] == "random-init" and row["epochs"] == "2" and runner.trained_epochs(run_dir) == 2
    )
    # 100 s for epoch 1 (from its checkpoint) + 30 s for epoch 2 trained again; not the killed launch's 200
    assert float(row["wall_time_s"]) == 130.0 and runner.train_seconds(run_dir) == 130.0
    assert [epoch for epoch, _ in knn_curve(run_dir)] == [0, 1, 2]

    def no_training(*args, **kwargs):
        raise AssertionError("a trained run was trained again")

    monkeypatch.setattr(runner, "pretrain", no_training)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    mtime, lines[:] = ckpt.stat().st_mtime_ns, []
    sweep.run_ablation(make_plan([*args, "eval.knn_k=5"]), log=lines.append, clock=clock)
    assert lines == [
        "[1/2] random-init",
        "random-init: evaluating the untrained backbone",
        "[2/2] mira-mira",
        f"mira-mira: evaluating {ckpt}",
    ]
    saved = json.loads((run_dir / runner.RESULT_FILE).read_text())
    assert saved["eval"]["knn_k"] == 5 and saved["result"]["epochs"] == 2
    assert saved["result"]["wall_time_s"] == 130.0 and ckpt.stat().st_mtime_ns == mtime


def test_markdown_marks_methods_without_labeler():
    rows = [
        Row("byol", None, {0: Result("byol", None, 6, 3725.4, 91.234, 88.0, None, None)}, 1),
        Row("mira", "mira", {0: Result("mira", "mira", 6, None, 1, 2, 5, 300)}, 1),
    ]
    table = markdown(rows, EvalSettings(linear_epochs=7))
    assert "| byol | — | 6 | 1h02m05s | 91.23 | 88.00 | — |" in table
    assert "| mira | mira | 6 | — | 1.00 | 2.00 | 5 / 300 |" in table
    assert "7 epochs" in table and format_duration(59.6) == "1m00s"


def test_help_lists_methods_and_labelers():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ablate.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "methods=[...]" in out.stdout and "sinkhorn" in out.stdout


BAD = [
    (["methods=[mira,nonet]"], "unknown method 'nonet' in methods=[...]; available: "),
    (["labelers=[mira,knn]"], "unknown labeler 'knn' in labelers=[...]"),
    (["methods=[mira,mira]"], "methods=[...] lists mira more than once"),
    (["methods=[]"], "methods=[] has an empty entry"),
    (["data=digits"], "nothing to ablate: give methods=[a,b,...] and/or labelers=[a,b,...]"),
    (["methods=[mira,swav]", "method=dino"], "give either method=... or methods=[...], not both"),
    (["labelers=[mira]", "labeler=dino"], "give either labeler=... or labelers=[...], not both"),
    (["methods=[mira]", "run_dir=x"], "run_dir= cannot be set"),
    (["methods=[mira]", "resume=never"], "resume= cannot be set"),
    (["methods=[mira]", "eval.linear_epochs=0"], "eval.linear_epochs must be an integer >= 1, got 0"),
    (["methods=[mira]", "eval.linear_lr=fast"], "eval.linear_lr must be a number, got 'fast'"),
    (["methods=[mira]", "eval.knn=5"], "unknown setting eval.knn; available: eval.knn_k"),
    (["methods=[mira]", "logger=wandb"], "use logger=csv"),
    (["methods=[mira]", "trainer.devices=2"], "trainer.devices= cannot be set: each run's devices come from"),
    (["methods=[mira]", "+trainer.num_nodes=2"], "+trainer.num_nodes= cannot be set: each run's devices"),
    (["methods=[mira]", "launcher=cloud"], "launcher=cloud is not one of inline, local, slurm"),
    (
        ["methods=[mira]", "launcher=local", "launcher.gpu=1"],
        "unknown setting launcher.gpu for launcher=local; available: launcher.gpus_per_run, launcher.parallel",
    ),
    (
        ["methods=[mira]", "launcher.parallel=2"],
        "unknown setting launcher.parallel for launcher=inline; available: none",
    ),
    (
        ["methods=[mira]", "launcher=local", "launcher.gpus_per_run=100000"],
        "launcher.gpus_per_run=100000 asks for more GPUs than the",
    ),
    (
        ["methods=[mira]", "launcher=local", "launcher.parallel=0"],
        "launcher.parallel must be an integer >= 1, got 0",
    ),
    (
        ["methods=[mira]", "launcher=slurm", "launcher.time=1:xx"],
        "launcher.time=1:xx is not a SLURM time limit",
    ),
    (
        ["methods=[mira]", "launcher=slurm", "launcher.nodes=0"],
        "launcher.nodes must be an integer >= 1, got 0",
    ),
    (
        ["methods=[mira]", "launcher=slurm", "launcher.setup=module load cuda"],
        'launcher.setup must be a list of strings, e.g. launcher.setup=["module load cuda"]',
    ),
    (["methods=[mira]", "budget=own"], "budget=own is not one of shared, recipes"),
    (
        ["methods=[mira,swav]", "data=imagenet100", "data.root=/x"],
        "(or keep each method's recipe with budget=recipes)",
    ),
    (["methods=[mira]", "seeds=[]"], "seeds=[] is empty; give one or more integers, e.g. seeds=[0,1,2]"),
    (["methods=[mira]", "seeds=[0,x]"], "seeds=[0,x] must list integers"),
    (["methods=[mira]", "seeds=[0,0]"], "seeds=[...] lists 0 more than once"),
    (["methods=[mira]", "seeds=[0,1]", "seed=3"], "give either seed=... or seeds=[...], not both"),
    (
        ["methods=[mira,swav]", "reference=dino"],
        "reference=dino is not a row; allowed: random-init, mira-mira, swav-sinkhorn",
    ),
    (["methods=[mira]", "data=mnist"], "unknown data 'mnist'"),
    (
        ["methods=[mira,swav]", "data=imagenet100", "data.root=/x"],
        "runs mira-mira and swav-sinkhorn differ in backbone.zero_init_residual, data.augment.blur_p, ",
    ),
    (["methods=[mira]", "verbose"], "argument 'verbose' is not of the form key=value"),
]
if "byol" in options("method"):
    BAD.append((["methods=[mira,byol]", "labelers=[mira,sinkhorn]", "recipe=null"], "byol has no"))


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_is_one_line_and_exit_status_2(args, message, capsys):
    assert ablate_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err


def test_an_ablation_started_as_several_processes_refuses_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert ablate_main(["methods=[mira]"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: sslib ablate and its evaluations run in one process on one device but were started as 2 "
        "processes (torchrun or srun); start them with python (choose the device with trainer.accelerator=...)\n"
    )


def test_slurm_launcher_without_sbatch_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ablate_main(["methods=[mira]", "launcher=slurm"]) == 2
    assert capsys.readouterr().err == (
        "error: launcher=slurm submits with SLURM's sbatch and follows jobs with squeue, but sbatch, squeue, "
        "srun is not on PATH: start the ablation on the cluster's login node, or use launcher=local\n"
    )


def test_plan_with_seeds_reference_and_launcher_devices():
    plan = make_plan(["methods=[mira,swav]", "seeds=[3,1]", "reference=swav", "recipe=null", "out=o"])
    assert [run.key for run in plan.tasks] == [
        "random-init/seed3", "random-init/seed1", "mira-mira/seed3", "mira-mira/seed1",
        "swav-sinkhorn/seed3", "swav-sinkhorn/seed1",
    ]  # fmt: skip
    assert [run.cfg.seed for run in plan.runs] == [3, 1, 3, 1] and plan.runs[
        1
    ].cfg.run_dir == "o/mira-mira/seed1"
    assert plan.rows == ["random-init", "mira-mira", "swav-sinkhorn"] and plan.reference == "swav-sinkhorn"
    recipes = make_plan(["methods=[mira,swav]", "data=imagenet100", "data.root=/x", "budget=recipes"])
    assert [run.cfg.backbone.zero_init_residual for run in recipes.runs] == [
        True,
        False,
    ]  # each its own recipe
    labelers = make_plan(["method=mira", "labelers=[mira,sinkhorn]", "reference=sinkhorn"])
    assert labelers.reference == "mira-sinkhorn" and not labelers.replicated
    assert labelers.runs[0].cfg.seed == 0 and labelers.runs[0].key == "mira-mira"


class TermAtSecondStep(L.Callback):
    """Sends this process SIGTERM after the second training step, while the run's handler is installed."""

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_saves_last_ckpt_then_one_line_and_exit_status_143(tmp_path, monkeypatch, capsys, one_thread):
    pretrain = runner.pretrain
    monkeypatch.setattr(
        runner, "pretrain", lambda cfg, callbacks: pretrain(cfg, [*callbacks, TermAtSecondStep()])
    )
    args = [a for a in TINY if not a.startswith("trainer.max_epochs=")]
    args += ["methods=[mira]", "trainer.max_epochs=3", f"out={tmp_path}"]
    assert ablate_main(args) == 143
    err = capsys.readouterr().err
    checkpoint = tmp_path / "mira-mira" / "checkpoints" / "last.ckpt"
    assert err.splitlines()[-1] == (
        f"stopped by SIGTERM after step 3; {checkpoint} saved, run the same command (resume=auto) to continue"
    )
    assert "Traceback" not in err
    state = torch.load(checkpoint, weights_only=True)
    assert state["global_step"] == 3 and runner.trained_epochs(tmp_path / "mira-mira") == 1

    assert ablate_main([*args, "--status"]) == 0
    status = capsys.readouterr().out
    assert (
        "| mira-mira | failed | inline " in status and "Preempted: stopped by SIGTERM after step 3" in status
    )


def test_runs_are_evaluated_on_the_split_they_trained_with(monkeypatch):
    """The digits' train/val split follows ``data.seed``: every run and random-init row is evaluated on the
    val images of its own split (here 3 for every seed), not on the default one."""
    plan = make_plan(["methods=[mira]", "seeds=[0,1]", "data.seed=3", "out=o"])
    built = []

    class Stop(Exception):
        pass

    def feature_cache(checkpoint, name, root, image_size=None, num_workers=0, options=None, **kwargs):
        built.append(options)
        raise Stop

    monkeypatch.setattr(runner, "FeatureCache", feature_cache)
    for run in [*plan.baselines, *plan.runs]:
        with pytest.raises(Stop):
            runner.evaluate(run, plan.eval, Path("backbone.ckpt"))
    assert [o["seed"] for o in built] == [3, 3, 3, 3]
    assert all(o["val_fraction"] == plan.runs[0].cfg.data.val_fraction for o in built)
