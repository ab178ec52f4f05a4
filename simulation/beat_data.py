"""Where a run's beats come from and what the model is fed from them, without TensorFlow: the
simulation and the coordinator's TensorFlow-free evaluator share these."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets.beat_table import BeatTable
from datasets.loading import cache_root, load_split
from datasets.splits import resolve_data_dir
from datasets.synthetic import write_synthetic_dataset
from edge_runtime.beats import rr_model_input
from edge_runtime.rhythm import atrial_activity, fibrillation_like, rr_irregularity, without_s_in_fibrillation
from simulation.config import SimulationConfig

PUBLIC_REFERENCE_SEED = 0x9B11C  # a synthetic population of its own, not a run's training people


def synthetic_data_dir(config: SimulationConfig) -> Path:
    """The embedded synthetic dataset, generated once per (subjects, minutes, seed) into the cache."""
    directory = cache_root() / f"synthetic-n{config.synthetic_subjects}-m{config.synthetic_minutes:g}-s{config.seed}"
    if not (directory / "RECORDS").is_file():
        write_synthetic_dataset(directory, subjects=config.synthetic_subjects, minutes=config.synthetic_minutes, seed=config.seed)
    return directory


def data_directory(config: SimulationConfig) -> Path:
    return synthetic_data_dir(config) if config.dataset == "synthetic" else resolve_data_dir(config.data_dir)


def public_reference() -> BeatTable:
    """Beats no client contributed (synthetic people generated on the server), for what the server
    must fix without reading clients' data under DP: class weights and int8 calibration."""
    return load_split(synthetic_data_dir(SimulationConfig(seed=PUBLIC_REFERENCE_SEED)), "DS1", progress=False)


def model_inputs(table: BeatTable, index: np.ndarray | slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """(beat float32[n, window, 2], log_rr float32[n, 8]) for the selected beats."""
    return table.windows[index], rr_model_input(table.rr[index])


def rhythm_features(table: BeatTable) -> tuple[np.ndarray, np.ndarray]:
    """(RR irregularity, atrial activity) of each row (edge_runtime.rhythm), from each person's
    beat times in time order and the model's own inputs, as a watch computes them."""
    return irregularity_by_person(table), atrial_activity(table.windows)


def irregularity_by_person(table: BeatTable) -> np.ndarray:
    """float[n]: the RR irregularity around each row (edge_runtime.rhythm), person by person in time order."""
    irregularity = np.zeros(len(table))
    for index in range(len(table.patients)):
        rows = np.flatnonzero(table.patient == index)
        rows = rows[np.argsort(table.time_s[rows], kind="stable")]
        irregularity[rows] = rr_irregularity(table.time_s[rows])
    return irregularity


def fibrillation_beats(table: BeatTable) -> np.ndarray:
    """bool[n]: which beats sit in an AF-like rhythm."""
    return fibrillation_like(*rhythm_features(table))


def calls(table: BeatTable, scores: np.ndarray) -> np.ndarray:
    """The classes a wearer would see for ``table``'s beats from the model's scores (logits or
    probabilities, [n, classes]): the argmax, then the watch's AF gate."""
    return without_s_in_fibrillation(scores.argmax(axis=1), fibrillation_beats(table))
