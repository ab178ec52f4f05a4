"""Fixtures of the coordinator tests: the people a federation is made of, and their devices' data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datasets.loading import load_split
from datasets.splits import default_mitdb_dir
from datasets.synthetic import write_synthetic_dataset
from edge_runtime.beats import rr_model_input


@pytest.fixture(scope="session")
def federation_dir(tmp_path_factory) -> Path:
    """MIT-BIH when present (DS1 patients are the devices), else 16 synthetic subjects."""
    mitdb = default_mitdb_dir()
    if mitdb is not None:
        return mitdb
    out = tmp_path_factory.mktemp("synthetic16")
    write_synthetic_dataset(out, subjects=16, minutes=3, seed=3)
    return out


@pytest.fixture(scope="session")
def device_files(federation_dir, tmp_path_factory) -> list[Path]:
    """One .npz per DS1 patient: 400 of that patient's labelled beats (its arrhythmic beats first)."""
    out = tmp_path_factory.mktemp("devices")
    train = load_split(federation_dir, "DS1", progress=False)
    files = []
    rng = np.random.default_rng(0)
    for i, patient in enumerate(np.unique(train.patient)[:8]):
        beats = rng.permutation(np.flatnonzero(train.patient == patient))
        index = np.sort(np.concatenate([beats[train.labels[beats] != 0], beats[train.labels[beats] == 0]])[:400])
        path = out / f"device{i}.npz"
        np.savez(path, beat=train.windows[index], log_rr=rr_model_input(train.rr[index]), label=train.labels[index])
        files.append(path)
    return files
