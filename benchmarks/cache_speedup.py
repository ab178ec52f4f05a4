"""Cold extraction vs cached load of the DS1 and DS2 beats; writes JSON and a bar chart.

Usage: python benchmarks/cache_speedup.py [--data-dir DIR] [--check]
MIT-BIH from --data-dir, $FEDBEAT_DATA or ../shared/data/mitdb; the synthetic set otherwise.
--check exits 1 unless the cached load is at least MIN_SPEEDUP times faster (ratio from one run).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datasets.loading import load_split  # noqa: E402
from datasets.splits import default_mitdb_dir  # noqa: E402
from datasets.synthetic import write_synthetic_dataset  # noqa: E402

MIN_SPEEDUP = 10.0
RESULTS = Path(__file__).resolve().parent / "results"


def timed_load(data_dir: Path, cache: Path) -> float:
    start = time.perf_counter()
    for split in ("DS1", "DS2"):
        load_split(data_dir, split, cache=cache, progress=False)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data_dir or default_mitdb_dir()
        dataset = "mitdb" if data_dir else "synthetic"
        if data_dir is None:
            data_dir = Path(scratch) / "synthetic"
            write_synthetic_dataset(data_dir, subjects=24, minutes=10, seed=0)
        cache = Path(scratch) / "cache"
        cold = timed_load(data_dir, cache)
        warm = min(timed_load(data_dir, cache) for _ in range(3))
    result = {
        "benchmark": "cache_speedup",
        "dataset": dataset,
        "cold_s": round(cold, 3),
        "warm_s": round(warm, 4),
        "speedup": round(cold / warm, 1),
        "min_speedup": MIN_SPEEDUP,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cache_speedup.json").write_text(json.dumps(result, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(["first load\n(extract)", "second load\n(cache)"], [cold, warm], color=["#c44e52", "#4c72b0"])
    ax.set_ylabel("seconds (DS1 + DS2)")
    ax.set_title(f"Beat cache on {dataset}: {cold / warm:.0f}x faster")
    fig.tight_layout()
    fig.savefig(RESULTS / "cache_speedup.png", dpi=100)
    print(json.dumps(result))
    if args.check and cold / warm < MIN_SPEEDUP:
        print(f"FAIL: cache speed-up {cold / warm:.1f}x < {MIN_SPEEDUP}x", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
