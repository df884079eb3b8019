"""Shared fixtures: the real data in ../shared/data (never copied into the repo)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = Path(os.environ.get("GDNA_DATA_ROOT") or REPO.parent / "shared" / "data")
    assert (root / "README.md").exists(), f"shared data not found at {root} (set GDNA_DATA_ROOT)"
    return root
