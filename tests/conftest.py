"""Shared fixtures: the real MIT-BIH database (skipped visibly when absent), synthetic records, a device export."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from datasets.splits import default_mitdb_dir, shared_database_dir
from datasets.synthetic import write_synthetic_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]


def device(*args: str) -> subprocess.CompletedProcess:
    """`python -m edge_runtime ARGS` as a user runs it, from the repository root."""
    return subprocess.run([sys.executable, "-m", "edge_runtime", *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)


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
def svdb() -> Path:
    path = shared_database_dir("svdb")
    if path is None:
        pytest.skip("MIT-BIH Supraventricular Arrhythmia Database not found at ../shared/data/svdb")
    return path


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight synthetic subjects, 4 minutes each (DS1 = 4 subjects, DS2 = 4 subjects)."""
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(out, subjects=8, minutes=4, seed=7)
    return out


@pytest.fixture(scope="session")
def exported(synthetic_dir, tmp_path_factory):
    """A briefly trained model exported with synthetic DS1 beats as calibration data: (model, directory, DS1)."""
    import numpy as np
    import tensorflow as tf

    from datasets.loading import load_split
    from models.beat_classifier import WeightedCrossEntropy, build_beat_classifier, class_weights
    from models.export import export_for_devices
    from simulation.beat_data import model_inputs

    train = load_split(synthetic_dir, "DS1")
    beat, log_rr = model_inputs(train)
    weights = class_weights(train.labels)
    tf.keras.utils.set_random_seed(4)  # fit's shuffling: the same exported model every run
    model = build_beat_classifier(seed=4)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss=WeightedCrossEntropy(weights))
    model.fit((beat, log_rr), train.labels.astype(np.int32), batch_size=32, epochs=2, verbose=0)
    out = tmp_path_factory.mktemp("export")
    export_for_devices(model, out, beats=beat, log_rr=log_rr, class_weights=weights)
    return model, out, train
