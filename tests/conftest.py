"""Shared fixtures: tiny PCam-layout data made on the fly, and ../shared when present."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` beside the repository; the test is skipped when it is absent."""
    if not (SHARED / "PCAM.md").exists():
        pytest.skip("../shared is absent (a fresh clone has no shared data)")
    return SHARED


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """A synthetic PCam folder (train 512, valid 256, test 256, seed 0), written once."""
    from pcam.data.synthetic import write_synthetic

    folder = tmp_path_factory.mktemp("synthetic")
    write_synthetic(folder, sizes={"train": 512, "valid": 256, "test": 256}, seed=0)
    return folder


@pytest.fixture(scope="session")
def shared_dir_or_none() -> Path | None:
    """`../shared` when present, else None (for tests that run either way)."""
    return SHARED if (SHARED / "PCAM.md").exists() else None
