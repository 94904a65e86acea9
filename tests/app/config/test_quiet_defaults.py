"""Loader and logging settings adapt to the machine and the dataset, so that a run on a small machine
or a small dataset gets no warning about them: workers capped by the CPUs, memory pinned only for
CUDA, a logging interval of at most an epoch."""

from __future__ import annotations

import os

import pytest
import torch

from sslib.app.datamodule import SSLDataModule
from sslib.app.train import log_interval


@pytest.mark.parametrize(
    ("cpus", "requested", "started"),
    [(2, 8, 1), (1, 8, 1), (8, 8, 7), (8, 4, 4), (2, 0, 0)],
)
def test_loader_workers_are_at_most_one_fewer_than_the_cpus_the_run_may_use(
    monkeypatch, cpus, requested, started
):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    data = SSLDataModule("digits", num_workers=requested, persistent_workers=True)
    assert data.num_workers == started
    assert data.persistent_workers == (started > 0)


@pytest.mark.parametrize("cuda", [False, True])
def test_memory_is_pinned_only_where_cuda_is_available(monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert SSLDataModule("digits", pin_memory=True).pin_memory == cuda
    assert not SSLDataModule("digits", pin_memory=False).pin_memory


@pytest.mark.parametrize(
    ("trainer", "train_batches", "interval"),
    [
        ({"log_every_n_steps": 10}, 4, 4),  # a small dataset: every epoch logs
        ({"log_every_n_steps": 10}, 22, 10),
        ({"log_every_n_steps": 10}, None, 10),  # the epoch's length unknown: as configured
        ({}, 100, 50),  # Lightning's default
        ({"log_every_n_steps": 10, "limit_train_batches": 3}, 22, 3),
        ({"log_every_n_steps": 10, "limit_train_batches": 0.25}, 22, 5),
        ({"log_every_n_steps": 10, "limit_train_batches": 0.01}, 22, 1),
    ],
)
def test_the_logging_interval_is_at_most_the_steps_of_an_epoch(trainer, train_batches, interval):
    assert log_interval(trainer, train_batches) == interval
