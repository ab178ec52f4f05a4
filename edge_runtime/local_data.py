"""The device's own labelled beats, from either cut beats or a raw labelled strip."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from edge_runtime.beats import BeatSpec, cut_beats, rr_model_input


class LocalDataError(ValueError):
    """A labelled-beats file the device cannot use."""


@dataclasses.dataclass(frozen=True)
class LocalData:
    """beat float32[n, window, 2], log_rr float32[n, 8], label int32[n], in recording order."""

    beat: np.ndarray
    log_rr: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return int(self.label.size)

    def rows(self, index: np.ndarray | slice) -> "LocalData":
        return LocalData(self.beat[index], self.log_rr[index], self.label[index])

    @classmethod
    def load(cls, path: Path | str, spec: BeatSpec = BeatSpec()) -> "LocalData":
        """Either cut beats (beat, log_rr, label) or a raw strip (signal mV, fs, r_samples, labels)."""
        with np.load(path) as data:
            if {"beat", "log_rr", "label"} <= set(data.files):
                local = cls(data["beat"].astype(np.float32), data["log_rr"].astype(np.float32), data["label"].astype(np.int32))
            else:
                missing = {"signal", "fs", "r_samples", "labels"} - set(data.files)
                if missing:
                    raise LocalDataError(f"{path}: need beat/log_rr/label or signal/fs/r_samples/labels, missing {', '.join(sorted(missing))}")
                if len(data["labels"]) != len(data["r_samples"]):
                    raise LocalDataError(f"{path}: {len(data['labels'])} labels for {len(data['r_samples'])} r_samples")
                windows, rr, keep = cut_beats(data["signal"], float(data["fs"]), data["r_samples"], spec)
                local = cls(windows.astype(np.float32), rr_model_input(rr), np.asarray(data["labels"], np.int32)[keep])
        if local.beat.shape[1:] != spec.beat_shape:
            raise LocalDataError(f"{path}: beats of shape {local.beat.shape[1:]}, the model takes {spec.beat_shape}")
        if not (len(local.log_rr) == len(local.label) == len(local.beat)):
            raise LocalDataError(f"{path}: beat, log_rr and label differ in length")
        if not (np.all(np.isfinite(local.beat)) and np.all(np.isfinite(local.log_rr))):
            raise LocalDataError(f"{path}: non-finite beats or RR features")
        return local
