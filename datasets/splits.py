"""Which records train and which test: the de Chazal inter-patient split.

Mixing one patient's beats across training and test inflates accuracy by learning the
patient, not the arrhythmia (de Chazal et al. 2004), so splits are by person. Records are
not people: MIT-BIH records 201 and 202 come from the same man (PhysioNet's record notes),
201 in de Chazal's DS1 and 202 in DS2, so training uses DS1 without 201 and DS2 stays the
published test set.
"""
from __future__ import annotations

import os
from pathlib import Path

from datasets.records import RecordFormatError

DS1: tuple[str, ...] = tuple(
    "101 106 108 109 112 114 115 116 118 119 122 124 201 203 205 207 208 209 215 220 223 230".split()
)
DS2: tuple[str, ...] = tuple(
    "100 103 105 111 113 117 121 123 200 202 210 212 213 214 219 221 222 228 231 232 233 234".split()
)
PACED: tuple[str, ...] = ("102", "104", "107", "217")
"""Paced records: excluded, as in the AAMI recommended practice."""
SAME_PERSON: dict[str, str] = {"201": "202"}
"""Records of one person, mapped to the record that names that person."""
DATA_ENV = "FEDBEAT_DATA"
SPLITS = ("DS1", "DS2")


def person_of(record: str) -> str:
    """The person a record belongs to (its own name unless listed in ``SAME_PERSON``)."""
    return SAME_PERSON.get(record, record)


def without_people_of(records: tuple[str, ...], others: tuple[str, ...]) -> tuple[str, ...]:
    """``records`` minus those whose person also appears in ``others``."""
    excluded = {person_of(r) for r in others}
    return tuple(r for r in records if person_of(r) not in excluded)


def _shared_data(name: str) -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "data" / name


def shared_database_dir(name: str) -> Path | None:
    """``../shared/data/<name>`` beside the checkout (tests and benchmarks), if it holds records."""
    path = _shared_data(name)
    return path if any(path.glob("*.hea")) else None


def default_mitdb_dir() -> Path | None:
    """Where tests and benchmarks look for MIT-BIH: $FEDBEAT_DATA, else ../shared/data/mitdb
    beside the checkout; None when neither holds record 100."""
    for candidate in (os.environ.get(DATA_ENV), _shared_data("mitdb")):
        if candidate and (Path(candidate) / "100.hea").is_file():
            return Path(candidate)
    return None


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The WFDB directory from --data-dir, else $FEDBEAT_DATA; a parent holding mitdb/ also works."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_ENV)
    if not chosen:
        raise RecordFormatError(f"no data directory: pass --data-dir DIR or set {DATA_ENV}")
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise RecordFormatError(f"{path}: data directory does not exist")
    if not any(path.glob("*.hea")) and (path / "mitdb").is_dir():
        path = path / "mitdb"
    if not any(path.glob("*.hea")):
        raise RecordFormatError(f"{path}: no WFDB records (*.hea) found")
    return path


def split_records(data_dir: Path) -> dict[str, tuple[str, ...]]:
    """{"DS1": train records, "DS2": test records} for a WFDB directory (no person in both).

    A MIT-BIH directory (any de Chazal record present) must hold all 44 records; a partial
    download would silently change every number. Any other directory (the synthetic
    generator's) alternates its sorted records between DS1 and DS2, one record per subject.
    """
    present = sorted(p.stem for p in data_dir.glob("*.hea"))
    mitdb = set(DS1) | set(DS2)
    if mitdb & set(present):
        missing = sorted(mitdb - set(present))
        if missing:
            raise RecordFormatError(f"{data_dir}: MIT-BIH directory lacks records {' '.join(missing)}")
        return {"DS1": without_people_of(DS1, DS2), "DS2": DS2}
    records = [name for name in present if name not in PACED]
    if len(records) < 2:
        raise RecordFormatError(f"{data_dir}: need at least 2 records to split into DS1 and DS2, found {len(records)}")
    return {"DS1": tuple(records[0::2]), "DS2": tuple(records[1::2])}
