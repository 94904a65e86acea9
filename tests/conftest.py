"""Fixtures shared by the whole suite."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny CPU ops: faster (as in DataLoader workers), and its steps
    do not fight the other tests for the cores. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_user_config_folders(monkeypatch):
    """The shipped configs only: a developer's own ``SSLIB_CONFIG_PATH`` must not change what tests see."""
    monkeypatch.delenv("SSLIB_CONFIG_PATH", raising=False)
