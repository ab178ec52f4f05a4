"""Build ``edge_runtime/sample_beats.npz``: labelled synthetic beats the device selftest trains on.

The device package ships no dataset code, so the sample is generated here, committed, and
``tests/edge_runtime/test_selftest.py`` checks that regenerating it gives the same arrays.
Run: python -m datasets.sample_beats
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets.synthetic import SubjectProfile, synthesize_ecg
from edge_runtime.aami import classes_of
from edge_runtime.beats import BeatSpec, cut_beats, rr_model_input

SAMPLE_PATH = Path(__file__).resolve().parents[1] / "edge_runtime" / "sample_beats.npz"
PER_CLASS = {0: 48, 1: 24, 2: 24}


def sample_beats(seed: int = 11) -> dict[str, np.ndarray]:
    profile = SubjectProfile.draw(np.random.default_rng(seed))
    signal, samples, symbols = synthesize_ecg(profile, minutes=6, seed=seed)
    windows, rr, keep = cut_beats(signal, 360.0, samples, BeatSpec())
    labels = classes_of(symbols)[keep]
    chosen = np.concatenate([np.flatnonzero(labels == c)[:n] for c, n in PER_CLASS.items()])
    return {"beat": windows[chosen], "log_rr": rr_model_input(rr[chosen]), "label": labels[chosen].astype(np.int32)}


if __name__ == "__main__":
    np.savez_compressed(SAMPLE_PATH, **sample_beats())
    print(f"wrote {SAMPLE_PATH}")
