"""On-device cost: TFLite train step vs TF, int8 inference, model sizes, codecs on a real update.

Usage: python benchmarks/edge.py [--data-dir DIR] [--check]   (also: taskset -c 0 ... for a Pi-class single core)
Writes benchmarks/results/edge.json and edge.png. --check exits 1 unless the issue's targets
hold: train_step_ratio <= 2.0, int8 model <= 64 KiB, rotated 1-bit >= 25x smaller than fp32.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datasets.loading import load_split  # noqa: E402
from datasets.splits import default_mitdb_dir  # noqa: E402
from datasets.synthetic import write_synthetic_dataset  # noqa: E402
from models.edge_benchmark import benchmark_edge  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"train_step_ratio": 2.0, "model_int8_bytes": 64 * 1024, "rotated1bit_ratio": 25.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--name", default="edge", help="result file stem (e.g. edge_one_core)")
    args = parser.parse_args()
    data_dir = args.data_dir or default_mitdb_dir()
    dataset = "synthetic" if data_dir is None else "mitdb"
    if data_dir is None:
        data_dir = RESULTS.parent / ".synthetic"
        write_synthetic_dataset(data_dir, subjects=8, minutes=4, seed=0)
    result = benchmark_edge(load_split(data_dir, "DS1", progress=False))
    result["dataset"] = dataset
    result["machine"] = f"{platform.machine()}, {len(os.sched_getaffinity(0))} usable cores, Python {platform.python_version()}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.bar(["TFLite (device)", "TF GradientTape"], [result["train_step_ms_tflite"], result["train_step_ms_tf"]], color=["#4c72b0", "#999999"])
    left.set_ylabel("ms per train step (batch 32)")
    left.set_title(f"ratio {result['train_step_ratio']:.2f}")
    names = list(result["codecs"])
    right.bar(names, [result["codecs"][n]["ratio_vs_fp32"] for n in names], color="#55a868")
    right.set_ylabel("x smaller than fp32")
    right.set_yscale("log")
    right.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{args.name}.png", dpi=90)
    print(json.dumps(result))
    failures = []
    if result["train_step_ratio"] > TARGETS["train_step_ratio"]:
        failures.append(f"train_step_ratio {result['train_step_ratio']} > {TARGETS['train_step_ratio']}")
    if result["model_int8_bytes"] > TARGETS["model_int8_bytes"]:
        failures.append(f"int8 model {result['model_int8_bytes']} bytes > 64 KiB")
    if result["codecs"]["rotated1bit"]["ratio_vs_fp32"] < TARGETS["rotated1bit_ratio"]:
        failures.append(f"rotated1bit only {result['codecs']['rotated1bit']['ratio_vs_fp32']}x")
    if args.check and failures:
        print("FAIL: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
