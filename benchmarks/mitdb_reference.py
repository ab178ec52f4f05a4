"""The committed MIT-BIH reference: federated (1,000 watches, 100 per round, 20 % dropout) vs centralized.

Usage: python benchmarks/mitdb_reference.py [--data-dir DIR] [--rounds R]
Writes benchmarks/results/mitdb_reference.json = {"federated", "centralized", "commands"}
and copies the federated run's PNG plots beside it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from datasets.splits import default_mitdb_dir  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_mitdb_dir(), help="MIT-BIH mitdb (default $FEDBEAT_DATA or ../shared/data/mitdb)")
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    if args.data_dir is None:
        parser.error("MIT-BIH not found: pass --data-dir or set FEDBEAT_DATA")
    fedbeat = str(Path(sys.executable).with_name("fedbeat"))
    common = ["--dataset", "mitdb", "--data-dir", str(args.data_dir), "--clients", "1000", "--clients-per-round", "100",
              "--dropout", "0.2", "--rounds", str(args.rounds), "--partition", "patient", "--algorithm", "fedavg", "--seed", "0"]
    commands = {
        "federated": [fedbeat, "simulate", *common, "--out", "runs/mitdb_fedavg", "--json"],
        "centralized": [fedbeat, "centralized", *common, "--out", "runs/mitdb_centralized", "--json"],
    }
    result: dict = {"commands": [" ".join(["fedbeat", *c[1:]]) for c in commands.values()]}
    for name, command in commands.items():
        completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            print(completed.stderr[-3000:], file=sys.stderr)
            return 1
        result[name] = json.loads(completed.stdout)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mitdb_reference.json").write_text(json.dumps(result, indent=2) + "\n")
    for png in ("rounds.png", "confusion.png"):
        shutil.copy(ROOT / "runs" / "mitdb_fedavg" / png, RESULTS / f"mitdb_reference_{png}")
    for name in ("federated", "centralized"):
        per_class = result[name]["test"]["per_class"]
        print(name, {k: round(per_class[k]["f1"], 3) for k in "NSVF"}, "macro-F1", round(result[name]["test"]["macro_f1"], 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
