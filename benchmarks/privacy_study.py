"""What DP-FedAvg costs on MIT-BIH, and how many patients a deployment needs for epsilon <= 3.

Usage: python benchmarks/privacy_study.py [--data-dir DIR] [--rounds 40]
Writes benchmarks/results/privacy_study_qQ.json and .png (Q: the adaptive clip's quantile).

MIT-BIH has 22 training patients; with one watch per patient (the privacy unit) and 11 per
round, q = 0.5 and any useful epsilon needs noise that drowns 11 updates. What decides
utility is the noise on the *mean* update, std z C / K; what decides epsilon is
(q = K / N, z, rounds). So each run here uses the 22 patients with an effective noise
multiplier z_eff (noise std z_eff C / 11), which is the noise a deployment with K clients
per round and multiplier z = z_eff K / 11 would add; the accountant then gives, for each
z_eff and target epsilon, the cohort K and population N = K / q that reach it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datasets.splits import default_mitdb_dir  # noqa: E402
from simulation.config import SimulationConfig  # noqa: E402
from simulation.accounting import noise_for_epsilon  # noqa: E402
from simulation.runner import run_simulation  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PATIENTS_PER_ROUND = 11
EFFECTIVE_NOISE = (0.0, 0.001, 0.05, 0.1, 0.2, 0.4)  # 0.001: clipping alone, noise negligible
TARGET_EPSILONS = (1.0, 3.0, 8.0)
DEPLOYMENT_SAMPLING_RATE = 0.01  # 1 % of enrolled patients report in a round
DELTA = 1e-6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--clip-quantile", type=float, default=0.9, help="adaptive clip's target quantile of update norms")
    args = parser.parse_args()
    data_dir = args.data_dir or default_mitdb_dir()
    if data_dir is None:
        print("privacy_study: MIT-BIH not found (set FEDBEAT_DATA or --data-dir)", file=sys.stderr)
        return 2
    base = SimulationConfig(
        dataset="mitdb", data_dir=str(data_dir), clients_per_round=PATIENTS_PER_ROUND, rounds=args.rounds, dropout=0.0,
        overselect=1.0, eval_every=args.rounds, dp_target_delta=DELTA, dp_clip_quantile=args.clip_quantile,
    )
    runs = []
    for z_eff in EFFECTIVE_NOISE:
        fields = {"out": f"runs/privacy_study/q{args.clip_quantile:g}-z{z_eff:g}"}
        if z_eff > 0:
            fields["dp_noise_multiplier"] = z_eff
        else:  # the no-DP reference with the same one-watch-per-patient population
            fields.update(clients=22)
        summary = run_simulation(dataclasses.replace(base, **fields), progress=True)
        test = summary["test"]
        row = {
            "effective_noise_multiplier": z_eff,
            "macro_f1": test["macro_f1"],
            "f1": {name: test["per_class"][name]["f1"] for name in ("N", "S", "V", "F")},
            "mitdb_epsilon": summary["privacy"]["epsilon"] if summary["privacy"] else None,
        }
        if z_eff > 0:
            row["deployments"] = []
            for epsilon in TARGET_EPSILONS:
                z = noise_for_epsilon(epsilon, sampling_rate=DEPLOYMENT_SAMPLING_RATE, rounds=args.rounds, delta=DELTA)
                cohort = z * PATIENTS_PER_ROUND / z_eff
                row["deployments"].append({
                    "epsilon": epsilon, "noise_multiplier": round(z, 3), "clients_per_round": int(round(cohort)),
                    "patients": int(round(cohort / DEPLOYMENT_SAMPLING_RATE)),
                })
        runs.append(row)
        print(json.dumps(row))
    result = {
        "setup": f"MIT-BIH DS1 (22 patients, one watch each), {PATIENTS_PER_ROUND} per round, {args.rounds} rounds, FedAvg, adaptive clip at quantile {args.clip_quantile:g}; DS2 test",
        "clip_quantile": args.clip_quantile,
        "deployment_sampling_rate": DEPLOYMENT_SAMPLING_RATE, "delta": DELTA, "accountant": "RDP (dp-accounting), Poisson sampling",
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    stem = f"privacy_study_q{args.clip_quantile:g}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS / f"{stem}.png")
    return 0


def plot(result: dict, path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    runs = result["runs"]
    reference = runs[0]
    noisy = runs[1:]
    for key, label in (("macro_f1", "macro-F1"), ("S", "S F1"), ("V", "V F1")):
        values = [r["macro_f1"] if key == "macro_f1" else r["f1"][key] for r in noisy]
        line, = left.plot([r["effective_noise_multiplier"] for r in noisy], values, "o-", label=label)
        left.axhline(reference["macro_f1"] if key == "macro_f1" else reference["f1"][key], color=line.get_color(), ls=":", lw=1)
    left.set_xscale("log")
    left.set_xlabel("noise std on the mean update / clip  (z K_eff: z_eff / 11)")
    left.set_ylabel("DS2 F1 (dotted: no DP)")
    left.legend(fontsize=8)
    for epsilon_index, epsilon in enumerate((1.0, 3.0, 8.0)):
        right.plot(
            [r["effective_noise_multiplier"] for r in noisy], [r["deployments"][epsilon_index]["patients"] for r in noisy], "s-", label=f"epsilon {epsilon:g}",
        )
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("z_eff (same x as left)")
    right.set_ylabel(f"patients enrolled (q = {result['deployment_sampling_rate']:g})")
    right.legend(fontsize=8)
    right.grid(alpha=0.3, which="both")
    fig.suptitle(result["setup"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
