"""Labelled beats of many patients in flat arrays, and how one record becomes such a table."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from datasets.records import EcgRecord, RecordFormatError
from edge_runtime.aami import classes_of
from edge_runtime.beats import BeatSpec, cut_beats


@dataclasses.dataclass(frozen=True)
class BeatTable:
    """Beats as parallel arrays; clients and splits index into it instead of copying it.

    windows: float32[n, spec.window, 2], beats at spec.fs_hz (edge_runtime.beats.BEAT_CHANNEL_NAMES).
    rr: float32[n, 8], RR features (edge_runtime.beats.RR_FEATURE_NAMES).
    labels: int8[n], AAMI class index. patient: int32[n], index into ``patients``.
    time_s: float64[n], R-peak time in seconds from the start of the patient's recording.
    dropped: per patient, annotations not in the table: labelled beats without a complete
    window and RR context at the record's edges, plus annotations past the signal's end.
    """

    windows: np.ndarray
    rr: np.ndarray
    labels: np.ndarray
    patient: np.ndarray
    time_s: np.ndarray
    patients: tuple[str, ...]
    dropped: tuple[int, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @classmethod
    def concatenate(cls, tables: list["BeatTable"]) -> "BeatTable":
        """Join tables, renumbering patients; a patient name may appear in one table only."""
        names: list[str] = []
        patient_parts = []
        for table in tables:
            duplicate = set(names) & set(table.patients)
            if duplicate:
                raise ValueError(f"patients {sorted(duplicate)} appear in more than one table")
            patient_parts.append(table.patient + len(names))
            names.extend(table.patients)
        if not tables:
            raise ValueError("no tables to concatenate")
        return cls(
            windows=np.concatenate([t.windows for t in tables]),
            rr=np.concatenate([t.rr for t in tables]),
            labels=np.concatenate([t.labels for t in tables]),
            patient=np.concatenate(patient_parts).astype(np.int32),
            time_s=np.concatenate([t.time_s for t in tables]),
            patients=tuple(names),
            dropped=tuple(d for t in tables for d in t.dropped),
        )

    def of_patients(self, names: set[str] | tuple[str, ...]) -> "BeatTable":
        """The beats of the named patients only, patients renumbered in their original order."""
        wanted = [i for i, name in enumerate(self.patients) if name in set(names)]
        mask = np.isin(self.patient, wanted)
        renumber = np.full(len(self.patients), -1, np.int32)
        renumber[wanted] = np.arange(len(wanted), dtype=np.int32)
        return BeatTable(
            windows=self.windows[mask], rr=self.rr[mask], labels=self.labels[mask], patient=renumber[self.patient[mask]],
            time_s=self.time_s[mask], patients=tuple(self.patients[i] for i in wanted), dropped=tuple(self.dropped[i] for i in wanted),
        )

    def save(self, path: Path) -> None:
        np.savez(
            path, windows=self.windows, rr=self.rr, labels=self.labels, patient=self.patient, time_s=self.time_s, patients=np.array(self.patients),
            dropped=np.array(self.dropped, np.int64),
        )

    @classmethod
    def load(cls, path: Path) -> "BeatTable":
        with np.load(path) as data:
            return cls(
                windows=data["windows"],
                rr=data["rr"],
                labels=data["labels"],
                patient=data["patient"],
                time_s=data["time_s"],
                patients=tuple(str(p) for p in data["patients"]),
                dropped=tuple(int(d) for d in data["dropped"]),
            )


def extract_beats(record: EcgRecord, spec: BeatSpec) -> BeatTable:
    """Every AAMI-labelled beat of a record whose window and RR features are complete.

    RR intervals come from all annotated beats (any AAMI class), the first and last beats
    and beats whose window would cross the record's ends are dropped, and non-beat
    annotations are skipped.
    """
    if record.duration_s < spec.window / spec.fs_hz:
        raise RecordFormatError(
            f"{record.name}: record is {record.duration_s:.3f} s long, shorter than one beat window ({spec.window / spec.fs_hz:.3f} s)"
        )
    labels = classes_of(record.ann_symbols)
    is_beat = labels >= 0
    samples = record.ann_samples[is_beat]
    windows, rr, keep = cut_beats(record.signal, record.fs_hz, samples, spec)
    return BeatTable(
        windows=windows,
        rr=rr,
        labels=labels[is_beat][keep].astype(np.int8),
        patient=np.zeros(keep.size, dtype=np.int32),
        time_s=samples[keep] / record.fs_hz,
        patients=(record.name,),
        dropped=(int(samples.size - keep.size) + record.dropped_annotations,),
    )
