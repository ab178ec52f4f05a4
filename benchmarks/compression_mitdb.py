"""DS2 macro-F1 of the MIT-BIH reference run with and without 1-bit update compression.

Usage: python benchmarks/compression_mitdb.py [--data-dir DIR] [--codec rotated1bit]
Runs (or, with --reuse, reads the summaries already in runs/) the reference federated
setup twice, uncompressed and with --compression CODEC, and writes
benchmarks/results/compression_mitdb.json. About 20 minutes per run on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from datasets.splits import default_mitdb_dir  # noqa: E402

REFERENCE = ["--dataset", "mitdb", "--clients", "1000", "--clients-per-round", "100", "--dropout", "0.2", "--rounds", "100",
             "--partition", "patient", "--algorithm", "fedavg", "--seed", "0"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_mitdb_dir(), help="MIT-BIH mitdb (default $FEDBEAT_DATA or ../shared/data/mitdb)")
    parser.add_argument("--codec", default="rotated1bit")
    parser.add_argument("--reuse", action="store_true", help="read runs/*/summary.json instead of running")
    args = parser.parse_args()
    if args.data_dir is None:
        parser.error("MIT-BIH not found: pass --data-dir or set FEDBEAT_DATA")
    runs = {"uncompressed": ("runs/mitdb_fedavg", []), args.codec: (f"runs/mitdb_fedavg_{args.codec}", ["--compression", args.codec])}
    result: dict = {"commands": {}, "test": {}}
    for name, (out, extra) in runs.items():
        command = ["fedbeat", "simulate", *REFERENCE, "--data-dir", str(args.data_dir), *extra, "--out", out, "--json"]
        result["commands"][name] = " ".join(command)
        if not args.reuse:
            subprocess.run([str(Path(sys.executable).with_name("fedbeat")), *command[1:]], cwd=ROOT, check=True, capture_output=True)
        summary = json.loads((ROOT / out / "summary.json").read_text())
        result["test"][name] = {"macro_f1": summary["test"]["macro_f1"], "f1": {k: v["f1"] for k, v in summary["test"]["per_class"].items()},
                                "model_sha256": summary["model_sha256"]}
    result["macro_f1_points_lost"] = round(100 * (result["test"]["uncompressed"]["macro_f1"] - result["test"][args.codec]["macro_f1"]), 2)
    (ROOT / "benchmarks" / "results" / "compression_mitdb.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
