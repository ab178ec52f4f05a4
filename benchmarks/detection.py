"""The R-peak detector on clean and noisy leads, beside wfdb's XQRS (datasets/detection_benchmark.py).

Usage: python benchmarks/detection.py [--data-dir DIR] [--quick] [--check]
Writes benchmarks/results/detection.json and detection_noise.png (Se and +P against SNR for each
noise; dotted: only the stretches the quality gate calls usable, and the share of beats they
hold). --check exits 1 unless fedbeat's detector meets detection_benchmark.TARGETS (the full
run; --quick scores 4 records per database and skips XQRS, for CI).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datasets.detection_benchmark import NOISES, SNRS_DB, USABLE, DetectionBenchmarkConfig, benchmark_detection  # noqa: E402
from datasets.splits import default_mitdb_dir, shared_database_dir  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def plot_noise(result: dict, path: Path) -> None:
    figure, axes = plt.subplots(1, len(NOISES), figsize=(4 * len(NOISES), 3.4), sharey=True)
    for axis, noise in zip(axes, NOISES):
        for detector, style in (("fedbeat", "-"), ("xqrs", "--"), (USABLE, ":")):
            rows = [result["rows"].get(f"nst {noise} {snr} dB", {}).get(detector) for snr in SNRS_DB]
            if all(rows):
                axis.plot(SNRS_DB, [r["se"] for r in rows], style, marker="o", label=f"{detector} Se")
                axis.plot(SNRS_DB, [r["ppv"] for r in rows], style, marker="s", label=f"{detector} +P")
                if "coverage" in rows[0]:
                    axis.plot(SNRS_DB, [r["coverage"] for r in rows], style, marker="^", color="grey", label="beats in usable stretches")
        axis.set_title(f"MIT-BIH 118+119 with nstdb {noise}")
        axis.set_xlabel("SNR (dB)")
        axis.invert_xaxis()
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("%")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def table(result: dict) -> str:
    lines = ["| row | fedbeat Se | fedbeat +P | XQRS Se | XQRS +P | usable stretches: Se | +P | beats covered |", "|---|---|---|---|---|---|---|---|"]
    for row, entry in result["rows"].items():
        ours, theirs, usable = entry["fedbeat"], entry.get("xqrs"), entry[USABLE]
        other = f"{theirs['se']:.2f} | {theirs['ppv']:.2f}" if theirs else "- | -"
        lines.append(f"| {row} | {ours['se']:.2f} | {ours['ppv']:.2f} | {other} | {usable['se']:.2f} | {usable['ppv']:.2f} | {usable['coverage']:.1f} % |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_mitdb_dir(), help="MIT-BIH mitdb")
    parser.add_argument("--svdb", type=Path, default=shared_database_dir("svdb"))
    parser.add_argument("--nstdb", type=Path, default=shared_database_dir("nstdb"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.data_dir is None:
        print("detection: MIT-BIH not found (set FEDBEAT_DATA or --data-dir); skipped", file=sys.stderr)
        return 0
    make = DetectionBenchmarkConfig.quick if args.quick else DetectionBenchmarkConfig
    config = make(mitdb=args.data_dir, svdb=args.svdb, nstdb=args.nstdb)
    result = benchmark_detection(config)
    RESULTS.mkdir(exist_ok=True)
    name = "detection_quick" if args.quick else "detection"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    if not args.quick:
        plot_noise(result, RESULTS / "detection_noise.png")
    print(table(result))
    print("targets met:", result["targets_met"])
    return 1 if args.check and not all(result["targets_met"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
