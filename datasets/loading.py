"""Load a split's beats, extracting each record once and caching it on disk.

Extraction (read, validate, filter, resample, cut) costs seconds per record; the cache
turns a repeat load into a few file reads. The cache key covers the beat spec, the lead,
the extraction code version and each source file's size and modification time, so
editing a record or the spec never serves stale beats.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from tqdm import tqdm

from datasets.beat_table import BeatTable, extract_beats
from datasets.records import RecordFormatError, read_record
from datasets.splits import resolve_data_dir, split_records
from edge_runtime.beats import BeatSpec

EXTRACTION_VERSION = "4"
CACHE_ENV = "FEDBEAT_CACHE"


def cache_root() -> Path:
    """$FEDBEAT_CACHE, else ~/.cache/fedbeat."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fedbeat")


def record_cache_key(record_path: Path, spec: BeatSpec, lead: str | None) -> str:
    parts = [EXTRACTION_VERSION, spec.fingerprint(), lead or "preferred", str(record_path.resolve())]
    for suffix in (".hea", ".dat", ".atr"):
        source = record_path.with_suffix(suffix)
        stat = source.stat() if source.exists() else None
        parts.append(f"{suffix}:{stat.st_size}:{stat.st_mtime_ns}" if stat else f"{suffix}:absent")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def load_record_beats(record_path: Path, spec: BeatSpec, *, lead: str | None = None, cache: Path | None = None) -> BeatTable:
    """Beats of one record, from the cache when its key matches."""
    cache = cache or cache_root()
    cached = cache / "beats" / f"{record_path.name}-{record_cache_key(record_path, spec, lead)}.npz"
    if cached.is_file():
        return BeatTable.load(cached)
    table = extract_beats(read_record(record_path, lead=lead), spec)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(cached.stem + f".{os.getpid()}.tmp.npz")
    table.save(partial)
    os.replace(partial, cached)
    return table


def load_split(
    data_dir: str | Path | None,
    split: str,
    *,
    spec: BeatSpec = BeatSpec(),
    lead: str | None = None,
    cache: Path | None = None,
    progress: bool = True,
) -> BeatTable:
    """All beats of split "DS1" or "DS2" of a WFDB directory, patients in record order."""
    directory = resolve_data_dir(data_dir)
    records = split_records(directory)
    if split not in records:
        raise ValueError(f"split must be one of {sorted(records)}, got {split!r}")
    return BeatTable.concatenate(_load_records(directory, records[split], split, spec=spec, lead=lead, cache=cache, progress=progress))


def load_people(
    data_dir: str | Path, *, spec: BeatSpec = BeatSpec(), lead: str | None = None, cache: Path | None = None, progress: bool = True,
) -> BeatTable:
    """Every record of a further WFDB database as one more person each (training side only).

    People are named ``<directory>/<record>`` so they never collide with MIT-BIH record names.
    """
    directory = Path(data_dir).expanduser()
    names = sorted(p.stem for p in directory.glob("*.hea"))
    if not names:
        raise RecordFormatError(f"{directory}: no WFDB records (*.hea) found")
    tables = _load_records(directory, names, directory.name, spec=spec, lead=lead, cache=cache, progress=progress)
    return BeatTable.concatenate([dataclasses.replace(t, patients=(f"{directory.name}/{t.patients[0]}",)) for t in tables])


def _load_records(
    directory: Path, names, label: str, *, spec: BeatSpec, lead: str | None, cache: Path | None, progress: bool,
) -> list[BeatTable]:
    bar = tqdm(names, desc=f"beats {label}", unit="record", disable=None if progress else True, leave=False)  # None: only on a terminal
    return [load_record_beats(directory / name, spec, lead=lead, cache=cache) for name in bar]
