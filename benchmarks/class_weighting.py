"""What class weighting does to S and V: centralized training on MIT-BIH DS1, tested on DS2,
with the loss unweighted (power 0) and weighted by sqrt inverse class frequency (power 0.5).

Usage: python benchmarks/class_weighting.py [--data-dir DIR]   (about 10 minutes on 2 cores)
Writes benchmarks/results/class_weighting.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datasets.splits import default_mitdb_dir  # noqa: E402
from simulation.centralized import run_centralized  # noqa: E402
from simulation.config import SimulationConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_mitdb_dir(), help="MIT-BIH mitdb (default $FEDBEAT_DATA or ../shared/data/mitdb)")
    args = parser.parse_args()
    if args.data_dir is None:
        parser.error("MIT-BIH not found: pass --data-dir or set FEDBEAT_DATA")
    result = {}
    for power in (0.0, 0.5):
        config = SimulationConfig(dataset="mitdb", data_dir=str(args.data_dir), clients=1000, clients_per_round=100, rounds=40,
                                  class_weight_power=power, out=f"runs/class_weight_{power:g}")
        test = run_centralized(config, progress=False)["test"]
        result[f"power_{power:g}"] = {
            "macro_f1": test["macro_f1"],
            **{name: {k: test["per_class"][name][k] for k in ("sensitivity", "ppv", "f1")} for name in ("S", "V")},
        }
    (RESULTS / "class_weighting.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
