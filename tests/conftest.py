"""Shared fixtures: the real MIT-BIH database (skipped visibly when absent) and synthetic records."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from datasets.splits import default_mitdb_dir
from datasets.synthetic import write_synthetic_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test run extracts into its own cache, so no result comes from a stale one."""
    cache = tmp_path_factory.mktemp("fedbeat-cache")
    previous = os.environ.get("FEDBEAT_CACHE")
    os.environ["FEDBEAT_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("FEDBEAT_CACHE", None)
    else:
        os.environ["FEDBEAT_CACHE"] = previous


@pytest.fixture(scope="session")
def mitdb() -> Path:
    path = default_mitdb_dir()
    if path is None:
        pytest.skip("MIT-BIH mitdb not found: set FEDBEAT_DATA or place it at ../shared/data/mitdb")
    return path


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight synthetic subjects, 4 minutes each (DS1 = 4 subjects, DS2 = 4 subjects)."""
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(out, subjects=8, minutes=4, seed=7)
    return out
