"""Shared fixtures: the real data in ../shared/data (never copied into the repo)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = Path(os.environ.get("GDNA_DATA_ROOT") or REPO.parent / "shared" / "data")
    assert (root / "README.md").exists(), f"shared data not found at {root} (set GDNA_DATA_ROOT)"
    return root


@pytest.fixture
def one_thread():
    """Ray workers run with one torch thread; so do in-process loop tests (2 shared cores thrash otherwise)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
