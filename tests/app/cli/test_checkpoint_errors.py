"""An unreadable checkpoint (empty, truncated, random bytes, or a pickle that would run code) is one line
naming the file and what to do, in Python, in the evaluation tools and when a run resumes from it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sslib.app.cli import pretrain_main
from sslib.app.eval.cli import knn_main
from sslib.errors import ConfigError
from sslib.io import load_torch_file


class RunsCode:
    """Unpickling this object would create ``marker``: a file that runs code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable, tuple]:
        return open, (str(self.marker), "w")


def broken_files(folder: Path) -> dict[str, Path]:
    good = folder / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}}, good)
    data = good.read_bytes()
    files = {"empty": b"", "truncated": data[: len(data) // 2], "random": os.urandom(4096)}
    for name, content in files.items():
        (folder / f"{name}.ckpt").write_bytes(content)
    return {name: folder / f"{name}.ckpt" for name in files}


@pytest.mark.parametrize("kind", ["empty", "truncated", "random"])
def test_an_unreadable_checkpoint_is_one_line_naming_the_file(tmp_path, kind):
    path = broken_files(tmp_path)[kind]
    with pytest.raises(ConfigError) as info:
        load_torch_file(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "delete it" in message
    assert ("is empty" in message) == (kind == "empty")
    assert "weights_only=False" not in message and "weights_only set to False" not in message


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": RunsCode(marker)}, path)
    with pytest.raises(ConfigError, match=r"holds objects other than tensors .* does not run their code"):
        load_torch_file(path)
    assert not marker.exists()


def test_the_evaluation_tools_report_an_empty_checkpoint_in_one_line(tmp_path, capsys):
    path = broken_files(tmp_path)["empty"]
    assert knn_main(["--ckpt", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: checkpoint '{path}' is empty")


def test_resuming_from_a_truncated_last_checkpoint_is_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    truncated = broken_files(tmp_path)["truncated"]
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(truncated.read_bytes())
    code = pretrain_main([f"run_dir={run_dir}", "trainer.accelerator=cpu", "baseline_eval=false"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.count("\n") == 0 and "last.ckpt' is not a readable torch checkpoint" in err


TINY_RUN = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "baseline_eval=false",
    "data.batch_size=16",
]


@pytest.mark.parametrize("method", ["swav", "byol"])
def test_resuming_another_methods_checkpoint_is_one_line_naming_both(tmp_path, capsys, method):
    assert pretrain_main([*TINY_RUN, f"run_dir={tmp_path / 'mira'}"]) == 0
    ckpt = tmp_path / "mira" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    code = pretrain_main([*TINY_RUN, f"method={method}", f"resume={ckpt}", f"run_dir={tmp_path / method}"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.count("\n") == 0 and f"checkpoint {ckpt} was trained with method.name=mira" in err
    assert f"this run has method.name={method}" in err and "resume=never" in err


def test_running_a_finished_run_again_reports_it_and_trains_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert pretrain_main([*TINY_RUN, f"run_dir={run_dir}"]) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    knn = first.split("online kNN top-1 (k=20, cosine): ", 1)[1].split("%", 1)[0]
    before = (run_dir / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    assert pretrain_main([*TINY_RUN, f"run_dir={run_dir}"]) == 0
    again = capsys.readouterr().out.strip().splitlines()[-1]
    assert again.startswith(
        f"already finished (1 epoch), nothing trained; online kNN top-1 (k=20, cosine): {knn}%"
    )
    assert (run_dir / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before
    assert len(list((run_dir / "logs").glob("version_*"))) == 1  # no empty logger version per launch
