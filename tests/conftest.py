import os

import pytest

# Tests never touch the network or the user's data root.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_data_root(tmp_path, monkeypatch):
    "Each test gets its own data and reports roots, so nothing lands in the checkout."
    monkeypatch.setenv("AACNB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("AACNB_REPORTS", str(tmp_path / "reports"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end tests that take more than a few seconds")
    config.addinivalue_line("markers", "paper_smoke: the paper profile's smoke run (all 33 runs at paper scale, minutes)")


@pytest.fixture
def one_torch_thread():
    "Tiny models: more torch threads only add contention on a shared 2-core CPU."
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
