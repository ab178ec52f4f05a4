"""The AAMI EC57 beat classes: the one class map shared by datasets, simulation and device.

MIT-BIH annotates beats with ~20 symbols; AAMI EC57 groups them into five classes that
every published inter-patient result reports against, so every label in fedbeat is one of
these five indices.
"""
from __future__ import annotations

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("N", "S", "V", "F", "Q")
"""Class index -> AAMI name: normal/bundle-branch, supraventricular ectopic, ventricular
ectopic, fusion, unknown/paced."""

SYMBOL_TO_CLASS: dict[str, int] = {
    **dict.fromkeys(("N", "L", "R", "e", "j"), 0),
    **dict.fromkeys(("A", "a", "J", "S"), 1),
    **dict.fromkeys(("V", "E"), 2),
    "F": 3,
    **dict.fromkeys(("/", "f", "Q"), 4),
}
"""WFDB beat annotation symbol -> AAMI class index. Symbols not listed (rhythm changes,
noise, comments, non-conducted P waves) are not beats and are skipped."""

NUM_CLASSES = len(CLASS_NAMES)


def classes_of(symbols: list[str] | np.ndarray) -> np.ndarray:
    """AAMI class index for each symbol, -1 where the symbol is not a beat."""
    return np.array([SYMBOL_TO_CLASS.get(str(s), -1) for s in symbols], dtype=np.int8)


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """{"N": n, "S": n, ...} for an int array of class indices."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=NUM_CLASSES)
    return {name: int(counts[i]) for i, name in enumerate(CLASS_NAMES)}
